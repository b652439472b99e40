"""Spark glue: gold.nodules + silver.ct_volumes → gold.radiomics_features (one row per ROI and
parameter set), and the long (feature, value) view of that table.

How the work is laid out:

- The ROIs are the ``gold.nodules`` rows with status ``ok`` (the mask is a CTT1 uint8 crop at
  ``mask_origin_zyx`` on the silver grid). Incremental: a ROI is skipped when the table already has
  its (roi_id, params_hash) computed from the same ``gold.nodules`` row (same ``run_id``); a nodule
  rebuilt by a later run is extracted again and its row replaced (MERGE on the key).
- Only the ``silver.ct_volumes`` slabs that a ROI's crop (mask box + ``radiomics.pad_voxels``)
  overlaps are read (a broadcast semi-join on the z ranges), never whole volumes.
- The plan (one narrow row per ROI to do: series, crop z range, box size) is read to the driver
  first; the ROI rows themselves are then picked by a broadcast of the plan's ids.
- ROIs and their slabs travel together, grouped per series (each needed slab is shipped and decoded
  once per series), in one shuffle into ``radiomics.partitions`` tasks; whole series are assigned to
  tasks by a cost-balanced plan made on the driver (:func:`balance`: ROI box voxels plus a share per
  ROI and series), so one-core executors finish together. Inside a task
  :func:`extract_series_rois` (pure: numpy and :func:`ctlake.radiomics.extract`) crops and
  extracts each ROI; the Python worker is reused, so the engine is imported once per executor.
- Any problem with one ROI (an empty or corrupt mask, a missing volume, a crop outside the volume,
  an engine error) gives that ROI a row with status ``failed``, an ``error_code`` and the detail; the
  other ROIs go on. Settings the engine does not implement stop the job before any work (strict).
- One write, then one ``ops.pipeline_runs`` row (also when the job fails). When every ROI is new
  (the usual incremental run) the extraction tasks write their rows themselves, a blind append, and
  only if another commit landed meanwhile the keys that two runs added at once are settled
  (:mod:`ctlake.lake.commit`). When rows are replaced, the extracted rows are kept and MERGEd on the
  key. Every input is read at the version seen at the start. What does not shrink with more
  executors (each run's fixed part: Delta snapshots, the plan, the commit, the run record; ~3 s
  here) is kept to a few small Spark jobs: see bench/README.md.

The parameter set is a PyRadiomics YAML read as it is (:func:`ctlake.radiomics.load_params`);
``params_hash`` is the sha256 of its canonical JSON (:func:`canonical_params`).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctlake import __version__
from ctlake.config import Config
from ctlake.errors import CtlakeError
from ctlake.lake import commit, delta
from ctlake.lake.runs import record_run, utcnow
from ctlake.lake.schemas import CT_VOLUMES, RADIOMICS_FEATURES, rows_frame

if TYPE_CHECKING:
    import datetime as dt

    import numpy as np
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

    from ctlake.radiomics import Params

NODULES = "gold.nodules"
VOLUMES = "silver.ct_volumes"
FEATURES = "gold.radiomics_features"
LONG_VIEW = "radiomics_features_long"
ENGINE = f"ctlake.radiomics {__version__}"
MAX_PARTITIONS = 4096
_ISIN_LIMIT = 5000          # above this many series, read the slabs without the series filter
# Two runs that extract the same new ROIs at once both append them; the survivor of a key is then
# the ok row before a failed one, then the smaller run id (every run that looks picks the same).
FEATURES_SPEC = commit.Spec(FEATURES, "roi_id", ident=("roi_id", "params_hash", "run_id"),
                            columns=("roi_id", "params_hash", "run_id", "status"),
                            rank=lambda r: (r.status != "ok", r.run_id))
_SHIFT_CODES = ("N8CA", "5ZWQ")   # energy, RMS: IBSI only with voxelArrayShift 0


class RoiFailed(CtlakeError):
    """One ROI cannot be extracted; ``code`` goes to ``gold.radiomics_features.error_code``."""

    code = "ROI_FAILED"


# --- parameter sets ------------------------------------------------------------------------
@dataclass(frozen=True)
class ParamSet:
    """A validated parameter set: the engine's Params, its canonical JSON and hash, where it came
    from, and the IBSI code of each enabled feature (PyRadiomics name -> code)."""

    params: Params
    params_json: str
    params_hash: str
    source: str
    ibsi_codes: dict[str, str] = field(default_factory=dict)


def _plain(value: Any) -> Any:
    """JSON-ready copy with integral floats as ints (binWidth 25.0 and 25 are one setting)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def canonical_params(params: Params) -> dict[str, Any]:
    """The settings that decide the feature values, in one canonical form: used settings without
    the ones that are off (None), binWidth left out when binCount is set (PyRadiomics then ignores
    it), enabled image types, and each enabled class with its enabled feature names, sorted.
    Settings the engine ignores (additionalInfo, preCrop, …) are not part of it."""
    from ctlake.radiomics.extract import FAMILIES, enabled_features

    settings = {k: v for k, v in params.settings.items() if v is not None}
    if settings.get("binCount") is not None:
        settings.pop("binWidth", None)
    classes = {cls: sorted(enabled_features(params, cls)) for cls in FAMILIES if cls in params.feature_classes}
    return _plain({"setting": settings, "imageType": params.image_types, "featureClass": classes})


