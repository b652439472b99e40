"""Spark glue: annotations + silver.ct_volumes + silver.lung_masks → gold.nodules.

Annotations (read on the driver; they are small):

* **LUNA16-style CSV** (``--luna16 FILE``): ``seriesuid, coordX, coordY, coordZ, diameter_mm`` in
  world LPS mm, plus any columns (``malignancy`` is read as a number; the others go to
  ``attributes``; columns named ``patient*`` are dropped: they hold the ORIGINAL patient id, and
  the lake's ``patient_pseudo_id`` is taken from ``silver.ct_series`` instead).
* **PASCAL VOC folders** (``--voc DIR``): ``<SOPInstanceUID>.xml`` boxes per slice (searched
  recursively); boxes on consecutive slices are one lesion (:func:`ctlake.imaging.nodules.voc_lesions`).
  The slices' geometry comes from ``bronze.dicom_instances`` (no pixels read).
* **DICOM RTSTRUCT / SEG** instances in ``bronze.dicom_instances`` (modality RTSTRUCT or SEG):
  every ROI / segment that is not an organ or body contour (RTROIInterpretedType EXTERNAL, ORGAN,
  AVOIDANCE ...; SEG category "Anatomical Structure") becomes an annotation of the series it
  references. Its mask is rasterised on the series' source grid and resampled onto the silver
  grid (linear, >= 0.5); the largest component is kept (``mask_method`` contour / seg).

UIDs and de-identification. Bronze holds de-identified instances: every UID was replaced by
``ctlake.dicom.deid.remap_uid(uid, site key)`` at the edge, so an annotation file written against
the ORIGINAL files (the synthetic cohort's ``annotations.csv`` and its VOC files, TCIA's VOC
boxes) names UIDs the lake does not have. A CSV series UID or a VOC file's SOP Instance UID is
therefore looked up as it is first (annotations made on the lake's own data) and, when absent,
as ``remap_uid(uid, site_key(cfg))`` — the same keyed mapping the edge applied, so the site key
of the ingest must be configured. The original UIDs are never written to the lake: rows carry the
lake's UIDs, and ``source_ref`` names the lake's SOP UIDs. DICOM RTSTRUCT/SEG objects went through
the same de-identification, so their references already match.

Nodule masks (:func:`ctlake.imaging.nodules.nodule_mask`, settings ``imaging.nodules``): inside the
sphere / box enlarged by 15 %, Otsu (or region growing), restricted to the lung mask (rolling-ball
closing for juxtapleural nodules), largest component. ``diameter_mm`` is the equivalent-sphere
diameter (6 V / π)^(1/3) of the mask, ``max_diameter_mm`` its 3D Feret diameter; the mask crop is
CTT1 uint8 at ``mask_origin_zyx`` of the silver grid.

Ids and increments: ``nodule_id`` = sha256(series uid | source | source_ref)[:32], where source_ref
is the annotation's content (CSV: centre and diameter to 1 µm; VOC: label, first slice's lake SOP
UID, its pixel box and the slice count; RTSTRUCT/SEG: the object's SOP UID and the ROI/segment
number), so the same annotation read twice is one nodule. A nodule whose id is in ``gold.nodules``
is skipped — except a row that failed only because the lake was not ready
(:data:`WAITING_CODES`: series not ingested or not built, lung mask missing or failed): it is
tried again once its series has an ok lung mask (and then updated in place).

Failures are rows (status failed, ``error_code``, ``error_detail``), never a stopped job.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctlake.config import Config
from ctlake.lake import delta
from ctlake.lake.runs import record_run, utcnow
from ctlake.lake.schemas import NODULES, rows_frame, union_schema

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

BRONZE = "bronze.dicom_instances"
SERIES = "silver.ct_series"
VOLUMES = "silver.ct_volumes"
LUNGS = "silver.lung_masks"
NODULES_TABLE = "gold.nodules"

#: Failures that depend on the state of the lake, not on the annotation: retried when the series
#: has a volume and an ok lung mask.
WAITING_CODES = frozenset({"SERIES_NOT_IN_LAKE", "SERIES_NOT_BUILT", "NO_LUNG_MASK", "LUNG_MASK_FAILED"})
#: RTSTRUCT ROI types that are not lesions.
NON_LESION_ROI_TYPES = frozenset({"EXTERNAL", "ORGAN", "AVOIDANCE", "BOLUS", "SUPPORT", "FIXATION", "CONTROL",
                                  "ISOCENTER", "MARKER", "REGISTRATION", "DOSE_REGION", "CONTRAST_AGENT",
                                  "CAVITY", "BRACHY_CHANNEL", "BRACHY_ACCESSORY", "BRACHY_SRC_APP",
                                  "BRACHY_CHNL_SHLD"})
#: SEG segment categories that are not lesions (SNOMED CT / SRT "Anatomical Structure").
ANATOMY_CATEGORY_CODES = frozenset({"123037004", "T-D000A", "91723000"})

# What the driver hands to the workers: one row per annotation to segment.
_ANN_FIELDS = [
    ("nodule_id", "string"), ("series_instance_uid", "string"), ("patient_pseudo_id", "string"),
    ("source", "string"), ("source_ref", "string"), ("roi_kind", "string"),
    ("centre_xyz_mm", "array<double>"), ("diameter_mm", "double"), ("box_lo_xyz_mm", "array<double>"),
    ("box_hi_xyz_mm", "array<double>"), ("malignancy", "double"), ("attributes", "map<string,string>"),
    ("object_sop_uid", "string"), ("roi_number", "int"),
    ("source_shape_zyx", "array<int>"), ("source_spacing_zyx_mm", "array<double>"),
    ("source_origin_xyz_mm", "array<double>"), ("source_direction", "array<double>"),
]
ANNOTATION_DDL = ", ".join(f"{n} {t}" for n, t in _ANN_FIELDS)
_SLAB_COLS = ["series_instance_uid", "slab_index", "z0", "z1", "data", "volume_shape_zyx", "spacing_zyx_mm",
              "origin_xyz_mm", "direction"]


def nodule_id(series_instance_uid: str, source: str, source_ref: str) -> str:
    """sha256(series uid | source | source_ref)[:32] (the ``gold.nodules`` key)."""
    return hashlib.sha256(f"{series_instance_uid}|{source}|{source_ref}".encode()).hexdigest()[:32]


def _number(text: Any) -> float | None:
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


class UidMapper:
    """Annotation UIDs → the lake's: as they are when the lake has them, else through the site
    key's :func:`~ctlake.dicom.deid.remap_uid` (see the module docstring). The key is loaded on
    first need; without one, only UIDs already in the lake's form are found."""

    def __init__(self, key_fn: Callable[[], bytes]) -> None:
        self._key_fn = key_fn
        self._key: bytes | None = None
        self._key_error: str | None = None
        self._loaded = False

    @property
    def key(self) -> bytes | None:
        if not self._loaded:
            self._loaded = True
            try:
                self._key = self._key_fn()
            except Exception as exc:  # noqa: BLE001 - ConfigError without a key: report, do not stop
                self._key_error = f"{type(exc).__name__}: {exc}"
        return self._key

    @property
    def key_error(self) -> str | None:
        return self._key_error

    def remapped(self, uid: str) -> str | None:
        from ctlake.dicom.deid import remap_uid

        return remap_uid(uid, self.key) if self.key is not None else None

    def lake_uid(self, uid: str, known: set[str] | dict) -> tuple[str, bool]:
        """(the lake's uid, found): the uid itself when known, else its remapped form (found or
        not; the uid itself when there is no key)."""
        if uid in known:
            return uid, True
        mapped = self.remapped(uid)
        if mapped is None:
            return uid, False
        return mapped, mapped in known


