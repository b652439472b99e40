"""The Spark settings ctlake applies (no Spark started: the jar lookup is replaced)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from ctlake import spark as cspark
from ctlake.config import load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def cfg(monkeypatch):
    monkeypatch.setattr(cspark, "jar_files", lambda bundle: [Path(f"/jars/{bundle}-a.jar")])
    return load_config("test", conf_dir=ROOT / "conf", environ={})


def test_executors_compile_with_c1_only_unless_the_profile_says_otherwise(cfg):
    conf = cspark.spark_conf(cfg)
    assert conf["spark.executor.extraJavaOptions"] == "-XX:TieredStopAtLevel=1"
    assert "spark.driver.extraJavaOptions" not in conf      # the driver keeps C2 (long sessions, planning)
    args = cspark.submit_args(cfg)
    assert "spark.executor.extraJavaOptions=-XX:TieredStopAtLevel=1" in args
    own = dataclasses.replace(cfg, spark=dataclasses.replace(
        cfg.spark, conf={"spark.executor.extraJavaOptions": "-Xss4m"}))
    assert cspark.spark_conf(own)["spark.executor.extraJavaOptions"] == "-Xss4m"
