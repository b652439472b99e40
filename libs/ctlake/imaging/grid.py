"""The geometry that travels with every (z, y, x) array: shape, spacing, origin, direction.

Conventions are SimpleITK's, so a Grid converts to and from an ``sitk.Image`` without thought:
``origin_xyz_mm`` is the LPS world position (mm) of the centre of voxel index (0, 0, 0);
``direction`` is the 3×3 matrix, row-major, whose *columns* are the world directions of the
index axes i (x, columns), j (y, rows) and k (z, slices); spacings are mm. Arrays are indexed
``vol[k, j, i]`` = (z, y, x), so ``shape_zyx`` and ``spacing_zyx_mm`` are the reverse of ITK's
size and spacing.

    world_xyz = origin_xyz + D @ (spacing_xyz * [i, j, k])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class Grid:
    shape_zyx: tuple[int, int, int]
    spacing_zyx_mm: tuple[float, float, float]
    origin_xyz_mm: tuple[float, float, float]
    direction: tuple[float, ...] = IDENTITY   # 9 numbers, row-major; columns = index axes i, j, k

    def __post_init__(self) -> None:
        if len(self.shape_zyx) != 3 or any(int(n) < 1 for n in self.shape_zyx):
            raise ValueError(f"shape_zyx must be 3 positive ints, got {self.shape_zyx}")
        if len(self.spacing_zyx_mm) != 3 or any(not s > 0 for s in self.spacing_zyx_mm):
            raise ValueError(f"spacing_zyx_mm must be 3 positive mm, got {self.spacing_zyx_mm}")
        if len(self.direction) != 9:
            raise ValueError(f"direction must have 9 numbers, got {len(self.direction)}")
        d = self.matrix
        if not np.allclose(d.T @ d, np.eye(3), atol=1e-4):
            raise ValueError(f"direction is not orthonormal: {self.direction}")

    @property
    def matrix(self) -> np.ndarray:
        """Direction as a 3×3 array (columns: world directions of i, j, k)."""
        return np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    @property
    def spacing_xyz_mm(self) -> tuple[float, float, float]:
        z, y, x = self.spacing_zyx_mm
        return (x, y, z)

    def index_zyx_to_world_xyz(self, index_zyx: np.ndarray) -> np.ndarray:
        """(..., 3) (z, y, x) voxel indices (may be fractional) → (..., 3) LPS world mm (x, y, z)."""
        idx = np.asarray(index_zyx, dtype=np.float64)[..., ::-1]          # → (i, j, k)
        return np.asarray(self.origin_xyz_mm) + (idx * np.asarray(self.spacing_xyz_mm)) @ self.matrix.T

    def world_xyz_to_index_zyx(self, world_xyz_mm: np.ndarray) -> np.ndarray:
        """(..., 3) LPS world mm (x, y, z) → (..., 3) fractional (z, y, x) voxel indices."""
        rel = np.asarray(world_xyz_mm, dtype=np.float64) - np.asarray(self.origin_xyz_mm)
        ijk = (rel @ self.matrix) / np.asarray(self.spacing_xyz_mm)
        return ijk[..., ::-1]

    def to_dict(self) -> dict:
        return {"shape_zyx": list(self.shape_zyx), "spacing_zyx_mm": list(self.spacing_zyx_mm),
                "origin_xyz_mm": list(self.origin_xyz_mm), "direction": list(self.direction)}

    @classmethod
    def from_dict(cls, d: dict) -> Grid:
        return cls(tuple(int(v) for v in d["shape_zyx"]), tuple(float(v) for v in d["spacing_zyx_mm"]),
                   tuple(float(v) for v in d["origin_xyz_mm"]), tuple(float(v) for v in d["direction"]))
