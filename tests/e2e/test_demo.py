"""`ctlake demo` end to end on the test profile's real services; every output is checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_end_to_end(cfg, kafka, mlflow_server, elasticsearch, spark, tmp_path):
    out = tmp_path / "summary.json"
    proc = subprocess.run([sys.executable, "-m", "ctlake", "--profile", "test", "demo", "--patients", "2",
                           "--json", str(out)], capture_output=True, text=True, timeout=1500,
                          cwd=cfg.project_root)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(out.read_text())
    # the demo's own lake (the profile's, unless CTLAKE__LAKE__ROOT points elsewhere): <lake>/<layer>/<name>
    path = {".".join(Path(t).parts[-2:]): t for t in summary["tables"]}
    assert summary["series"] == 2 and summary["volumes_built"] == 2
    # the search index follows the lake: one series doc per series, one nodule doc per gold.nodules row
    assert summary["index"] == "succeeded" and summary["es_docs"]["series"] == 2
    nodule_rows = spark.read.format("delta").load(path["gold.nodules"]).count()
    assert summary["es_docs"]["nodules"] == nodule_rows
    assert summary["bronze_instances"] == summary["instances_sent"] > 0
    assert "ctlake demo: done" in proc.stdout and summary["mlflow_run"] in proc.stdout
    # the Delta tables are really there, readable by another Spark session
    bronze = spark.read.format("delta").load(path["bronze.dicom_instances"])
    assert bronze.count() >= summary["instances_sent"]
    runs = spark.read.format("delta").load(path["ops.pipeline_runs"]).filter("job = 'ingest_stream'")
    assert runs.filter("status = 'succeeded'").count() >= 1
    # every table of the pipeline exists and the gold tables hold the cohort's nodules
    for table in summary["tables"]:
        if not table.endswith("quarantine"):  # a clean synthetic cohort quarantines nothing
            assert spark.read.format("delta").load(table).count() > 0, table
    assert summary["nodules_ok"] >= 1 and summary["patches"] >= summary["nodules_ok"]
    # the MLflow run has its preview image
    from mlflow.tracking import MlflowClient

    run_id = summary["mlflow_run"].rsplit("/", 1)[-1]
    client = MlflowClient(cfg.mlflow.tracking_uri)
    assert [a.path for a in client.list_artifacts(run_id)] == ["preview.png"]
    assert "index-pattern" in Path(summary["kibana_ndjson"]).read_text()
    assert client.get_run(run_id).data.metrics["series"] == 2
    # radiomics for every ok nodule; the candidate model trained on two Horovod workers, registered, scoring
    assert summary["radiomics_ok"] == summary["nodules_ok"] and summary["radiomics_failed_this_run"] == 0
    assert summary["ranks_identical"] is True
    name = summary["model"].split(" ")[0]
    registered = client.get_model_version_by_alias(name, "candidate")
    assert summary["model"] == f"{name} v{registered.version} @candidate"
    preds = spark.read.format("delta").load(path["gold.predictions"]) \
        .filter(f"model_name = '{name}' AND model_version = '{registered.version}'").count()
    patches = spark.read.format("delta").load(path["gold.nodule_patches"]).count()
    assert summary["predictions"] == preds > 0 and preds <= patches
