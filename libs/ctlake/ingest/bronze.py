"""Spark glue for ingestion: Kafka stream or folder → bronze.dicom_instances / bronze.quarantine.

The decision per record is :func:`ctlake.ingest.parse.process_record` (pure); here it runs inside
``mapInArrow``. A batch's new instances are appended to bronze and everything else goes to
quarantine, both through :mod:`ctlake.lake.commit` (keys decided on the driver against a narrow
read of the table, blind append, concurrent writers settled afterwards), so a replayed
micro-batch, a restarted driver or an overlapping folder adds nothing twice. Each micro-batch or
batch run appends one ``ops.pipeline_runs`` row, keyed so that a replay rewrites the same row.

Where the time goes (one micro-batch of N instances of ~0.5 MB): the Python pass (parse, de-id
gate, pixel decode, header flatten: ~3.5 ms per instance per core) and the parquet write of the
bytes; the Kafka reads, the key decisions and the three Delta commits are small and fixed. In the
stream the bytes never cross into Python and back: the Python pass returns metadata only, and the
write joins it (broadcast, no shuffle) to a second read of the same Kafka offsets.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ctlake.config import Config
from ctlake.lake import commit
from ctlake.lake.runs import record_run, utcnow
from ctlake.lake.schemas import DICOM_INSTANCES, QUARANTINE, union_schema

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, Row, SparkSession

BRONZE = "bronze.dicom_instances"
QUARANTINE_TABLE = "bronze.quarantine"
# Rows per Arrow batch into the Python workers: DICOM instances are large (up to 8 MiB inline).
ARROW_RECORDS_PER_BATCH = 64
# Extra column of the Python pass in the stream: the row keeps the message's bytes (joined back).
KEEP = "keep_source_bytes"
# Transfer syntaxes that may be lossy: when two copies of one instance arrive, the other one wins.
LOSSY_SYNTAXES = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81",
                  "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.93", "1.2.840.10008.1.2.4.203")
SOURCE = ("source_topic", "source_partition", "source_offset", "source_ref")
# The bytes dominate bronze's files. zstd level 1 writes ~2.5x faster than parquet's default level
# 3 for files ~12 % larger on uncompressed CT pixels (and the same on already compressed syntaxes).
BYTES_ZSTD_LEVEL = 1
ZSTD_LEVEL_KEY = "parquet.compression.codec.zstd.level"


def _rank(k) -> tuple:
    """Order among copies of one SOPInstanceUID: the first is kept (lossless before lossy, then
    source position and sha256, so a replay picks the same one; the run id breaks a tie between
    two writers that took the same bytes at once)."""
    return (k.transfer_syntax_uid in LOSSY_SYNTAXES, k.source_offset is None, k.source_topic or "",
            k.source_partition or 0, k.source_offset or 0, k.source_ref or "", k.content_sha256,
            _run_of(k))


def _run_of(k) -> str:
    """The ingest run id of a row read from a table ('' for a candidate of this batch)."""
    return k["ingest_run_id"] if "ingest_run_id" in getattr(k, "__fields__", ()) else ""


def _quarantine_rank(k) -> tuple:
    return (k.source_offset is None, k.source_topic or "", k.source_partition or 0, k.source_offset or 0,
            k.source_ref or "", _run_of(k))


BRONZE_SPEC = commit.Spec(
    BRONZE, "sop_instance_uid", ident=("sop_instance_uid", "ingest_run_id", "content_sha256", *SOURCE),
    columns=("sop_instance_uid", "ingest_run_id", "content_sha256", "transfer_syntax_uid", *SOURCE), rank=_rank)
QUARANTINE_SPEC = commit.Spec(
    QUARANTINE_TABLE, "quarantine_id", ident=("quarantine_id", "ingest_run_id", *SOURCE),
    columns=("quarantine_id", "ingest_run_id", *SOURCE), rank=_quarantine_rank)


def _relpath(path: str, base: str) -> str:
    path = path.removeprefix("file://").removeprefix("file:")
    return path[len(base):].lstrip("/") if base and path.startswith(base) else path


def _process_batches(batches: Iterator[pa.RecordBatch], *, run_id: str, kind: str, key: bytes | None,
                     deidentify: bool, allow_secondary: bool, schema: pa.Schema, base: str = "",
                     strip_bytes: bool = False) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: rows of (value/content, headers, source…) → union rows.

    ``strip_bytes``: leave ``dicom_bytes`` out and set :data:`KEEP` instead (the stream joins the
    message's bytes back on its topic/partition/offset: they never travel back from Python).
    """
    import pyarrow as pa

    from ctlake.dicom.deid import DeidProfile, deidentify_bytes
    from ctlake.errors import CtlakeError
    from ctlake.ingest.parse import Outcome, Record, process_record, quarantine_row
    from ctlake.ingest.producer import read_claim_check, source_ref

    profile = DeidProfile(site_key=key) if deidentify and key else None
    for batch in batches:
        cols = batch.to_pydict()
        out = []
        now = utcnow()
        for i in range(batch.num_rows):
            if kind == "kafka":
                headers = {h["key"]: (h["value"] if h["value"] is not None else b"")
                           for h in (cols["headers"][i] or [])}
                rec = Record(data=cols["value"][i], headers=headers, source_kind="kafka",
                             source_topic=cols["topic"][i], source_partition=cols["partition"][i],
                             source_offset=cols["offset"][i])
            else:
                rel = _relpath(cols["path"][i], base)
                ref = source_ref(rel, key) if key else hashlib.sha256(rel.encode()).hexdigest()[:32]
                data = cols["content"][i]
                rec = Record(data=data, headers={}, source_kind="file", source_ref=ref)
                if profile is not None and data:
                    try:
                        data, _ = deidentify_bytes(data, profile, allow_secondary=allow_secondary)
                        rec = Record(data=data, headers={"ctlake-deid-profile": profile.version.encode()},
                                     source_kind="file", source_ref=ref)
                    except CtlakeError as exc:
                        out.append(Outcome(QUARANTINE_TABLE, quarantine_row(
                            rec, stage="edge", code=exc.code, message=str(exc), run_id=run_id, now=now,
                            sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                            withheld="refused by de-identification: the bytes stay at the source")))
                        continue
            out.append(process_record(rec, run_id=run_id, now=now, read_claim_check=read_claim_check))
        rows = []
        for o in out:
            row = {"target": o.table, **o.row}
            if strip_bytes:
                row[KEEP] = row.get("dicom_bytes") is not None
                row["dicom_bytes"] = None
            rows.append(row)
        yield pa.RecordBatch.from_pylist(rows, schema=schema)


