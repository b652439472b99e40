"""The incremental index job: Delta change data feed → Elasticsearch, at least once + idempotent.

For each entity (``ctlake.index.entities``) and each table it reads, ``ops.index_state`` holds the
Delta version the index has caught up with. A run:

1. puts the entity's versioned index template; if the alias is missing, points at an index of
   another mapping hash, or at an index other than the one the state was recorded for (or
   ``full=True``, or a table had no change data feed), it **rebuilds**: a new concrete index is
   filled from the tables' snapshots and the alias is swapped in one call;
2. otherwise reads each table's change data feed from the recorded version + 1 to the current
   version; the primary table's changed keys, and the primary rows whose lookup key changed, are
   re-read from the snapshot at the current version and bulk-upserted (``_id`` = key); keys no
   longer in the snapshot are bulk-deleted by id;
3. records the new versions in ``ops.index_state`` only after every bulk of the entity succeeded.
   A run killed anywhere before that is repeated by the next run: upserts by a deterministic id and
   deletes by id are idempotent, so the index converges to the lake.

Documents the mapping refuses are written to ``ops.index_rejections`` with Elasticsearch's reason
(and an earlier version of that document is removed); the rest are indexed. A table created before
change data feed was on gets ``delta.enableChangeDataFeed=true`` (ALTER TABLE) and a full pass.
The bulk itself runs inside Spark tasks (``mapInArrow``: Arrow batches straight to JSON), so the
job scales with the executors; deletes and state are handled by the driver.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctlake.config import Config
from ctlake.index import model
from ctlake.index.entities import ENTITIES, Entity, declared, entity, entity_mapping, index_settings
from ctlake.lake import delta
from ctlake.lake.runs import record_run, utcnow

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch
    from pyspark.sql import DataFrame, SparkSession

STATE = "ops.index_state"
REJECTIONS = "ops.index_rejections"
JOB = "index_search"
ID_COL = "__ctlake_id"
SOURCE_COL = "__ctlake_source"


@dataclass
class EntityResult:
    entity: str
    status: str = "ok"                 # ok | skipped | failed | unchanged
    mode: str = ""                     # full | incremental
    index: str = ""
    docs: int = 0
    deleted: int = 0
    rejected: int = 0
    versions: dict[str, int] = field(default_factory=dict)
    message: str = ""
    state_rows: list[tuple] = field(default_factory=list)       # ops.index_state, written once per run
    rejection_rows: list[tuple] = field(default_factory=list)   # ops.index_rejections

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()
                if v not in ("", None) and k not in ("state_rows", "rejection_rows")}


def resolve_targets(targets: Iterable[str] | None) -> list[Entity]:
    """Entities for ``ctlake index [TARGET …]``: entity names (``series``) or table names
    (``silver.ct_series``: every entity that reads it), ``mlflow`` for training runs; none: all."""
    targets = list(targets or [])
    if not targets:
        return list(ENTITIES.values())
    out: list[Entity] = []
    for t in targets:
        if t in ENTITIES:
            found = [ENTITIES[t]]
        elif t == "mlflow":
            found = [ENTITIES["training_runs"]]
        else:
            found = [e for e in ENTITIES.values() if t in e.tables]
        if not found:
            raise model.IndexJobError(f"{t!r} is neither an index entity nor a table any entity reads",
                                      hint=f"entities: {', '.join(ENTITIES)}; tables: "
                                           f"{', '.join(sorted({x for e in ENTITIES.values() for x in e.tables}))}")
        out += [e for e in found if e not in out]
    return out


def index_tables(spark: SparkSession, cfg: Config, targets: Iterable[str] | None = None, *, full: bool = False,
                 progress: Callable[[str], None] | None = None, decls: Mapping | None = None,
                 es: Elasticsearch | None = None) -> dict:
    """Bring the index of ``targets`` (default: every entity) up to the lake; returns a summary.

    Raises :class:`~ctlake.index.model.IndexUnavailable` when Elasticsearch does not answer (nothing
    recorded). An entity that fails is reported (``status: failed``) and the others go on; the
    summary's ``status`` is then ``failed``. ``decls`` overrides ``ctlake.lake.schemas.TABLES``.
    """
    from ctlake.lake.schemas import TABLES

    say = progress or (lambda m: None)
    decls = TABLES if decls is None else decls
    es = es or model.client(cfg.elasticsearch, cfg.index)
    run_id = f"index-{uuid.uuid4().hex[:12]}"
    started = utcnow()
    try:
        model.check_available(es, cfg.elasticsearch.url)
    except model.IndexUnavailable as exc:
        record_run(spark, cfg, run_id=run_id, job=JOB, started=started, status="failed", rows_in=0, rows_out=0,
                   output_versions={}, params={"targets": list(targets or []), "full": full}, error=str(exc))
        raise
    t0 = time.monotonic()
    results: list[EntityResult] = []
    state = _load_state(spark, cfg)
    for ent in resolve_targets(targets):
        ok, why = declared(ent, decls)
        if not ok:
            say(why)
            results.append(EntityResult(ent.name, status="skipped", message=why))
            continue
        try:
            if ent.table is None:
                from ctlake.index.training import sync_training_runs

                res = sync_training_runs(cfg, es, full=full)
            else:
                res = _sync_entity(spark, cfg, es, ent, decls, state.get(ent.name, {}), run_id=run_id, full=full,
                                   say=say)
        except Exception as exc:  # noqa: BLE001 - one entity's failure does not stop the others
            if isinstance(exc, model.IndexUnavailable) or not _es_alive(es):
                _write_state(spark, cfg, [r for r in results if r.status == "ok"])   # what did succeed
                record_run(spark, cfg, run_id=run_id, job=JOB, started=started, status="failed", rows_in=0,
                           rows_out=0, output_versions={}, params={"targets": list(targets or []), "full": full},
                           error=f"{ent.name}: {type(exc).__name__}: {exc}"[:4000])
                raise model.IndexUnavailable(f"Elasticsearch failed while indexing {ent.name}: "
                                             f"{type(exc).__name__}: {str(exc)[:500]}",
                                             hint="nothing was recorded for it; run `ctlake index` again") from exc
            res = EntityResult(ent.name, status="failed", message=f"{type(exc).__name__}: {exc}"[:2000])
            say(f"{ent.name}: FAILED {res.message}")
        results.append(res)
        if res.status in ("ok", "unchanged"):
            say(f"{ent.name}: {res.mode or res.status} → {res.index}: {res.docs} upserted, {res.deleted} deleted, "
                f"{res.rejected} rejected")
    _write_state(spark, cfg, [r for r in results if r.status == "ok"])
    if table_version(spark, cfg.table_path(STATE)) % 200 == 199:
        compact_state(spark, cfg)
    failed = [r for r in results if r.status == "failed"]
    summary = {"run_id": run_id, "status": "failed" if failed else "succeeded",
               "seconds": round(time.monotonic() - t0, 2), "entities": [r.as_dict() for r in results]}
    _record(spark, cfg, es, summary, results, started=started, full=full, decls=decls)
    return summary


def index_after(spark: SparkSession, cfg: Config, targets: Iterable[str] | None = None, *,
                progress: Callable[[str], None] | None = None) -> dict:
    """The last step of a pipeline: index what changed, never fail the pipeline because of it.

    Elasticsearch down (or any indexing error) is reported through ``progress`` and in the returned
    summary (``status: deferred``); the lake is untouched and the next run catches up.
    """
    say = progress or (lambda m: None)
    try:
        return index_tables(spark, cfg, targets, progress=progress)
    except Exception as exc:  # noqa: BLE001 - indexing never fails the pipeline it follows
        msg = f"{type(exc).__name__}: {exc}"[:2000]
        say(f"search index not updated ({msg}); the next `ctlake index` catches up")
        return {"status": "deferred", "error": msg}


def _es_alive(es: Elasticsearch) -> bool:
    try:
        return bool(es.options(request_timeout=5, max_retries=0).ping())
    except Exception:  # noqa: BLE001
        return False


# --- one entity ---------------------------------------------------------------------------
def _sync_entity(spark: SparkSession, cfg: Config, es: Elasticsearch, ent: Entity, decls: Mapping,
                 state: dict[str, dict], *, run_id: str, full: bool, say: Callable[[str], None]) -> EntityResult:
    mapping, h = entity_mapping(ent, decls, cfg)
    model.install_template(es, cfg, ent.name, mapping, h, index_settings(cfg))
    alias = model.alias_of(cfg, ent.name)
    targets = model.alias_targets(es, alias)
    current = targets[0] if len(targets) == 1 else None
    versions: dict[str, int] = {}
    rebuild_why = "--full" if full else ""
    for t in ent.tables:
        path = cfg.table_path(t)
        versions[t] = table_version(spark, path)
        # checked when the table is new to the index (afterwards a disabled feed shows as missing data)
        if versions[t] >= 0 and (t not in state or int(state[t]["version"]) < 0) and not _cdf_enabled(spark, path):
            say(f"{t}: turning on the change data feed (delta.enableChangeDataFeed=true) and indexing it in full")
            spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ({delta.CDF_PROPERTY} = true)")
            rebuild_why = rebuild_why or f"{t} had no change data feed"
            versions[t] = table_version(spark, path)
    parsed = model.parse_index(current) if current else None
    if not rebuild_why:
        if current is None:
            rebuild_why = "no index yet" if not targets else f"alias on {len(targets)} indices"
        elif parsed is None or parsed[0] != h:
            rebuild_why = f"mapping changed ({parsed[0] if parsed else current} → {h})"
        elif any(t not in state or state[t]["index_name"] != current for t in ent.tables):
            rebuild_why = "no recorded state for this index"
    res = EntityResult(ent.name, versions=versions)
    if rebuild_why:
        say(f"{ent.name}: building a new index ({rebuild_why})")
        return _rebuild(spark, cfg, es, ent, decls, h, versions, res, run_id=run_id)
    res.mode, res.index = "incremental", current
    last = {t: int(state[t]["version"]) for t in ent.tables}
    if all(versions[t] <= last[t] for t in ent.tables):
        res.status = "unchanged"
        res.versions = last
        return res
    try:
        upserts, deletes = _changes(spark, cfg, ent, decls, last, versions)
    except Exception as exc:  # noqa: BLE001 - change data missing for the range (vacuumed, turned off)
        if not _is_missing_cdf(exc):
            raise
        say(f"{ent.name}: change data not available ({str(exc)[:200]}); rebuilding")
        return _rebuild(spark, cfg, es, ent, decls, h, versions, res, run_id=run_id)
    out = _bulk_frame(spark, cfg, upserts, current) if upserts is not None else model.BulkResult()
    delete_ids = sorted(set(deletes))
    res.deleted = model.delete_ids(es, current, delete_ids, cfg.index)
    res.docs, res.rejected = out.ok, len(out.rejected)
    _after_bulk(cfg, es, ent, current, out, versions, res, run_id=run_id)
    _state_rows(ent, current, h, versions, res, run_id=run_id)
    return res


def _rebuild(spark: SparkSession, cfg: Config, es: Elasticsearch, ent: Entity, decls: Mapping, h: str,
             versions: dict[str, int], res: EntityResult, *, run_id: str) -> EntityResult:
    alias = model.alias_of(cfg, ent.name)
    new = model.create_index(es, alias, h, drop_orphans=not cfg.index.keep_old_indices)
    res.mode, res.index = "full", new
    if versions[ent.table] >= 0:
        base = delta.read(spark, cfg, ent.table, as_of=versions[ent.table])
        out = _bulk_frame(spark, cfg, _docs_frame(spark, cfg, ent, decls, versions, base), new)
    else:
        out = model.BulkResult()
    res.docs, res.rejected = out.ok, len(out.rejected)
    _after_bulk(cfg, es, ent, new, out, versions, res, run_id=run_id)
    es.indices.refresh(index=new)
    model.swap_alias(es, alias, new, delete_old=not cfg.index.keep_old_indices)
    if not cfg.index.keep_old_indices:
        model.drop_old_templates(es, cfg, ent.name, h)
    _state_rows(ent, new, h, versions, res, run_id=run_id)
    return res


def _after_bulk(cfg: Config, es: Elasticsearch, ent: Entity, index: str, out: model.BulkResult,
                versions: dict[str, int], res: EntityResult, *, run_id: str) -> None:
    if out.rejected:
        # a refused update must not leave the previous version of the document searchable
        model.delete_ids(es, index, [r["doc_id"] for r in out.rejected], cfg.index)
        now = utcnow()
        res.rejection_rows = [(ent.name, r["doc_id"], ent.table, int(versions[ent.table]), index, r.get("status"),
                               r.get("error_type"), r.get("reason") or "rejected", run_id, now) for r in out.rejected]
    if cfg.index.refresh_after:
        es.indices.refresh(index=index)


def _changes(spark: SparkSession, cfg: Config, ent: Entity, decls: Mapping, last: dict[str, int],
             versions: dict[str, int]) -> tuple[DataFrame | None, list[str]]:
    """(documents to upsert, ids to delete) for the versions after ``last`` up to ``versions``."""
    from pyspark.sql import functions as F

    key = list(decls[ent.table].key)
    v = versions[ent.table]
    if v < 0:                   # no primary table yet: a lookup changed, but there is nothing to index
        return None, []
    primary_changed = versions[ent.table] > last[ent.table]
    lookups_changed = [lk for lk in ent.lookups if versions[lk.table] > last[lk.table]]
    cdf = _read_cdf(spark, cfg, ent.table, last[ent.table] + 1, v) if primary_changed else None
    if cdf is not None and not lookups_changed and _append_only(spark, cfg, ent.table, last[ent.table] + 1, v):
        # append-only range: the inserted rows ARE the rows at version v (nothing later changed them)
        base = cdf.drop("_change_type", "_commit_version", "_commit_timestamp")
        return _docs_frame(spark, cfg, ent, decls, versions, base), []
    keys = None
    if cdf is not None:
        keys = cdf.select(*key).distinct()
    snapshot = delta.read(spark, cfg, ent.table, as_of=v)
    for lk in lookups_changed:
        changed = _read_cdf(spark, cfg, lk.table, last[lk.table] + 1, versions[lk.table]) \
            .select(F.col(lk.key_column).alias("__k")).distinct()
        lk_keys = snapshot.join(changed, snapshot[lk.on] == changed["__k"], "left_semi").select(*key)
        keys = lk_keys if keys is None else keys.unionByName(lk_keys).distinct()
    if keys is None:
        return None, []
    upsert_rows = snapshot.join(keys, key, "left_semi")
    gone = keys.join(snapshot.select(*key), key, "left_anti").collect()
    deletes = [model.doc_id(r[k] for k in key) for r in gone]
    return _docs_frame(spark, cfg, ent, decls, versions, upsert_rows), deletes


def _docs_frame(spark: SparkSession, cfg: Config, ent: Entity, decls: Mapping, versions: dict[str, int],
                base: DataFrame) -> DataFrame:
    """Primary rows → document rows: binary columns dropped, lookups joined, derived and common
    columns added, the ``_id`` in :data:`ID_COL`."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    key = list(decls[ent.table].key)
    df = base.select([f.name for f in base.schema.fields if not isinstance(f.dataType, T.BinaryType)])
    for lk in ent.lookups:
        lk_schema = {f.name: f.dataType for f in decls[lk.table].schema.fields}
        cols = [(c, a) for c, a in lk.columns if c in lk_schema and a not in df.columns]
        if versions.get(lk.table, -1) < 0:
            for c, a in cols:
                df = df.withColumn(a, F.lit(None).cast(lk_schema[c]))
            continue
        lt = delta.read(spark, cfg, lk.table, as_of=versions[lk.table])
        lt = lt.join(df.select(F.col(lk.on).alias(lk.key_column)).distinct(), lk.key_column, "left_semi")
        if lk.first_by:
            w = Window.partitionBy(lk.key_column).orderBy(*[F.col(c).asc_nulls_last() for c in lk.first_by])
            lt = lt.withColumn("__rn", F.row_number().over(w)).filter("__rn = 1")
        else:
            lt = lt.dropDuplicates([lk.key_column])
        lt = lt.select(F.col(lk.key_column).alias("__lk"), *[F.col(c).alias(a) for c, a in cols])
        df = df.join(lt, df[lk.on] == lt["__lk"], "left").drop("__lk")
    if ent.name == "series":
        flags = F.coalesce(F.size("qc_flags"), F.lit(0))
        df = df.withColumn("qc_clean", (F.col("status") == "built") & (F.greatest(flags, F.lit(0)) == 0)) \
               .withColumn("qc_flag_count", F.greatest(flags, F.lit(0)).cast("int"))
    df = df.withColumn("lake_version", F.lit(versions[ent.table]).cast("long")) \
           .withColumn("indexed_at", F.lit(utcnow()).cast("timestamp"))
    # the document is serialised in the JVM (to_json: nulls left out, times ISO-8601 with offset), so
    # Python only moves strings: NaN and infinities, which JSON cannot hold, are nulled first
    source = F.to_json(F.struct(*[_finite(F.col(f"`{f.name}`"), f.dataType).alias(f.name) for f in df.schema.fields]),
                       {"timestampFormat": "yyyy-MM-dd'T'HH:mm:ss.SSSXXX", "dateFormat": "yyyy-MM-dd",
                        "ignoreNullFields": "true"})
    return df.select(F.concat_ws("|", *[F.col(k).cast("string") for k in key]).alias(ID_COL), source.alias(SOURCE_COL))


