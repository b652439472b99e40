"""train -> evaluate -> register -> predict on a synthetic cohort, with the real Spark/Delta and MLflow.

Malignancy in the cohort depends on nodule size, density and margin (ctlake.train.synthetic), so the
diameter alone ranks it only partly: the CNN trained on the patches must beat the diameter
baseline's test AUC. Both are reported with patient-bootstrap 95 % CIs. Then the MLflow run must
hold the params, per-epoch metrics, dataset inputs (Delta path + version), the model with signature
and input example, the artifacts, and the registered alias; gold.predictions must hold one row per
scored patch with the registered name/version, equal to the scores of the evaluation.
The second test runs the CLI: the hybrid model (image + radiomics features) on 2 Horovod workers
(horovodrun) reading petastorm shards, registered and used for batch inference."""

from __future__ import annotations

import dataclasses
import json
import uuid
from pathlib import Path

import numpy as np
import pytest
from ctlake.config import LakeConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def lake(spark, cfg):
    """One synthetic cohort (150 patients, 16^3 patches, radiomics features) for this module's tests."""
    import shutil

    from ctlake.train import data as tdata
    from ctlake.train.synthetic import SyntheticPatchConfig, make_cohort

    root = Path(cfg.lake_root) / "t" / "train_pipeline"
    shutil.rmtree(root, ignore_errors=True)
    tc = cfg.train
    tc = dataclasses.replace(
        tc, epochs=10, batch_size=16, lr=0.001, threads_per_worker=1, loader="memory", early_stopping_patience=4,
        registry_prefix=f"ctlake-test-{uuid.uuid4().hex[:8]}-",
        malignancy=dataclasses.replace(tc.malignancy, size_name="16x16x16", conv_channels=8),
        hybrid=dataclasses.replace(tc.hybrid, size_name="16x16x16", conv_channels=4, hidden=16))
    tcfg = dataclasses.replace(cfg, lake=LakeConfig(root=str(root / "lake")), train=tc)
    cohort = make_cohort(SyntheticPatchConfig(patients=150, shape_zyx=(16, 16, 16), diameter_mm=(3.0, 12.0),
                                              negatives_per_patient=1, seed=3))
    versions = tdata.write_synthetic(spark, tcfg, cohort, mode="append")
    yield tcfg, cohort, versions
    from mlflow.tracking import MlflowClient  # the registered models are this module's own: remove them

    client = MlflowClient(tcfg.mlflow.tracking_uri)
    for m in client.search_registered_models(f"name LIKE '{tcfg.train.registry_prefix}%'"):
        client.delete_registered_model(m.name)