# --------------------------------------------------------------------------------------------
# Annotations (driver)
# --------------------------------------------------------------------------------------------
def luna16_annotations(paths: Sequence[str | Path], mapper: UidMapper, known: set[str] | dict) -> list[dict]:
    """Rows of LUNA16-style CSVs as annotation dicts on the lake's series UIDs."""
    from ctlake.imaging.nodules import read_luna16_csv

    out = []
    for path in paths:
        for ann in read_luna16_csv(path):
            uid, _ = mapper.lake_uid(ann.series_instance_uid, known)
            x, y, z = ann.centre_xyz_mm
            d = float(ann.diameter_mm or 0.0)
            extra = {k: str(v) for k, v in ann.extra.items()
                     if v is not None and not str(k).lower().startswith("patient")}
            ref = f"{x:.3f},{y:.3f},{z:.3f},d={d:.3f}"
            out.append({"nodule_id": nodule_id(uid, "luna16", ref), "series_instance_uid": uid, "source": "luna16",
                        "source_ref": ref, "roi_kind": "sphere", "centre_xyz_mm": [x, y, z], "diameter_mm": d,
                        "malignancy": _number(extra.get("malignancy")), "attributes": extra})
    return out


_GEOMETRY_COLS = ["sop_instance_uid", "series_instance_uid", "modality", "sop_class_uid", "rows", "columns",
                  "pixel_spacing_mm", "image_position_patient_mm", "image_orientation_patient", "slice_thickness_mm",
                  "instance_number", "number_of_frames"]