def _finite(col: Any, dtype: Any) -> Any:
    """``col`` with NaN/±inf doubles (also inside arrays and map values) replaced by null (map entries dropped)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    def bad(x):
        return F.isnan(x) | (F.abs(x) == F.lit(float("inf")))

    if isinstance(dtype, (T.DoubleType, T.FloatType)):
        return F.when(bad(col), F.lit(None).cast(dtype)).otherwise(col)
    if isinstance(dtype, T.ArrayType) and isinstance(dtype.elementType, (T.DoubleType, T.FloatType)):
        return F.transform(col, lambda x: F.when(bad(x), F.lit(None).cast(dtype.elementType)).otherwise(x))
    if isinstance(dtype, T.MapType) and isinstance(dtype.valueType, (T.DoubleType, T.FloatType)):
        return F.map_filter(col, lambda k, v: v.isNotNull() & ~bad(v))
    return col


def _bulk_frame(spark: SparkSession, cfg: Config, df: DataFrame, index: str) -> model.BulkResult:
    """Bulk-index every row of ``df`` into ``index`` from the Spark tasks; rejections come back."""
    from pyspark.sql import types as T

    # at most `parallelism` tasks (coalesce: never a shuffle), one bulk request in flight each: on a
    # small machine Elasticsearch shares the cores, and more concurrent requests only slow it down
    df = df.coalesce(cfg.index.parallelism)
    threads = 1
    schema = T.StructType([T.StructField("kind", T.StringType()), T.StructField("doc_id", T.StringType()),
                           T.StructField("status", T.IntegerType()), T.StructField("error_type", T.StringType()),
                           T.StructField("reason", T.StringType()), T.StructField("n", T.LongType())])
    fn = _partition_bulk(cfg.elasticsearch, cfg.index, index, threads)
    out = model.BulkResult()
    for r in df.mapInArrow(fn, schema).collect():
        if r.kind == "ok":
            out.ok += int(r.n)
        else:
            out.rejected.append({"doc_id": r.doc_id, "status": r.status, "error_type": r.error_type,
                                 "reason": r.reason})
    return out


def _partition_bulk(es_cfg, ic, index: str, threads: int) -> Callable:
    """The function each Spark task runs: its Arrow batches → bulk requests → a small result batch."""

    def run(batches: Iterable[Any]) -> Iterable[Any]:
        import pyarrow as pa

        from ctlake.index import model as m

        def actions():
            for batch in batches:
                ids = batch.column(ID_COL).to_pylist()
                sources = batch.column(SOURCE_COL).to_pylist()
                for _id, src in zip(ids, sources, strict=True):
                    yield {"_index": index, "_id": _id, "_source": src}

        es = m.client(es_cfg, ic)
        try:
            res = m.bulk(es, actions(), ic, threads=threads)
        finally:
            es.close()
        rows = [{"kind": "ok", "doc_id": None, "status": None, "error_type": None, "reason": None, "n": res.ok}]
        rows += [{"kind": "rejected", "n": 1, **r} for r in res.rejected]
        yield pa.RecordBatch.from_pylist(rows, schema=pa.schema([
            ("kind", pa.string()), ("doc_id", pa.string()), ("status", pa.int32()), ("error_type", pa.string()),
            ("reason", pa.string()), ("n", pa.int64())]))

    return run


# --- Delta helpers ---------------------------------------------------------------------------
def _read_cdf(spark: SparkSession, cfg: Config, table: str, start: int, end: int) -> DataFrame:
    return (spark.read.format("delta").option("readChangeFeed", "true").option("startingVersion", start)
            .option("endingVersion", end).load(cfg.table_path(table)))


def _cdf_enabled(spark: SparkSession, path: str) -> bool:
    """Whether the table's change data feed is on: the snapshot's configuration through the JVM
    DeltaLog (milliseconds), else ``DESCRIBE DETAIL`` (a Spark job)."""
    try:
        jvm = spark._jvm
        none = jvm.scala.Option.empty()
        snap = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, path).update(False, none, none)
        value = snap.metadata().configuration().get(delta.CDF_PROPERTY)
        return value.isDefined() and str(value.get()).lower() == "true"
    except Exception:  # noqa: BLE001 - an internal API: fall back to the public one
        from delta.tables import DeltaTable

        props = DeltaTable.forPath(spark, path).detail().select("properties").first()[0] or {}
        return str(props.get(delta.CDF_PROPERTY, "false")).lower() == "true"


def _is_missing_cdf(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}"
    return any(k in text for k in ("DELTA_MISSING_CHANGE_DATA", "change data was not recorded",
                                   "DELTA_CHANGE_DATA_FILE_NOT_FOUND", "DELTA_CHANGE_TABLE_FEED_DISABLED",
                                   "FileNotFoundException", "DELTA_FILE_NOT_FOUND"))


def table_version(spark: SparkSession, path: str) -> int:
    """The latest committed version of the Delta table at ``path``, -1 if there is none: the highest
    ``_delta_log/<20 digits>.json`` (Delta protocol), one directory listing on any Hadoop file system
    -- milliseconds, where ``DESCRIBE HISTORY`` runs a Spark job."""
    jvm = spark._jvm
    log = jvm.org.apache.hadoop.fs.Path(f"{path.rstrip('/')}/_delta_log")
    fs = log.getFileSystem(spark._jsc.hadoopConfiguration())
    if not fs.exists(log):
        return -1
    names = [st.getPath().getName() for st in fs.listStatus(log)]
    found = [int(n[:20]) for n in names if len(n) == 25 and n.endswith(".json") and n[:20].isdigit()]
    return max(found, default=-1)


# state table path -> (its Delta version, rows in force) as this process last read or wrote it: a
# pipeline that indexes after each step re-reads the table only when someone else appended to it
_STATE_CACHE: dict[str, tuple[int, list[dict]]] = {}


def _load_state(spark: SparkSession, cfg: Config) -> dict[str, dict[str, dict]]:
    """entity -> table -> the ``ops.index_state`` row in force (the latest one)."""
    path = cfg.table_path(STATE)
    version = table_version(spark, path)
    cached = _STATE_CACHE.get(path)
    rows = cached[1] if cached and cached[0] == version >= 0 else read_state(spark, cfg)
    _STATE_CACHE[path] = (version, rows)
    out: dict[str, dict[str, dict]] = {}
    for row in rows:
        out.setdefault(row["entity"], {})[row["table"]] = row
    return out


def read_state(spark: SparkSession, cfg: Config) -> list[dict]:
    """The ``ops.index_state`` row in force for each (entity, table): the latest appended.
    (One small scan, reduced here; :func:`compact_state` keeps the table short.)"""
    if table_version(spark, cfg.table_path(STATE)) < 0:
        return []
    latest: dict[tuple[str, str], dict] = {}
    for r in delta.read(spark, cfg, STATE).collect():
        row = r.asDict()
        k = (row["entity"], row["table"])
        if k not in latest or (row["updated_at"], row["run_id"]) > (latest[k]["updated_at"], latest[k]["run_id"]):
            latest[k] = row
    return list(latest.values())


def compact_state(spark: SparkSession, cfg: Config, *, keep_over: int = 5000) -> bool:
    """Rewrite ``ops.index_state`` with only the rows in force once it holds more than ``keep_over``
    rows (one overwrite commit; the rows in force are unchanged, so a concurrent reader is unaffected)."""
    if table_version(spark, cfg.table_path(STATE)) < 0 or delta.read(spark, cfg, STATE).count() <= keep_over:
        return False
    from ctlake.lake.schemas import INDEX_STATE

    rows = [tuple(r[f.name] for f in INDEX_STATE.fields) for r in read_state(spark, cfg)]
    spark.createDataFrame(rows, INDEX_STATE).write.format("delta").mode("overwrite").save(cfg.table_path(STATE))
    _STATE_CACHE.pop(cfg.table_path(STATE), None)
    return True


def _append_only(spark: SparkSession, cfg: Config, table: str, start: int, end: int) -> bool:
    """Whether commits ``start..end`` of ``table`` only added data (no file removed with data change,
    no change-data files): read from the commit JSON where the lake is on a local path (milliseconds),
    else from the change feed's change types (a Spark job)."""
    path = cfg.table_path(table)
    local = None if "://" in path and not path.startswith("file:") else Path(path.removeprefix("file:"))
    if local is not None:
        try:
            for v in range(start, end + 1):
                for line in (local / "_delta_log" / f"{v:020d}.json").read_text().splitlines():
                    action = json.loads(line) if line.strip() else {}
                    if "cdc" in action or ("remove" in action and action["remove"].get("dataChange", True)):
                        return False
            return True
        except (OSError, ValueError):
            pass
    kinds = {r[0] for r in _read_cdf(spark, cfg, table, start, end).select("_change_type").distinct().collect()}
    return kinds <= {"insert"}


