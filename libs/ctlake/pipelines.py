"""Scheduled pipelines: YAML specs under ``pipelines/``, run by ``ctlake pipeline run`` or by Airflow.

A spec names its tasks; each task runs one ``jobs/`` entry point as a subprocess (exit code = result):

.. code-block:: yaml

    name: daily_ingest
    schedule: "@daily"            # Airflow's schedule; the CLI ignores it
    start_date: "2024-01-01"      # Airflow's first logical date
    params:                       # defaults; `ctlake pipeline run --param key=value` overrides them
      source: folder
      incoming: ./incoming
    defaults: {retries: 2, retry_delay_s: 300, timeout_s: 7200}
    tasks:
      - name: ingest
        job: jobs/ingest_folder.py
        args: ["{incoming}/{date}"]
        when: {source: folder}            # run only when the params say so (else: skipped)
      - name: volumes
        job: jobs/build_volumes.py
        depends_on: [ingest]
        retries: 3
      - name: evaluate
        job: jobs/evaluate.py
        args: ["--run-id", "{train.run_id}", {when: {ci: "yes"}, args: ["--bootstrap", "1000"]}]
        depends_on: [train]

Placeholders in ``args``: ``{date}`` (the logical date, YYYY-MM-DD), ``{PARAM}`` (a declared param) and
``{TASK.FIELD}`` (a field of the JSON object an upstream task printed as its last stdout line, e.g. an
MLflow run id). An ``args`` item may be a group ``{when: {...}, args: [...]}`` used only when ``when``
holds. ``when`` compares params with values (a list means "any of").

Semantics (the same in the CLI runner and in the generated Airflow DAGs, pipelines/dags/): tasks run in
a topological order of ``depends_on``; a task whose ``when`` is false is *skipped* and counts as done
for its dependents; a task that fails is retried alone, up to ``retries`` more attempts; when it still
fails, everything downstream is *upstream_failed* and not run, other branches go on. Every run appends
one row to ``ops.pipeline_runs`` (job ``pipeline.<name>``, params_json with each task's state); the jobs
append their own rows too. The jobs are incremental, so a second run for the same date adds nothing.

This module imports only the standard library and PyYAML: Airflow's DAG file imports it from its own
virtual environment. The run and record functions import Spark lazily.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ctlake.errors import CtlakeError

SKIP_EXIT_CODE = 99          # Airflow's BashOperator marks a task skipped on this exit code
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_PIPELINE_KEYS = {"name", "description", "schedule", "start_date", "params", "defaults", "tasks", "launcher"}
_TASK_KEYS = {"name", "job", "args", "depends_on", "retries", "retry_delay_s", "timeout_s", "when", "description"}
_DEFAULT_KEYS = {"retries", "retry_delay_s", "timeout_s"}
LAUNCHERS = ("python", "spark-submit")


class PipelineError(CtlakeError):
    """A pipeline spec is invalid, or a pipeline cannot run (missing entry point, unknown name, bad date)."""

    code = "PIPELINE_INVALID"


# --- the spec -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ArgGroup:
    """Arguments used only when ``when`` holds for the run's params."""

    when: dict[str, tuple[str, ...]]
    args: tuple[str, ...]