def voc_annotations(spark: SparkSession, cfg: Config, folders: Sequence[str | Path], mapper: UidMapper,
                    ) -> tuple[list[dict], dict[str, Any]]:
    """PASCAL VOC folders → annotation dicts (one per lesion) and a report: files whose slice is
    not in bronze (``unmatched``), bronze rows that could not be placed (multi-frame)."""
    import dataclasses

    from pyspark.sql import functions as F

    from ctlake.imaging.nodules import voc_lesions
    from ctlake.imaging.series import slice_info_from_summary

    files = [p for d in folders for p in sorted(Path(d).rglob("*.xml"))]
    report: dict[str, Any] = {"voc_files": len(files), "voc_unmatched_files": 0, "voc_lesions": 0}
    if not files or not delta.exists(spark, cfg.table_path(BRONZE)):
        report["voc_unmatched_files"] = len(files)
        return [], report
    candidates = []
    for p in files:
        candidates.append((p.stem, p.stem))
        mapped = mapper.remapped(p.stem)
        if mapped is not None:
            candidates.append((mapped, p.stem))
    cand = spark.createDataFrame(candidates, "sop_instance_uid string, stem string")
    bronze = delta.read(spark, cfg, BRONZE)
    hits = bronze.select("sop_instance_uid", "series_instance_uid").join(F.broadcast(cand), "sop_instance_uid") \
        .collect()
    lake_sop = {r.stem: r.sop_instance_uid for r in hits}
    stem_of = {r.sop_instance_uid: r.stem for r in hits}
    series_of = {r.stem: r.series_instance_uid for r in hits if r.series_instance_uid}
    series = sorted(set(series_of.values()))
    by_series: dict[str, list[Path]] = {}
    for p in files:
        s = series_of.get(p.stem)
        if s is None:
            report["voc_unmatched_files"] += 1
        else:
            by_series.setdefault(s, []).append(p)
    if not series:
        return [], report
    rows: dict[str, list] = {}
    for r in bronze.select(_GEOMETRY_COLS).join(
            F.broadcast(spark.createDataFrame([(s,) for s in series], "series_instance_uid string")),
            "series_instance_uid").collect():
        rows.setdefault(r.series_instance_uid, []).append(r)
    out = []
    skipped = 0
    for uid in series:
        infos = []
        for r in rows.get(uid, []):
            try:
                info = slice_info_from_summary(r.asDict())
            except ValueError:          # a multi-frame instance: VOC boxes are per single-frame slice
                skipped += 1
                continue
            if info.has_geometry:
                # named by the annotation file's stem, so voc_lesions matches the files
                infos.append(dataclasses.replace(info, sop_instance_uid=stem_of.get(info.sop_instance_uid,
                                                                                     info.sop_instance_uid)))
        if not infos:
            continue
        found = voc_lesions(by_series[uid], infos, index_base=cfg.imaging.nodules.voc_index_base,
                            max_gap_slices=cfg.imaging.nodules.voc_max_gap_slices)
        for lesion in found.lesions:
            first = lesion.slice_boxes[0]
            sops = [lake_sop.get(b.sop_instance_uid, b.sop_instance_uid) for b in lesion.slice_boxes]
            ref = (f"{lesion.label} {sops[0]} {','.join(str(v) for v in first.pixel_box)} "
                   f"+{len(sops) - 1} slices")
            box = lesion.box
            out.append({"nodule_id": nodule_id(uid, "voc", ref), "series_instance_uid": uid, "source": "voc",
                        "source_ref": ref, "roi_kind": "box", "centre_xyz_mm": list(box.centre_xyz_mm),
                        "box_lo_xyz_mm": list(box.lo_xyz_mm), "box_hi_xyz_mm": list(box.hi_xyz_mm),
                        "attributes": {"label": lesion.label, "slices": str(len(sops)),
                                       "sop_instance_uids": " ".join(sops)}})
    report["voc_lesions"] = len(out)
    report["voc_multiframe_skipped"] = skipped
    return out, report


