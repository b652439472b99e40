r"""Grey level dependence matrix features, PyRadiomics ``gldm`` names; IBSI 3.11 calls it the
neighbouring grey level dependence matrix (NGLDM).

Matrix: the neighbours of a voxel are the voxels at the offsets with infinity norm in ``distances``
(26 for distance 1; the 8 in-plane ones with force2D) that lie in the ROI. A neighbour with grey level
j depends on a centre voxel with grey level i if |i - j| <= alpha (``gldm_a``). P(i, k) counts the ROI
voxels of grey level i with k = 1 + (number of dependent neighbours), so k = 1..27 in 3D; one matrix
for the whole ROI (IBSI "3D"; with force2D IBSI "2.5D"). Rows are the grey levels present (values).

Correspondence with IBSI NGLDM (coarseness parameter a = alpha, distance delta = 1, Chebyshev norm):
the matrices are the same (IBSI also counts the centre voxel in k and only neighbours inside the ROI),
and the features are IBSI's under PyRadiomics names: IBSI "low/high dependence emphasis" =
Small/LargeDependenceEmphasis, "grey level count emphasis" = GrayLevelEmphasis, "dependence count
non-uniformity" = DependenceNonUniformity, and so on (codes in ``FEATURES``). Differences:
PyRadiomics deprecates two IBSI features and leaves them out of the defaults, kept here with
``default=False``: GrayLevelNonUniformityNormalized (5SPA; equals first order Uniformity, as every
voxel is in exactly one dependence "zone") and DependencePercentage (6XV8; N_s / N_v, always 1).
IBSI "dependence count energy" (CAS9) has no PyRadiomics name: ``IBSI_ONLY``.

Let i be the grey levels, k the dependence counts, N_s = sum_ik P(i,k) = N_v the ROI voxel count,
p = P / N_s, d(k) = sum_i P(i,k), g(i) = sum_k P(i,k). The formulas are those of the run length
features with dependences in place of runs; each function below delegates to its :mod:`.glrlm` twin.
"""

from __future__ import annotations

import numpy as np

from . import glrlm
from ._table import Feature
from .discretise import levels_present
from .glcm import directions
from .glrlm import MatrixCoefficients


def neighbour_offsets(distances=(1,), *, force2d: bool = False, force2d_dimension: int = 0) -> np.ndarray:
    """Offsets (dz, dy, dx) with infinity norm in ``distances``, both of each +/- pair (26 for (1,))."""
    half = directions(distances, force2d=force2d, force2d_dimension=force2d_dimension)
    return np.concatenate([half, -half])


def neighbour_view(padded: np.ndarray, offset, radius: int) -> np.ndarray:
    """The array of neighbours at ``offset`` of every voxel of the original array, from ``padded`` =
    the original zero-padded by ``radius`` on every side (0 = outside the ROI or the image)."""
    return padded[tuple(slice(radius + o, padded.shape[ax] - radius + o) for ax, o in enumerate(offset))]


def compact_levels(levels_zyx: np.ndarray) -> np.ndarray:
    """The grey level array in the smallest of int16 / int32 / int64 that holds it (same values):
    less memory to stream through the neighbour loops."""
    lv = np.asarray(levels_zyx)
    top = int(lv.max()) if lv.size else 0
    for dtype in (np.int16, np.int32):
        if top <= np.iinfo(dtype).max // 32:     # room for sums over 26 neighbours (NGTDM)
            return lv.astype(dtype)
    return lv.astype(np.int64)


