"""Spark glue for ingestion: Kafka stream or folder → bronze.dicom_instances / bronze.quarantine.

The decision per record is :func:`ctlake.ingest.parse.process_record` (pure); here it runs inside
``mapInPandas`` and the two outcomes are MERGEd on their keys (insert-only), so a replayed
micro-batch, a restarted driver or an overlapping folder adds nothing twice. Each micro-batch or
batch run appends one ``ops.pipeline_runs`` row, keyed so that a replay rewrites the same row.
"""

from __future__ import annotations

import hashlib
import sys
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ctlake.config import Config
from ctlake.lake import delta
from ctlake.lake.runs import record_run, utcnow
from ctlake.lake.schemas import DICOM_INSTANCES, QUARANTINE, rows_frame, union_schema

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

BRONZE = "bronze.dicom_instances"
QUARANTINE_TABLE = "bronze.quarantine"
# Rows per Arrow batch into the Python workers: DICOM instances are large (up to 8 MiB inline).
ARROW_RECORDS_PER_BATCH = 64
# Transfer syntaxes that may be lossy: when two copies of one instance arrive, the other one wins.
LOSSY_SYNTAXES = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81",
                  "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.93", "1.2.840.10008.1.2.4.203")


def _relpath(path: str, base: str) -> str:
    path = path.removeprefix("file://").removeprefix("file:")
    return path[len(base):].lstrip("/") if base and path.startswith(base) else path


def _process_frames(frames: Iterator[pd.DataFrame], *, run_id: str, kind: str, key: bytes | None,
                    deidentify: bool, allow_secondary: bool, names: list[str],
                    base: str = "") -> Iterator[pd.DataFrame]:
    """mapInPandas body: rows of (value/content, headers, source…) → union rows."""

    from ctlake.dicom.deid import DeidProfile, deidentify_bytes
    from ctlake.errors import CtlakeError
    from ctlake.ingest.parse import Outcome, Record, process_record, quarantine_row
    from ctlake.ingest.producer import read_claim_check, source_ref

    profile = DeidProfile(site_key=key) if deidentify and key else None
    for frame in frames:
        out = []
        now = utcnow()
        for row in frame.itertuples(index=False):
            if kind == "kafka":
                headers = {h["key"]: (bytes(h["value"]) if h["value"] is not None else b"")
                           for h in (row.headers if row.headers is not None else [])}
                rec = Record(data=bytes(row.value) if row.value is not None else None, headers=headers,
                             source_kind="kafka", source_topic=row.topic, source_partition=int(row.partition),
                             source_offset=int(row.offset))
            else:
                rel = _relpath(row.path, base)
                ref = source_ref(rel, key) if key else hashlib.sha256(rel.encode()).hexdigest()[:32]
                data = bytes(row.content) if row.content is not None else None
                headers = {}
                rec = Record(data=data, headers=headers, source_kind="file", source_ref=ref)
                if profile is not None and data:
                    try:
                        data, _ = deidentify_bytes(data, profile, allow_secondary=allow_secondary)
                        headers = {"ctlake-deid-profile": profile.version.encode()}
                        rec = Record(data=data, headers=headers, source_kind="file", source_ref=ref)
                    except CtlakeError as exc:
                        out.append(Outcome(QUARANTINE_TABLE, quarantine_row(
                            rec, stage="edge", code=exc.code, message=str(exc), run_id=run_id, now=now,
                            sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                            withheld="refused by de-identification: the bytes stay at the source")))
                        continue
            out.append(process_record(rec, run_id=run_id, now=now, read_claim_check=read_claim_check))
        rows = [{"target": o.table, **o.row} for o in out]
        yield rows_frame(rows, names)


def process_frame(df: DataFrame, *, run_id: str, kind: str, key: bytes | None = None,
                  deidentify: bool = False, allow_secondary: bool = False, base: str = "") -> DataFrame:
    """Apply the per-record decision to a Kafka (``kind='kafka'``) or binaryFile (``'file'``) frame."""
    schema = union_schema(DICOM_INSTANCES, QUARANTINE)
    names = schema.fieldNames()

    def fn(frames):
        return _process_frames(frames, run_id=run_id, kind=kind, key=key, deidentify=deidentify,
                               allow_secondary=allow_secondary, names=names, base=base)

    return df.mapInPandas(fn, schema)


def _decide(keys: list, taken: dict[str, str]) -> tuple[set, list]:
    """Pick the bronze rows of one batch from its narrow key rows (pure).

    ``keys``: rows with sop_instance_uid, content_sha256, transfer_syntax_uid, source_offset,
    source_ref. ``taken``: SOPInstanceUID → sha256 already in bronze. Per UID the first candidate
    wins (a possibly lossy transfer syntax last, then source offset/ref and sha256, so a replay
    picks the same one). Returns the winners' row identities and the losers that carry *other*
    bytes than the kept instance (identical bytes are the same instance, not a conflict).
    """
    def rank(k) -> tuple:
        return (k.transfer_syntax_uid in LOSSY_SYNTAXES, k.source_offset is None, k.source_offset or 0,
                k.source_ref or "", k.content_sha256)

    by_uid: dict[str, list] = {}
    for k in keys:
        by_uid.setdefault(k.sop_instance_uid, []).append(k)
    winners, losers = set(), []
    for uid, group in by_uid.items():
        group.sort(key=rank)
        kept = taken.get(uid) or group[0].content_sha256
        if uid not in taken:
            first = group[0]
            winners.add((uid, first.content_sha256, first.source_offset, first.source_ref))
        losers += [k for k in group if k.content_sha256 != kept]
    return winners, losers