def _json_value(item: dict, tag: str) -> list:
    return (item.get(tag) or {}).get("Value") or []


def dicom_object_annotations(spark: SparkSession, cfg: Config) -> tuple[list[dict], dict[str, Any]]:
    """RTSTRUCT ROIs and SEG segments in bronze (from their ``header_json``) → annotation dicts."""
    from pyspark.sql import functions as F

    report = {"dicom_objects": 0, "dicom_rois": 0}
    if not delta.exists(spark, cfg.table_path(BRONZE)):
        return [], report
    objs = delta.read(spark, cfg, BRONZE).filter(F.col("modality").isin("RTSTRUCT", "SEG")) \
        .select("sop_instance_uid", "modality", "header_json").collect()
    report["dicom_objects"] = len(objs)
    out = []
    for o in objs:
        try:
            header = json.loads(o.header_json)
        except ValueError:
            continue
        rois: list[tuple[int, str, dict]] = []       # (number, label, attributes)
        refs: set[str] = set()
        if o.modality == "RTSTRUCT":
            for fr in _json_value(header, "30060010"):                 # ReferencedFrameOfReferenceSequence
                for st in _json_value(fr, "30060012"):                 # RTReferencedStudySequence
                    for se in _json_value(st, "30060014"):             # RTReferencedSeriesSequence
                        refs.update(str(v) for v in _json_value(se, "0020000E"))
            kinds = {}
            for obs in _json_value(header, "30060080"):                # RTROIObservationsSequence
                num = _json_value(obs, "30060084")                     # ReferencedROINumber
                kind = _json_value(obs, "300600A4")                    # RTROIInterpretedType
                if num:
                    kinds[int(num[0])] = str(kind[0]).upper() if kind else ""
            with_contours = {int(_json_value(rc, "30060084")[0]) for rc in _json_value(header, "30060039")
                             if _json_value(rc, "30060084")}           # ROIContourSequence
            for item in _json_value(header, "30060020"):               # StructureSetROISequence
                num = _json_value(item, "30060022")
                if not num or int(num[0]) not in with_contours:
                    continue
                name = _json_value(item, "30060026")
                kind = kinds.get(int(num[0]), "")
                if kind in NON_LESION_ROI_TYPES:
                    continue
                rois.append((int(num[0]), str(name[0]) if name else "", {"roi_type": kind} if kind else {}))
            source, method = "rtstruct", "contour"
        else:
            for se in _json_value(header, "00081115"):                 # ReferencedSeriesSequence
                refs.update(str(v) for v in _json_value(se, "0020000E"))
            for item in _json_value(header, "00620002"):               # SegmentSequence
                num = _json_value(item, "00620004")
                if not num:
                    continue
                cats = [str(v) for c in _json_value(item, "00620003") for v in _json_value(c, "00080100")]
                if any(c in ANATOMY_CATEGORY_CODES for c in cats):
                    continue
                label = _json_value(item, "00620005")
                rois.append((int(num[0]), str(label[0]) if label else "", {}))
            source, method = "seg", "seg"
        for ref_uid in sorted(refs) or [""]:
            for number, label, attrs in rois:
                ref = f"{o.sop_instance_uid} roi {number}"
                out.append({"nodule_id": nodule_id(ref_uid, source, ref), "series_instance_uid": ref_uid,
                            "source": source, "source_ref": ref, "roi_kind": source,
                            "object_sop_uid": o.sop_instance_uid, "roi_number": number,
                            "attributes": {**attrs, "label": label, "mask_method": method}})
    report["dicom_rois"] = len(out)
    return out, report