def ibsi_codes(params: Params) -> dict[str, str]:
    """``original_<class>_<Feature>`` -> IBSI code, for the enabled features whose value equals an
    IBSI definition (the engine's name tables; aggregation follows weightingNorm, see
    :func:`ctlake.radiomics.extract.extract_ibsi`). Energy and RMS only with voxelArrayShift 0."""
    from ctlake.radiomics.extract import FAMILIES, enabled_features

    out: dict[str, str] = {}
    for cls in FAMILIES:
        if cls not in params.feature_classes:
            continue
        for name in enabled_features(params, cls):
            code = FAMILIES[cls][name].ibsi
            if code is None or (code in _SHIFT_CODES and params.settings.get("voxelArrayShift")):
                continue
            out[f"original_{cls}_{name}"] = code
    return out


def param_set(path: str | Path | None = None, *, strict: bool = True) -> ParamSet:
    """Read a PyRadiomics parameter YAML (None: PyRadiomics defaults, every class). With ``strict``
    a file with settings the engine does not implement is refused (RadiomicsSettingsError)."""
    from ctlake.radiomics import RadiomicsSettingsError, load_params, params_from_mapping

    params = load_params(path) if path else params_from_mapping(None, source="defaults")
    if strict and params.unsupported:
        raise RadiomicsSettingsError(f"{params.source}: settings not implemented: {params.unsupported}",
                                     hint="remove them, or run with --no-strict (radiomics.strict: false) to "
                                          "compute only the supported part")
    text = json.dumps(canonical_params(params), sort_keys=True, separators=(",", ":"))
    return ParamSet(params, text, hashlib.sha256(text.encode()).hexdigest(), params.source, ibsi_codes(params))


# --- the pure per-series step ---------------------------------------------------------------
@dataclass(frozen=True)
class RunContext:
    """What every output row of one run shares."""

    run_id: str
    extracted_at: dt.datetime
    nodules_version: int
    volumes_version: int
    pad_voxels: int = 5


