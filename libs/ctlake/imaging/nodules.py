r"""Nodules: annotations in (LUNA16 CSV, PASCAL VOC boxes, RTSTRUCT contours, DICOM SEG), and a
voxel mask per annotated nodule with its size (DESIGN §5).

Pure numpy + scipy (ndimage, spatial) + pydicom Datasets; no Spark. Volumes are (z, y, x) on a
:class:`~ctlake.imaging.grid.Grid`; world coordinates are DICOM patient LPS millimetres written
``_xyz_mm`` (x, y, z order, as LUNA16 and ImagePositionPatient write them).

Annotations
    * LUNA16 CSV (:func:`read_luna16_csv`): ``seriesuid, coordX, coordY, coordZ, diameter_mm``
      (world mm) → a :class:`Sphere` per row; other columns (``ctlake synth`` adds malignancy,
      texture, margin, patient_id) are kept as text in ``extra``.
    * PASCAL VOC XML (:func:`voc_lesions`), one file per slice named ``<SOPInstanceUID>.xml``
      (TCIA Lung-PET-CT-Dx): each ``<bndbox>`` is a box of pixel indices (xmin..xmax columns,
      ymin..ymax rows, inclusive, 0-based as labelImg writes them; ``index_base=1`` for strict
      VOC) on the slice with that SOP Instance UID. Its world box spans the centres of those
      pixels on that slice (``world = P + col × Δcol × r + row × Δrow × c``, the slice's
      ImagePositionPatient P, PixelSpacing and orientation cosines r, c), so it lies in the
      slice's plane. Boxes of one label on consecutive slices that overlap in-plane are one
      lesion; its 3D box is the union of the slice boxes, widened by half the slice step along
      the slice normal on both sides (the slab the slices stand for).
    * RTSTRUCT (:func:`rtstruct_mask`): CLOSED_PLANAR contours (world mm) of one ROI, each on a
      slice plane of the grid (within ``plane_tol_vox``); the voxels whose centres lie inside
      are set, contours on one slice combined by even-odd (XOR: an inner contour is a hole).
    * DICOM SEG (:func:`seg_mask`): BINARY (and FRACTIONAL, > half the maximum) segmentations;
      every set pixel of every frame of the segment goes to the grid voxel nearest its world
      position (exact when the frames lie on the grid's planes, as for a SEG of the series).
      LABELMAP segmentations are refused (UNSUPPORTED_SEG).

Nodule mask (:func:`nodule_mask`), from a :class:`Sphere` (centre, diameter) or a :class:`Box`:

1. ROI: the sphere with its diameter enlarged by ``enlarge`` (15 %), or the box with each
   half-extent enlarged by 15 % about its centre; voxels whose centres lie inside.
2. Allowed region: the lung mask, where given. Nodules touching the pleura are not in a lung
   mask (the chest wall encloses them on one side), so by default (``pleura="rolling_ball"``)
   the lung mask is first closed with a ball ``pleura_ball_factor`` (2) times the ROI radius,
   at most ``pleura_ball_max_mm`` (30 mm) (two Euclidean distance transforms on the ROI's crop
   grown by the ball radius): a juxtapleural nodule is a dent in the lung surface smaller than
   the ball and gets filled, the flat or convex chest wall does not. A ball twice the nodule
   leaves at most a sliver r²/(2R) ≈ 0.2 r deep at the wall. Masses abutting the mediastinum
   (hilar tumours) are beyond all three choices: the ball also bridges the concave mediastinal
   side of the lung and can take mediastinum inside the ROI, while ``"none"`` / ``"dilate"``
   lose the part of the mass that the lung mask leaves out.
   ``pleura="dilate"`` instead dilates the lung mask by ``pleura_margin_mm`` (simpler, takes
   a sliver of wall along with it); ``"none"`` uses the lung mask as it is.
3. Foreground: ``method="otsu"`` (default): HU above the Otsu threshold of the ROI ∩ allowed
   voxels (256-bin histogram, between-class variance maximal); ``method="region_growing"``:
   the 6-connected voxels with HU >= ``(seed + background) / 2`` reached from the seed (the
   brightest voxel, 3×3×3 mean, within half the radius of the centre), background the 10th
   percentile of the ROI. ``threshold_hu`` overrides either threshold. Otsu is the default
   because it needs no seed: a centre that lands on a vessel or on ground glass does not
   decide the threshold, and it gives the same mask for any centre inside the ROI's core.
   For part-solid nodules the two differ: region growing from a solid seed cuts halfway
   between lung (-850 HU) and solid (~30 HU), above ground glass (~-500 HU), so it measures
   the solid component; Otsu takes the ground glass too when it outweighs the core in the ROI.
   Either way the foreground must be ``min_contrast_hu`` (100 HU) denser than the rest of
   the ROI, else NODULE_NOT_FOUND (Otsu would split pure noise).
4. The largest 6-connected component among those that reach the core (the ball of half the
   ROI radius about the centre; any component when none does).

Measures of a :class:`NoduleMask`: ``volume_mm3`` (voxel count × voxel volume),
``equivalent_diameter_mm`` = (6 V / π)^(1/3) (the diameter of the sphere of that volume),
``max_diameter_mm`` (the 3D Feret diameter: the largest distance between two voxel centres of
the mask; a threshold halfway between nodule and lung keeps the voxels at least half inside,
so the outermost centres lie on the edge and no voxel size is added), the centroid (fractional
(z, y, x) index and world mm).
"""

from __future__ import annotations

import csv
import math
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset
from scipy import ndimage

from ctlake.errors import CtlakeError
from ctlake.imaging.grid import Grid
from ctlake.imaging.series import SliceInfo, slice_info

