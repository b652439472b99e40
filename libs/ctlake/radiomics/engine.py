r"""The compiled extraction path: every default-class feature of one ROI from the numba kernels in
:mod:`._kernels`, with a handful of Python calls per feature class.

:func:`prepare_roi` builds the one representation every kernel reads (:class:`Roi`: the ROI's grey
levels in its bounding box padded with zeros, flat, plus the ROI voxel indices and the level ranks);
``<class>_values(roi, settings)`` return ``{PyRadiomics feature name: value}`` for every feature of the
class's ``FEATURES`` table, aggregated as PyRadiomics does (``weightingNorm``). The formulas are those
documented in the family modules, whose numpy code stays the definition, the IBSI path
(:func:`.extract.extract_ibsi`) and the fallback when numba is missing (``AVAILABLE`` False);
tests/unit/test_radiomics_kernels.py holds the two to the same values.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _kernels as K
from . import firstorder, glcm, gldm, glrlm, glszm, mesh, ngtdm, shape

AVAILABLE = K.AVAILABLE


@dataclass(frozen=True)
class Roi:
    """One ROI in the layout of the kernels.

    lv: grey levels (int32, flat, C order) of the ROI's bounding box padded by ``pad`` zero voxels on
    every side, 0 outside the ROI; dims: that padded shape (z, y, x) (int64); roi: flat indices of the
    ROI voxels in C order (int64); present: the grey levels present (ascending, int64); counts: voxels
    per present level; rank: row of each level 0..max among ``present`` (-1 where absent);
    spacing: (z, y, x) mm (float64)."""

    lv: np.ndarray
    dims: np.ndarray
    pad: int
    roi: np.ndarray
    present: np.ndarray
    counts: np.ndarray
    rank: np.ndarray
    spacing: np.ndarray

    @property
    def dims_key(self) -> tuple[int, int, int]:
        return tuple(self.dims.tolist())

    @property
    def box_shape(self) -> tuple[int, int, int]:
        """Shape (z, y, x) of the unpadded bounding box."""
        return tuple(int(d) - 2 * self.pad for d in self.dims)

    def steps(self, offsets: np.ndarray) -> np.ndarray:
        """Flat index steps (int64) of (dz, dy, dx) offsets in the padded volume."""
        return _steps(self.dims_key, offsets)


def prepare_roi(mask_box: np.ndarray, levels: np.ndarray, spacing_zyx_mm, pad: int = 1) -> Roi:
    """:class:`Roi` from the bool ROI mask of the bounding box (z, y, x) and the grey levels (>= 1) of its
    voxels in C order (``levels_zyx[mask_box]``); ``pad`` >= the largest neighbour distance."""
    mask8 = np.ascontiguousarray(mask_box).view(np.uint8) if mask_box.dtype == bool else \
        np.ascontiguousarray(mask_box != 0).view(np.uint8)
    lev = np.ascontiguousarray(levels, dtype=np.int32)
    lv, roi, present, counts, rank = K.prepare(mask8, lev, int(pad))
    dims = np.array([s + 2 * pad for s in mask_box.shape], dtype=np.int64)
    return Roi(lv, dims, int(pad), roi, present, counts, rank, np.asarray(spacing_zyx_mm, dtype=np.float64))


def roi_from_levels(levels_zyx: np.ndarray, spacing_zyx_mm=(1.0, 1.0, 1.0), pad: int = 1) -> Roi:
    """:class:`Roi` of a (z, y, x) grey level array, 0 = outside the ROI (the family modules' input),
    cut to the ROI's bounding box."""
    lv = np.asarray(levels_zyx)
    mask = lv > 0
    z0, z1, y0, y1, x0, x1 = K.bounding_box(np.ascontiguousarray(mask).view(np.uint8)).tolist()
    if z0 < 0:
        raise ValueError("the ROI is empty: no grey level > 0")
    box = (slice(z0, z1), slice(y0, y1), slice(x0, x1))
    return prepare_roi(mask[box], lv[box][mask[box]], spacing_zyx_mm, pad)


def _steps(dims: tuple[int, int, int], offsets: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(offsets, dtype=np.int64)
                                @ np.array([dims[1] * dims[2], dims[2], 1], dtype=np.int64))


@functools.lru_cache(maxsize=256)
def _neighbour_steps(dims: tuple[int, int, int], distances: tuple[int, ...], force2d: bool,
                     force2d_dimension: int) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, flat steps) of :func:`.glcm.directions` in a padded volume of shape ``dims`` (cached: ROI
    boxes repeat their shapes)."""
    offsets = _offsets(distances, force2d, force2d_dimension)
    steps = _steps(dims, offsets)
    steps.setflags(write=False)
    return offsets, steps


def _steps_of(roi: Roi, settings: dict[str, Any], unit: bool = False) -> tuple[np.ndarray, np.ndarray]:
    distances = (1,) if unit else tuple(int(d) for d in settings["distances"])
    return _neighbour_steps(roi.dims_key, distances, bool(settings["force2D"]), int(settings["force2Ddimension"]))


@functools.lru_cache(maxsize=64)
def _offsets(distances: tuple[int, ...], force2d: bool, force2d_dimension: int) -> np.ndarray:
    out = glcm.directions(distances, force2d=force2d, force2d_dimension=force2d_dimension)
    out.setflags(write=False)
    return out


def _plane(settings: dict[str, Any]) -> tuple[bool, int]:
    return bool(settings["force2D"]), int(settings["force2Ddimension"])


def _weights(offsets: np.ndarray, spacing: np.ndarray, norm: str, *, glcm_style: bool) -> np.ndarray:
    """Direction weights of PyRadiomics' weightingNorm, with the arithmetic of :func:`.glcm.matrices`
    (exp(-||d||^2)) and :func:`.glrlm.matrices` (||d||)."""
    step = np.abs(offsets) * spacing
    if norm == "no_weighting":
        return np.ones(len(offsets))
    if glcm_style:
        if norm == "infinity":
            return np.exp(-step.max(axis=1) ** 2)
        if norm == "euclidean":
            return np.exp(-(step**2).sum(axis=1))
        return np.exp(-step.sum(axis=1) ** 2)       # manhattan
    return {"infinity": step.max(axis=1), "euclidean": np.sqrt((step**2).sum(axis=1)),
            "manhattan": step.sum(axis=1)}[norm]


def _named(names: tuple[str, ...], values: np.ndarray) -> dict[str, float]:
    return dict(zip(names, values.tolist(), strict=True))


_FIRSTORDER_NAMES = tuple(firstorder.FEATURES)
_GLCM_NAMES = tuple(glcm.FEATURES)
_MATRIX_NAMES = {"glrlm": tuple(glrlm.FEATURES), "glszm": tuple(glszm.FEATURES)}
_GLDM_NAMES = tuple(n for n in gldm.FEATURES if n != "DependencePercentage")
_GLDM_COLUMNS = np.array([0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15])   # no run/zone percentage
_NGTDM_NAMES = tuple(ngtdm.FEATURES)
_MC = (mesh._CORNERS, mesh._EDGE_MIDPOINTS, mesh._TRI, mesh._NTRI)


_NO_WEIGHTS = np.zeros(0)
_NO_VERTICES = np.zeros((0, 3), dtype=np.int64)
_SHAPE_FEATURES = tuple(shape.FEATURES.items())


def sorted_values(x: np.ndarray) -> np.ndarray:
    """x (float64) sorted ascending: counting sort for integer values (CT), else np.sort."""
    counted, xs = K.counting_sort(x)
    return xs if counted else np.sort(x)


def firstorder_values(x: np.ndarray, roi: Roi, settings: dict[str, Any]) -> dict[str, float]:
    """First-order features of the ROI intensities x (float64, C order of the ROI voxels)."""
    values = K.firstorder_features(x, sorted_values(x), roi.counts.astype(np.float64), float(np.prod(roi.spacing)),
                                   float(settings["voxelArrayShift"]))
    return _named(_FIRSTORDER_NAMES, values)


def _shape_input(roi: Roi, vertices_zyx2: np.ndarray) -> shape.ShapeInput:
    v = K.shape_values(roi.lv, roi.dims, roi.pad, roi.spacing, *_MC)
    ev = np.linalg.eigvalsh(v[6:15].reshape(3, 3))          # ascending; round-off below 0 -> 0, as shape.py
    ev[(ev < 0) & (ev > -1e-10)] = 0.0
    the_mesh = mesh.Mesh(float(v[0]), float(v[1]), vertices_zyx2 * (roi.spacing / 2.0), vertices_zyx2)
    return shape.ShapeInput(the_mesh, len(roi.roi), float(np.prod(roi.spacing)), ev, tuple(v[2:6].tolist()))


def shape_input(roi: Roi) -> shape.ShapeInput:
    """:class:`.shape.ShapeInput` of the ROI: marching-cubes area and volume, vertices, diameters, axes."""
    return _shape_input(roi, K.mesh_vertices(roi.lv, roi.dims))


def shape_values(roi: Roi, settings: dict[str, Any]) -> dict[str, float]:
    """Shape features of the ROI (every entry of ``shape.FEATURES``; the mesh vertices are not needed)."""
    d = _shape_input(roi, _NO_VERTICES)
    return {name: float(f.fn(d)) for name, f in _SHAPE_FEATURES}


def glcm_matrices(roi: Roi, settings: dict[str, Any]) -> np.ndarray:
    """Normalised GLCMs (A, n, n) over the present levels, PyRadiomics aggregation (see :mod:`.glcm`)."""
    offsets = _offsets(tuple(int(d) for d in settings["distances"]), *_plane(settings))
    p = K.cooccurrence(roi.lv, roi.roi, roi.rank, len(roi.present), roi.steps(offsets))
    if settings["symmetricalGLCM"]:
        p += p.transpose(0, 2, 1)
    if settings["weightingNorm"] is not None:
        w = _weights(offsets, roi.spacing, settings["weightingNorm"], glcm_style=True)
        p = np.tensordot(w, p, axes=(0, 0))[None]
    total = p.sum(axis=(1, 2))
    if not total.all():
        p, total = p[total > 0], total[total > 0]
    return p / total[:, None, None]


def glcm_values(roi: Roi, settings: dict[str, Any]) -> dict[str, float]:
    """GLCM features (every entry of ``glcm.FEATURES``), PyRadiomics aggregation."""
    offsets, steps = _steps_of(roi, settings)
    norm = settings["weightingNorm"]
    weights = _NO_WEIGHTS if norm is None else _weights(offsets, roi.spacing, norm, glcm_style=True)
    values = K.glcm_values(roi.lv, roi.roi, roi.rank, roi.present, steps, bool(settings["symmetricalGLCM"]),
                           weights)
    return _named(_GLCM_NAMES, values)


def glrlm_matrices(roi: Roi, settings: dict[str, Any], *, drop_flat: bool = True) -> np.ndarray:
    """Run length matrices (A, n, L) over the present levels (see :mod:`.glrlm`)."""
    offsets = _offsets((1,), *_plane(settings))
    p, multi = K.run_lengths(roi.lv, roi.roi, roi.rank, len(roi.present), roi.steps(offsets), max(roi.box_shape))
    if drop_flat and not multi.all():
        p[~multi] = 0.0
    if settings["weightingNorm"] is not None:
        w = _weights(offsets, roi.spacing, settings["weightingNorm"], glcm_style=False)
        p = np.tensordot(w, p, axes=(0, 0))[None]
    total = p.sum(axis=(1, 2))
    return p if total.all() else p[total > 0]


def glrlm_values(roi: Roi, settings: dict[str, Any]) -> dict[str, float]:
    """GLRLM features (every entry of ``glrlm.FEATURES``), PyRadiomics aggregation (flat directions out)."""
    offsets, steps = _steps_of(roi, settings, unit=True)
    norm = settings["weightingNorm"]
    weights = _NO_WEIGHTS if norm is None else _weights(offsets, roi.spacing, norm, glcm_style=False)
    values = K.glrlm_values(roi.lv, roi.roi, roi.rank, roi.present, steps, max(roi.box_shape), True, weights)
    return _named(_MATRIX_NAMES["glrlm"], values)


def glszm_matrix(roi: Roi, settings: dict[str, Any]) -> np.ndarray:
    """Size zone matrix (1, n, S) over the present levels (see :mod:`.glszm`)."""
    offsets = _offsets((1,), *_plane(settings))
    return K.size_zones(roi.lv, roi.roi, roi.rank, len(roi.present), roi.steps(offsets))[None]


def glszm_values(roi: Roi, settings: dict[str, Any]) -> dict[str, float]:
    """GLSZM features (every entry of ``glszm.FEATURES``)."""
    _, steps = _steps_of(roi, settings, unit=True)
    return _named(_MATRIX_NAMES["glszm"], K.glszm_values(roi.lv, roi.roi, roi.rank, roi.present, steps))


def neighbourhoods(roi: Roi, settings: dict[str, Any], *, exclude_isolated: bool = False):
    """(dependence matrix (1, n, 2A + 1), NGTDM n_i (n,), s_i (n,)) of the ROI in one pass."""
    offsets = _offsets(tuple(int(d) for d in settings["distances"]), *_plane(settings))
    dep, n_i, s_i = K.neighbourhoods(roi.lv, roi.roi, roi.rank, len(roi.present), roi.steps(offsets),
                                     float(settings["gldm_a"]), bool(exclude_isolated))
    return dep[None], n_i, s_i


def gldm_values(roi: Roi, settings: dict[str, Any], hood=None) -> dict[str, float]:
    """GLDM features (every entry of ``gldm.FEATURES``); ``hood``: :func:`neighbourhood_values`' result."""
    matrix_values, _ = hood or neighbourhood_values(roi, settings)
    out = _named(_GLDM_NAMES, matrix_values[_GLDM_COLUMNS])
    out["DependencePercentage"] = 1.0
    return out


