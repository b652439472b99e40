r"""Lung mask of a chest CT volume by thresholding and morphology (DESIGN §5).

Pure numpy + scipy.ndimage; arrays are (z, y, x); made for volumes resampled to 1 mm
(:func:`ctlake.imaging.resample.resample_to_spacing`), where the size-5 structuring element of
DESIGN §5 is a ball of 2 mm radius. Any spacing works; only the closing is counted in voxels.

Steps of :func:`lung_mask` (defaults in brackets):

1. **Body.** ``tissue = HU > high_hu`` [-300 HU] (soft tissue, bone, blood). Each slice is opened
   in-plane with a disc of radius ``body_opening_radius_vox`` [2] (a 1 × 5 × 5 element), which
   cuts the thin shells of the scanner table and blankets from the patient; the largest 3D
   connected component (6-connected) is the body wall; its holes are filled slice by slice.
   Everything outside that filled body (the air around the patient, connected to the volume's
   in-plane border, and the table) is discarded.
2. **Threshold.** ``low_hu <= HU <= high_hu`` [-950 .. -300 HU] inside the body: aerated
   parenchyma. Air (< -950 HU: the airway lumen, gas) and tissue are left out.
3. **Components.** 6-connected 3D components of the thresholded voxels, largest first. The
   largest is kept, and the second when it has at least ``min_component_fraction`` [0.1] of
   the largest's volume (the other lung; when the two lungs touch they are one component and
   only that one is kept). Components below ``min_volume_ml`` [10 ml] are never lungs; with
   none left :class:`LungMaskError` ``NO_LUNG_FOUND`` is raised. Components touching the
   in-plane border of the volume are dropped first (air outside the body that step 1 could
   not separate, e.g. a body cut by the field of view).
4. **Closing** with a ball of radius ``closing_radius_vox`` [2] voxels (the size-5
   structuring element): vessels up to ~4 voxels across and the partial-volume rim of
   vessels and fissures join the mask. The volume is padded by the radius first, so the
   closing does not eat into lungs cut by the first or last slice.
5. **Hole filling**, first in 3D (cavities fully enclosed by lung), then slice by slice for
   holes of at most ``max_hole_area_mm2`` [2000 mm², a 50 mm disc]: vessels, central nodules
   and masses that the lung surrounds in the slice. The area limit keeps the mediastinum out
   in slices where the two lungs meet in front of and behind it.

Not included by design: juxtapleural nodules (attached to the chest wall, not enclosed by
lung), the trachea and main bronchi. :func:`ctlake.imaging.nodules.nodule_mask` restores the
first (rolling-ball closing of the lung mask around the annotated nodule).

Example::

    hu, grid = resample_to_spacing(hu_zyx, grid, (1.0, 1.0, 1.0))
    lungs = lung_mask(hu, grid.spacing_zyx_mm)          # bool (z, y, x), same shape
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ctlake.errors import CtlakeError

__all__ = ["LungMaskError", "ball", "body_mask", "disc_2d", "fill_holes_2d", "lung_mask"]

_FACE_2D = np.zeros((3, 3, 3), dtype=bool)       # 4-connectivity within a slice, never across slices
_FACE_2D[1] = ndimage.generate_binary_structure(2, 1)


class LungMaskError(CtlakeError):
    """No lung could be segmented. ``code``: NO_LUNG_FOUND, BAD_INPUT."""

    code = "LUNG_MASK_FAILED"


def ball(radius_vox: int) -> np.ndarray:
    """Boolean ball ``(2r + 1)³``: offsets with dz² + dy² + dx² <= r² (r = 2: the size-5 element)."""
    r = int(radius_vox)
    g = np.arange(-r, r + 1)
    return (g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2) <= r * r


def disc_2d(radius_vox: int) -> np.ndarray:
    """In-plane disc as a ``(1, 2r + 1, 2r + 1)`` 3D element (acts on each slice alone)."""
    r = int(radius_vox)
    g = np.arange(-r, r + 1)
    return ((g[:, None] ** 2 + g[None, :] ** 2) <= r * r)[None]


def fill_holes_2d(mask_zyx: np.ndarray, *, max_area_vox: float | None = None) -> np.ndarray:
    """Fill the holes of every axial slice: 4-connected background regions of the slice that do
    not touch its border and (when ``max_area_vox`` is given) have at most that many pixels.
    One labelling pass over the whole volume (the element never links slices)."""
    m = np.asarray(mask_zyx, dtype=bool)
    labels, n = ndimage.label(~m, structure=_FACE_2D)
    if n == 0:
        return m.copy()
    hole = np.ones(n + 1, dtype=bool)
    hole[0] = False
    for face in (labels[:, 0, :], labels[:, -1, :], labels[:, :, 0], labels[:, :, -1]):
        hole[np.unique(face)] = False
    if max_area_vox is not None:
        hole &= np.bincount(labels.ravel(), minlength=n + 1) <= max_area_vox
    return m | hole[labels]


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask)
    if n <= 1:
        return labels > 0
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def _crop_box(mask: np.ndarray, pad: int) -> tuple[slice, ...]:
    """Bounding box of ``mask`` grown by ``pad`` voxels, clipped to the array."""
    idx = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    return tuple(slice(max(0, int(i[0]) - pad), min(n, int(i[-1]) + pad + 1))
                 for i, n in zip(idx, mask.shape, strict=True))


def body_mask(hu_zyx: np.ndarray, *, tissue_hu: float = -300.0, opening_radius_vox: int = 2) -> np.ndarray:
    """The patient: largest 3D component of ``HU > tissue_hu`` after an in-plane opening with a
    disc of ``opening_radius_vox``, holes filled per slice (see step 1 of the module docstring)."""
    tissue = np.asarray(hu_zyx) > tissue_hu
    if opening_radius_vox > 0:
        tissue = ndimage.binary_opening(tissue, structure=disc_2d(opening_radius_vox))
    if not tissue.any():
        return tissue
    return fill_holes_2d(_largest_component(tissue))


def lung_mask(
    hu_zyx: np.ndarray,
    spacing_zyx_mm: tuple[float, float, float] = (1.0, 1.0, 1.0),
    *,
    low_hu: float = -950.0,
    high_hu: float = -300.0,
    closing_radius_vox: int = 2,
    body_opening_radius_vox: int = 2,
    max_components: int = 2,
    min_component_fraction: float = 0.1,
    min_volume_ml: float = 10.0,
    max_hole_area_mm2: float = 2000.0,
) -> np.ndarray:
    """Boolean (z, y, x) lung mask of an HU volume; the steps and defaults are in the module
    docstring (threshold ``low_hu..high_hu`` HU inside the body, at most ``max_components``
    largest components, closing with a ball of ``closing_radius_vox`` voxels, hole filling).

    spacing_zyx_mm: voxel size (mm), for the volume and area limits (``min_volume_ml`` in ml =
        1000 mm³, ``max_hole_area_mm2`` in mm² per slice).
    Raises :class:`LungMaskError` (NO_LUNG_FOUND) when no component reaches ``min_volume_ml``.
    """
    hu = np.asarray(hu_zyx)
    if hu.ndim != 3:
        raise LungMaskError(f"hu_zyx must be a (z, y, x) volume, got shape {hu.shape}", code="BAD_INPUT")
    if not low_hu < high_hu:
        raise ValueError(f"low_hu {low_hu} must be < high_hu {high_hu}")
    sz, sy, sx = (float(s) for s in spacing_zyx_mm)
    voxel_ml = sz * sy * sx / 1000.0

    # 1-2: aerated voxels inside the body
    body = body_mask(hu, tissue_hu=high_hu, opening_radius_vox=body_opening_radius_vox)
    cand = (hu >= low_hu) & (hu <= high_hu) & body

    # 3: the largest components (the lungs), never touching the in-plane border
    labels, n = ndimage.label(cand)
    if n == 0:
        raise LungMaskError(f"no voxel within {low_hu:g}..{high_hu:g} HU inside the body", code="NO_LUNG_FOUND",
                            hint="is this a chest CT in HU (slope/intercept applied, not windowed to 0..255)?")
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    for face in (labels[:, 0, :], labels[:, -1, :], labels[:, :, 0], labels[:, :, -1]):
        sizes[np.unique(face)] = 0
    order = np.argsort(sizes)[::-1]
    biggest = int(sizes[order[0]])
    if biggest * voxel_ml < min_volume_ml:
        raise LungMaskError(
            f"largest aerated component inside the body is {biggest * voxel_ml:.1f} ml (< {min_volume_ml} ml)",
            code="NO_LUNG_FOUND", hint="check the HU scale and that the series covers the chest")
    kept = [int(lab) for lab in order[:max_components]
            if sizes[lab] >= min_component_fraction * biggest and sizes[lab] * voxel_ml >= min_volume_ml]
    lookup = np.zeros(n + 1, dtype=bool)
    lookup[kept] = True
    mask = lookup[labels]

    # 4: closing with the size-(2r + 1) ball, on the padded bounding box
    r = int(closing_radius_vox)
    if r > 0:
        box = _crop_box(mask, r)
        sub = np.pad(mask[box], r, mode="constant")
        closed = ndimage.binary_closing(sub, structure=ball(r))[r:-r, r:-r, r:-r]
        mask[box] |= closed
    # 5: holes, 3D then per slice (area-limited)
    box = _crop_box(mask, 1)
    mask[box] = ndimage.binary_fill_holes(mask[box])
    mask = fill_holes_2d(mask, max_area_vox=max_hole_area_mm2 / (sy * sx))
    return mask
