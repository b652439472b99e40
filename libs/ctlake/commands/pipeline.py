"""``ctlake pipeline list | show | check | run | record``: the scheduled pipelines of pipelines/*.yaml.

``run`` executes a spec without Airflow (see :mod:`ctlake.pipelines` for the semantics); ``record`` is
the last task of every generated Airflow DAG (it turns the DAG run's task states into the
``ops.pipeline_runs`` row and fails the DAG run when a task failed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal


def _pipeline(args: argparse.Namespace):
    from ctlake.cli import config_of
    from ctlake.pipelines import find_spec, load_spec, pipelines_dir

    cfg = config_of(args)
    return cfg, load_spec(find_spec(args.name, pipelines_dir(cfg.project_root)))


def _params(pairs: list[str] | None) -> dict[str, str]:
    from ctlake.pipelines import PipelineError

    out = {}
    for pair in pairs or []:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise PipelineError(f"--param takes KEY=VALUE, got {pair!r}", code="USAGE")
        out[key] = value
    return out


def cmd_list(args: argparse.Namespace) -> int:
    from ctlake.cli import config_of
    from ctlake.pipelines import load_all, missing_entry_points, pipelines_dir

    cfg = config_of(args)
    for p in load_all(pipelines_dir(cfg.project_root)):
        missing = missing_entry_points(p, cfg.project_root)
        note = f"  (missing entry points: {', '.join(j for _, j in missing)})" if missing else ""
        print(f"{p.name:<18}{p.schedule or '-':<10}{' → '.join(t.name for t in p.order())}{note}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    _, p = _pipeline(args)
    print(json.dumps(p.to_dict(), indent=2))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from ctlake.cli import config_of, say
    from ctlake.pipelines import find_spec, load_all, load_spec, missing_entry_points, pipelines_dir

    cfg = config_of(args)
    folder = pipelines_dir(cfg.project_root)
    specs = [load_spec(find_spec(n, folder)) for n in args.names] if args.names else load_all(folder)
    bad = 0
    for p in specs:
        missing = missing_entry_points(p, cfg.project_root)
        for task, job in missing:
            say(f"{p.name}.{task}: entry point {job} does not exist")
        bad += bool(missing)
        say(f"{p.name}: {len(p.tasks)} tasks, valid" + (f", {len(missing)} entry point(s) missing" if missing else ""))
    return 1 if bad else 0


def cmd_run(args: argparse.Namespace) -> int:
    from ctlake.cli import say
    from ctlake.pipelines import record_pipeline_run, run_pipeline

    cfg, p = _pipeline(args)
    date = args.date or dt.datetime.now(dt.UTC).date().isoformat()
    signal.signal(signal.SIGTERM, _interrupt)      # a stopped runner stops its running task too
    report = run_pipeline(p, project_root=cfg.project_root, date=date, params=_params(args.param),
                          profile=cfg.profile, launcher=args.launcher, progress=say)
    if not args.no_record:
        from ctlake.spark import get_spark

        record_pipeline_run(get_spark(cfg, app_name=f"ctlake-pipeline-{p.name}-record"), cfg, report)
        say(f"{p.name}: run {report.run_id} recorded in ops.pipeline_runs")
    print(json.dumps(report.to_dict()))
    say(f"{p.name} {report.date}: {report.status}" + (f" ({report.error})" if report.error else ""))
    return 0 if report.status == "succeeded" else 1


def _interrupt(signum, frame) -> None:  # noqa: ARG001
    raise KeyboardInterrupt


def cmd_record(args: argparse.Namespace) -> int:
    """The Airflow DAG's last task: task states (env CTLAKE_PIPELINE_TASKS, Airflow's breadcrumbs as JSON)
    → one ops.pipeline_runs row; exit 1 when a task failed, so the DAG run fails too."""
    from ctlake.cli import say
    from ctlake.pipelines import PipelineError, record_pipeline_run, report_from_airflow
    from ctlake.spark import get_spark

    cfg, p = _pipeline(args)
    try:
        crumbs = json.loads(os.environ.get(args.tasks_env) or "null")
        assert isinstance(crumbs, list)
    except (ValueError, AssertionError):
        raise PipelineError(f"${args.tasks_env} must hold the DAG run's task states as a JSON list",
                            code="USAGE") from None
    crumbs = [c for c in crumbs if c.get("task_id") != args.self_task]
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    earliest = now - dt.timedelta(seconds=sum(float(c.get("duration") or 0) for c in crumbs))
    try:     # Airflow renders a missing start as "None"; `airflow dags test` sets it to the logical date
        started = dt.datetime.fromisoformat(args.started).astimezone(dt.UTC).replace(tzinfo=None)
    except (TypeError, ValueError):
        started = earliest
    if started < earliest - dt.timedelta(days=1):
        started = earliest
    report = report_from_airflow(p, run_id=args.run_id, date=args.date, started=started, breadcrumbs=crumbs)
    record_pipeline_run(get_spark(cfg, app_name=f"ctlake-pipeline-{p.name}-record"), cfg, report)
    print(json.dumps(report.to_dict()))
    say(f"{p.name} {report.date} (airflow run {args.run_id}): {report.status}")
    return 0 if report.status == "succeeded" else 1


def register(sub, process) -> None:  # noqa: ARG001 - no `process` steps here
    p = sub.add_parser("pipeline", help="scheduled pipelines (pipelines/*.yaml): list, check, run without Airflow",
                       description="Pipelines are YAML specs under pipelines/ (or $CTLAKE_PIPELINES_DIR): tasks that "
                                   "each run a jobs/ entry point, with dependencies, params and retries. Airflow "
                                   "runs the same specs through pipelines/dags/.")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    q = actions.add_parser("list", help="the pipelines, their task order and missing entry points")
    q.set_defaults(func=cmd_list)

    q = actions.add_parser("show", help="one validated spec as JSON (tasks in run order)")
    q.add_argument("name", help="pipeline name or path to a spec YAML")
    q.set_defaults(func=cmd_show)

    q = actions.add_parser("check", help="validate specs and report missing entry points (exit 1 if any)")
    q.add_argument("names", nargs="*", metavar="NAME", help="pipelines (default: all)")
    q.set_defaults(func=cmd_check)

    q = actions.add_parser("run", help="run a pipeline for one logical date, without Airflow",
                           description="Run every task in dependency order as a subprocess (a task's exit code is "
                                       "its result), retrying a failed task alone; then append the run to "
                                       "ops.pipeline_runs. Prints the run report (JSON) on stdout; exit 0 when every "
                                       "task succeeded or was skipped, 1 otherwise.")
    q.add_argument("name", help="pipeline name or path to a spec YAML")
    q.add_argument("--date", help="logical date YYYY-MM-DD (default: today, UTC)")
    q.add_argument("--param", action="append", metavar="KEY=VALUE", help="override a param of the spec (repeatable)")
    q.add_argument("--launcher", choices=["python", "spark-submit"], default=None,
                   help="run jobs with the stack's python (Spark from the profile) or spark-submit "
                        "(+ --py-files $CTLAKE_PY_FILES) (default: the spec's launcher)")
    q.add_argument("--no-record", action="store_true", help="do not append the run to ops.pipeline_runs")
    q.set_defaults(func=cmd_run)

    q = actions.add_parser("record", help="(Airflow) record a DAG run's task states in ops.pipeline_runs")
    q.add_argument("name", help="pipeline name or path to a spec YAML")
    q.add_argument("--run-id", required=True, help="the Airflow run id")
    q.add_argument("--date", required=True, help="logical date YYYY-MM-DD")
    q.add_argument("--started", default=None, help="the DAG run's start (ISO 8601)")
    q.add_argument("--tasks-env", default="CTLAKE_PIPELINE_TASKS",
                   help="environment variable holding the task states as JSON (default CTLAKE_PIPELINE_TASKS)")
    q.add_argument("--self-task", default="record_run", help="this task's id, left out of the states")
    q.set_defaults(func=cmd_record)
