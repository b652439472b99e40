r"""Series assembly: from DICOM instances to one sorted stack of slices, its QC flags and the
Grid a resampler fills.

Pure (numpy, pydicom through :mod:`ctlake.dicom`); no Spark. The Spark job builds
:class:`SliceInfo` rows from bronze columns (:func:`slice_info_from_summary`, no pixels needed)
and calls :func:`assemble_series` per series; notebooks pass pydicom Datasets directly.

Geometry (DICOM PS3.3 C.7.6.2.1.1), patient LPS coordinates in mm, written ``_xyz``:

    row cosine r   = ImageOrientationPatient[0:3]  (direction of increasing column index, x)
    column cosine c = ImageOrientationPatient[3:6] (direction of increasing row index, y)
    normal n       = r × c                           (slice stacking direction of the Grid)
    depth d_k      = ImagePositionPatient_k · n      (slices are sorted by d, ascending)
    in-plane offset v_k = (P_k - P_0) - (d_k - d_0) n   (0 for an orthogonal stack)
    world(i, j, k) = P_k + i · col_spacing · r + j · row_spacing · c

so the target :class:`~ctlake.imaging.grid.Grid` has direction columns (r, c, n) and
``spacing_zyx_mm = (slice step, PixelSpacing[0] (rows, y), PixelSpacing[1] (columns, x))``.

QC flags (:data:`FLAGS`, in the order a refusal reports them), what they measure and the
default policy (:class:`SeriesPolicy`):

=====================  ======================================================  ===============
flag                   raised when                                             default policy
=====================  ======================================================  ===============
NOT_CT                 Modality != CT, or a SOP class that is not CT Image /   refuse
                       Enhanced CT / Legacy Converted Enhanced CT (e.g. a
                       secondary capture that claims Modality CT)
MISSING_GEOMETRY       a slice lacks Image Position / Orientation (Patient),   refuse (only)
                       Pixel Spacing, Rows or Columns, or its orientation is
                       not two unit cosines at right angles (within 1e-3)
MIXED_GEOMETRY         rows, columns, pixel spacing (``pixel_spacing_atol_mm``) split
                       or orientation (``orientation_atol``) differ
DUPLICATE_POSITIONS    two slices at the same depth (``position_atol_mm``)     drop_identical
MISSING_SLICES         a step ≈ m × the median step, m >= 2 (within            refuse
                       ``spacing_rtol``): m - 1 slices are missing
UNEVEN_SPACING         a step differs from the median by more than             resample
                       ``spacing_rtol`` and is not a clean gap, or a slice
                       lies more than ``spacing_rtol`` × step off the regular
                       grid through the first and last slice
GANTRY_TILT            |GantryDetectorTilt| > ``tilt_atol_deg``                resample
NON_ORTHOGONAL         a slice's in-plane offset v_k exceeds                   resample
                       ``position_atol_mm`` (a sheared stack: gantry tilt
                       written as shifted positions with an axial orientation)
NOT_AXIAL              the normal is more than ``axial_max_angle_deg`` from    refuse
                       the patient z axis (coronal/sagittal reformat)
TOO_FEW_SLICES         fewer than ``min_slices`` distinct positions            refuse
=====================  ======================================================  ===============

Steps are measured between distinct depths (duplicates collapsed) against their median, so
with very few slices a gap is ambiguous: steps (1, 2) have median 1.5 and read as
UNEVEN_SPACING, not MISSING_SLICES. A regular target grid spans the first to the last slice
exactly, with ``round(extent / median)`` intervals: its step is the median step, adjusted by
less than half a step over the whole extent (for a clean series: the mean step).

Why these defaults: none of them ever lets a distorted volume through silently. A flagged
series is refused, split into consistent parts, or gets a regular target Grid at the exact
source positions (``resample``: the source planes are reported by
:func:`source_slice_positions_xyz_mm`, the resampler interpolates) — and the flag and the
decision stay on the result for ``silver.ct_series``.

* MISSING_SLICES refuses by default: a missing slice is nearly always an instance lost on the
  way (a failed C-STORE, a file quarantined in bronze as truncated or corrupt) that a re-send
  repairs; interpolating across it would yield a volume that looks complete but lacks the
  anatomy of that slice (a small nodule can sit in one 1 mm slice). Opt in with
  ``missing_slices="resample"`` where a gap is acceptable.
* UNEVEN_SPACING and the tilt flags resample by default: the positions are exact, so a
  regular grid at the median step (or an axis-aligned grid for a sheared stack) filled by
  interpolation places every voxel where it belongs.
* DUPLICATE_POSITIONS drops the copies only when their pixels are identical (a re-sent
  instance under a new SOP Instance UID); different pixels at one position are two
  reconstructions in one series and are refused unless the policy says ``split``.
* MIXED_GEOMETRY splits: a localizer or a second matrix size in the series becomes its own
  part (the largest accepted part is the main result, the others are ``split_off``).
* NOT_AXIAL refuses: chest CT reformats (coronal/sagittal MPR) are derived copies of an axial
  series of the same study; ``not_axial="resample"`` gives them a patient-aligned grid.
  30 degrees lets a gantry-tilted series whose orientation itself is oblique through.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydicom.dataset import Dataset

from ctlake.dicom.flatten import flatten
from ctlake.dicom.reader import frame_geometry, hounsfield, is_enhanced
from ctlake.errors import ConfigError, CtlakeError
from ctlake.imaging.grid import Grid

__all__ = [
    "CT_SOP_CLASSES",
    "FLAGS",
    "AssembledSeries",
    "SeriesPolicy",
    "SeriesQC",
    "SeriesRejected",
    "SeriesTolerances",
    "SliceInfo",
    "assemble_instances",
    "assemble_series",
    "group_by_series",
    "series_qc",
    "slice_info",
    "slice_info_from_summary",
    "slice_infos",
    "source_slice_index_zyx",
    "source_slice_positions_xyz_mm",
    "stack_hu",
]

#: CT Image Storage, Enhanced CT Image Storage, Legacy Converted Enhanced CT Image Storage.
CT_SOP_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2"})

#: Every QC flag, in the order a refusal reports them (the first refused one is the code).
FLAGS = (
    "NOT_CT",
    "MISSING_GEOMETRY",
    "MIXED_GEOMETRY",
    "DUPLICATE_POSITIONS",
    "MISSING_SLICES",
    "UNEVEN_SPACING",
    "GANTRY_TILT",
    "NON_ORTHOGONAL",
    "NOT_AXIAL",
    "TOO_FEW_SLICES",
)
#: Flags whose ``resample`` decision means the source planes are not the Grid's planes.
_RESAMPLING_FLAGS = ("MISSING_SLICES", "UNEVEN_SPACING", "NON_ORTHOGONAL", "NOT_AXIAL")

_HINTS = {
    "NOT_CT": "only CT Image Storage / Enhanced CT instances with Modality CT become CT volumes; MR, PET and "
    "secondary captures (screen saves) are kept in bronze but not assembled",
    "MISSING_GEOMETRY": "Image Position/Orientation (Patient) or Pixel Spacing is missing (a secondary capture, "
    "a localizer or a stripped header); re-export the series with its Image Plane module",
    "MIXED_GEOMETRY": "the series mixes matrix sizes, pixel spacings or orientations (a localizer or a second "
    "reconstruction); imaging.series.policy.mixed_geometry: split assembles each consistent part",
    "DUPLICATE_POSITIONS": "two reconstructions interleaved in one series, or a re-sent instance with other "
    "pixels: imaging.series.policy.duplicate_positions: split keeps each as a part, drop_duplicates keeps the "
    "lowest instance number",
    "MISSING_SLICES": "an instance was lost on the way: look for this series in bronze.quarantine and re-send "
    "it, or set imaging.series.policy.missing_slices: resample to interpolate across the gap",
    "UNEVEN_SPACING": "look for two reconstructions in one series before setting "
    "imaging.series.policy.uneven_spacing: resample or raising imaging.series.spacing_rtol",
    "GANTRY_TILT": "set imaging.series.policy.gantry_tilt: resample: the Grid is axis-aligned and the tilted "
    "planes are resampled onto it",
    "NON_ORTHOGONAL": "the slice positions shear (gantry tilt written as shifted positions); set "
    "imaging.series.policy.non_orthogonal: resample to resample onto an axis-aligned grid",
    "NOT_AXIAL": "a coronal/sagittal reformat; the axial series of the same study is usually there too, or set "
    "imaging.series.policy.not_axial: resample to resample onto a patient-aligned grid",
    "TOO_FEW_SLICES": "a localizer, a key image or a series still arriving; wait for the rest or lower "
    "imaging.series.min_slices",
}


class SeriesRejected(CtlakeError):
    """A series (or one part of it) that cannot become a volume under the policy in force.

    ``code``: the first refused flag of :data:`FLAGS` (or MULTIPLE_SERIES, EMPTY_SERIES,
    PIXEL_SHAPE_MISMATCH, NO_PIXELS), fit for ``bronze.quarantine.error_code`` /
    ``silver.ct_series``. ``detail``: the measured facts. ``refused``: every refused flag.
    ``qc``: the full :class:`SeriesQC` when it could be measured. ``sop_instance_uids``: the
    instances concerned. ``part``: the part of a split series (None for a whole series).
    """

    code = "SERIES_REJECTED"

    def __init__(
        self,
        *,
        code: str,
        detail: str,
        hint: str | None = None,
        series_instance_uid: str | None = None,
        qc: SeriesQC | None = None,
        refused: tuple[str, ...] = (),
        sop_instance_uids: tuple[str, ...] = (),
        part: int | None = None,
    ) -> None:
        where = f"series {series_instance_uid}" if series_instance_uid else "series"
        if part is not None:
            where += f" part {part}"
        super().__init__(f"{where}: {code}: {detail}", code=code, hint=hint)
        self.detail = detail
        self.series_instance_uid = series_instance_uid
        self.qc = qc
        self.refused = refused or (code,)
        self.sop_instance_uids = sop_instance_uids
        self.part = part

    def __reduce__(self) -> tuple[Any, ...]:
        """Picklable (worker processes hand refusals back) despite the keyword-only __init__."""
        state = {
            "code": self.code,
            "detail": self.detail,
            "hint": self.hint,
            "series_instance_uid": self.series_instance_uid,
            "qc": self.qc,
            "refused": self.refused,
            "sop_instance_uids": self.sop_instance_uids,
            "part": self.part,
        }
        return (_rejected_from, (state,))


def _rejected_from(state: dict[str, Any]) -> SeriesRejected:
    return SeriesRejected(**state)


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SliceInfo:
    """One image plane (a single-frame instance, or one frame of a multi-frame one), light
    enough to build from bronze columns without pixels.

    pixel_spacing_yx_mm: PixelSpacing (row spacing = y, column spacing = x), mm.
    position_xyz_mm: ImagePositionPatient, LPS mm, centre of the first pixel.
    orientation: ImageOrientationPatient, row cosine then column cosine (6 numbers).
    gantry_tilt_deg: GantryDetectorTilt (None when absent).
    frame_index: 0-based frame within the instance.
    pixel_digest: any digest of the stored pixel values (equal digests = identical pixels).
    pixels: returns the HU plane ``(rows, cols)`` (float); not compared, not printed.
    """

    sop_instance_uid: str
    series_instance_uid: str
    modality: str | None
    sop_class_uid: str | None
    rows: int | None
    columns: int | None
    pixel_spacing_yx_mm: tuple[float, float] | None
    position_xyz_mm: tuple[float, float, float] | None
    orientation: tuple[float, float, float, float, float, float] | None
    slice_thickness_mm: float | None = None
    gantry_tilt_deg: float | None = None
    instance_number: int | None = None
    frame_index: int = 0
    pixel_digest: str | None = None
    pixels: Callable[[], np.ndarray] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name, n in (("pixel_spacing_yx_mm", 2), ("position_xyz_mm", 3), ("orientation", 6)):
            value = getattr(self, name)
            if value is None:
                continue
            vec = tuple(float(v) for v in value)
            if len(vec) != n or not all(math.isfinite(v) for v in vec):
                raise ValueError(f"SliceInfo.{name}: expected {n} finite numbers, got {value!r}")
            object.__setattr__(self, name, vec)
        if self.pixel_spacing_yx_mm is not None and min(self.pixel_spacing_yx_mm) <= 0:
            raise ValueError(f"SliceInfo.pixel_spacing_yx_mm must be > 0, got {self.pixel_spacing_yx_mm}")

    @property
    def has_geometry(self) -> bool:
        """Rows, columns, pixel spacing, position and a usable orientation (two unit cosines at
        right angles, within 1e-3) are all there."""
        if None in (self.rows, self.columns, self.pixel_spacing_yx_mm, self.position_xyz_mm, self.orientation):
            return False
        ori = np.asarray(self.orientation, dtype=np.float64)
        r, c = ori[:3], ori[3:]
        return bool(
            abs(np.linalg.norm(r) - 1) < 1e-3 and abs(np.linalg.norm(c) - 1) < 1e-3 and abs(float(r @ c)) < 1e-3
        )

    @property
    def sort_key(self) -> tuple[int, str, int]:
        """Tie-break between slices at one depth: instance number, SOP UID, frame."""
        n = self.instance_number if self.instance_number is not None else 2**62
        return (n, self.sop_instance_uid, self.frame_index)


_HEADER_KEYWORDS = (
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "SOPClassUID",
    "Rows",
    "Columns",
    "InstanceNumber",
    "GantryDetectorTilt",
)


class _HuOnce:
    """Decodes an instance's HU frames on use. A multi-frame instance's frames are kept after
    the first call (one decode per instance); a single frame is not, so a stacked series does
    not hold every plane twice (the stack and this cache: 4 bytes per voxel more at the peak)."""

    def __init__(self, ds: Dataset) -> None:
        self._ds = ds
        self._hu: np.ndarray | None = None

    def frame(self, index: int) -> np.ndarray:
        if self._hu is not None:
            return self._hu[index]
        hu = hounsfield(self._ds)
        if hu.shape[0] > 1:
            self._hu = hu
        return hu[index]


def _gantry_tilt_deg(ds: Dataset, top_level: float | None) -> float | None:
    if top_level is not None or not is_enhanced(ds):
        return top_level
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        items = ds.get(groups) or []
        inner = (items[0].get("CTAcquisitionDetailsSequence") or []) if items else []
        if inner:
            value = flatten(inner[0], ["GantryDetectorTilt"])["GantryDetectorTilt"]
            if value is not None:
                return float(value)
    return None


def slice_infos(ds: Dataset) -> list[SliceInfo]:
    """One :class:`SliceInfo` per frame of ``ds`` (geometry from
    :func:`~ctlake.dicom.reader.frame_geometry`, so enhanced CT gives every frame its own
    position); ``pixels`` decodes HU on first call (once per instance). Raises DicomError
    BAD_VALUE for unusable geometry values, as frame_geometry does."""
    row = flatten(ds, list(_HEADER_KEYWORDS))
    hu = _HuOnce(ds)
    tilt = _gantry_tilt_deg(ds, row["GantryDetectorTilt"])
    out = []
    for g in frame_geometry(ds):
        out.append(
            SliceInfo(
                sop_instance_uid=row["SOPInstanceUID"] or "",
                series_instance_uid=row["SeriesInstanceUID"] or "",
                modality=row["Modality"],
                sop_class_uid=row["SOPClassUID"],
                rows=row["Rows"],
                columns=row["Columns"],
                pixel_spacing_yx_mm=g.pixel_spacing_yx_mm,
                position_xyz_mm=g.position_xyz_mm,
                orientation=g.orientation,
                slice_thickness_mm=g.slice_thickness_mm,
                gantry_tilt_deg=tilt,
                instance_number=row["InstanceNumber"],
                frame_index=g.index,
                pixels=lambda i=g.index: hu.frame(i),
            )
        )
    return out


def slice_info(ds: Dataset) -> SliceInfo:
    """:func:`slice_infos` of a single-frame instance; ValueError for a multi-frame one."""
    infos = slice_infos(ds)
    if len(infos) != 1:
        raise ValueError(f"{len(infos)} frames: use slice_infos() for multi-frame instances")
    return infos[0]


def slice_info_from_summary(
    row: Mapping[str, Any],
    *,
    gantry_tilt_deg: float | None = None,
    pixel_digest: str | None = None,
    pixels: Callable[[], np.ndarray] | None = None,
) -> SliceInfo:
    """A :class:`SliceInfo` from the columns of ``bronze.dicom_instances``
    (:func:`ctlake.dicom.flatten.instance_summary` keys: sop_instance_uid, series_instance_uid,
    modality, sop_class_uid, rows, columns, pixel_spacing_mm, image_position_patient_mm,
    image_orientation_patient, slice_thickness_mm, instance_number, number_of_frames).
    A multi-frame row (number_of_frames > 1) has only frame 0's geometry: ValueError; parse
    its header and use :func:`slice_infos`."""
    frames = row.get("number_of_frames") or 1
    if frames > 1:
        raise ValueError(f"{row.get('sop_instance_uid')}: {frames} frames; use slice_infos() on the header")

    def vec(key: str) -> tuple[float, ...] | None:
        v = row.get(key)
        return None if v is None or any(x is None for x in v) else tuple(float(x) for x in v)

    return SliceInfo(
        sop_instance_uid=row["sop_instance_uid"],
        series_instance_uid=row["series_instance_uid"],
        modality=row.get("modality"),
        sop_class_uid=row.get("sop_class_uid"),
        rows=row.get("rows"),
        columns=row.get("columns"),
        pixel_spacing_yx_mm=vec("pixel_spacing_mm"),  # type: ignore[arg-type]
        position_xyz_mm=vec("image_position_patient_mm"),  # type: ignore[arg-type]
        orientation=vec("image_orientation_patient"),  # type: ignore[arg-type]
        slice_thickness_mm=row.get("slice_thickness_mm"),
        gantry_tilt_deg=gantry_tilt_deg,
        instance_number=row.get("instance_number"),
        pixel_digest=pixel_digest,
        pixels=pixels,
    )


def _as_slice_infos(instances: Iterable[SliceInfo | Dataset]) -> list[SliceInfo]:
    out: list[SliceInfo] = []
    for item in instances:
        if isinstance(item, SliceInfo):
            out.append(item)
        elif isinstance(item, Dataset):
            out.extend(slice_infos(item))
        else:
            raise TypeError(f"expected SliceInfo or pydicom Dataset, got {type(item).__name__}")
    return out


def group_by_series(instances: Iterable[SliceInfo | Dataset]) -> dict[str, list[SliceInfo]]:
    """Slices by Series Instance UID, in input order (Datasets expanded frame by frame)."""
    groups: dict[str, list[SliceInfo]] = {}
    for s in _as_slice_infos(instances):
        groups.setdefault(s.series_instance_uid, []).append(s)
    return groups


# --------------------------------------------------------------------------------------------
# Policy and tolerances
# --------------------------------------------------------------------------------------------
_POLICY_CHOICES: dict[str, tuple[str, ...]] = {
    "not_ct": ("refuse", "keep"),
    "missing_geometry": ("refuse",),
    "mixed_geometry": ("split", "refuse"),
    "duplicate_positions": ("drop_identical", "drop_duplicates", "split", "refuse"),
    "missing_slices": ("refuse", "resample"),
    "uneven_spacing": ("resample", "refuse"),
    "gantry_tilt": ("resample", "refuse"),
    "non_orthogonal": ("resample", "refuse"),
    "not_axial": ("refuse", "resample"),
    "too_few_slices": ("refuse", "keep"),
}


@dataclass(frozen=True)
class SeriesPolicy:
    """What to do about each QC flag (field = flag in lower case). See the module docstring
    for why the defaults are safe.

    refuse: raise :class:`SeriesRejected`. resample: a regular target Grid at the true
    positions; the resampler interpolates. split: each consistent part becomes its own volume.
    drop_duplicates: keep the lowest instance number at each position. drop_identical: the
    same, when the copies' pixels are identical (``pixel_digest``, else ``pixels()``);
    otherwise refuse. keep: assemble as is, flag recorded (NOT_CT: geometry only, no HU
    meaning; TOO_FEW_SLICES: a thin stack).
    """

    not_ct: Literal["refuse", "keep"] = "refuse"
    missing_geometry: Literal["refuse"] = "refuse"
    mixed_geometry: Literal["split", "refuse"] = "split"
    duplicate_positions: Literal["drop_identical", "drop_duplicates", "split", "refuse"] = "drop_identical"
    missing_slices: Literal["refuse", "resample"] = "refuse"
    uneven_spacing: Literal["resample", "refuse"] = "resample"
    gantry_tilt: Literal["resample", "refuse"] = "resample"
    non_orthogonal: Literal["resample", "refuse"] = "resample"
    not_axial: Literal["refuse", "resample"] = "refuse"
    too_few_slices: Literal["refuse", "keep"] = "refuse"

    def __post_init__(self) -> None:
        for name, choices in _POLICY_CHOICES.items():
            value = getattr(self, name)
            if value not in choices:
                raise ConfigError(
                    f"imaging.series.policy.{name}: {value!r} is not one of {', '.join(choices)}",
                    hint="fix it in conf/<profile>.yaml",
                )

    @classmethod
    def from_mapping(cls, values: Mapping[str, str]) -> SeriesPolicy:
        """From a YAML mapping; an unknown key is an error that names it."""
        unknown = sorted(set(values) - set(_POLICY_CHOICES))
        if unknown:
            raise ConfigError(
                f"imaging.series.policy: unknown key(s) {', '.join(unknown)}; known: {', '.join(_POLICY_CHOICES)}"
            )
        return cls(**dict(values))

    def action(self, flag: str) -> str:
        return str(getattr(self, flag.lower()))


@dataclass(frozen=True)
class SeriesTolerances:
    """How far measured geometry may stray before a flag is raised.

    position_atol_mm: two slices closer than this along the normal are at one position
        (DUPLICATE_POSITIONS); an in-plane offset above it is a shear (NON_ORTHOGONAL).
    spacing_rtol: a step within ±rtol × median step is regular; a step within rtol of
        m × median (m >= 2) is a clean gap (MISSING_SLICES); a slice more than rtol × step
        off the regular grid is UNEVEN_SPACING.
    orientation_atol: largest difference of any direction cosine within one geometry.
    pixel_spacing_atol_mm: largest pixel spacing difference within one geometry.
    tilt_atol_deg: |GantryDetectorTilt| above this is GANTRY_TILT.
    axial_max_angle_deg: normal further than this from the patient z axis is NOT_AXIAL.
    min_slices: fewer distinct positions is TOO_FEW_SLICES.
    """

    position_atol_mm: float = 0.01
    spacing_rtol: float = 0.1
    orientation_atol: float = 1e-4
    pixel_spacing_atol_mm: float = 1e-3
    tilt_atol_deg: float = 0.01
    axial_max_angle_deg: float = 30.0
    min_slices: int = 3

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ConfigError(f"imaging.series.{f.name}: {value!r} must be a number >= 0")
        if not 0 < self.spacing_rtol < 0.5:
            raise ConfigError(f"imaging.series.spacing_rtol: {self.spacing_rtol} must be in (0, 0.5)")
        if not isinstance(self.min_slices, int) or self.min_slices < 1:
            raise ConfigError(f"imaging.series.min_slices: {self.min_slices!r} must be an integer >= 1")


# --------------------------------------------------------------------------------------------
# QC
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SeriesQC:
    """Flags (booleans, one per :data:`FLAGS` entry) and the facts they were measured from.

    Stack facts describe the slices assessed: the whole series, or for a series with mixed
    geometry its largest consistent group; None where they cannot be measured (missing
    geometry). Indices refer to the slices sorted along the normal: ``steps_mm[i]`` is the
    step from distinct position i to i + 1; ``gap_after`` / ``uneven_after`` list such i;
    ``duplicate_groups`` lists groups of sorted indices (all slices, before dropping).
    ``split_by``: the flags of the whole series that made this a part of it.
    """

    series_instance_uid: str
    n_instances: int
    n_slices: int
    not_ct: bool = False
    missing_geometry: bool = False
    mixed_geometry: bool = False
    duplicate_positions: bool = False
    missing_slices: bool = False
    uneven_spacing: bool = False
    gantry_tilt: bool = False
    non_orthogonal: bool = False
    not_axial: bool = False
    too_few_slices: bool = False
    modalities: tuple[str, ...] = ()
    sop_class_uids: tuple[str, ...] = ()
    geometry_groups: tuple[dict[str, Any], ...] = ()
    steps_mm: tuple[float, ...] = ()
    median_step_mm: float | None = None
    min_step_mm: float | None = None
    max_step_mm: float | None = None
    gap_after: tuple[int, ...] = ()
    missing_slice_count: int = 0
    uneven_after: tuple[int, ...] = ()
    max_grid_offset_mm: float | None = None
    duplicate_groups: tuple[tuple[int, ...], ...] = ()
    gantry_tilt_deg: float | None = None
    shear_yx: tuple[float, float] | None = None
    stack_angle_deg: float | None = None
    max_inplane_offset_mm: float | None = None
    normal_xyz: tuple[float, float, float] | None = None
    normal_angle_to_z_deg: float | None = None
    extent_mm: float | None = None
    split_by: tuple[str, ...] = ()

    @property
    def flags(self) -> tuple[str, ...]:
        """The raised flags, in :data:`FLAGS` order."""
        return tuple(f for f in FLAGS if getattr(self, f.lower()))

    @property
    def ok(self) -> bool:
        return not self.flags

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (lists for tuples) plus ``flags``; for ``silver.ct_series``."""

        def plain(v: Any) -> Any:
            if isinstance(v, tuple | list):
                return [plain(x) for x in v]
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            return v

        out = {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        out["flags"] = list(self.flags)
        return out


@dataclass(frozen=True)
class _Stack:
    """The geometric measurement of one consistent group (internal)."""

    order: list[int]  # indices into the group, sorted along the normal
    depth_mm: np.ndarray  # depth of each sorted slice
    unique: list[int]  # positions in ``order`` of the first slice at each distinct depth
    duplicate_groups: list[list[int]]  # positions in ``order``
    row: np.ndarray
    col: np.ndarray
    normal: np.ndarray
    step_grid_mm: float | None
    n_grid: int
    inplane_yx_mm: np.ndarray  # (n_unique, 2) offset of each distinct slice from the first


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def _geometry_groups(slices: Sequence[SliceInfo], tol: SeriesTolerances) -> list[list[int]]:
    groups: list[list[int]] = []
    for i, s in enumerate(slices):
        for g in groups:
            ref = slices[g[0]]
            if (
                (s.rows, s.columns) == (ref.rows, ref.columns)
                and np.allclose(s.pixel_spacing_yx_mm, ref.pixel_spacing_yx_mm, rtol=0, atol=tol.pixel_spacing_atol_mm)
                and np.allclose(s.orientation, ref.orientation, rtol=0, atol=tol.orientation_atol)
            ):
                g.append(i)
                break
        else:
            groups.append([i])
    groups.sort(key=lambda g: (-len(g), min(slices[i].sort_key for i in g)))
    return groups


def _measure_stack(slices: Sequence[SliceInfo], tol: SeriesTolerances) -> _Stack:
    ori = np.asarray(slices[0].orientation, dtype=np.float64)
    row = _unit(ori[:3])
    col = _unit(ori[3:] - (ori[3:] @ row) * row)  # exactly orthogonal (has_geometry bounds the change)
    normal = _unit(np.cross(row, col))
    pos = np.asarray([s.position_xyz_mm for s in slices], dtype=np.float64)
    depth = pos @ normal
    order = sorted(range(len(slices)), key=lambda i: (depth[i], slices[i].sort_key))
    d = depth[order]
    unique: list[int] = [0]
    dup: list[list[int]] = []
    for k in range(1, len(order)):
        if d[k] - d[unique[-1]] <= tol.position_atol_mm:
            if dup and dup[-1][0] == unique[-1]:
                dup[-1].append(k)
            else:
                dup.append([unique[-1], k])
        else:
            unique.append(k)
    du = d[unique]
    rel = du - du[0]
    step_grid = None
    n_grid = len(unique)
    if len(unique) > 1:
        steps = np.diff(du)
        median = float(np.median(steps))
        intervals = max(1, int(round(rel[-1] / median)))
        step_grid = float(rel[-1] / intervals)
        n_grid = intervals + 1
    p = pos[order][unique]
    v = (p - p[0]) - np.outer(rel, normal)
    inplane = np.stack([v @ col, v @ row], axis=1)  # (y, x) in the image frame
    return _Stack(order, d, unique, dup, row, col, normal, step_grid, n_grid, inplane)


def _measure(
    slices: Sequence[SliceInfo], tol: SeriesTolerances, split_by: tuple[str, ...] = ()
) -> tuple[SeriesQC, list[list[int]], _Stack | None]:
    uid = slices[0].series_instance_uid if slices else ""
    modalities = tuple(sorted({s.modality or "" for s in slices}))
    classes = tuple(sorted({s.sop_class_uid or "" for s in slices}))
    not_ct = any(
        (s.modality is not None and s.modality.upper() != "CT")
        or (s.sop_class_uid is not None and s.sop_class_uid not in CT_SOP_CLASSES)
        or (s.modality is None and s.sop_class_uid is None)
        for s in slices
    )
    tilts = [s.gantry_tilt_deg for s in slices if s.gantry_tilt_deg is not None]
    tilt = max(tilts, key=abs) if tilts else None
    facts: dict[str, Any] = {
        "series_instance_uid": uid,
        "n_instances": len(slices),
        "not_ct": not_ct,
        "modalities": modalities,
        "sop_class_uids": classes,
        "gantry_tilt_deg": tilt,
        "gantry_tilt": tilt is not None and abs(tilt) > tol.tilt_atol_deg,
        "split_by": split_by,
    }
    for flag in split_by:
        facts[flag.lower()] = True
    if not slices or not all(s.has_geometry for s in slices):
        n = len({(s.sop_instance_uid, s.frame_index) for s in slices})
        facts.update(missing_geometry=True, n_slices=n, too_few_slices=n < tol.min_slices)
        return SeriesQC(**facts), [list(range(len(slices)))], None
    groups = _geometry_groups(slices, tol)
    facts["geometry_groups"] = tuple(
        {
            "rows": slices[g[0]].rows,
            "columns": slices[g[0]].columns,
            "pixel_spacing_yx_mm": slices[g[0]].pixel_spacing_yx_mm,
            "orientation": slices[g[0]].orientation,
            "n_slices": len(g),
        }
        for g in groups
    )
    if len(groups) > 1:
        facts["mixed_geometry"] = True
    main = [slices[i] for i in groups[0]]
    st = _measure_stack(main, tol)
    n_unique = len(st.unique)
    du = st.depth_mm[st.unique]
    facts.update(
        n_slices=n_unique,
        duplicate_groups=tuple(tuple(g) for g in st.duplicate_groups),
        normal_xyz=tuple(float(x) for x in st.normal),
        normal_angle_to_z_deg=float(np.degrees(np.arccos(min(1.0, abs(float(st.normal[2])))))),
        extent_mm=float(du[-1] - du[0]),
        too_few_slices=n_unique < tol.min_slices,
    )
    if st.duplicate_groups:
        facts["duplicate_positions"] = True
    if facts["normal_angle_to_z_deg"] > tol.axial_max_angle_deg:
        facts["not_axial"] = True
    if n_unique > 1:
        steps = np.diff(du)
        median = float(np.median(steps))
        ratio = steps / median
        multiple = np.rint(ratio)
        gap = (multiple >= 2) & (np.abs(ratio - multiple) <= tol.spacing_rtol)
        uneven = (np.abs(ratio - 1.0) > tol.spacing_rtol) & ~gap
        rel = du - du[0]
        assert st.step_grid_mm is not None
        off = np.abs(rel - np.rint(rel / st.step_grid_mm) * st.step_grid_mm)
        max_off = float(off.max())
        inplane_norm = np.linalg.norm(st.inplane_yx_mm, axis=1)
        denom = float(rel @ rel)
        shear = (st.inplane_yx_mm.T @ rel) / denom if denom > 0 else np.zeros(2)
        facts.update(
            steps_mm=tuple(float(s) for s in steps),
            median_step_mm=median,
            min_step_mm=float(steps.min()),
            max_step_mm=float(steps.max()),
            gap_after=tuple(int(i) for i in np.flatnonzero(gap)),
            missing_slice_count=int((multiple[gap] - 1).sum()),
            uneven_after=tuple(int(i) for i in np.flatnonzero(uneven)),
            max_grid_offset_mm=max_off,
            shear_yx=(float(shear[0]), float(shear[1])),
            stack_angle_deg=float(np.degrees(np.arctan(np.linalg.norm(shear)))),
            max_inplane_offset_mm=float(inplane_norm.max()),
        )
        if gap.any():
            facts["missing_slices"] = True
        if uneven.any() or max_off > tol.spacing_rtol * st.step_grid_mm:
            facts["uneven_spacing"] = True
        if inplane_norm.max() > tol.position_atol_mm:
            facts["non_orthogonal"] = True
    return SeriesQC(**facts), groups, st


def series_qc(slices: Iterable[SliceInfo | Dataset], **tolerances: Any) -> SeriesQC:
    """Measure only: the QC of one series without applying any policy (tolerances as
    :class:`SeriesTolerances`)."""
    return _measure(_as_slice_infos(slices), SeriesTolerances(**tolerances))[0]


def _describe(flag: str, qc: SeriesQC, tol: SeriesTolerances) -> str:
    steps = (
        f"steps {qc.min_step_mm:.3f}-{qc.max_step_mm:.3f} mm (median {qc.median_step_mm:.3f} mm) over "
        f"{qc.n_slices} positions"
        if qc.median_step_mm is not None
        else f"{qc.n_slices} positions"
    )
    if flag == "NOT_CT":
        return f"modality {'/'.join(qc.modalities) or '?'}, SOP class {'/'.join(qc.sop_class_uids) or '?'}"
    if flag == "MISSING_GEOMETRY":
        return f"{qc.n_instances} instance(s), some without position, orientation or pixel spacing"
    if flag == "MIXED_GEOMETRY":
        parts = "; ".join(
            f"{g['n_slices']} x {g['rows']}x{g['columns']} @ {g['pixel_spacing_yx_mm']} mm, "
            f"orientation {g['orientation']}"
            for g in qc.geometry_groups
        )
        return f"{len(qc.geometry_groups)} geometries: {parts}"
    if flag == "DUPLICATE_POSITIONS":
        groups = [list(g) for g in qc.duplicate_groups]
        return f"{len(groups)} position(s) with several slices (sorted indices {groups}); {steps}"
    if flag == "MISSING_SLICES":
        gaps = ", ".join(f"{qc.steps_mm[i]:.3f} mm after slice {i}" for i in qc.gap_after)
        return f"{steps}; gap(s) {gaps}: {qc.missing_slice_count} slice(s) missing (spacing_rtol {tol.spacing_rtol})"
    if flag == "UNEVEN_SPACING":
        odd = ", ".join(f"{qc.steps_mm[i]:.3f} mm after slice {i}" for i in qc.uneven_after) or "none"
        return (
            f"{steps}; uneven steps: {odd}; largest offset from the regular grid {qc.max_grid_offset_mm:.3f} mm "
            f"(spacing_rtol {tol.spacing_rtol})"
        )
    if flag == "GANTRY_TILT":
        return f"GantryDetectorTilt {qc.gantry_tilt_deg} deg (tilt_atol_deg {tol.tilt_atol_deg})"
    if flag == "NON_ORTHOGONAL":
        return (
            f"slice positions shear {qc.stack_angle_deg:.2f} deg off the normal, in-plane offset up to "
            f"{qc.max_inplane_offset_mm:.3f} mm (position_atol_mm {tol.position_atol_mm})"
        )
    if flag == "NOT_AXIAL":
        return f"normal {qc.normal_xyz} is {qc.normal_angle_to_z_deg:.1f} deg from z (max {tol.axial_max_angle_deg})"
    if flag == "TOO_FEW_SLICES":
        return f"{qc.n_slices} distinct position(s), min_slices {tol.min_slices}"
    return ", ".join(qc.flags)


# --------------------------------------------------------------------------------------------
# Assembly
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AssembledSeries:
    """One consistent stack and where its voxels go.

    slices: the source planes sorted along the normal (duplicates dropped per policy; see
        ``dropped``). ``qc``: flags and facts; ``decisions``: flag → action taken (resample,
        split, drop_duplicates, keep). ``grid``: the target Grid (origin at the first sorted
        slice — for a sheared stack moved in-plane to cover every plane —, direction columns
        (row cosine, column cosine, normal), spacing (step, row spacing, column spacing));
        with not_axial='resample' an identity-direction grid covering the source.
    part: 0 for the main part; split_off holds the other parts (1, 2, ...) of a split series,
        rejected_parts those that were refused (their SeriesRejected, not raised).
    """

    series_instance_uid: str
    slices: tuple[SliceInfo, ...]
    qc: SeriesQC
    decisions: Mapping[str, str]
    grid: Grid
    row_cosine_xyz: tuple[float, float, float]
    column_cosine_xyz: tuple[float, float, float]
    normal_xyz: tuple[float, float, float]
    pixel_spacing_yx_mm: tuple[float, float]
    part: int = 0
    dropped: tuple[SliceInfo, ...] = ()
    split_off: tuple[AssembledSeries, ...] = ()
    rejected_parts: tuple[SeriesRejected, ...] = ()

    @property
    def positions_xyz_mm(self) -> np.ndarray:
        """(n, 3) ImagePositionPatient of every source plane, in stack order."""
        return source_slice_positions_xyz_mm(self)

    @property
    def needs_resampling(self) -> bool:
        """True when the source planes are not the Grid's planes (gap, uneven, shear, not axial)."""
        return any(self.decisions.get(f) == "resample" for f in _RESAMPLING_FLAGS)

    @property
    def spacing_zyx_mm(self) -> tuple[float, float, float]:
        return self.grid.spacing_zyx_mm


def source_slice_positions_xyz_mm(assembled: AssembledSeries) -> np.ndarray:
    """(n, 3) float64 world position (LPS mm, ImagePositionPatient) of the first pixel of every
    source plane, in the order of ``assembled.slices`` (= the rows of :func:`stack_hu`)."""
    return np.asarray([s.position_xyz_mm for s in assembled.slices], dtype=np.float64).reshape(-1, 3)


def source_slice_index_zyx(assembled: AssembledSeries) -> np.ndarray:
    """(n, 3) fractional (z, y, x) index in ``assembled.grid`` of every source plane's first
    pixel: z is where the plane lies between grid planes, (y, x) its in-plane shift (0, 0 for
    an orthogonal stack on a regular grid; k, 0, 0 exactly for a clean series)."""
    return assembled.grid.world_xyz_to_index_zyx(source_slice_positions_xyz_mm(assembled))


def _grid_for(
    slices: Sequence[SliceInfo], st: _Stack, qc: SeriesQC, patient_aligned: bool
) -> tuple[Grid, tuple[float, float]]:
    ref = slices[st.order[0]]
    assert ref.pixel_spacing_yx_mm is not None and ref.rows and ref.columns
    rs, cs = ref.pixel_spacing_yx_mm
    rows, cols = int(ref.rows), int(ref.columns)
    origin = np.asarray(ref.position_xyz_mm, dtype=np.float64)
    step = st.step_grid_mm or ref.slice_thickness_mm or 1.0
    if patient_aligned:
        axes = np.stack([st.row, st.col, st.normal], axis=1)  # columns: world dirs of i, j, k
        spacing_ijk = np.array([cs, rs, step])
        pos = np.asarray([slices[st.order[u]].position_xyz_mm for u in st.unique], dtype=np.float64)
        corners = np.array([[a, b] for a in (0, cols - 1) for b in (0, rows - 1)], dtype=np.float64)
        offs = corners[:, :1] * cs * st.row + corners[:, 1:] * rs * st.col
        pts = (pos[:, None, :] + offs[None, :, :]).reshape(-1, 3)
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        spacing_xyz = np.array([spacing_ijk[int(np.argmax(np.abs(axes[a])))] for a in range(3)])
        shape_xyz = np.ceil((hi - lo) / spacing_xyz - 1e-6).astype(int) + 1
        grid = Grid(
            tuple(int(v) for v in shape_xyz[::-1]),  # type: ignore[arg-type]
            tuple(float(v) for v in spacing_xyz[::-1]),  # type: ignore[arg-type]
            tuple(float(v) for v in lo),  # type: ignore[arg-type]
        )
        return grid, (rs, cs)
    if qc.non_orthogonal:  # cover every sheared plane: extend rows/columns, move the origin
        y, x = st.inplane_yx_mm[:, 0], st.inplane_yx_mm[:, 1]
        origin = origin + float(x.min()) * st.row + float(y.min()) * st.col
        rows += int(np.ceil((y.max() - y.min()) / rs - 1e-6))
        cols += int(np.ceil((x.max() - x.min()) / cs - 1e-6))
    direction = np.stack([st.row, st.col, st.normal], axis=1)
    grid = Grid(
        (int(st.n_grid), rows, cols),
        (float(step), float(rs), float(cs)),
        tuple(float(v) for v in origin),  # type: ignore[arg-type]
        tuple(float(v) for v in direction.reshape(-1)),
    )
    return grid, (rs, cs)


def _identical(group: Sequence[SliceInfo]) -> bool | None:
    """True/False when the pixels of all slices in ``group`` are known to be equal/differ;
    None when that cannot be told (no digests, no pixel loaders)."""
    digests = [s.pixel_digest for s in group]
    if all(d is not None for d in digests):
        return len(set(digests)) == 1
    if all(s.pixels is not None for s in group):
        first = np.asarray(group[0].pixels())  # type: ignore[misc]
        return all(np.array_equal(first, np.asarray(s.pixels())) for s in group[1:])  # type: ignore[misc]
    return None


def _reject(
    flags: Sequence[str], qc: SeriesQC, tol: SeriesTolerances, slices: Sequence[SliceInfo], extra: str = ""
) -> SeriesRejected:
    code = flags[0]
    detail = "; ".join(f"{f}: {_describe(f, qc, tol)}" for f in flags) + extra
    return SeriesRejected(
        code=code,
        detail=detail,
        hint=_HINTS.get(code),
        series_instance_uid=qc.series_instance_uid,
        qc=qc,
        refused=tuple(flags),
        sop_instance_uids=tuple(dict.fromkeys(s.sop_instance_uid for s in slices)),
    )


def _assemble_parts(
    slices: list[SliceInfo],
    policy: SeriesPolicy,
    tol: SeriesTolerances,
    split_by: tuple[str, ...],
    decisions_in: dict[str, str],
) -> list[AssembledSeries | SeriesRejected]:
    qc, groups, st = _measure(slices, tol, split_by)
    decisions = dict(decisions_in)
    own = [f for f in qc.flags if f not in split_by]

    refused = [f for f in own if f in ("NOT_CT", "MISSING_GEOMETRY") and policy.action(f) == "refuse"]
    if refused:
        return [_reject(refused, qc, tol, slices)]
    if "NOT_CT" in own:
        decisions["NOT_CT"] = "keep"
    if "MIXED_GEOMETRY" in own:
        if policy.mixed_geometry == "refuse":
            return [_reject(["MIXED_GEOMETRY"], qc, tol, slices)]
        out: list[AssembledSeries | SeriesRejected] = []
        for g in groups:
            part, by = [slices[i] for i in g], (*split_by, "MIXED_GEOMETRY")
            out += _assemble_parts(part, policy, tol, by, {**decisions, "MIXED_GEOMETRY": "split"})
        return out
    assert st is not None
    ordered = [slices[i] for i in st.order]
    dropped: list[SliceInfo] = []
    if "DUPLICATE_POSITIONS" in own:
        action = policy.duplicate_positions
        if action == "drop_identical":
            verdicts = [_identical([ordered[k] for k in g]) for g in st.duplicate_groups]
            if all(v is True for v in verdicts):
                action = "drop_duplicates"
            else:
                why = "differ in pixels" if False in verdicts else "have no pixel digest or pixels to compare"
                bad = [list(g) for g, v in zip(st.duplicate_groups, verdicts, strict=True) if v is not True]
                return [_reject(["DUPLICATE_POSITIONS"], qc, tol, slices, f"; slices at sorted indices {bad} {why}")]
        if action == "refuse":
            return [_reject(["DUPLICATE_POSITIONS"], qc, tol, slices)]
        if action == "split":
            layer_of = {}
            for g in st.duplicate_groups:
                for j, k in enumerate(sorted(g, key=lambda k: ordered[k].sort_key)):
                    layer_of[k] = j
            n_layers = 1 + max(layer_of.values())
            out = []
            for j in range(n_layers):
                layer = [s for k, s in enumerate(ordered) if layer_of.get(k, 0) == j]
                by = (*split_by, "DUPLICATE_POSITIONS")
                out += _assemble_parts(layer, policy, tol, by, {**decisions, "DUPLICATE_POSITIONS": "split"})
            return out
        keep = set(range(len(ordered)))
        for g in st.duplicate_groups:
            first = min(g, key=lambda k: ordered[k].sort_key)
            keep -= set(g) - {first}
        dropped = [s for k, s in enumerate(ordered) if k not in keep]
        ordered = [s for k, s in enumerate(ordered) if k in keep]
        decisions["DUPLICATE_POSITIONS"] = "drop_duplicates"
        st = dataclasses.replace(
            st,
            order=[st.order[k] for k in sorted(keep)],
            unique=list(range(len(keep))),
            duplicate_groups=[],
        )

    refused = []
    for flag in ("MISSING_SLICES", "UNEVEN_SPACING", "GANTRY_TILT", "NON_ORTHOGONAL", "NOT_AXIAL", "TOO_FEW_SLICES"):
        if flag in own:
            action = policy.action(flag)
            if action == "refuse":
                refused.append(flag)
            else:
                decisions[flag] = action
    if refused:
        return [_reject(refused, qc, tol, slices)]
    grid, spacing_yx = _grid_for(slices, st, qc, patient_aligned=decisions.get("NOT_AXIAL") == "resample")
    return [
        AssembledSeries(
            series_instance_uid=qc.series_instance_uid,
            slices=tuple(ordered),
            qc=qc,
            decisions=decisions,
            grid=grid,
            row_cosine_xyz=tuple(float(v) for v in st.row),  # type: ignore[arg-type]
            column_cosine_xyz=tuple(float(v) for v in st.col),  # type: ignore[arg-type]
            normal_xyz=tuple(float(v) for v in st.normal),  # type: ignore[arg-type]
            pixel_spacing_yx_mm=spacing_yx,
            dropped=tuple(dropped),
        )
    ]


def assemble_series(
    slices: Iterable[SliceInfo | Dataset],
    policy: SeriesPolicy = SeriesPolicy(),  # noqa: B008 - frozen, immutable
    **tolerances: Any,
) -> AssembledSeries:
    """Group, sort, QC and decide one series; return its main part.

    slices: SliceInfos and/or pydicom Datasets (expanded frame by frame) of ONE series.
    tolerances: fields of :class:`SeriesTolerances` (position_atol_mm=0.01, spacing_rtol=0.1,
        orientation_atol=1e-4, pixel_spacing_atol_mm=1e-3, tilt_atol_deg=0.01,
        axial_max_angle_deg=30, min_slices=3).

    When the policy splits the series (mixed geometry, duplicate positions), every consistent
    part is assembled on its own with the same policy; the largest accepted part is returned
    (``part`` 0), the other accepted parts are in ``split_off`` (``part`` 1, 2, ...) and the
    refused ones in ``rejected_parts``. Raises :class:`SeriesRejected` when the series, or
    every part of it, is refused (code: the first refused flag of :data:`FLAGS`; detail: the
    measured steps, positions, angles; hint: what to do), or when ``slices`` is empty
    (EMPTY_SERIES) or spans several Series Instance UIDs (MULTIPLE_SERIES).
    """
    tol = SeriesTolerances(**tolerances)
    infos = _as_slice_infos(slices)
    if not infos:
        raise SeriesRejected(code="EMPTY_SERIES", detail="no slices", hint="nothing to assemble")
    uids = sorted({s.series_instance_uid for s in infos})
    if len(uids) > 1:
        raise SeriesRejected(
            code="MULTIPLE_SERIES",
            detail=f"{len(uids)} Series Instance UIDs: {', '.join(uids[:5])}",
            hint="group the slices by series first (group_by_series, or assemble_instances for many series)",
        )
    results = _assemble_parts(infos, policy, tol, (), {})
    accepted = [r for r in results if isinstance(r, AssembledSeries)]
    rejected = [r for r in results if isinstance(r, SeriesRejected)]
    if not accepted:
        if len(rejected) == 1:
            raise rejected[0]
        main = rejected[0]
        raise SeriesRejected(
            code=main.code,
            detail=f"all {len(rejected)} parts refused: "
            + " | ".join(f"part {i}: {r.detail}" for i, r in enumerate(rejected)),
            hint=main.hint,
            series_instance_uid=main.series_instance_uid,
            qc=main.qc,
            refused=tuple(dict.fromkeys(f for r in rejected for f in r.refused)),
            sop_instance_uids=tuple(dict.fromkeys(u for r in rejected for u in r.sop_instance_uids)),
        )
    accepted.sort(key=lambda a: (-len(a.slices), min(s.sort_key for s in a.slices)))
    parts = [dataclasses.replace(a, part=i) for i, a in enumerate(accepted)]
    for j, r in enumerate(rejected):
        r.part = len(parts) + j
    return dataclasses.replace(parts[0], split_off=tuple(parts[1:]), rejected_parts=tuple(rejected))


def assemble_instances(
    instances: Iterable[SliceInfo | Dataset],
    policy: SeriesPolicy = SeriesPolicy(),  # noqa: B008 - frozen, immutable
    **tolerances: Any,
) -> tuple[list[AssembledSeries], list[SeriesRejected]]:
    """:func:`assemble_series` for every series in ``instances``: every accepted part (main
    parts and split-off parts, ``split_off`` emptied) and every refusal (raised ones and
    refused parts), nothing raised. Series in order of first appearance."""
    volumes: list[AssembledSeries] = []
    refusals: list[SeriesRejected] = []
    for group in group_by_series(instances).values():
        try:
            main = assemble_series(group, policy, **tolerances)
        except SeriesRejected as exc:
            refusals.append(exc)
            continue
        volumes.append(dataclasses.replace(main, split_off=()))
        volumes.extend(main.split_off)
        refusals.extend(main.rejected_parts)
    return volumes, refusals


def stack_hu(
    assembled: AssembledSeries, pixels_for: Callable[[SliceInfo], np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Stack the HU planes of ``assembled.slices`` in order: float32 ``(z, y, x)`` = (slices,
    rows, columns), and their (n, 3) positions (:func:`source_slice_positions_xyz_mm`).

    pixels_for: returns a slice's HU plane (rows, cols); default: ``slice.pixels()``. The
    stack is on ``assembled.grid`` as it is when ``not assembled.needs_resampling``; else
    it is the source a resampler maps onto the grid with the positions. Raises
    SeriesRejected NO_PIXELS or PIXEL_SHAPE_MISMATCH.
    """
    first = assembled.slices[0]
    rows, cols = int(first.rows or 0), int(first.columns or 0)
    out = np.empty((len(assembled.slices), rows, cols), dtype=np.float32)
    for k, s in enumerate(assembled.slices):
        if pixels_for is not None:
            plane = pixels_for(s)
        elif s.pixels is not None:
            plane = s.pixels()
        else:
            raise SeriesRejected(
                code="NO_PIXELS",
                detail=f"slice {k} ({s.sop_instance_uid}) has no pixel loader",
                hint="pass pixels_for, or build SliceInfos from Datasets read with their pixel data",
                series_instance_uid=assembled.series_instance_uid,
            )
        arr = np.asarray(plane)
        if arr.ndim == 3 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.shape != (rows, cols):
            raise SeriesRejected(
                code="PIXEL_SHAPE_MISMATCH",
                detail=f"slice {k} ({s.sop_instance_uid}) has pixels {arr.shape}, header says {(rows, cols)}",
                hint="the header and the pixel data disagree; quarantine the instance",
                series_instance_uid=assembled.series_instance_uid,
            )
        out[k] = arr
    return out, source_slice_positions_xyz_mm(assembled)
