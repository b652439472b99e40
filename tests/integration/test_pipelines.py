"""Scheduled pipelines on the real jobs, Spark/Delta and Elasticsearch, through Airflow and without it.

Airflow 3.3 runs from its own venv (infra/airflow/bootstrap.sh; sqlite metadata DB in a temporary
AIRFLOW_HOME, examples off) over pipelines/dags/, i.e. over the committed specs. One lake, two runs of
the committed daily_ingest spec, every task of it:
  1. `airflow dags test daily_ingest D1` on a dropped folder (cohort A);
  2. `airflow dags test daily_ingest D2` (backfill of a second date) on cohort A again plus cohort B:
     only B is added (A, delivered again, adds nothing), no table has a duplicate key.
Each run leaves its ops.pipeline_runs row with the state of every task. The CLI runner
(`ctlake pipeline run`: order, retries alone, skips, outputs, timeouts) is tested on small stand-in jobs in
tests/unit/test_pipeline_spec.py; a third run of the real jobs here would add ~10 minutes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
D1, D2 = "2024-05-01", "2024-05-02"
DATA_TABLES = ("bronze.dicom_instances", "bronze.quarantine", "silver.ct_series", "silver.ct_volumes",
               "silver.lung_masks", "gold.nodules", "gold.nodule_patches", "gold.radiomics_features")

DAGBAG = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
from airflow.utils.dag_cycle_tester import check_cycle
bag = DagBag(dag_folder=sys.argv[1])
out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": {}}
for dag_id, dag in bag.dags.items():
    check_cycle(dag)
    out["dags"][dag_id] = {t.task_id: {"upstream": sorted(t.upstream_task_ids), "retries": t.retries,
                                       "trigger_rule": str(t.trigger_rule.value), "cmd": t.bash_command}
                           for t in dag.tasks}
print("DAGBAG " + json.dumps(out))
"""


def table_stats(spark, lake_root: str) -> dict[str, tuple[int, int]]:
    """(rows, distinct keys) of every data table."""
    from ctlake.lake.schemas import TABLES
    from pyspark.sql import functions as F

    out = {}
    for name in DATA_TABLES:
        df = spark.read.format("delta").load(f"{lake_root}/{name.replace('.', '/')}")
        row = df.agg(F.count(F.lit(1)).alias("n"), F.countDistinct(*TABLES[name].key).alias("k")).first()
        out[name] = (row.n, row.k)
    return out


@pytest.fixture(scope="module")
def airflow(tmp_path_factory) -> dict:
    """The Airflow venv (built by infra/airflow/bootstrap.sh when missing) and a fresh AIRFLOW_HOME."""
    boot = subprocess.run(["bash", str(ROOT / "infra" / "airflow" / "bootstrap.sh")], capture_output=True,
                          text=True, timeout=900)
    assert boot.returncode == 0, boot.stderr[-3000:]
    venv = Path(boot.stdout.strip().splitlines()[-1])
    home = tmp_path_factory.mktemp("airflow-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "VIRTUAL_ENV", "PYTHONPATH"))}
    env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "pipelines" / "dags"), CTLAKE_PROFILE="test",
               CTLAKE_PYTHON=sys.executable)
    mig = subprocess.run([str(venv / "bin" / "airflow"), "db", "migrate"], capture_output=True, text=True,
                         env=env, timeout=300)
    assert mig.returncode == 0, mig.stdout[-2000:] + mig.stderr[-2000:]
    return {"venv": venv, "env": env, "home": home}


def test_dags_import_without_errors_or_cycles_and_follow_the_specs(airflow):
    from ctlake.pipelines import load_all

    proc = subprocess.run([str(airflow["venv"] / "bin" / "python"), "-c", DAGBAG, str(ROOT / "pipelines" / "dags")],
                          capture_output=True, text=True, env=airflow["env"], timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("DAGBAG ")]
    bag = json.loads(line[len("DAGBAG "):])
    assert bag["errors"] == {}
    specs = {p.name: p for p in load_all(ROOT / "pipelines")}
    assert set(bag["dags"]) == set(specs) == {"daily_ingest", "weekly_retrain"}
    for name, spec in specs.items():
        tasks = bag["dags"][name]
        assert set(tasks) == {t.name for t in spec.tasks} | {"record_run"}
        for t in spec.tasks:
            assert tasks[t.name]["upstream"] == sorted(t.depends_on)
            assert tasks[t.name]["retries"] == t.retries
            assert tasks[t.name]["trigger_rule"] == ("none_failed" if t.depends_on else "all_success")
            assert str(ROOT / t.job) in tasks[t.name]["cmd"]
            assert (sys.executable in tasks[t.name]["cmd"]) == ("exit 99" not in tasks[t.name]["cmd"])
        assert tasks["record_run"]["upstream"] == sorted(t.name for t in spec.tasks)
        assert tasks["record_run"]["trigger_rule"] == "all_done"
    # the skipped branch of daily_ingest (source=folder by default) exits 99, Airflow's skip code
    assert "exit 99" in bag["dags"]["daily_ingest"]["ingest_stream"]["cmd"]
    assert "{{ ds }}" in bag["dags"]["daily_ingest"]["ingest_folder"]["cmd"]
    assert 'xcom_pull(task_ids="train")' in bag["dags"]["weekly_retrain"]["evaluate"]["cmd"]