def dependence_matrix(levels_zyx: np.ndarray, *, alpha: float = 0, distances=(1,), force2d: bool = False,
                      force2d_dimension: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Dependence matrix (1, n, K) over the n grey levels present (rows) and dependence counts 1..K
    (columns), and those grey levels (n,)."""
    if not alpha >= 0:
        raise ValueError(f"gldm_a (alpha) must be >= 0, got {alpha!r}")
    lv = np.asarray(levels_zyx, dtype=np.int64)
    if not (lv > 0).any():
        raise ValueError("GLDM needs at least one ROI voxel (grey level > 0)")
    offsets = neighbour_offsets(distances, force2d=force2d, force2d_dimension=force2d_dimension)
    radius = int(max(distances))
    small = compact_levels(lv)
    padded = np.pad(small, radius)
    dependent = np.zeros(lv.shape, dtype=np.uint8 if len(offsets) < 255 else np.int32)
    for off in offsets:
        nb = neighbour_view(padded, off, radius)
        if alpha == 0:   # only ROI voxels (level > 0) are read below, and there nb == level implies nb > 0
            dependent += nb == small
        else:
            dependent += (nb > 0) & (np.abs(nb.astype(np.int64) - lv) <= alpha)
    roi = lv > 0
    present, row = levels_present(lv[roi])
    n_k = len(offsets) + 1
    p = np.bincount(row * n_k + dependent[roi], minlength=len(present) * n_k).reshape(1, len(present), n_k)
    last = int(np.flatnonzero(p.sum(axis=(0, 1)))[-1]) + 1
    return p[:, :, :last].astype(np.float64), present


def _one(values: np.ndarray) -> float:
    return float(values[0])


def small_dependence_emphasis(c: MatrixCoefficients) -> float:
    r"""Low dependence emphasis (IBSI SODN).  SDE = sum_ik P(i,k) / k^2 / N_s."""
    return _one(glrlm.short_run_emphasis(c))


def large_dependence_emphasis(c: MatrixCoefficients) -> float:
    r"""High dependence emphasis (IBSI IMOQ).  LDE = sum_ik P(i,k) k^2 / N_s."""
    return _one(glrlm.long_run_emphasis(c))


def gray_level_non_uniformity(c: MatrixCoefficients) -> float:
    r"""Grey level non-uniformity (IBSI FP8K).  GLN = sum_i g(i)^2 / N_s."""
    return _one(glrlm.gray_level_non_uniformity(c))


def gray_level_non_uniformity_normalized(c: MatrixCoefficients) -> float:
    r"""Normalised grey level non-uniformity (IBSI 5SPA; deprecated in PyRadiomics, = first order
    Uniformity).  GLNN = sum_i g(i)^2 / N_s^2."""
    return _one(glrlm.gray_level_non_uniformity_normalized(c))


def dependence_non_uniformity(c: MatrixCoefficients) -> float:
    r"""Dependence count non-uniformity (IBSI Z87G).  DN = sum_k d(k)^2 / N_s."""
    return _one(glrlm.run_length_non_uniformity(c))


def dependence_non_uniformity_normalized(c: MatrixCoefficients) -> float:
    r"""Normalised dependence count non-uniformity (IBSI OKJI).  DNN = sum_k d(k)^2 / N_s^2."""
    return _one(glrlm.run_length_non_uniformity_normalized(c))


def gray_level_variance(c: MatrixCoefficients) -> float:
    r"""Grey level variance (IBSI 1PFV).  GLV = sum_ik p(i,k) (i - mu)^2, mu = sum_ik p(i,k) i."""
    return _one(glrlm.gray_level_variance(c))


def dependence_variance(c: MatrixCoefficients) -> float:
    r"""Dependence count variance (IBSI DNX2).  DV = sum_ik p(i,k) (k - mu)^2, mu = sum_ik p(i,k) k."""
    return _one(glrlm.run_variance(c))


def dependence_entropy(c: MatrixCoefficients) -> float:
    r"""Dependence count entropy (IBSI FCBV).  DE = -sum_ik p(i,k) log2(p(i,k) + eps)."""
    return _one(glrlm.run_entropy(c))


def dependence_percentage(c: MatrixCoefficients) -> float:
    r"""Dependence count percentage (IBSI 6XV8; deprecated in PyRadiomics).  N_s / N_v = 1: every ROI
    voxel has exactly one dependence count, so the matrix total N_s is the voxel count N_v."""
    return 1.0


def low_gray_level_emphasis(c: MatrixCoefficients) -> float:
    r"""Low grey level count emphasis (IBSI TL9H).  LGLE = sum_ik P(i,k) / i^2 / N_s."""
    return _one(glrlm.low_gray_level_run_emphasis(c))


def high_gray_level_emphasis(c: MatrixCoefficients) -> float:
    r"""High grey level count emphasis (IBSI OAE7).  HGLE = sum_ik P(i,k) i^2 / N_s."""
    return _one(glrlm.high_gray_level_run_emphasis(c))


def small_dependence_low_gray_level_emphasis(c: MatrixCoefficients) -> float:
    r"""Low dependence low grey level emphasis (IBSI EQ3F).  SDLGLE = sum_ik P(i,k) / (i^2 k^2) / N_s."""
    return _one(glrlm.short_run_low_gray_level_emphasis(c))


def small_dependence_high_gray_level_emphasis(c: MatrixCoefficients) -> float:
    r"""Low dependence high grey level emphasis (IBSI JA6D).  SDHGLE = sum_ik P(i,k) i^2 / k^2 / N_s."""
    return _one(glrlm.short_run_high_gray_level_emphasis(c))


def large_dependence_low_gray_level_emphasis(c: MatrixCoefficients) -> float:
    r"""High dependence low grey level emphasis (IBSI NBZI).  LDLGLE = sum_ik P(i,k) k^2 / i^2 / N_s."""
    return _one(glrlm.long_run_low_gray_level_emphasis(c))


def large_dependence_high_gray_level_emphasis(c: MatrixCoefficients) -> float:
    r"""High dependence high grey level emphasis (IBSI 9QMG).  LDHGLE = sum_ik P(i,k) i^2 k^2 / N_s."""
    return _one(glrlm.long_run_high_gray_level_emphasis(c))


def dependence_count_energy(c: MatrixCoefficients) -> float:
    r"""Dependence count energy (IBSI CAS9; not in PyRadiomics).  sum_ik p(i,k)^2."""
    return float((c.p[0] ** 2).sum())


_DEPRECATED = "deprecated in PyRadiomics, off by default there"

FEATURES: dict[str, Feature] = {
    "SmallDependenceEmphasis": Feature(small_dependence_emphasis, "SODN"),
    "LargeDependenceEmphasis": Feature(large_dependence_emphasis, "IMOQ"),
    "GrayLevelNonUniformity": Feature(gray_level_non_uniformity, "FP8K"),
    "GrayLevelNonUniformityNormalized": Feature(gray_level_non_uniformity_normalized, "5SPA", default=False,
                                                note=_DEPRECATED + " (= firstorder Uniformity)"),
    "DependenceNonUniformity": Feature(dependence_non_uniformity, "Z87G"),
    "DependenceNonUniformityNormalized": Feature(dependence_non_uniformity_normalized, "OKJI"),
    "GrayLevelVariance": Feature(gray_level_variance, "1PFV"),
    "DependenceVariance": Feature(dependence_variance, "DNX2"),
    "DependenceEntropy": Feature(dependence_entropy, "FCBV"),
    "DependencePercentage": Feature(dependence_percentage, "6XV8", default=False,
                                    note=_DEPRECATED + " (always 1)"),
    "LowGrayLevelEmphasis": Feature(low_gray_level_emphasis, "TL9H"),
    "HighGrayLevelEmphasis": Feature(high_gray_level_emphasis, "OAE7"),
    "SmallDependenceLowGrayLevelEmphasis": Feature(small_dependence_low_gray_level_emphasis, "EQ3F"),
    "SmallDependenceHighGrayLevelEmphasis": Feature(small_dependence_high_gray_level_emphasis, "JA6D"),
    "LargeDependenceLowGrayLevelEmphasis": Feature(large_dependence_low_gray_level_emphasis, "NBZI"),
    "LargeDependenceHighGrayLevelEmphasis": Feature(large_dependence_high_gray_level_emphasis, "9QMG"),
}

# IBSI NGLDM features with no PyRadiomics name
IBSI_ONLY: dict[str, Feature] = {
    "DependenceCountEnergy": Feature(dependence_count_energy, "CAS9"),
}
