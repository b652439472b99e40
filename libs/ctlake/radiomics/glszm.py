r"""Grey level size zone matrix features (IBSI 3.8), PyRadiomics ``glszm`` names.

Matrix: a zone is a connected set of ROI voxels with one grey level; connected = 26-connectivity in 3D
(offsets with infinity norm 1), 8-connectivity in the plane with force2D (zones then never span
slices). P(i, j) counts the zones of grey level i and size j voxels; one matrix for the whole ROI
(IBSI "3D"; with force2D IBSI "2.5D", every slice's zones in one matrix). Rows are the grey levels
present in the ROI (values, not ranks). Zones are the connected components of equal-level neighbours
(:func:`zone_matrix`).

Let i be the grey levels, j the zone sizes, N_z = sum_ij P(i,j) the number of zones,
N_p = sum_ij j P(i,j) the ROI voxel count, p = P / N_z, s(j) = sum_i P(i,j), g(i) = sum_j P(i,j).
The formulas are those of the run length features with zones in place of runs (PyRadiomics notes the
same); each function below delegates to its :mod:`.glrlm` twin and returns one value.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from . import glrlm
from ._table import Feature
from .discretise import levels_present
from .glcm import directions
from .glrlm import MatrixCoefficients


def connectivity(*, force2d: bool = False, force2d_dimension: int = 0) -> np.ndarray:
    """3x3x3 structuring element: all 26 neighbours, or with force2d the 8 in-plane ones (the plane
    normal to axis ``force2d_dimension``)."""
    structure = np.ones((3, 3, 3), dtype=bool)
    if force2d:
        structure = np.zeros((3, 3, 3), dtype=bool)
        index: list = [slice(None)] * 3
        index[force2d_dimension] = 1
        structure[tuple(index)] = True
    return structure


def zone_matrix(levels_zyx: np.ndarray, *, force2d: bool = False, force2d_dimension: int = 0,
                ) -> tuple[np.ndarray, np.ndarray]:
    """Size zone matrix (1, n, S) over the n grey levels present (rows) and zone sizes 1..S (columns),
    and those grey levels (n,).

    Zones are the connected components of the graph whose nodes are the ROI voxels and whose edges
    join two voxels of equal grey level that are neighbours under :func:`connectivity` (one edge per
    +/- offset pair, :func:`.glcm.directions`); one pass for all grey levels, the same zones as
    labelling each level's voxels with that structuring element."""
    lv = np.asarray(levels_zyx, dtype=np.int64)
    if not (lv > 0).any():
        raise ValueError("GLSZM needs at least one ROI voxel (grey level > 0)")
    padded = np.pad(lv, 1)                      # every neighbour index stays inside the array
    flat = padded.ravel()
    roi = np.flatnonzero(flat)
    grey = flat[roi]
    n = len(roi)
    node = np.full(flat.size, -1, dtype=np.int32 if n < 2**31 else np.int64)   # voxel index -> node
    node[roi] = np.arange(n)
    strides = np.asarray(padded.strides) // padded.itemsize
    src, dst = [], []
    for step in directions((1,), force2d=force2d, force2d_dimension=force2d_dimension) @ strides:
        same = flat[roi + step] == grey         # a neighbour outside the ROI has level 0 != grey
        src.append(np.flatnonzero(same))
        dst.append(node[roi[same] + step])
    src_all, dst_all = np.concatenate(src), np.concatenate(dst)
    graph = coo_matrix((np.ones(len(src_all), dtype=np.int8), (src_all, dst_all)), shape=(n, n)).tocsr()
    n_zones, zone = connected_components(graph, directed=False)
    zone_sizes = np.bincount(zone, minlength=n_zones)
    present, level_row = levels_present(grey)
    row_idx = np.empty(n_zones, dtype=np.int64)
    row_idx[zone] = level_row                   # every voxel of a zone has the zone's grey level
    n_sizes = int(zone_sizes.max())
    p = np.bincount(row_idx * n_sizes + zone_sizes - 1, minlength=len(present) * n_sizes)
    return p.reshape(1, len(present), n_sizes).astype(np.float64), present


def _one(values: np.ndarray) -> float:
    return float(values[0])


def small_area_emphasis(c: MatrixCoefficients) -> float:
    r"""Small zone emphasis (IBSI 5QRC).  SAE = sum_ij P(i,j) / j^2 / N_z."""
    return _one(glrlm.short_run_emphasis(c))


def large_area_emphasis(c: MatrixCoefficients) -> float:
    r"""Large zone emphasis (IBSI 48P8).  LAE = sum_ij P(i,j) j^2 / N_z."""
    return _one(glrlm.long_run_emphasis(c))


def gray_level_non_uniformity(c: MatrixCoefficients) -> float:
    r"""Grey level non-uniformity (IBSI JNSA).  GLN = sum_i g(i)^2 / N_z."""
    return _one(glrlm.gray_level_non_uniformity(c))


def gray_level_non_uniformity_normalized(c: MatrixCoefficients) -> float:
    r"""Normalised grey level non-uniformity (IBSI Y1RO).  GLNN = sum_i g(i)^2 / N_z^2."""
    return _one(glrlm.gray_level_non_uniformity_normalized(c))


