"""Every ctlake table, declared once. Writers look tables up here by name.

Later issues add the bronze/silver/gold tables; the schema of each lives only in this module.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import types as T


@dataclass(frozen=True)
class Table:
    name: str
    schema: T.StructType
    key: tuple[str, ...]
    partition_by: tuple[str, ...] = ()
    description: str = ""
    properties: tuple[tuple[str, str], ...] = ()   # Delta table properties set at creation


# --- silver --------------------------------------------------------------------------------
CT_SERIES = T.StructType([
    T.StructField("series_instance_uid", T.StringType(), False),
    T.StructField("study_instance_uid", T.StringType(), True),
    T.StructField("patient_pseudo_id", T.StringType(), True),
    T.StructField("status", T.StringType(), False),                       # built | refused
    T.StructField("refusal_code", T.StringType(), True),
    T.StructField("refusal_detail", T.StringType(), True),
    T.StructField("qc_flags", T.ArrayType(T.StringType()), True),
    T.StructField("qc_json", T.StringType(), True),                       # measured facts (steps, gaps, tilt …)
    T.StructField("decisions", T.MapType(T.StringType(), T.StringType()), True),  # flag -> policy applied
    T.StructField("slices", T.IntegerType(), True),
    T.StructField("manufacturer", T.StringType(), True),
    T.StructField("convolution_kernel", T.StringType(), True),
    T.StructField("source_spacing_zyx_mm", T.ArrayType(T.DoubleType()), True),
    T.StructField("source_shape_zyx", T.ArrayType(T.IntegerType()), True),
    T.StructField("target_spacing_zyx_mm", T.ArrayType(T.DoubleType()), True),
    T.StructField("shape_zyx", T.ArrayType(T.IntegerType()), True),       # of the resampled volume
    T.StructField("origin_xyz_mm", T.ArrayType(T.DoubleType()), True),
    T.StructField("direction", T.ArrayType(T.DoubleType()), True),        # 9, row-major, SimpleITK convention
    T.StructField("window_hu", T.ArrayType(T.DoubleType()), True),
    T.StructField("interpolation_order", T.IntegerType(), True),
    T.StructField("slabs", T.IntegerType(), True),
    T.StructField("bronze_version", T.LongType(), True),
    T.StructField("run_id", T.StringType(), False),
    T.StructField("built_at", T.TimestampType(), False),
])

CT_VOLUMES = T.StructType([
    T.StructField("series_instance_uid", T.StringType(), False),
    T.StructField("slab_index", T.IntegerType(), False),
    T.StructField("z0", T.IntegerType(), False),                          # [z0, z1) of the volume
    T.StructField("z1", T.IntegerType(), False),
    T.StructField("dtype", T.StringType(), False),
    T.StructField("slab_shape_zyx", T.ArrayType(T.IntegerType()), False),
    T.StructField("codec", T.StringType(), False),                        # ctlake.lake.codec (CTT1)
    T.StructField("data", T.BinaryType(), False),
    T.StructField("volume_shape_zyx", T.ArrayType(T.IntegerType()), False),
    T.StructField("spacing_zyx_mm", T.ArrayType(T.DoubleType()), False),
    T.StructField("origin_xyz_mm", T.ArrayType(T.DoubleType()), False),
    T.StructField("direction", T.ArrayType(T.DoubleType()), False),
    T.StructField("run_id", T.StringType(), False),
])

PIPELINE_RUNS = T.StructType([
    T.StructField("run_id", T.StringType(), False),
    T.StructField("job", T.StringType(), False),
    T.StructField("status", T.StringType(), False),          # succeeded | failed
    T.StructField("started_at", T.TimestampType(), False),
    T.StructField("ended_at", T.TimestampType(), True),
    T.StructField("duration_s", T.DoubleType(), True),
    T.StructField("rows_in", T.LongType(), True),
    T.StructField("rows_out", T.LongType(), True),
    T.StructField("input_versions", T.MapType(T.StringType(), T.LongType()), True),  # table -> Delta version
    T.StructField("output_versions", T.MapType(T.StringType(), T.LongType()), True),
    T.StructField("params_json", T.StringType(), True),
    T.StructField("error", T.StringType(), True),
    T.StructField("profile", T.StringType(), True),
])

# --- bronze --------------------------------------------------------------------------------
_SOURCE_FIELDS = [
    T.StructField("source_kind", T.StringType(), False),          # kafka | file
    T.StructField("source_topic", T.StringType(), True),
    T.StructField("source_partition", T.IntegerType(), True),
    T.StructField("source_offset", T.LongType(), True),
    T.StructField("source_ref", T.StringType(), True),            # keyed hash of the edge path (paths can carry PHI)
    T.StructField("ingest_run_id", T.StringType(), False),
    T.StructField("ingested_at", T.TimestampType(), False),
]

DICOM_INSTANCES = T.StructType([
    T.StructField("sop_instance_uid", T.StringType(), False),
    T.StructField("series_instance_uid", T.StringType(), True),
    T.StructField("study_instance_uid", T.StringType(), True),
    T.StructField("patient_pseudo_id", T.StringType(), True),
    T.StructField("sop_class_uid", T.StringType(), True),
    T.StructField("modality", T.StringType(), True),
    T.StructField("instance_number", T.LongType(), True),
    T.StructField("rows", T.IntegerType(), True),
    T.StructField("columns", T.IntegerType(), True),
    T.StructField("number_of_frames", T.IntegerType(), True),
    T.StructField("pixel_spacing_mm", T.ArrayType(T.DoubleType()), True),          # (row, col)
    T.StructField("slice_thickness_mm", T.DoubleType(), True),
    T.StructField("image_position_patient_mm", T.ArrayType(T.DoubleType()), True),  # (x, y, z) LPS
    T.StructField("image_orientation_patient", T.ArrayType(T.DoubleType()), True),  # row then column cosines
    T.StructField("rescale_slope", T.DoubleType(), True),
    T.StructField("rescale_intercept", T.DoubleType(), True),
    T.StructField("manufacturer", T.StringType(), True),
    T.StructField("manufacturer_model_name", T.StringType(), True),
    T.StructField("convolution_kernel", T.StringType(), True),
    T.StructField("kvp", T.DoubleType(), True),
    T.StructField("transfer_syntax_uid", T.StringType(), True),
    T.StructField("study_date", T.DateType(), True),                               # shifted per patient
    T.StructField("series_date", T.DateType(), True),
    T.StructField("header_json", T.StringType(), False),                           # DICOM JSON model, no bulk data
    T.StructField("dicom_bytes", T.BinaryType(), True),                            # de-identified Part-10 bytes ...
    T.StructField("claim_check_uri", T.StringType(), True),                        # ... or where they are
    T.StructField("content_sha256", T.StringType(), False),
    T.StructField("size_bytes", T.LongType(), False),
    T.StructField("deid_profile", T.StringType(), True),
    *_SOURCE_FIELDS,
])

QUARANTINE = T.StructType([
    # sha256 of (content or source ref, stage, code): a replay adds nothing
    T.StructField("quarantine_id", T.StringType(), False),
    T.StructField("stage", T.StringType(), False),           # edge | parse | deid_gate | decode | claim_check
    T.StructField("error_code", T.StringType(), False),
    T.StructField("error_message", T.StringType(), False),
    T.StructField("content_sha256", T.StringType(), True),
    T.StructField("size_bytes", T.LongType(), True),
    # Bytes are kept only when they passed the de-identification gate; otherwise they may carry
    # PHI and stay at the source (topic/offset or the edge's report names them).
    T.StructField("dicom_bytes", T.BinaryType(), True),
    T.StructField("claim_check_uri", T.StringType(), True),
    T.StructField("bytes_withheld_reason", T.StringType(), True),
    *_SOURCE_FIELDS,
])


TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table("bronze.dicom_instances", DICOM_INSTANCES, key=("sop_instance_uid",),
              description="one row per de-identified DICOM instance; the same instance twice is one row",
              # statistics only where queries filter: not on the bytes or the JSON header
              properties=(("delta.dataSkippingStatsColumns",
                           "sop_instance_uid,series_instance_uid,study_instance_uid,patient_pseudo_id,"
                           "modality,ingested_at,ingest_run_id"),)),
        Table("bronze.quarantine", QUARANTINE, key=("quarantine_id",),
              description="everything that could not be taken, with stage, code and message",
              properties=(("delta.dataSkippingStatsColumns",
                           "quarantine_id,stage,error_code,content_sha256,ingested_at,ingest_run_id"),)),
        Table("silver.ct_series", CT_SERIES, key=("series_instance_uid",),
              description="one row per series: QC flags, policy decisions, source and target geometry"),
        Table("silver.ct_volumes", CT_VOLUMES, key=("series_instance_uid", "slab_index"),
              description="resampled, clipped HU volumes in z slabs of codec-compressed int16",
              properties=(("delta.dataSkippingStatsColumns", "series_instance_uid,slab_index,z0,z1,run_id"),)),
        Table("ops.pipeline_runs", PIPELINE_RUNS, key=("run_id",),
              description="one row per job run: inputs' Delta versions, rows in/out, status, duration"),
    )
}


def table(name: str) -> Table:
    """The declaration of ``name`` (``layer.table``); a clear error for a typo."""
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}; declared tables: {sorted(TABLES)}") from None


def union_schema(*schemas: T.StructType) -> T.StructType:
    """A ``target`` column (the table a row is for) plus every field of ``schemas``, nullable, in
    order, first definition wins: one Spark output schema for a step that feeds several tables."""
    fields = {"target": T.StructField("target", T.StringType(), False)}
    for schema in schemas:
        for f in schema.fields:
            fields.setdefault(f.name, T.StructField(f.name, f.dataType, True))
    return T.StructType(list(fields.values()))


def rows_frame(rows: list[dict], names: list[str]):
    """A pandas frame of ``rows`` for ``mapInPandas``/``applyInPandas`` output with the columns
    ``names``: object columns, so None stays None (a NaN in an array or binary column breaks Arrow)."""
    import pandas as pd

    return pd.DataFrame({c: pd.Series([r.get(c) for r in rows], dtype=object) for c in names})
