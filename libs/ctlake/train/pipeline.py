r"""train -> evaluate -> register -> predict: the driver side of ctlake's model life cycle.

Each step is one function (the CLI and jobs/ call them; ``make demo`` chains them):

    train(spark, cfg, model="malignancy", np=2)        -> TrainResult (MLflow run id, history, ...)
    evaluate(spark, cfg, run_id)                       -> EvalResult (metrics with patient-bootstrap CIs)
    register(cfg, run_id, alias=None)                  -> (registered name, version)
    predict(spark, cfg, model_name=None, alias=None)   -> PredictResult (gold.predictions written)

What MLflow holds for a training run (experiment ``mlflow.experiment``):
    params    model kind, np, launcher, loader, every optimisation / augmentation / architecture
              setting, the data snapshot (table, Delta version, size, rows/positives/patients per split)
    inputs    one dataset per split: source = the Delta table path AND version (DeltaDatasetSource)
              (and the radiomics table + version for the hybrid), context training/validation/test
    metrics   per epoch (step = epoch): train_loss, val_loss, val_auc, lr, samples_per_s (rank 0);
              best_epoch; after ``evaluate``: test_<metric> and its _ci_low/_ci_high, the diameter
              baseline (baseline_diameter_<metric>...), test_auc_minus_diameter_auc with its CI, and
              eval_threshold (train.threshold, or Youden's J on the validation split when that is
              null; ``predict`` uses it)
    model     ``model/`` (mlflow.pytorch; signature + input example: a normalised patch (1, 1, Z, Y, X)
              float32 -- for the hybrid the packed (1, Z*Y*X + F) vector -- -> logits (1, 2)); loading
              it needs the ctlake package importable (the classes live in ctlake.train.models)
    artifacts model_spec.json, history.json, training_curves.png; evaluation/: metrics.csv,
              metrics.json, roc.png, confusion_matrix.png, test_scores.csv
    registry  ``register`` makes version k of ``<train.registry_prefix><kind>`` with alias ``<kind>``
              (or the one given), tagged with the data version and the test AUC
Every step also appends its ops.pipeline_runs row (input table versions, rows, status).
"""

from __future__ import annotations

import dataclasses
import io
import json
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ctlake.config import Config
from ctlake.errors import CtlakeError
from ctlake.lake import delta
from ctlake.train import data as tdata

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["EvalResult", "PredictResult", "TrainResult", "evaluate", "predict", "register", "train"]

Progress = Callable[[str], None]


def _quiet(_msg: str) -> None:
    return None


# --- MLflow helpers ---------------------------------------------------------------------------
def _mlflow(cfg: Config):
    import mlflow

    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    mlflow.set_experiment(cfg.mlflow.experiment)
    return mlflow


def _client(cfg: Config):
    from mlflow.tracking import MlflowClient

    return MlflowClient(cfg.mlflow.tracking_uri)


def _train_params(cfg: Config, kind: str, np_workers: int, launcher: str, loader: str, epochs: int) -> dict:
    tc = cfg.train
    mc = tc.model_config(kind)
    out = {"model": kind, "np": np_workers, "launcher": launcher if np_workers > 1 else "in-process",
           "loader": loader, "epochs": epochs}
    for k in ("seed", "batch_size", "optimizer", "lr", "weight_decay", "momentum", "lr_schedule", "lr_step_epochs",
              "lr_gamma", "warmup_epochs", "early_stopping_patience", "early_stopping_metric", "restore_best",
              "balance", "sync_batchnorm", "threshold", "normalisation", "device", "bf16", "threads_per_worker"):
        out[k] = getattr(tc, k)
    out["window_hu"], out["zscore_hu"] = list(tc.window_hu), list(tc.zscore_hu)
    for k, v in dataclasses.asdict(tc.augment).items():
        out[f"augment.{k}"] = v
    for k in ("size_name", "conv_channels", "hidden", "dropout", "init_from", "freeze_blocks"):
        out[f"arch.{k}"] = getattr(mc, k)
    if loader == "petastorm":
        out.update({"petastorm.workers": tc.petastorm.workers, "petastorm.pool": tc.petastorm.pool,
                    "petastorm.row_group_mb": tc.petastorm.row_group_mb})
    return out


