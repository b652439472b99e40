"""The one SparkSession builder: Delta enabled, Kafka connector on the classpath, profile settings.

Jars come from the Maven cache (:mod:`ctlake.infra.jars`) through ``spark.jars``, so no Ivy
resolution happens at start-up. In the local profile the driver binds to 127.0.0.1.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from ctlake.config import Config, load_config
from ctlake.infra.jars import jar_files
from ctlake.infra.java import java_home

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType


EXECUTOR_JAVA_OPTIONS = "-XX:TieredStopAtLevel=1"


def spark_conf(cfg: Config, *, app_name: str | None = None) -> dict[str, str]:
    """Every Spark setting ctlake applies for ``cfg`` (also used to build spark-submit lines)."""
    s = cfg.spark
    conf = {
        "spark.master": s.master,
        "spark.app.name": app_name or s.app_name,
        "spark.jars": ",".join(str(p) for p in jar_files("spark")),
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.shuffle.partitions": str(s.shuffle_partitions),
        "spark.default.parallelism": str(s.shuffle_partitions),
        "spark.databricks.delta.snapshotPartitions": str(s.delta_snapshot_partitions),
        "spark.sql.session.timeZone": "UTC",
        # zstd: faster than snappy on CT pixel data here and about half the size (snappy ~6 %)
        "spark.sql.parquet.compression.codec": "zstd",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.driver.memory": s.driver_memory,
        "spark.executor.memory": s.executor_memory,
        "spark.ui.enabled": str(s.ui_enabled).lower(),
        "spark.ui.showConsoleProgress": "false",
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
        "spark.sql.warehouse.dir": f"{cfg.lake_root.rstrip('/')}/_warehouse",
        # Executors run ctlake's compute in Python workers (numba kernels, pydicom) and native
        # codecs; their JVM only moves rows. The C2 compiler still spends ~6 CPU-s per executor
        # and job on that glue, on the executor's own core, against its Python worker (every
        # executor compiles the same code again: it grows with the executors). C1 alone compiles
        # in a fraction of that and the tasks' JVM time stays the same here (bench/README.md,
        # radiomics scale-out). A profile's spark.conf may set other options instead.
        "spark.executor.extraJavaOptions": EXECUTOR_JAVA_OPTIONS,
    }
    if s.local_ip:
        conf["spark.driver.host"] = s.local_ip
        conf["spark.driver.bindAddress"] = s.local_ip
    conf.update(s.conf)
    return conf


def submitted_by_spark_submit() -> bool:
    """True when this Python process was launched by spark-submit (the JVM is already up)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def submit_args(cfg: Config, *, app_name: str | None = None) -> list[str]:
    """spark-submit arguments equivalent to :func:`spark_conf` for ``cfg``."""
    conf = spark_conf(cfg, app_name=app_name)
    args = ["--master", conf.pop("spark.master"), "--jars", conf.pop("spark.jars"),
            "--driver-memory", conf.pop("spark.driver.memory")]
    conf.pop("spark.pyspark.python", None)
    conf.pop("spark.pyspark.driver.python", None)
    for key, value in conf.items():
        args += ["--conf", f"{key}={value}"]
    return args


def get_spark(cfg: Config | None = None, *, app_name: str | None = None,
              extra_conf: dict[str, str] | None = None) -> SparkSession:
    """Return the active SparkSession or build one from the profile.

    Under spark-submit the command line's master, memory and jars are kept. Sets JAVA_HOME
    to a Java 17 (Spark 4.0 fails on newer JDKs) and SPARK_LOCAL_IP in the local
    profile before the JVM starts. ``extra_conf`` wins over the profile.
    """
    cfg = cfg or load_config()
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    conf = {**spark_conf(cfg, app_name=app_name), **(extra_conf or {})}
    if submitted_by_spark_submit():
        # spark-submit already chose master, memory and jars (see `ctlake spark-conf`): the
        # profile must not override the command line.
        for key in ("spark.master", "spark.driver.memory", "spark.jars", "spark.executor.extraJavaOptions",
                    "spark.pyspark.python", "spark.pyspark.driver.python"):
            if not (extra_conf and key in extra_conf):
                conf.pop(key, None)
    os.environ["JAVA_HOME"] = str(java_home())
    if cfg.spark.local_ip:
        os.environ.setdefault("SPARK_LOCAL_IP", cfg.spark.local_ip)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def local_frame(spark: SparkSession, rows: Sequence[tuple], schema: str | StructType) -> DataFrame:
    """A DataFrame of a few driver-side rows (a plan, a lookup table) as a local relation.

    ``createDataFrame`` of a Python list makes a parallelised Python RDD: every query over it (a
    broadcast of it too) runs a job whose tasks start Python workers to unpickle the rows (0.5-1 s
    on a small cluster). Through pandas and Arrow the rows travel once, in the plan itself
    (Spark keeps Arrow data under ``spark.sql.execution.arrow.localRelationThreshold`` on the
    driver), so a broadcast of it is a JVM-only job. ``schema``: a DDL string or a StructType.
    """
    import pandas as pd
    from pyspark.sql.types import StructType, _parse_datatype_string

    struct = schema if isinstance(schema, StructType) else _parse_datatype_string(schema)
    names = struct.fieldNames()
    frame = pd.DataFrame({n: pd.Series([r[i] for r in rows], dtype=object) for i, n in enumerate(names)})
    return spark.createDataFrame(frame, struct)
