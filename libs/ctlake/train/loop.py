r"""The training loop, the same for one process and for N Horovod workers (torch; Horovod optional).

Distributed training equals single-process training on the same global batches:

* data: every global batch of ``batch_size`` samples is split over the N workers (each takes
  ``batch_size / N``); augmentation randomness is drawn per sample (:mod:`ctlake.train.transforms`);
* loss: worker r minimises  L_r = sum_{i in r} w_{y_i} CE_i / W  with W = allreduce_sum(sum_i w_{y_i})
  the class-weight total of the WHOLE global batch, and gradients are SUMMED over workers
  (``hvd.DistributedOptimizer(op=Sum)``), so the step uses  d/dtheta sum_r L_r  -- the gradient of the
  global weighted mean loss, even for unequal shards;
* batch-norm: statistics over the global batch (:class:`ctlake.train.models.SyncableBatchNorm3d`
  with Horovod's differentiable allreduce), otherwise each worker would normalise by its own half;
* start: same seed on every worker, parameters (and buffers) broadcast from rank 0, optimizer
  state broadcast when there is any (a fresh one is empty and identical everywhere);
* metrics: losses summed with allreduce, validation scores gathered with allgather, so every
  worker computes the same AUC and takes the same early-stopping decision (no worker waits on
  a collective the others skipped).
What remains are float rounding differences (convolutions over N smaller batches sum in
another order), hence "equal within a tolerance".

Learning-rate schedule, per epoch: a linear warm-up over ``warmup_epochs``, then ``cosine``
(lr * (1 + cos(pi t / T)) / 2), ``step`` (lr * gamma^floor(t / step)), ``plateau`` (lr * gamma when the
validation metric has not improved for max(1, patience // 2) epochs) or ``none``.
Early stopping: stop after ``early_stopping_patience`` epochs without a better validation metric
(val_auc: higher, val_loss: lower) and keep the best epoch's weights.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from ctlake.train.metrics import roc_auc

__all__ = ["Batch", "Comm", "HorovodComm", "LocalComm", "TrainOutcome", "fit", "make_optimizer", "predict_scores",
           "weights_digest"]


@dataclass
class Batch:
    """One worker's part of a global batch: x (n, 1, Z, Y, X) float32, y (n,) int64 in {0, 1},
    features (n, F) float32 or None, keys (n,) int64 sample keys."""

    x: torch.Tensor
    y: torch.Tensor
    features: torch.Tensor | None = None
    keys: torch.Tensor | None = None


class Comm:
    """Collectives seen by the loop; :class:`LocalComm` is one process, :class:`HorovodComm` N workers."""

    rank: int = 0
    size: int = 1

    def allreduce_sum(self, t: torch.Tensor, name: str) -> torch.Tensor:
        raise NotImplementedError

    def allgather(self, t: torch.Tensor, name: str) -> torch.Tensor:
        raise NotImplementedError

    def broadcast(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        raise NotImplementedError

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer, model: nn.Module) -> torch.optim.Optimizer:
        raise NotImplementedError

    def bn_allreduce(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        raise NotImplementedError


class LocalComm(Comm):
    def allreduce_sum(self, t, name):
        return t

    def allgather(self, t, name):
        return t

    def broadcast(self, model, optimizer):
        return None

    def wrap_optimizer(self, optimizer, model):
        return optimizer

    def bn_allreduce(self):
        return None


class HorovodComm(Comm):
    """Horovod (gloo on CPU, NCCL on GPU); ``hvd.init()`` must have run."""

    def __init__(self) -> None:
        import horovod.torch as hvd

        self.hvd = hvd
        self.rank, self.size = hvd.rank(), hvd.size()

    def allreduce_sum(self, t, name):
        return self.hvd.allreduce(t, op=self.hvd.Sum, name=name)

    def allgather(self, t, name):
        return self.hvd.allgather(t, name=name)

    def broadcast(self, model, optimizer):
        self.hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        # A fresh optimizer has no state, and Horovod would create it with a zero-gradient step
        # (AdamW then decays the weights once and counts one step more than a single process
        # does); fresh optimizers are identical on every worker anyway, so only real state
        # (e.g. a resumed run) is broadcast.
        if optimizer.state_dict()["state"]:
            self.hvd.broadcast_optimizer_state(optimizer, root_rank=0)

    def wrap_optimizer(self, optimizer, model):
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        return self.hvd.DistributedOptimizer(optimizer, named_parameters=named, op=self.hvd.Sum)

    def bn_allreduce(self):
        hvd = self.hvd
        counter = iter(range(10**12))
        # unique names per call: collectives are matched across workers by name and order
        return lambda t: hvd.allreduce(t, op=hvd.Sum, name=f"bn_stats.{next(counter)}")


@dataclass
class TrainOutcome:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_metric: float = float("nan")
    stopped_early: bool = False
    state_dict: dict | None = None


def make_optimizer(params, cfg) -> torch.optim.Optimizer:
    """``cfg``: a :class:`ctlake.config.TrainConfig` (optimizer, lr, weight_decay, momentum)."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