def _log_inputs(mlflow, snap: tdata.Snapshot, splits=("train", "validation", "test")) -> None:
    """One MLflow dataset input per split (and the radiomics table): a DeltaDatasetSource naming the
    table path and version; metadata only, so logging costs no Spark job."""
    import hashlib

    from mlflow.data.delta_dataset_source import DeltaDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    def digest(*parts) -> str:     # MLflow reuses a dataset of the same name and digest: include the path
        return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:16]

    for split in splits:
        c = snap.counts.get(split, {})
        if not c.get("rows"):
            continue
        ds = MetaDataset(DeltaDatasetSource(path=snap.path, delta_table_version=snap.version),
                         name=f"{snap.table}@v{snap.version}/{split}",
                         digest=digest(snap.path, snap.version, snap.size_name, split, c["rows"]))
        mlflow.log_input(ds, context={"train": "training"}.get(split, split),
                         tags={"rows": str(c["rows"]), "positives": str(c["positives"]),
                               "patients": str(c["patients"]), "size_name": snap.size_name})
    if snap.features_path is not None:
        ds = MetaDataset(DeltaDatasetSource(path=snap.features_path, delta_table_version=snap.features_version),
                         name=f"{snap.features_table}@v{snap.features_version}",
                         digest=digest(snap.features_path, snap.features_version, snap.params_hash))
        mlflow.log_input(ds, context="features", tags={"params_hash": str(snap.params_hash),
                                                        "features": str(len(snap.feature_names))})


def _record_run(spark: SparkSession, cfg: Config, *, job: str, run_id: str, started, status: str, rows_in: int,
                rows_out: int, inputs: dict, outputs: dict, params: dict, error: str | None = None) -> None:
    """ops.pipeline_runs row with the inputs' Delta versions (an input without a version is left out)."""
    from ctlake.lake.runs import record_run

    record_run(spark, cfg, run_id=run_id, job=job, started=started, status=status, rows_in=rows_in,
               rows_out=rows_out, input_versions={k: int(v) for k, v in inputs.items() if v is not None},
               output_versions={k: int(v) for k, v in outputs.items()}, params=params, error=error)


def _cfg_for(cfg: Config, kind: str, size_name: str, feature_names=(), params_hash=None) -> Config:
    """``cfg`` with the model section of ``kind`` set to a run's patch size (and feature set)."""
    tc = cfg.train
    mc = dataclasses.replace(tc.model_config(kind), size_name=size_name,
                             features=tuple(feature_names) or tc.model_config(kind).features,
                             params_hash=params_hash or tc.model_config(kind).params_hash)
    return dataclasses.replace(cfg, train=dataclasses.replace(tc, **{kind: mc}))


# --- train ------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    run_id: str
    kind: str
    model_uri: str
    snapshot: tdata.Snapshot
    history: list[dict]
    best_epoch: int
    digests: list[str]
    np: int
    seconds: float
    pipeline_run_id: str
    run_url: str = ""

    def summary(self) -> dict:
        last = self.history[self.best_epoch] if 0 <= self.best_epoch < len(self.history) else {}
        return {"run_id": self.run_id, "model": self.kind, "np": self.np, "epochs": len(self.history),
                "best_epoch": self.best_epoch, "val_auc": last.get("val_auc"), "data_version": self.snapshot.version,
                "ranks_identical": len(set(self.digests)) == 1, "seconds": round(self.seconds, 1),
                "mlflow": self.run_url}


def _feature_scaling(df) -> tuple[list[float], list[float]]:
    from pyspark.sql import functions as F  # noqa: N812

    rows = df.filter(F.col("split") == "train").select("features").toPandas()["features"]
    arr = np.asarray([np.asarray(v, np.float64) for v in rows])
    return arr.mean(axis=0).tolist(), arr.std(axis=0).tolist()


def _init_backbone(cfg: Config, uri: str) -> bytes:
    import mlflow.pytorch
    import torch

    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    try:
        source = mlflow.pytorch.load_model(uri)
    except Exception as exc:  # noqa: BLE001 - any MLflow failure: say which URI
        raise CtlakeError(f"cannot load {uri} to fine-tune from: {exc}", code="NO_MODEL",
                          hint="train.malignancy.init_from takes a model URI such as models:/ctlake-candidate@candidate"
                          ) from None
    buf = io.BytesIO()
    torch.save(source.backbone.state_dict(), buf)
    return buf.getvalue()


