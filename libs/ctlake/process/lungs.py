"""Spark glue: silver.ct_volumes → silver.lung_masks (one group per series).

Each series' slabs are reassembled in the worker (``applyInPandas`` grouped by series), the pure
:func:`ctlake.imaging.lung.lung_mask` runs on the HU volume with the ``imaging.lung`` settings, and
the mask leaves the worker as CTT1-compressed uint8 slabs over the same z ranges as the volume's
slabs (slab i of the mask covers slab i of the volume). Per-series facts (lung volume in ml, the
number of 6-connected components) repeat on every slab row.

A series whose mask cannot be made (``NO_LUNG_FOUND``: no aerated component inside the body, a
damaged slab, ...) gets one row with ``slab_index`` -1, status ``failed`` and the code — the job
never stops for it. Incremental: a series already in ``silver.lung_masks`` (ok or failed) is not
processed again; delete its rows to redo it.

Also here, for the later steps: :func:`assemble_slabs` (slab rows → array and Grid, used inside the
nodule and patch workers) and :func:`read_lung_mask` (driver side, like ``read_volume``).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING, Any

from ctlake.config import Config
from ctlake.lake import delta
from ctlake.lake.runs import record_run, utcnow
from ctlake.lake.schemas import LUNG_MASKS, rows_frame, union_schema

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from pyspark.sql import SparkSession

    from ctlake.imaging.grid import Grid

VOLUMES = "silver.ct_volumes"
LUNGS = "silver.lung_masks"
SLAB_COLUMNS = ["series_instance_uid", "slab_index", "z0", "z1", "data", "volume_shape_zyx", "spacing_zyx_mm",
                "origin_xyz_mm", "direction"]


class SlabError(ValueError):
    """The slabs of a series do not make up its volume (gap, overlap, wrong shape, bad bytes)."""

    code = "SLABS_INCOMPLETE"


def assemble_slabs(slabs: pd.DataFrame | list[dict[str, Any]]) -> tuple[np.ndarray, Grid, list[tuple[int, int]]]:
    """Rows of one series' slabs (``slab_index``, ``z0``, ``z1``, ``data`` (CTT1), ``volume_shape_zyx``,
    ``spacing_zyx_mm``, ``origin_xyz_mm``, ``direction``) → the (z, y, x) array, its Grid and the
    [z0, z1) range of every slab in order. Raises :class:`SlabError` when the slabs do not tile
    the volume exactly (codec errors pass through as ``ctlake.lake.codec.CodecError``)."""
    import numpy as np

    from ctlake.imaging.grid import Grid
    from ctlake.lake import codec

    rows = slabs.to_dict("records") if hasattr(slabs, "to_dict") else list(slabs)
    rows = sorted((r for r in rows if r["slab_index"] is not None and int(r["slab_index"]) >= 0),
                  key=lambda r: int(r["slab_index"]))
    if not rows:
        raise SlabError("no slabs")
    r0 = rows[0]
    shape = tuple(int(v) for v in r0["volume_shape_zyx"])
    grid = Grid(shape, tuple(float(v) for v in r0["spacing_zyx_mm"]), tuple(float(v) for v in r0["origin_xyz_mm"]),
                tuple(float(v) for v in r0["direction"]))
    ranges = [(int(r["z0"]), int(r["z1"])) for r in rows]
    if ranges[0][0] != 0 or ranges[-1][1] != shape[0] or any(
            a[1] != b[0] for a, b in zip(ranges, ranges[1:], strict=False)):
        raise SlabError(f"slab z ranges {ranges} do not tile 0..{shape[0]}")
    first = codec.decode(bytes(r0["data"]))
    out = np.empty(shape, dtype=first.dtype)
    for r, (z0, z1) in zip(rows, ranges, strict=True):
        part = first if r is r0 else codec.decode(bytes(r["data"]))
        if part.shape != (z1 - z0, *shape[1:]):
            raise SlabError(f"slab {r['slab_index']} has shape {part.shape}, expected {(z1 - z0, *shape[1:])}")
        out[z0:z1] = part
    return out, grid, ranges


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of a worker's pandas frame as dicts, with pandas' NaN for a missing number back to None."""
    return [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()}
            for r in frame.to_dict("records")]


def lung_rows(slabs: pd.DataFrame, lung_settings: dict[str, Any], *, run_id: str,
              volumes_version: int) -> list[dict[str, Any]]:
    """One series' ``silver.ct_volumes`` slabs → its ``silver.lung_masks`` rows (pure, no Spark)."""
    import numpy as np
    from scipy import ndimage

    from ctlake.errors import CtlakeError
    from ctlake.imaging.lung import lung_mask
    from ctlake.lake import codec

    now = utcnow()
    uid = str(slabs["series_instance_uid"].iloc[0])
    base = {"series_instance_uid": uid, "params_json": json.dumps(lung_settings, sort_keys=True),
            "volumes_version": volumes_version, "run_id": run_id, "built_at": now}

    def failed(code: str, detail: str) -> list[dict[str, Any]]:
        return [{**base, "slab_index": -1, "status": "failed", "error_code": code, "error_detail": detail[:4000]}]

    try:
        hu, grid, ranges = assemble_slabs(slabs)
        mask = lung_mask(hu, grid.spacing_zyx_mm, **lung_settings)
        del hu
        _, components = ndimage.label(mask)
    except CtlakeError as exc:
        return failed(exc.code, str(exc))
    except SlabError as exc:
        return failed(exc.code, str(exc))
    except Exception as exc:  # noqa: BLE001 - one bad series never stops the job; the code marks a bug
        return failed("UNEXPECTED_LUNG_ERROR", f"{type(exc).__name__}: {exc}")
    volume_ml = float(mask.sum()) * float(np.prod(grid.spacing_zyx_mm)) / 1000.0
    geometry = {"volume_shape_zyx": list(grid.shape_zyx), "spacing_zyx_mm": list(grid.spacing_zyx_mm),
                "origin_xyz_mm": list(grid.origin_xyz_mm), "direction": list(grid.direction)}
    rows = []
    for i, (z0, z1) in enumerate(ranges):
        slab = mask[z0:z1].astype(np.uint8)
        rows.append({**base, **geometry, "slab_index": i, "z0": z0, "z1": z1, "dtype": "uint8",
                     "slab_shape_zyx": list(slab.shape), "codec": "CTT1", "data": codec.encode(slab),
                     "lung_volume_ml": volume_ml, "components": int(components), "status": "ok"})
    return rows


