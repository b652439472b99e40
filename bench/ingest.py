"""Ingestion throughput: Kafka → bronze (ours, end to end) against a plain single-process pydicom
parse + metadata flatten of the same files (the peer). Writes bench/results/ingest.json.

    .venv/bin/python bench/ingest.py [--patients 4 --slices 60 --size 512]

Needs the local services of the `test` profile (started here if not running). The stream is
timed from the first micro-batch to the last commit, after Spark has started; the peer reads the
same de-identified bytes from memory. Not a test: nothing passes or fails on these numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _common import machine, versions  # bench/ is on sys.path

ROOT = Path(__file__).resolve().parents[1]


def peer_parse_per_s(blobs: list[bytes]) -> float:
    """pydicom alone, one process: parse each instance and flatten its header to the DICOM JSON
    model (bulk data left out), as a notebook user would without ctlake."""
    import pydicom

    t0 = time.perf_counter()
    for b in blobs:
        ds = pydicom.dcmread(io.BytesIO(b))
        ds.to_json_dict(bulk_data_threshold=1024, bulk_data_element_handler=lambda _e: "")
        _ = (ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.get("PixelSpacing"), ds.get("ImagePositionPatient"))
    return len(blobs) / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=4)
    ap.add_argument("--slices", type=int, default=60)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "ingest.json"))
    args = ap.parse_args(argv)

    from ctlake.config import LakeConfig, load_config
    from ctlake.infra.services import SERVICES
    from ctlake.ingest import bronze
    from ctlake.ingest.producer import send
    from ctlake.spark import get_spark
    from ctlake.synth import SynthConfig, generate_cohort

    cfg = load_config("test", conf_dir=ROOT / "conf")  # CTLAKE__* overrides apply
    work = Path(tempfile.mkdtemp(prefix="ctlake-bench-ingest-"))
    cfg = dataclasses.replace(cfg, lake=LakeConfig(root=str(work / "lake")))
    kafka = SERVICES["kafka"](cfg)
    started_kafka = not (kafka.running() and kafka.healthy())
    kafka.start()
    try:
        print(f"[bench] synthesizing {args.patients} × {args.slices} slices of {args.size}²", file=sys.stderr)
        generate_cohort(work / "cohort", SynthConfig(patients=args.patients, size=args.size, slices=args.slices,
                                                     seed=42))
        topic = f"bench-ingest-{uuid.uuid4().hex[:8]}"
        rep = send(cfg, work / "cohort", topic=topic, progress=False)
        print(f"[bench] sent {rep.sent} instances in {rep.seconds:.1f} s", file=sys.stderr)

        # the peer parses the same de-identified bytes that went to Kafka
        from ctlake.infra.kafka_admin import MAX_MESSAGE_BYTES, client_config
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(topic, auto_offset_reset="earliest", enable_auto_commit=False,
                                 consumer_timeout_ms=10_000, max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
                                 **client_config(cfg))
        blobs = [m.value for m in consumer if m.value]
        consumer.close()
        mb = sum(len(b) for b in blobs) / 1e6
        raw = peer_parse_per_s(blobs)
        print(f"[bench] peer: {raw:.0f} instances/s", file=sys.stderr)

        spark = get_spark(cfg, app_name="bench-ingest")
        spark.range(1).count()  # JVM and Python workers up before timing
        t0 = time.perf_counter()
        bronze.stream(spark, cfg, topic=topic, available_now=True)
        ours_s = time.perf_counter() - t0
        n = spark.read.format("delta").load(cfg.table_path("bronze.dicom_instances")).count()
        assert n == len(blobs), f"bronze has {n} rows, sent {len(blobs)}"
        ours = n / ours_s
        print(f"[bench] kafka → bronze: {ours:.0f} instances/s ({ours_s:.1f} s)", file=sys.stderr)
        result = {"instances": n, "mb": round(mb, 1), "raw_parse_per_s": round(raw, 1),
                  "kafka_to_bronze_per_s": round(ours, 1), "ratio": round(ours / raw, 3),
                  "send_per_s": round(rep.sent / rep.seconds, 1), "slice_size": args.size,
                  "spark_master": cfg.spark.master,
                  "versions": versions("pyspark", "delta-spark", "pydicom", "kafka-python", "pyarrow", "numpy"),
                  "machine": machine(),
                  "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        spark.stop()
    finally:
        if started_kafka:
            kafka.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
