"""Champion / challenger promotion against the real MLflow server of the test profile.

Runs carry the metrics `ctlake evaluate` logs (test_auc and its CI bounds); their versions are
registered straight from the run's artifact folder (no model needs training for the decision)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import uuid

import pytest

pytestmark = [pytest.mark.integration]


def _version(client, name: str, experiment_id: str, auc: float, ci_low: float):
    run = client.create_run(experiment_id)
    for key, value in (("test_auc", auc), ("test_auc_ci_low", ci_low), ("test_auc_ci_high", min(1.0, auc + 0.05))):
        client.log_metric(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id)
    return client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)


def test_challenger_promoted_only_when_its_ci_lower_bound_is_better(cfg, mlflow_server):
    from ctlake.errors import CtlakeError
    from ctlake.train.registry import promote_if_better
    from mlflow.tracking import MlflowClient

    tag = uuid.uuid4().hex[:8]
    pcfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, registry_prefix=f"ctlake-promote-{tag}-"))
    name = f"{pcfg.train.registry_prefix}malignancy"
    client = MlflowClient(cfg.mlflow.tracking_uri)
    experiment_id = client.create_experiment(f"promote-{tag}")
    client.create_registered_model(name)
    try:
        with pytest.raises(CtlakeError, match="challenger"):        # nothing registered as challenger yet
            promote_if_better(pcfg, model="malignancy")
        v1 = _version(client, name, experiment_id, auc=0.80, ci_low=0.70)
        client.set_registered_model_alias(name, "challenger", v1.version)
        first = promote_if_better(pcfg, model="malignancy")           # no champion: the challenger becomes it
        assert first.promoted and first.champion_version is None
        assert client.get_model_version_by_alias(name, "champion").version == v1.version
        same = promote_if_better(pcfg, model="malignancy")
        assert not same.promoted and "same version" in same.reason
        # a higher AUC whose CI reaches lower does not replace the champion ...
        v2 = _version(client, name, experiment_id, auc=0.85, ci_low=0.65)
        client.set_registered_model_alias(name, "challenger", v2.version)
        kept = promote_if_better(pcfg, model="malignancy")
        assert not kept.promoted and (kept.challenger_value, kept.champion_value) == (0.65, 0.70)
        assert client.get_model_version_by_alias(name, "champion").version == v1.version
        # ... by the point estimate it would have
        assert promote_if_better(pcfg, model="malignancy", by="estimate").promoted
        client.set_registered_model_alias(name, "champion", v1.version)
        # a better lower bound does, through the pipeline's entry point (exit code 0, JSON on stdout)
        v3 = _version(client, name, experiment_id, auc=0.86, ci_low=0.75)
        client.set_registered_model_alias(name, "challenger", v3.version)
        env_cfg = {"CTLAKE_PROFILE": "test", "CTLAKE__TRAIN__REGISTRY_PREFIX": pcfg.train.registry_prefix}
        proc = subprocess.run([sys.executable, "jobs/promote_model.py", "--model", "malignancy", "--by", "ci_low"],
                              capture_output=True, text=True, cwd=cfg.project_root, timeout=300,
                              env={**os.environ, **env_cfg})
        assert proc.returncode == 0, proc.stderr[-2000:]
        out = json.loads(proc.stdout)
        assert out["promoted"] is True and out["challenger_version"] == str(v3.version)
        assert client.get_model_version_by_alias(name, "champion").version == v3.version
        # a challenger run without the metric is refused with a clear error, and nothing moves
        bare = client.create_run(experiment_id)
        v4 = client.create_model_version(name, f"{bare.info.artifact_uri}/model", run_id=bare.info.run_id)
        client.set_registered_model_alias(name, "challenger", v4.version)
        with pytest.raises(CtlakeError, match="test_auc_ci_low"):
            promote_if_better(pcfg, model="malignancy")
        assert client.get_model_version_by_alias(name, "champion").version == v3.version
    finally:
        client.delete_registered_model(name)
        client.delete_experiment(experiment_id)