def test_malignancy_beats_diameter_and_is_tracked(spark, lake, mlflow_server, tmp_path):
    from ctlake.train import pipeline
    from mlflow.tracking import MlflowClient

    tcfg, cohort, versions = lake
    version = versions["gold.nodule_patches"]
    res = pipeline.train(spark, tcfg, model="malignancy", np=1)
    assert res.snapshot.version == version and res.digests and len(res.history) >= 5
    ev = pipeline.evaluate(spark, tcfg, res.run_id)
    model_auc, diam_auc = ev.metric("auc"), ev.metric("auc", baseline=True)
    print(f"\ntest split: {ev.n_test} nodules of {ev.patients} patients")
    for r in ev.rows + ev.baseline:
        print(f"  {r.model:<22} {r.metric:<18} {r.estimate:.3f}  95% CI [{r.ci_low:.3f}, {r.ci_high:.3f}]")
    d = ev.auc_difference
    print(f"  AUC(model) - AUC(diameter) {d['estimate']:.3f}  95% CI [{d['ci_low']:.3f}, {d['ci_high']:.3f}]")
    assert ev.n_test >= 50 and ev.patients >= 25
    assert model_auc.estimate > diam_auc.estimate, "the CNN does not beat the nodule-diameter baseline"
    for r in ev.rows + ev.baseline:
        assert r.n_valid >= 990 and (r.ci_low <= r.estimate <= r.ci_high), r

    name, version_no = pipeline.register(tcfg, res.run_id)
    assert name == f"{tcfg.train.registry_prefix}malignancy"
    pr = pipeline.predict(spark, tcfg, model_name=name, alias="malignancy")

    # --- MLflow: params, metrics, inputs, model, artifacts, registry ---------------------------
    client = MlflowClient(tcfg.mlflow.tracking_uri)
    run = client.get_run(res.run_id)
    p = run.data.params
    assert p["model"] == "malignancy" and p["data.table"] == "gold.nodule_patches"
    assert int(p["data.version"]) == version and p["data.size_name"] == "16x16x16"
    assert p["optimizer"] == "adamw" and float(p["lr"]) == 0.001 and p["np"] == "1"
    assert int(p["data.train.patients"]) + int(p["data.validation.patients"]) + int(p["data.test.patients"]) == 150
    history = client.get_metric_history(res.run_id, "val_auc")
    assert [m.step for m in history] == list(range(len(res.history)))
    assert [m.value for m in client.get_metric_history(res.run_id, "train_loss")] == \
        pytest.approx([h["train_loss"] for h in res.history])
    m = run.data.metrics
    assert m["test_auc"] == pytest.approx(model_auc.estimate)
    assert m["baseline_diameter_auc"] == pytest.approx(diam_auc.estimate)
    assert m["test_auc_ci_low"] <= m["test_auc"] <= m["test_auc_ci_high"]
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    train_input = inputs[f"gold.nodule_patches@v{version}/train"]
    source = json.loads(train_input.dataset.source)
    assert source["path"] == tcfg.table_path("gold.nodule_patches") and int(source["delta_table_version"]) == version
    assert {t.value for t in train_input.tags if t.key == "mlflow.data.context"} == {"training"}
    assert f"gold.nodule_patches@v{version}/test" in inputs

    def files(path=""):
        out = []
        for f in client.list_artifacts(res.run_id, path):
            out += files(f.path) if f.is_dir else [f.path]
        return out

    arts = set(files())
    for want in ("training_curves.png", "history.json", "model_spec.json", "evaluation/roc.png",
                 "evaluation/confusion_matrix.png", "evaluation/metrics.csv", "evaluation/metrics.json",
                 "evaluation/test_scores.csv"):
        assert want in arts, f"{want} not among the run's artifacts {sorted(arts)}"
    import mlflow

    info = mlflow.models.get_model_info(f"runs:/{res.run_id}/model")     # MLflow 3: a LoggedModel of the run
    assert list(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 1, 16, 16, 16]
    assert list(info.signature.outputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 2]
    assert info.saved_input_example_info and info.saved_input_example_info["artifact_path"]
    mv = client.get_model_version_by_alias(name, "malignancy")
    assert mv.version == version_no and mv.run_id == res.run_id
    metrics_json = json.loads(Path(client.download_artifacts(res.run_id, "evaluation/metrics.json",
                                                             str(tmp_path))).read_text())
    assert metrics_json["resampling"] == "patients" and metrics_json["bootstrap_resamples"] == 1000
    assert metrics_json["threshold_from"] == "Youden's J on the validation split"
    assert metrics_json["threshold"] == pytest.approx(m["eval_threshold"]) == pytest.approx(ev.threshold)
    assert {r["metric"] for r in metrics_json["metrics"]} == {"auc", "sensitivity", "specificity", "precision", "npv",
                                                              "f1", "balanced_accuracy"}

    # --- gold.predictions ----------------------------------------------------------------------
    preds = spark.read.format("delta").load(tcfg.table_path("gold.predictions")).toPandas()
    n_nodules = sum(1 for r in cohort.patch_rows if r["kind"] == "nodule")
    assert pr.rows == len(preds) == n_nodules and preds["patch_id"].is_unique
    assert set(preds["model_name"]) == {name} and set(preds["model_version"]) == {version_no}
    assert set(preds["mlflow_run_id"]) == {res.run_id} and set(preds["patches_version"]) == {version}
    assert preds["score"].between(0, 1).all() and np.allclose(preds["threshold"], ev.threshold)
    assert (preds["predicted_label"] == (preds["score"] >= preds["threshold"]).astype(int)).all()
    # executors' scores = the driver's evaluation scores of the same test patches
    import pandas as pd

    test_scores = pd.read_csv(client.download_artifacts(res.run_id, "evaluation/test_scores.csv", str(tmp_path)))
    merged = test_scores.merge(preds, on="patch_id")
    assert len(merged) == ev.n_test
    np.testing.assert_allclose(merged["score_x"], merged["score_y"], atol=1e-5)
    assert (merged["y"] == merged["label"]).all()
    runs = spark.read.format("delta").load(tcfg.table_path("ops.pipeline_runs")).toPandas()
    runs = runs[runs["params_json"].str.contains(res.run_id) | runs["params_json"].str.contains(name)]
    assert sorted(runs["job"]) == ["evaluate", "predict", "train"]
    assert set(runs["status"]) == {"succeeded"}
    assert all(v == {"gold.nodule_patches": version} for v in runs["input_versions"].map(dict))