def size_zone_non_uniformity(c: MatrixCoefficients) -> float:
    r"""Zone size non-uniformity (IBSI 4JP3).  SZN = sum_j s(j)^2 / N_z."""
    return _one(glrlm.run_length_non_uniformity(c))


def size_zone_non_uniformity_normalized(c: MatrixCoefficients) -> float:
    r"""Normalised zone size non-uniformity (IBSI VB3A).  SZNN = sum_j s(j)^2 / N_z^2."""
    return _one(glrlm.run_length_non_uniformity_normalized(c))


def zone_percentage(c: MatrixCoefficients) -> float:
    r"""Zone percentage (IBSI P30P).  ZP = N_z / N_p."""
    return _one(glrlm.run_percentage(c))


def gray_level_variance(c: MatrixCoefficients) -> float:
    r"""Grey level variance (IBSI BYLV).  GLV = sum_ij p(i,j) (i - mu)^2, mu = sum_ij p(i,j) i."""
    return _one(glrlm.gray_level_variance(c))


def zone_variance(c: MatrixCoefficients) -> float:
    r"""Zone size variance (IBSI 3NSA).  ZV = sum_ij p(i,j) (j - mu)^2, mu = sum_ij p(i,j) j."""
    return _one(glrlm.run_variance(c))


def zone_entropy(c: MatrixCoefficients) -> float:
    r"""Zone size entropy (IBSI GU8N).  ZE = -sum_ij p(i,j) log2(p(i,j) + eps)."""
    return _one(glrlm.run_entropy(c))


def low_gray_level_zone_emphasis(c: MatrixCoefficients) -> float:
    r"""Low grey level zone emphasis (IBSI XMSY).  LGLZE = sum_ij P(i,j) / i^2 / N_z."""
    return _one(glrlm.low_gray_level_run_emphasis(c))


def high_gray_level_zone_emphasis(c: MatrixCoefficients) -> float:
    r"""High grey level zone emphasis (IBSI 5GN9).  HGLZE = sum_ij P(i,j) i^2 / N_z."""
    return _one(glrlm.high_gray_level_run_emphasis(c))


def small_area_low_gray_level_emphasis(c: MatrixCoefficients) -> float:
    r"""Small zone low grey level emphasis (IBSI 5RAI).  SALGLE = sum_ij P(i,j) / (i^2 j^2) / N_z."""
    return _one(glrlm.short_run_low_gray_level_emphasis(c))


def small_area_high_gray_level_emphasis(c: MatrixCoefficients) -> float:
    r"""Small zone high grey level emphasis (IBSI HW1V).  SAHGLE = sum_ij P(i,j) i^2 / j^2 / N_z."""
    return _one(glrlm.short_run_high_gray_level_emphasis(c))


def large_area_low_gray_level_emphasis(c: MatrixCoefficients) -> float:
    r"""Large zone low grey level emphasis (IBSI YH51).  LALGLE = sum_ij P(i,j) j^2 / i^2 / N_z."""
    return _one(glrlm.long_run_low_gray_level_emphasis(c))


def large_area_high_gray_level_emphasis(c: MatrixCoefficients) -> float:
    r"""Large zone high grey level emphasis (IBSI J17V).  LAHGLE = sum_ij P(i,j) i^2 j^2 / N_z."""
    return _one(glrlm.long_run_high_gray_level_emphasis(c))


FEATURES: dict[str, Feature] = {
    "SmallAreaEmphasis": Feature(small_area_emphasis, "5QRC"),
    "LargeAreaEmphasis": Feature(large_area_emphasis, "48P8"),
    "GrayLevelNonUniformity": Feature(gray_level_non_uniformity, "JNSA"),
    "GrayLevelNonUniformityNormalized": Feature(gray_level_non_uniformity_normalized, "Y1RO"),
    "SizeZoneNonUniformity": Feature(size_zone_non_uniformity, "4JP3"),
    "SizeZoneNonUniformityNormalized": Feature(size_zone_non_uniformity_normalized, "VB3A"),
    "ZonePercentage": Feature(zone_percentage, "P30P"),
    "GrayLevelVariance": Feature(gray_level_variance, "BYLV"),
    "ZoneVariance": Feature(zone_variance, "3NSA"),
    "ZoneEntropy": Feature(zone_entropy, "GU8N"),
    "LowGrayLevelZoneEmphasis": Feature(low_gray_level_zone_emphasis, "XMSY"),
    "HighGrayLevelZoneEmphasis": Feature(high_gray_level_zone_emphasis, "5GN9"),
    "SmallAreaLowGrayLevelEmphasis": Feature(small_area_low_gray_level_emphasis, "5RAI"),
    "SmallAreaHighGrayLevelEmphasis": Feature(small_area_high_gray_level_emphasis, "HW1V"),
    "LargeAreaLowGrayLevelEmphasis": Feature(large_area_low_gray_level_emphasis, "YH51"),
    "LargeAreaHighGrayLevelEmphasis": Feature(large_area_high_gray_level_emphasis, "J17V"),
}

# every IBSI size zone feature in the reference set has a PyRadiomics name
IBSI_ONLY: dict[str, Feature] = {}