def _state_rows(ent: Entity, index: str, h: str, versions: dict[str, int], res: EntityResult, *,
                run_id: str) -> None:
    now = utcnow()
    res.state_rows = [(ent.name, t, int(v), index, h, res.mode, res.docs, res.deleted, res.rejected, run_id, now)
                      for t, v in versions.items()]


def _write_state(spark: SparkSession, cfg: Config, results: list[EntityResult]) -> None:
    """One append to ``ops.index_state`` (and ``ops.index_rejections``) for the whole run, after every
    bulk of the recorded entities succeeded (an append is far cheaper than a MERGE; the latest row per
    (entity, table) is in force)."""
    from ctlake.lake.schemas import INDEX_REJECTIONS, INDEX_STATE

    rejected = [r for res in results for r in res.rejection_rows]
    if rejected:
        delta.write(spark, cfg, spark.createDataFrame(rejected, INDEX_REJECTIONS), REJECTIONS, mode="append",
                    count=False)
    rows = [r for res in results for r in res.state_rows]
    if not rows:
        return
    path = cfg.table_path(STATE)
    before = table_version(spark, path)
    frame = spark.createDataFrame(rows, INDEX_STATE)
    if before < 0:
        delta.write(spark, cfg, frame, STATE, mode="append", count=False)       # creates the table
    else:
        frame.write.format("delta").mode("append").save(path)
    after = table_version(spark, path)
    cached = _STATE_CACHE.get(path)
    if cached and cached[0] == before and after == before + 1:     # nobody else wrote in between
        merged = {(r["entity"], r["table"]): r for r in cached[1]}
        merged.update({(r[0], r[1]): dict(zip(INDEX_STATE.fieldNames(), r, strict=True)) for r in rows})
        _STATE_CACHE[path] = (after, list(merged.values()))
    else:
        _STATE_CACHE.pop(path, None)