__all__ = [
    "LUNA16_COLUMNS",
    "Box",
    "LesionBox",
    "NoduleAnnotation",
    "NoduleError",
    "NoduleMask",
    "SliceBox",
    "Sphere",
    "VocLesions",
    "VocObject",
    "measure_mask",
    "merge_slice_boxes",
    "nodule_mask",
    "otsu_threshold",
    "polygon_mask_2d",
    "read_luna16_csv",
    "read_voc_xml",
    "rtstruct_mask",
    "rtstruct_rois",
    "seg_mask",
    "seg_segments",
    "voc_lesions",
]

#: Required columns of a LUNA16 annotations CSV (world mm, LPS).
LUNA16_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm")
_VOC_MAX_BYTES = 1_000_000


class NoduleError(CtlakeError):
    """An annotation cannot be read or turned into a mask. ``code``: BAD_ANNOTATION,
    ROI_OUTSIDE_VOLUME, NODULE_NOT_FOUND, ROI_NOT_FOUND, SEGMENT_NOT_FOUND, UNSUPPORTED_SEG,
    CONTOUR_OFF_GRID, SHAPE_MISMATCH."""

    code = "NODULE_ERROR"


# --------------------------------------------------------------------------------------------
# Regions of interest and annotations
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sphere:
    """A ball in world mm: centre (x, y, z) LPS and diameter."""

    centre_xyz_mm: tuple[float, float, float]
    diameter_mm: float

    def __post_init__(self) -> None:
        c = tuple(float(v) for v in self.centre_xyz_mm)
        if len(c) != 3 or not all(math.isfinite(v) for v in c):
            raise NoduleError(f"Sphere centre must be 3 finite mm, got {self.centre_xyz_mm}", code="BAD_ANNOTATION")
        if not (math.isfinite(self.diameter_mm) and self.diameter_mm > 0):
            raise NoduleError(f"Sphere diameter must be > 0 mm, got {self.diameter_mm}", code="BAD_ANNOTATION")
        object.__setattr__(self, "centre_xyz_mm", c)
        object.__setattr__(self, "diameter_mm", float(self.diameter_mm))


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in world mm (LPS x, y, z): the corners with the smallest and the
    largest coordinates (lo <= hi on every axis; a zero extent is a plane)."""

    lo_xyz_mm: tuple[float, float, float]
    hi_xyz_mm: tuple[float, float, float]

    def __post_init__(self) -> None:
        lo = tuple(float(v) for v in self.lo_xyz_mm)
        hi = tuple(float(v) for v in self.hi_xyz_mm)
        if len(lo) != 3 or len(hi) != 3 or not all(math.isfinite(v) for v in lo + hi):
            raise NoduleError(f"Box corners must be 3 finite mm each, got {lo}, {hi}", code="BAD_ANNOTATION")
        if any(a > b for a, b in zip(lo, hi, strict=True)):
            raise NoduleError(f"Box lo {lo} exceeds hi {hi}", code="BAD_ANNOTATION")
        object.__setattr__(self, "lo_xyz_mm", lo)
        object.__setattr__(self, "hi_xyz_mm", hi)

    @property
    def centre_xyz_mm(self) -> tuple[float, float, float]:
        return tuple((a + b) / 2.0 for a, b in zip(self.lo_xyz_mm, self.hi_xyz_mm, strict=True))  # type: ignore[return-value]

    @property
    def size_xyz_mm(self) -> tuple[float, float, float]:
        return tuple(b - a for a, b in zip(self.lo_xyz_mm, self.hi_xyz_mm, strict=True))  # type: ignore[return-value]

    @classmethod
    def around(cls, points_xyz_mm: np.ndarray) -> Box:
        """The smallest box holding ``points_xyz_mm`` (n, 3)."""
        p = np.asarray(points_xyz_mm, dtype=np.float64).reshape(-1, 3)
        return cls(tuple(p.min(axis=0)), tuple(p.max(axis=0)))  # type: ignore[arg-type]


@dataclass(frozen=True)
class NoduleAnnotation:
    """One annotated nodule of one series: its ROI (:class:`Sphere` or :class:`Box`), where the
    annotation came from (``luna16_csv``, ``voc_xml``, ...), an optional label and the other
    columns of its source as text."""

    series_instance_uid: str
    roi: Sphere | Box
    source: str
    label: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def centre_xyz_mm(self) -> tuple[float, float, float]:
        return self.roi.centre_xyz_mm

    @property
    def diameter_mm(self) -> float | None:
        """The sphere's diameter; None for a box."""
        return self.roi.diameter_mm if isinstance(self.roi, Sphere) else None


def read_luna16_csv(path: str | Path) -> list[NoduleAnnotation]:
    """Rows of a LUNA16-style ``annotations.csv`` (``seriesuid, coordX, coordY, coordZ,
    diameter_mm``: world LPS mm) as :class:`NoduleAnnotation` with a :class:`Sphere` ROI, in
    file order; any further columns go to ``extra``. Raises NoduleError BAD_ANNOTATION (naming
    the line) for a missing column or a value that is not a finite number (diameter > 0)."""
    path = Path(path)
    out: list[NoduleAnnotation] = []
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in LUNA16_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise NoduleError(f"{path}: missing column(s) {', '.join(missing)}; has {reader.fieldnames}",
                              code="BAD_ANNOTATION", hint=f"a LUNA16 CSV has {', '.join(LUNA16_COLUMNS)}")
        for line, row in enumerate(reader, start=2):
            try:
                x, y, z, d = (float(row[c]) for c in LUNA16_COLUMNS[1:])
                roi = Sphere((x, y, z), d)
            except (TypeError, ValueError, NoduleError) as exc:
                raise NoduleError(f"{path}:{line}: {exc}", code="BAD_ANNOTATION") from exc
            extra = {k: v for k, v in row.items() if k not in LUNA16_COLUMNS and k is not None}
            out.append(NoduleAnnotation(row["seriesuid"].strip(), roi, "luna16_csv", extra=extra))
    return out