def test_cli_hybrid_two_workers_petastorm(spark, lake, mlflow_server, monkeypatch, tmp_path):
    """`ctlake train --np 2 --model hybrid --loader petastorm --launcher horovodrun --register`, then
    `ctlake predict --kind hybrid`: image + radiomics features, petastorm shards on 2 Horovod workers."""
    from ctlake.cli import main
    from mlflow.tracking import MlflowClient

    tcfg, cohort, versions = lake
    env = {"CTLAKE__LAKE__ROOT": tcfg.lake.root, "CTLAKE__TRAIN__REGISTRY_PREFIX": tcfg.train.registry_prefix,
           "CTLAKE__TRAIN__THREADS_PER_WORKER": "1", "CTLAKE__TRAIN__HYBRID__SIZE_NAME": "16x16x16",
           "CTLAKE__TRAIN__HYBRID__CONV_CHANNELS": "4", "CTLAKE__TRAIN__PETASTORM__WORKERS": "1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert main(["--profile", "test", "train", "--np", "2", "--model", "hybrid", "--loader", "petastorm",
                 "--launcher", "horovodrun", "--epochs", "2", "--batch-size", "16", "--register",
                 "--json", str(tmp_path / "train.json")]) == 0
    summary = json.loads((tmp_path / "train.json").read_text())
    assert summary["model"] == "hybrid" and summary["np"] == 2 and summary["ranks_identical"] is True
    assert summary["registered"]["alias"] == "hybrid"
    assert summary["data_version"] == versions["gold.nodule_patches"]
    assert {r["model"] for r in summary["evaluation"]} == {"hybrid classifier", "diameter baseline"}
    client = MlflowClient(tcfg.mlflow.tracking_uri)
    run = client.get_run(summary["run_id"])
    assert run.data.params["loader"] == "petastorm" and run.data.params["launcher"] == "horovodrun"
    assert int(run.data.params["features.count"]) == 7
    assert int(run.data.params["features.version"]) == versions["gold.radiomics_features"]
    assert f"gold.radiomics_features@v{versions['gold.radiomics_features']}" in \
        {d.dataset.name for d in run.inputs.dataset_inputs}
    assert len(client.get_metric_history(summary["run_id"], "train_loss")) == 2

    assert main(["--profile", "test", "predict", "--kind", "hybrid", "--json", str(tmp_path / "predict.json")]) == 0
    pred = json.loads((tmp_path / "predict.json").read_text())
    assert pred["model_name"] == f"{tcfg.train.registry_prefix}hybrid"
    assert pred["model_version"] == summary["registered"]["version"]
    n_nodules = sum(1 for r in cohort.patch_rows if r["kind"] == "nodule")
    rows = spark.read.format("delta").load(tcfg.table_path("gold.predictions")).filter(
        f"model_name = '{pred['model_name']}'")
    assert pred["rows"] == rows.count() == n_nodules
