"""Spark glue: gold.nodules + silver.ct_volumes + silver.lung_masks → gold.nodule_patches.

Per annotated series (one ``applyInPandas`` group: its volume and lung slabs cogrouped with its
``gold.nodules`` rows), with the ``imaging.patches`` settings:

* every nodule with status ok gets one patch per configured size (default 32×48×48, 32³, 64³)
  centred on the voxel nearest its mask's centroid (``centre_zyx_vox`` rounded);
* ``negatives_per_series`` negative centres are drawn uniformly from the lung mask, at least
  ``negative_min_distance_mm`` plus the nodule's radius from EVERY annotated nodule of the series
  (failed ones too, at their annotated centre and size), with a generator seeded by
  (``seed``, sha256 of the series uid): the same series always gives the same negatives; each
  negative gets a patch of every size.

Patch layout (``gold.nodule_patches``, :func:`ctlake.imaging.patches.extract_patch`): ``image`` is
raw little-endian int16 HU in C order (z, y, x), clipped to the volume window and padded with its
low end (-1000 HU) outside the volume; ``mask`` raw uint8 0/1, the union of the series' nodule
masks in the cube (so a negative's mask is all zero unless a nodule reaches into a large cube).
``np.frombuffer(row.image, "<i2").reshape(row.shape_zyx)`` reads one back.

Labels: ``label`` 1 for nodules, 0 for negatives; ``malignant`` = 1 when ``malignancy`` >=
``malignancy_threshold`` (3 by default), 0 below, null when the nodule has no rating; negatives
have malignancy null and malignant 0. ``split``: by patient
(:func:`ctlake.imaging.patches.split_of` of the patient pseudo id — the series uid when a series
has none — with ``split_names``, ``split_fractions``, ``split_seed``), so one patient's patches
are all in one split and adding patients never moves one.

Incremental by ``patch_id`` = sha256(series uid | kind | centre z,y,x | size name)[:32]: a series
is processed when it has an ok nodule without patches, or no negatives yet; the rows whose
patch_id exists are not written again (insert-only). Negatives are sampled once per series, from
the nodules known then; a nodule annotated later is not checked against earlier negatives.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import TYPE_CHECKING, Any

from ctlake.config import Config
from ctlake.lake import delta
from ctlake.lake.runs import record_run
from ctlake.lake.schemas import NODULE_PATCHES, rows_frame, union_schema

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import SparkSession

    from ctlake.config import PatchConfig

VOLUMES = "silver.ct_volumes"
LUNGS = "silver.lung_masks"
NODULES = "gold.nodules"
PATCHES = "gold.nodule_patches"
_SLAB_COLS = ["series_instance_uid", "slab_index", "z0", "z1", "data", "volume_shape_zyx", "spacing_zyx_mm",
              "origin_xyz_mm", "direction"]
_NODULE_COLS = ["nodule_id", "series_instance_uid", "patient_pseudo_id", "status", "centre_zyx_vox",
                "annotated_centre_zyx_vox", "annotated_diameter_mm", "annotated_box_lo_xyz_mm",
                "annotated_box_hi_xyz_mm", "diameter_mm", "max_diameter_mm", "malignancy", "mask_origin_zyx",
                "mask_shape_zyx", "mask_data"]


def patch_id(series_instance_uid: str, kind: str, centre_zyx: tuple[int, int, int], size_name: str) -> str:
    """sha256(series uid | kind | centre | size)[:32] (the ``gold.nodule_patches`` key)."""
    c = ",".join(str(int(v)) for v in centre_zyx)
    return hashlib.sha256(f"{series_instance_uid}|{kind}|{c}|{size_name}".encode()).hexdigest()[:32]


def series_seed(seed: int, series_instance_uid: str) -> list[int]:
    """The negatives' random seed of one series: (config seed, first 8 bytes of sha256(uid))."""
    return [int(seed), int.from_bytes(hashlib.sha256(series_instance_uid.encode()).digest()[:8], "big")]


