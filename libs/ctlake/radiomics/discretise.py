"""Grey-level discretisation of the ROI intensities (IBSI 2.7, "Intensity discretisation").

Three modes, chosen by the PyRadiomics settings names:

- fixed bin width ``binWidth`` (PyRadiomics default 25; IBSI "fixed bin size", FBS):
  edges start at the largest multiple of the bin width <= min(X) (PyRadiomics ``getBinEdges``:
  ``low = min - (min % w)``; ``edges = arange(low, max + 2w, w)``), and every bin is half open,
  so X_d = floor((X - low) / w) + 1.
- fixed bin count ``binCount`` (IBSI "fixed bin number", FBN): ``numpy.histogram`` edges over
  [min, max] with the last edge raised by 1, so max(X) falls in the top bin N_b.
- none: the intensities already are grey levels 1, 2, ... (the IBSI digital phantom); checked,
  returned as they are.

All modes return 1-based integer grey levels for the ROI voxels only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from . import _kernels

Mode = Literal["width", "count", "none"]


@dataclass(frozen=True)
class Discretised:
    """Grey levels of the ROI voxels (1-based, int64, same order as the input) and the bin edges
    used (``None`` for mode "none")."""

    levels: np.ndarray
    edges: np.ndarray | None


def bin_edges_fixed_width(values: np.ndarray, bin_width: float = 25.0) -> np.ndarray:
    """Bin edges for a fixed bin width w (IBSI FBS), PyRadiomics convention.

    low = min(X) - (min(X) mod w) (floor modulo, so low <= min(X) and low is a multiple of w);
    edges = low, low + w, ... < max(X) + 2w. A flat ROI whose single value is a multiple of w gets
    the two edges [low - 0.5, low + 0.5], as in PyRadiomics."""
    if not bin_width > 0:
        raise ValueError(f"binWidth must be > 0, got {bin_width}")
    values = np.asarray(values, dtype=np.float64)
    minimum = float(values.min())
    maximum = float(values.max())
    low = minimum - (minimum % bin_width)
    edges = np.arange(low, maximum + 2 * bin_width, bin_width)
    if len(edges) == 1:
        edges = np.array([edges[0] - 0.5, edges[0] + 0.5])
    return edges


def bin_edges_fixed_count(values: np.ndarray, bin_count: int) -> np.ndarray:
    """Bin edges for a fixed number of bins N_b (IBSI FBN): N_b equal bins over [min(X), max(X)],
    the last edge raised by 1 so that max(X) is counted in bin N_b (PyRadiomics convention)."""
    if int(bin_count) != bin_count or bin_count < 1:
        raise ValueError(f"binCount must be a positive integer, got {bin_count}")
    edges = np.histogram(np.asarray(values, dtype=np.float64), int(bin_count))[1]
    edges[-1] += 1
    return edges


def discretise(values: np.ndarray, *, mode: Mode = "width", bin_width: float = 25.0,
               bin_count: int | None = None) -> Discretised:
    """Discretise ROI intensities ``values`` (1-D, the voxels inside the mask).

    mode "width": X_d = digitize(X, bin_edges_fixed_width(X, bin_width)) (1-based; ``np.digitize``, compiled
    in :mod:`._kernels` where numba is there);
    mode "count": X_d = digitize(X, bin_edges_fixed_count(X, bin_count));
    mode "none":  X_d = X, which must already be integers >= 1 (else ValueError)."""
    values = np.asarray(values)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"discretise needs a non-empty 1-D array of ROI values, got shape {values.shape}")
    if mode == "none":
        as_int = values.astype(np.int64)
        if not np.array_equal(as_int, values) or as_int.min() < 1:
            raise ValueError("discretisation 'none' needs integer grey levels >= 1 in the ROI; "
                             f"found range {values.min()}..{values.max()}; set binWidth or binCount")
        return Discretised(as_int, None)
    if mode == "width":
        edges = bin_edges_fixed_width(values, bin_width)
    elif mode == "count":
        if bin_count is None:
            raise ValueError("mode 'count' needs bin_count")
        edges = bin_edges_fixed_count(values, bin_count)
    else:
        raise ValueError(f"unknown discretisation mode {mode!r}; use 'width', 'count' or 'none'")
    x = np.ascontiguousarray(values, dtype=np.float64)
    levels = _kernels.digitize(x, edges) if _kernels.AVAILABLE else np.digitize(x, edges)
    return Discretised(levels.astype(np.int64), edges)


def levels_present(levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(levels, return_inverse=True)`` for a 1-D array of non-negative integer grey levels,
    by counting instead of sorting: the distinct levels, ascending (input dtype), and for every input
    value the index of its level among them (int64). Falls back to np.unique for other input."""
    lv = np.asarray(levels)
    if lv.ndim != 1 or lv.dtype.kind not in "iu" or lv.size == 0 or lv.min() < 0 or lv.max() > 4 * lv.size + 4096:
        return np.unique(lv, return_inverse=True)
    seen = np.bincount(lv)
    rank = np.cumsum(seen > 0) - 1
    return np.flatnonzero(seen).astype(lv.dtype), rank[lv]