@dataclass(frozen=True)
class Task:
    name: str
    job: str                                  # path of the entry point, relative to the project root
    args: tuple[str | ArgGroup, ...] = ()
    depends_on: tuple[str, ...] = ()
    retries: int = 0
    retry_delay_s: float = 0.0
    timeout_s: float | None = None
    when: dict[str, tuple[str, ...]] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class Pipeline:
    name: str
    tasks: tuple[Task, ...]
    params: dict[str, str] = field(default_factory=dict)
    description: str = ""
    schedule: str | None = None
    start_date: str = "2024-01-01"
    launcher: str = "python"
    source: Path | None = None

    def task(self, name: str) -> Task:
        for t in self.tasks:
            if t.name == name:
                return t
        raise PipelineError(f"pipeline {self.name}: no task {name!r}; tasks: {[t.name for t in self.tasks]}")

    def order(self) -> list[Task]:
        """The tasks in a topological order of ``depends_on`` (ties keep the spec's order)."""
        return _toposort(self.name, self.tasks)

    def upstream(self, name: str) -> set[str]:
        """Every task ``name`` depends on, directly or not."""
        deps = {t.name: t.depends_on for t in self.tasks}
        seen: set[str] = set()
        todo = list(deps[name])
        while todo:
            d = todo.pop()
            if d not in seen:
                seen.add(d)
                todo.extend(deps[d])
        return seen

    def downstream(self, name: str) -> set[str]:
        return {t.name for t in self.tasks if name in self.upstream(t.name)}

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "schedule": self.schedule,
                "start_date": self.start_date, "launcher": self.launcher, "params": self.params,
                "tasks": [{"name": t.name, "job": t.job, "args": [_arg_to_obj(a) for a in t.args],
                           "depends_on": list(t.depends_on), "retries": t.retries, "retry_delay_s": t.retry_delay_s,
                           "timeout_s": t.timeout_s, "when": {k: list(v) for k, v in t.when.items()}}
                          for t in self.order()]}


def _arg_to_obj(a: str | ArgGroup) -> Any:
    return a if isinstance(a, str) else {"when": {k: list(v) for k, v in a.when.items()}, "args": list(a.args)}


def _toposort(pipeline: str, tasks: tuple[Task, ...]) -> list[Task]:
    by_name = {t.name: t for t in tasks}
    state: dict[str, int] = {}            # 1 = on the current path, 2 = done
    out: list[Task] = []

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = path[path.index(name):] + [name]
            raise PipelineError(f"pipeline {pipeline}: dependency cycle {' -> '.join(cycle)}", code="PIPELINE_CYCLE")
        state[name] = 1
        for dep in by_name[name].depends_on:
            visit(dep, [*path, name])
        state[name] = 2
        out.append(by_name[name])

    for t in tasks:
        visit(t.name, [])
    return out


def _fail(where: str, msg: str, code: str = "PIPELINE_INVALID") -> PipelineError:
    return PipelineError(f"{where}: {msg}", code=code)


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(where, f"expected a list of strings, got {value!r}")
    return tuple(value)


