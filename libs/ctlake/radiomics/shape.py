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


def _max_sq_distance(points: np.ndarray) -> float:
    """Largest squared pairwise distance; brute force over the convex hull vertices when a hull
    exists (it always contains the farthest pair), over all points when the points are degenerate."""
    if len(points) < 2:
        return 0.0
    if len(points) > points.shape[1] + 1:
        try:
            points = points[ConvexHull(points).vertices]
        except QhullError:  # flat or collinear point set: no hull, use all points
            pass
    best = 0.0
    for start in range(0, len(points), 2048):
        block = points[start:start + 2048]
        d2 = ((block[:, None, :] - points[None, :, :]) ** 2).sum(axis=2)
        best = max(best, float(d2.max()))
    return best


def mesh_diameters(mesh: Mesh) -> tuple[float, float, float, float]:
    r"""(Maximum2DDiameterSlice, ...Column, ...Row, Maximum3DDiameter) in mm: max ||v_a - v_b|| over
    mesh vertex pairs with equal z (slice), equal y (column), equal x (row), and over all pairs."""
    v, key = mesh.vertices_mm, mesh.vertex_index2
    planar = []
    for axis in range(3):
        others = [a for a in range(3) if a != axis]
        order = np.argsort(key[:, axis], kind="stable")
        k_sorted = key[order, axis]
        cuts = np.flatnonzero(np.diff(k_sorted)) + 1
        best = 0.0
        for group in np.split(order, cuts):
            best = max(best, _max_sq_distance(v[group][:, others]))
        planar.append(np.sqrt(best))
    return planar[0], planar[1], planar[2], float(np.sqrt(_max_sq_distance(v)))


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
