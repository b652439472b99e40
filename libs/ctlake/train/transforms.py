r"""Patch decoding, intensity normalisation and training augmentation (numpy + torch, no Spark).

Patches arrive as ``gold.nodule_patches.image``: raw little-endian int16 HU in C order (z, y, x).

Normalisation (``train.normalisation``):
    window (default)  x = (clip(HU, lo, hi) - lo) / (hi - lo)  in [0, 1], window_hu = [lo, hi]
                      = [-1000, 400] HU: the lake's clip window, so no information is lost, air is 0,
                      and the transform is fixed (no dataset statistics to carry to inference)
    zscore            x = (HU - mean) / sd, zscore_hu = [mean, sd]
The network's input batch-norm then learns the remaining scale and offset.

Augmentation (training split only; :func:`augment_batch`), per sample, in this order:
    flips      each axis of ``flip_axes`` mirrored with p = 0.5
    rot90      k x 90 degrees in the (y, x) plane, k uniform in {0, 1, 2, 3} ({0, 2} if Y != X)
    zoom/shift isotropic scale s ~ U(1 - scale, 1 + scale) and offsets ~ U(-offset_vox, offset_vox)
               voxels per axis, by trilinear resampling about the patch centre (edge values
               repeated outside)
    noise      + N(0, noise_sd^2) per voxel (normalised units)
The randomness of a sample is drawn from ``np.random.default_rng([seed, epoch, key])`` where
``key`` identifies the sample (its ``sample_key``): the augmentation of a sample depends on
neither the batch it falls in nor the worker that draws it, so any number of Horovod workers
sees the same augmented data as one process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F  # noqa: N812

__all__ = ["Normaliser", "augment_batch", "decode_images", "sample_augmentation"]


def decode_images(blobs: Sequence[bytes], shape_zyx: Sequence[int]) -> np.ndarray:
    """Raw int16 patches -> one (N, Z, Y, X) int16 array; a wrong byte count is an error naming it."""
    shape = tuple(int(s) for s in shape_zyx)
    nbytes = 2 * int(np.prod(shape))
    if not len(blobs):
        return np.zeros((0, *shape), np.int16)
    for i, b in enumerate(blobs):
        if len(b) != nbytes:
            raise ValueError(f"patch {i}: {len(b)} bytes, expected {nbytes} for int16 {shape}")
    return np.frombuffer(b"".join(blobs), dtype="<i2").reshape((len(blobs), *shape))


@dataclass(frozen=True)
class Normaliser:
    """HU -> network input (module docstring). ``mode``: window | zscore."""

    mode: str = "window"
    window_hu: tuple[float, float] = (-1000.0, 400.0)
    zscore_hu: tuple[float, float] = (-700.0, 300.0)

    def __call__(self, hu: torch.Tensor | np.ndarray) -> torch.Tensor:
        """int16/float HU of any shape -> float32 tensor of the same shape."""
        x = hu.to(torch.float32) if isinstance(hu, torch.Tensor) else torch.from_numpy(
            np.asarray(hu).astype(np.float32))
        if self.mode == "window":
            lo, hi = self.window_hu
            return (x.clamp(lo, hi) - lo) / (hi - lo)
        if self.mode == "zscore":
            mean, sd = self.zscore_hu
            return (x - mean) / sd
        raise ValueError(f"unknown normalisation {self.mode!r}")


@dataclass(frozen=True)
class SampleAugmentation:
    flips: tuple[bool, bool, bool]          # z, y, x
    rot90_k: int
    scale: float
    offset_vox: tuple[float, float, float]  # z, y, x
    noise_seed: int


def sample_augmentation(rng: np.random.Generator, shape_zyx: Sequence[int], *, flip_axes: str = "zyx",
                        rot90: bool = True, scale: float = 0.1, offset_vox: float = 2.0) -> SampleAugmentation:
    """Draw one sample's augmentation parameters from ``rng`` (always the same number of draws)."""
    coins = rng.random(3) < 0.5
    flips = tuple(bool(coins[i]) and axis in flip_axes for i, axis in enumerate("zyx"))
    k = int(rng.integers(0, 4))
    if not rot90:
        k = 0
    elif shape_zyx[1] != shape_zyx[2]:
        k = 2 * (k % 2)                      # 0 or 180 degrees keep a non-square plane's shape
    s = float(rng.uniform(1.0 - scale, 1.0 + scale))
    off = tuple(float(v) for v in rng.uniform(-offset_vox, offset_vox, 3))
    return SampleAugmentation(flips, k, s, off, int(rng.integers(0, 2**31 - 1)))  # type: ignore[arg-type]


def augment_batch(x: torch.Tensor, keys: Sequence[int], *, epoch: int, seed: int, flip_axes: str = "zyx",
                  rot90: bool = True, scale: float = 0.1, offset_vox: float = 2.0,
                  noise_sd: float = 0.02) -> torch.Tensor:
    """Augment a normalised batch (N, 1, Z, Y, X) float32; sample i uses ``keys[i]`` (module docstring)."""
    if x.dim() != 5 or x.shape[1] != 1:
        raise ValueError(f"expected (N, 1, Z, Y, X), got {tuple(x.shape)}")
    n, _, *shape = x.shape
    params = [sample_augmentation(np.random.default_rng([seed, epoch, int(k) & (2**63 - 1)]), shape,
                                  flip_axes=flip_axes, rot90=rot90, scale=scale, offset_vox=offset_vox)
              for k in keys]
    out = []
    for i, p in enumerate(params):
        v = x[i]
        dims = [d + 1 for d in range(3) if p.flips[d]]
        if dims:
            v = torch.flip(v, dims)
        if p.rot90_k:
            v = torch.rot90(v, p.rot90_k, dims=(2, 3))
        out.append(v)
    y = torch.stack(out) if n else x
    if n and (scale > 0 or offset_vox > 0):
        theta = torch.zeros(n, 3, 4, dtype=x.dtype)
        for i, p in enumerate(params):
            theta[i, 0, 0] = theta[i, 1, 1] = theta[i, 2, 2] = 1.0 / p.scale
            # affine_grid's last row/column order is (x, y, z); shifts in normalised [-1, 1] units
            theta[i, 0, 3] = 2.0 * p.offset_vox[2] / shape[2]
            theta[i, 1, 3] = 2.0 * p.offset_vox[1] / shape[1]
            theta[i, 2, 3] = 2.0 * p.offset_vox[0] / shape[0]
        grid = F.affine_grid(theta, list(y.shape), align_corners=False)
        y = F.grid_sample(y, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if n and noise_sd > 0:
        noise = np.stack([np.random.default_rng(p.noise_seed).standard_normal(shape, dtype=np.float32)
                          for p in params])
        y = y + noise_sd * torch.from_numpy(noise).unsqueeze(1)
    return y