class _SlabVolume:
    """The slabs of one series that were shipped (not necessarily all of them); decodes a slab
    when a crop first needs it and forgets slabs below the current crop (ROIs come in z order)."""

    def __init__(self, slabs: pd.DataFrame) -> None:
        rows = slabs.sort_values("z0") if len(slabs) else slabs
        self.ranges = [(int(a), int(b)) for a, b in zip(rows["z0"], rows["z1"], strict=True)] if len(rows) else []
        self.data = list(rows["data"]) if len(rows) else []
        first = rows.iloc[0] if len(rows) else None
        self.shape = tuple(int(v) for v in first["volume_shape_zyx"]) if first is not None else None
        self.spacing = tuple(float(v) for v in first["spacing_zyx_mm"]) if first is not None else None
        self._cache: dict[int, np.ndarray] = {}

    def _slab(self, i: int) -> np.ndarray:
        from ctlake.lake import codec

        if i not in self._cache:
            try:
                arr = codec.decode(self.data[i])
            except codec.CodecError as exc:
                raise RoiFailed(f"slab z {self.ranges[i]} does not decode: {exc}", code="SLAB_CORRUPT") from None
            z0, z1 = self.ranges[i]
            if arr.ndim != 3 or arr.shape[0] != z1 - z0 or arr.shape[1:] != self.shape[1:]:
                raise RoiFailed(f"slab z {self.ranges[i]} has shape {arr.shape}, volume {self.shape}",
                                code="SLAB_CORRUPT")
            self._cache[i] = arr
        return self._cache[i]

    def crop(self, lo_zyx: tuple[int, int, int], hi_zyx: tuple[int, int, int]) -> np.ndarray:
        """The (z, y, x) box [lo, hi) of the volume from the slabs (RoiFailed if one is missing)."""
        import numpy as np

        (z0, y0, x0), (z1, y1, x1) = lo_zyx, hi_zyx
        for i in [i for i in self._cache if self.ranges[i][1] <= z0]:
            del self._cache[i]
        parts, z = [], z0
        for i, (a, b) in enumerate(self.ranges):
            if b <= z or a >= z1:
                continue
            if a > z:
                break
            parts.append(self._slab(i)[z - a:min(b, z1) - a, y0:y1, x0:x1])
            z = min(b, z1)
            if z >= z1:
                break
        if z < z1:
            raise RoiFailed(f"silver.ct_volumes has no slab for z {z} (crop z {z0}..{z1})", code="VOLUME_INCOMPLETE")
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)


def extract_series_rois(nodules: pd.DataFrame, slabs: pd.DataFrame, ps: ParamSet, ctx: RunContext) -> list[dict]:
    """Rows of ``gold.radiomics_features`` for the ROIs of one series (pure: no Spark).

    ``nodules``: gold.nodules rows of the series (nodule_id, series_instance_uid, patient_pseudo_id,
    mask_origin_zyx, mask_shape_zyx, mask_codec, mask_data, spacing_zyx_mm, run_id); ``slabs``:
    silver.ct_volumes rows (z0, z1, data, volume_shape_zyx, spacing_zyx_mm) covering at least every
    crop. The image given to the engine is the mask box plus ``ctx.pad_voxels`` per side (clipped to
    the volume), int16 HU in (z, y, x); the mask is placed in it at its origin."""
    from ctlake.lake import codec
    from ctlake.radiomics import extract

    volume = _SlabVolume(slabs)
    label = ps.params.settings["label"]
    pad = ctx.pad_voxels
    base = {"params_hash": ps.params_hash, "params_json": ps.params_json, "params_source": ps.source,
            "engine": ENGINE, "nodules_version": ctx.nodules_version, "volumes_version": ctx.volumes_version,
            "run_id": ctx.run_id, "extracted_at": ctx.extracted_at}

    def origin_z(row) -> int:
        o = row["mask_origin_zyx"]
        return int(o[0]) if o is not None and len(o) == 3 else -1

    order = sorted(range(len(nodules)), key=lambda i: (origin_z(nodules.iloc[i]), str(nodules.iloc[i]["nodule_id"])))
    rows: list[dict] = []
    for i in order:
        n = nodules.iloc[i]
        row = {**base, "roi_id": n["nodule_id"], "series_instance_uid": n["series_instance_uid"],
               "patient_pseudo_id": n["patient_pseudo_id"], "nodule_run_id": n["run_id"],
               "spacing_zyx_mm": list(volume.spacing) if volume.spacing else None}
        try:
            row.update(_extract_one(n, volume, ps, label, pad, codec, extract))
            row.update(status="ok")
        except CtlakeError as exc:          # RoiFailed and the engine's own errors (with their code)
            row.update(status="failed", error_code=exc.code, error_detail=str(exc)[:4000])
        except Exception as exc:  # noqa: BLE001 - one bad ROI never stops the job; the code marks a bug
            row.update(status="failed", error_code="UNEXPECTED_RADIOMICS_ERROR",
                       error_detail=f"{type(exc).__name__}: {exc}"[:4000])
        rows.append(row)
    return rows


