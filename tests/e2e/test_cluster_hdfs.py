"""The cluster path on one machine: ingest → volumes → lung masks → nodules → radiomics, each a jobs/
entry point run by `spark-submit` on the two-worker Spark standalone cluster with the lake on HDFS
(a MiniDFSCluster from `ctlake infra up hdfs`).

ctlake reaches the driver and the executors as a wheel built here and shipped with --py-files (as .zip);
the spark-submit arguments come from `ctlake spark-conf` with the profile overridden by environment
variables, as a user would do it. The tables are then read back from hdfs:// by another submitted
driver, which also reports where the executors imported ctlake from.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

READBACK = textwrap.dedent("""
    import json, os
    from ctlake.config import load_config
    from ctlake.spark import get_spark
    cfg = load_config()
    spark = get_spark(cfg, app_name="ctlake-e2e-hdfs-readback")
    out = {"lake_root": cfg.lake_root}
    for t in ("bronze.dicom_instances", "bronze.quarantine", "silver.ct_series", "silver.ct_volumes",
              "silver.lung_masks", "gold.nodules", "gold.radiomics_features", "ops.pipeline_runs"):
        df = spark.read.format("delta").load(cfg.table_path(t))
        out[t] = df.count()
    series = spark.read.format("delta").load(cfg.table_path("silver.ct_series"))
    out["series_built"] = series.filter("status = 'built'").count()
    out["series_with_slabs"] = spark.read.format("delta").load(cfg.table_path("silver.ct_volumes")) \\
        .select("series_instance_uid").distinct().count()
    out["jobs"] = sorted({(r.job, r.status) for r in spark.read.format("delta")
                          .load(cfg.table_path("ops.pipeline_runs")).select("job", "status").collect()})
    def where(_):
        import ctlake
        yield ctlake.__file__
    out["executor_ctlake"] = sorted(set(spark.sparkContext.parallelize(range(4), 4).mapPartitions(where).collect()))
    import ctlake
    out["driver_ctlake"] = ctlake.__file__
    print("RESULT " + json.dumps(out))
    spark.stop()