def lr_factor(epoch: int, cfg, epochs: int) -> float:
    """Multiplier of the base lr in ``epoch`` (0-based) for warm-up + cosine/step/none."""
    w = cfg.warmup_epochs
    if epoch < w:
        return (epoch + 1) / (w + 1)
    t = epoch - w
    if cfg.lr_schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t / max(epochs - w, 1)))
    if cfg.lr_schedule == "step":
        return cfg.lr_gamma ** (t // cfg.lr_step_epochs)
    return 1.0


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer, in state-dict order: equal digests = identical weights."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _forward(model: nn.Module, x: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
    return model(x) if features is None else model(x, features)


@torch.no_grad()
def predict_scores(model: nn.Module, x: torch.Tensor, features: torch.Tensor | None = None,
                   batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(scores P(positive), logits) of eval-mode ``model`` over x (n, 1, Z, Y, X), in batches on
    the model's device; results on the CPU as float64 / float32 numpy."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    logits = []
    for i in range(0, x.shape[0], batch_size):
        f = None if features is None else features[i:i + batch_size].to(device)
        logits.append(_forward(model, x[i:i + batch_size].to(device), f).float().cpu())
    model.train(was)
    out = torch.cat(logits) if logits else torch.zeros(0, 2)
    return torch.softmax(out, dim=1)[:, 1].numpy().astype(np.float64), out.numpy()


def fit(model: nn.Module, batches: Callable[[int], Iterator[Batch]], validation: Batch | None, cfg, *,
        class_weights: tuple[float, float], comm: Comm, epochs: int | None = None,
        on_epoch: Callable[[dict], None] | None = None, device: torch.device | None = None) -> TrainOutcome:
    """Train ``model`` in place (module docstring). ``batches(epoch)`` yields this worker's part
    of each global batch; ``validation`` is this worker's share of the validation split (or None).
    ``cfg`` is a TrainConfig. ``on_epoch`` gets each epoch's metrics (call it on rank 0 only).
    ``device``: where to train (default CPU); on CUDA with ``cfg.bf16`` the forward pass runs
    under bfloat16 autocast."""
    epochs = epochs or cfg.epochs
    device = device or torch.device("cpu")
    model.to(device)
    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and cfg.bf16)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, cfg)
    comm.broadcast(model, optimizer)
    optimizer = comm.wrap_optimizer(optimizer, model)
    higher_better = cfg.early_stopping_metric == "val_auc"
    plateau = None
    if cfg.lr_schedule == "plateau":
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max" if higher_better else "min", factor=cfg.lr_gamma,
            patience=max(1, cfg.early_stopping_patience // 2))
    weights = torch.tensor(class_weights, dtype=torch.float32, device=device)
    out = TrainOutcome()
    best_state, since_best = None, 0
    for epoch in range(epochs):
        t0 = time.perf_counter()
        if plateau is None or epoch <= cfg.warmup_epochs:   # plateau: warm-up, then from the base lr
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * (lr_factor(epoch, cfg, epochs) if epoch < cfg.warmup_epochs
                                        or plateau is None else 1.0)
        model.train()
        loss_sum = torch.zeros(1, device=device)
        weight_sum = torch.zeros(1, device=device)
        seen = 0
        for step, batch in enumerate(batches(epoch)):
            x, y = batch.x.to(device, non_blocking=True), batch.y.to(device, non_blocking=True)
            f = None if batch.features is None else batch.features.to(device, non_blocking=True)
            w = weights[y]
            total_w = comm.allreduce_sum(w.sum().reshape(1), name=f"w.{epoch}.{step}")
            with autocast:
                logits = _forward(model, x, f)
            weighted = (w * F.cross_entropy(logits.float(), y, reduction="none")).sum()
            optimizer.zero_grad()
            (weighted / total_w.squeeze()).backward()
            optimizer.step()
            loss_sum += weighted.detach()
            weight_sum += w.sum()
            seen += int(y.shape[0])
        totals = comm.allreduce_sum(torch.cat([loss_sum, weight_sum, torch.tensor([float(seen)], device=device)]),
                                    name=f"train_loss.{epoch}").cpu()
        row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"],
               "train_loss": float(totals[0] / max(float(totals[1]), 1e-12)), "samples": int(totals[2])}
        if validation is not None:
            scores, logits = predict_scores(model, validation.x, validation.features, cfg.eval_batch_size)
            local_loss = F.cross_entropy(torch.from_numpy(logits), validation.y, reduction="sum") \
                if len(scores) else torch.zeros(())
            gathered_s = comm.allgather(torch.from_numpy(scores), name=f"val_scores.{epoch}")
            gathered_y = comm.allgather(validation.y, name=f"val_y.{epoch}")
            vtot = comm.allreduce_sum(torch.stack([local_loss.reshape(()), torch.tensor(float(len(scores)))]),
                                      name=f"val_loss.{epoch}")
            row["val_loss"] = float(vtot[0] / max(float(vtot[1]), 1.0))
            row["val_auc"] = roc_auc(gathered_y.numpy(), gathered_s.numpy())
        row["seconds"] = time.perf_counter() - t0
        row["samples_per_s"] = row["samples"] / max(row["seconds"], 1e-9)
        out.history.append(row)
        metric = row.get(cfg.early_stopping_metric, float("nan"))
        if math.isnan(metric):                     # no validation (or one class): the last epoch wins
            metric = -row["train_loss"] if higher_better else row["train_loss"]
        improved = out.best_epoch < 0 or (metric > out.best_metric if higher_better else metric < out.best_metric)
        if improved:
            out.best_epoch, out.best_metric, since_best = epoch, metric, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            since_best += 1
        row["best_epoch"] = out.best_epoch
        if on_epoch is not None:
            on_epoch(row)
        if plateau is not None and epoch >= cfg.warmup_epochs:
            plateau.step(metric)
        if cfg.early_stopping_patience and since_best >= cfg.early_stopping_patience:
            out.stopped_early = True
            break
    if best_state is not None and cfg.restore_best:
        model.load_state_dict(best_state)
    out.state_dict = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return out