def malignant_of(malignancy: float | None, threshold: float) -> int | None:
    if malignancy is None or malignancy != malignancy:   # None or NaN: unknown
        return None
    return int(float(malignancy) >= threshold)


def patch_rows(slabs: pd.DataFrame, nodules: pd.DataFrame, settings: PatchConfig, *,
               window_hu: tuple[float, float] | None, run_id: str) -> list[dict[str, Any]]:
    """One series' volume/lung slabs (``kind`` volume | lung) and gold.nodules rows → its
    gold.nodule_patches rows (pure, no Spark). Raises on unreadable slabs (the job reports it)."""
    import numpy as np

    from ctlake.imaging.patches import extract_patch, sample_negative_centres, split_of
    from ctlake.lake import codec
    from ctlake.process.lungs import assemble_slabs, records

    hu, grid, _ = assemble_slabs(slabs[slabs["kind"] == "volume"])
    lung, lung_grid, _ = assemble_slabs(slabs[slabs["kind"] == "lung"])
    if lung_grid != grid:
        raise ValueError(f"the lung mask's grid {lung_grid} is not the volume's {grid}")
    lung = lung.astype(bool)
    rows_in = records(nodules)
    uid = str(rows_in[0]["series_instance_uid"])
    patient = next((r["patient_pseudo_id"] for r in rows_in if r.get("patient_pseudo_id")), None)
    split = split_of(patient or uid, settings.split_fractions, settings.split_seed, settings.split_names)
    spacing = np.asarray(grid.spacing_zyx_mm, dtype=np.float64)

    ok = [r for r in rows_in if r["status"] == "ok" and r.get("mask_data") is not None]
    union = np.zeros(grid.shape_zyx, dtype=bool)
    for r in ok:
        m = codec.decode(bytes(r["mask_data"])).astype(bool)
        z, y, x = (int(v) for v in r["mask_origin_zyx"])
        dz, dy, dx = m.shape
        union[z:z + dz, y:y + dy, x:x + dx] |= m
    # every annotated nodule keeps negatives away: its centre(s) and its largest size
    centres, diameters = [], []
    for r in rows_in:
        d = max(float(v) for v in (r.get("annotated_diameter_mm"), r.get("diameter_mm"), r.get("max_diameter_mm"),
                                   _box_diameter(r), 0.0) if v is not None)
        for c in (r.get("centre_zyx_vox"), r.get("annotated_centre_zyx_vox")):
            if c is not None:
                centres.append([float(v) for v in c])
                diameters.append(d)
    base = {"series_instance_uid": uid, "patient_pseudo_id": patient, "split": split, "run_id": run_id}
    out = []

    def add(kind: str, centre, nodule: dict | None) -> None:
        for size, name in zip(settings.sizes_zyx, settings.size_names, strict=True):
            p = extract_patch(hu, centre, size, mask_zyx=union, window_hu=window_hu)
            malignancy = None if nodule is None else nodule.get("malignancy")
            out.append({**base, "patch_id": patch_id(uid, kind, centre, name),
                        "nodule_id": None if nodule is None else nodule["nodule_id"], "kind": kind,
                        "label": int(nodule is not None), "malignancy": malignancy,
                        "malignant": 0 if nodule is None else malignant_of(malignancy, settings.malignancy_threshold),
                        "diameter_mm": None if nodule is None else nodule.get("diameter_mm"),
                        "size_name": name, "shape_zyx": list(size), "centre_zyx_vox": [int(v) for v in centre],
                        "image": p.image.astype("<i2", copy=False).tobytes(order="C"),
                        "mask": p.mask.astype(np.uint8, copy=False).tobytes(order="C"),
                        "padded_voxels": int(round(p.padded_fraction * p.image.size))})

    for r in ok:
        centre = tuple(int(v) for v in np.floor(np.asarray(r["centre_zyx_vox"], dtype=np.float64) + 0.5))
        add("nodule", centre, r)
    if settings.negatives_per_series > 0 and lung.any():
        rng = np.random.default_rng(series_seed(settings.seed, uid))
        negs = sample_negative_centres(lung, np.asarray(centres).reshape(-1, 3), settings.negatives_per_series, rng,
                                       settings.negative_min_distance_mm, spacing_zyx_mm=tuple(spacing),
                                       nodule_diameters_mm=diameters, allow_fewer=True)
        for c in negs:
            add("negative", tuple(int(v) for v in c), None)
    return out


