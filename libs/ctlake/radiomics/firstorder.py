r"""First-order (intensity) features of the ROI voxels (IBSI 3.3 intensity statistics, 3.4 histogram).

X: the N_p ROI intensities (float64); c: ``voxelArrayShift`` (PyRadiomics; 0 = IBSI);
p(i): the normalised histogram of the discretised ROI (see :mod:`.discretise`), sums to 1.
Moments are population moments (divide by N_p), as in PyRadiomics and IBSI.

PyRadiomics ``Kurtosis`` is m4 / m2^2; IBSI IPH6 is the *excess* kurtosis m4 / m2^2 - 3. The
PyRadiomics name keeps the PyRadiomics value; ``IBSI_ONLY["ExcessKurtosis"]`` carries IPH6.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._table import Feature


@dataclass(frozen=True)
class FirstOrderInput:
    """x: ROI intensities (1-D float64); counts: discretised histogram counts (empty bins allowed);
    voxel_volume_mm3: product of the spacing; shift: voxelArrayShift c."""

    x: np.ndarray
    counts: np.ndarray
    voxel_volume_mm3: float
    shift: float = 0.0


def _moment(x: np.ndarray, k: int) -> float:
    return float(np.mean((x - x.mean()) ** k))


def energy(x: np.ndarray, shift: float = 0.0) -> float:
    r"""Energy (IBSI N8CA when c = 0).  E = sum_i (X_i + c)^2."""
    return float(np.sum((x + shift) ** 2))


def total_energy(x: np.ndarray, voxel_volume_mm3: float, shift: float = 0.0) -> float:
    r"""Total energy (PyRadiomics only, no IBSI code).  V_voxel * sum_i (X_i + c)^2."""
    return voxel_volume_mm3 * energy(x, shift)


def entropy(counts: np.ndarray) -> float:
    r"""Discretised intensity entropy (IBSI TLU2).  H = -sum_{i: p_i > 0} p_i log2 p_i.
    (PyRadiomics adds eps = 2.2e-16 inside the log; the difference is below 1e-13.)"""
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def uniformity(counts: np.ndarray) -> float:
    r"""Discretised intensity uniformity (IBSI BJ5W).  U = sum_i p_i^2."""
    p = counts / counts.sum()
    return float(np.sum(p**2))


def minimum(x: np.ndarray) -> float:
    r"""Minimum intensity (IBSI 1GSF).  min(X)."""
    return float(x.min())


def maximum(x: np.ndarray) -> float:
    r"""Maximum intensity (IBSI 84IY).  max(X)."""
    return float(x.max())


def percentile(x: np.ndarray, q: float) -> float:
    r"""q-th percentile, linear interpolation between order statistics (numpy default, as
    PyRadiomics). 10th: IBSI QG58, 90th: IBSI 8DWT."""
    return float(np.percentile(x, q))


def mean(x: np.ndarray) -> float:
    r"""Mean intensity (IBSI Q4LE).  mu = (1/N_p) sum_i X_i."""
    return float(x.mean())


def median(x: np.ndarray) -> float:
    r"""Median intensity (IBSI Y12H)."""
    return float(np.median(x))


def interquartile_range(x: np.ndarray) -> float:
    r"""Interquartile range (IBSI SALO).  P75 - P25."""
    return float(np.percentile(x, 75) - np.percentile(x, 25))


def intensity_range(x: np.ndarray) -> float:
    r"""Range (IBSI 2OJQ).  max(X) - min(X)."""
    return float(x.max() - x.min())


def mean_absolute_deviation(x: np.ndarray) -> float:
    r"""Mean absolute deviation (IBSI 4FUA).  (1/N_p) sum_i |X_i - mu|."""
    return float(np.mean(np.abs(x - x.mean())))


def robust_mean_absolute_deviation(x: np.ndarray) -> float:
    r"""Robust mean absolute deviation (IBSI 1128): the mean absolute deviation of the voxels with
    P10 <= X_i <= P90, about their own mean."""
    lo, hi = np.percentile(x, 10), np.percentile(x, 90)
    sub = x[(x >= lo) & (x <= hi)]
    return float(np.mean(np.abs(sub - sub.mean())))


def median_absolute_deviation(x: np.ndarray) -> float:
    r"""Median absolute deviation (IBSI N72L; not in PyRadiomics).  (1/N_p) sum_i |X_i - median(X)|."""
    return float(np.mean(np.abs(x - np.median(x))))


def root_mean_squared(x: np.ndarray, shift: float = 0.0) -> float:
    r"""Root mean square (IBSI 5ZWQ when c = 0).  sqrt((1/N_p) sum_i (X_i + c)^2)."""
    return float(np.sqrt(np.sum((x + shift) ** 2) / x.size))


def standard_deviation(x: np.ndarray) -> float:
    r"""Standard deviation (PyRadiomics, deprecated there; no IBSI code).  sqrt(m2)."""
    return float(np.std(x))


def variance(x: np.ndarray) -> float:
    r"""Intensity variance (IBSI ECT3).  m2 = (1/N_p) sum_i (X_i - mu)^2."""
    return float(np.std(x) ** 2)


def skewness(x: np.ndarray) -> float:
    r"""Skewness (IBSI KE2A).  m3 / m2^(3/2); 0 for a flat ROI (m2 = 0), as PyRadiomics."""
    m2 = _moment(x, 2)
    return 0.0 if m2 == 0 else _moment(x, 3) / m2**1.5


def kurtosis(x: np.ndarray) -> float:
    r"""Kurtosis, PyRadiomics definition (= IBSI IPH6 + 3).  m4 / m2^2; 0 for a flat ROI."""
    m2 = _moment(x, 2)
    return 0.0 if m2 == 0 else _moment(x, 4) / m2**2


def excess_kurtosis(x: np.ndarray) -> float:
    r"""Excess kurtosis (IBSI IPH6).  m4 / m2^2 - 3; 0 for a flat ROI (m2 = 0)."""
    m2 = _moment(x, 2)
    return 0.0 if m2 == 0 else _moment(x, 4) / m2**2 - 3.0


def coefficient_of_variation(x: np.ndarray) -> float:
    r"""Coefficient of variation (IBSI 7TET; not in PyRadiomics).  sqrt(m2) / mu."""
    return float(np.std(x) / x.mean())


def quartile_coefficient_of_dispersion(x: np.ndarray) -> float:
    r"""Quartile coefficient of dispersion (IBSI 9S40; not in PyRadiomics).  (P75 - P25) / (P75 + P25)."""
    p25, p75 = np.percentile(x, 25), np.percentile(x, 75)
    return float((p75 - p25) / (p75 + p25))


_SHIFT_NOTE = "equals IBSI only with voxelArrayShift 0"

FEATURES: dict[str, Feature] = {
    "Energy": Feature(lambda d: energy(d.x, d.shift), "N8CA", note=_SHIFT_NOTE),
    "TotalEnergy": Feature(lambda d: total_energy(d.x, d.voxel_volume_mm3, d.shift), None,
                           note="PyRadiomics only"),
    "Entropy": Feature(lambda d: entropy(d.counts), "TLU2"),
    "Minimum": Feature(lambda d: minimum(d.x), "1GSF"),
    "10Percentile": Feature(lambda d: percentile(d.x, 10), "QG58"),
    "90Percentile": Feature(lambda d: percentile(d.x, 90), "8DWT"),
    "Maximum": Feature(lambda d: maximum(d.x), "84IY"),
    "Mean": Feature(lambda d: mean(d.x), "Q4LE"),
    "Median": Feature(lambda d: median(d.x), "Y12H"),
    "InterquartileRange": Feature(lambda d: interquartile_range(d.x), "SALO"),
    "Range": Feature(lambda d: intensity_range(d.x), "2OJQ"),
    "MeanAbsoluteDeviation": Feature(lambda d: mean_absolute_deviation(d.x), "4FUA"),
    "RobustMeanAbsoluteDeviation": Feature(lambda d: robust_mean_absolute_deviation(d.x), "1128"),
    "RootMeanSquared": Feature(lambda d: root_mean_squared(d.x, d.shift), "5ZWQ", note=_SHIFT_NOTE),
    "StandardDeviation": Feature(lambda d: standard_deviation(d.x), None, default=False,
                                 note="deprecated in PyRadiomics (sqrt of Variance)"),
    "Skewness": Feature(lambda d: skewness(d.x), "KE2A"),
    "Kurtosis": Feature(lambda d: kurtosis(d.x), None, note="PyRadiomics kurtosis = IBSI IPH6 + 3"),
    "Variance": Feature(lambda d: variance(d.x), "ECT3"),
    "Uniformity": Feature(lambda d: uniformity(d.counts), "BJ5W"),
}

# IBSI features with no PyRadiomics counterpart (or a different PyRadiomics definition).
IBSI_ONLY: dict[str, Feature] = {
    "ExcessKurtosis": Feature(lambda d: excess_kurtosis(d.x), "IPH6"),
    "MedianAbsoluteDeviation": Feature(lambda d: median_absolute_deviation(d.x), "N72L"),
    "CoefficientOfVariation": Feature(lambda d: coefficient_of_variation(d.x), "7TET"),
    "QuartileCoefficientOfDispersion": Feature(lambda d: quartile_coefficient_of_dispersion(d.x), "9S40"),
}
