"""One CT series → a geometry-checked, HU-calibrated, clipped, resampled volume (pure, no Spark).

    datasets → slice infos → assemble_series (QC flags, policy) → stack HU → clip → resample

This is what ``ctlake volume`` does for one folder and what the Spark job does per series.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import Dataset

from ctlake.imaging.grid import Grid
from ctlake.imaging.resample import DEFAULT_WINDOW_HU, output_grid, resample_onto, resample_to_spacing
from ctlake.imaging.series import AssembledSeries, SeriesPolicy, assemble_series, slice_infos, stack_hu


@dataclass(frozen=True)
class Volume:
    """A resampled HU volume: ``array`` (z, y, x) on ``grid``; the series it came from."""

    array: np.ndarray
    grid: Grid
    series: AssembledSeries
    window_hu: tuple[float, float] | None
    spacing_zyx_mm: tuple[float, float, float]


def build_volume(datasets: Iterable[Dataset], *, spacing_zyx_mm: tuple[float, float, float] = (1.0, 1.0, 1.0),
                 window_hu: tuple[float, float] | None = DEFAULT_WINDOW_HU, order: int = 1,
                 policy: SeriesPolicy | None = None, out_dtype=np.int16,
                 tolerances: Mapping[str, float] | None = None) -> Volume:
    """Assemble ``datasets`` (one series, read with pixel data) and resample it.

    policy / tolerances: what to do about each QC flag and when a flag is raised (fields of
    :class:`~ctlake.imaging.series.SeriesPolicy` / ``SeriesTolerances``; config ``imaging.series``).
    Raises :class:`ctlake.imaging.series.SeriesRejected` when a QC flag's policy is ``refuse``.
    A stack whose planes are not the grid's (gap, uneven steps, gantry tilt) is resampled from the
    true slice positions, never by assuming a regular spacing.
    """
    infos = [info for ds in datasets for info in slice_infos(ds)]
    assembled = assemble_series(infos, policy or SeriesPolicy(), **dict(tolerances or {}))
    stack, positions = stack_hu(assembled)
    if not assembled.needs_resampling:
        arr, grid = resample_to_spacing(stack, assembled.grid, spacing_zyx_mm, order=order, window_hu=window_hu,
                                        out_dtype=out_dtype)
    else:
        source = Grid(stack.shape, assembled.grid.spacing_zyx_mm, tuple(float(v) for v in positions[0]),
                      assembled.grid.direction)
        grid = output_grid(assembled.grid, spacing_zyx_mm)
        arr = resample_onto(stack, source, grid, order=order, window_hu=window_hu, out_dtype=out_dtype,
                            slice_positions_xyz_mm=positions)
    return Volume(arr, grid, assembled, window_hu, tuple(spacing_zyx_mm))


def read_series_folder(folder: Path) -> list[Dataset]:
    """Every DICOM file under ``folder`` (recursive), read with pixels; non-DICOM files are skipped."""
    from ctlake.dicom.reader import read_dicom_file
    from ctlake.errors import DicomError

    out = []
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        try:
            out.append(read_dicom_file(path))
        except DicomError:
            continue
    return out


def write_volume(volume: Volume, path: Path) -> Path:
    """Write ``volume`` as NIfTI (.nii, .nii.gz) or NRRD (.nrrd) with its full geometry."""
    import SimpleITK as sitk

    path = Path(path)
    if not (path.name.endswith((".nii", ".nii.gz", ".nrrd"))):
        raise ValueError(f"{path}: write .nii, .nii.gz or .nrrd")
    img = sitk.GetImageFromArray(volume.array)
    img.SetSpacing(volume.grid.spacing_xyz_mm)
    img.SetOrigin(volume.grid.origin_xyz_mm)
    img.SetDirection(volume.grid.direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path), useCompression=True)
    return path