# --------------------------------------------------------------------------------------------
# Masks (worker, pure)
# --------------------------------------------------------------------------------------------
def nodule_rows(slabs: pd.DataFrame, annotations: pd.DataFrame, mask_settings: dict[str, Any], *,
                run_id: str, volumes_version: int, objects: dict[str, bytes] | None = None) -> list[dict]:
    """One series' volume and lung slabs (``kind`` volume | lung) and its annotations → gold.nodules
    rows (pure; no Spark). ``objects``: RTSTRUCT/SEG bytes by SOP UID (else taken from the
    annotations' ``object_bytes`` column)."""
    import numpy as np

    from ctlake.errors import CtlakeError
    from ctlake.lake import codec
    from ctlake.process.lungs import SlabError, assemble_slabs, records

    now = utcnow()
    anns = records(annotations)
    try:
        hu, grid, _ = assemble_slabs(slabs[slabs["kind"] == "volume"])
        lung, lung_grid, _ = assemble_slabs(slabs[slabs["kind"] == "lung"])
        if lung_grid != grid:
            raise SlabError(f"the lung mask's grid {lung_grid} is not the volume's {grid}")
        lung = lung.astype(bool)
        problem = None
    except (SlabError, CtlakeError, ValueError) as exc:
        problem = (getattr(exc, "code", "SLABS_INCOMPLETE"), f"{type(exc).__name__}: {exc}")
    rows = []
    for a in anns:
        row = _base_row(a, run_id=run_id, now=now, volumes_version=volumes_version)
        if problem is not None:
            rows.append({**row, "status": "failed", "error_code": problem[0], "error_detail": problem[1][:4000]})
            continue
        row["spacing_zyx_mm"] = list(grid.spacing_zyx_mm)
        if a.get("centre_xyz_mm") is not None:
            row["annotated_centre_zyx_vox"] = [float(v) for v in grid.world_xyz_to_index_zyx(
                np.asarray(a["centre_xyz_mm"], dtype=np.float64))]
        try:
            nm = _mask_of(a, hu, grid, lung, mask_settings, objects)
        except CtlakeError as exc:
            rows.append({**row, "status": "failed", "error_code": exc.code, "error_detail": str(exc)[:4000]})
            continue
        except Exception as exc:  # noqa: BLE001 - one bad annotation never stops the job; the code marks a bug
            rows.append({**row, "status": "failed", "error_code": "UNEXPECTED_NODULE_ERROR",
                         "error_detail": f"{type(exc).__name__}: {exc}"[:4000]})
            continue
        if row["centre_xyz_mm"] is None:          # SEG / RTSTRUCT: the mask's centroid is the centre
            row["centre_xyz_mm"] = list(nm.centre_xyz_mm)
            row["annotated_centre_zyx_vox"] = list(nm.centre_index_zyx)
        rows.append({**row, "status": "ok", "centre_zyx_vox": list(nm.centre_index_zyx),
                     "measured_centre_xyz_mm": list(nm.centre_xyz_mm), "diameter_mm": nm.equivalent_diameter_mm,
                     "max_diameter_mm": nm.max_diameter_mm, "volume_mm3": nm.volume_mm3,
                     "mask_voxels": nm.n_voxels, "mask_method": nm.method,
                     "mask_threshold_hu": None if math.isnan(nm.threshold_hu) else nm.threshold_hu,
                     "touches_roi_border": nm.touches_roi_border,
                     "mask_origin_zyx": list(nm.offset_zyx), "mask_shape_zyx": list(nm.mask_zyx.shape),
                     "mask_codec": "CTT1", "mask_data": codec.encode(nm.mask_zyx.astype(np.uint8))})
    return rows