def train(spark: SparkSession, cfg: Config, *, model: str | None = None, np: int | None = None,
          epochs: int | None = None, launcher: str | None = None, loader: str | None = None,
          data_version: int | None = None, run_name: str | None = None, progress: Progress = _quiet) -> TrainResult:
    """Train model ``model`` (default train.model) on ``np`` Horovod workers (default train.np) from
    the patch table at one Delta version; everything goes to one MLflow run (module docstring)."""
    import torch

    from ctlake.lake.runs import utcnow
    from ctlake.train.distributed import launch
    from ctlake.train.models import build_model
    from ctlake.train.worker import WorkerPlan

    tc = cfg.train
    kind = model or tc.model
    mc = tc.model_config(kind)
    np_workers = np or tc.np
    epochs = epochs or tc.epochs
    launcher = launcher or tc.launcher
    loader = loader or tc.loader
    started, t0 = utcnow(), time.perf_counter()
    pipeline_run_id = uuid.uuid4().hex
    progress(f"train {kind}: reading {tc.patches_table} (size {mc.size_name})")
    df, snap = tdata.select_rows(spark, cfg, kind, version=data_version)
    c = snap.counts
    progress(f"train {kind}: {tc.patches_table}@v{snap.version}: "
             + ", ".join(f"{s} {c.get(s, {}).get('rows', 0)} rows / {c.get(s, {}).get('patients', 0)} patients"
                         for s in tdata.SPLITS))
    spec = {"kind": kind, "patch_zyx": list(snap.shape_zyx), "conv_channels": mc.conv_channels,
            "dropout": mc.dropout, "hidden": mc.hidden, "feature_names": list(snap.feature_names),
            "n_features": len(snap.feature_names)}
    mean = std = None
    if kind == "hybrid":
        mean, std = _feature_scaling(df)
    init = _init_backbone(cfg, mc.init_from) if mc.init_from and kind != "candidate" else None
    data = tdata.build_train_data(spark, cfg, df, snap, loader=loader, np_workers=np_workers)
    weights = tdata.class_weights(c, tc.balance)
    mlflow = _mlflow(cfg)
    run_name = run_name or f"{kind}-np{np_workers}-v{snap.version}"
    with mlflow.start_run(run_name=run_name) as run:
        run_id = run.info.run_id
        mlflow.set_tags({"ctlake.kind": kind, "ctlake.pipeline_run_id": pipeline_run_id,
                         "ctlake.data": f"{snap.table}@v{snap.version}", "ctlake.profile": cfg.profile})
        mlflow.log_params({**_train_params(cfg, kind, np_workers, launcher, loader, epochs), **snap.params(),
                           "class_weights": [round(w, 6) for w in weights]})
        _log_inputs(mlflow, snap)
        plan = WorkerPlan(cfg=tc, spec=spec, data=data, class_weights=weights, epochs=epochs, feature_mean=mean,
                          feature_std=std, init_backbone=init, freeze_blocks=mc.freeze_blocks if init else 0,
                          mlflow_uri=cfg.mlflow.tracking_uri, mlflow_run_id=run_id)
        progress(f"train {kind}: {np_workers} worker(s) ({launcher if np_workers > 1 else 'in-process'}), "
                 f"{loader} loader, {epochs} epochs of {data.steps_per_epoch} steps x {tc.batch_size}")
        try:
            results = launch(plan, np_workers, cfg, launcher=launcher, spark=spark)
        except Exception as exc:
            mlflow.set_tag("ctlake.error", str(exc)[:5000])
            _record_run(spark, cfg, job="train", run_id=pipeline_run_id, started=started, status="failed",
                        rows_in=c["train"]["rows"], rows_out=0, inputs={snap.table: snap.version}, outputs={},
                        params={"mlflow_run_id": run_id, "model": kind, "np": np_workers}, error=str(exc)[:2000])
            raise
        digests = [r["digest"] for r in results]
        if len(set(digests)) != 1:
            mlflow.set_tag("ctlake.ranks_identical", "false")
            raise CtlakeError(f"Horovod workers ended with different weights: {digests}", code="RANKS_DIVERGED")
        mlflow.set_tag("ctlake.ranks_identical", "true")
        first = results[0]
        history = first["history"]
        net = build_model(spec)
        net.load_state_dict(torch.load(io.BytesIO(first["state_dict"]), weights_only=True))
        net.eval()
        mlflow.log_metrics({"best_epoch": float(first["best_epoch"]), "epochs_run": float(len(history))})
        model_uri = _log_model(mlflow, net, spec, df, cfg, history, kind)
        seconds = time.perf_counter() - t0
        mlflow.log_metric("train_seconds", seconds)
    _record_run(spark, cfg, job="train", run_id=pipeline_run_id, started=started, status="succeeded",
                rows_in=c["train"]["rows"], rows_out=0,
                inputs={snap.table: snap.version, **({snap.features_table: snap.features_version}
                                                     if snap.features_table else {})}, outputs={},
                params={"mlflow_run_id": run_id, "model": kind, "np": np_workers, "epochs": epochs})
    progress(f"train {kind}: MLflow run {run_id}, best epoch {first['best_epoch'] + 1}/{len(history)}")
    url = f"{cfg.mlflow.tracking_uri.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run_id}"
    return TrainResult(run_id, kind, model_uri, snap, history, int(first["best_epoch"]), digests, np_workers,
                       seconds, pipeline_run_id, url)