@pytest.mark.timeout(2400)     # two runs of nine Spark tasks each
def test_daily_ingest_in_airflow_backfill_of_two_dates(airflow, cfg, spark, elasticsearch, lake_tmp, tmp_path):
    from ctlake.synth import SynthConfig, generate_cohort

    incoming = tmp_path / "incoming"
    cohort_a = generate_cohort(tmp_path / "a", SynthConfig(patients=2, size=48, slices=16, seed=7))
    cohort_b = generate_cohort(tmp_path / "b", SynthConfig(patients=1, size=48, slices=16, seed=10))
    shutil.copytree(tmp_path / "a", incoming / D1)
    shutil.copytree(tmp_path / "a", incoming / D2 / "a")                   # D2 delivers A again ...
    shutil.copytree(tmp_path / "b", incoming / D2 / "b")                   # ... and B
    with open(incoming / D2 / "annotations.csv", "w") as fh:               # one CSV for the day
        a, b = ((tmp_path / x / "annotations.csv").read_text().splitlines() for x in ("a", "b"))
        fh.write("\n".join([*a, *b[1:]]) + "\n")
    files = {c: sum(len(s.files) for s in m.series) for c, m in (("a", cohort_a), ("b", cohort_b))}
    nodules = {"a": len(cohort_a.annotations), "b": len(cohort_b.annotations)}
    assert nodules["a"] >= 1 and nodules["b"] >= 1

    lake = str(lake_tmp / "lake")
    prefix = f"ctlake-test-pipe-{uuid.uuid4().hex[:6]}"
    env = dict(airflow["env"], CTLAKE__LAKE__ROOT=lake, CTLAKE__ELASTICSEARCH__INDEX_PREFIX=prefix,
               CTLAKE_PIPELINE_PARAMS=json.dumps({"daily_ingest": {"incoming": str(incoming)}}))

    def dags_test(date: str) -> None:
        proc = subprocess.run([str(airflow["venv"] / "bin" / "airflow"), "dags", "test", "daily_ingest", date],
                              capture_output=True, text=True, env=env, cwd=airflow["home"], timeout=1500)
        out = proc.stdout + proc.stderr
        finished = [x for x in out.splitlines() if "DagRun Finished" in x]
        assert proc.returncode == 0 and finished and "state=success" in finished[-1], out[-8000:]

    def runs() -> list:
        df = spark.read.format("delta").load(f"{lake}/ops/pipeline_runs").filter("job = 'pipeline.daily_ingest'")
        return df.orderBy("started_at").collect()

    try:
        dags_test(D1)
        first = table_stats(spark, lake)
        assert first["bronze.dicom_instances"] == (files["a"], files["a"])
        assert first["silver.ct_series"][0] == 2 and first["gold.nodules"][0] == nodules["a"]
        assert first["gold.radiomics_features"][0] >= 1 and first["gold.nodule_patches"][0] >= 1

        dags_test(D2)                          # backfill of the next date: A again + B
        second = table_stats(spark, lake)
        assert second["bronze.dicom_instances"] == (files["a"] + files["b"],) * 2
        assert second["silver.ct_series"][0] == 3 and second["gold.nodules"][0] == nodules["a"] + nodules["b"]
        assert all(rows == keys for rows, keys in second.values()), second     # no duplicate keys anywhere
        from ctlake.index.client import es_client

        es = es_client(cfg)                     # the index task brought the search index up to the lake
        es.indices.refresh(index=f"{prefix}-series")
        assert es.count(index=f"{prefix}-series")["count"] == second["silver.ct_series"][0]

        recorded = runs()
        assert len(recorded) == 2 and all(r.status == "succeeded" for r in recorded)
        tasks = json.loads(recorded[1].params_json)["tasks"]
        assert json.loads(recorded[1].params_json)["runner"] == "airflow"
        assert tasks["ingest_stream"]["status"] == "skipped"
        assert {k for k, v in tasks.items() if v["status"] == "succeeded"} == {
            "ingest_folder", "volumes", "lungs", "nodules", "patches", "radiomics", "index"}

        assert recorded[1].rows_in == 8 and recorded[1].rows_out == 7      # 8 tasks: 7 succeeded, 1 skipped
        assert json.loads(recorded[0].params_json)["date"] == D1 and json.loads(recorded[1].params_json)["date"] == D2
    finally:
        from ctlake.index.client import es_client

        try:   # by name: Elasticsearch 8 refuses wildcard deletes (action.destructive_requires_name)
            es = es_client(cfg)
            for name in es.indices.get(index=f"{prefix}*", expand_wildcards="all"):
                es.indices.delete(index=name)
        except Exception as exc:  # noqa: BLE001 - clean-up only
            print(f"could not delete {prefix}*: {exc}", file=sys.stderr)