def _extract_one(n, volume: _SlabVolume, ps: ParamSet, label, pad: int, codec, extract) -> dict:
    import numpy as np

    if volume.shape is None:
        raise RoiFailed(f"series {n['series_instance_uid']} has no volume in {VOLUMES}", code="VOLUME_MISSING")
    if n["mask_data"] is None or n["mask_origin_zyx"] is None or n["mask_shape_zyx"] is None:
        raise RoiFailed("the gold.nodules row has no mask (mask_data / mask_origin_zyx / mask_shape_zyx)",
                        code="MASK_MISSING")
    if n["mask_codec"] not in (None, "CTT1"):
        raise RoiFailed(f"mask codec {n['mask_codec']!r} unknown (expected CTT1)", code="MASK_CORRUPT")
    try:
        mask = codec.decode(n["mask_data"])
    except codec.CodecError as exc:
        raise RoiFailed(f"mask does not decode: {exc}", code="MASK_CORRUPT") from None
    origin = tuple(int(v) for v in n["mask_origin_zyx"])
    shape = tuple(int(v) for v in n["mask_shape_zyx"])
    if mask.shape != shape:
        raise RoiFailed(f"mask is {mask.shape}, the row says mask_shape_zyx {shape}", code="MASK_SHAPE_MISMATCH")
    if n["spacing_zyx_mm"] is not None and not np.allclose(n["spacing_zyx_mm"], volume.spacing, rtol=0, atol=1e-6):
        raise RoiFailed(f"mask spacing {list(n['spacing_zyx_mm'])} mm, volume {list(volume.spacing)} mm: the "
                        "nodule was built on another grid", code="GRID_MISMATCH")
    if any(o < 0 or o + s > v for o, s, v in zip(origin, shape, volume.shape, strict=True)):
        raise RoiFailed(f"mask box {origin}+{shape} (z, y, x) leaves the volume {volume.shape}",
                        code="ROI_OUTSIDE_VOLUME")
    voxels = int(np.count_nonzero(mask == label))
    if voxels == 0:
        raise RoiFailed(f"mask has no voxel with label {label}", code="EMPTY_ROI")
    lo = tuple(max(0, o - pad) for o in origin)
    hi = tuple(min(v, o + s + pad) for o, s, v in zip(origin, shape, volume.shape, strict=True))
    image = volume.crop(lo, hi)
    full = np.zeros(image.shape, dtype=mask.dtype)
    at = tuple(slice(o - a, o - a + s) for o, a, s in zip(origin, lo, shape, strict=True))
    full[at] = mask
    t0 = time.perf_counter()
    features = extract(image, full, volume.spacing, ps.params, strict=False)
    ms = (time.perf_counter() - t0) * 1000.0
    return {"features": {k: float(v) for k, v in features.items()},
            "ibsi_codes": {k: c for k, c in ps.ibsi_codes.items() if k in features},
            "feature_count": len(features), "roi_voxels": voxels, "crop_origin_zyx": list(lo),
            "crop_shape_zyx": [b - a for a, b in zip(lo, hi, strict=True)], "extract_ms": round(ms, 3)}


