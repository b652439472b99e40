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

DEMO_COHORT = T.StructType([
    T.StructField("series_instance_uid", T.StringType(), False),
    T.StructField("patient_id", T.StringType(), False),
    T.StructField("manufacturer", T.StringType(), True),
    T.StructField("kernel", T.StringType(), True),
    T.StructField("slices", T.IntegerType(), True),
    T.StructField("spacing_zyx_mm", T.ArrayType(T.DoubleType()), True),
    T.StructField("nodules", T.IntegerType(), True),
    T.StructField("max_diameter_mm", T.DoubleType(), True),
])

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table("ops.pipeline_runs", PIPELINE_RUNS, key=("run_id",),
              description="one row per job run: inputs' Delta versions, rows in/out, status, duration"),
        Table("ops.demo_cohort", DEMO_COHORT, key=("series_instance_uid",),
              description="the synthetic series written by `ctlake demo` (one row per series)"),
    )
}


def table(name: str) -> Table:
    """The declaration of ``name`` (``layer.table``); a clear error for a typo."""
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}; declared tables: {sorted(TABLES)}") from None
