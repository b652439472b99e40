"""Shared fixtures. Services are the real ones, started on loopback with the `test` profile's
ports and state folder (conf/test.yaml), once per test session, and stopped at the end unless
they were already running or CTLAKE_KEEP_SERVICES=1."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from ctlake.config import Config, load_config

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def cfg() -> Config:
    return load_config("test", conf_dir=ROOT / "conf", environ={})


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (read-only test material); fail loudly when it is missing."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.fail(f"test material not found at {SHARED_DATA}: the shared/ folder must sit beside the repo")
    return SHARED_DATA


def _service(cfg: Config, name: str):
    from ctlake.infra.services import SERVICES

    svc = SERVICES[name](cfg)
    was_up = svc.running() and svc.healthy()
    svc.start(progress=lambda m: print(f"[services] {m}", file=sys.stderr))
    yield svc
    if not was_up and os.environ.get("CTLAKE_KEEP_SERVICES") != "1":
        svc.stop()


@pytest.fixture(scope="session")
def kafka(cfg):
    yield from _service(cfg, "kafka")


@pytest.fixture(scope="session")
def mlflow_server(cfg):
    yield from _service(cfg, "mlflow")


@pytest.fixture(scope="session")
def elasticsearch(cfg):
    yield from _service(cfg, "elasticsearch")


@pytest.fixture(scope="session")
def spark(cfg):
    """One local[2] SparkSession with Delta and the Kafka connector for the whole session."""
    from ctlake.spark import get_spark

    session = get_spark(cfg, app_name="ctlake-tests")
    yield session
    session.stop()


@pytest.fixture()
def lake_tmp(cfg, request) -> Path:
    """A fresh folder inside the test lake for one test's tables."""
    path = Path(cfg.lake_root) / "t" / request.node.name.replace("[", "_").replace("]", "")
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