# --------------------------------------------------------------------------------------------
# PASCAL VOC boxes per slice
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VocObject:
    """One ``<object>`` of a VOC file: label and inclusive pixel-index box as written."""

    label: str
    xmin: int
    ymin: int
    xmax: int
    ymax: int
    difficult: bool = False
    truncated: bool = False


@dataclass(frozen=True)
class SliceBox:
    """A VOC box placed on its slice: ``box`` spans the world positions (mm) of the centres of
    pixels (xmin..xmax, ymin..ymax) in the slice's plane (zero extent along the normal of an
    axial slice: lo z = hi z = the slice's z). ``slice_index``: the slice's rank along the
    normal among the slices given."""

    sop_instance_uid: str
    series_instance_uid: str
    label: str
    pixel_box: tuple[int, int, int, int]      # xmin, ymin, xmax, ymax (0-based, inclusive)
    slice_index: int
    depth_mm: float                           # position along the slice normal (ImagePositionPatient · n)
    box: Box


@dataclass(frozen=True)
class LesionBox:
    """Slice boxes of one lesion on consecutive slices and their 3D box (world mm; the union of
    the slice boxes widened by ``half_step_mm`` along the slice normal on each side)."""

    label: str
    series_instance_uid: str
    slice_boxes: tuple[SliceBox, ...]
    box: Box
    half_step_mm: float

    @property
    def annotation(self) -> NoduleAnnotation:
        return NoduleAnnotation(self.series_instance_uid, self.box, "voc_xml", label=self.label,
                                extra={"sop_instance_uids": " ".join(b.sop_instance_uid for b in self.slice_boxes)})


@dataclass(frozen=True)
class VocLesions:
    """What :func:`voc_lesions` found: every box on its slice, the merged lesions, and the SOP
    Instance UIDs of XML files whose slice is not among the slices given."""

    slice_boxes: tuple[SliceBox, ...]
    lesions: tuple[LesionBox, ...]
    unmatched_sop_uids: tuple[str, ...]


