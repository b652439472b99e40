"""Faults: the streaming driver SIGKILLed at random points and the broker restarted mid-stream
while the producer keeps sending → 0 lost, 0 duplicates. Two overlapping batch ingests at once →
no duplicate rows, a readable table."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _env(lake: str) -> dict[str, str]:
    return dict(os.environ, CTLAKE_PROFILE="test", CTLAKE__LAKE__ROOT=lake)


def _start_stream(cfg, lake, topic, log):
    return subprocess.Popen(
        [sys.executable, "-m", "ctlake", "ingest", "stream", "--topic", topic, "--continuous",
         "--trigger", "1 second"],
        env=_env(lake), cwd=cfg.project_root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


# Five driver lifetimes (JVM start, first micro-batch, kill) and a drain: ~5 min on an idle 2-core
# machine, up to ~20 min when other Spark jobs share it.
@pytest.mark.timeout(1800)
def test_driver_killed_and_broker_restarted_nothing_lost_nothing_twice(cfg, kafka, spark, tmp_path):
    import dataclasses

    from ctlake.config import LakeConfig
    from ctlake.ingest.producer import send
    from ctlake.synth import SynthConfig, generate_cohort

    lake = str(tmp_path / "lake")
    icfg = dataclasses.replace(cfg, lake=LakeConfig(root=lake))
    topic = f"ingest-kill-{uuid.uuid4().hex[:8]}"
    cohorts = []
    for i in range(10):
        generate_cohort(tmp_path / f"c{i}", SynthConfig(patients=1, size=32, slices=10, seed=100 + i))
        cohorts.append(tmp_path / f"c{i}")
    digests: list[str] = []
    errors: list[BaseException] = []
    rng, pause = random.Random(7), random.Random(8)
    # The producer sends two cohorts during each driver lifetime (paced by the lifetimes, not by
    # the clock, so that every driver has data to work on however slowly it starts).
    tokens = threading.Semaphore(0)

    def producer_loop():
        try:
            for c in cohorts:
                tokens.acquire()
                digests.extend(send(icfg, c, topic=topic, progress=False).digests)
                time.sleep(pause.uniform(0, 3))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    log_path = tmp_path / "stream.log"
    log = open(log_path, "ab")  # noqa: SIM115

    def batches_done() -> int:
        return log_path.read_text(errors="replace").count("ingest batch")
    # the topic must exist before the first driver subscribes
    from ctlake.infra.kafka_admin import ensure_topic

    ensure_topic(icfg, topic)
    sender = threading.Thread(target=producer_loop)
    sender.start()
    kills = 0
    broker_restarted = False
    try:
        while kills < 5:
            before = batches_done()
            proc = _start_stream(cfg, lake, topic, log)
            tokens.release(2)
            deadline = time.monotonic() + 600  # liveness only: a loaded 2-core machine starts slowly
            while batches_done() == before and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.5)  # the driver is up and committing micro-batches ...
            time.sleep(rng.uniform(0, 6))  # ... then it dies at a random point of its work
            if proc.poll() is not None:
                pytest.fail(f"the stream exited early ({proc.returncode}); see {tmp_path / 'stream.log'}")
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
            if kills == 2 and not broker_restarted:
                kafka.stop()          # the broker goes away mid-stream ...
                time.sleep(2)
                kafka.start()         # ... and comes back with its data
                broker_restarted = True
        sender.join(timeout=600)
        assert not sender.is_alive() and not errors, errors
    finally:
        log.close()
    assert broker_restarted and kills >= 5
    # the killed drivers did real work between kills (not only start-up)
    assert batches_done() >= 5
    # a last run drains whatever the killed drivers left
    drain = subprocess.run([sys.executable, "-m", "ctlake", "ingest", "stream", "--topic", topic],
                           env=_env(lake), cwd=cfg.project_root, capture_output=True, text=True, timeout=600)
    assert drain.returncode == 0, drain.stderr[-3000:]
    rows = spark.read.format("delta").load(icfg.table_path("bronze.dicom_instances")) \
        .select("sop_instance_uid", "content_sha256").collect()
    assert len(digests) == 100
    assert len(rows) == len({r.sop_instance_uid for r in rows}), "duplicate instances in bronze"
    assert sorted(r.content_sha256 for r in rows) == sorted(digests), "lost or extra instances"


def test_two_overlapping_batch_ingests_at_once(cfg, spark, tmp_path):
    import dataclasses

    from ctlake.config import LakeConfig
    from ctlake.synth import SynthConfig, generate_cohort

    lake = str(tmp_path / "lake")
    icfg = dataclasses.replace(cfg, lake=LakeConfig(root=lake))
    manifest = generate_cohort(tmp_path / "cohort", SynthConfig(patients=3, size=32, slices=8, seed=11))
    folders = [tmp_path / "cohort" / manifest.series[0].patient_id, tmp_path / "cohort"]  # overlapping
    procs = [subprocess.Popen([sys.executable, "-m", "ctlake", "ingest", "folder", str(f)], env=_env(lake),
                              cwd=cfg.project_root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for f in folders]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_stdout, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    df = spark.read.format("delta").load(icfg.table_path("bronze.dicom_instances"))
    n_files = sum(len(s.files) for s in manifest.series)
    assert df.count() == n_files
    assert df.select("sop_instance_uid").distinct().count() == n_files
    runs = spark.read.format("delta").load(icfg.table_path("ops.pipeline_runs")).filter("job = 'ingest_folder'")
    assert runs.count() == 2


def _instance(uid: str, data: bytes, *, run: str, offset: int) -> dict:
    import datetime as dt
    import hashlib

    return {"sop_instance_uid": uid, "header_json": "{}", "dicom_bytes": data,
            "content_sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data),
            "transfer_syntax_uid": "1.2.840.10008.1.2.1", "source_kind": "kafka", "source_topic": "t",
            "source_partition": 0, "source_offset": offset, "ingest_run_id": run,
            "ingested_at": dt.datetime(2026, 1, 1)}


def test_two_writers_that_raced_settle_to_one_row_per_instance(cfg, spark, tmp_path):
    """Two writers each decided against the same bronze version and appended overlapping instances
    (the window an overlapping folder ingest and a stream can hit). The writer that sees a foreign
    commit after its read settles: one row per SOPInstanceUID, the first by rank whoever committed
    first; a copy with other bytes goes to quarantine with its bytes; a second settle does nothing."""
    import dataclasses

    from ctlake.config import LakeConfig
    from ctlake.ingest import bronze
    from ctlake.lake import commit
    from ctlake.lake.schemas import DICOM_INSTANCES

    icfg = dataclasses.replace(cfg, lake=LakeConfig(root=str(tmp_path / "lake")))
    spec = bronze.BRONZE_SPEC
    # writer A: uid1 (bytes a), uid2; writer B: uid1 with other bytes from an earlier offset (it
    # ranks first), uid2 with the same bytes at the same position (the run id breaks the tie), uid3
    a = [_instance("1.1", b"a-bytes", run="run-a", offset=10), _instance("1.2", b"same", run="run-a", offset=11)]
    b = [_instance("1.1", b"b-bytes", run="run-b", offset=3), _instance("1.2", b"same", run="run-b", offset=11),
         _instance("1.3", b"new", run="run-b", offset=12)]
    before, _ = commit.present(spark, icfg, spec, ["1.1", "1.2", "1.3"])  # both read here: no table yet
    hook = bronze._quarantine_race_losers(spark, icfg)
    _, removed_a = commit.append_new(spark, icfg, spark.createDataFrame(a, DICOM_INSTANCES), spec,
                                     read_version=before, keys=["1.1", "1.2"], before_delete=hook)
    assert removed_a == 0  # nothing landed between A's read and A's commit
    _, removed_b = commit.append_new(spark, icfg, spark.createDataFrame(b, DICOM_INSTANCES), spec,
                                     read_version=before, keys=["1.1", "1.2", "1.3"], before_delete=hook)
    assert removed_b == 2
    rows = {r.sop_instance_uid: r for r in spark.read.format("delta").load(icfg.table_path(bronze.BRONZE)).collect()}
    assert sorted(rows) == ["1.1", "1.2", "1.3"]
    assert rows["1.1"].dicom_bytes == b"b-bytes" and rows["1.2"].ingest_run_id == "run-a"
    q = spark.read.format("delta").load(icfg.table_path(bronze.QUARANTINE_TABLE)).collect()
    assert [(r.error_code, r.dicom_bytes, r.ingest_run_id) for r in q] == [
        ("DUPLICATE_SOP_INSTANCE", b"a-bytes", "run-a")]
    assert commit.settle(spark, icfg, spec, ["1.1", "1.2", "1.3"], before_delete=hook) == 0
