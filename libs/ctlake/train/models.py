r"""3-D CNN classifiers for nodule patches (pure torch).

Input: a float tensor (N, 1, Z, Y, X) -- a normalised patch (see :mod:`ctlake.train.transforms`),
axes (z, y, x) at 1 mm voxels, every side a multiple of 16. Output: logits (N, 2) for
(negative, positive); the score of a patch is ``softmax(logits)[:, 1]``.

Candidate classifier (the source study's network, "LunaModel" of Stevens, Antiga & Viehmann,
*Deep Learning with PyTorch*, ch. 11):

    tail:  BatchNorm3d(1)                       -- normalises the raw input
    body:  4 blocks, each  Conv3d(3x3x3, pad 1) + ReLU, Conv3d(3x3x3, pad 1) + ReLU, MaxPool3d(2)
           channels c, 2c, 4c, 8c (c = conv_channels, 8 by default)
    head:  Linear(8c * Z/16 * Y/16 * X/16 -> 2)
           32x48x48 patches: 64 x 2 x 3 x 3 = 1152 features, as in the source

He (Kaiming) initialisation: weights ~ N(0, 2 / fan_out) (ReLU gain, fan-out mode as the source),
biases ~ U(-1/sqrt(fan_out), 1/sqrt(fan_out)).

Malignancy classifier: the same network on nodule patches (32^3 by default), trained from scratch
or initialised from a candidate classifier's tail and blocks (:func:`load_backbone`) with the first
``freeze_blocks`` blocks (and the input batch-norm) frozen.

Hybrid: the image body above plus an MLP over radiomics features, concatenated before the head:

    image:    tail + 4 blocks -> flatten (8c * prod(shape / 16))
    features: standardise (train-split mean/SD, stored as buffers) -> Linear(F, h) + ReLU
              -> Linear(h, h) + ReLU
    head:     Linear(image + h -> 2)

For MLflow's pyfunc (one input tensor) the hybrid also accepts a single packed (N, Z*Y*X + F)
tensor: the flattened patch followed by the F raw feature values.

Batch-norm across Horovod workers: :class:`SyncableBatchNorm3d` computes training statistics
from sums that an injected ``allreduce`` (Horovod's, differentiable) adds up over workers, so
N workers each holding 1/N of a global batch normalise exactly as one process holding it all --
the precondition for distributed training equalling single-process training. Horovod's own
SyncBatchNorm runs on CUDA only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

__all__ = [
    "CandidateNet",
    "HybridNet",
    "SyncableBatchNorm3d",
    "build_model",
    "count_parameters",
    "freeze_leading",
    "he_init",
    "load_backbone",
    "set_stats_allreduce",
]

Allreduce = Callable[[torch.Tensor], torch.Tensor]


class SyncableBatchNorm3d(nn.BatchNorm3d):
    """BatchNorm3d whose training-mode mean and variance come from sums over all workers.

    Training mode, per channel over (N, z, y, x), with S = allreduce (identity in one process):
        n = S(count), mean = S(sum x) / n, var = S(sum (x - mean)^2) / n (biased, used to normalise),
        running_mean <- (1 - m) running_mean + m mean, running_var <- (1 - m) running_var + m var n/(n-1)
    as torch.nn.BatchNorm3d. Eval mode uses the running statistics. The allreduce hook is not
    pickled, so a saved model is an ordinary module.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        self._allreduce: Allreduce | None = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_allreduce"] = None
        return state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                False, 0.0, self.eps)
        reduce = self._allreduce or (lambda t: t)
        dims = [0, *range(2, x.dim())]
        shape = (1, -1) + (1,) * (x.dim() - 2)
        count = torch.full((1,), float(x.numel() // x.shape[1]), dtype=x.dtype, device=x.device)
        summed = reduce(torch.cat([x.sum(dims), count]))
        n = summed[-1].detach()
        mean = summed[:-1] / n
        centred = x - mean.view(shape)
        var = reduce((centred * centred).sum(dims)) / n
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        y = y * self.weight.view(shape) + self.bias.view(shape)
        with torch.no_grad():
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(m * mean.detach())
            self.running_var.mul_(1 - m).add_(m * var.detach() * n / max(float(n) - 1.0, 1.0))
            self.num_batches_tracked.add_(1)
        return y


def set_stats_allreduce(model: nn.Module, allreduce: Allreduce | None) -> None:
    """Make every :class:`SyncableBatchNorm3d` of ``model`` sum its statistics with ``allreduce``
    (e.g. ``lambda t: hvd.allreduce(t, op=hvd.Sum)``); ``None`` for one process."""
    for module in model.modules():
        if isinstance(module, SyncableBatchNorm3d):
            module._allreduce = allreduce


class ConvBlock(nn.Module):
    """Conv3d + ReLU, Conv3d + ReLU, MaxPool3d(2): halves each side."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1, bias=True)
        self.conv2 = nn.Conv3d(out_channels, out_channels, kernel_size=3, padding=1, bias=True)
        self.pool = nn.MaxPool3d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.conv2(F.relu(self.conv1(x)))))


class Backbone(nn.Module):
    """Input batch-norm (the "tail") and the four conv blocks; output flattened features."""

    def __init__(self, patch_zyx: Sequence[int], conv_channels: int = 8) -> None:
        super().__init__()
        if any(int(s) % 16 or int(s) < 16 for s in patch_zyx) or len(patch_zyx) != 3:
            raise ValueError(f"patch_zyx {tuple(patch_zyx)}: three sides, each a multiple of 16")
        c = conv_channels
        self.tail_batchnorm = SyncableBatchNorm3d(1)
        self.blocks = nn.ModuleList([ConvBlock(1, c), ConvBlock(c, 2 * c), ConvBlock(2 * c, 4 * c),
                                     ConvBlock(4 * c, 8 * c)])
        self.out_features = 8 * c * math.prod(int(s) // 16 for s in patch_zyx)
        self.frozen_blocks = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.tail_batchnorm(x)
        for block in self.blocks:
            x = block(x)
        return x.flatten(1)

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        if self.frozen_blocks:            # frozen layers keep the statistics they were trained with
            self.tail_batchnorm.eval()
        return self


def he_init(module: nn.Module) -> None:
    """Kaiming-normal weights (fan-out, ReLU gain) and U(+-1/sqrt(fan_out)) biases for every
    Conv3d and Linear; batch-norm keeps weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv3d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, a=0, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                _, fan_out = nn.init._calculate_fan_in_and_fan_out(m.weight)
                bound = 1.0 / math.sqrt(fan_out)
                nn.init.uniform_(m.bias, -bound, bound)


class CandidateNet(nn.Module):
    """Tail batch-norm + 4 conv blocks + linear head (module docstring). Also the malignancy net."""

    def __init__(self, patch_zyx: Sequence[int], conv_channels: int = 8, dropout: float = 0.0,
                 kind: str = "candidate") -> None:
        super().__init__()
        self.backbone = Backbone(patch_zyx, conv_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(self.backbone.out_features, 2)
        self.spec = {"kind": kind, "patch_zyx": [int(s) for s in patch_zyx], "conv_channels": conv_channels,
                     "dropout": dropout, "n_features": 0, "feature_names": [], "hidden": 0}
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.backbone(x)))


class HybridNet(nn.Module):
    """Image body + radiomics-feature MLP, concatenated before a linear head (module docstring)."""

    def __init__(self, patch_zyx: Sequence[int], feature_names: Sequence[str], conv_channels: int = 8,
                 hidden: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        n = len(feature_names)
        if n < 1:
            raise ValueError("the hybrid model needs at least one radiomics feature")
        self.backbone = Backbone(patch_zyx, conv_channels)
        self.register_buffer("feature_mean", torch.zeros(n))
        self.register_buffer("feature_std", torch.ones(n))
        self.mlp = nn.Sequential(nn.Linear(n, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(self.backbone.out_features + hidden, 2)
        self.spec = {"kind": "hybrid", "patch_zyx": [int(s) for s in patch_zyx], "conv_channels": conv_channels,
                     "dropout": dropout, "n_features": n, "feature_names": list(feature_names), "hidden": hidden}
        he_init(self)

    def set_feature_scaling(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Standardisation of the raw features (train-split mean and SD; SD 0 becomes 1)."""
        self.feature_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        std = torch.as_tensor(std, dtype=torch.float32)
        self.feature_std.copy_(torch.where(std > 0, std, torch.ones_like(std)))

    def forward(self, x: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        if features is None:                       # packed (N, Z*Y*X + F), e.g. from MLflow pyfunc
            voxels = math.prod(self.spec["patch_zyx"])
            x, features = x[:, :voxels].reshape(-1, 1, *self.spec["patch_zyx"]), x[:, voxels:]
        f = self.mlp((features - self.feature_mean) / self.feature_std)
        return self.head(self.dropout(torch.cat([self.backbone(x), f], dim=1)))


def build_model(spec: dict) -> nn.Module:
    """A fresh model from a ``spec`` (as in ``model.spec``): kind, patch_zyx, conv_channels,
    dropout, and for the hybrid feature_names and hidden. Weights: He init from torch's RNG."""
    kind = spec["kind"]
    if kind in ("candidate", "malignancy"):
        return CandidateNet(spec["patch_zyx"], spec.get("conv_channels", 8), spec.get("dropout", 0.0), kind=kind)
    if kind == "hybrid":
        return HybridNet(spec["patch_zyx"], spec["feature_names"], spec.get("conv_channels", 8),
                         spec.get("hidden", 32), spec.get("dropout", 0.0))
    raise ValueError(f"unknown model kind {kind!r}")


def load_backbone(model: nn.Module, source: nn.Module) -> None:
    """Copy the tail batch-norm and conv blocks of ``source`` (e.g. a trained candidate
    classifier) into ``model``; the head stays as initialised (patch sizes may differ)."""
    if source.backbone.blocks[0].conv1.out_channels != model.backbone.blocks[0].conv1.out_channels:
        raise ValueError("the source model has other conv_channels than the model being fine-tuned")
    state = {k: v for k, v in source.backbone.state_dict().items()}
    model.backbone.load_state_dict(state)


def freeze_leading(model: nn.Module, n_blocks: int) -> None:
    """Freeze the input batch-norm and the first ``n_blocks`` conv blocks (fine-tuning)."""
    if n_blocks <= 0:
        return
    backbone = model.backbone
    for p in backbone.tail_batchnorm.parameters():
        p.requires_grad_(False)
    for block in list(backbone.blocks)[:n_blocks]:
        for p in block.parameters():
            p.requires_grad_(False)
    backbone.frozen_blocks = n_blocks
    backbone.train(backbone.training)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
