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

    def producer_loop():
        try:
            for c in cohorts:
                digests.extend(send(icfg, c, topic=topic, progress=False).digests)
                time.sleep(10)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    rng = random.Random(7)
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
            deadline = time.monotonic() + 120
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
        sender.join(timeout=300)
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