def _example_input(df, spec: dict, cfg: Config) -> np.ndarray:
    """One normalised training patch (or packed hybrid vector) for the MLflow signature and input example."""
    from pyspark.sql import functions as F  # noqa: N812

    from ctlake.train.transforms import Normaliser, decode_images

    tc = cfg.train
    norm = Normaliser(tc.normalisation, tc.window_hu, tc.zscore_hu)
    shape = tuple(spec["patch_zyx"])
    cols = ["image"] + (["features"] if spec["kind"] == "hybrid" else [])
    row = df.filter(F.col("split") == "train").orderBy("patch_id").select(*cols).first()
    x = norm(decode_images([bytes(row["image"])], shape)).numpy().reshape(1, 1, *shape).astype(np.float32)
    if spec["kind"] == "hybrid":
        return np.concatenate([x.reshape(1, -1), np.asarray([row["features"]], np.float32)], axis=1)
    return x


def _log_model(mlflow, net, spec: dict, df, cfg: Config, history: list[dict], kind: str) -> str:
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    from ctlake.train.plots import training_curves_png

    example = _example_input(df, spec, cfg)
    with torch.no_grad():
        out = net(torch.from_numpy(example)).numpy()
    info = mlflow.pytorch.log_model(
        net, name="model", signature=infer_signature(example, out), input_example=example,
        serialization_format="pickle",            # the nn.Module itself (pt2 export would drop .spec)
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "model_spec.json").write_text(json.dumps(spec, indent=2))
        (tmp / "history.json").write_text(json.dumps(history, indent=2))
        training_curves_png(history, tmp / "training_curves.png", title=f"{kind} classifier")
        for name in ("model_spec.json", "history.json", "training_curves.png"):
            mlflow.log_artifact(str(tmp / name))
    return info.model_uri


# --- evaluate ---------------------------------------------------------------------------------
@dataclass
class EvalResult:
    run_id: str
    kind: str
    threshold: float
    rows: list = field(default_factory=list)            # MetricCI of the model
    baseline: list = field(default_factory=list)        # MetricCI of the diameter baseline
    auc_difference: dict = field(default_factory=dict)  # model AUC - diameter AUC: estimate, ci_low, ci_high
    n_test: int = 0
    patients: int = 0
    data_version: int = -1

    def metric(self, name: str, baseline: bool = False):
        return next(r for r in (self.baseline if baseline else self.rows) if r.metric == name)

    def table(self) -> list[dict]:
        return [r.as_dict() for r in self.rows + self.baseline]