def _base_row(a: dict, *, run_id: str, now, volumes_version: int | None) -> dict[str, Any]:
    return {"nodule_id": a["nodule_id"], "series_instance_uid": a["series_instance_uid"],
            "patient_pseudo_id": a.get("patient_pseudo_id"), "source": a["source"], "source_ref": a["source_ref"],
            "centre_xyz_mm": _list(a.get("centre_xyz_mm")), "annotated_diameter_mm": a.get("diameter_mm"),
            "annotated_box_lo_xyz_mm": _list(a.get("box_lo_xyz_mm")),
            "annotated_box_hi_xyz_mm": _list(a.get("box_hi_xyz_mm")),
            "malignancy": a.get("malignancy"), "attributes": dict(a.get("attributes") or {}),
            "volumes_version": volumes_version, "run_id": run_id, "built_at": now}


def _list(v) -> list[float] | None:
    return None if v is None else [float(x) for x in v]


def _mask_of(a: dict, hu, grid, lung, settings: dict[str, Any], objects: dict[str, bytes] | None):
    import numpy as np

    from ctlake.imaging.grid import Grid
    from ctlake.imaging.nodules import Box, NoduleError, Sphere, measure_mask, nodule_mask, rtstruct_mask, seg_mask
    from ctlake.imaging.resample import resample_onto

    kind = a["roi_kind"]
    if kind == "sphere":
        return nodule_mask(hu, grid, Sphere(tuple(a["centre_xyz_mm"]), float(a["diameter_mm"])), lung, **settings)
    if kind == "box":
        return nodule_mask(hu, grid, Box(tuple(a["box_lo_xyz_mm"]), tuple(a["box_hi_xyz_mm"])), lung, **settings)
    if kind not in ("rtstruct", "seg"):
        raise NoduleError(f"unknown annotation kind {kind!r}", code="BAD_ANNOTATION")
    from ctlake.dicom.reader import parse_dicom
    from ctlake.ingest.producer import read_claim_check

    raw = (objects or {}).get(a["object_sop_uid"])
    if raw is None:
        data, uri = a.get("object_bytes"), a.get("object_uri")
        raw = bytes(data) if data is not None else (read_claim_check(uri) if uri else None)
    if raw is None:
        raise NoduleError(f"{kind} {a['object_sop_uid']} has no bytes in bronze", code="OBJECT_MISSING")
    if a.get("source_shape_zyx") is None:
        raise NoduleError("the series has no source geometry in silver.ct_series", code="NO_SOURCE_GRID")
    source = Grid(tuple(int(v) for v in a["source_shape_zyx"]), tuple(float(v) for v in a["source_spacing_zyx_mm"]),
                  tuple(float(v) for v in a["source_origin_xyz_mm"]), tuple(float(v) for v in a["source_direction"]))
    ds = parse_dicom(raw)
    number = int(a["roi_number"])
    src_mask = rtstruct_mask(ds, source, number) if kind == "rtstruct" else seg_mask(ds, source, number)
    on_grid = resample_onto(src_mask.astype(np.float32), source, grid, order=1, window_hu=None) >= 0.5
    return measure_mask(on_grid, grid, method="contour" if kind == "rtstruct" else "seg")


# --------------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------------
def _failed(a: dict, code: str, detail: str, *, run_id: str, now, volumes_version: int | None) -> dict:
    return {**_base_row(a, run_id=run_id, now=now, volumes_version=volumes_version), "status": "failed",
            "error_code": code, "error_detail": detail[:4000]}


