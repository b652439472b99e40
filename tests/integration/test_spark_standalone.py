"""`ctlake infra up spark`: a standalone master and two one-core workers; a job uses both executors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DRIVER = textwrap.dedent("""
    import json, os, sys, time
    from ctlake.config import load_config
    from ctlake.spark import get_spark
    cfg = load_config("test")
    spark = get_spark(cfg, app_name="ctlake-standalone-test",
                      extra_conf={"spark.master": sys.argv[1], "spark.executor.memory": "512m",
                                  "spark.cores.max": "2"})
    sc = spark.sparkContext
    deadline = time.time() + 60
    while sc._jsc.sc().getExecutorMemoryStatus().size() < 3 and time.time() < deadline:
        time.sleep(0.5)           # wait for both executors to register before scheduling
    def where(it):
        import os, time
        time.sleep(0.3)
        yield (os.path.basename(os.getcwd()), sum(1 for _ in it))
    out = sc.parallelize(range(1000), 8).mapPartitions(where).collect()
    total = spark.range(0, 100000, numPartitions=4).selectExpr("sum(id) AS s").first().s
    print("RESULT " + json.dumps({"parts": out, "sum": total}))
    spark.stop()
""")


def test_job_runs_on_two_executors(cfg):
    from ctlake.infra.services import SparkStandaloneService

    svc = SparkStandaloneService(cfg)
    svc.start()
    try:
        assert svc.alive_workers() == 2
        proc = subprocess.run([sys.executable, "-c", DRIVER, svc.endpoint()], capture_output=True,
                              text=True, timeout=300)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        assert proc.returncode == 0 and line, proc.stderr[-3000:]
        result = json.loads(line[0][len("RESULT "):])
        executors = {ex for ex, _ in result["parts"]}
        assert len(executors) == 2, f"tasks ran on executors {executors}"
        assert sum(n for _, n in result["parts"]) == 1000
        assert result["sum"] == sum(range(100000))
    finally:
        svc.stop()
    assert not svc.running()