def _record(spark: SparkSession, cfg: Config, es: Elasticsearch, summary: dict, results: list[EntityResult], *,
            started: dt.datetime, full: bool, decls: Mapping) -> None:
    """``ops.pipeline_runs`` row of this run, then that row straight into the pipeline_runs index (the
    next run's change feed re-upserts it, idempotently), so the index matches the lake when we return."""
    run_id = summary["run_id"]
    ok = [r for r in results if r.status in ("ok", "unchanged")]
    record_run(spark, cfg, run_id=run_id, job=JOB, started=started, status=summary["status"],
               rows_in=sum(r.docs + r.deleted for r in ok), rows_out=sum(r.docs for r in ok),
               output_versions={f"{r.entity}": r.docs for r in ok if r.status == "ok"},
               params={"entities": [r.entity for r in results], "full": full},
               error="; ".join(f"{r.entity}: {r.message}" for r in results if r.status == "failed") or None)
    ent = entity("pipeline_runs")
    if ent.table not in decls or not any(r.entity == ent.name and r.status in ("ok", "unchanged") for r in results):
        return
    alias = model.alias_of(cfg, ent.name)
    if not model.alias_targets(es, alias):
        return
    version = table_version(spark, cfg.table_path(ent.table))
    row = delta.read(spark, cfg, ent.table, as_of=version).filter(f"run_id = '{run_id}'")
    docs = _docs_frame(spark, cfg, ent, decls, {ent.table: version}, row).collect()
    actions = [{"_index": alias, "_id": r[ID_COL], "_source": r[SOURCE_COL]} for r in docs]
    model.bulk(es, actions, cfg.index)
    if cfg.index.refresh_after:
        es.indices.refresh(index=alias)
