r"""Neighbourhood grey tone difference matrix features (IBSI 3.10), PyRadiomics ``ngtdm`` names.

Matrix: the neighbourhood of a ROI voxel is the voxels at the offsets with infinity norm in
``distances`` (26 for distance 1, the centre excluded; the 8 in-plane ones with force2D) that lie in
the ROI; A = the mean grey level of that neighbourhood (the neighbour sums and counts come from shifted
copies of the zero-padded grey level array, i.e. a convolution with the neighbourhood kernel restricted
to the ROI). For each grey level i present: n_i = number of ROI voxels with grey level i,
s_i = sum over them of |i - A| (0 for a voxel with no neighbour in the ROI). One matrix for the ROI
(IBSI "3D"; with force2D IBSI "2.5D").

Isolated voxels (no neighbour in the ROI): PyRadiomics counts them in n_i (with |i - A| = 0), IBSI
leaves them out of n_i and N_v,c. ``matrix(exclude_isolated=...)`` gives either; ``extract`` uses the
PyRadiomics count, ``extract_ibsi`` the IBSI one. They agree whenever every ROI voxel has a neighbour in
the ROI (the IBSI phantom in 3D and 2.5D).

Let N_vp = sum_i n_i, p_i = n_i / N_vp, N_gp = the number of grey levels with p_i > 0; sums over i, j
run over those grey levels only (values, not ranks). Every feature is NaN when N_vp = 0 (IBSI count
with no voxel having a neighbour).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._table import Feature
from .discretise import levels_present
from .gldm import compact_levels, neighbour_offsets, neighbour_view


@dataclass(frozen=True)
class NgtdmCoefficients:
    """Grey levels i (n,) with n_i > 0, their counts n_i, sums of absolute differences s_i,
    probabilities p_i = n_i / N_vp, and N_vp."""

    i: np.ndarray
    n_i: np.ndarray
    s_i: np.ndarray
    p_i: np.ndarray
    n_vp: float


def matrix(levels_zyx: np.ndarray, *, distances=(1,), force2d: bool = False, force2d_dimension: int = 0,
           exclude_isolated: bool = False) -> NgtdmCoefficients:
    """NGTDM of the ROI (levels > 0) of a 1-based grey level array (0 = outside the ROI)."""
    lv = np.asarray(levels_zyx, dtype=np.int64)
    if not (lv > 0).any():
        raise ValueError("NGTDM needs at least one ROI voxel (grey level > 0)")
    radius = int(max(distances))
    offsets = neighbour_offsets(distances, force2d=force2d, force2d_dimension=force2d_dimension)
    small = compact_levels(lv)
    if len(offsets) > 30:      # compact_levels leaves room for 32 neighbours; more need 64 bits
        small = lv
    padded = np.pad(small, radius)
    total = np.zeros(lv.shape, dtype=small.dtype)
    count = np.zeros(lv.shape, dtype=np.int32)
    for off in offsets:
        nb = neighbour_view(padded, off, radius)
        total += nb
        count += nb > 0
    roi = lv > 0
    grey, total, count = lv[roi], total[roi].astype(np.int64), count[roi].astype(np.int64)
    if exclude_isolated:
        keep = count > 0
        grey, total, count = grey[keep], total[keep], count[keep]
    has = count > 0
    diff = np.zeros(len(grey))
    diff[has] = np.abs(grey[has] - total[has] / count[has])
    levels, row = levels_present(grey)
    n_i = np.bincount(row, minlength=len(levels)).astype(np.float64)
    s_i = np.bincount(row, weights=diff, minlength=len(levels))
    n_vp = float(n_i.sum())
    return NgtdmCoefficients(levels.astype(np.float64), n_i, s_i, n_i / n_vp if n_vp else n_i, n_vp)


def _undefined(c: NgtdmCoefficients) -> bool:
    return c.n_vp == 0


def coarseness(c: NgtdmCoefficients) -> float:
    r"""Coarseness (IBSI QCDE).  1 / sum_i p_i s_i; 1e6 where the sum is 0 (a flat ROI), as PyRadiomics."""
    if _undefined(c):
        return float("nan")
    total = float(c.p_i @ c.s_i)
    return 1.0 / total if total != 0 else 1e6


def contrast(c: NgtdmCoefficients) -> float:
    r"""Contrast (IBSI 65HE).  [sum_ij p_i p_j (i - j)^2 / (N_gp (N_gp - 1))] * [sum_i s_i / N_vp];
    0 where N_gp = 1."""
    if _undefined(c):
        return float("nan")
    n_gp = len(c.i)
    if n_gp < 2:
        return 0.0
    spread = (c.p_i[:, None] * c.p_i[None, :] * (c.i[:, None] - c.i[None, :]) ** 2).sum()
    return float(spread * c.s_i.sum() / c.n_vp / (n_gp * (n_gp - 1)))


def busyness(c: NgtdmCoefficients) -> float:
    r"""Busyness (IBSI NQ30).  sum_i p_i s_i / sum_ij |i p_i - j p_j|; 0 where the denominator is 0."""
    if _undefined(c):
        return float("nan")
    ip = c.i * c.p_i
    denominator = float(np.abs(ip[:, None] - ip[None, :]).sum())
    return float(c.p_i @ c.s_i) / denominator if denominator != 0 else 0.0


def complexity(c: NgtdmCoefficients) -> float:
    r"""Complexity (IBSI HDEZ).  (1 / N_vp) sum_ij |i - j| (p_i s_i + p_j s_j) / (p_i + p_j)."""
    if _undefined(c):
        return float("nan")
    ps = c.p_i * c.s_i
    terms = np.abs(c.i[:, None] - c.i[None, :]) * (ps[:, None] + ps[None, :]) / (c.p_i[:, None] + c.p_i[None, :])
    return float(terms.sum() / c.n_vp)


def strength(c: NgtdmCoefficients) -> float:
    r"""Strength (IBSI 1X9X).  sum_ij (p_i + p_j) (i - j)^2 / sum_i s_i; 0 where sum_i s_i = 0."""
    if _undefined(c):
        return float("nan")
    s = float(c.s_i.sum())
    if s == 0:
        return 0.0
    return float(((c.p_i[:, None] + c.p_i[None, :]) * (c.i[:, None] - c.i[None, :]) ** 2).sum() / s)


FEATURES: dict[str, Feature] = {
    "Coarseness": Feature(coarseness, "QCDE"),
    "Contrast": Feature(contrast, "65HE"),
    "Busyness": Feature(busyness, "NQ30"),
    "Complexity": Feature(complexity, "HDEZ"),
    "Strength": Feature(strength, "1X9X"),
}

# every IBSI NGTDM feature in the reference set has a PyRadiomics name
IBSI_ONLY: dict[str, Feature] = {}