def _normaliser_args(params: dict, tc) -> tuple[str, tuple[float, float], tuple[float, float]]:
    """The run's own HU normalisation (its logged params), not today's config: a model scores
    patches normalised as it was trained. Runs without the params fall back to ``tc``."""
    def pair(key: str, default: tuple[float, float]) -> tuple[float, float]:
        text = params.get(key)
        if not text:
            return default
        lo, hi = json.loads(text)
        return float(lo), float(hi)

    return (params.get("normalisation", tc.normalisation), pair("window_hu", tc.window_hu),
            pair("zscore_hu", tc.zscore_hu))


def _run_params(cfg: Config, run_id: str) -> dict:
    try:
        return dict(_client(cfg).get_run(run_id).data.params)
    except Exception as exc:  # noqa: BLE001
        raise CtlakeError(f"MLflow run {run_id} not found at {cfg.mlflow.tracking_uri}: {exc}", code="NO_RUN") from None


def evaluate(spark: SparkSession, cfg: Config, run_id: str, *, threshold: float | None = None,
             resamples: int | None = None, split: str = "test", progress: Progress = _quiet) -> EvalResult:
    """Score the test split (or ``split``) of the run's own data snapshot; metrics with
    patient-bootstrap CIs, the diameter baseline side by side; everything logged to the run
    (module docstring; metrics are named ``<split>_auc`` etc.)."""
    import mlflow.pytorch
    import torch

    from ctlake.lake.runs import utcnow
    from ctlake.train import metrics as M  # noqa: N812
    from ctlake.train.loop import predict_scores
    from ctlake.train.plots import confusion_png, roc_png
    from ctlake.train.transforms import Normaliser

    started = utcnow()
    tc = cfg.train
    params = _run_params(cfg, run_id)
    kind = params["model"]
    mlflow = _mlflow(cfg)
    net = mlflow.pytorch.load_model(f"runs:/{run_id}/model")
    net.eval()
    spec = net.spec
    rcfg = _cfg_for(cfg, kind, params["data.size_name"], spec.get("feature_names", ()),
                    params.get("features.params_hash"))
    version = int(params["data.version"])
    fversion = int(params["features.version"]) if "features.version" in params else None
    df, snap = tdata.select_rows(spark, rcfg, kind, version=version, features_version=fversion)
    if split not in tdata.SPLITS:
        raise CtlakeError(f"split {split!r} is not one of {tdata.SPLITS}", code="USAGE")
    test = tdata.collect_arrays(df, snap.shape_zyx, split)
    if not len(test) or len(set(test.y.tolist())) < 2:
        raise CtlakeError(f"{snap.table}@v{version}: the {split} split has {len(test)} rows of "
                          f"{len(set(test.y.tolist()))} class(es); cannot evaluate", code="NO_TEST_ROWS",
                          hint="a cohort too small for a patient split; more patients, or --split validation")
    norm = Normaliser(*_normaliser_args(params, tc))
    x = norm(test.images).reshape(-1, 1, *snap.shape_zyx)
    feats = None if test.features is None else torch.from_numpy(test.features)
    scores, _ = predict_scores(net, x, feats, tc.eval_batch_size)
    thr, thr_from = _threshold(threshold, params, tc, df, snap, net, norm)
    progress(f"evaluate {kind}: threshold {thr:.4f} ({thr_from})")
    n_boot = resamples or tc.bootstrap_resamples
    res = EvalResult(run_id, kind, thr, n_test=len(test), patients=len(set(test.patients.tolist())),
                     data_version=version)
    res.rows = M.metrics_table(test.y, scores, test.patients, threshold=thr, resamples=n_boot, level=tc.ci_level,
                               rng=np.random.default_rng(tc.seed), model=f"{kind} classifier")
    curves = {f"{kind} classifier": (*M.roc_curve(test.y, scores)[:2], res.rows[0].estimate)}
    # the baseline on the rows with a measured diameter (all of them when the patch job measured every nodule)
    has = np.isfinite(test.diameters) if kind != "candidate" else np.zeros(len(test), bool)
    if has.sum() and len(set(test.y[has].tolist())) == 2:
        from pyspark.sql import functions as F  # noqa: N812

        tr = df.filter((F.col("split") == "train") & F.col("diameter_mm").isNotNull()).select(
            "y", "diameter_mm").toPandas()
        d_thr = M.youden_threshold(tr["y"].to_numpy(), tr["diameter_mm"].to_numpy(float))
        yb, sb, db, pb = test.y[has], scores[has], test.diameters[has], test.patients[has]
        # the same seed -> the same patient resamples as the model's rows: a paired comparison
        res.baseline = M.metrics_table(yb, db, pb, threshold=d_thr, resamples=n_boot, level=tc.ci_level,
                                       rng=np.random.default_rng(tc.seed), model="diameter baseline")
        lo, hi, n_ok = M.bootstrap_ci(lambda idx: M.roc_auc(yb[idx], sb[idx]) - M.roc_auc(yb[idx], db[idx]),
                                      pb, resamples=n_boot, level=tc.ci_level, rng=np.random.default_rng(tc.seed))
        res.auc_difference = {"estimate": M.roc_auc(yb, sb) - res.baseline[0].estimate, "ci_low": lo,
                              "ci_high": hi, "n_valid": n_ok, "diameter_threshold_mm": d_thr,
                              "rows": int(has.sum())}
        curves["diameter baseline"] = (*M.roc_curve(yb, db)[:2], res.baseline[0].estimate)
    counts = M.confusion(test.y, scores, thr)
    with mlflow.start_run(run_id=run_id):
        logged = {"eval_threshold": thr, f"{split}_rows": float(len(test)), f"{split}_patients": float(res.patients)}
        for r in res.rows:
            logged.update({f"{split}_{r.metric}": r.estimate, f"{split}_{r.metric}_ci_low": r.ci_low,
                           f"{split}_{r.metric}_ci_high": r.ci_high})
        for r in res.baseline:
            logged.update({f"baseline_diameter_{r.metric}": r.estimate,
                           f"baseline_diameter_{r.metric}_ci_low": r.ci_low,
                           f"baseline_diameter_{r.metric}_ci_high": r.ci_high})
        if res.auc_difference:
            logged.update({f"{split}_auc_minus_diameter_auc": res.auc_difference["estimate"],
                           f"{split}_auc_minus_diameter_auc_ci_low": res.auc_difference["ci_low"],
                           f"{split}_auc_minus_diameter_auc_ci_high": res.auc_difference["ci_high"]})
        mlflow.log_metrics({k: float(v) for k, v in logged.items() if v == v})
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            import pandas as pd

            table = pd.DataFrame(res.table())
            table.to_csv(tmp / "metrics.csv", index=False)
            (tmp / "metrics.json").write_text(json.dumps(
                {"run_id": run_id, "model": kind, "split": split, "threshold": thr, "threshold_from": thr_from,
                 "bootstrap_resamples": n_boot,
                 "ci_level": tc.ci_level, "resampling": "patients", "data": f"{snap.table}@v{version}",
                 "test_rows": len(test), "test_patients": res.patients, "metrics": res.table(),
                 "auc_difference": res.auc_difference, "confusion": counts}, indent=2, default=float))
            pd.DataFrame({"patch_id": test.patch_ids, "patient_pseudo_id": test.patients, "y": test.y,
                          "score": scores, "diameter_mm": test.diameters}).to_csv(tmp / f"{split}_scores.csv",
                                                                                   index=False)
            roc_png(curves, tmp / "roc.png", title=f"ROC, {split} split ({len(test)} rows, {res.patients} patients)")
            confusion_png(counts, tmp / "confusion_matrix.png", threshold=thr, split=split)
            mlflow.log_artifacts(str(tmp), artifact_path="evaluation" if split == "test" else f"evaluation_{split}")
    _record_run(spark, cfg, job="evaluate", run_id=uuid.uuid4().hex, started=started, status="succeeded",
                rows_in=len(test), rows_out=0, inputs={snap.table: version}, outputs={},
                params={"mlflow_run_id": run_id, "threshold": thr, "resamples": n_boot})
    auc = res.rows[0]
    msg = f"evaluate {kind}: {split} AUC {auc.estimate:.3f} [{auc.ci_low:.3f}, {auc.ci_high:.3f}]"
    if res.baseline:
        b = res.baseline[0]
        msg += f"; diameter baseline AUC {b.estimate:.3f} [{b.ci_low:.3f}, {b.ci_high:.3f}]"
    progress(msg)
    return res


