"""Synthetic ``gold.radiomics_features`` rows made in Spark (for the index tests and benchmark).

``feature_frame(spark, n, start=0)`` → ``n`` rows with roi ids ``r<start + i>``, parameter set ``p1``
and a ``features`` map of every PyRadiomics name the engine computes (values a deterministic
function of the row number), in the table's declared schema: ready for ``delta.write``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def feature_frame(spark: SparkSession, n: int, *, start: int = 0, names: tuple[str, ...] | None = None,
                  series: int = 100) -> DataFrame:
    from pyspark.sql import functions as F

    from ctlake.index.entities import radiomics_feature_names
    from ctlake.lake.schemas import table

    names = names or radiomics_feature_names()
    i = F.col("id")
    values = [(F.sin(i * F.lit(k + 1)) * F.lit(100.0 * (k + 1))).cast("double") for k in range(len(names))]
    cols = {
        "roi_id": F.format_string("r%09d", i), "params_hash": F.lit("p1"),
        "series_instance_uid": F.format_string("1.2.826.0.1.3680043.8.498.%d", i % series),
        "patient_pseudo_id": F.format_string("P-%05d", i % series), "status": F.lit("ok"),
        "features": F.map_from_arrays(F.array(*[F.lit(x) for x in names]), F.array(*values)),
        "feature_count": F.lit(len(names)), "params_json": F.lit('{"setting": {"binWidth": 25}}'),
        "params_source": F.lit("defaults"), "roi_voxels": (i % 5000 + 10).cast("long"),
        "spacing_zyx_mm": F.array(F.lit(1.0), F.lit(1.0), F.lit(1.0)), "extract_ms": (i % 100).cast("double"),
        "engine": F.lit("synthetic"), "run_id": F.lit("synthetic"), "extracted_at": F.current_timestamp(),
    }
    schema = table("gold.radiomics_features").schema
    df = spark.range(start, start + n)
    return df.select(*[(cols[f.name] if f.name in cols else F.lit(None)).cast(f.dataType).alias(f.name)
                       for f in schema.fields])