def build_nodules(spark: SparkSession, cfg: Config, *, luna16: Iterable[str | Path] = (),
                  voc: Iterable[str | Path] = (), dicom_objects: bool = True,
                  run_id: str | None = None) -> dict[str, Any]:
    """Annotations (LUNA16 CSVs, VOC folders, bronze RTSTRUCT/SEG) → ``gold.nodules``; a summary.
    See the module docstring for UIDs, masks and increments."""
    from ctlake.process.lungs import run_recorded

    run_id = run_id or f"build_nodules:{uuid.uuid4().hex}"
    luna16, voc = [str(p) for p in luna16], [str(p) for p in voc]
    return run_recorded(spark, cfg, "build_nodules", run_id, lambda started: _build_nodules(
        spark, cfg, luna16, voc, dicom_objects, run_id, started),
        params={"luna16_files": len(luna16), "voc_folders": len(voc), "dicom_objects": dicom_objects})


def _build_nodules(spark: SparkSession, cfg: Config, luna16: list[str], voc: list[str], dicom_objects: bool,
                   run_id: str, started) -> dict[str, Any]:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from ctlake.ingest.keys import site_key

    t0 = time.monotonic()
    settings = cfg.imaging.nodules.mask_kwargs()
    volumes_version = delta.version(spark, cfg.table_path(VOLUMES))
    lungs_version = delta.version(spark, cfg.table_path(LUNGS))
    series: dict[str, Any] = {}
    if delta.exists(spark, cfg.table_path(SERIES)):
        series = {r.series_instance_uid: r for r in delta.read(spark, cfg, SERIES).select(
            "series_instance_uid", "status", "refusal_code", "patient_pseudo_id", "source_shape_zyx",
            "source_spacing_zyx_mm", "origin_xyz_mm", "direction").collect()}
    lungs: dict[str, Any] = {}
    if lungs_version >= 0:
        lungs = {r.series_instance_uid: r for r in delta.read(spark, cfg, LUNGS, as_of=lungs_version)
                 .filter(F.col("slab_index") <= 0).select("series_instance_uid", "status", "error_code").collect()}
    existing: dict[str, Any] = {}
    if delta.exists(spark, cfg.table_path(NODULES_TABLE)):
        existing = {r.nodule_id: r for r in delta.read(spark, cfg, NODULES_TABLE)
                    .select("nodule_id", "status", "error_code").collect()}

    mapper = UidMapper(lambda: site_key(cfg))
    anns = luna16_annotations(luna16, mapper, series)
    voc_anns, report = voc_annotations(spark, cfg, voc, mapper) if voc else ([], {})
    anns += voc_anns
    if dicom_objects:
        objs, obj_report = dicom_object_annotations(spark, cfg)
        anns += objs
        report.update(obj_report)

    now = utcnow()
    todo: list[dict] = []
    failed_rows: list[dict] = []
    skipped = 0
    seen: set[str] = set()
    for a in anns:
        if a["nodule_id"] in seen:
            continue
        seen.add(a["nodule_id"])
        uid = a["series_instance_uid"]
        s = series.get(uid)
        lung = lungs.get(uid)
        ready = s is not None and s.status == "built" and lung is not None and lung.status == "ok"
        old = existing.get(a["nodule_id"])
        if old is not None and not (old.status == "failed" and old.error_code in WAITING_CODES and ready):
            skipped += 1
            continue
        if s is not None:
            a["patient_pseudo_id"] = s.patient_pseudo_id
        if s is None:
            why = "neither the annotation's series UID nor its de-identified form (remap_uid with the site key) " \
                  f"is in {SERIES}"
            if mapper.key_error:
                why += f" (no site key to remap with: {mapper.key_error})"
            failed_rows.append(_failed(a, "SERIES_NOT_IN_LAKE", why, run_id=run_id, now=now,
                                       volumes_version=volumes_version))
        elif s.status != "built":
            failed_rows.append(_failed(a, "SERIES_NOT_BUILT", f"the series was {s.status} when building volumes: "
                                       f"{s.refusal_code}", run_id=run_id, now=now, volumes_version=volumes_version))
        elif lung is None:
            failed_rows.append(_failed(a, "NO_LUNG_MASK", f"the series has no row in {LUNGS}: run `ctlake process "
                                       "lungs` first", run_id=run_id, now=now, volumes_version=volumes_version))
        elif lung.status != "ok":
            failed_rows.append(_failed(a, "LUNG_MASK_FAILED", f"the series' lung mask failed: {lung.error_code}",
                                       run_id=run_id, now=now, volumes_version=volumes_version))
        else:
            if a["roi_kind"] in ("rtstruct", "seg"):
                a.update(source_shape_zyx=s.source_shape_zyx, source_spacing_zyx_mm=s.source_spacing_zyx_mm,
                         source_origin_xyz_mm=s.origin_xyz_mm, source_direction=s.direction)
            todo.append(a)

    schema = union_schema(NODULES)
    names = schema.fieldNames()
    frames: list[DataFrame] = []
    if failed_rows:
        frames.append(spark.createDataFrame([tuple({"target": NODULES_TABLE, **r}.get(n) for n in names)
                                             for r in failed_rows], schema))
    worker_out = None
    if todo:
        ann_df = spark.createDataFrame([tuple(a.get(n) for n, _ in _ANN_FIELDS) for a in todo], ANNOTATION_DDL)
        if any(a["roi_kind"] in ("rtstruct", "seg") for a in todo):
            objects = delta.read(spark, cfg, BRONZE).select(
                F.col("sop_instance_uid").alias("object_sop_uid"), F.col("dicom_bytes").alias("object_bytes"),
                F.col("claim_check_uri").alias("object_uri"))
            ann_df = ann_df.join(objects, "object_sop_uid", "left")
        else:
            ann_df = ann_df.withColumn("object_bytes", F.lit(None).cast("binary")) \
                .withColumn("object_uri", F.lit(None).cast("string"))
        wanted = F.broadcast(ann_df.select("series_instance_uid").distinct())
        vols = delta.read(spark, cfg, VOLUMES, as_of=volumes_version).select(_SLAB_COLS) \
            .join(wanted, "series_instance_uid").withColumn("kind", F.lit("volume"))
        lung_slabs = delta.read(spark, cfg, LUNGS, as_of=lungs_version).filter(
            (F.col("status") == "ok") & (F.col("slab_index") >= 0)).select(_SLAB_COLS) \
            .join(wanted, "series_instance_uid").withColumn("kind", F.lit("lung"))
        slabs = vols.unionByName(lung_slabs)

        def fn(slab_pdf, ann_pdf):
            if len(ann_pdf) == 0:
                return rows_frame([], names)
            rows = nodule_rows(slab_pdf, ann_pdf, settings, run_id=run_id, volumes_version=volumes_version)
            return rows_frame([{"target": NODULES_TABLE, **r} for r in rows], names)

        worker_out = slabs.groupBy("series_instance_uid").cogroup(ann_df.groupBy("series_instance_uid")) \
            .applyInPandas(fn, schema)
        frames.append(worker_out)
    versions: dict[str, int] = {}
    counts: dict[tuple[str, str | None], int] = {}
    if frames:
        out = frames[0]
        for f in frames[1:]:
            out = out.unionByName(f)
        out = out.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            counts = {(r.status, r.error_code): r["count"]
                      for r in out.groupBy("status", "error_code").count().collect()}
            if counts:
                versions[NODULES_TABLE] = delta.write(spark, cfg, out, NODULES_TABLE, mode="merge", count=False,
                                                      deterministic_source=True).version
        finally:
            out.unpersist()
    ok = sum(n for (st, _), n in counts.items() if st == "ok")
    failed = {code: n for (st, code), n in counts.items() if st == "failed"}
    summary = {"run_id": run_id, "annotations": len(seen), "skipped_existing": skipped, "ok": ok,
               "failed": sum(failed.values()), "failed_by_code": failed, "volumes_version": volumes_version,
               "lung_masks_version": lungs_version, **report, "seconds": round(time.monotonic() - t0, 1), **versions}
    record_run(spark, cfg, run_id=run_id, job="build_nodules", started=started, status="succeeded",
               rows_in=len(seen), rows_out=ok, output_versions=versions,
               params={"luna16_files": len(luna16), "voc_folders": len(voc), "dicom_objects": dicom_objects,
                       "nodules": settings, "volumes_version": volumes_version, "lung_masks_version": lungs_version,
                       **report})
    return summary