def process_frame(df: DataFrame, *, run_id: str, kind: str, key: bytes | None = None,
                  deidentify: bool = False, allow_secondary: bool = False, base: str = "",
                  strip_bytes: bool = False) -> DataFrame:
    """Apply the per-record decision to a Kafka (``kind='kafka'``) or binaryFile (``'file'``) frame.

    ``strip_bytes`` (Kafka only): no ``dicom_bytes`` in the output, a boolean :data:`KEEP` column
    instead (see :func:`_with_bytes`)."""
    from pyspark.sql import types as T
    from pyspark.sql.pandas.types import to_arrow_schema

    schema = union_schema(DICOM_INSTANCES, QUARANTINE)
    if strip_bytes:
        schema = schema.add(T.StructField(KEEP, T.BooleanType(), True))
    arrow_schema = to_arrow_schema(schema, timestamp_utc=True)

    def fn(batches):
        return _process_batches(batches, run_id=run_id, kind=kind, key=key, deidentify=deidentify,
                                allow_secondary=allow_secondary, schema=arrow_schema, base=base,
                                strip_bytes=strip_bytes)

    return df.mapInArrow(fn, schema)


def _with_bytes(frame: DataFrame, raw: DataFrame | None) -> DataFrame:
    """``frame``'s rows with their ``dicom_bytes``: as they are, or (stream) joined back from the
    Kafka rows ``raw`` of the same micro-batch on topic/partition/offset, ``frame`` broadcast (it
    holds metadata only), so the bytes go from Kafka to parquet without a shuffle."""
    from pyspark.sql import functions as F

    if raw is None:
        return frame
    on = ["source_topic", "source_partition", "source_offset"]
    joined = raw.join(F.broadcast(frame), on=on, how="inner")
    return joined.withColumn("dicom_bytes", F.when(F.col(KEEP), F.col("value"))).drop("value", KEEP)