# --- Spark ----------------------------------------------------------------------------------
_NODULE_COLS = ["nodule_id", "series_instance_uid", "patient_pseudo_id", "mask_origin_zyx", "mask_shape_zyx",
                "mask_codec", "mask_data", "spacing_zyx_mm", "run_id"]
_SLAB_COLS = ["series_instance_uid", "slab_index", "z0", "z1", "data", "volume_shape_zyx", "spacing_zyx_mm"]


def _resolve(cfg: Config, path: str | None, *, from_config: bool) -> str | None:
    if not path:
        return None
    p = Path(path).expanduser()
    if not p.is_absolute():
        p = (cfg.project_root / p) if from_config else p.resolve()
    return str(p)


def extract_radiomics(spark: SparkSession, cfg: Config, *, params_file: str | None = None,
                      strict: bool | None = None, retry_failed: bool | None = None,
                      partitions: int | None = None, run_id: str | None = None) -> dict:
    """Extract the radiomics features of every ``gold.nodules`` ROI (status ok) not yet in
    ``gold.radiomics_features`` for this parameter set; returns a summary. ``params_file`` (a
    PyRadiomics YAML) and the other arguments override ``cfg.radiomics``."""
    rc = cfg.radiomics
    path = _resolve(cfg, params_file, from_config=False) if params_file else \
        _resolve(cfg, rc.params_file, from_config=True)
    strict = rc.strict if strict is None else strict
    ps = param_set(path, strict=strict)
    run_id = run_id or f"extract_radiomics:{uuid.uuid4().hex}"
    started = utcnow()
    params_record = {"params_hash": ps.params_hash, "params_source": ps.source, "strict": strict,
                     "unsupported": ps.params.unsupported, "ignored": ps.params.ignored, "engine": ENGINE,
                     "pad_voxels": rc.pad_voxels}
    try:
        summary = _run(spark, cfg, ps, run_id=run_id, retry_failed=rc.retry_failed if retry_failed is None
                       else retry_failed, partitions=rc.partitions if partitions is None else partitions)
    except Exception as exc:
        try:
            record_run(spark, cfg, run_id=run_id, job="extract_radiomics", started=started, status="failed",
                       rows_in=0, rows_out=0, output_versions={}, params=params_record,
                       error=f"{type(exc).__name__}: {exc}"[:4000])
        except Exception:  # noqa: BLE001, S110 - the job's own error is the one to report
            pass
        raise
    versions = {FEATURES: summary[FEATURES]} if FEATURES in summary else {}
    record_run(spark, cfg, run_id=run_id, job="extract_radiomics", started=started, status="succeeded",
               rows_in=summary["rois"], rows_out=summary["ok"], output_versions=versions,
               params={**params_record, "nodules_version": summary["nodules_version"],
                       "volumes_version": summary["volumes_version"], "failed": summary["failed"]})
    return summary