def _threshold(given: float | None, params: dict, tc, df, snap: tdata.Snapshot, net, norm) -> tuple[float, str]:
    """The decision threshold: ``given``, else the run's fixed train.threshold, else the score
    maximising Youden's J (sensitivity + specificity - 1) on the validation split (the training
    split when there is no validation split with both classes)."""
    import torch

    from ctlake.train import metrics as M  # noqa: N812
    from ctlake.train.loop import predict_scores

    if given is not None:
        return float(given), "given"
    fixed = params.get("threshold", "None")
    if fixed not in ("None", "", None):
        return float(fixed), "train.threshold"
    for split in ("validation", "train"):
        c = snap.counts.get(split, {})
        if c.get("rows", 0) and 0 < c["positives"] < c["rows"]:
            arr = tdata.collect_arrays(df, snap.shape_zyx, split)
            f = None if arr.features is None else torch.from_numpy(arr.features)
            s, _ = predict_scores(net, norm(arr.images).reshape(-1, 1, *snap.shape_zyx), f, tc.eval_batch_size)
            return M.youden_threshold(arr.y, s), f"Youden's J on the {split} split"
    return 0.5, "default 0.5"


# --- register ---------------------------------------------------------------------------------
def register(cfg: Config, run_id: str, *, alias: str | None = None, name: str | None = None,
             progress: Progress = _quiet) -> tuple[str, str]:
    """Register the run's model as a new version of ``name`` (default <registry_prefix><kind>) and
    point ``alias`` (default: the kind) at it. Returns (name, version)."""
    params = _run_params(cfg, run_id)
    kind = params["model"]
    name = name or f"{cfg.train.registry_prefix}{kind}"
    alias = alias or kind
    mlflow = _mlflow(cfg)
    mv = mlflow.register_model(f"runs:/{run_id}/model", name, await_registration_for=300)
    client = _client(cfg)
    client.set_registered_model_alias(name, alias, mv.version)
    metrics = client.get_run(run_id).data.metrics
    tags = {"data": f"{params.get('data.table')}@v{params.get('data.version')}", "kind": kind}
    if "test_auc" in metrics:
        tags["test_auc"] = f"{metrics['test_auc']:.4f}"
    if "eval_threshold" in metrics:
        tags["threshold"] = f"{metrics['eval_threshold']:.6g}"
    for k, v in tags.items():
        client.set_model_version_tag(name, mv.version, k, v)
    progress(f"register: {name} version {mv.version} @{alias}")
    return name, str(mv.version)