def _pick(frame: DataFrame, idents: list[tuple], cols: tuple[str, ...], schema: str) -> DataFrame:
    """The rows of ``frame`` whose ``cols`` equal one of ``idents`` (a broadcast semi-join)."""
    from pyspark.sql import functions as F

    spark = frame.sparkSession
    ident = spark.createDataFrame(sorted(idents, key=str), schema)
    return frame.join(F.broadcast(ident), on=[frame[c].eqNullSafe(ident[c]) for c in cols], how="left_semi")


_BRONZE_IDENT = ("sop_instance_uid", "content_sha256", *SOURCE)
_BRONZE_IDENT_DDL = ("sop_instance_uid string, content_sha256 string, source_topic string, source_partition int, "
                     "source_offset long, source_ref string")
_Q_IDENT = ("quarantine_id", *SOURCE)
_Q_IDENT_DDL = "quarantine_id string, source_topic string, source_partition int, source_offset long, source_ref string"


def _decide(keys: list, taken: dict[str, str]) -> tuple[set, list]:
    """Pick the bronze rows of one batch from its narrow key rows (pure).

    ``keys``: rows with sop_instance_uid, content_sha256, transfer_syntax_uid and the source
    columns. ``taken``: SOPInstanceUID → sha256 already in bronze. Per UID the first candidate by
    :func:`_rank` wins. Returns the winners' row identities (:data:`_BRONZE_IDENT`) and the losers
    that carry *other* bytes than the kept instance (identical bytes are the same instance, not a
    conflict).
    """
    by_uid: dict[str, list] = {}
    for k in keys:
        by_uid.setdefault(k.sop_instance_uid, []).append(k)
    winners, losers = set(), []
    for uid, group in by_uid.items():
        group.sort(key=_rank)
        kept = taken.get(uid) or group[0].content_sha256
        if uid not in taken:
            winners.add(tuple(group[0][c] for c in _BRONZE_IDENT))
        losers += [k for k in group if k.content_sha256 != kept]
    return winners, losers


def _dup_quarantine_id(sha256: str) -> str:
    return hashlib.sha256(f"{sha256}|dedupe|DUPLICATE_SOP_INSTANCE".encode()).hexdigest()