def _run(spark: SparkSession, cfg: Config, ps: ParamSet, *, run_id: str, retry_failed: bool,
         partitions: int) -> dict:
    from pyspark.sql import functions as F

    t0 = time.monotonic()
    nodules_version = delta.version(spark, cfg.table_path(NODULES))
    if nodules_version < 0:
        raise CtlakeError(f"{NODULES} does not exist at {cfg.table_path(NODULES)}", code="NO_NODULES",
                          hint="build it first (ctlake process nodules)")
    volumes_version = delta.version(spark, cfg.table_path(VOLUMES))
    # seen before the read of the done ROIs: a commit after it may be another run's (see the write)
    features_version = delta.version(spark, cfg.table_path(FEATURES))
    nodules = delta.read(spark, cfg, NODULES, as_of=nodules_version).filter(F.col("status") == "ok")
    rois = nodules
    if features_version >= 0:
        # left join, not anti: the ROIs that already have a row (another nodule run, or failed with
        # retry_failed) replace it, and when there are none the write is a cheaper append. Pinned
        # at the version seen, as the other inputs are (a plan over the table's latest state would
        # also be re-planned by Spark after our own write to it)
        done = delta.read(spark, cfg, FEATURES, as_of=features_version) \
            .filter(F.col("params_hash") == ps.params_hash) \
            .select(F.col("roi_id"), F.col("nodule_run_id"), F.col("status").alias("done_status"))
        rois = rois.join(done, rois["nodule_id"] == done["roi_id"], "left")
        current = F.col("run_id").eqNullSafe(F.col("nodule_run_id"))
        if retry_failed:
            current = current & (F.col("done_status") == "ok")
        # one row per ROI even where a key is there twice (two runs raced and one died before it
        # settled): the join would otherwise extract that ROI twice
        rois = rois.filter(F.col("roi_id").isNull() | ~current) \
            .withColumn("_replaces", F.col("roi_id").isNotNull()).dropDuplicates(["nodule_id"])
    else:
        rois = rois.withColumn("_replaces", F.lit(False))
    return _extract_and_write(spark, cfg, ps, rois, nodules.select(_NODULE_COLS), run_id=run_id, t0=t0,
                              partitions=partitions, versions=(nodules_version, volumes_version, features_version))