""")


def _service(cfg, name: str):
    from ctlake.infra.services import SERVICES

    svc = SERVICES[name](cfg)
    was_up = svc.running() and svc.healthy()
    svc.start(progress=lambda m: print(f"[services] {m}", file=sys.stderr))
    return svc, was_up


@pytest.fixture(scope="module")
def hdfs(cfg):
    svc, was_up = _service(cfg, "hdfs")
    yield svc
    if not was_up and os.environ.get("CTLAKE_KEEP_SERVICES") != "1":
        svc.stop()


@pytest.fixture(scope="module")
def standalone(cfg):
    """The test profile's standalone cluster: reused when it is up (other tests share it), never stopped
    when it was already running."""
    svc, was_up = _service(cfg, "spark")
    yield svc
    if not was_up and os.environ.get("CTLAKE_KEEP_SERVICES") != "1":
        svc.stop()


def _wheel(cfg, out: Path) -> Path:
    """Build the ctlake wheel from a copy of the sources (keeps build/ and *.egg-info out of the checkout);
    return it as ``.zip`` for --py-files."""
    src = out / "src"
    shutil.copytree(cfg.project_root / "libs", src / "libs", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "pyproject.toml"):
        shutil.copy(cfg.project_root / name, src / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "--disable-pip-version-check", "-w", str(out / "dist"), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = (out / "dist").glob("ctlake-*.whl")
    # a wheel is a zip, but PySpark puts only .zip/.egg/.jar --py-files on the executors' sys.path
    # (SparkContext.PACKAGE_EXTENSIONS); a .whl would reach the driver only
    shipped = wheel.with_suffix(".zip")
    shutil.copy(wheel, shipped)
    return shipped


@pytest.mark.timeout(2400)     # six spark-submits: 21 min on a busy shared 2-core machine
def test_jobs_on_standalone_cluster_with_lake_on_hdfs(cfg, hdfs, standalone, tmp_path):
    from ctlake.synth import SynthConfig, generate_cohort

    manifest = generate_cohort(tmp_path / "cohort", SynthConfig(patients=2, size=48, slices=16, seed=21))
    n_files = sum(len(s.files) for s in manifest.series)
    n_nodules = len(manifest.annotations)
    assert n_nodules >= 1
    assert standalone.alive_workers() >= 2 == cfg.services.spark.workers      # the two-worker cluster
    wheel = _wheel(cfg, tmp_path / "wheel")
    lake = f"{hdfs.endpoint()}/e2e-{uuid.uuid4().hex[:8]}/lake"
    env = dict(os.environ, CTLAKE_PROFILE="test", CTLAKE__LAKE__ROOT=lake,
               CTLAKE__SPARK__MASTER=standalone.endpoint(), CTLAKE__SPARK__DRIVER_MEMORY="1g",
               CTLAKE__SPARK__EXECUTOR_MEMORY="768m", PYSPARK_PYTHON=sys.executable,
               PYSPARK_DRIVER_PYTHON=sys.executable, PYTHONPATH="")
    env.pop("CTLAKE_CONF_DIR", None)
    # what a user types: spark-submit $(ctlake spark-conf) --py-files ctlake.whl jobs/...
    conf = subprocess.run([sys.executable, "-m", "ctlake", "spark-conf"], capture_output=True, text=True,
                          env=env, cwd=cfg.project_root, timeout=120)
    assert conf.returncode == 0, conf.stderr
    submit_args = shlex.split(conf.stdout)
    assert submit_args[:2] == ["--master", standalone.endpoint()]
    assert f"spark.sql.warehouse.dir={lake}/_warehouse" in submit_args
    spark_submit = str(standalone.spark_home() / "bin" / "spark-submit")
    base = [spark_submit, *submit_args, "--conf", "spark.cores.max=2", "--py-files", str(wheel)]

    def submit(script: str, *args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([*base, script, *args], capture_output=True, text=True, env=env,
                              cwd=cfg.project_root, timeout=600)
        assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-5000:]}"
        return proc

    def last_json(proc: subprocess.CompletedProcess) -> dict:
        return json.loads(proc.stdout.strip().splitlines()[-1])

    ingest = last_json(submit("jobs/ingest_folder.py", str(tmp_path / "cohort")))
    # annotations.csv and manifest.json sit beside the series: quarantined as not DICOM, never dropped
    assert ingest["files"] == n_files + 2 and ingest["bronze"] == n_files and ingest["quarantine"] == 2, ingest
    volumes = last_json(submit("jobs/build_volumes.py"))
    assert volumes["series"] == 2 and volumes["built"] == 2, volumes
    lungs = last_json(submit("jobs/build_lung_masks.py"))
    assert lungs["ok"] == 2, lungs
    nodules = last_json(submit("jobs/build_nodules.py", "--luna16", str(tmp_path / "cohort" / "annotations.csv")))
    assert nodules["ok"] == n_nodules and nodules["failed"] == 0, nodules
    radiomics = last_json(submit("jobs/extract_radiomics.py"))
    assert radiomics["ok"] == n_nodules and radiomics["failed"] == 0, radiomics

    script = tmp_path / "readback.py"
    script.write_text(READBACK)
    out = submit(str(script)).stdout
    (line,) = [x for x in out.splitlines() if x.startswith("RESULT ")]
    got = json.loads(line[len("RESULT "):])
    assert got["lake_root"] == lake
    assert got["bronze.dicom_instances"] == n_files
    assert got["bronze.quarantine"] == 2
    assert got["silver.ct_series"] == got["series_built"] == got["series_with_slabs"] == 2
    assert got["silver.ct_volumes"] >= 2
    assert got["gold.nodules"] == got["gold.radiomics_features"] == n_nodules
    assert {j for j, _ in got["jobs"]} >= {"ingest_folder", "build_volumes", "extract_radiomics"}, got["jobs"]
    assert all(s == "succeeded" for _, s in got["jobs"]), got["jobs"]
    # ctlake came from the shipped wheel on the driver and on every executor, not from the checkout's
    # editable install (the workers run the same venv python, so this is what proves the shipping)
    assert wheel.name in got["driver_ctlake"], got["driver_ctlake"]
    assert got["executor_ctlake"] and all(wheel.name in p for p in got["executor_ctlake"]), got["executor_ctlake"]
    # the lake is on HDFS, not on the local disk
    assert not Path(lake.split("://", 1)[1]).exists()


def test_hdfs_keeps_data_across_restart(cfg, hdfs, spark):
    """Stop and start the MiniDFSCluster: no re-format, a Delta table written before is still there."""
    path = f"{hdfs.endpoint()}/restart-{uuid.uuid4().hex[:8]}/t"
    spark.range(123).write.format("delta").save(path)
    hdfs.stop()
    assert not hdfs.running()
    hdfs.start()
    assert hdfs.healthy()
    starts = [x for x in (hdfs.dir / "hdfs.log").read_text().splitlines() if x.startswith("CtlakeMiniDfs: ")
              and "file system under" in x]
    assert starts[-1].startswith("CtlakeMiniDfs: reusing the file system"), starts
    # the session's Hadoop IPC client may still hold its connection to the stopped NameNode: the
    # first calls then fail with an EOFException until that idle connection is dropped (Hadoop's
    # ipc.client.connection.maxidletime, 10 s); a long-running driver sees the same after a restart
    spark._jvm.org.apache.hadoop.fs.FileSystem.closeAll()
    for attempt in range(12):
        try:
            assert spark.read.format("delta").load(path).count() == 123
            break
        except Exception as exc:  # noqa: BLE001 - only the stale-connection EOF is waited out
            if "EOFException" not in str(exc) or attempt == 11:
                raise
            time.sleep(5)


def test_hdfs_profile_is_the_local_twin_of_the_cluster_profile(cfg):
    from ctlake.config import load_config

    hdfs_cfg = load_config("hdfs", conf_dir=cfg.project_root / "conf", environ={})
    base = load_config("local", conf_dir=cfg.project_root / "conf", environ={})
    assert hdfs_cfg.lake_root == f"hdfs://127.0.0.1:{base.services.hdfs.port}/ctlake"
    assert hdfs_cfg.spark.master == f"spark://127.0.0.1:{base.services.spark.master_port}"
    assert hdfs_cfg.table_path("silver.ct_volumes") == f"{hdfs_cfg.lake_root}/silver/ct_volumes"
    # the test profile's HDFS ports are its own (1xxxx), like every other test service
    assert cfg.services.hdfs.port == 18020 and cfg.services.hdfs.http_port == 19870
