"""Airflow DAGs for ctlake's pipeline specs: one DAG per ``pipelines/*.yaml``, generated when Airflow
parses this file, so a DAG always has the spec's tasks, dependencies, retries and timeouts.

Each task is a BashOperator that runs a ``jobs/`` entry point with the stack's python (the same command
``ctlake pipeline run`` uses, :func:`ctlake.pipelines.task_command`); its exit code is its result. A task
whose ``when`` does not hold for the spec's params exits 99 and is *skipped*; tasks after it run
(trigger rule ``none_failed``), as in the CLI runner. The last task, ``record_run``, runs whatever
happened (``all_done``): it writes the DAG run's task states to ``ops.pipeline_runs`` and fails when a
task failed, so the DAG run fails too.

Airflow lives in its own venv (infra/airflow/bootstrap.sh); this file imports only ``ctlake.pipelines``
(standard library + PyYAML) from the checkout. Settings, read when the file is parsed:
  CTLAKE_HOME            the ctlake checkout (default: two folders above this file)
  CTLAKE_PYTHON          the stack's interpreter (default: <CTLAKE_HOME>/.venv/bin/python)
  CTLAKE_PIPELINES_DIR   the specs (default: <CTLAKE_HOME>/pipelines)
  CTLAKE_PIPELINE_PARAMS JSON {pipeline: {param: value}} over the specs' params (e.g. a site's incoming folder)
The jobs take their profile from the worker's environment (CTLAKE_PROFILE, CTLAKE__SECTION__KEY).
``{date}`` in a spec is Airflow's ``ds`` (the logical date), so trigger runs with a logical date.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

CTLAKE_HOME = Path(os.environ.get("CTLAKE_HOME") or Path(__file__).resolve().parents[2])
if str(CTLAKE_HOME / "libs") not in sys.path:
    sys.path.insert(0, str(CTLAKE_HOME / "libs"))

from ctlake import pipelines as cp  # noqa: E402 - needs the path above

PYTHON = os.environ.get("CTLAKE_PYTHON") or str(CTLAKE_HOME / ".venv" / "bin" / "python")
RECORD_TASK = "record_run"


def ctlake_field(output: str | None, task: str, field: str) -> str:
    """Jinja filter: ``field`` of the JSON object ``task`` printed last (its XCom)."""
    return cp.output_field(output, task, field)


def _resolver(params: dict[str, str]):
    def resolve(ph: str) -> str:
        if ph == "date":
            return "{{ ds }}"
        if ph in params:
            return params[ph]
        task, _, field = ph.partition(".")
        return f'{{{{ ti.xcom_pull(task_ids="{task}") | ctlake_field("{task}", "{field}") }}}}'

    return resolve


def build_dag(pipeline: cp.Pipeline, overrides: dict | None = None) -> DAG:
    params = cp.merge_params(pipeline, overrides)
    resolve = _resolver(params)
    with DAG(
        dag_id=pipeline.name,
        description=pipeline.description or None,
        doc_md=f"ctlake pipeline `{pipeline.name}` from `{pipeline.source}`. {pipeline.description}",
        schedule=pipeline.schedule,
        start_date=pendulum.parse(pipeline.start_date, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        tags=["ctlake"],
        user_defined_filters={"ctlake_field": ctlake_field},
    ) as dag:
        ops = {}
        for task in pipeline.order():
            if cp.holds(task.when, params):
                command = cp.task_command(task, cp.render_args(task, resolve, params), python=PYTHON,
                                          project_root=CTLAKE_HOME, launcher=pipeline.launcher)
            else:
                command = (f"echo 'skipped, {cp.job_path(task, CTLAKE_HOME)} not run: when {json.dumps(task.when)} "
                           f"does not hold'; exit {cp.SKIP_EXIT_CODE}")
            op = BashOperator(
                task_id=task.name,
                bash_command=command,
                doc_md=f"`{task.job}` {task.description}",
                retries=task.retries,
                retry_delay=dt.timedelta(seconds=task.retry_delay_s),
                execution_timeout=dt.timedelta(seconds=task.timeout_s) if task.timeout_s else None,
                trigger_rule="none_failed" if task.depends_on else "all_success",
                skip_on_exit_code=cp.SKIP_EXIT_CODE,
            )
            for dep in task.depends_on:
                ops[dep] >> op
            ops[task.name] = op
        record = BashOperator(
            task_id=RECORD_TASK,
            doc_md="the DAG run's task states → ops.pipeline_runs; fails when a task failed",
            bash_command=(f"cd '{CTLAKE_HOME}' && exec '{PYTHON}' -m ctlake pipeline record '{pipeline.source}' "
                          "--run-id '{{ run_id }}' --date '{{ ds }}' --started '{{ dag_run.start_date }}' "
                          f"--self-task {RECORD_TASK}"),
            env={"CTLAKE_PIPELINE_TASKS": "{{ ti.get_task_breadcrumbs(dag_id=dag.dag_id, run_id=run_id) "
                                          "| list | tojson }}"},
            append_env=True,
            trigger_rule="all_done",
            retries=0,
        )
        list(ops.values()) >> record
    return dag


_OVERRIDES = json.loads(os.environ.get("CTLAKE_PIPELINE_PARAMS") or "{}")
for _pipeline in cp.load_all(cp.pipelines_dir(CTLAKE_HOME)):
    globals()[f"dag_{_pipeline.name}"] = build_dag(_pipeline, _OVERRIDES.get(_pipeline.name))