def read_voc_xml(path: str | Path) -> list[VocObject]:
    """The ``<object>`` boxes of one PASCAL VOC annotation file (xml.etree). Raises NoduleError
    BAD_ANNOTATION for unparsable XML, a file over 1 MB or with a DTD (VOC files have none; this
    refuses entity tricks, as defusedxml would), or a box whose corners are not numbers."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) > _VOC_MAX_BYTES or b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise NoduleError(f"{path}: refused: over {_VOC_MAX_BYTES} bytes or has a DTD", code="BAD_ANNOTATION")
    try:
        root = ET.fromstring(data)  # noqa: S314 - no DTD (checked above); expat >= 2.4 caps entity expansion
    except ET.ParseError as exc:
        raise NoduleError(f"{path}: not valid XML: {exc}", code="BAD_ANNOTATION") from exc
    out = []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        if box is None:
            continue
        try:
            xmin, ymin, xmax, ymax = (int(round(float(box.findtext(k, "")))) for k in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError as exc:
            raise NoduleError(f"{path}: <bndbox> corners must be numbers: {exc}", code="BAD_ANNOTATION") from exc
        if xmax < xmin or ymax < ymin:
            raise NoduleError(f"{path}: box ({xmin}, {ymin})-({xmax}, {ymax}) has max < min", code="BAD_ANNOTATION")
        flags = {k.lower(): (obj.findtext(k) or "0").strip() for k in ("difficult", "Difficult", "truncated")}
        out.append(VocObject((obj.findtext("name") or "").strip(), xmin, ymin, xmax, ymax,
                             difficult=flags.get("difficult") == "1", truncated=flags.get("truncated") == "1"))
    return out


def _slice_axes(s: SliceInfo) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[float, float]]:
    if not s.has_geometry:
        raise NoduleError(f"slice {s.sop_instance_uid} lacks position, orientation or pixel spacing",
                          code="BAD_ANNOTATION")
    ori = np.asarray(s.orientation, dtype=np.float64)
    r, c = ori[:3], ori[3:]
    return np.asarray(s.position_xyz_mm, dtype=np.float64), r, c, np.cross(r, c), s.pixel_spacing_yx_mm  # type: ignore[return-value]


def voc_lesions(
    xml: str | Path | Iterable[str | Path],
    slices: Iterable[SliceInfo | Dataset],
    *,
    index_base: int = 0,
    max_gap_slices: int = 0,
) -> VocLesions:
    """Place the VOC boxes of ``xml`` (a folder of ``<SOPInstanceUID>.xml`` files, or the files)
    on the ``slices`` of one series (SliceInfos or single-frame Datasets; pixels not needed) and
    merge them into lesions (:func:`merge_slice_boxes`). ``index_base``: 0 for labelImg-style
    0-based pixel indices, 1 for 1-based ones. Files whose SOP Instance UID is not among the
    slices are listed in ``unmatched_sop_uids`` (a slice missing from the series, or another
    series' annotation), never guessed."""
    if isinstance(xml, str | Path):
        paths = sorted(Path(xml).glob("*.xml")) if Path(xml).is_dir() else [Path(xml)]
    else:
        paths = [Path(p) for p in xml]
    infos = [s if isinstance(s, SliceInfo) else slice_info(s) for s in slices]
    by_uid = {s.sop_instance_uid: s for s in infos}
    depths = {}
    for s in infos:
        pos, _, _, n, _ = _slice_axes(s)
        depths[s.sop_instance_uid] = float(pos @ n)
    rank = {uid: i for i, uid in enumerate(sorted(depths, key=depths.__getitem__))}
    boxes: list[SliceBox] = []
    unmatched: list[str] = []
    for p in paths:
        uid = p.stem
        s = by_uid.get(uid)
        if s is None:
            unmatched.append(uid)
            continue
        pos, r, c, _, (dy, dx) = _slice_axes(s)
        for o in read_voc_xml(p):
            cols = np.array([o.xmin, o.xmax], dtype=np.float64) - index_base
            rows = np.array([o.ymin, o.ymax], dtype=np.float64) - index_base
            corners = [pos + i * dx * r + j * dy * c for i in cols for j in rows]
            boxes.append(SliceBox(uid, s.series_instance_uid, o.label, (o.xmin, o.ymin, o.xmax, o.ymax),
                                  rank[uid], depths[uid], Box.around(np.array(corners))))
    steps = np.diff(sorted(depths.values()))
    step = float(np.median(steps)) if len(steps) else float(infos[0].slice_thickness_mm or 1.0) if infos else 1.0
    normal = _slice_axes(infos[0])[3] if infos else np.array([0.0, 0.0, 1.0])
    lesions = merge_slice_boxes(boxes, slice_step_mm=step, normal_xyz=normal, max_gap_slices=max_gap_slices)
    return VocLesions(tuple(boxes), tuple(lesions), tuple(unmatched))


def _overlap_in_plane(a: Box, b: Box, normal_xyz: np.ndarray) -> float:
    """Overlap area (mm², in world axes other than the one nearest the normal) of two slice boxes."""
    skip = int(np.argmax(np.abs(normal_xyz)))
    area = 1.0
    for ax in range(3):
        if ax == skip:
            continue
        lo = max(a.lo_xyz_mm[ax], b.lo_xyz_mm[ax])
        hi = min(a.hi_xyz_mm[ax], b.hi_xyz_mm[ax])
        if hi < lo:
            return -1.0
        area *= hi - lo
    return area


def merge_slice_boxes(
    boxes: Sequence[SliceBox],
    *,
    slice_step_mm: float,
    normal_xyz: Sequence[float] = (0.0, 0.0, 1.0),
    max_gap_slices: int = 0,
) -> list[LesionBox]:
    """Group slice boxes into lesions: walking the slices in order, a box joins the lesion of
    the same label and series whose last box is at most ``max_gap_slices + 1`` slices back and
    overlaps it in-plane (the largest overlap wins), else starts a new lesion. Each lesion's
    box is the union of its slice boxes widened by ``slice_step_mm / 2`` along ``normal_xyz``
    on each side. Lesions come out in order of their first slice."""
    n = np.asarray(normal_xyz, dtype=np.float64)
    n = n / np.linalg.norm(n)
    half = float(slice_step_mm) / 2.0
    open_: list[list[SliceBox]] = []
    for b in sorted(boxes, key=lambda b: (b.slice_index, b.box.lo_xyz_mm)):
        best, best_area = None, -1.0
        for chain in open_:
            last = chain[-1]
            if (last.label, last.series_instance_uid) != (b.label, b.series_instance_uid):
                continue
            if not 0 < b.slice_index - last.slice_index <= max_gap_slices + 1:
                continue
            area = _overlap_in_plane(last.box, b.box, n)
            if area >= 0 and area > best_area:
                best, best_area = chain, area
        if best is None:
            open_.append([b])
        else:
            best.append(b)
    out = []
    for chain in open_:
        pts = np.array([c for b in chain for c in (b.box.lo_xyz_mm, b.box.hi_xyz_mm)])
        pts = np.concatenate([pts - half * n, pts + half * n])
        out.append(LesionBox(chain[0].label, chain[0].series_instance_uid, tuple(chain), Box.around(pts), half))
    return out


# --------------------------------------------------------------------------------------------
# RTSTRUCT and DICOM SEG
# --------------------------------------------------------------------------------------------
def polygon_mask_2d(vertices_yx: np.ndarray, shape_yx: tuple[int, int]) -> np.ndarray:
    """Boolean (y, x) mask of the pixel centres (j, i) inside the closed polygon ``vertices_yx``
    ((n, 2) fractional row, column indices), even-odd rule; a centre exactly on a left edge is
    inside, on a right edge outside (half-open spans, so touching polygons never share pixels)."""
    v = np.asarray(vertices_yx, dtype=np.float64).reshape(-1, 2)
    ny, nx = int(shape_yx[0]), int(shape_yx[1])
    out = np.zeros((ny, nx), dtype=bool)
    if len(v) < 3:
        return out
    y0, x0 = v[:, 0], v[:, 1]
    y1, x1 = np.roll(y0, -1), np.roll(x0, -1)
    for j in range(max(0, math.ceil(y0.min())), min(ny - 1, math.floor(y0.max())) + 1):
        cross = ((y0 <= j) & (y1 > j)) | ((y1 <= j) & (y0 > j))
        if not cross.any():
            continue
        t = (j - y0[cross]) / (y1[cross] - y0[cross])
        xs = np.sort(x0[cross] + t * (x1[cross] - x0[cross]))
        for a, b in zip(xs[0::2], xs[1::2], strict=False):
            i0, i1 = max(0, math.ceil(a)), min(nx, math.ceil(b))
            if i1 > i0:
                out[j, i0:i1] = True
    return out


def _item_value(item: Dataset, keyword: str, default=None):
    return item.get(keyword, default) if hasattr(item, "get") else default


def rtstruct_rois(ds: Dataset) -> dict[int, str]:
    """ROI Number → ROI Name of an RTSTRUCT's Structure Set ROI Sequence."""
    items = ds.get("StructureSetROISequence", [])
    return {int(item.ROINumber): str(_item_value(item, "ROIName", "")) for item in items}


def _roi_number(rois: Mapping[int, str], roi: int | str, what: str, code: str) -> int:
    if isinstance(roi, str):
        hits = [k for k, v in rois.items() if v == roi]
        if len(hits) != 1:
            raise NoduleError(f"{what} named {roi!r}: {len(hits)} matches among {dict(rois)}", code=code)
        return hits[0]
    if int(roi) not in rois:
        raise NoduleError(f"{what} {roi} not among {dict(rois)}", code=code)
    return int(roi)


def rtstruct_mask(ds: Dataset, grid: Grid, roi: int | str, *, plane_tol_vox: float = 0.05) -> np.ndarray:
    """Boolean ``grid.shape_zyx`` mask of one RTSTRUCT ROI (its ROI Number or ROI Name).

    Every CLOSED_PLANAR contour of the ROI (ContourData: x, y, z world mm triplets) must lie on
    one slice plane of ``grid``: its points' fractional z index within ``plane_tol_vox`` of one
    integer (else CONTOUR_OFF_GRID: resample the image onto the contours' planes first). The
    pixel centres inside it are set (:func:`polygon_mask_2d`), contours of one slice combined by
    XOR, so inner contours are holes. POINT and OPEN contours carry no area and are skipped.
    Contours outside the volume's slices are ignored.
    """
    number = _roi_number(rtstruct_rois(ds), roi, "RTSTRUCT ROI", "ROI_NOT_FOUND")
    out = np.zeros(grid.shape_zyx, dtype=bool)
    for rc in ds.get("ROIContourSequence", []):
        if int(rc.ReferencedROINumber) != number:
            continue
        for contour in rc.get("ContourSequence", []):
            if str(_item_value(contour, "ContourGeometricType", "CLOSED_PLANAR")).upper() != "CLOSED_PLANAR":
                continue
            pts = np.asarray([float(v) for v in contour.ContourData], dtype=np.float64).reshape(-1, 3)
            idx = grid.world_xyz_to_index_zyx(pts)
            k = float(np.round(np.median(idx[:, 0])))
            if np.abs(idx[:, 0] - k).max() > plane_tol_vox:
                raise NoduleError(
                    f"ROI {number}: a contour spans z index {idx[:, 0].min():.3f}..{idx[:, 0].max():.3f}, "
                    f"not one slice plane of the grid (tolerance {plane_tol_vox} voxel)",
                    code="CONTOUR_OFF_GRID", hint="rasterise on the grid of the referenced series (before resampling)")
            if not 0 <= k < grid.shape_zyx[0]:
                continue
            out[int(k)] ^= polygon_mask_2d(idx[:, 1:], grid.shape_zyx[1:])
    return out


def seg_segments(ds: Dataset) -> dict[int, str]:
    """Segment Number → Segment Label of a DICOM SEG."""
    items = ds.get("SegmentSequence", [])
    return {int(item.SegmentNumber): str(_item_value(item, "SegmentLabel", "")) for item in items}


def _frame_item(groups: Dataset | None, keyword: str) -> Dataset | None:
    seq = _item_value(groups, keyword) if groups is not None else None
    return seq[0] if seq else None


def seg_mask(ds: Dataset, grid: Grid, segment: int | str = 1) -> np.ndarray:
    """Boolean ``grid.shape_zyx`` mask of one segment (Segment Number or Label) of a DICOM SEG.

    Frames are matched to the segment by SegmentIdentificationSequence (per-frame, else shared);
    each frame's geometry is its PlanePosition / PlaneOrientation / PixelMeasures (per-frame,
    else shared). Every set pixel goes to the nearest voxel of ``grid`` (pixels outside the grid
    are dropped). BINARY frames: 1 is set; FRACTIONAL: value > MaximumFractionalValue / 2.
    Raises UNSUPPORTED_SEG for other SegmentationTypes, SEGMENT_NOT_FOUND.
    """
    kind = str(ds.get("SegmentationType", "BINARY")).upper()
    if kind not in ("BINARY", "FRACTIONAL"):
        raise NoduleError(f"SegmentationType {kind} is not supported", code="UNSUPPORTED_SEG",
                          hint="BINARY and FRACTIONAL segmentations are read; convert a LABELMAP with highdicom")
    number = _roi_number(seg_segments(ds), segment, "SEG segment", "SEGMENT_NOT_FOUND")
    frames = np.asarray(ds.pixel_array)
    if frames.ndim == 2:
        frames = frames[None]
    cut = 0.5 if kind == "BINARY" else float(ds.get("MaximumFractionalValue", 255)) / 2.0
    shared = _frame_item(ds, "SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence", [])
    if len(per_frame) != len(frames):
        raise NoduleError(f"SEG has {len(frames)} frames but {len(per_frame)} per-frame items", code="UNSUPPORTED_SEG")
    out = np.zeros(grid.shape_zyx, dtype=bool)
    shape = np.asarray(grid.shape_zyx)
    for f, per in enumerate(per_frame):

        def item(keyword: str, per: Dataset = per, f: int = f) -> Dataset:
            found = _frame_item(per, keyword) or _frame_item(shared, keyword)
            if found is None:
                raise NoduleError(f"SEG frame {f}: no {keyword}", code="UNSUPPORTED_SEG")
            return found

        if int(item("SegmentIdentificationSequence").ReferencedSegmentNumber) != number:
            continue
        jj, ii = np.nonzero(frames[f] > cut)
        if len(jj) == 0:
            continue
        pos = np.asarray([float(v) for v in item("PlanePositionSequence").ImagePositionPatient])
        ori = np.asarray([float(v) for v in item("PlaneOrientationSequence").ImageOrientationPatient])
        dy, dx = (float(v) for v in item("PixelMeasuresSequence").PixelSpacing)
        world = pos + (ii * dx)[:, None] * ori[:3] + (jj * dy)[:, None] * ori[3:]
        idx = np.floor(grid.world_xyz_to_index_zyx(world) + 0.5).astype(np.int64)
        ok = np.all((idx >= 0) & (idx < shape), axis=1)
        out[idx[ok, 0], idx[ok, 1], idx[ok, 2]] = True
    return out


# --------------------------------------------------------------------------------------------
# Nodule mask
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class NoduleMask:
    """A nodule's voxels and measures.

    mask_zyx: boolean crop; ``offset_zyx`` is the volume index of its voxel (0, 0, 0)
        (:meth:`full` pastes it into a volume-sized mask).
    centre_index_zyx: centroid, fractional (z, y, x) voxel index in the volume;
        ``centre_voxel_zyx`` its nearest voxel; ``centre_xyz_mm`` its world position (LPS mm).
    volume_mm3, equivalent_diameter_mm ((6 V / π)^(1/3)), max_diameter_mm (see module doc).
    threshold_hu: the HU cut used (foreground: HU > it for otsu, >= for region growing).
    touches_roi_border: the mask reaches the edge of the enlarged ROI (the nodule may be larger
        than annotated, or attached to a vessel or the wall): worth a look.
    """

    mask_zyx: np.ndarray
    offset_zyx: tuple[int, int, int]
    centre_index_zyx: tuple[float, float, float]
    centre_voxel_zyx: tuple[int, int, int]
    centre_xyz_mm: tuple[float, float, float]
    n_voxels: int
    volume_mm3: float
    equivalent_diameter_mm: float
    max_diameter_mm: float
    threshold_hu: float
    method: str
    touches_roi_border: bool

    def full(self, shape_zyx: tuple[int, int, int]) -> np.ndarray:
        """The mask pasted into a boolean volume of ``shape_zyx``."""
        out = np.zeros(shape_zyx, dtype=bool)
        z, y, x = self.offset_zyx
        dz, dy, dx = self.mask_zyx.shape
        out[z : z + dz, y : y + dy, x : x + dx] = self.mask_zyx
        return out


def otsu_threshold(values: np.ndarray, *, bins: int = 256) -> float:
    r"""Otsu's threshold of ``values`` (any shape): with a ``bins``-bin histogram over
    [min, max], the bin edge t that maximises the between-class variance
    :math:`\sigma_B^2(t) = \omega_0 \omega_1 (\mu_0 - \mu_1)^2` (ω class weights, μ class means);
    foreground is ``values > t``. A constant input returns its value."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("otsu_threshold of no values")
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return lo
    hist, edges = np.histogram(v, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2.0
    w0 = np.cumsum(hist)[:-1].astype(np.float64)
    s0 = np.cumsum(hist * centres)[:-1]
    total, total_s = float(hist.sum()), float((hist * centres).sum())
    w1 = total - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = w0 * w1 * (s0 / w0 - (total_s - s0) / w1) ** 2
    between = np.nan_to_num(between, nan=-1.0)
    return float(edges[1 + int(np.argmax(between))])


def _closing_edt(
    mask: np.ndarray, radius_mm: float, spacing: tuple[float, float, float], pad_sides: Sequence[tuple[bool, bool]]
) -> np.ndarray:
    """Closing with a ball of ``radius_mm`` by two Euclidean distance transforms.

    pad_sides: per axis, (before, after): True where the array ends at the volume's edge; there
    the outside counts as background (padded by the radius: the closing of a lung cut by the
    volume's edge adds nothing beyond it). Elsewhere nothing is assumed beyond the array (the
    distance transform sees no background there), so crop with a margin of the radius."""
    if not mask.any():
        return mask.copy()
    pad = [(int(math.ceil(radius_mm / s)) + 1) if flag else 0 for s, sides in zip(spacing, pad_sides, strict=True)
           for flag in sides]
    widths = [(pad[2 * a], pad[2 * a + 1]) for a in range(3)]
    m = np.pad(mask, widths, mode="constant")
    dilated = ndimage.distance_transform_edt(~m, sampling=spacing) <= radius_mm
    closed = ndimage.distance_transform_edt(dilated, sampling=spacing) > radius_mm
    return mask | closed[tuple(slice(w[0], w[0] + n) for w, n in zip(widths, mask.shape, strict=True))]


def _max_diameter_mm(mask: np.ndarray, spacing: np.ndarray) -> float:
    """Largest centre-to-centre distance (mm) between mask voxels, over the convex hull of the
    boundary voxels; the largest spacing for a single voxel."""
    boundary = mask & ~ndimage.binary_erosion(mask)
    pts = np.argwhere(boundary if boundary.any() else mask) * spacing
    if len(pts) > 4:
        try:
            from scipy.spatial import ConvexHull, QhullError

            try:
                pts = pts[ConvexHull(pts).vertices]
            except QhullError:               # flat: all points in one plane or line
                pass
        except ImportError:  # pragma: no cover - scipy always has spatial
            pass
    if len(pts) > 3000:
        pts = pts[:: len(pts) // 3000 + 1]
    d2 = ((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
    a, b = np.unravel_index(int(np.argmax(d2)), d2.shape)
    dist = float(np.sqrt(d2[a, b]))
    if dist == 0.0:
        return float(spacing.max())
    return dist


def nodule_mask(
    hu_zyx: np.ndarray,
    grid: Grid,
    roi: Sphere | Box | NoduleAnnotation,
    lung_mask_zyx: np.ndarray | None = None,
    *,
    enlarge: float = 0.15,
    method: Literal["otsu", "region_growing"] = "otsu",
    threshold_hu: float | None = None,
    pleura: Literal["rolling_ball", "dilate", "none"] = "rolling_ball",
    pleura_ball_factor: float = 2.0,
    pleura_ball_max_mm: float = 30.0,
    pleura_margin_mm: float = 2.0,
    min_contrast_hu: float = 100.0,
) -> NoduleMask:
    """Segment the nodule annotated by ``roi`` in ``hu_zyx`` (on ``grid``); steps in the module
    docstring. ``lung_mask_zyx`` (same shape; None: no restriction) restricts it, with the pleura
    handled per ``pleura``; ``enlarge``: relative growth of the ROI (0.15: 15 %).
    ``min_contrast_hu``: the foreground must be at least this much denser than the rest of the
    ROI (Otsu: difference of the two class means; region growing: seed minus background), else
    there is no nodule to find (Otsu splits pure noise too).

    Raises NoduleError ROI_OUTSIDE_VOLUME (no voxel of the ROI in the volume), NODULE_NOT_FOUND
    (no voxel above the threshold in the core), SHAPE_MISMATCH.
    """
    hu = np.asarray(hu_zyx)
    if hu.shape != tuple(grid.shape_zyx):
        raise NoduleError(f"hu_zyx has shape {hu.shape}, grid says {grid.shape_zyx}", code="SHAPE_MISMATCH")
    if lung_mask_zyx is not None and np.shape(lung_mask_zyx) != hu.shape:
        raise NoduleError(f"lung mask shape {np.shape(lung_mask_zyx)} != volume {hu.shape}", code="SHAPE_MISMATCH")
    if method not in ("otsu", "region_growing"):
        raise ValueError(f"method must be 'otsu' or 'region_growing', got {method!r}")
    if pleura not in ("rolling_ball", "dilate", "none"):
        raise ValueError(f"pleura must be 'rolling_ball', 'dilate' or 'none', got {pleura!r}")
    if isinstance(roi, NoduleAnnotation):
        roi = roi.roi
    spacing = np.asarray(grid.spacing_zyx_mm, dtype=np.float64)
    f = 1.0 + float(enlarge)
    centre = grid.world_xyz_to_index_zyx(np.asarray(roi.centre_xyz_mm))
    if isinstance(roi, Sphere):
        radius_mm = roi.diameter_mm / 2.0 * f
        half_vox = np.full(3, radius_mm) / spacing
    else:
        (x0, y0, z0), (x1, y1, z1) = roi.lo_xyz_mm, roi.hi_xyz_mm
        corners = np.array([[x, y, z] for x in (x0, x1) for y in (y0, y1) for z in (z0, z1)])
        idx = grid.world_xyz_to_index_zyx(corners)
        half_vox = (idx.max(axis=0) - idx.min(axis=0)) / 2.0 * f
        radius_mm = float(np.max(half_vox * spacing))
    core_mm = max(radius_mm / 2.0, 1.5 * float(spacing.max()))

    # crop: the ROI plus what the pleura closing needs around it
    margin_mm = 0.0
    ball_mm = min(pleura_ball_factor * radius_mm, pleura_ball_max_mm)
    if lung_mask_zyx is not None and pleura == "rolling_ball":
        margin_mm = ball_mm + float(spacing.max())
    elif lung_mask_zyx is not None and pleura == "dilate":
        margin_mm = pleura_margin_mm
    lo = np.floor(centre - half_vox - margin_mm / spacing - 1).astype(int)
    hi = np.ceil(centre + half_vox + margin_mm / spacing + 1).astype(int) + 1
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, np.asarray(hu.shape))
    if np.any(hi <= lo):
        raise NoduleError(f"ROI around index {np.round(centre, 1).tolist()} lies outside the volume {hu.shape}",
                          code="ROI_OUTSIDE_VOLUME", hint="check the annotation's series and world coordinates")
    crop = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    sub = hu[crop].astype(np.float32, copy=False)
    axes = [np.arange(a, b, dtype=np.float64) - c for a, b, c in zip(lo, hi, centre, strict=True)]
    if isinstance(roi, Sphere):
        r2 = (axes[0] * spacing[0])[:, None, None] ** 2 + (axes[1] * spacing[1])[None, :, None] ** 2 \
            + (axes[2] * spacing[2])[None, None, :] ** 2
        in_roi = r2 <= radius_mm**2
    else:
        hv = half_vox + 1e-6
        in_roi = (np.abs(axes[0])[:, None, None] <= hv[0]) & (np.abs(axes[1])[None, :, None] <= hv[1]) \
            & (np.abs(axes[2])[None, None, :] <= hv[2])
        r2 = (axes[0] * spacing[0])[:, None, None] ** 2 + (axes[1] * spacing[1])[None, :, None] ** 2 \
            + (axes[2] * spacing[2])[None, None, :] ** 2
    core = r2 <= core_mm**2
    if not in_roi.any():
        raise NoduleError(f"ROI around index {np.round(centre, 1).tolist()} has no voxel inside the volume",
                          code="ROI_OUTSIDE_VOLUME", hint="check the annotation's series and world coordinates")

    allowed = np.ones_like(in_roi)
    if lung_mask_zyx is not None:
        lung = np.asarray(lung_mask_zyx[crop], dtype=bool)
        if pleura == "rolling_ball":
            at_edge = [(bool(lo[a] == 0), bool(hi[a] == hu.shape[a])) for a in range(3)]
            allowed = _closing_edt(lung, ball_mm, tuple(spacing), at_edge)
        elif pleura == "dilate":
            allowed = lung | (ndimage.distance_transform_edt(~lung, sampling=tuple(spacing)) <= pleura_margin_mm) \
                if lung.any() else lung
        else:
            allowed = lung
    region = in_roi & allowed
    if not region.any():
        raise NoduleError("the ROI does not overlap the lung mask", code="NODULE_NOT_FOUND",
                          hint="check the lung mask, or pass lung_mask_zyx=None")
    values = sub[region]

    if method == "otsu":
        t = otsu_threshold(values) if threshold_hu is None else float(threshold_hu)
        above, below = values[values > t], values[values <= t]
        contrast = float(above.mean() - below.mean()) if len(above) and len(below) else 0.0
        if contrast < min_contrast_hu:
            raise NoduleError(f"no nodule: the Otsu classes of the ROI differ by {contrast:.0f} HU "
                              f"(< {min_contrast_hu:g} HU)", code="NODULE_NOT_FOUND",
                              hint="check the annotation's position, or the lung mask's pleura handling")
        fg = region & (sub > t)
        labels, n = ndimage.label(fg)
        if n == 0:
            raise NoduleError(f"no voxel above {t:.0f} HU in the ROI", code="NODULE_NOT_FOUND")
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        sizes[0] = 0
        in_core = np.zeros(n + 1, dtype=bool)
        in_core[np.unique(labels[core & fg])] = True
        in_core[0] = False
        pick = np.where(in_core, sizes, 0) if in_core.any() else sizes
        mask = labels == int(np.argmax(pick))
    else:
        mean3 = ndimage.uniform_filter(sub, size=3, mode="nearest")
        seed_region = core & region
        if not seed_region.any():
            raise NoduleError("the ROI's core does not overlap the lung mask", code="NODULE_NOT_FOUND")
        flat = np.where(seed_region, mean3, -np.inf)
        seed = np.unravel_index(int(np.argmax(flat)), flat.shape)
        background = float(np.percentile(values, 10))
        if float(mean3[seed]) - background < min_contrast_hu:
            raise NoduleError(f"no nodule: seed {float(mean3[seed]):.0f} HU vs background {background:.0f} HU "
                              f"(< {min_contrast_hu:g} HU apart)", code="NODULE_NOT_FOUND")
        t = (float(mean3[seed]) + background) / 2.0 if threshold_hu is None else float(threshold_hu)
        fg = region & (sub >= t)
        if not fg[seed]:
            raise NoduleError(f"the seed ({float(sub[seed]):.0f} HU) is below the threshold {t:.0f} HU",
                              code="NODULE_NOT_FOUND")
        labels, _ = ndimage.label(fg)
        mask = labels == labels[seed]

    n_vox = int(mask.sum())
    if n_vox == 0:   # pragma: no cover - a picked component is never empty
        raise NoduleError("empty nodule mask", code="NODULE_NOT_FOUND")
    # shrink the crop to the mask's bounding box
    nz = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    tight = tuple(slice(int(i[0]), int(i[-1]) + 1) for i in nz)
    m = mask[tight]
    offset = tuple(int(lo[a] + tight[a].start) for a in range(3))
    com = np.array(ndimage.center_of_mass(m)) + np.asarray(offset)
    roi_edge = in_roi & ~ndimage.binary_erosion(in_roi, border_value=0)
    volume = n_vox * float(np.prod(spacing))
    return NoduleMask(
        mask_zyx=m,
        offset_zyx=offset,  # type: ignore[arg-type]
        centre_index_zyx=tuple(float(v) for v in com),  # type: ignore[arg-type]
        centre_voxel_zyx=tuple(int(v) for v in np.floor(com + 0.5)),  # type: ignore[arg-type]
        centre_xyz_mm=tuple(float(v) for v in grid.index_zyx_to_world_xyz(com)),  # type: ignore[arg-type]
        n_voxels=n_vox,
        volume_mm3=volume,
        equivalent_diameter_mm=float((6.0 * volume / math.pi) ** (1.0 / 3.0)),
        max_diameter_mm=_max_diameter_mm(m, spacing),
        threshold_hu=float(t),
        method=method,
        touches_roi_border=bool((mask & roi_edge).any()),
    )


def measure_mask(
    mask_zyx: np.ndarray,
    grid: Grid,
    *,
    method: str = "given",
    largest_component: bool = True,
) -> NoduleMask:
    """A :class:`NoduleMask` (crop, centroid, volume, diameters) of a mask given on ``grid``, e.g.
    a DICOM SEG segment or an RTSTRUCT ROI resampled onto the volume's grid. With
    ``largest_component`` only its largest 6-connected component is kept. ``threshold_hu`` is NaN
    and ``touches_roi_border`` False (there is no ROI). Raises NoduleError NODULE_NOT_FOUND for
    an empty mask, SHAPE_MISMATCH for a mask not of ``grid.shape_zyx``."""
    m = np.asarray(mask_zyx, dtype=bool)
    if m.shape != tuple(grid.shape_zyx):
        raise NoduleError(f"mask has shape {m.shape}, grid says {grid.shape_zyx}", code="SHAPE_MISMATCH")
    if not m.any():
        raise NoduleError("the mask has no voxel on the grid", code="NODULE_NOT_FOUND",
                          hint="check that the segmentation refers to this series")
    nz = [np.flatnonzero(m.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    box = tuple(slice(int(i[0]), int(i[-1]) + 1) for i in nz)
    crop = m[box]
    if largest_component:
        labels, n = ndimage.label(crop)
        if n > 1:
            sizes = np.bincount(labels.ravel())
            sizes[0] = 0
            crop = labels == int(np.argmax(sizes))
            nz = [np.flatnonzero(crop.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
            tight = tuple(slice(int(i[0]), int(i[-1]) + 1) for i in nz)
            crop = crop[tight]
            box = tuple(slice(b.start + t.start, b.start + t.stop) for b, t in zip(box, tight, strict=True))
    spacing = np.asarray(grid.spacing_zyx_mm, dtype=np.float64)
    offset = tuple(int(b.start) for b in box)
    com = np.array(ndimage.center_of_mass(crop)) + np.asarray(offset)
    n_vox = int(crop.sum())
    volume = n_vox * float(np.prod(spacing))
    return NoduleMask(
        mask_zyx=crop,
        offset_zyx=offset,  # type: ignore[arg-type]
        centre_index_zyx=tuple(float(v) for v in com),  # type: ignore[arg-type]
        centre_voxel_zyx=tuple(int(v) for v in np.floor(com + 0.5)),  # type: ignore[arg-type]
        centre_xyz_mm=tuple(float(v) for v in grid.index_zyx_to_world_xyz(com)),  # type: ignore[arg-type]
        n_voxels=n_vox,
        volume_mm3=volume,
        equivalent_diameter_mm=float((6.0 * volume / math.pi) ** (1.0 / 3.0)),
        max_diameter_mm=_max_diameter_mm(crop, spacing),
        threshold_hu=float("nan"),
        method=method,
        touches_roi_border=False,
    )
