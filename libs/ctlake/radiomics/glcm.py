r"""Grey level co-occurrence matrix features (IBSI 3.6), PyRadiomics ``glcm`` names.

Matrix: for each direction d (offsets with infinity norm in ``distances``, one of each +/- pair:
13 in 3D for distance 1; with force2D only the in-plane ones), P_d(i, j) counts voxel pairs
(x, x + d) with both voxels in the ROI and grey levels i, j; symmetric: P_d + P_d^T. Rows/columns of
grey levels absent from the ROI are dropped (PyRadiomics), directions with no pairs are dropped.

Aggregation (PyRadiomics ``weightingNorm``):
- None (PyRadiomics default; IBSI "3D, averaged"): features per direction, then their mean.
- 'no_weighting' (IBSI "3D, merged"): sum_d P_d, then features of that one matrix;
  'manhattan' / 'euclidean' / 'infinity': sum_d w_d P_d, w_d = exp(-||d * spacing||^2) in that norm.

Let p = P / sum(P), i, j the grey levels present (values, not ranks), N_g the largest grey level,
p_x(i) = sum_j p(i, j), p_y(j) = sum_i p(i, j), mu_x = sum i p_x(i), mu_y = sum j p_y(j),
p_{x+y}(k) = sum_{i+j=k} p(i, j) (k = 2..2N_g), p_{x-y}(k) = sum_{|i-j|=k} p(i, j) (k = 0..N_g-1),
eps = 2.2e-16 (inside logarithms, as PyRadiomics), HX, HY the entropies of p_x, p_y,
HXY = -sum p log2(p + eps), HXY1 = -sum p log2(p_x p_y + eps), HXY2 = -sum p_x p_y log2(p_x p_y + eps).
Every feature function takes :class:`GlcmCoefficients` for A matrices and returns A values.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np

from ._table import Feature
from .discretise import levels_present

EPS = float(np.spacing(1))
WEIGHTING_NORMS = (None, "no_weighting", "manhattan", "euclidean", "infinity")


def directions(distances=(1,), *, force2d: bool = False, force2d_dimension: int = 0) -> np.ndarray:
    """Offsets (dz, dy, dx) with max(|dz|, |dy|, |dx|) in ``distances``, one of each +/- pair (the
    first non-zero component positive); with force2d, only offsets with 0 along ``force2d_dimension``."""
    offsets = _directions(tuple(int(d) for d in distances), bool(force2d), int(force2d_dimension))
    return np.array(offsets, dtype=np.int64).reshape(-1, 3)


@functools.lru_cache(maxsize=64)
def _directions(distances: tuple[int, ...], force2d: bool, force2d_dimension: int) -> tuple[tuple[int, ...], ...]:
    dmax = max(distances)
    out = []
    for off in itertools.product(range(-dmax, dmax + 1), repeat=3):
        if max(abs(o) for o in off) not in distances:
            continue
        if next(o for o in off if o != 0) < 0:
            continue
        if force2d and off[force2d_dimension] != 0:
            continue
        out.append(off)
    return tuple(out)


def cooccurrence(levels_zyx: np.ndarray, offsets: np.ndarray, n_levels: int) -> np.ndarray:
    """Raw (non-symmetric) co-occurrence counts, shape (A, N_g, N_g): P[a, i-1, j-1] = number of
    voxels x with levels[x] = i, levels[x + offsets[a]] = j, both > 0 (0 = outside the ROI)."""
    lv = np.asarray(levels_zyx, dtype=np.int64)
    out = np.zeros((len(offsets), n_levels * n_levels), dtype=np.int64)
    for a, off in enumerate(offsets):
        src, dst = [], []
        for o, n in zip(off, lv.shape, strict=True):
            src.append(slice(max(0, -o), n - max(0, o)))
            dst.append(slice(max(0, o), n - max(0, -o)))
        first, second = lv[tuple(src)], lv[tuple(dst)]
        ok = (first > 0) & (second > 0)
        out[a] = np.bincount((first[ok] - 1) * n_levels + (second[ok] - 1), minlength=n_levels * n_levels)
    return out.reshape(len(offsets), n_levels, n_levels)


def matrices(levels_zyx: np.ndarray, spacing_zyx_mm, *, distances=(1,), symmetric: bool = True,
             weighting_norm: str | None = None, force2d: bool = False, force2d_dimension: int = 0,
             ) -> tuple[np.ndarray, np.ndarray]:
    """Normalised GLCMs (A, n, n) over the n grey levels present, and those levels (n,).
    A = number of non-empty directions (``weighting_norm`` None) or 1 (merged)."""
    if weighting_norm not in WEIGHTING_NORMS:
        raise ValueError(f"weightingNorm {weighting_norm!r} unknown; use one of {WEIGHTING_NORMS}")
    lv = np.asarray(levels_zyx, dtype=np.int64)
    present, _ = levels_present(lv[lv > 0])
    n_max = int(present.max())
    offsets = directions(distances, force2d=force2d, force2d_dimension=force2d_dimension)
    p = cooccurrence(lv, offsets, n_max)[:, present - 1][:, :, present - 1].astype(np.float64)
    if symmetric:
        p = p + p.transpose(0, 2, 1)
    if weighting_norm is not None:
        step = np.abs(offsets) * np.asarray(spacing_zyx_mm, dtype=np.float64)
        if weighting_norm == "no_weighting":
            w = np.ones(len(offsets))
        elif weighting_norm == "infinity":
            w = np.exp(-step.max(axis=1) ** 2)
        elif weighting_norm == "euclidean":
            w = np.exp(-(step**2).sum(axis=1))
        else:  # manhattan
            w = np.exp(-step.sum(axis=1) ** 2)
        p = (p * w[:, None, None]).sum(axis=0, keepdims=True)
    total = p.sum(axis=(1, 2))
    p = p[total > 0] / total[total > 0, None, None]
    return p, present


@dataclass(frozen=True)
class GlcmCoefficients:
    """Shared terms for A normalised matrices p (A, n, n) over grey levels g (n,) with N_g = max(g)."""

    p: np.ndarray
    g: np.ndarray
    ng: int
    px: np.ndarray
    py: np.ndarray
    ux: np.ndarray
    uy: np.ndarray
    k_sum: np.ndarray
    p_sum: np.ndarray
    k_diff: np.ndarray
    p_diff: np.ndarray
    hxy: np.ndarray


def coefficients(p: np.ndarray, grey_levels: np.ndarray) -> GlcmCoefficients:
    """Marginals, means, p_{x+y}, p_{x-y} and HXY for each matrix (see module doc)."""
    g = np.asarray(grey_levels, dtype=np.float64)
    ng = int(g.max())
    n = len(g)
    i, j = np.meshgrid(np.asarray(grey_levels), np.asarray(grey_levels), indexing="ij")
    flat = p.reshape(len(p), n * n)
    k_sum = np.arange(2, 2 * ng + 1, dtype=np.float64)
    k_diff = np.arange(0, ng, dtype=np.float64)
    p_sum = np.zeros((len(p), len(k_sum)))
    np.add.at(p_sum, (slice(None), (i + j - 2).ravel()), flat)
    p_diff = np.zeros((len(p), len(k_diff)))
    np.add.at(p_diff, (slice(None), np.abs(i - j).ravel()), flat)
    px, py = p.sum(axis=2), p.sum(axis=1)
    return GlcmCoefficients(
        p=p, g=g, ng=ng, px=px, py=py, ux=px @ g, uy=py @ g, k_sum=k_sum, p_sum=p_sum,
        k_diff=k_diff, p_diff=p_diff, hxy=-(p * np.log2(p + EPS)).sum(axis=(1, 2)))


def _ij(c: GlcmCoefficients) -> tuple[np.ndarray, np.ndarray]:
    return c.g[None, :, None], c.g[None, None, :]


def autocorrelation(c: GlcmCoefficients) -> np.ndarray:
    r"""Autocorrelation (IBSI QWB0).  sum_ij p(i,j) i j."""
    i, j = _ij(c)
    return (c.p * i * j).sum(axis=(1, 2))


def joint_average(c: GlcmCoefficients) -> np.ndarray:
    r"""Joint average (IBSI 60VM).  mu_x = sum_ij p(i,j) i."""
    return c.ux


def _cluster(c: GlcmCoefficients, power: int) -> np.ndarray:
    """sum_ij p(i,j) (i + j - mu_x - mu_y)^power. The power is taken once per distinct i + j and
    direction (numpy's pow is slow for powers 3, 4) and spread back over the (i, j) grid: the same
    numbers as powering every cell, a fraction of the work."""
    if power == 2:                              # numpy squares without pow: no gain from the detour
        i, j = _ij(c)
        return (c.p * (i + j - c.ux[:, None, None] - c.uy[:, None, None]) ** 2).sum(axis=(1, 2))
    sums, cell = np.unique(c.g[:, None] + c.g[None, :], return_inverse=True)
    base = (sums[None, :] - c.ux[:, None]) - c.uy[:, None]                   # (A, distinct i + j)
    return (c.p * (base**power)[:, cell.reshape(len(c.g), len(c.g))]).sum(axis=(1, 2))


def cluster_prominence(c: GlcmCoefficients) -> np.ndarray:
    r"""Cluster prominence (IBSI AE86).  sum_ij (i + j - mu_x - mu_y)^4 p(i,j)."""
    return _cluster(c, 4)


def cluster_shade(c: GlcmCoefficients) -> np.ndarray:
    r"""Cluster shade (IBSI 7NFM).  sum_ij (i + j - mu_x - mu_y)^3 p(i,j)."""
    return _cluster(c, 3)


def cluster_tendency(c: GlcmCoefficients) -> np.ndarray:
    r"""Cluster tendency (IBSI DG8W; equals IBSI sum variance OEEB).  sum_ij (i + j - mu_x - mu_y)^2 p(i,j)."""
    return _cluster(c, 2)


def contrast(c: GlcmCoefficients) -> np.ndarray:
    r"""Contrast (IBSI ACUI).  sum_ij (i - j)^2 p(i,j)."""
    i, j = _ij(c)
    return (c.p * (i - j) ** 2).sum(axis=(1, 2))


def correlation(c: GlcmCoefficients) -> np.ndarray:
    r"""Correlation (IBSI NI2N).  sum_ij p(i,j)(i - mu_x)(j - mu_y) / (sigma_x sigma_y + eps);
    1 where sigma_x sigma_y = 0 (a single grey level), as PyRadiomics."""
    i, j = _ij(c)
    di = i - c.ux[:, None, None]
    dj = j - c.uy[:, None, None]
    sx = np.sqrt((c.p * di**2).sum(axis=(1, 2)))
    sy = np.sqrt((c.p * dj**2).sum(axis=(1, 2)))
    corr = (c.p * di * dj).sum(axis=(1, 2)) / (sx * sy + EPS)
    return np.where(sx * sy == 0, 1.0, corr)


def difference_average(c: GlcmCoefficients) -> np.ndarray:
    r"""Difference average (IBSI TF7R; equals IBSI dissimilarity 8S9J).  sum_k k p_{x-y}(k)."""
    return c.p_diff @ c.k_diff


def difference_entropy(c: GlcmCoefficients) -> np.ndarray:
    r"""Difference entropy (IBSI NTRS).  -sum_k p_{x-y}(k) log2(p_{x-y}(k) + eps)."""
    return -(c.p_diff * np.log2(c.p_diff + EPS)).sum(axis=1)


def difference_variance(c: GlcmCoefficients) -> np.ndarray:
    r"""Difference variance (IBSI D3YU).  sum_k (k - DA)^2 p_{x-y}(k), DA = difference average."""
    da = difference_average(c)
    return (c.p_diff * (c.k_diff[None, :] - da[:, None]) ** 2).sum(axis=1)


def joint_energy(c: GlcmCoefficients) -> np.ndarray:
    r"""Joint energy / angular second moment (IBSI 8ZQL).  sum_ij p(i,j)^2."""
    return (c.p**2).sum(axis=(1, 2))


def joint_entropy(c: GlcmCoefficients) -> np.ndarray:
    r"""Joint entropy (IBSI TU9B).  HXY = -sum_ij p(i,j) log2(p(i,j) + eps)."""
    return c.hxy


def _marginal_entropies(c: GlcmCoefficients):
    hx = -(c.px * np.log2(c.px + EPS)).sum(axis=1)
    hy = -(c.py * np.log2(c.py + EPS)).sum(axis=1)
    pxpy = c.px[:, :, None] * c.py[:, None, :]
    hxy1 = -(c.p * np.log2(pxpy + EPS)).sum(axis=(1, 2))
    hxy2 = -(pxpy * np.log2(pxpy + EPS)).sum(axis=(1, 2))
    return hx, hy, hxy1, hxy2


def imc1(c: GlcmCoefficients) -> np.ndarray:
    r"""Information correlation 1 (IBSI R8DG).  (HXY - HXY1) / max(HX, HY); 0 where HX = HY = 0."""
    hx, hy, hxy1, _ = _marginal_entropies(c)
    div = np.fmax(hx, hy)
    return np.where(div != 0, (c.hxy - hxy1) / np.where(div != 0, div, 1.0), 0.0)


def imc2(c: GlcmCoefficients) -> np.ndarray:
    r"""Information correlation 2 (IBSI JN9H).  sqrt(1 - exp(-2 (HXY2 - HXY))); 0 where HXY2 <= HXY
    (no mutual information; a negative difference is round-off)."""
    _, _, _, hxy2 = _marginal_entropies(c)
    mi = np.maximum(hxy2 - c.hxy, 0.0)
    return np.sqrt(1 - np.exp(-2 * mi))


def idm(c: GlcmCoefficients) -> np.ndarray:
    r"""Inverse difference moment (IBSI WF0Z).  sum_k p_{x-y}(k) / (1 + k^2)."""
    return c.p_diff @ (1.0 / (1.0 + c.k_diff**2))


def idmn(c: GlcmCoefficients) -> np.ndarray:
    r"""Normalised inverse difference moment (IBSI 1QCO).  sum_k p_{x-y}(k) / (1 + k^2 / N_g^2).
    N_g = the largest grey level (PyRadiomics); IBSI's N_g is the number of bins, equal for FBS/FBN
    discretisation starting at level 1."""
    return c.p_diff @ (1.0 / (1.0 + c.k_diff**2 / c.ng**2))


def inverse_difference(c: GlcmCoefficients) -> np.ndarray:
    r"""Inverse difference (IBSI IB1Z).  sum_k p_{x-y}(k) / (1 + k)."""
    return c.p_diff @ (1.0 / (1.0 + c.k_diff))


def idn(c: GlcmCoefficients) -> np.ndarray:
    r"""Normalised inverse difference (IBSI NDRX).  sum_k p_{x-y}(k) / (1 + k / N_g)."""
    return c.p_diff @ (1.0 / (1.0 + c.k_diff / c.ng))


def inverse_variance(c: GlcmCoefficients) -> np.ndarray:
    r"""Inverse variance (IBSI E8JP).  sum_{k>=1} p_{x-y}(k) / k^2."""
    return c.p_diff[:, 1:] @ (1.0 / c.k_diff[1:] ** 2)


def maximum_probability(c: GlcmCoefficients) -> np.ndarray:
    r"""Joint maximum (IBSI GYBY).  max_ij p(i,j)."""
    return c.p.max(axis=(1, 2))


def sum_average(c: GlcmCoefficients) -> np.ndarray:
    r"""Sum average (IBSI ZGXS).  sum_k k p_{x+y}(k)."""
    return c.p_sum @ c.k_sum


def sum_entropy(c: GlcmCoefficients) -> np.ndarray:
    r"""Sum entropy (IBSI P6QZ).  -sum_k p_{x+y}(k) log2(p_{x+y}(k) + eps)."""
    return -(c.p_sum * np.log2(c.p_sum + EPS)).sum(axis=1)


def sum_squares(c: GlcmCoefficients) -> np.ndarray:
    r"""Sum of squares / joint variance (IBSI UR99).  sum_ij (i - mu_x)^2 p(i,j)."""
    i, _ = _ij(c)
    return (c.p * (i - c.ux[:, None, None]) ** 2).sum(axis=(1, 2))


def mcc(c: GlcmCoefficients) -> np.ndarray:
    r"""Maximal correlation coefficient (PyRadiomics; no IBSI reference value).
    sqrt(second largest eigenvalue of Q), Q(i,j) = sum_k p(i,k) p(j,k) / (p_x(i) p_y(k) + eps);
    1 for a single grey level."""
    if c.p.shape[1] < 2:
        return np.ones(len(c.p))
    w = c.p / (c.px[:, :, None] * c.py[:, None, :] + EPS)  # W(i,k) = p(i,k) / (p_x(i) p_y(k) + eps)
    ev = np.sort_complex(np.linalg.eigvals(w @ c.p.transpose(0, 2, 1)))  # Q = W p^T
    return np.sqrt(ev[:, -2].astype(complex)).real


FEATURES: dict[str, Feature] = {
    "Autocorrelation": Feature(autocorrelation, "QWB0"),
    "JointAverage": Feature(joint_average, "60VM"),
    "ClusterProminence": Feature(cluster_prominence, "AE86"),
    "ClusterShade": Feature(cluster_shade, "7NFM"),
    "ClusterTendency": Feature(cluster_tendency, "DG8W"),
    "Contrast": Feature(contrast, "ACUI"),
    "Correlation": Feature(correlation, "NI2N"),
    "DifferenceAverage": Feature(difference_average, "TF7R"),
    "DifferenceEntropy": Feature(difference_entropy, "NTRS"),
    "DifferenceVariance": Feature(difference_variance, "D3YU"),
    "JointEnergy": Feature(joint_energy, "8ZQL"),
    "JointEntropy": Feature(joint_entropy, "TU9B"),
    "Imc1": Feature(imc1, "R8DG"),
    "Imc2": Feature(imc2, "JN9H"),
    "Idm": Feature(idm, "WF0Z"),
    "MCC": Feature(mcc, None, note="not in the IBSI reference set"),
    "Idmn": Feature(idmn, "1QCO"),
    "Id": Feature(inverse_difference, "IB1Z"),
    "Idn": Feature(idn, "NDRX"),
    "InverseVariance": Feature(inverse_variance, "E8JP"),
    "MaximumProbability": Feature(maximum_probability, "GYBY"),
    "SumAverage": Feature(sum_average, "ZGXS"),
    "SumEntropy": Feature(sum_entropy, "P6QZ"),
    "SumSquares": Feature(sum_squares, "UR99"),
}

# IBSI names PyRadiomics dropped as duplicates; same value as the feature named in the note.
IBSI_ONLY: dict[str, Feature] = {
    "Dissimilarity": Feature(difference_average, "8S9J", note="= DifferenceAverage"),
    "SumVariance": Feature(cluster_tendency, "OEEB", note="= ClusterTendency"),
}


def aggregate(values: np.ndarray) -> float:
    """Mean over the matrices (directions), PyRadiomics ``nanmean``; a merged matrix gives its value."""
    return nanmean(values)


def nanmean(values: np.ndarray) -> float:
    """``float(np.nanmean(values))`` for a 1-D float array, without its overhead when there is no NaN
    (numpy's nanmean is then sum / count too, so the value is the same to the last bit)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size and not np.isnan(values).any():
        return float(values.sum() / values.size)
    return float(np.nanmean(values))