# --- predict ----------------------------------------------------------------------------------
@dataclass
class PredictResult:
    model_name: str
    model_version: str
    rows: int
    table_version: int
    patches_version: int
    run_id: str


def _predict_threshold(cfg: Config, run_id: str, params: dict) -> float:
    """The threshold the evaluation chose (metric eval_threshold), else the run's fixed one, else 0.5."""
    metrics = _client(cfg).get_run(run_id).data.metrics
    if "eval_threshold" in metrics:
        return float(metrics["eval_threshold"])
    fixed = params.get("threshold", "None")
    return float(fixed) if fixed not in ("None", "", None) else 0.5


def _resolve_version(cfg: Config, name: str, alias: str | None, version: str | None):
    client = _client(cfg)
    try:
        return client.get_model_version(name, version) if version else client.get_model_version_by_alias(name, alias)
    except Exception as exc:  # noqa: BLE001
        raise CtlakeError(f"no registered model {name} {'version ' + version if version else '@' + str(alias)}: "
                          f"{exc}", code="NO_MODEL", hint="train, evaluate and `ctlake register` first") from None


def predict(spark: SparkSession, cfg: Config, *, model_name: str | None = None, alias: str | None = None,
            version: str | None = None, kind: str | None = None, patches_version: int | None = None,
            progress: Progress = _quiet) -> PredictResult:
    """Score every patch of the model's kind and size in ``train.patches_table`` (latest version, or
    ``patches_version``) with a registered model version (``version``, or ``alias``: default the
    kind) on the Spark executors; merge into ``gold.predictions`` keyed (patch_id, model_name,
    model_version), so re-running adds nothing new."""
    import mlflow.pytorch
    import torch

    from ctlake.lake.runs import utcnow
    from ctlake.lake.schemas import PREDICTIONS

    started = utcnow()
    kind = kind or cfg.train.model
    name = model_name or f"{cfg.train.registry_prefix}{kind}"
    mv = _resolve_version(cfg, name, alias or kind if not version else None, version)
    params = _run_params(cfg, mv.run_id)
    kind = params["model"]
    _mlflow(cfg)
    net = mlflow.pytorch.load_model(f"models:/{name}/{mv.version}")
    spec = net.spec
    rcfg = _cfg_for(cfg, kind, params["data.size_name"], spec.get("feature_names", ()),
                    params.get("features.params_hash"))
    df, snap = tdata.select_rows(spark, rcfg, kind, version=patches_version, for_training=False)
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    state = spark.sparkContext.broadcast(buf.getvalue())
    tc = cfg.train
    norm_args = _normaliser_args(params, tc)
    thr = _predict_threshold(cfg, mv.run_id, params)
    run_id = uuid.uuid4().hex
    now = utcnow()
    consts = {"model_name": name, "model_version": str(mv.version), "model_kind": kind, "threshold": thr,
              "mlflow_run_id": mv.run_id, "patches_version": snap.version, "run_id": run_id, "predicted_at": now}
    cols = ["patch_id", "nodule_id", "series_instance_uid", "patient_pseudo_id", "split", "y", "image"] + \
        (["features"] if "features" in df.columns else [])
    out_schema = PREDICTIONS
    batch = tc.eval_batch_size

    def score(frames):
        import pandas as pd
        import torch as th

        from ctlake.train.loop import predict_scores
        from ctlake.train.models import build_model
        from ctlake.train.transforms import Normaliser, decode_images

        th.set_num_threads(1)
        model = build_model(spec)
        model.load_state_dict(th.load(io.BytesIO(state.value), weights_only=True))
        model.eval()
        norm = Normaliser(*norm_args)
        for pdf in frames:
            if pdf.empty:
                continue
            x = norm(decode_images([bytes(b) for b in pdf["image"]], spec["patch_zyx"])).reshape(
                -1, 1, *spec["patch_zyx"])
            f = None
            if "features" in pdf.columns:
                f = th.from_numpy(np.asarray([np.asarray(v, np.float32) for v in pdf["features"]], np.float32))
            s, _ = predict_scores(model, x, f, batch)
            out = pd.DataFrame({"patch_id": pdf["patch_id"], "nodule_id": pdf["nodule_id"],
                                "series_instance_uid": pdf["series_instance_uid"],
                                "patient_pseudo_id": pdf["patient_pseudo_id"], "split": pdf["split"],
                                "score": s, "predicted_label": (s >= thr).astype("int32"),
                                "label": pdf["y"].astype("Int32")})
            for k, v in consts.items():
                out[k] = v
            yield out[[f.name for f in out_schema.fields]]

    scored = df.select(*cols).mapInPandas(score, schema=out_schema).persist()
    try:
        n_rows = scored.count()                   # score once; the MERGE reads the persisted rows
        result = delta.write(spark, cfg, scored, "gold.predictions", mode="merge", count=False,
                             deterministic_source=True)
    except Exception as exc:
        _record_run(spark, cfg, job="predict", run_id=run_id, started=started, status="failed", rows_in=0,
                    rows_out=0, inputs={snap.table: snap.version}, outputs={},
                    params={"model": name, "version": mv.version}, error=str(exc)[:2000])
        raise
    finally:
        scored.unpersist()
        state.unpersist()
    _record_run(spark, cfg, job="predict", run_id=run_id, started=started, status="succeeded",
                rows_in=n_rows, rows_out=n_rows, inputs={snap.table: snap.version},
                outputs={"gold.predictions": result.version}, params={"model": name, "version": mv.version})
    progress(f"predict: {n_rows} rows of {name} v{mv.version} -> gold.predictions@v{result.version}")
    return PredictResult(name, str(mv.version), n_rows, result.version, snap.version, run_id)
