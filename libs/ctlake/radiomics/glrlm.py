r"""Grey level run length matrix features (IBSI 3.7), PyRadiomics ``glrlm`` names.

Matrix: for each direction d (the 13 unit offsets of :func:`.glcm.directions`, one of each +/- pair;
with force2D the 4 in-plane ones), P_d(i, j) counts the runs of grey level i and length j: maximal
sets of j ROI voxels x, x + d, ..., x + (j - 1) d with grey level i. A voxel outside the ROI (or the
end of the image) ends a run. Rows are the grey levels present in the ROI (values, not ranks).
PyRadiomics drops a direction in which no line holds two ROI voxels (the ROI is flat along it, e.g. the
9 through-plane directions of a one-slice ROI; every run there has length 1); IBSI keeps all 13.
``matrices(drop_flat=...)`` gives either: ``extract`` drops them, ``extract_ibsi`` keeps them; the two
agree whenever every direction meets two ROI voxels on one line (the IBSI phantom, both baselines).

Aggregation (PyRadiomics ``weightingNorm``):
- None (PyRadiomics default; IBSI "3D, averaged"): features per direction, then their mean over the
  directions with at least one run.
- 'no_weighting' (IBSI "3D, merged"): P = sum_d P_d, features of that one matrix.
- 'manhattan' / 'euclidean' / 'infinity': P = sum_d w_d P_d with w_d = ||d * spacing|| in that norm
  (PyRadiomics GLRLM weighs by the distance itself, not by exp(-distance^2) as its GLCM does).

Let P be one matrix, i the grey levels, j the run lengths, N_r = sum_ij P(i,j) the number of runs,
N_p = sum_ij j P(i,j) the voxels counted (the ROI voxels for one direction; n_directions times that
for a merged matrix, so run percentage stays <= 1), p = P / N_r, r(j) = sum_i P(i,j),
g(i) = sum_j P(i,j), eps = 2.2e-16 inside the logarithm (PyRadiomics).
Every feature takes :class:`MatrixCoefficients` for A matrices and returns A values; the same
coefficients serve the size zone (:mod:`.glszm`) and dependence (:mod:`.gldm`) matrices, whose
features have the same formulas with zones / dependences in place of runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._table import Feature
from .discretise import levels_present
from .glcm import directions, nanmean

EPS = float(np.spacing(1))
WEIGHTING_NORMS = (None, "no_weighting", "manhattan", "euclidean", "infinity")


def runs(levels_zyx: np.ndarray, offset) -> tuple[np.ndarray, np.ndarray, bool]:
    """The runs of the ROI (levels > 0) along unit offset ``offset`` (dz, dy, dx), each component in
    {-1, 0, 1}: their grey levels and lengths, and whether any line along ``offset`` holds two ROI
    voxels (PyRadiomics drops the direction otherwise)."""
    lv = np.asarray(levels_zyx, dtype=np.int64)
    coords = np.argwhere(lv > 0)
    grey = lv[tuple(coords.T)]
    first, lengths, multi = _runs(coords, grey, offset, max(lv.shape))
    return grey[first], lengths, multi


def _runs(coords: np.ndarray, values: np.ndarray, offset, size: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Runs of equal ``values`` among ROI voxel ``coords`` (N, 3) along ``offset``; ``size`` >= every
    array dimension. Returns the index (into coords) of one voxel of each run, the run lengths, and
    whether any line holds two ROI voxels.

    Every voxel x lies on the line {b + t d}; with k the first non-zero component of d, t = x_k d_k and
    b = x - t d. One integer key per voxel, (b, t) in base 3 * size (each term shifted by size to be
    >= 0), sorts the voxels line by line in order of t; consecutive sorted keys differing by exactly 1
    are neighbours on a line, and a run continues while they also share the value."""
    d = np.asarray(offset, dtype=np.int64)
    if d.shape != (3,) or not d.any() or np.abs(d).max() != 1:
        raise ValueError(f"run direction must be a unit (dz, dy, dx) offset, got {offset!r}")
    k = int(np.flatnonzero(d)[0])
    t = coords[:, k] * d[k]
    radix = 3 * size
    key = np.zeros(len(coords), dtype=np.int64)
    for m in range(3):
        if m != k:
            key = key * radix + (coords[:, m] - t * d[m] + size)
    key = key * radix + (t + size)
    order = np.argsort(key, kind="stable")
    key, ordered = key[order], values[order]
    step = np.diff(key)
    continues = (step == 1) & (ordered[1:] == ordered[:-1])
    starts = np.flatnonzero(np.concatenate(([True], ~continues)))
    lengths = np.diff(np.append(starts, len(key)))
    multi = bool(((key[1:] // radix) == (key[:-1] // radix)).any())
    return order[starts], lengths, multi


def matrices(levels_zyx: np.ndarray, spacing_zyx_mm, *, weighting_norm: str | None = None,
             force2d: bool = False, force2d_dimension: int = 0, drop_flat: bool = True,
             ) -> tuple[np.ndarray, np.ndarray]:
    """Run length matrices (A, n, L) over the n grey levels present (rows) and run lengths 1..L
    (columns), and those grey levels (n,). A = the directions with runs (``weighting_norm`` None) or 1.
    ``drop_flat``: leave out directions with no two ROI voxels on one line (PyRadiomics; IBSI: False)."""
    if weighting_norm not in WEIGHTING_NORMS:
        raise ValueError(f"weightingNorm {weighting_norm!r} unknown; use one of {WEIGHTING_NORMS}")
    lv = np.asarray(levels_zyx, dtype=np.int64)
    coords = np.argwhere(lv > 0)
    if not len(coords):
        raise ValueError("GLRLM needs at least one ROI voxel (grey level > 0)")
    present, row = levels_present(lv[tuple(coords.T)])
    offsets = directions((1,), force2d=force2d, force2d_dimension=force2d_dimension)
    n, n_len = len(present), max(lv.shape)
    p = np.zeros((len(offsets), n * n_len), dtype=np.float64)
    for a, off in enumerate(offsets):
        first, lengths, multi = _runs(coords, row, off, n_len)
        if multi or not drop_flat:
            p[a] = np.bincount(row[first] * n_len + lengths - 1, minlength=n * n_len)
    p = p.reshape(len(offsets), n, n_len)
    if weighting_norm is not None:
        step = np.abs(offsets) * np.asarray(spacing_zyx_mm, dtype=np.float64)
        w = {"no_weighting": np.ones(len(offsets)), "infinity": step.max(axis=1),
             "euclidean": np.sqrt((step**2).sum(axis=1)), "manhattan": step.sum(axis=1)}[weighting_norm]
        p = (p * w[:, None, None]).sum(axis=0, keepdims=True)
    p = p[p.sum(axis=(1, 2)) > 0]
    used = p.sum(axis=(0, 1)) > 0
    last = int(np.flatnonzero(used)[-1]) + 1 if used.any() else 1
    return p[:, :, :last], present


@dataclass(frozen=True)
class MatrixCoefficients:
    """Shared terms of A matrices P (A, n, m): row values i (n,) (grey levels), column values j (m,)
    (run lengths, zone sizes or dependence counts), totals N (A,) = sum_ij P, row sums g (A, n),
    column sums r (A, m), voxel counts N_p (A,) = sum_ij j P(i,j), and p = P / N."""

    P: np.ndarray
    i: np.ndarray
    j: np.ndarray
    n: np.ndarray
    g: np.ndarray
    r: np.ndarray
    n_p: np.ndarray
    p: np.ndarray


def coefficients(p_matrix: np.ndarray, row_values: np.ndarray, column_values: np.ndarray | None = None,
                 ) -> MatrixCoefficients:
    """Coefficients of matrices (A, n, m); ``column_values`` default 1..m."""
    big_p = np.asarray(p_matrix, dtype=np.float64)
    if big_p.ndim != 3:
        raise ValueError(f"matrices must be (A, n, m), got shape {big_p.shape}")
    j = (np.arange(1, big_p.shape[2] + 1, dtype=np.float64) if column_values is None
         else np.asarray(column_values, dtype=np.float64))
    n = big_p.sum(axis=(1, 2))
    return MatrixCoefficients(P=big_p, i=np.asarray(row_values, dtype=np.float64), j=j, n=n,
                              g=big_p.sum(axis=2), r=big_p.sum(axis=1), n_p=big_p.sum(axis=1) @ j,
                              p=big_p / n[:, None, None])


def _ij(c: MatrixCoefficients) -> tuple[np.ndarray, np.ndarray]:
    return c.i[None, :, None], c.j[None, None, :]


def short_run_emphasis(c: MatrixCoefficients) -> np.ndarray:
    r"""Short runs emphasis (IBSI 22OV).  SRE = sum_ij P(i,j) / j^2 / N_r."""
    return (c.r / c.j**2).sum(axis=1) / c.n


def long_run_emphasis(c: MatrixCoefficients) -> np.ndarray:
    r"""Long runs emphasis (IBSI W4KF).  LRE = sum_ij P(i,j) j^2 / N_r."""
    return (c.r * c.j**2).sum(axis=1) / c.n


def low_gray_level_run_emphasis(c: MatrixCoefficients) -> np.ndarray:
    r"""Low grey level run emphasis (IBSI V3SW).  LGLRE = sum_ij P(i,j) / i^2 / N_r."""
    return (c.g / c.i**2).sum(axis=1) / c.n


def high_gray_level_run_emphasis(c: MatrixCoefficients) -> np.ndarray:
    r"""High grey level run emphasis (IBSI G3QZ).  HGLRE = sum_ij P(i,j) i^2 / N_r."""
    return (c.g * c.i**2).sum(axis=1) / c.n


def short_run_low_gray_level_emphasis(c: MatrixCoefficients) -> np.ndarray:
    r"""Short run low grey level emphasis (IBSI HTZT).  SRLGLE = sum_ij P(i,j) / (i^2 j^2) / N_r."""
    i, j = _ij(c)
    return (c.P / (i**2 * j**2)).sum(axis=(1, 2)) / c.n


def short_run_high_gray_level_emphasis(c: MatrixCoefficients) -> np.ndarray:
    r"""Short run high grey level emphasis (IBSI GD3A).  SRHGLE = sum_ij P(i,j) i^2 / j^2 / N_r."""
    i, j = _ij(c)
    return (c.P * i**2 / j**2).sum(axis=(1, 2)) / c.n


def long_run_low_gray_level_emphasis(c: MatrixCoefficients) -> np.ndarray:
    r"""Long run low grey level emphasis (IBSI IVPO).  LRLGLE = sum_ij P(i,j) j^2 / i^2 / N_r."""
    i, j = _ij(c)
    return (c.P * j**2 / i**2).sum(axis=(1, 2)) / c.n


def long_run_high_gray_level_emphasis(c: MatrixCoefficients) -> np.ndarray:
    r"""Long run high grey level emphasis (IBSI 3KUM).  LRHGLE = sum_ij P(i,j) i^2 j^2 / N_r."""
    i, j = _ij(c)
    return (c.P * i**2 * j**2).sum(axis=(1, 2)) / c.n


def gray_level_non_uniformity(c: MatrixCoefficients) -> np.ndarray:
    r"""Grey level non-uniformity (IBSI R5YN).  GLN = sum_i g(i)^2 / N_r."""
    return (c.g**2).sum(axis=1) / c.n


def gray_level_non_uniformity_normalized(c: MatrixCoefficients) -> np.ndarray:
    r"""Normalised grey level non-uniformity (IBSI OVBL).  GLNN = sum_i g(i)^2 / N_r^2."""
    return (c.g**2).sum(axis=1) / c.n**2


def run_length_non_uniformity(c: MatrixCoefficients) -> np.ndarray:
    r"""Run length non-uniformity (IBSI W92Y).  RLN = sum_j r(j)^2 / N_r."""
    return (c.r**2).sum(axis=1) / c.n


def run_length_non_uniformity_normalized(c: MatrixCoefficients) -> np.ndarray:
    r"""Normalised run length non-uniformity (IBSI IC23).  RLNN = sum_j r(j)^2 / N_r^2."""
    return (c.r**2).sum(axis=1) / c.n**2


def run_percentage(c: MatrixCoefficients) -> np.ndarray:
    r"""Run percentage (IBSI 9ZK5).  RP = N_r / N_p, N_p = sum_ij j P(i,j)."""
    return c.n / c.n_p


def gray_level_variance(c: MatrixCoefficients) -> np.ndarray:
    r"""Grey level variance (IBSI 8CE5).  GLV = sum_ij p(i,j) (i - mu)^2, mu = sum_ij p(i,j) i."""
    pg = c.g / c.n[:, None]
    mu = pg @ c.i
    return (pg * (c.i[None, :] - mu[:, None]) ** 2).sum(axis=1)


def run_variance(c: MatrixCoefficients) -> np.ndarray:
    r"""Run length variance (IBSI SXLW).  RV = sum_ij p(i,j) (j - mu)^2, mu = sum_ij p(i,j) j."""
    pr = c.r / c.n[:, None]
    mu = pr @ c.j
    return (pr * (c.j[None, :] - mu[:, None]) ** 2).sum(axis=1)


def run_entropy(c: MatrixCoefficients) -> np.ndarray:
    r"""Run entropy (IBSI HJ9O).  RE = -sum_ij p(i,j) log2(p(i,j) + eps)."""
    return -(c.p * np.log2(c.p + EPS)).sum(axis=(1, 2))


FEATURES: dict[str, Feature] = {
    "ShortRunEmphasis": Feature(short_run_emphasis, "22OV"),
    "LongRunEmphasis": Feature(long_run_emphasis, "W4KF"),
    "GrayLevelNonUniformity": Feature(gray_level_non_uniformity, "R5YN"),
    "GrayLevelNonUniformityNormalized": Feature(gray_level_non_uniformity_normalized, "OVBL"),
    "RunLengthNonUniformity": Feature(run_length_non_uniformity, "W92Y"),
    "RunLengthNonUniformityNormalized": Feature(run_length_non_uniformity_normalized, "IC23"),
    "RunPercentage": Feature(run_percentage, "9ZK5"),
    "GrayLevelVariance": Feature(gray_level_variance, "8CE5"),
    "RunVariance": Feature(run_variance, "SXLW"),
    "RunEntropy": Feature(run_entropy, "HJ9O"),
    "LowGrayLevelRunEmphasis": Feature(low_gray_level_run_emphasis, "V3SW"),
    "HighGrayLevelRunEmphasis": Feature(high_gray_level_run_emphasis, "G3QZ"),
    "ShortRunLowGrayLevelEmphasis": Feature(short_run_low_gray_level_emphasis, "HTZT"),
    "ShortRunHighGrayLevelEmphasis": Feature(short_run_high_gray_level_emphasis, "GD3A"),
    "LongRunLowGrayLevelEmphasis": Feature(long_run_low_gray_level_emphasis, "IVPO"),
    "LongRunHighGrayLevelEmphasis": Feature(long_run_high_gray_level_emphasis, "3KUM"),
}

# every IBSI run length feature in the reference set has a PyRadiomics name
IBSI_ONLY: dict[str, Feature] = {}


def aggregate(values: np.ndarray) -> float:
    """Mean over the directions (PyRadiomics ``nanmean``); a merged matrix gives its value; NaN when
    no direction has a run (a single-voxel ROI)."""
    values = np.asarray(values, dtype=np.float64)
    return nanmean(values) if values.size else float("nan")
