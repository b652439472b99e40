r"""3D shape (morphology) features of the ROI mask (IBSI 3.1), PyRadiomics ``shape`` names.

Let V be the mesh volume and A the mesh surface area of the marching-cubes mesh (see :mod:`.mesh`),
N_v the number of ROI voxels and lambda_major >= lambda_minor >= lambda_least the eigenvalues of the
covariance matrix of the physical voxel-centre coordinates (population covariance, divide by N_v,
as PyRadiomics; the IBSI reference values use N_v - 1, see ``IBSI_ONLY``).
Diameters are the largest distances between mesh vertices (all pairs in 3D; pairs in the same
axial slice / coronal row / sagittal column for the 2D ones, as PyRadiomics).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import ConvexHull, QhullError

from ._table import Feature
from .mesh import Mesh, marching_cubes


@dataclass(frozen=True)
class ShapeInput:
    """mesh: the marching-cubes mesh; n_voxels: ROI voxel count; voxel_volume_mm3: product of the
    spacing; eigenvalues: ascending eigenvalues (mm^2) of the voxel-coordinate covariance;
    diameters_mm: (slice, column, row, 3D) maximum diameters."""

    mesh: Mesh
    n_voxels: int
    voxel_volume_mm3: float
    eigenvalues: np.ndarray
    diameters_mm: tuple[float, float, float, float]


def prepare(mask_zyx: np.ndarray, spacing_zyx_mm: tuple[float, float, float]) -> ShapeInput:
    """Everything the shape features need, computed once from a boolean (z, y, x) mask."""
    mask = np.asarray(mask_zyx, dtype=bool)
    spacing = np.asarray(spacing_zyx_mm, dtype=np.float64)
    mesh = marching_cubes(mask, spacing_zyx_mm)
    return ShapeInput(mesh, int(mask.sum()), float(np.prod(spacing)), axis_eigenvalues(mask, spacing),
                      mesh_diameters(mesh))


def axis_eigenvalues(mask_zyx: np.ndarray, spacing_zyx_mm) -> np.ndarray:
    r"""Ascending eigenvalues of C = (1/N_v) sum_k (x_k - mean)(x_k - mean)^T over the physical
    voxel-centre coordinates x_k; eigenvalues in (-1e-10, 0) from round-off are set to 0."""
    coords = np.argwhere(mask_zyx).astype(np.float64) * np.asarray(spacing_zyx_mm, dtype=np.float64)
    coords -= coords.mean(axis=0)
    coords /= np.sqrt(len(coords))
    ev = np.sort(np.linalg.eigvalsh(coords.T @ coords))
    ev[(ev < 0) & (ev > -1e-10)] = 0.0
    return ev


def _max_sq_distance(points: np.ndarray, brute_force_below: int = 200) -> float:
    """Largest squared pairwise distance; brute force over the convex hull vertices when a hull
    exists (it always contains the farthest pair), over all points when the points are degenerate or
    fewer than ``brute_force_below`` (then the pairs cost less than the hull).
    d^2 = sum_c (p_c - q_c)^2, added coordinate by coordinate in axis order."""
    if len(points) < 2:
        return 0.0
    if len(points) > max(points.shape[1] + 1, brute_force_below):
        try:
            points = points[ConvexHull(points).vertices]
        except QhullError:  # flat or collinear point set: no hull, use all points
            pass
    cols = [np.ascontiguousarray(points[:, c]) for c in range(points.shape[1])]
    best = 0.0
    for start in range(0, len(points), 1024):
        d2 = (cols[0][start:start + 1024, None] - cols[0][None, :]) ** 2
        for col in cols[1:]:
            d2 += (col[start:start + 1024, None] - col[None, :]) ** 2
        best = max(best, float(d2.max()))
    return best


def _line_ends(key2: np.ndarray) -> list[np.ndarray]:
    """For each axis a, bool (n,): the point has the smallest or the largest ``key2[:, a]`` of the
    points sharing its other two (integer) coordinates, i.e. it ends its axis-parallel line. A point
    strictly between two others on a line is no vertex of any convex hull that holds them, so the
    farthest pair of a point set (in 3D, or within a plane) is among the points that end their lines
    (all three axes in 3D; the two in-plane axes within a plane)."""
    key2 = np.asarray(key2, dtype=np.int64)
    if not len(key2):
        return [np.zeros(0, dtype=bool)] * 3
    radix = int(key2.max()) + 1
    ends = []
    for axis in range(3):
        a, b = (m for m in range(3) if m != axis)
        line = key2[:, a] * radix + key2[:, b]
        order = np.argsort(line * radix + key2[:, axis])
        sorted_line = line[order]
        cut = sorted_line[1:] != sorted_line[:-1]
        end = np.zeros(len(key2), dtype=bool)
        end[order[np.concatenate(([True], cut))]] = True     # first of its line
        end[order[np.concatenate((cut, [True]))]] = True     # last of its line
        ends.append(end)
    return ends


def _max_sq_distance_per_plane(points: np.ndarray, plane: np.ndarray, max_pairs: int = 1 << 20) -> float:
    """Largest squared distance between two of ``points`` (n, 2) with equal ``plane`` keys (n,).
    The planes, ordered by their number of points, go in chunks; in a chunk every plane's points are
    padded to the chunk's largest count K with copies of the plane's first point (a copy adds no new
    distance), and the (planes, K, K) squared distances are formed at once."""
    if len(points) < 2:
        return 0.0
    order = np.argsort(plane, kind="stable")
    a, b, key = points[order, 0], points[order, 1], plane[order]
    starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
    counts = np.diff(np.append(starts, len(key)))
    by_size = np.argsort(counts, kind="stable")
    starts, counts = starts[by_size], counts[by_size]
    best = 0.0
    first = int(np.searchsorted(counts, 2))                    # planes with one point have no pair
    while first < len(counts):
        k = int(counts[min(first + 15, len(counts) - 1)])
        last = min(int(np.searchsorted(counts, k, side="right")), first + max(1, max_pairs // (k * k)))
        k = int(counts[last - 1])
        slot = np.arange(k)
        index = starts[first:last, None] + np.where(slot[None, :] < counts[first:last, None], slot[None, :], 0)
        ca, cb = a[index], b[index]                                                   # (planes, K)
        d2 = (ca[:, :, None] - ca[:, None, :]) ** 2
        d2 += (cb[:, :, None] - cb[:, None, :]) ** 2
        best = max(best, float(d2.max()))
        first = last
    return best


def mesh_diameters(mesh: Mesh) -> tuple[float, float, float, float]:
    r"""(Maximum2DDiameterSlice, ...Column, ...Row, Maximum3DDiameter) in mm: max ||v_a - v_b|| over
    mesh vertex pairs with equal z (slice), equal y (column), equal x (row), and over all pairs.
    Only vertices that end their axis-parallel lines can be in the farthest pair (:func:`_line_ends`);
    the others are left out before the pairs are formed."""
    v, key = mesh.vertices_mm, mesh.vertex_index2
    ends = _line_ends(key)
    planar = []
    for axis in range(3):
        a, b = (m for m in range(3) if m != axis)
        keep = ends[a] & ends[b]
        planar.append(np.sqrt(_max_sq_distance_per_plane(v[keep][:, [a, b]], key[keep, axis])))
    return planar[0], planar[1], planar[2], float(np.sqrt(_max_sq_distance(v[ends[0] & ends[1] & ends[2]])))


def mesh_volume(d: ShapeInput) -> float:
    r"""Volume (mesh) (IBSI RNU0).  V = |sum_t (a_t x b_t) . c_t| / 6 over the mesh triangles."""
    return d.mesh.volume_mm3


def voxel_volume(d: ShapeInput) -> float:
    r"""Volume (voxel counting) (IBSI YEKZ).  N_v * V_voxel."""
    return d.n_voxels * d.voxel_volume_mm3


def surface_area(d: ShapeInput) -> float:
    r"""Surface area (mesh) (IBSI C0JK).  A = sum_t |(a_t - c_t) x (b_t - c_t)| / 2."""
    return d.mesh.surface_area_mm2


def surface_volume_ratio(d: ShapeInput) -> float:
    r"""Surface to volume ratio (IBSI 2PR5).  A / V."""
    return d.mesh.surface_area_mm2 / d.mesh.volume_mm3


def sphericity(d: ShapeInput) -> float:
    r"""Sphericity (IBSI QCFX).  (36 pi V^2)^(1/3) / A."""
    return (36 * np.pi * d.mesh.volume_mm3**2) ** (1.0 / 3.0) / d.mesh.surface_area_mm2


def compactness1(d: ShapeInput) -> float:
    r"""Compactness 1 (IBSI SKGS).  V / sqrt(pi A^3)."""
    return d.mesh.volume_mm3 / np.sqrt(np.pi * d.mesh.surface_area_mm2**3)


def compactness2(d: ShapeInput) -> float:
    r"""Compactness 2 (IBSI BQWJ).  36 pi V^2 / A^3."""
    return 36 * np.pi * d.mesh.volume_mm3**2 / d.mesh.surface_area_mm2**3


def spherical_disproportion(d: ShapeInput) -> float:
    r"""Spherical disproportion (IBSI KRCK).  A / (36 pi V^2)^(1/3)."""
    return d.mesh.surface_area_mm2 / (36 * np.pi * d.mesh.volume_mm3**2) ** (1.0 / 3.0)


def asphericity(d: ShapeInput) -> float:
    r"""Asphericity (IBSI 25C7; not in PyRadiomics).  (A^3 / (36 pi V^2))^(1/3) - 1."""
    return (d.mesh.surface_area_mm2**3 / (36 * np.pi * d.mesh.volume_mm3**2)) ** (1.0 / 3.0) - 1.0


def _sqrt_or_nan(x: float) -> float:
    return float(np.sqrt(x)) if x >= 0 else float("nan")


def major_axis_length(d: ShapeInput) -> float:
    r"""Major axis length (IBSI TDIC).  4 sqrt(lambda_major)."""
    return 4 * _sqrt_or_nan(d.eigenvalues[2])


def minor_axis_length(d: ShapeInput) -> float:
    r"""Minor axis length (IBSI P9VJ).  4 sqrt(lambda_minor)."""
    return 4 * _sqrt_or_nan(d.eigenvalues[1])


def least_axis_length(d: ShapeInput) -> float:
    r"""Least axis length (IBSI 7J51).  4 sqrt(lambda_least)."""
    return 4 * _sqrt_or_nan(d.eigenvalues[0])


def _unbiased(d: ShapeInput, k: int) -> float:
    return d.eigenvalues[k] * d.n_voxels / (d.n_voxels - 1) if d.n_voxels > 1 else float("nan")


def major_axis_length_ibsi(d: ShapeInput) -> float:
    r"""Major axis length (IBSI TDIC) with the unbiased covariance (divide by N_v - 1), as the IBSI
    reference values: 4 sqrt(lambda_major N_v / (N_v - 1)). PyRadiomics divides by N_v."""
    return 4 * _sqrt_or_nan(_unbiased(d, 2))


def minor_axis_length_ibsi(d: ShapeInput) -> float:
    r"""Minor axis length (IBSI P9VJ), unbiased covariance.  4 sqrt(lambda_minor N_v / (N_v - 1))."""
    return 4 * _sqrt_or_nan(_unbiased(d, 1))


def least_axis_length_ibsi(d: ShapeInput) -> float:
    r"""Least axis length (IBSI 7J51), unbiased covariance.  4 sqrt(lambda_least N_v / (N_v - 1))."""
    return 4 * _sqrt_or_nan(_unbiased(d, 0))


def elongation(d: ShapeInput) -> float:
    r"""Elongation (IBSI Q3CK).  sqrt(lambda_minor / lambda_major)."""
    return _sqrt_or_nan(d.eigenvalues[1] / d.eigenvalues[2])


def flatness(d: ShapeInput) -> float:
    r"""Flatness (IBSI N17B).  sqrt(lambda_least / lambda_major)."""
    return _sqrt_or_nan(d.eigenvalues[0] / d.eigenvalues[2])


_AXIS = "PyRadiomics divides the covariance by N_v; IBSI (TDIC, P9VJ, 7J51) by N_v - 1, see IBSI_ONLY"
_DEPRECATED = "deprecated in PyRadiomics (a function of Sphericity)"

FEATURES: dict[str, Feature] = {
    "MeshVolume": Feature(mesh_volume, "RNU0"),
    "VoxelVolume": Feature(voxel_volume, "YEKZ"),
    "SurfaceArea": Feature(surface_area, "C0JK"),
    "SurfaceVolumeRatio": Feature(surface_volume_ratio, "2PR5"),
    "Sphericity": Feature(sphericity, "QCFX"),
    "Compactness1": Feature(compactness1, "SKGS", default=False, note=_DEPRECATED),
    "Compactness2": Feature(compactness2, "BQWJ", default=False, note=_DEPRECATED),
    "SphericalDisproportion": Feature(spherical_disproportion, "KRCK", default=False, note=_DEPRECATED),
    "Maximum3DDiameter": Feature(lambda d: d.diameters_mm[3], "L0JK"),
    "Maximum2DDiameterSlice": Feature(lambda d: d.diameters_mm[0], None, note="PyRadiomics only"),
    "Maximum2DDiameterColumn": Feature(lambda d: d.diameters_mm[1], None, note="PyRadiomics only"),
    "Maximum2DDiameterRow": Feature(lambda d: d.diameters_mm[2], None, note="PyRadiomics only"),
    "MajorAxisLength": Feature(major_axis_length, None, note=_AXIS),
    "MinorAxisLength": Feature(minor_axis_length, None, note=_AXIS),
    "LeastAxisLength": Feature(least_axis_length, None, note=_AXIS),
    "Elongation": Feature(elongation, "Q3CK"),
    "Flatness": Feature(flatness, "N17B"),
}

IBSI_ONLY: dict[str, Feature] = {
    "Asphericity": Feature(asphericity, "25C7"),
    "MajorAxisLengthIBSI": Feature(major_axis_length_ibsi, "TDIC"),
    "MinorAxisLengthIBSI": Feature(minor_axis_length_ibsi, "P9VJ"),
    "LeastAxisLengthIBSI": Feature(least_axis_length_ibsi, "7J51"),
}