def _write_outcomes(spark: SparkSession, cfg: Config, processed: DataFrame, *, raw: DataFrame | None = None,
                    txn: tuple[str, int] | None = None,
                    timings: dict[str, float] | None = None) -> tuple[int, int, dict]:
    """Write one batch's outcomes: new instances to bronze, everything else to quarantine.

    The decision is taken on a narrow projection collected to the driver (a few thousand keys at
    most per batch) against a narrow read of the tables' keys, so the DICOM bytes are read once
    (stream: from Kafka, ``raw``) and never shuffled; see :mod:`ctlake.lake.commit` for why this
    is exactly-once with concurrent writers too. An instance whose UID is taken by other bytes (in
    this batch or in the table) goes to quarantine with code DUPLICATE_SOP_INSTANCE and its bytes
    (it passed the gate), never silently away.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    timings = {} if timings is None else timings
    clock = [time.monotonic()]

    def lap(name: str) -> None:
        now = time.monotonic()
        timings[name] = round(timings.get(name, 0) + now - clock[0], 2)
        clock[0] = now

    processed = processed.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        key_cols = ["target", "sop_instance_uid", "quarantine_id", "content_sha256", "transfer_syntax_uid", *SOURCE,
                    *([KEEP] if raw is not None else [])]
        rows = processed.select(key_cols).collect()
        keys = [r for r in rows if r.target == BRONZE]
        lap("process")
        read_version, have = commit.present(spark, cfg, BRONZE_SPEC, (k.sop_instance_uid for k in keys))
        taken = {uid: g[0].content_sha256 for uid, g in _by_key(have, BRONZE_SPEC).items()}
        winners, losers = _decide(keys, taken)
        lap("dedupe")
        versions: dict[str, int] = {}
        candidates = processed.filter(F.col("target") == BRONZE)
        if winners:
            # the usual batch: every candidate wins (no copy in the batch or the table), so there is
            # nothing to pick (the semi-join ships every winner's identity to the JVM and back)
            chosen = candidates if len(winners) == len(keys) else \
                _pick(candidates, list(winners), _BRONZE_IDENT, _BRONZE_IDENT_DDL)
            chosen = _with_bytes(chosen, raw)
            with _bytes_codec(spark):
                versions[BRONZE], _ = commit.append_new(
                    spark, cfg, chosen, BRONZE_SPEC, read_version=read_version, txn=txn,
                    keys=[w[0] for w in winners], before_delete=_quarantine_race_losers(spark, cfg))
        doubled = commit.doubled(have, BRONZE_SPEC)
        if doubled:  # left by two writers that raced and one died before it settled
            commit.settle(spark, cfg, BRONZE_SPEC, doubled, before_delete=_quarantine_race_losers(spark, cfg))
        lap("bronze")
        # quarantine: the rejected rows and the losers that carry other bytes, one row per id
        q_keys = [(r.quarantine_id, *(r[c] for c in SOURCE)) for r in rows if r.target == QUARANTINE_TABLE]
        q_keys += [(_dup_quarantine_id(k.content_sha256), *(k[c] for c in SOURCE)) for k in losers]
        if q_keys:
            q_frame = processed.filter(F.col("target") == QUARANTINE_TABLE) \
                .select([f.name for f in QUARANTINE.fields] + ([KEEP] if raw is not None else []))
            if losers:
                lose = _pick(candidates, [tuple(k[c] for c in _BRONZE_IDENT) for k in losers], _BRONZE_IDENT,
                             _BRONZE_IDENT_DDL)
                q_frame = q_frame.unionByName(_duplicates_to_quarantine(lose, keep=raw is not None))
            # the message bytes are joined back only where a quarantine row keeps them (rare)
            keeps = bool(losers) or any(r[KEEP] for r in rows if r.target == QUARANTINE_TABLE and raw is not None)
            q_frame = _with_bytes(q_frame, raw) if keeps else q_frame.drop(KEEP)
            v = _append_quarantine(spark, cfg, q_frame, q_keys, txn=txn)
            if v is not None:
                versions[QUARANTINE_TABLE] = v
        lap("quarantine")
        return len(winners), len(q_keys), versions
    finally:
        processed.unpersist()


def _by_key(rows: list, spec: commit.Spec) -> dict[str, list]:
    groups: dict[str, list] = {}
    for r in rows:
        groups.setdefault(r[spec.key], []).append(r)
    return {k: sorted(g, key=spec.rank) for k, g in groups.items()}


@contextlib.contextmanager
def _bytes_codec(spark: SparkSession) -> Iterator[None]:
    """zstd at level :data:`BYTES_ZSTD_LEVEL` for the bronze write, unless the session sets its own
    ``parquet.compression.codec.zstd.level`` (Delta passes session settings to the parquet writer)."""
    if spark.conf.get(ZSTD_LEVEL_KEY, None) is not None:
        yield
        return
    spark.conf.set(ZSTD_LEVEL_KEY, str(BYTES_ZSTD_LEVEL))
    try:
        yield
    finally:
        spark.conf.unset(ZSTD_LEVEL_KEY)


def _append_quarantine(spark: SparkSession, cfg: Config, frame: DataFrame, q_keys: list[tuple], *,
                       txn: tuple[str, int] | None) -> int | None:
    """Append the quarantine rows whose id is new (one per id); the version written, or None."""
    first: dict[str, tuple] = {}
    for k in sorted(q_keys, key=lambda k: (k[3] is None, k[1] or "", k[2] or 0, k[3] or 0, k[4] or "")):
        first.setdefault(k[0], k)
    read_version, have = commit.present(spark, cfg, QUARANTINE_SPEC, first)
    present = {r.quarantine_id for r in have}
    new = [k for qid, k in first.items() if qid not in present]
    if not new:
        return None
    if len(new) < len(q_keys):   # some ids are there already, or twice in this batch
        frame = _pick(frame, new, _Q_IDENT, _Q_IDENT_DDL)
    version, _ = commit.append_new(spark, cfg, frame, QUARANTINE_SPEC,
                                   read_version=read_version, txn=txn, keys=[k[0] for k in new])
    return version


def _quarantine_race_losers(spark: SparkSession, cfg: Config):
    """A settle hook: bronze rows about to be deleted as race losers whose bytes differ from the
    survivor's go to quarantine first (DUPLICATE_SOP_INSTANCE), like a loser within one batch."""
    def hook(losers: list[Row], survivors: dict[str, Row]) -> None:
        other = [r for r in losers if r.content_sha256 != survivors[r.sop_instance_uid].content_sha256]
        if not other:
            return
        table = spark.read.format("delta").load(cfg.table_path(BRONZE))
        idents = [tuple(r[c] for c in BRONZE_SPEC.ident) for r in other]
        lose = _pick(table, idents, BRONZE_SPEC.ident,
                     "sop_instance_uid string, ingest_run_id string, content_sha256 string, source_topic string, "
                     "source_partition int, source_offset long, source_ref string")
        q_keys = [(_dup_quarantine_id(r.content_sha256), *(r[c] for c in SOURCE)) for r in other]
        _append_quarantine(spark, cfg, _duplicates_to_quarantine(lose, keep=False), q_keys, txn=None)
    return hook