def ngtdm_values(roi: Roi, settings: dict[str, Any], hood=None) -> dict[str, float]:
    """NGTDM features (every entry of ``ngtdm.FEATURES``); ``hood``: :func:`neighbourhood_values`' result."""
    _, values = hood or neighbourhood_values(roi, settings)
    return _named(_NGTDM_NAMES, values)


def neighbourhood_values(roi: Roi, settings: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(GLDM matrix features (16, ``glrlm.FEATURES`` order), NGTDM features (5)) in one pass over the ROI."""
    _, steps = _steps_of(roi, settings)
    return K.neighbourhood_values(roi.lv, roi.roi, roi.rank, roi.present, steps, float(settings["gldm_a"]), False)


def warm_up() -> float:
    """Compile the kernels (or load them from numba's on-disk cache) by extracting every default feature of
    a small synthetic ROI; returns the seconds it took. The first ``extract`` in a process does the same
    implicitly; calling this at image build or executor start moves that cost (tens of seconds of
    compilation without a cache, about a second with one) off the first ROI."""
    import time

    from .extract import extract

    t0 = time.perf_counter()
    z, y, x = np.mgrid[-3:4, -3:4, -3:4]
    mask = (z**2 + y**2 + x**2 <= 9).astype(np.uint8)
    image = ((z * 37 + y * 11 + x * 5) % 200 - 100).astype(np.int16)
    extract(image, mask, (1.0, 1.0, 1.0))
    return time.perf_counter() - t0
