"""The real MLflow server (sqlite store, served artifacts): a run, a registered torch model, loaded back."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

pytestmark = pytest.mark.integration


def test_run_register_and_load_torch_model(cfg, mlflow_server):
    import mlflow
    import torch
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    mlflow.set_experiment(cfg.mlflow.experiment)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).numpy()
    name = f"ctlake-test-{uuid.uuid4().hex[:8]}"
    with mlflow.start_run(run_name="test") as run:
        mlflow.log_params({"lr": 1e-3, "epochs": 2})
        for epoch, loss in enumerate([0.9, 0.5]):
            mlflow.log_metric("loss", loss, step=epoch)
        info = mlflow.pytorch.log_model(model, name="model", signature=infer_signature(x, y),
                                        input_example=x[:2], registered_model_name=name)
    client = MlflowClient(cfg.mlflow.tracking_uri)
    got = client.get_run(run.info.run_id)
    assert got.data.params == {"lr": "0.001", "epochs": "2"}
    assert [m.value for m in client.get_metric_history(run.info.run_id, "loss")] == [0.9, 0.5]
    versions = client.search_model_versions(f"name='{name}'")
    assert len(versions) == 1 and versions[0].run_id == run.info.run_id
    client.set_registered_model_alias(name, "candidate", versions[0].version)
    assert client.get_model_version_by_alias(name, "candidate").version == versions[0].version
    # the artifacts are served by the server (mlflow-artifacts:/), not written beside the client
    assert info.model_uri
    loaded = mlflow.pytorch.load_model(f"models:/{name}@candidate")
    with torch.no_grad():
        again = loaded(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(again, y, rtol=0, atol=0)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{name}/{versions[0].version}")
    np.testing.assert_allclose(np.asarray(pyfunc.predict(x)), y, rtol=1e-6)
