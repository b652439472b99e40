"""Start N training workers: in-process (N = 1), ``horovod.spark.run`` or ``horovod.runner.run``.

``spark``       one Horovod worker per Spark task of the running application (``horovod.spark.run``);
                the same command trains on a laptop (local[N]) or on cluster executors. The
                application needs at least N task slots.
``horovodrun``  N local processes started by ``horovodrun --gloo -np N -H localhost:N`` running
                ``python -m ctlake.train.worker PLAN OUT`` (the plan pickled to a file, each rank's
                result written back), without Spark. The CLI rather than ``horovod.runner.run``:
                the latter starts its helpers with multiprocessing "spawn", which re-executes the
                caller's unguarded ``__main__`` (a jobs/ script, a notebook cell file).
Both use Gloo for the control plane; tensors go over Gloo on CPU and NCCL on GPUs when Horovod
was built with NCCL. On the local profile (``spark.local_ip`` 127.0.0.1) everything is pinned to the
loopback interface (``train.network_interface`` overrides).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ctlake.config import Config
from ctlake.errors import CtlakeError
from ctlake.train.worker import WorkerPlan, train_worker

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["launch", "network_interface"]


def network_interface(cfg: Config) -> str | None:
    if cfg.train.network_interface:
        return cfg.train.network_interface
    if cfg.spark.local_ip in ("127.0.0.1", "localhost"):
        return "lo"
    return None


def launch(plan: WorkerPlan, np: int, cfg: Config, *, launcher: str | None = None,
           spark: SparkSession | None = None) -> list[dict]:
    """Run :func:`ctlake.train.worker.train_worker` on ``np`` workers; results in rank order."""
    launcher = launcher or cfg.train.launcher
    if np < 1:
        raise CtlakeError(f"--np {np}: need at least one worker", code="USAGE")
    if np == 1:
        plan.distributed = False
        return [train_worker(plan)]
    plan.distributed = True
    nic = network_interface(cfg)
    try:
        import horovod.torch as hvd
    except ImportError as exc:
        raise CtlakeError(f"horovod is not importable ({exc})", code="NO_HOROVOD",
                          hint="`make venv` builds it (infra/horovod/build_wheel.sh); or train with --np 1") from None
    if not hvd.gloo_built():
        raise CtlakeError("horovod was built without Gloo", code="NO_HOROVOD",
                          hint="rebuild it with infra/horovod/build_wheel.sh")
    if launcher == "spark":
        import horovod.spark

        if spark is None:
            raise CtlakeError("the spark launcher needs a SparkSession", code="USAGE")
        slots = spark.sparkContext.defaultParallelism
        if slots < np:
            raise CtlakeError(f"--np {np} Horovod workers need {np} Spark task slots, the application has {slots}",
                              code="NOT_ENOUGH_SLOTS",
                              hint="use a master with more cores (local[N], more executors) or a smaller --np")
        results = horovod.spark.run(train_worker, args=(plan,), num_proc=np, use_gloo=True,
                                    start_timeout=cfg.train.start_timeout_s, nics={nic} if nic else None,
                                    verbose=1)
    elif launcher == "horovodrun":
        results = _horovodrun(plan, np, nic, cfg.train.start_timeout_s)
    else:
        raise CtlakeError(f"unknown launcher {launcher!r}", code="USAGE", hint="spark or horovodrun")
    results = sorted(results, key=lambda r: r["rank"])
    if [r["rank"] for r in results] != list(range(np)):
        raise CtlakeError(f"expected results of ranks 0..{np - 1}, got {[r['rank'] for r in results]}",
                          code="HOROVOD_FAILED")
    return results


def _horovodrun(plan: WorkerPlan, np: int, nic: str | None, start_timeout_s: int) -> list[dict]:
    horovodrun = Path(sys.executable).with_name("horovodrun")
    if not horovodrun.exists():
        raise CtlakeError(f"{horovodrun} not found", code="NO_HOROVOD", hint="`make venv` installs horovod")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOROVOD_", "OMPI_", "PMI_"))}
    env["PYTHONUNBUFFERED"] = "1"
    with tempfile.TemporaryDirectory(prefix="ctlake-hvd-") as tmp:
        plan_path = Path(tmp) / "plan.pkl"
        plan_path.write_bytes(pickle.dumps(plan))
        cmd = [str(horovodrun), "--gloo", "-np", str(np), "-H", f"localhost:{np}",
               "--start-timeout", str(start_timeout_s)]
        if nic:
            cmd += ["--network-interface", nic]
        cmd += [sys.executable, "-m", "ctlake.train.worker", str(plan_path), tmp]
        proc = subprocess.run(cmd, env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            tail = "\n".join(proc.stdout.splitlines()[-40:])
            raise CtlakeError(f"horovodrun exited with {proc.returncode}:\n{tail}", code="HOROVOD_FAILED")
        results = []
        for rank in range(np):
            path = Path(tmp) / f"rank{rank}.pkl"
            if not path.is_file():
                raise CtlakeError(f"horovod rank {rank} wrote no result", code="HOROVOD_FAILED")
            results.append(pickle.loads(path.read_bytes()))  # noqa: S301 - written by our own workers
    return results