def _scalar(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise _fail(where, f"expected a string or number, got {value!r}")


def _when(value: Any, where: str, params: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not value:
        raise _fail(where, f"expected a mapping of param -> value(s), got {value!r}")
    out = {}
    for key, want in value.items():
        if key not in params:
            raise _fail(where, f"unknown param {key!r}; params: {sorted(params)}")
        values = want if isinstance(want, list) else [want]
        out[str(key)] = tuple(_scalar(v, f"{where}.{key}") for v in values)
    return out


def _number(value: Any, where: str, *, integer: bool = False, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or value < 0:
        raise _fail(where, f"expected a {'whole ' if integer else ''}number >= 0, got {value!r}")
    return value


def parse_spec(data: Any, *, source: str = "<spec>", path: Path | None = None) -> Pipeline:
    """Validate a spec (the parsed YAML) and return the :class:`Pipeline`.

    Errors name the file and the key: unknown keys, a task without ``job``, a ``job`` that is not a
    ``.py`` path, an unknown dependency, a dependency cycle, an unknown placeholder in ``args``.
    Whether the entry points exist is checked by :func:`missing_entry_points` (a spec may name jobs
    that are not written yet; running it is refused then).
    """
    if not isinstance(data, dict):
        raise _fail(source, f"the top level must be a mapping, got {type(data).__name__}")
    unknown = set(data) - _PIPELINE_KEYS
    if unknown:
        raise _fail(source, f"unknown key(s) {sorted(unknown)}; known: {sorted(_PIPELINE_KEYS)}")
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise _fail(source, f"name: expected an identifier (letters, digits, _), got {name!r}")
    where = f"{source} (pipeline {name})"
    raw_params = data.get("params") or {}
    if not isinstance(raw_params, dict):
        raise _fail(where, "params: expected a mapping")
    params = {}
    for k, v in raw_params.items():
        if not isinstance(k, str) or not _NAME.match(k) or k == "date":
            raise _fail(where, f"params: bad name {k!r} (an identifier, not 'date')")
        params[k] = _scalar(v, f"{where} params.{k}")
        if _PLACEHOLDER.search(params[k]):
            raise _fail(where, f"params.{k}: placeholders belong in a task's args, not in params ({params[k]!r})")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict) or set(defaults) - _DEFAULT_KEYS:
        raise _fail(where, f"defaults: a mapping with keys from {sorted(_DEFAULT_KEYS)}, got {defaults!r}")
    launcher = data.get("launcher", "python")
    if launcher not in LAUNCHERS:
        raise _fail(where, f"launcher: {launcher!r} is not one of {list(LAUNCHERS)}")
    raw_tasks = data.get("tasks")
    if not isinstance(raw_tasks, list) or not raw_tasks:
        raise _fail(where, "tasks: expected a non-empty list")

    tasks: list[Task] = []
    for i, raw in enumerate(raw_tasks):
        tw = f"{where} tasks[{i}]"
        if not isinstance(raw, dict):
            raise _fail(tw, "expected a mapping")
        unknown = set(raw) - _TASK_KEYS
        if unknown:
            raise _fail(tw, f"unknown key(s) {sorted(unknown)}; known: {sorted(_TASK_KEYS)}")
        tname = raw.get("name")
        if not isinstance(tname, str) or not _NAME.match(tname):
            raise _fail(tw, f"name: expected an identifier, got {tname!r}")
        tw = f"{where} task {tname}"
        if any(t.name == tname for t in tasks):
            raise _fail(tw, "the name is used twice")
        job = raw.get("job")
        if not isinstance(job, str) or not job.endswith(".py"):
            raise _fail(tw, f"job: expected the path of a jobs/ entry point (a .py file), got {job!r}",
                        code="PIPELINE_UNKNOWN_JOB")
        args: list[str | ArgGroup] = []
        for j, a in enumerate(raw.get("args") or []):
            if isinstance(a, dict):
                if set(a) != {"when", "args"}:
                    raise _fail(tw, f"args[{j}]: a group is {{when: {{...}}, args: [...]}}, got {a!r}")
                args.append(ArgGroup(_when(a["when"], f"{tw} args[{j}].when", params),
                                     tuple(_scalar(x, f"{tw} args[{j}]") for x in a["args"] or [])))
            else:
                args.append(_scalar(a, f"{tw} args[{j}]"))
        tasks.append(Task(
            name=tname, job=job, args=tuple(args), depends_on=_str_list(raw.get("depends_on"), f"{tw} depends_on"),
            retries=_number(raw.get("retries", defaults.get("retries", 0)), f"{tw} retries", integer=True),
            retry_delay_s=float(_number(raw.get("retry_delay_s", defaults.get("retry_delay_s", 0)),
                                        f"{tw} retry_delay_s")),
            timeout_s=_number(raw.get("timeout_s", defaults.get("timeout_s")), f"{tw} timeout_s", allow_none=True),
            when=_when(raw.get("when"), f"{tw} when", params), description=str(raw.get("description") or "")))

    names = {t.name for t in tasks}
    for t in tasks:
        for d in t.depends_on:
            if d not in names:
                raise _fail(f"{where} task {t.name}", f"depends_on: unknown task {d!r}; tasks: {sorted(names)}",
                            code="PIPELINE_MISSING_DEPENDENCY")
            if d == t.name:
                raise _fail(f"{where} task {t.name}", "depends on itself", code="PIPELINE_CYCLE")
    pipeline = Pipeline(name=name, tasks=tuple(tasks), params=params, description=str(data.get("description") or ""),
                        schedule=data.get("schedule"), start_date=str(data.get("start_date", "2024-01-01")),
                        launcher=launcher, source=path)
    try:
        pipeline.order()
    except PipelineError as exc:                             # a cycle: say where
        raise _fail(where, str(exc).split(": ", 1)[-1], code=exc.code) from None
    for t in tasks:                                          # placeholders name known things
        up = pipeline.upstream(t.name)
        for text in _arg_texts(t):
            for ph in _PLACEHOLDER.findall(text):
                _check_placeholder(ph, params, up, f"{where} task {t.name}")
    try:
        dt.date.fromisoformat(pipeline.start_date)
    except ValueError:
        raise _fail(where, f"start_date: expected YYYY-MM-DD, got {pipeline.start_date!r}") from None
    return pipeline


def _arg_texts(task: Task) -> list[str]:
    out: list[str] = []
    for a in task.args:
        out.extend([a] if isinstance(a, str) else a.args)
    return out


def _check_placeholder(ph: str, params: Mapping[str, str], upstream: set[str], where: str) -> None:
    if ph == "date" or ph in params:
        return
    task, dot, fld = ph.partition(".")
    if dot and _NAME.match(task) and _NAME.match(fld):
        if task not in upstream:
            raise _fail(where, f"args: {{{ph}}} reads the output of {task!r}, which is not upstream of this task")
        return
    raise _fail(where, f"args: unknown placeholder {{{ph}}}; use {{date}}, a param {sorted(params)} "
                       "or {TASK.FIELD} of an upstream task")


def load_spec(path: str | os.PathLike) -> Pipeline:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise PipelineError(f"cannot read pipeline spec {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path}: not valid YAML: {exc}") from None
    return parse_spec(data, source=str(path), path=path.resolve())


def pipelines_dir(project_root: Path) -> Path:
    """``$CTLAKE_PIPELINES_DIR`` or ``<project>/pipelines``."""
    env = os.environ.get("CTLAKE_PIPELINES_DIR")
    return Path(env).expanduser().resolve() if env else project_root / "pipelines"


def spec_paths(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.y*ml") if p.suffix in (".yaml", ".yml"))


def find_spec(name_or_path: str, folder: Path) -> Path:
    """The spec file of a pipeline: a path to a YAML file, or a name looked up in ``folder``."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    for candidate in spec_paths(folder):
        if candidate.stem == name_or_path:
            return candidate
    known = [c.stem for c in spec_paths(folder)]
    raise PipelineError(f"no pipeline {name_or_path!r} in {folder}; pipelines: {known}", code="PIPELINE_NOT_FOUND")


def load_all(folder: Path) -> list[Pipeline]:
    out = [load_spec(p) for p in spec_paths(folder)]
    seen: dict[str, Path | None] = {}
    for p in out:
        if p.name in seen:
            raise PipelineError(f"pipeline name {p.name!r} is used by {seen[p.name]} and {p.source}")
        seen[p.name] = p.source
    return out


def missing_entry_points(pipeline: Pipeline, project_root: Path) -> list[tuple[str, str]]:
    """(task, job) for every task whose entry point is not a file."""
    return [(t.name, t.job) for t in pipeline.tasks if not job_path(t, project_root).is_file()]


def job_path(task: Task, project_root: Path) -> Path:
    p = Path(task.job)
    return p if p.is_absolute() else project_root / p


def require_entry_points(pipeline: Pipeline, project_root: Path) -> None:
    missing = missing_entry_points(pipeline, project_root)
    if missing:
        lines = "\n".join(f"  task {t}: {j} does not exist" for t, j in missing)
        raise PipelineError(f"pipeline {pipeline.name}: {len(missing)} entry point(s) missing under "
                            f"{project_root}:\n{lines}", code="PIPELINE_MISSING_JOB",
                            hint="write the job, or run a spec without those tasks")


# --- rendering --------------------------------------------------------------------------------
def check_date(date: str) -> str:
    try:
        return dt.date.fromisoformat(date).isoformat()
    except (TypeError, ValueError):
        raise PipelineError(f"--date: expected YYYY-MM-DD, got {date!r}", code="USAGE") from None


def merge_params(pipeline: Pipeline, overrides: Mapping[str, str] | None) -> dict[str, str]:
    params = dict(pipeline.params)
    for k, v in (overrides or {}).items():
        if k not in params:
            raise PipelineError(f"pipeline {pipeline.name}: unknown param {k!r}; params: {sorted(params)}",
                                code="USAGE")
        params[k] = str(v)
    return params


def holds(when: Mapping[str, tuple[str, ...]], params: Mapping[str, str]) -> bool:
    return all(params.get(k) in values for k, values in when.items())


def render_args(task: Task, resolve: Callable[[str], str], params: Mapping[str, str]) -> list[str]:
    """``task``'s arguments with every placeholder replaced by ``resolve(placeholder)``."""
    out: list[str] = []
    for a in task.args:
        items = [a] if isinstance(a, str) else (list(a.args) if holds(a.when, params) else [])
        out.extend(_PLACEHOLDER.sub(lambda m: resolve(m.group(1)), x) for x in items)
    return out


def output_field(output: str | None, task: str, fld: str) -> str:
    """A field of the JSON object a task printed as its last stdout line."""
    try:
        value = json.loads(output or "")[fld]
    except (ValueError, KeyError, TypeError):
        raise PipelineError(f"task {task} did not print a JSON object with {fld!r} as its last stdout line "
                            f"(got {(output or '')[:200]!r})", code="PIPELINE_TASK_OUTPUT") from None
    return value if isinstance(value, str) else json.dumps(value)


def task_command(task: Task, args: list[str], *, python: str, project_root: Path, launcher: str = "python",
                 quote: Callable[[str], str] = shlex.quote) -> str:
    """The bash command that runs ``task`` (the CLI runner and the Airflow DAGs use the same one).

    ``python``: the stack's interpreter. The job's stdout passes through ``python -m ctlake.pipelines
    --last-json``, which repeats the last JSON object the job printed (indented or not) as one compact
    last line: that line is the task's output (Airflow's XCom), read by ``{TASK.FIELD}`` placeholders.
    ``pipefail`` keeps the job's exit code. With ``launcher: spark-submit`` the job goes through pyspark's
    spark-submit with the profile's settings (``ctlake spark-conf``) and, when ``$CTLAKE_PY_FILES`` is
    set, ``--py-files $CTLAKE_PY_FILES`` (the ctlake wheel copied to a .zip: PySpark puts only .zip,
    .egg and .jar py-files on the executors' path).
    """
    job = quote(str(job_path(task, project_root)))
    rest = " ".join(quote(a) for a in args)
    py = quote(python)
    if launcher == "python":
        run = f"{py} {job}"
    elif launcher == "spark-submit":
        run = (f'"$({py} -c "import pyspark, os; print(os.path.dirname(pyspark.__file__))")/bin/spark-submit" '
               f"$({py} -m ctlake spark-conf) ${{CTLAKE_PY_FILES:+--py-files \"$CTLAKE_PY_FILES\"}} {job}")
    else:
        raise PipelineError(f"launcher {launcher!r} is not one of {list(LAUNCHERS)}", code="USAGE")
    run += f" {rest}" if rest else ""
    return f"set -o pipefail; cd {quote(str(project_root))} && {run} | {py} -m ctlake.pipelines --last-json"


def last_json(text: str) -> dict | None:
    """The last JSON object in ``text`` that starts at the beginning of a line (None if there is none)."""
    decoder = json.JSONDecoder()
    starts = [m.start() for m in re.finditer(r"(?m)^\{", text)]
    for start in reversed(starts):
        try:
            obj, _ = decoder.raw_decode(text, start)
        except ValueError:
            continue
        if isinstance(obj, dict):
            return obj
    return None


def _last_json_filter(stdin, stdout, keep_chars: int = 4 * 1024 * 1024) -> int:
    """Copy ``stdin`` to ``stdout`` line by line; then print the last JSON object as one compact line."""
    tail = ""
    for line in stdin:
        stdout.write(line)
        stdout.flush()
        tail = (tail + line)[-keep_chars:]
    obj = last_json(tail)
    if obj is not None:
        if not tail.endswith("\n"):
            stdout.write("\n")
        stdout.write(json.dumps(obj, separators=(",", ":"), default=str) + "\n")
        stdout.flush()
    return 0


# --- running ----------------------------------------------------------------------------------
@dataclass
class TaskResult:
    name: str
    status: str                    # succeeded | failed | skipped | upstream_failed
    attempts: int = 0
    exit_code: int | None = None
    seconds: float = 0.0
    output: str | None = None      # the last stdout line (a JSON summary for ctlake's jobs)
    command: str | None = None

    def to_dict(self) -> dict:
        return {"status": self.status, "attempts": self.attempts, "exit_code": self.exit_code,
                "seconds": round(self.seconds, 2), "output": self.output}


@dataclass
class RunReport:
    pipeline: str
    run_id: str
    date: str
    params: dict[str, str]
    runner: str
    started: dt.datetime
    tasks: list[TaskResult] = field(default_factory=list)
    ended: dt.datetime | None = None

    @property
    def status(self) -> str:
        return "failed" if any(t.status in ("failed", "upstream_failed") for t in self.tasks) else "succeeded"

    @property
    def error(self) -> str | None:
        failed = [t for t in self.tasks if t.status == "failed"]
        if not failed:
            return None
        return "; ".join(f"task {t.name} failed (exit {t.exit_code} after {t.attempts} attempt(s))" for t in failed)

    def to_dict(self) -> dict:
        return {"pipeline": self.pipeline, "run_id": self.run_id, "date": self.date, "status": self.status,
                "runner": self.runner, "params": self.params, "error": self.error,
                "tasks": {t.name: t.to_dict() for t in self.tasks}}


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _run_once(command: str, env: Mapping[str, str], timeout_s: float | None,
              echo: Callable[[str], None]) -> tuple[int, str | None]:
    """Run ``bash -c command`` in its own process group; stream stdout through ``echo``; (rc, last line).

    After ``timeout_s`` the whole group gets SIGTERM (then SIGKILL) and the exit code is 124."""
    import threading

    proc = subprocess.Popen(["bash", "-c", command], stdout=subprocess.PIPE, stderr=None, text=True, env=dict(env),
                            start_new_session=True, stdin=subprocess.DEVNULL)
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            echo(line)
            if line.strip():
                lines.append(line.strip())

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        rc = proc.wait(timeout=timeout_s)
    except BaseException as exc:          # Ctrl-C / SIGTERM of the runner: the task's group goes too
        if not isinstance(exc, subprocess.TimeoutExpired):
            _kill_group(proc, grace_s=10.0)
            raise
        _kill_group(proc, grace_s=30.0)
        echo(f"[pipeline] killed after the task's timeout of {timeout_s:.0f} s")
        rc = 124
    reader.join(timeout=10)
    return rc, (lines[-1] if lines else None)


def _kill_group(proc: subprocess.Popen, *, grace_s: float) -> None:
    """SIGTERM the process group of ``proc``, SIGKILL it after ``grace_s``."""
    for sig, grace in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def run_pipeline(pipeline: Pipeline, *, project_root: Path, date: str, params: Mapping[str, str] | None = None,
                 profile: str | None = None, python: str | None = None, launcher: str | None = None,
                 run_id: str | None = None, progress: Callable[[str], None] | None = None,
                 echo: Callable[[str], None] | None = None, sleep: Callable[[float], None] = time.sleep) -> RunReport:
    """Run ``pipeline`` for the logical ``date``: every task in order, each as a subprocess, with retries.

    Refuses to start when an entry point is missing. ``profile`` is passed to the jobs as
    ``CTLAKE_PROFILE``. Does not write ``ops.pipeline_runs`` (see :func:`record_pipeline_run`).
    """
    say = progress or (lambda m: None)
    show = echo or (lambda line: print(line, file=sys.stderr, flush=True))
    date = check_date(date)
    values = merge_params(pipeline, params)
    require_entry_points(pipeline, project_root)
    python = python or sys.executable
    launcher = launcher or pipeline.launcher
    run_id = run_id or f"pipeline.{pipeline.name}:{date}:{uuid.uuid4().hex[:12]}"
    env = dict(os.environ, CTLAKE_PIPELINE=pipeline.name, CTLAKE_PIPELINE_RUN_ID=run_id, CTLAKE_LOGICAL_DATE=date)
    if profile:
        env["CTLAKE_PROFILE"] = profile
    report = RunReport(pipeline.name, run_id, date, values, "ctlake", _utcnow())
    results: dict[str, TaskResult] = {}
    for task in pipeline.order():
        deps = [results[d] for d in task.depends_on]
        if any(d.status in ("failed", "upstream_failed") for d in deps):
            results[task.name] = TaskResult(task.name, "upstream_failed")
            say(f"{pipeline.name}.{task.name}: not run (upstream failed)")
            continue
        if not holds(task.when, values):
            results[task.name] = TaskResult(task.name, "skipped")
            say(f"{pipeline.name}.{task.name}: skipped (when {task.when})")
            continue

        def resolve(ph: str) -> str:
            if ph == "date":
                return date
            if ph in values:
                return values[ph]
            up, _, fld = ph.partition(".")
            return output_field(results[up].output, up, fld)

        try:
            command = task_command(task, render_args(task, resolve, values), python=python,
                                   project_root=project_root, launcher=launcher)
        except PipelineError as exc:
            results[task.name] = TaskResult(task.name, "failed", exit_code=None)
            say(f"{pipeline.name}.{task.name}: failed before start: {exc}")
            continue
        result = TaskResult(task.name, "failed", command=command)
        t0 = time.monotonic()
        for attempt in range(1, task.retries + 2):
            result.attempts = attempt
            say(f"{pipeline.name}.{task.name}: attempt {attempt}/{task.retries + 1}: {command}")
            rc, last = _run_once(command, env, task.timeout_s, show)
            result.exit_code, result.output = rc, last
            if rc == 0:
                result.status = "succeeded"
                break
            if rc == SKIP_EXIT_CODE:
                result.status = "skipped"
                break
            say(f"{pipeline.name}.{task.name}: exit code {rc}")
            if attempt <= task.retries and task.retry_delay_s > 0:
                sleep(task.retry_delay_s)
        result.seconds = time.monotonic() - t0
        results[task.name] = result
        say(f"{pipeline.name}.{task.name}: {result.status} in {result.seconds:.1f} s")
    report.tasks = [results[t.name] for t in pipeline.order()]
    report.ended = _utcnow()
    return report


# --- ops.pipeline_runs ----------------------------------------------------------------------
_AIRFLOW_STATES = {"success": "succeeded", "failed": "failed", "skipped": "skipped",
                   "upstream_failed": "upstream_failed"}


def report_from_airflow(pipeline: Pipeline, *, run_id: str, date: str, started: dt.datetime,
                        breadcrumbs: list[dict], outputs: Mapping[str, str | None] | None = None) -> RunReport:
    """A :class:`RunReport` from Airflow's task breadcrumbs (task_id, state, duration) of one DAG run."""
    crumbs = {b.get("task_id"): b for b in breadcrumbs}
    report = RunReport(pipeline.name, run_id, check_date(date), dict(pipeline.params), "airflow", started)
    for t in pipeline.order():
        b = crumbs.get(t.name)
        state = _AIRFLOW_STATES.get(str((b or {}).get("state")), "failed" if b else "upstream_failed")
        report.tasks.append(TaskResult(t.name, state, attempts=int(b.get("try_number") or 1) if b else 0,
                                       seconds=float((b or {}).get("duration") or 0.0),
                                       output=(outputs or {}).get(t.name)))
    report.ended = _utcnow()
    return report


def record_pipeline_run(spark, cfg, report: RunReport) -> None:
    """Append the run's row to ``ops.pipeline_runs`` (job ``pipeline.<name>``)."""
    from ctlake.lake.runs import record_run

    done = sum(t.status == "succeeded" for t in report.tasks)
    record_run(spark, cfg, run_id=report.run_id, job=f"pipeline.{report.pipeline}", started=report.started,
               status=report.status, rows_in=len(report.tasks), rows_out=done, output_versions={},
               params={"date": report.date, "params": report.params, "runner": report.runner,
                       "tasks": {t.name: t.to_dict() for t in report.tasks}},
               error=report.error)


if __name__ == "__main__":
    if sys.argv[1:] != ["--last-json"]:
        print("usage: python -m ctlake.pipelines --last-json  (a filter used by the pipeline tasks)", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(_last_json_filter(sys.stdin, sys.stdout))