def _box_diameter(r: dict) -> float | None:
    lo, hi = r.get("annotated_box_lo_xyz_mm"), r.get("annotated_box_hi_xyz_mm")
    if lo is None or hi is None:
        return None
    return float(max(float(b) - float(a) for a, b in zip(lo, hi, strict=True)))


def build_patches(spark: SparkSession, cfg: Config, *, run_id: str | None = None) -> dict[str, Any]:
    """Patches of every ok nodule and the negatives of every annotated series that
    ``gold.nodule_patches`` lacks; a summary (see the module docstring)."""
    from ctlake.process.lungs import run_recorded

    run_id = run_id or f"build_patches:{uuid.uuid4().hex}"
    return run_recorded(spark, cfg, "build_patches", run_id,
                        lambda started: _build_patches(spark, cfg, run_id, started))


def _build_patches(spark: SparkSession, cfg: Config, run_id: str, started) -> dict[str, Any]:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    t0 = time.monotonic()
    settings = cfg.imaging.patches
    window = cfg.imaging.volume.window_hu
    versions_in = {t: delta.version(spark, cfg.table_path(t)) for t in (NODULES, VOLUMES, LUNGS)}
    counts: dict[tuple[str, str], int] = {}
    versions: dict[str, int] = {}
    errors: list[str] = []
    series_done = 0
    new_rows = 0
    todo_uids: list[str] = []
    if min(versions_in.values()) >= 0:
        nodules = delta.read(spark, cfg, NODULES, as_of=versions_in[NODULES]).select(_NODULE_COLS) \
            .filter(F.col("annotated_centre_zyx_vox").isNotNull() | (F.col("status") == "ok"))
        ok_lungs = delta.read(spark, cfg, LUNGS, as_of=versions_in[LUNGS]) \
            .filter((F.col("slab_index") == 0) & (F.col("status") == "ok")).select("series_instance_uid")
        candidates = nodules.join(ok_lungs, "series_instance_uid", "left_semi")
        todo_uids = _series_to_do(spark, cfg, candidates, settings)
    if todo_uids:
        todo = F.broadcast(spark.createDataFrame([(u,) for u in todo_uids], "series_instance_uid string"))
        nod = candidates.join(todo, "series_instance_uid")
        slabs = delta.read(spark, cfg, VOLUMES, as_of=versions_in[VOLUMES]).select(_SLAB_COLS) \
            .join(todo, "series_instance_uid").withColumn("kind", F.lit("volume")).unionByName(
                delta.read(spark, cfg, LUNGS, as_of=versions_in[LUNGS])
                .filter((F.col("status") == "ok") & (F.col("slab_index") >= 0)).select(_SLAB_COLS)
                .join(todo, "series_instance_uid").withColumn("kind", F.lit("lung")))
        schema = union_schema(NODULE_PATCHES)
        schema = schema.add("error", "string")
        names = schema.fieldNames()

        def fn(slab_pdf, nod_pdf):
            if len(nod_pdf) == 0 or len(slab_pdf) == 0:
                return rows_frame([], names)
            try:
                rows = [{"target": PATCHES, **r} for r in patch_rows(slab_pdf, nod_pdf, settings, window_hu=window,
                                                                     run_id=run_id)]
            except Exception as exc:  # noqa: BLE001 - one bad series never stops the job; reported in the summary
                rows = [{"target": "error", "series_instance_uid": str(nod_pdf["series_instance_uid"].iloc[0]),
                         "error": f"{type(exc).__name__}: {exc}"[:2000]}]
            return rows_frame(rows, names)

        out = slabs.groupBy("series_instance_uid").cogroup(nod.groupBy("series_instance_uid")) \
            .applyInPandas(fn, schema).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            errors = [f"{r.series_instance_uid}: {r.error}" for r in out.filter(F.col("target") == "error").collect()]
            good = out.filter(F.col("target") == PATCHES)
            counts = {(r.kind, r.split): r["count"] for r in good.groupBy("kind", "split").count().collect()}
            series_done = good.select("series_instance_uid").distinct().count()
            if counts:
                before = delta.version(spark, cfg.table_path(PATCHES))
                versions[PATCHES] = delta.write(spark, cfg, good, PATCHES, mode="insert_new", count=False,
                                                deterministic_source=True).version
                new_rows = _rows_added(spark, cfg.table_path(PATCHES), before)
        finally:
            out.unpersist()
    by_split: dict[str, int] = {}
    for (_, split), n in counts.items():
        by_split[split] = by_split.get(split, 0) + n
    summary = {"run_id": run_id, "series": series_done, "patches": sum(counts.values()), "written": new_rows,
               "nodule_patches": sum(n for (k, _), n in counts.items() if k == "nodule"),
               "negative_patches": sum(n for (k, _), n in counts.items() if k == "negative"),
               "by_split": by_split, "errors": errors, "input_versions": versions_in,
               "seconds": round(time.monotonic() - t0, 1), **versions}
    record_run(spark, cfg, run_id=run_id, job="build_patches", started=started,
               status="failed" if errors and not counts else "succeeded",
               rows_in=series_done, rows_out=new_rows, output_versions=versions,
               params={"sizes_zyx": settings.sizes_zyx, "negatives_per_series": settings.negatives_per_series,
                       "negative_min_distance_mm": settings.negative_min_distance_mm, "seed": settings.seed,
                       "split_names": settings.split_names, "split_fractions": settings.split_fractions,
                       "split_seed": settings.split_seed, "malignancy_threshold": settings.malignancy_threshold,
                       "input_versions": versions_in},
               error="; ".join(errors)[:4000] or None)
    return summary


