"""What every training worker runs: build the model, fit, report (one process or a Horovod rank).

:func:`train_worker` is a module-level function so ``horovod.spark.run`` and ``horovod.runner.run``
pickle it by reference; the :class:`WorkerPlan` it gets is plain data (config, model spec, data
handles). Rank 0 alone writes the per-epoch metrics to MLflow and returns the weights; every rank
returns the SHA-256 digest of its final weights, so the caller can check that all ranks agree.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field

from ctlake.config import TrainConfig
from ctlake.train.data import TrainData

__all__ = ["WorkerPlan", "train_worker"]


@dataclass
class WorkerPlan:
    cfg: TrainConfig
    spec: dict                                   # ctlake.train.models.build_model spec
    data: TrainData
    class_weights: tuple[float, float]
    distributed: bool = False
    epochs: int | None = None
    feature_mean: list[float] | None = None      # hybrid: train-split standardisation
    feature_std: list[float] | None = None
    init_backbone: bytes | None = None           # torch.save'd state of a candidate model (fine-tuning)
    freeze_blocks: int = 0
    mlflow_uri: str | None = None
    mlflow_run_id: str | None = None
    extra: dict = field(default_factory=dict)


def _threads(cfg: TrainConfig, size: int) -> int:
    return cfg.threads_per_worker or max(1, (os.cpu_count() or 1) // size)


def train_worker(plan: WorkerPlan) -> dict:
    """Train on this worker's share (see :mod:`ctlake.train.loop`); returns rank, size, digest,
    history and, on rank 0, the final ``state_dict`` (as torch.save bytes)."""
    import torch

    from ctlake.train.loop import HorovodComm, LocalComm, fit, weights_digest
    from ctlake.train.models import build_model, freeze_leading, set_stats_allreduce

    hvd = None
    if plan.distributed:
        import horovod.torch as hvd

        hvd.init()
        comm = HorovodComm()
    else:
        comm = LocalComm()
    threads_before = torch.get_num_threads()
    try:
        torch.set_num_threads(_threads(plan.cfg, comm.size))
        device = _device(plan.cfg, hvd.local_rank() if hvd is not None else 0)
        torch.manual_seed(plan.cfg.seed)
        model = build_model(plan.spec)
        if plan.feature_mean is not None:
            model.set_feature_scaling(torch.tensor(plan.feature_mean), torch.tensor(plan.feature_std))
        if plan.init_backbone is not None:
            state = torch.load(io.BytesIO(plan.init_backbone), weights_only=True)
            model.backbone.load_state_dict(state)
        freeze_leading(model, plan.freeze_blocks)
        set_stats_allreduce(model, comm.bn_allreduce() if plan.cfg.sync_batchnorm else None)

        logger = None
        if comm.rank == 0 and plan.mlflow_uri and plan.mlflow_run_id:
            logger = _mlflow_epoch_logger(plan.mlflow_uri, plan.mlflow_run_id)
        try:
            outcome = fit(model, plan.data.batches(comm.rank, comm.size, plan.cfg),
                          plan.data.validation(comm.rank, comm.size, plan.cfg), plan.cfg,
                          class_weights=plan.class_weights, comm=comm, epochs=plan.epochs, on_epoch=logger,
                          device=device)
        finally:
            plan.data.close()
        set_stats_allreduce(model, None)
        result = {"rank": comm.rank, "size": comm.size, "digest": weights_digest(model),
                  "history": outcome.history, "best_epoch": outcome.best_epoch,
                  "best_metric": outcome.best_metric, "stopped_early": outcome.stopped_early}
        if comm.rank == 0:
            buf = io.BytesIO()
            torch.save(outcome.state_dict, buf)
            result["state_dict"] = buf.getvalue()
        return result
    finally:
        torch.set_num_threads(threads_before)
        if hvd is not None:
            hvd.shutdown()


def _device(cfg: TrainConfig, local_rank: int):
    """cuda:<local rank> for device auto|cuda when CUDA is there, else the CPU."""
    import torch

    from ctlake.errors import CtlakeError

    if cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise CtlakeError("train.device is cuda but torch sees no GPU", code="NO_GPU",
                          hint="set train.device to auto or cpu")
    torch.cuda.set_device(local_rank % torch.cuda.device_count())
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def _mlflow_epoch_logger(uri: str, run_id: str):
    import time

    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)

    def log(row: dict) -> None:
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, int(row["epoch"])) for k, v in row.items()
                   if k not in ("epoch", "best_epoch") and v == v]      # NaN (one-class validation) left out
        client.log_batch(run_id, metrics=metrics)

    return log


def _main(plan_path: str, out_dir: str) -> None:
    """``python -m ctlake.train.worker PLAN OUT``: one rank under horovodrun; writes OUT/rank<r>.pkl."""
    import pickle
    from pathlib import Path

    plan = pickle.loads(Path(plan_path).read_bytes())  # noqa: S301 - the launcher's own file
    plan.distributed = True
    result = train_worker(plan)
    path = Path(out_dir) / f"rank{result['rank']}.pkl"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(result))
    tmp.replace(path)


if __name__ == "__main__":
    import sys

    _main(sys.argv[1], sys.argv[2])