def _duplicates_to_quarantine(df: DataFrame, *, keep: bool):
    """Bronze candidates whose SOPInstanceUID is taken by other bytes, as quarantine rows."""
    from pyspark.sql import functions as F

    qid = F.sha2(F.concat_ws("|", F.col("content_sha256"), F.lit("dedupe"), F.lit("DUPLICATE_SOP_INSTANCE")),
                 256)
    return df.select(
        qid.alias("quarantine_id"), F.lit("dedupe").alias("stage"),
        F.lit("DUPLICATE_SOP_INSTANCE").alias("error_code"),
        F.concat(F.lit("SOPInstanceUID "), F.col("sop_instance_uid"),
                 F.lit(" is already in bronze with other bytes (e.g. a lossy or transcoded copy)"))
        .alias("error_message"),
        "content_sha256", "size_bytes", "dicom_bytes", "claim_check_uri",
        F.lit(None).cast("string").alias("bytes_withheld_reason"),
        "source_kind", "source_topic", "source_partition", "source_offset", "source_ref",
        "ingest_run_id", "ingested_at", *([KEEP] if keep else []))


def ingest_folder(spark: SparkSession, cfg: Config, folder: str, *, deidentify: bool = True,
                  run_id: str | None = None) -> dict:
    """Batch twin of the stream: every file under ``folder`` → bronze or quarantine."""
    from ctlake.ingest.keys import site_key

    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(ARROW_RECORDS_PER_BATCH))
    run_id = run_id or f"ingest_folder:{uuid.uuid4().hex}"
    started = utcnow()
    key = site_key(cfg)
    files = spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(folder) \
        .select("path", "content")
    processed = process_frame(files, run_id=run_id, kind="file", key=key, deidentify=deidentify,
                              allow_secondary=cfg.deid.allow_secondary, base=_strip_scheme(folder))
    n_bronze, n_quarantine, versions = _write_outcomes(spark, cfg, processed)
    rows_in = n_bronze + n_quarantine
    record_run(spark, cfg, run_id=run_id, job="ingest_folder", started=started, status="succeeded",
               rows_in=rows_in, rows_out=n_bronze, output_versions=versions,
               params={"folder": "<redacted path>", "deidentify": deidentify})
    return {"run_id": run_id, "files": rows_in, "bronze": n_bronze, "quarantine": n_quarantine, **versions}