def run_recorded(spark: SparkSession, cfg: Config, job: str, run_id: str, body, params: dict | None = None):
    """``body(started)``; when it raises, an ``ops.pipeline_runs`` row with status failed and the
    error is written before the exception goes on (a successful body records its own run)."""
    started = utcnow()
    try:
        return body(started)
    except Exception as exc:
        try:
            record_run(spark, cfg, run_id=run_id, job=job, started=started, status="failed", rows_in=0, rows_out=0,
                       output_versions={}, params=params or {}, error=f"{type(exc).__name__}: {exc}"[:4000])
        except Exception:  # noqa: BLE001, S110 - the lake itself may be what failed; the first error wins
            pass
        raise


def build_lung_masks(spark: SparkSession, cfg: Config, *, run_id: str | None = None) -> dict[str, Any]:
    """Lung masks of every series in ``silver.ct_volumes`` that ``silver.lung_masks`` lacks; a summary."""
    run_id = run_id or f"build_lung_masks:{uuid.uuid4().hex}"
    return run_recorded(spark, cfg, "build_lung_masks", run_id,
                        lambda started: _build_lung_masks(spark, cfg, run_id, started))


def _build_lung_masks(spark: SparkSession, cfg: Config, run_id: str, started) -> dict[str, Any]:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    t0 = time.monotonic()
    settings = cfg.imaging.lung.kwargs()
    version = delta.version(spark, cfg.table_path(VOLUMES))
    counts: dict[str, int] = {}
    versions: dict[str, int] = {}
    vols = delta.read(spark, cfg, VOLUMES, as_of=version).select(SLAB_COLUMNS) if version >= 0 else None
    if vols is not None and delta.exists(spark, cfg.table_path(LUNGS)):
        vols = vols.join(delta.read(spark, cfg, LUNGS).select("series_instance_uid").distinct(),
                         "series_instance_uid", "left_anti")
    if vols is not None and vols.select("series_instance_uid").limit(1).count():     # anything to do?
        schema = union_schema(LUNG_MASKS)
        names = schema.fieldNames()

        def fn(pdf):
            return rows_frame([{"target": LUNGS, **r} for r in lung_rows(pdf, settings, run_id=run_id,
                                                                          volumes_version=version)], names)

        out = vols.groupBy("series_instance_uid").applyInPandas(fn, schema).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            counts = {(r.status, r.first): r["count"] for r in out.groupBy(
                "status", (F.col("slab_index") <= 0).alias("first")).count().collect()}
            if sum(counts.values()):
                versions[LUNGS] = delta.write(spark, cfg, out, LUNGS, mode="insert_new", count=False,
                                              deterministic_source=True).version
        finally:
            out.unpersist()
    ok = counts.get(("ok", True), 0)
    failed = counts.get(("failed", True), 0)
    slabs = counts.get(("ok", True), 0) + counts.get(("ok", False), 0)
    summary = {"run_id": run_id, "volumes_version": version, "series": ok + failed, "ok": ok, "failed": failed,
               "slabs": slabs, "seconds": round(time.monotonic() - t0, 1), **versions}
    record_run(spark, cfg, run_id=run_id, job="build_lung_masks", started=started, status="succeeded",
               rows_in=ok + failed, rows_out=ok, output_versions=versions,
               params={"lung": settings, "volumes_version": version})
    return summary


def read_lung_mask(spark: SparkSession, cfg: Config, series_instance_uid: str) -> tuple[np.ndarray, Grid]:
    """One series' lung mask from ``silver.lung_masks``: (bool array (z, y, x), Grid). KeyError when
    the series has no mask; ValueError (with the code) when its mask failed."""
    rows = [r.asDict() for r in delta.read(spark, cfg, LUNGS)
            .filter(_col_eq("series_instance_uid", series_instance_uid)).collect()]
    if not rows:
        raise KeyError(f"no lung mask for series {series_instance_uid} in {LUNGS}")
    bad = [r for r in rows if r["status"] != "ok"]
    if bad:
        raise ValueError(f"the lung mask of {series_instance_uid} failed: {bad[0]['error_code']}: "
                         f"{bad[0]['error_detail']}")
    mask, grid, _ = assemble_slabs(rows)
    return mask.astype(bool), grid


def _col_eq(column: str, value: str):
    """``column == value`` as a Spark Column (no string interpolation into SQL)."""
    from pyspark.sql import functions as F

    return F.col(column) == F.lit(value)
