"""Delta read/write helpers used by every job: idempotent MERGE on the table's key, versions."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ctlake.config import Config
from ctlake.lake.schemas import table as table_decl

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


CDF_PROPERTY = "delta.enableChangeDataFeed"


@dataclass(frozen=True)
class WriteResult:
    table: str
    path: str
    version: int
    rows: int


def exists(spark: SparkSession, path: str) -> bool:
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, path)


def version(spark: SparkSession, path: str) -> int:
    """The latest committed version of the Delta table at ``path`` (-1 if there is none)."""
    from delta.tables import DeltaTable

    if not exists(spark, path):
        return -1
    try:  # the JVM's DeltaLog: one listing of _delta_log, no Spark job (history(1) runs one: ~1 s)
        jvm = spark._jvm
        log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, path)
        return int(log.update(False, jvm.scala.Option.empty(), jvm.scala.Option.empty()).version())
    except Exception:  # noqa: BLE001 - no JVM gateway (Spark Connect) or another Delta build
        return int(DeltaTable.forPath(spark, path).history(1).select("version").first()[0])


def read(spark: SparkSession, cfg: Config, name: str, *, as_of: int | None = None) -> DataFrame:
    reader = spark.read.format("delta")
    if as_of is not None:
        reader = reader.option("versionAsOf", as_of)
    return reader.load(cfg.table_path(name))


def write(spark: SparkSession, cfg: Config, df: DataFrame, name: str, *,
          mode: Literal["merge", "insert_new", "append"] = "merge", retries: int = 8, count: bool = True,
          txn: tuple[str, int] | None = None, deterministic_source: bool = False,
          options: dict[str, str] | None = None) -> WriteResult:
    """Write ``df`` to the declared table ``name``.

    ``merge`` upserts on the table's key (update matched, insert new); ``insert_new`` only inserts
    rows whose key is absent (a replay adds nothing); ``append`` appends. A MERGE that loses a
    race with another writer is retried (it is idempotent), up to ``retries`` times with backoff.
    ``count=False`` skips counting the rows (``rows`` is then -1). ``txn`` = (app id, version)
    makes an append idempotent: Delta skips it if that pair was committed before.
    ``deterministic_source=True`` (the frame is persisted or otherwise re-reads the same rows) lets
    the MERGE skip materialising its source, which costs a full copy of it (4× faster on DICOM
    bytes here). ``options``: extra DataFrameWriter options for ``append`` (Delta passes on
    ``compression`` and ``maxRecordsPerFile``).
    The frame is cast to the declared schema first, so a writer cannot silently change a table's
    columns.
    """
    from delta.tables import DeltaTable

    decl = table_decl(name)
    path = cfg.table_path(name)
    df = df.select([df[f.name].cast(f.dataType).alias(f.name) for f in decl.schema.fields])
    rows = df.count() if count else -1
    for attempt in range(retries + 1):
        if exists(spark, path):
            break
        try:
            builder = DeltaTable.createIfNotExists(spark).location(path).addColumns(decl.schema) \
                .partitionedBy(*decl.partition_by)
            for key, value in decl.properties:
                builder = builder.property(key, value)
            if CDF_PROPERTY not in dict(decl.properties):
                # the search index follows every table through its change data feed (ctlake.index)
                builder = builder.property(CDF_PROPERTY, "true")
            builder.execute()
        except Exception:  # noqa: BLE001 - two writers creating the table at once
            # Another writer may be half-way through its first commit (Delta then reports a
            # conflict, a non-empty location or even a missing table): wait and look again; only
            # a table that still does not exist after every retry is an error.
            if attempt == retries:
                raise
            time.sleep(0.5 * (1 + random.random()))  # noqa: S311
    if mode == "append":
        writer = df.write.format("delta").mode("append")
        if txn is not None:
            writer = writer.option("txnAppId", txn[0]).option("txnVersion", txn[1])
        for k, v in (options or {}).items():
            writer = writer.option(k, v)
        writer.save(path)
        return WriteResult(name, path, version(spark, path), rows)
    cond = " AND ".join(f"t.`{k}` = s.`{k}`" for k in decl.key)
    key = "spark.databricks.delta.merge.materializeSource"
    before = spark.conf.get(key, None)
    if deterministic_source:
        spark.conf.set(key, "none")
    try:
        _merge(spark, path, df, cond, mode, retries)
    finally:
        if deterministic_source and before is not None:
            spark.conf.set(key, before)
        elif deterministic_source:
            spark.conf.unset(key)
    return WriteResult(name, path, version(spark, path), rows)


def _merge(spark: SparkSession, path: str, df: DataFrame, cond: str, mode: str, retries: int) -> None:
    from delta.tables import DeltaTable

    for attempt in range(retries + 1):
        merge = DeltaTable.forPath(spark, path).alias("t").merge(df.alias("s"), cond)
        if mode == "merge":
            merge = merge.whenMatchedUpdateAll()
        try:
            merge.whenNotMatchedInsertAll().execute()
            break
        except Exception as exc:  # noqa: BLE001 - only Delta's write conflicts are retried
            if attempt == retries or not _is_write_conflict(exc):
                raise
            time.sleep(min(8.0, 0.25 * 2**attempt) * (1 + random.random()))  # noqa: S311


def _is_write_conflict(exc: BaseException) -> bool:
    """Delta's optimistic-concurrency conflicts (another writer committed first): safe to retry
    an idempotent MERGE."""
    text = f"{type(exc).__name__} {exc}"
    return any(k in text for k in ("ConcurrentAppend", "ConcurrentDeleteRead", "ConcurrentDeleteDelete",
                                   "ConcurrentTransaction", "ProtocolChanged", "MetadataChanged",
                                   "DELTA_CONCURRENT", "FileAlreadyExists"))
