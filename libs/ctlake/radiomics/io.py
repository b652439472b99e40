"""Image and mask files → the arrays :func:`ctlake.radiomics.extract` takes, on one grid, unresampled.

``load_case(image, mask)`` reads

- the image: a NIfTI (.nii, .nii.gz) or NRRD (.nrrd, .nhdr) file, read with SimpleITK, or a folder
  holding one DICOM CT series, assembled by :mod:`ctlake.imaging.series` (sorted along the slice
  normal, QC-checked, HU = stored value x RescaleSlope + RescaleIntercept). A series whose planes
  are not a regular grid (a gap, uneven steps, gantry tilt: ``needs_resampling``) is refused, as
  radiomics here never resamples;
- the mask: a NIfTI or NRRD file on the image's grid: same shape, and spacing, origin and direction
  within ``geometry_atol_mm`` / ``direction_atol`` (NIfTI keeps its geometry in float32, so a mask
  written for a DICOM image is off by ~1e-5 mm; real misalignments are a voxel or more), else
  :class:`RadiomicsInputError` MASK_GEOMETRY_MISMATCH naming every field that differs.

and returns ``LoadedCase(image_zyx, mask_zyx, spacing_zyx_mm, grid)``: the image as float64
(z, y, x), the ROI ``mask == label`` as bool (so ``extract``'s own ``label`` setting, 1 by default,
selects it: True == 1), the spacing in mm and the :class:`~ctlake.imaging.grid.Grid` (SimpleITK
conventions: LPS origin of voxel (0, 0, 0), direction columns = world directions of x, y, z index).
``label`` is the mask value of the ROI (PyRadiomics' ``label`` setting, default 1).

No Spark, no resampling, no intensity change (no clipping to an HU window either).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from ctlake.errors import CtlakeError
from ctlake.imaging.grid import Grid

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr")


class RadiomicsInputError(CtlakeError):
    """An image or mask that cannot be used as it is. ``code``: UNREADABLE, UNSUPPORTED_FORMAT,
    NOT_3D, NOT_SCALAR, NOT_A_LABEL_MAP, MASK_GEOMETRY_MISMATCH, EMPTY_ROI, NO_DICOM_SERIES,
    NEEDS_RESAMPLING."""

    code = "RADIOMICS_INPUT"


class LoadedCase(NamedTuple):
    """What :func:`load_case` returns; unpacks as ``image_zyx, mask_zyx, spacing_zyx_mm, grid``."""

    image_zyx: np.ndarray          # float64 (z, y, x)
    mask_zyx: np.ndarray           # bool (z, y, x): mask == label
    spacing_zyx_mm: tuple[float, float, float]
    grid: Grid


def _is_image_file(path: Path) -> bool:
    return path.name.lower().endswith(IMAGE_SUFFIXES)


def read_image_file(path: str | Path) -> tuple[np.ndarray, Grid]:
    """A 3-D scalar NIfTI/NRRD file → its (z, y, x) array (file dtype) and Grid."""
    import SimpleITK as sitk

    path = Path(path)
    if not _is_image_file(path):
        raise RadiomicsInputError(f"{path}: not a NIfTI or NRRD file", code="UNSUPPORTED_FORMAT",
                                  hint=f"use one of {', '.join(IMAGE_SUFFIXES)} (or a DICOM folder for the image)")
    if not path.is_file():
        raise RadiomicsInputError(f"{path}: no such file", code="UNREADABLE")
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise RadiomicsInputError(f"{path}: SimpleITK cannot read it: {str(exc).strip().splitlines()[-1]}",
                                  code="UNREADABLE") from None
    if img.GetDimension() != 3:
        raise RadiomicsInputError(f"{path}: {img.GetDimension()}-D image, size {img.GetSize()}", code="NOT_3D",
                                  hint="radiomics here takes 3-D volumes; a single slice needs a size-1 z axis")
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise RadiomicsInputError(f"{path}: {img.GetNumberOfComponentsPerPixel()} components per voxel",
                                  code="NOT_SCALAR",
                                  hint="pass one channel (PyRadiomics label_channel is not supported)")
    grid = Grid(tuple(int(n) for n in reversed(img.GetSize())),          # type: ignore[arg-type]
                tuple(float(s) for s in reversed(img.GetSpacing())),     # type: ignore[arg-type]
                tuple(float(o) for o in img.GetOrigin()),                # type: ignore[arg-type]
                tuple(float(d) for d in img.GetDirection()))
    return sitk.GetArrayFromImage(img), grid


def read_dicom_series(folder: str | Path, *, series_instance_uid: str | None = None) -> tuple[np.ndarray, Grid]:
    """The HU stack (float32, (z, y, x)) of the one CT series in ``folder`` (recursive; or the series
    ``series_instance_uid``) and its Grid, without resampling."""
    from ctlake.imaging.series import assemble_series, group_by_series, slice_infos, stack_hu
    from ctlake.imaging.volume import read_series_folder

    folder = Path(folder)
    datasets = read_series_folder(folder)
    infos = [info for ds in datasets for info in slice_infos(ds)]
    if not infos:
        raise RadiomicsInputError(f"{folder}: no DICOM instances found", code="NO_DICOM_SERIES")
    if series_instance_uid is not None:
        groups = group_by_series(infos)
        if series_instance_uid not in groups:
            raise RadiomicsInputError(f"{folder}: no series {series_instance_uid}", code="NO_DICOM_SERIES",
                                      hint=f"series found: {sorted(groups)}")
        infos = groups[series_instance_uid]
    assembled = assemble_series(infos)       # raises SeriesRejected (MULTIPLE_SERIES, MISSING_SLICES, ...)
    if assembled.needs_resampling:
        resampled = {f: a for f, a in assembled.decisions.items() if a == "resample"}
        raise RadiomicsInputError(
            f"{folder}: series {assembled.series_instance_uid} is not on a regular grid ({resampled}); "
            "radiomics does not resample", code="NEEDS_RESAMPLING",
            hint="build the volume first (ctlake volume ... --out x.nii.gz) and draw the mask on that grid")
    stack, _ = stack_hu(assembled)
    return stack, assembled.grid


def _check_same_grid(image: Grid, mask: Grid, where: str, atol_mm: float, direction_atol: float) -> None:
    problems = []
    if tuple(image.shape_zyx) != tuple(mask.shape_zyx):
        problems.append(f"shape_zyx {mask.shape_zyx} vs image {image.shape_zyx}")
    for name in ("spacing_zyx_mm", "origin_xyz_mm"):
        a, b = np.asarray(getattr(image, name)), np.asarray(getattr(mask, name))
        worst = float(np.abs(a - b).max())
        if not worst <= atol_mm:
            problems.append(f"{name} {tuple(round(float(v), 6) for v in b)} vs image "
                            f"{tuple(round(float(v), 6) for v in a)} (max diff {worst:.3g} mm > {atol_mm:g})")
    worst = float(np.abs(image.matrix - mask.matrix).max())
    if not worst <= direction_atol:
        problems.append(f"direction {mask.direction} vs image {image.direction} (max diff {worst:.3g} > "
                        f"{direction_atol:g})")
    if problems:
        raise RadiomicsInputError(f"{where}: the mask is not on the image grid: " + "; ".join(problems),
                                  code="MASK_GEOMETRY_MISMATCH",
                                  hint="resample the mask onto the image grid (nearest neighbour) before "
                                       "extraction; radiomics here does not resample")


def load_case(image: str | Path, mask: str | Path, *, label: int = 1, series_instance_uid: str | None = None,
              geometry_atol_mm: float = 1e-3, direction_atol: float = 1e-4) -> LoadedCase:
    """Image (NIfTI/NRRD file, or DICOM series folder) and mask (NIfTI/NRRD file on the same grid) →
    ``LoadedCase(image_zyx float64, mask_zyx bool = (mask == label), spacing_zyx_mm, grid)``.

    label: the mask value of the ROI (default 1, as PyRadiomics); any other value is background.
    series_instance_uid: which series when the DICOM folder holds several (None: it must hold one).
    geometry_atol_mm / direction_atol: how far the mask's spacing and origin (mm) and direction
    cosines may be from the image's. Raises :class:`RadiomicsInputError` (code says why) or
    :class:`ctlake.imaging.series.SeriesRejected` for a DICOM series refused by its QC."""
    image, mask = Path(image), Path(mask)
    if image.is_dir():
        array, grid = read_dicom_series(image, series_instance_uid=series_instance_uid)
    else:
        array, grid = read_image_file(image)
    labels, mask_grid = read_image_file(mask)
    _check_same_grid(grid, mask_grid, f"{mask} on {image}", geometry_atol_mm, direction_atol)
    if labels.dtype.kind == "f":
        odd = labels[~np.isfinite(labels) | (labels != np.round(labels))]
        if odd.size:
            raise RadiomicsInputError(f"{mask}: {odd.size} non-integer mask values (e.g. {odd[:3].tolist()})",
                                      code="NOT_A_LABEL_MAP", hint="threshold a probability map into labels first")
    elif labels.dtype.kind not in "biu":
        raise RadiomicsInputError(f"{mask}: voxel type {labels.dtype} is not a label map", code="NOT_A_LABEL_MAP")
    roi = labels == label
    if not roi.any():
        present = np.unique(labels)
        raise RadiomicsInputError(f"{mask}: no voxel has label {label}", code="EMPTY_ROI",
                                  hint=f"labels present: {present[:20].tolist()}{' ...' if len(present) > 20 else ''}")
    return LoadedCase(np.asarray(array, dtype=np.float64), roi, grid.spacing_zyx_mm, grid)