def _write_outcomes(spark: SparkSession, cfg: Config, processed: DataFrame,
                    timings: dict[str, float] | None = None) -> tuple[int, int, dict]:
    """Write one batch's outcomes: new instances to bronze, everything else to quarantine.

    The decision is taken on a narrow projection collected to the driver (a few thousand keys at
    most per batch), so the DICOM bytes are read once and never shuffled. Bronze is written with an
    insert-only MERGE on sop_instance_uid, which also makes two concurrent writers safe; an
    instance whose UID is taken by other bytes (in this batch or in the table) goes to quarantine
    with code DUPLICATE_SOP_INSTANCE and its bytes (it passed the gate), never silently away.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    timings = {} if timings is None else timings
    clock = [time.monotonic()]

    def lap(name: str) -> None:
        now = time.monotonic()
        timings[name] = round(now - clock[0], 2)
        clock[0] = now

    processed = processed.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        key_cols = ["sop_instance_uid", "content_sha256", "transfer_syntax_uid", "source_offset", "source_ref"]
        keys = processed.filter(F.col("target") == BRONZE).select(key_cols).collect()
        n_quarantine = processed.filter(F.col("target") == QUARANTINE_TABLE).count()
        lap("process")
        path = cfg.table_path(BRONZE)
        taken: dict[str, str] = {}
        uids = sorted({k.sop_instance_uid for k in keys})
        if uids and delta.exists(spark, path):
            have = spark.read.format("delta").load(path).select("sop_instance_uid", "content_sha256") \
                .filter(F.col("sop_instance_uid").isin(uids)).collect()
            taken = {r.sop_instance_uid: r.content_sha256 for r in have}
        winners, losers = _decide(keys, taken)
        lap("dedupe")
        versions: dict[str, int] = {}
        candidates = processed.filter(F.col("target") == BRONZE)
        if winners:
            ident = spark.createDataFrame(sorted(winners, key=str),
                                          "sop_instance_uid string, content_sha256 string, source_offset long, "
                                          "source_ref string")
            chosen = candidates.join(F.broadcast(ident), on=[
                candidates.sop_instance_uid == ident.sop_instance_uid,
                candidates.content_sha256 == ident.content_sha256,
                candidates.source_offset.eqNullSafe(ident.source_offset),
                candidates.source_ref.eqNullSafe(ident.source_ref)], how="left_semi")
            versions[BRONZE] = delta.write(spark, cfg, chosen, BRONZE, mode="insert_new", count=False,
                                           deterministic_source=True).version
        lap("bronze")
        quarantine = processed.filter(F.col("target") == QUARANTINE_TABLE).select([f.name for f in QUARANTINE.fields])
        if losers:
            lose = spark.createDataFrame([(k.sop_instance_uid, k.content_sha256) for k in losers],
                                         "sop_instance_uid string, content_sha256 string")
            dup = candidates.join(F.broadcast(lose), ["sop_instance_uid", "content_sha256"], "left_semi")
            quarantine = quarantine.unionByName(_duplicates_to_quarantine(dup))
        if n_quarantine or losers:
            q = delta.write(spark, cfg, quarantine.dropDuplicates(["quarantine_id"]), QUARANTINE_TABLE,
                            mode="insert_new", count=False, deterministic_source=True)
            versions[QUARANTINE_TABLE] = q.version
        lap("quarantine")
        return len(winners), n_quarantine + len(losers), versions
    finally:
        processed.unpersist()


def _duplicates_to_quarantine(df: DataFrame):
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
        "ingest_run_id", "ingested_at")


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
        .option("failOnDataLoss", "true").option("maxOffsetsPerTrigger", cfg.ingest.max_offsets_per_trigger)
    for k, v in spark_options(cfg).items():
        reader = reader.option(k, v)
    source = reader.load().select("value", "headers", "topic", "partition", "offset")
    # a stable id for this checkpoint, so a replayed batch id maps to the same pipeline_runs row
    stream_id = hashlib.sha256(checkpoint.encode()).hexdigest()[:12]

    def write_batch(batch_df: DataFrame, batch_id: int) -> None:
        started = utcnow()
        run_id = f"ingest_stream:{stream_id}:{batch_id}"
        t0 = time.monotonic()
        processed = process_frame(batch_df, run_id=run_id, kind="kafka")
        timings: dict[str, float] = {}
        n_bronze, n_quarantine, versions = _write_outcomes(spark, cfg, processed, timings)
        record_run(spark, cfg, run_id=run_id, job="ingest_stream", started=started, status="succeeded",
                   rows_in=n_bronze + n_quarantine, rows_out=n_bronze, output_versions=versions,
                   params={"topic": topic, "batch_id": batch_id, "seconds": timings},
                   txn=(f"ctlake-ingest-{stream_id}", batch_id))
        steps = ", ".join(f"{k} {v:.1f}" for k, v in timings.items())
        print(f"[ctlake] ingest batch {batch_id}: {n_bronze} to bronze, {n_quarantine} quarantined "
              f"in {time.monotonic() - t0:.1f} s ({steps})", file=sys.stderr, flush=True)

    writer = source.writeStream.foreachBatch(write_batch).option("checkpointLocation", checkpoint) \
        .queryName(f"ctlake-ingest-{stream_id}")
    writer = writer.trigger(availableNow=True) if available_now else writer.trigger(processingTime=processing_time)
    query = writer.start()
    query.awaitTermination(timeout_s)
    if query.exception() is not None:
        raise query.exception()
    return query
