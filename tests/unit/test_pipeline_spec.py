"""Pipeline specs: validation, order, rendering, and the runner's semantics on tiny scripts (no Spark)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from ctlake.pipelines import (
    PipelineError,
    last_json,
    load_all,
    missing_entry_points,
    parse_spec,
    render_args,
    report_from_airflow,
    run_pipeline,
    task_command,
)

ROOT = Path(__file__).resolve().parents[2]


def spec(**over) -> dict:
    base = {"name": "p", "params": {"mode": "a"}, "tasks": [
        {"name": "one", "job": "jobs/one.py"},
        {"name": "two", "job": "jobs/two.py", "depends_on": ["one"]},
    ]}
    base.update(over)
    return base


def test_committed_specs_are_valid_and_ordered():
    pipes = {p.name: p for p in load_all(ROOT / "pipelines")}
    assert set(pipes) == {"daily_ingest", "weekly_retrain"}
    daily = [t.name for t in pipes["daily_ingest"].order()]
    for before, after in [("ingest_folder", "volumes"), ("ingest_stream", "volumes"), ("volumes", "lungs"),
                          ("lungs", "nodules"), ("nodules", "patches"), ("nodules", "radiomics"),
                          ("patches", "index"), ("radiomics", "index")]:
        assert daily.index(before) < daily.index(after)
    assert [t.name for t in pipes["weekly_retrain"].order()] == ["train", "evaluate", "register_challenger", "promote"]
    for p in pipes.values():
        for t in p.tasks:
            assert t.job.startswith("jobs/") and t.job.endswith(".py")
    # every daily_ingest job exists; the report names what weekly_retrain still lacks
    assert missing_entry_points(pipes["daily_ingest"], ROOT) == []


@pytest.mark.parametrize("over, code, words", [
    ({"tasks": [{"name": "a", "job": "jobs/a.py", "depends_on": ["b"]},
                {"name": "b", "job": "jobs/b.py", "depends_on": ["c"]},
                {"name": "c", "job": "jobs/c.py", "depends_on": ["a"]}]}, "PIPELINE_CYCLE", "a -> b -> c -> a"),
    ({"tasks": [{"name": "a", "job": "jobs/a.py", "depends_on": ["a"]}]}, "PIPELINE_CYCLE", "depends on itself"),
    ({"tasks": [{"name": "a", "job": "jobs/a.py", "depends_on": ["nope"]}]}, "PIPELINE_MISSING_DEPENDENCY",
     "unknown task 'nope'"),
    ({"tasks": [{"name": "a", "job": "build_volumes"}]}, "PIPELINE_UNKNOWN_JOB", "jobs/ entry point"),
    ({"tasks": [{"name": "a"}]}, "PIPELINE_UNKNOWN_JOB", "job:"),
    ({"tasks": [{"name": "a", "job": "jobs/a.py", "retrys": 2}]}, "PIPELINE_INVALID", "unknown key(s) ['retrys']"),
    ({"tasks": [{"name": "a", "job": "jobs/a.py"}, {"name": "a", "job": "jobs/b.py"}]}, "PIPELINE_INVALID",
     "used twice"),
    ({"tasks": [{"name": "a", "job": "jobs/a.py", "args": ["{nope}"]}]}, "PIPELINE_INVALID",
     "unknown placeholder {nope}"),
    ({"tasks": [{"name": "a", "job": "jobs/a.py"}, {"name": "b", "job": "jobs/b.py", "args": ["{a.run_id}"]}]},
     "PIPELINE_INVALID", "not upstream"),
    ({"tasks": [{"name": "a", "job": "jobs/a.py", "when": {"colour": "red"}}]}, "PIPELINE_INVALID",
     "unknown param 'colour'"),
    ({"tasks": [{"name": "a", "job": "jobs/a.py", "retries": -1}]}, "PIPELINE_INVALID", "retries"),
    ({"tasks": []}, "PIPELINE_INVALID", "non-empty list"),
    ({"schedules": "@daily"}, "PIPELINE_INVALID", "unknown key(s) ['schedules']"),
    ({"params": {"x": "{date}"}}, "PIPELINE_INVALID", "placeholders belong"),
])
def test_bad_specs_are_clear_errors(over, code, words):
    with pytest.raises(PipelineError) as err:
        parse_spec(spec(**over), source="bad.yaml")
    assert err.value.code == code
    assert words in str(err.value) and "bad.yaml" in str(err.value)


def test_render_args_with_params_groups_and_outputs():
    p = parse_spec(spec(tasks=[
        {"name": "train", "job": "jobs/t.py"},
        {"name": "ev", "job": "jobs/e.py", "depends_on": ["train"],
         "args": ["--in", "{mode}/{date}", {"when": {"mode": ["b", "c"]}, "args": ["--extra", "{mode}"]},
                  "--run", "{train.run_id}"]}]))
    outputs = {"train.run_id": "r-17"}

    def resolve(params):
        return lambda ph: {"date": "2024-05-01", **params}.get(ph) or outputs[ph]

    task = p.task("ev")
    assert render_args(task, resolve({"mode": "a"}), {"mode": "a"}) == ["--in", "a/2024-05-01", "--run", "r-17"]
    assert render_args(task, resolve({"mode": "c"}), {"mode": "c"}) == [
        "--in", "c/2024-05-01", "--extra", "c", "--run", "r-17"]
    cmd = task_command(task, ["a b", "x"], python="/py/bin/python", project_root=Path("/proj"))
    assert cmd == ("set -o pipefail; cd /proj && /py/bin/python /proj/jobs/e.py 'a b' x "
                   "| /py/bin/python -m ctlake.pipelines --last-json")
    sub = task_command(task, [], python="/py", project_root=Path("/proj"), launcher="spark-submit")
    assert "/bin/spark-submit" in sub and "$(/py -m ctlake spark-conf)" in sub and "--py-files" in sub


def _script(folder: Path, name: str, body: str) -> str:
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return str(path)


def _write_spec(tmp_path: Path, tasks: list[dict], **over) -> dict:
    return parse_spec({"name": "t", "params": {"mode": "a", "dir": str(tmp_path)}, "tasks": tasks, **over})


def test_run_order_retries_skips_outputs_and_failures(tmp_path):
    log = tmp_path / "log.txt"
    rec = f"open({str(log)!r}, 'a').write(sys.argv[1] + '\\n')"
    ok = _script(tmp_path, "ok", f"import json, sys\n{rec}\n"   # indented JSON, then a log line
                                 "print(json.dumps({'run_id': 'R-' + sys.argv[1]}, indent=2))\nprint('bye')\n")
    flaky = _script(tmp_path, "flaky", f"""
        import sys, pathlib
        {rec}
        marker = pathlib.Path(sys.argv[2])
        if not marker.exists():
            marker.write_text("failed once")
            sys.exit(3)
        print("ok")
    """)
    bad = _script(tmp_path, "bad", f"import sys\n{rec}\nsys.exit(5)\n")
    p = _write_spec(tmp_path, [
        {"name": "first", "job": ok, "args": ["first"]},
        {"name": "only_b", "job": ok, "args": ["only_b"], "when": {"mode": "b"}},
        {"name": "flaky", "job": flaky, "args": ["flaky", "{dir}/marker-{date}"], "retries": 2,
         "depends_on": ["first", "only_b"]},
        {"name": "uses", "job": ok, "args": ["{first.run_id}"], "depends_on": ["flaky"]},
        {"name": "broken", "job": bad, "args": ["broken"], "retries": 1, "depends_on": ["first"]},
        {"name": "after_broken", "job": ok, "args": ["after_broken"], "depends_on": ["broken"]},
    ])
    lines: list[str] = []
    report = run_pipeline(p, project_root=tmp_path, date="2024-03-04", python=sys.executable, echo=lines.append)
    states = {t.name: (t.status, t.attempts) for t in report.tasks}
    assert states == {"first": ("succeeded", 1), "only_b": ("skipped", 0), "flaky": ("succeeded", 2),
                      "uses": ("succeeded", 1), "broken": ("failed", 2), "after_broken": ("upstream_failed", 0)}
    # each failed task was retried alone: nothing else ran twice, and after_broken never ran
    assert log.read_text().split() == ["first", "flaky", "flaky", "R-first", "broken", "broken"]
    assert report.status == "failed" and report.error == "task broken failed (exit 5 after 2 attempt(s))"
    assert report.tasks[0].output == '{"run_id":"R-first"}'      # the last JSON object, as one line
    assert '  "run_id": "R-first"' in lines and "bye" in lines   # the job's own output is shown as it came
    d = report.to_dict()
    assert d["tasks"]["flaky"]["attempts"] == 2 and d["date"] == "2024-03-04"


def test_all_good_run_succeeds_and_params_override(tmp_path):
    ok = _script(tmp_path, "ok", "import sys\nprint(sys.argv[1])\n")
    p = _write_spec(tmp_path, [{"name": "a", "job": ok, "args": ["{mode}"]},
                               {"name": "b", "job": ok, "args": ["b"], "when": {"mode": "z"}, "depends_on": ["a"]}])
    report = run_pipeline(p, project_root=tmp_path, date="2024-01-01", params={"mode": "z"}, echo=lambda s: None)
    assert report.status == "succeeded" and [t.output for t in report.tasks] == ["z", "b"]
    with pytest.raises(PipelineError, match="unknown param 'colour'"):
        run_pipeline(p, project_root=tmp_path, date="2024-01-01", params={"colour": "z"})
    with pytest.raises(PipelineError, match="YYYY-MM-DD"):
        run_pipeline(p, project_root=tmp_path, date="01/02/2024")


def test_missing_entry_points_refuse_the_run(tmp_path):
    ok = _script(tmp_path, "ok", "print('ran')\n")
    p = _write_spec(tmp_path, [{"name": "a", "job": ok}, {"name": "b", "job": "jobs/not_written_yet.py"}])
    assert missing_entry_points(p, tmp_path) == [("b", "jobs/not_written_yet.py")]
    with pytest.raises(PipelineError) as err:
        run_pipeline(p, project_root=tmp_path, date="2024-01-01")
    assert err.value.code == "PIPELINE_MISSING_JOB"
    assert "task b: jobs/not_written_yet.py does not exist" in str(err.value)


def test_timeout_kills_the_task(tmp_path):
    slow = _script(tmp_path, "slow", "import time\nprint('started', flush=True)\ntime.sleep(600)\n")
    p = _write_spec(tmp_path, [{"name": "a", "job": slow, "timeout_s": 1}])
    report = run_pipeline(p, project_root=tmp_path, date="2024-01-01", echo=lambda s: None)
    assert (report.tasks[0].status, report.tasks[0].exit_code, report.tasks[0].output) == ("failed", 124, "started")


def test_report_from_airflow_states():
    import datetime as dt

    p = parse_spec(spec())
    r = report_from_airflow(p, run_id="manual__x", date="2024-01-01", started=dt.datetime(2024, 1, 1),
                            breadcrumbs=[{"task_id": "one", "state": "success", "duration": 2.5}])
    assert [(t.name, t.status) for t in r.tasks] == [("one", "succeeded"), ("two", "upstream_failed")]
    assert r.status == "failed" and r.runner == "airflow"


def test_stopping_the_runner_stops_the_running_task(tmp_path):
    import os
    import signal
    import subprocess
    import time

    pid_file = tmp_path / "task.pid"
    slow = _script(tmp_path, "slow", f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
                                     "time.sleep(600)\n")
    spec_file = tmp_path / "stop.yaml"
    spec_file.write_text(f"name: stop\ntasks:\n  - name: a\n    job: {slow}\n")
    runner = subprocess.Popen([sys.executable, "-m", "ctlake", "pipeline", "run", str(spec_file), "--date",
                               "2024-01-01", "--no-record"], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, start_new_session=True)
    try:
        for _ in range(600):
            if pid_file.exists() and pid_file.read_text():
                break
            assert runner.poll() is None, runner.communicate()
            time.sleep(0.1)
        task_pid = int(pid_file.read_text())
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(timeout=60) == 130
        for _ in range(100):          # the task (its own process group) was stopped with the runner
            try:
                os.kill(task_pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"task {task_pid} outlived its runner")
    finally:
        if runner.poll() is None:
            runner.kill()


def test_last_json_finds_the_last_object_printed():
    text = 'log {"not": "at line start"}\n{"a": 1}\nmiddle\n{\n  "b": {"c": [1, 2]}\n}\n[ctlake] done\n{broken\n'
    assert last_json(text) == {"b": {"c": [1, 2]}}
    assert last_json("no json here\n") is None and last_json('["a list"]\n') is None
