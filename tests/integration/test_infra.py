"""`ctlake infra`: idempotent up, down after a crash, a busy port is a clear error."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys

import pytest
from ctlake.config import MlflowServiceConfig
from ctlake.errors import ServiceError
from ctlake.infra.services import MlflowService, pid_alive, port_open

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cfg(cfg, tmp_path, port):
    services = dataclasses.replace(cfg.services, state_dir=str(tmp_path / "state"),
                                   mlflow=MlflowServiceConfig(port=port))
    return dataclasses.replace(cfg, services=services)


def test_busy_port_is_a_clear_error(cfg, tmp_path):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        svc = MlflowService(_cfg(cfg, tmp_path, port))
        with pytest.raises(ServiceError) as err:
            svc.start()
    assert err.value.code == "PORT_IN_USE"
    assert str(port) in str(err.value) and "services.mlflow.port" in str(err.value)
    assert not svc.pids()


def test_up_twice_then_crash_then_down_and_up(cfg, tmp_path):
    port = _free_port()
    svc = MlflowService(_cfg(cfg, tmp_path, port))
    try:
        first = svc.start()
        assert first.healthy and len(first.pids) == 1
        again = svc.start()  # idempotent: the same process
        assert again.pids == first.pids
        os.killpg(first.pids[0], signal.SIGKILL)  # crash
        for _ in range(100):
            if not pid_alive(first.pids[0]):
                break
            import time

            time.sleep(0.1)
        state = svc.status()
        assert not state.running and state.detail == "stale pid file"
        svc.stop()  # down after a crash is fine, and it takes the leader's orphaned children down too
        assert not svc.pids()
        assert not port_open(port)
        third = svc.start()
        assert third.healthy and third.pids != first.pids
    finally:
        svc.stop()
    assert not svc.running()


def test_cli_status_exit_code_and_help(tmp_path):
    env = dict(os.environ, CTLAKE__SERVICES__STATE_DIR=str(tmp_path / "nothing"))
    out = subprocess.run([sys.executable, "-m", "ctlake", "--profile", "test", "infra", "status", "mlflow"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 3
    assert "mlflow" in out.stdout and "stopped" in out.stdout
    helped = subprocess.run([sys.executable, "-m", "ctlake", "infra", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "elasticsearch" in helped.stdout
    bad = subprocess.run([sys.executable, "-m", "ctlake", "--profile", "nope", "infra", "status"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "profile 'nope'" in bad.stderr