def _strip_scheme(path: str) -> str:
    from pathlib import Path

    return str(Path(path.removeprefix("file:")).resolve()) if "://" not in path else path


def stream(spark: SparkSession, cfg: Config, *, topic: str | None = None, available_now: bool = True,
           processing_time: str = "5 seconds", checkpoint: str | None = None, timeout_s: float | None = None):
    """Kafka → bronze with a checkpoint. ``available_now`` drains what is there and returns."""
    from ctlake.infra.kafka_admin import spark_options

    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(ARROW_RECORDS_PER_BATCH))
    topic = topic or cfg.kafka.topic
    checkpoint = checkpoint or cfg.checkpoint_path(f"ingest_stream/{topic}")
    reader = spark.readStream.format("kafka").option("subscribe", topic) \
        .option("startingOffsets", "earliest").option("includeHeaders", "true") \
        .option("failOnDataLoss", "true").option("maxOffsetsPerTrigger", cfg.ingest.max_offsets_per_trigger) \
        .option("minPartitions", str(max(2, spark.sparkContext.defaultParallelism)))
    # minPartitions: messages are keyed by series, so one series fills one Kafka partition; Spark
    # splits the offset ranges so that every core parses (not one Python worker per partition).
    for k, v in spark_options(cfg).items():
        reader = reader.option(k, v)
    source = reader.load().select("value", "headers", "topic", "partition", "offset")
    # a stable id for this checkpoint, so a replayed batch id maps to the same pipeline_runs row
    stream_id = hashlib.sha256(checkpoint.encode()).hexdigest()[:12]
    name = f"ctlake-ingest-{stream_id}"

    def write_batch(batch_df: DataFrame, batch_id: int) -> None:
        started = utcnow()
        run_id = f"ingest_stream:{stream_id}:{batch_id}"
        t0 = time.monotonic()
        # Delta skips an append whose (app id, batch id) it committed before. The query id comes
        # from the checkpoint: a new checkpoint (batch ids from 0 again) is a new app id.
        query_id = next((str(q.id) for q in spark.streams.active if q.name == name), stream_id)
        txn = (f"ctlake-ingest-{query_id}", batch_id)
        # The stream runs on a clone of the session: settings made for one write (the zstd level)
        # must go to the clone, which is the batch frame's session.
        session = batch_df.sparkSession
        processed = process_frame(batch_df, run_id=run_id, kind="kafka", strip_bytes=True)
        raw = batch_df.selectExpr("topic AS source_topic", "partition AS source_partition",
                                  "offset AS source_offset", "value")
        timings: dict[str, float] = {}
        n_bronze, n_quarantine, versions = _write_outcomes(session, cfg, processed, raw=raw, txn=txn,
                                                           timings=timings)
        record_run(session, cfg, run_id=run_id, job="ingest_stream", started=started, status="succeeded",
                   rows_in=n_bronze + n_quarantine, rows_out=n_bronze, output_versions=versions,
                   params={"topic": topic, "batch_id": batch_id, "seconds": timings},
                   txn=(f"ctlake-ingest-{stream_id}", batch_id))
        timings["run"] = round(time.monotonic() - t0 - sum(timings.values()), 2)
        steps = ", ".join(f"{k} {v:.1f}" for k, v in timings.items())
        print(f"[ctlake] ingest batch {batch_id}: {n_bronze} to bronze, {n_quarantine} quarantined "
              f"in {time.monotonic() - t0:.1f} s ({steps})", file=sys.stderr, flush=True)

    writer = source.writeStream.foreachBatch(write_batch).option("checkpointLocation", checkpoint) \
        .queryName(name)
    writer = writer.trigger(availableNow=True) if available_now else writer.trigger(processingTime=processing_time)
    query = writer.start()
    query.awaitTermination(timeout_s)
    if query.exception() is not None:
        raise query.exception()
    return query