def _extract_and_write(spark: SparkSession, cfg: Config, ps: ParamSet, rois: DataFrame, nodules: DataFrame, *,
                       run_id: str, t0: float, partitions: int, versions: tuple[int, int, int]) -> dict:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from ctlake.spark import local_frame

    nodules_version, volumes_version, features_version = versions
    # the plan: one small row per ROI to extract (series, crop z range, size) on the driver; a
    # narrow read, the ROI rows themselves are read by the extraction
    pad = cfg.radiomics.pad_voxels
    oz, sz = F.col("mask_origin_zyx")[0], F.col("mask_shape_zyx")[0]
    box = F.aggregate(F.coalesce(F.col("mask_shape_zyx"), F.array(F.lit(0))), F.lit(1).cast("long"),
                      lambda acc, v: acc * v)
    plan = rois.select("nodule_id", "series_instance_uid", "_replaces", F.greatest(oz - pad, F.lit(0)).alias("z0"),
                       (oz + sz + pad).alias("z1"), box.alias("box")).collect()
    per_series: dict[str, int] = {}
    for r in plan:
        per_series[r.series_instance_uid] = per_series.get(r.series_instance_uid, 0) + 1
    replaces = sum(1 for r in plan if r["_replaces"])
    base = {"run_id": run_id, "params_hash": ps.params_hash, "params_source": ps.source,
            "nodules_version": nodules_version, "volumes_version": volumes_version,
            "series": len(per_series), "rois": len(plan), "replaced": replaces}
    if not plan:
        return {**base, "ok": 0, "failed": 0, "partitions": 0, "slabs_read": 0,
                "extract_s": 0.0, "tasks_s": 0.0, "write_s": 0.0, "seconds": round(time.monotonic() - t0, 1)}
    n_parts = min(len(per_series), partitions or 2 * spark.sparkContext.defaultParallelism, MAX_PARTITIONS)
    placement = _placement(plan, n_parts)
    part_of = dict(placement)
    if volumes_version >= 0:
        crops = [(r.series_instance_uid, int(r.z0), int(r.z1)) for r in plan if r.z0 is not None and r.z1 is not None]
        ranges = local_frame(spark, crops, "r_series string, r_z0 int, r_z1 int")
        slabs = delta.read(spark, cfg, VOLUMES, as_of=volumes_version).select(_SLAB_COLS)
        if len(per_series) <= _ISIN_LIMIT:   # lets Delta skip the files of other series (column statistics)
            slabs = slabs.filter(F.col("series_instance_uid").isin(sorted(per_series)))
        slabs = slabs.join(F.broadcast(ranges), (F.col("series_instance_uid") == F.col("r_series"))
                           & (F.col("z0") < F.col("r_z1")) & (F.col("z1") > F.col("r_z0")), "left_semi")
    else:   # no volumes at all: every ROI fails with VOLUME_MISSING
        from pyspark.sql import types as T

        slabs = spark.createDataFrame([], T.StructType([CT_VOLUMES[c] for c in _SLAB_COLS]))
    ctx = RunContext(run_id=run_id, extracted_at=utcnow(), nodules_version=nodules_version,
                     volumes_version=volumes_version, pad_voxels=pad)
    names = RADIOMICS_FEATURES.fieldNames()
    slabs_read = spark.sparkContext.accumulator(0)
    ok_rows = spark.sparkContext.accumulator(0)
    failed_rows = spark.sparkContext.accumulator(0)

    def per_series_udf(group: pd.DataFrame) -> pd.DataFrame:
        is_roi = group["_kind"] == "roi"
        slabs_read.add(int((~is_roi).sum()))
        rows = extract_series_rois(group[is_roi], group[~is_roi], ps, ctx)
        ok = sum(1 for r in rows if r["status"] == "ok")
        ok_rows.add(ok)
        failed_rows.add(len(rows) - ok)
        return rows_frame(rows, names)

    # ROIs and their slabs in one frame (a _kind column tells them apart), each series sent to the
    # task its bin says: the key is chosen so that Spark's hash partitioning maps it there, and
    # grouping by (key, series) keeps that partitioning (one shuffle). The ROI rows to extract are
    # picked by a broadcast of the plan's ids, which carries their series' key too.
    todo = local_frame(spark, sorted({(r.nodule_id, part_of[r.series_instance_uid]) for r in plan}),
                       "nodule_id string, _part bigint")
    keys = local_frame(spark, placement, "series_instance_uid string, _part bigint")
    work = nodules.join(F.broadcast(todo), "nodule_id").withColumn("_kind", F.lit("roi")) \
        .unionByName(slabs.join(F.broadcast(keys), "series_instance_uid").withColumn("_kind", F.lit("slab")),
                     allowMissingColumns=True) \
        .repartition(n_parts, "_part")
    out = work.groupBy("_part", "series_instance_uid").applyInPandas(per_series_udf, RADIOMICS_FEATURES)
    t_tasks = time.monotonic()
    if replaces:
        # rows to replace: an upsert, from the rows kept after one extraction (a MERGE reads its
        # source twice, and extract_ms differs between two extractions)
        out = out.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            counts = {r.status: r["count"] for r in out.groupBy("status").count().collect()}
            t_extract = time.monotonic()
            written = delta.write(spark, cfg, out, FEATURES, mode="merge", count=False,
                                  deterministic_source=True).version
        finally:
            out.unpersist()
        t_write = time.monotonic()
    else:
        # only new keys: the extraction tasks write their rows themselves (a blind append: no
        # second pass over kept rows), a race with another run is settled after it. The counts
        # come from accumulators updated in the write's result tasks, which Spark applies once
        # per partition (a retried task's updates are dropped)
        written, _ = commit.append_new(spark, cfg, out, FEATURES_SPEC, read_version=features_version,
                                       keys=[r.nodule_id for r in plan], where=f"params_hash = '{ps.params_hash}'")
        t_extract = t_write = time.monotonic()
        counts = {"ok": ok_rows.value, "failed": failed_rows.value}
    # tasks_s: the extraction job (with "append" it also writes and commits the rows); write_s: the
    # MERGE after it ("merge"), nothing left to do after it with "append"
    return {**base, "ok": counts.get("ok", 0), "failed": counts.get("failed", 0), "partitions": n_parts,
            "slabs_read": slabs_read.value, FEATURES: written, "write": "merge" if replaces else "append",
            "extract_s": round(t_extract - t0, 2), "tasks_s": round(t_extract - t_tasks, 2),
            "write_s": round(t_write - t_extract, 2),
            "seconds": round(time.monotonic() - t0, 1)}


