"""Derived views over ``bronze.dicom_instances``: series, studies, patients, and typed keyword columns.

The bronze table keeps a fixed set of typed key columns plus the whole header as the DICOM JSON
model. Two layers are derived here, both computed on read so they never disagree with bronze:

- ``series_view`` / ``study_view`` / ``patient_view``: one row per series, study or patient
  (instance counts, modalities, scanners, geometry extents, date range);
- ``keyword_columns``: any DICOM keywords as typed columns (DA → date, DS → double, IS → long,
  PN → struct, VM > 1 → array, …; see :data:`ctlake.dicom.flatten.VR_LOGICAL_TYPE`), parsed from
  ``header_json`` by the same pure flattener the ingest uses.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from ctlake.config import Config

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

BRONZE = "bronze.dicom_instances"


def _bronze(spark: SparkSession, cfg: Config, as_of: int | None = None) -> DataFrame:
    from ctlake.lake import delta

    return delta.read(spark, cfg, BRONZE, as_of=as_of)


def series_view(spark: SparkSession, cfg: Config, *, as_of: int | None = None) -> DataFrame:
    """One row per series: instances, modality, scanner, slice position range (z, mm), dates."""
    from pyspark.sql import functions as F

    b = _bronze(spark, cfg, as_of)
    z = F.element_at("image_position_patient_mm", 3)
    return b.groupBy("series_instance_uid").agg(
        F.first("study_instance_uid", ignorenulls=True).alias("study_instance_uid"),
        F.first("patient_pseudo_id", ignorenulls=True).alias("patient_pseudo_id"),
        F.count("*").alias("instances"),
        F.sum(F.coalesce("number_of_frames", F.lit(1))).alias("frames"),
        F.array_sort(F.collect_set("modality")).alias("modalities"),
        F.first("manufacturer", ignorenulls=True).alias("manufacturer"),
        F.first("manufacturer_model_name", ignorenulls=True).alias("manufacturer_model_name"),
        F.first("convolution_kernel", ignorenulls=True).alias("convolution_kernel"),
        F.first("kvp", ignorenulls=True).alias("kvp"),
        F.first("rows", ignorenulls=True).alias("rows"),
        F.first("columns", ignorenulls=True).alias("columns"),
        F.first("pixel_spacing_mm", ignorenulls=True).alias("pixel_spacing_mm"),
        F.first("slice_thickness_mm", ignorenulls=True).alias("slice_thickness_mm"),
        F.min(z).alias("first_z_mm"), F.max(z).alias("last_z_mm"),
        F.array_sort(F.collect_set("transfer_syntax_uid")).alias("transfer_syntaxes"),
        F.min("series_date").alias("series_date"),
        F.sum("size_bytes").alias("size_bytes"),
        F.max("ingested_at").alias("last_ingested_at"),
    )


def study_view(spark: SparkSession, cfg: Config, *, as_of: int | None = None) -> DataFrame:
    """One row per study: series and instance counts, modalities, study date."""
    from pyspark.sql import functions as F

    b = _bronze(spark, cfg, as_of)
    return b.groupBy("study_instance_uid").agg(
        F.first("patient_pseudo_id", ignorenulls=True).alias("patient_pseudo_id"),
        F.countDistinct("series_instance_uid").alias("series"),
        F.count("*").alias("instances"),
        F.array_sort(F.collect_set("modality")).alias("modalities"),
        F.min("study_date").alias("study_date"),
        F.sum("size_bytes").alias("size_bytes"),
    )


def patient_view(spark: SparkSession, cfg: Config, *, as_of: int | None = None) -> DataFrame:
    """One row per (pseudonymised) patient: studies, series, instances, date range."""
    from pyspark.sql import functions as F

    b = _bronze(spark, cfg, as_of)
    return b.groupBy("patient_pseudo_id").agg(
        F.countDistinct("study_instance_uid").alias("studies"),
        F.countDistinct("series_instance_uid").alias("series"),
        F.count("*").alias("instances"),
        F.min("study_date").alias("first_study_date"),
        F.max("study_date").alias("last_study_date"),
    )


def register_views(spark: SparkSession, cfg: Config) -> list[str]:
    """Register ``bronze_series``, ``bronze_studies``, ``bronze_patients`` as temp views."""
    views = {"bronze_series": series_view, "bronze_studies": study_view, "bronze_patients": patient_view}
    for name, fn in views.items():
        fn(spark, cfg).createOrReplaceTempView(name)
    return list(views)


def keyword_schema(keywords: Iterable[str]):
    """The Spark schema of :func:`keyword_columns` for ``keywords`` (from the VR of each keyword)."""
    from pyspark.sql import types as T

    from ctlake.dicom.flatten import PN_FIELDS, column_types

    def spark_type(lt) -> T.DataType:
        base = {"string": T.StringType(), "date": T.DateType(), "double": T.DoubleType(),
                "long": T.LongType(), "binary": T.BinaryType(),
                "pn": T.StructType([T.StructField(f, T.StringType(), True) for f in PN_FIELDS])}[lt.kind]
        return T.ArrayType(base) if lt.array else base

    types = column_types(list(keywords))
    return T.StructType([T.StructField("sop_instance_uid", T.StringType(), False)] +
                        [T.StructField(kw, spark_type(lt), True) for kw, lt in types.items()])


def _flatten_frames(frames: Iterator[pd.DataFrame], keywords: list[str]) -> Iterator[pd.DataFrame]:
    import json

    from pydicom import Dataset

    from ctlake.dicom.flatten import flatten
    from ctlake.lake.schemas import rows_frame

    for frame in frames:
        rows = []
        for uid, header in zip(frame["sop_instance_uid"], frame["header_json"], strict=True):
            try:
                ds = Dataset.from_json(json.loads(header))
                flat = flatten(ds, keywords)
                values = {kw: flat[kw] for kw in keywords}
            except Exception:  # noqa: BLE001 - an odd header gives nulls, as flatten does per value
                values = dict.fromkeys(keywords)
            rows.append({"sop_instance_uid": uid, **values})
        cols = ["sop_instance_uid", *keywords]
        yield rows_frame(rows, cols)


def keyword_columns(spark: SparkSession, cfg: Config, keywords: Iterable[str], *,
                    as_of: int | None = None) -> DataFrame:
    """Bronze instances with the given DICOM keywords as typed columns (nulls where absent)."""
    keywords = list(keywords)
    schema = keyword_schema(keywords)
    b = _bronze(spark, cfg, as_of).select("sop_instance_uid", "header_json")
    return b.mapInPandas(lambda frames: _flatten_frames(frames, keywords), schema)