def _series_to_do(spark: SparkSession, cfg: Config, candidates, settings: PatchConfig) -> list[str]:
    """Series with an ok nodule whose (first-size) patch is missing, or without negatives yet."""
    import numpy as np
    from pyspark.sql import functions as F

    rows = candidates.select("series_instance_uid", "status", "centre_zyx_vox").collect()
    have: set[str] = set()
    with_negatives: set[str] = set()
    if delta.exists(spark, cfg.table_path(PATCHES)):
        patches = delta.read(spark, cfg, PATCHES)
        have = {r.patch_id for r in patches.filter(F.col("kind") == "nodule").select("patch_id").collect()}
        with_negatives = {r.series_instance_uid for r in patches.filter(F.col("kind") == "negative")
                          .select("series_instance_uid").distinct().collect()}
    todo = set()
    for r in rows:
        if r.status == "ok" and r.centre_zyx_vox is not None:
            centre = tuple(int(v) for v in np.floor(np.asarray(r.centre_zyx_vox, dtype=np.float64) + 0.5))
            if patch_id(r.series_instance_uid, "nodule", centre, settings.size_names[0]) not in have:
                todo.add(r.series_instance_uid)
    if settings.negatives_per_series > 0:
        todo |= {r.series_instance_uid for r in rows} - with_negatives
    return sorted(todo)


def _rows_added(spark: SparkSession, path: str, before: int) -> int:
    """Rows inserted by the commits after version ``before`` (Delta's operation metrics)."""
    from delta.tables import DeltaTable

    total = 0
    for r in DeltaTable.forPath(spark, path).history().filter(f"version > {int(before)}").collect():
        m = r.operationMetrics or {}
        total += int(m.get("numTargetRowsInserted") or m.get("numOutputRows") or 0)
    return total