def balance(costs: dict[str, float], bins: int) -> dict[str, int]:
    """Series -> bin (0 .. bins-1) so that the bins' total costs are as even as a greedy longest-first
    assignment makes them (ties by series uid: deterministic)."""
    load = [0.0] * bins
    out: dict[str, int] = {}
    for uid, cost in sorted(costs.items(), key=lambda kv: (-kv[1], kv[0])):
        b = min(range(bins), key=lambda i: (load[i], i))
        out[uid] = b
        load[b] += cost
    return out


def spark_hash_long(value: int, seed: int = 42) -> int:
    """Spark's ``hash()`` of a bigint (Murmur3 x86 32-bit, seed 42, as ``HashPartitioning`` uses it)."""
    m = 0xFFFFFFFF

    def rotl(x: int, r: int) -> int:
        return ((x << r) | (x >> (32 - r))) & m

    def mix(h1: int, k1: int) -> int:
        k1 = rotl((k1 * 0xCC9E2D51) & m, 15) * 0x1B873593 & m
        h1 = rotl(h1 ^ k1, 13)
        return (h1 * 5 + 0xE6546B64) & m

    h = mix(mix(seed & m, value & m), (value >> 32) & m) ^ 8
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & m
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & m
    h ^= h >> 16
    return h - (1 << 32) if h >= 1 << 31 else h


def _placement(plan: list, n_parts: int) -> list[tuple[str, int]]:
    """[(series_instance_uid, key)]: a bigint per series whose Spark hash partition
    (``pmod(hash(key), n_parts)``, what ``repartition(n_parts, col)`` computes) is the series' bin from
    :func:`balance`, costed by ROI box voxels plus a fixed share per ROI and per series (slab decoding)."""
    costs: dict[str, float] = {}
    for r in plan:
        costs[r.series_instance_uid] = costs.get(r.series_instance_uid, 2e5) + float(r.box or 0) + 2e4
    bins = balance(costs, n_parts)
    keys: dict[int, int] = {}
    candidate = 0
    while len(keys) < n_parts:
        keys.setdefault(spark_hash_long(candidate) % n_parts, candidate)
        candidate += 1
    return [(uid, keys[b]) for uid, b in sorted(bins.items())]


def features_long(spark: SparkSession, cfg: Config, *, params_hash: str | None = None,
                  view: str | None = LONG_VIEW) -> DataFrame:
    """``gold.radiomics_features`` in long form: one row per (roi_id, params_hash, feature) of the
    ROIs with status ok — roi_id, params_hash, series_instance_uid, patient_pseudo_id, feature
    (PyRadiomics name), value, ibsi_code (null where the value is not an IBSI definition), run_id,
    extracted_at. ``params_hash`` keeps one parameter set. Registers the temporary view ``view``
    (default ``radiomics_features_long``; None: no view) so notebooks can write
    ``SELECT feature, avg(value) FROM radiomics_features_long GROUP BY feature``."""
    from pyspark.sql import functions as F

    if not delta.exists(spark, cfg.table_path(FEATURES)):
        raise CtlakeError(f"{FEATURES} does not exist at {cfg.table_path(FEATURES)}", code="NO_FEATURES",
                          hint="run `ctlake process radiomics` first")
    df = delta.read(spark, cfg, FEATURES).filter(F.col("status") == "ok")
    if params_hash is not None:
        df = df.filter(F.col("params_hash") == params_hash)
    long = df.select("roi_id", "params_hash", "series_instance_uid", "patient_pseudo_id", "ibsi_codes", "run_id",
                     "extracted_at", F.explode("features").alias("feature", "value"))
    long = long.select("roi_id", "params_hash", "series_instance_uid", "patient_pseudo_id", "feature", "value",
                       F.try_element_at("ibsi_codes", F.col("feature")).alias("ibsi_code"), "run_id",
                       "extracted_at")
    if view:
        long.createOrReplaceTempView(view)
    return long
