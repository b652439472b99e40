"""Local services on loopback: Kafka (KRaft), MLflow, Elasticsearch, Spark standalone, HDFS.

Each service keeps its pid file, log and data under ``<state_dir>/<name>/``. ``start`` is
idempotent (a healthy running service is left alone), ``stop`` after a crash is fine (a stale pid
file is removed), and a port held by some other process is a clear error naming the port and the
config key that moves it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ctlake.config import Config
from ctlake.errors import ServiceError
from ctlake.infra.jars import ensure_jars
from ctlake.infra.java import cache_dir, java_env, java_home, project_root

LOOPBACK = "127.0.0.1"


def port_open(port: int, host: str = LOOPBACK, timeout_s: float = 0.5) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def http_get(url: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
    """GET ``url``; (status, body), or (0, b"") when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 (loopback only)
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (OSError, ValueError):
        return 0, b""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as dead
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def group_alive(pgid: int) -> bool:
    """True while any non-zombie process belongs to process group ``pgid`` (Linux /proc)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(") ", 1)[-1].split()
        except OSError:
            continue
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class Status:
    name: str
    running: bool
    healthy: bool
    pids: list[int]
    endpoint: str
    detail: str = ""


class Service:
    """One local service: subclasses say how to prepare, launch and health-check it."""

    name = "service"

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.dir = cfg.state_dir / self.name
        self.timeout_s = cfg.services.start_timeout_s

    # --- what subclasses provide -------------------------------------------------------
    def ports(self) -> dict[str, int]:
        """Ports this service binds on loopback, keyed by the config key that sets each."""
        raise NotImplementedError

    def endpoint(self) -> str:
        raise NotImplementedError

    def build(self) -> None:
        """Fetch jars / compile launchers (no state written); safe to run any time."""

    def prepare(self) -> None:
        """Set-up right before launching (config files, storage format); calls :meth:`build`."""
        self.build()

    def commands(self) -> list[tuple[str, list[str], dict[str, str]]]:
        """Processes to launch: (label, argv, env)."""
        raise NotImplementedError

    def healthy(self) -> bool:
        raise NotImplementedError

    # --- shared machinery -------------------------------------------------------------
    def _pidfiles(self) -> list[Path]:
        return sorted(self.dir.glob("*.pid")) if self.dir.is_dir() else []

    def pids(self) -> list[int]:
        out = []
        for f in self._pidfiles():
            try:
                out.append(int(f.read_text().strip()))
            except ValueError:
                continue
        return out

    def running(self) -> bool:
        pids = self.pids()
        return bool(pids) and all(pid_alive(p) for p in pids)

    def status(self) -> Status:
        running = self.running()
        healthy = self.healthy() if running else False
        detail = "" if running else ("stale pid file" if self.pids() else "stopped")
        return Status(self.name, running, healthy, self.pids(), self.endpoint(), detail)

    def log_tail(self, lines: int = 25) -> str:
        chunks = []
        for log in sorted(self.dir.glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            chunks.append(f"--- {log} ---\n" + "\n".join(text))
        return "\n".join(chunks)

    def start(self, *, progress=None) -> Status:
        say = progress or (lambda msg: None)
        if self.running() and self.healthy():
            say(f"{self.name}: already running at {self.endpoint()}")
            return self.status()
        if self.pids():  # partially up or crashed: clear it before starting afresh
            self.stop()
        for key, port in self.ports().items():
            if port_open(port):
                raise ServiceError(
                    f"{self.name}: port {port} on {LOOPBACK} is already in use by another process",
                    code="PORT_IN_USE",
                    hint=f"stop that process or choose another port with services.{key} "
                         f"(conf/<profile>.yaml or CTLAKE__SERVICES__{key.upper().replace('.', '__')})",
                )
        self.dir.mkdir(parents=True, exist_ok=True)
        say(f"{self.name}: preparing")
        self.prepare()
        for label, argv, env in self.commands():
            log = open(self.dir / f"{label}.log", "ab")  # noqa: SIM115 (the child owns it)
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    cwd=self.dir, start_new_session=True, stdin=subprocess.DEVNULL)
            log.close()
            (self.dir / f"{label}.pid").write_text(f"{proc.pid}\n")
        say(f"{self.name}: waiting for health check")
        deadline = time.monotonic() + self.timeout_s
        t0 = time.monotonic()
        while time.monotonic() < deadline:
            if not self.running():
                tail = self.log_tail()
                self.stop()
                raise ServiceError(f"{self.name}: exited during start-up\n{tail}", code="SERVICE_DIED")
            if self.healthy():
                say(f"{self.name}: up at {self.endpoint()} in {time.monotonic() - t0:.1f} s")
                return self.status()
            time.sleep(0.5)
        tail = self.log_tail()
        self.stop()
        raise ServiceError(f"{self.name}: not healthy after {self.timeout_s:.0f} s\n{tail}",
                           code="SERVICE_TIMEOUT",
                           hint="raise services.start_timeout_s on a slow machine")

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop every process of every group we started, then wait for our ports to close.

        Each service runs in its own session, so its process group id is the pid we recorded.
        The group is signalled even when its leader is already gone: after a crash of the
        leader, children (uvicorn under ``mlflow server``) may still hold the port.
        """
        groups = self.pids()
        for pgid in groups:
            _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while any(group_alive(g) for g in groups) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pgid in groups:
            if group_alive(pgid):
                _signal_group(pgid, signal.SIGKILL)
        deadline = time.monotonic() + 10.0
        while any(group_alive(g) for g in groups) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in groups:  # reap our own children so they do not linger as zombies
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        if groups:  # a socket is released a moment after its process exits
            deadline = time.monotonic() + 10.0
            while any(port_open(p, timeout_s=0.2) for p in self.ports().values()) and time.monotonic() < deadline:
                time.sleep(0.2)
        for f in self._pidfiles():
            f.unlink(missing_ok=True)


class KafkaService(Service):
    """One KRaft broker+controller from the kafka_2.13 jars (``kafka.Kafka``)."""

    name = "kafka"

    def ports(self) -> dict[str, int]:
        k = self.cfg.services.kafka
        return {"kafka.port": k.port, "kafka.controller_port": k.controller_port}

    def endpoint(self) -> str:
        return f"{LOOPBACK}:{self.cfg.services.kafka.port}"

    def _classpath(self) -> str:
        return str(ensure_jars("kafka") / "*")

    def build(self) -> None:
        ensure_jars("kafka")

    def prepare(self) -> None:
        k = self.cfg.services.kafka
        data = self.dir / "data"
        props = self.dir / "server.properties"
        props.write_text("\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{LOOPBACK}:{k.controller_port}",
            f"listeners=PLAINTEXT://{LOOPBACK}:{k.port},CONTROLLER://{LOOPBACK}:{k.controller_port}",
            f"advertised.listeners=PLAINTEXT://{LOOPBACK}:{k.port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            f"log.dirs={data}",
            "num.partitions=2",
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "auto.create.topics.enable=false",
            "group.initial.rebalance.delay.ms=0",
            "message.max.bytes=16777216",
            "replica.fetch.max.bytes=16777216",
            "socket.request.max.bytes=104857600",
            "log.retention.hours=168",
            "",
        ]))
        (self.dir / "log4j2.properties").write_text("\n".join([
            "status = warn",
            "appender.file.type = File",
            "appender.file.name = FILE",
            f"appender.file.fileName = {self.dir / 'broker.log'}",
            "appender.file.layout.type = PatternLayout",
            "appender.file.layout.pattern = [%d] %p %m (%c)%n",
            "rootLogger.level = INFO",
            "rootLogger.appenderRef.file.ref = FILE",
            "logger.kafka.name = kafka",
            "logger.kafka.level = INFO",
            "logger.apache.name = org.apache.kafka",
            "logger.apache.level = WARN",
            "",
        ]))
        if not (data / "meta.properties").exists():
            java = str(java_home() / "bin" / "java")
            cp = self._classpath()
            uuid = subprocess.run([java, "-cp", cp, "kafka.tools.StorageTool", "random-uuid"],
                                  capture_output=True, text=True, check=True, env=java_env())
            cluster_id = uuid.stdout.strip().splitlines()[-1]
            fmt = subprocess.run([java, "-cp", cp, "kafka.tools.StorageTool", "format",
                                  "-t", cluster_id, "-c", str(props)],
                                 capture_output=True, text=True, env=java_env())
            if fmt.returncode != 0:
                raise ServiceError(f"kafka: storage format failed:\n{fmt.stdout}{fmt.stderr}")

    def commands(self) -> list[tuple[str, list[str], dict[str, str]]]:
        heap = self.cfg.services.kafka.heap_mb
        argv = [str(java_home() / "bin" / "java"), f"-Xms{heap}m", f"-Xmx{heap}m",
                "-XX:+UseG1GC", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
                "-cp", self._classpath(), "kafka.Kafka", str(self.dir / "server.properties")]
        return [("kafka", argv, java_env())]

    def healthy(self) -> bool:
        if not port_open(self.cfg.services.kafka.port):
            return False
        log = self.dir / "broker.log"
        return log.exists() and "Kafka Server started" in log.read_text(errors="replace")


class MlflowService(Service):
    """``mlflow server`` with one worker, a sqlite store and a local artifact root."""

    name = "mlflow"

    def ports(self) -> dict[str, int]:
        return {"mlflow.port": self.cfg.services.mlflow.port}

    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.cfg.services.mlflow.port}"

    def commands(self) -> list[tuple[str, list[str], dict[str, str]]]:
        (self.dir / "artifacts").mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "mlflow", "server",
                "--host", LOOPBACK, "--port", str(self.cfg.services.mlflow.port),
                "--workers", "1",
                "--backend-store-uri", f"sqlite:///{self.dir / 'mlflow.db'}",
                "--artifacts-destination", str(self.dir / "artifacts")]
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        return [("mlflow", argv, env)]

    def healthy(self) -> bool:
        code, _ = http_get(self.endpoint() + "/health")
        return code == 200


class ElasticsearchService(Service):
    """A real Elasticsearch 8.19 node embedded from Maven Central jars (infra/elasticsearch/)."""

    name = "elasticsearch"

    def ports(self) -> dict[str, int]:
        e = self.cfg.services.elasticsearch
        return {"elasticsearch.http_port": e.http_port, "elasticsearch.transport_port": e.transport_port}

    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.cfg.services.elasticsearch.http_port}"

    @staticmethod
    def jar_dir() -> Path:
        return cache_dir() / "jars" / "elasticsearch"

    @staticmethod
    def class_dir() -> Path:
        return cache_dir() / "elasticsearch-launcher"

    def build(self) -> None:
        """Resolve the jars and compile the launcher (+ a CDS archive) once; see infra/elasticsearch."""
        script = project_root() / "infra" / "elasticsearch" / "build.sh"
        proc = subprocess.run(["bash", str(script), str(self.jar_dir()), str(self.class_dir()), "--cds"],
                              capture_output=True, text=True, env=java_env())
        if proc.returncode != 0:
            raise ServiceError(f"elasticsearch: building the launcher failed:\n{proc.stdout}{proc.stderr}")

    def commands(self) -> list[tuple[str, list[str], dict[str, str]]]:
        e = self.cfg.services.elasticsearch
        classes = self.class_dir()
        cp = f"{classes / 'ctlake-es.jar'}{os.pathsep}{self.jar_dir() / '*'}"
        argv = [str(java_home() / "bin" / "java"), f"-XX:SharedArchiveFile={classes / 'ctlake-es.jsa'}",
                "-Xshare:auto", f"-Xms{e.heap_mb}m", f"-Xmx{e.heap_mb}m", "-XX:+UseG1GC",
                "-Djava.awt.headless=true", "-cp", cp, "org.elasticsearch.node.CtlakeElasticsearch",
                "--home", str(self.dir / "home"), "--http-port", str(e.http_port),
                "--transport-port", str(e.transport_port), "--cluster-name", "ctlake"]
        return [("elasticsearch", argv, java_env())]

    def healthy(self) -> bool:
        code, body = http_get(self.endpoint() + "/_cluster/health")
        if code != 200:
            return False
        try:
            return json.loads(body).get("status") in ("green", "yellow")
        except ValueError:
            return False


class SparkStandaloneService(Service):
    """A Spark standalone master and N one-core workers, via pyspark's own ``spark-class``."""

    name = "spark"

    def ports(self) -> dict[str, int]:
        s = self.cfg.services.spark
        out = {"spark.master_port": s.master_port, "spark.master_webui_port": s.master_webui_port}
        for i in range(s.workers):
            out[f"spark.worker_webui_port+{i}"] = s.worker_webui_port + i
        return out

    def endpoint(self) -> str:
        return f"spark://{LOOPBACK}:{self.cfg.services.spark.master_port}"

    @staticmethod
    def spark_home() -> Path:
        import pyspark

        return Path(pyspark.__file__).parent

    def commands(self) -> list[tuple[str, list[str], dict[str, str]]]:
        s = self.cfg.services.spark
        spark_class = str(self.spark_home() / "bin" / "spark-class")
        env = java_env({"SPARK_HOME": str(self.spark_home()), "SPARK_LOCAL_IP": LOOPBACK,
                        "PYSPARK_PYTHON": sys.executable, "SPARK_NO_DAEMONIZE": "1"})
        cmds = [("master", [spark_class, "org.apache.spark.deploy.master.Master",
                            "--host", LOOPBACK, "--port", str(s.master_port),
                            "--webui-port", str(s.master_webui_port)], env)]
        for i in range(s.workers):
            work = self.dir / f"worker-{i}"
            work.mkdir(parents=True, exist_ok=True)
            cmds.append((f"worker-{i}", [
                spark_class, "org.apache.spark.deploy.worker.Worker",
                "--host", LOOPBACK, "--cores", str(s.worker_cores), "--memory", s.worker_memory,
                "--webui-port", str(s.worker_webui_port + i), "--work-dir", str(work),
                self.endpoint()], env))
        return cmds

    def alive_workers(self) -> int:
        code, body = http_get(f"http://{LOOPBACK}:{self.cfg.services.spark.master_webui_port}/json/")
        if code != 200:
            return -1
        try:
            return int(json.loads(body).get("aliveworkers", 0))
        except ValueError:
            return -1

    def healthy(self) -> bool:
        return self.alive_workers() >= self.cfg.services.spark.workers


class HdfsService(Service):
    """A single-node HDFS (NameNode + DataNode) from Hadoop's MiniDFSCluster (infra/hdfs/), optional.

    The jars are the ``hdfs`` bundle (hadoop-client-minicluster 3.4.1, the version of pyspark 4.0.1's
    shaded Hadoop client); the launcher ``ctlake.hdfs.CtlakeMiniDfs`` is compiled with javac once per
    source/jar set into ``<cache>/hdfs-launcher/<hash>/``. Everything binds to 127.0.0.1, permissions are
    off, replication is 1; the file system is formatted on the first start only (no image in
    ``base/name-0-1``), so data survives a restart. Healthy = the launcher wrote its ready file
    (cluster up, out of safe mode) and the NameNode port answers.
    """

    name = "hdfs"

    def ports(self) -> dict[str, int]:
        h = self.cfg.services.hdfs
        return {"hdfs.port": h.port, "hdfs.http_port": h.http_port}

    def endpoint(self) -> str:
        return f"hdfs://{LOOPBACK}:{self.cfg.services.hdfs.port}"

    @staticmethod
    def _sources() -> list[Path]:
        return sorted((project_root() / "infra" / "hdfs" / "src").rglob("*.java"))

    def class_dir(self) -> Path:
        """Compiled launcher for the current sources and jar bundle (the folder name is their hash)."""
        import hashlib

        digest = hashlib.sha256(ensure_jars("hdfs").name.encode())
        for src in self._sources():
            digest.update(src.read_bytes())
        return cache_dir() / "hdfs-launcher" / digest.hexdigest()[:12]

    def build(self) -> None:
        import fcntl
        import tempfile

        jars = ensure_jars("hdfs")
        target = self.class_dir()
        if (target / "ctlake-hdfs.jar").exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target.parent / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two builds at once wait for each other
            if (target / "ctlake-hdfs.jar").exists():
                return
            tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
            jdk = java_home() / "bin"
            javac = subprocess.run([str(jdk / "javac"), "--release", "17", "-nowarn", "-encoding", "UTF-8",
                                    "-d", str(tmp / "classes"), "-cp", str(jars / "*"),
                                    *map(str, self._sources())], capture_output=True, text=True, env=java_env())
            if javac.returncode == 0:
                javac = subprocess.run([str(jdk / "jar"), "--create", "--file", str(tmp / "ctlake-hdfs.jar"),
                                        "-C", str(tmp / "classes"), "."], capture_output=True, text=True,
                                       env=java_env())
            if javac.returncode != 0:
                shutil.rmtree(tmp, ignore_errors=True)
                raise ServiceError(f"hdfs: compiling infra/hdfs/src failed:\n{javac.stdout}{javac.stderr}")
            shutil.rmtree(tmp / "classes")
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)

    def _ready_file(self) -> Path:
        return self.dir / "ready"

    def commands(self) -> list[tuple[str, list[str], dict[str, str]]]:
        h = self.cfg.services.hdfs
        cp = f"{self.class_dir() / 'ctlake-hdfs.jar'}{os.pathsep}{ensure_jars('hdfs') / '*'}"
        argv = [str(java_home() / "bin" / "java"), f"-Xms{min(h.heap_mb, 256)}m", f"-Xmx{h.heap_mb}m",
                "-XX:+UseG1GC", "-Djava.awt.headless=true", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                "-cp", cp, "ctlake.hdfs.CtlakeMiniDfs", "--base", str(self.dir / "base"),
                "--port", str(h.port), "--http-port", str(h.http_port), "--ready", str(self._ready_file())]
        return [("hdfs", argv, java_env())]

    def healthy(self) -> bool:
        try:
            pid = int(self._ready_file().read_text().strip())
        except (OSError, ValueError):
            return False
        return pid in self.pids() and port_open(self.cfg.services.hdfs.port)


SERVICES: dict[str, type[Service]] = {
    "kafka": KafkaService,
    "mlflow": MlflowService,
    "elasticsearch": ElasticsearchService,
    "spark": SparkStandaloneService,
    "hdfs": HdfsService,          # optional, not in DEFAULT_SERVICES: `ctlake infra up hdfs`
}
DEFAULT_SERVICES = ("kafka", "mlflow", "elasticsearch")


def resolve(cfg: Config, names: list[str] | tuple[str, ...] | None) -> list[Service]:
    """Service objects for ``names`` (default: Kafka, MLflow, Elasticsearch)."""
    names = list(names) if names else list(DEFAULT_SERVICES)
    unknown = [n for n in names if n not in SERVICES]
    if unknown:
        raise ServiceError(f"unknown service(s) {unknown}; known: {sorted(SERVICES)}")
    return [SERVICES[n](cfg) for n in names]


def up(cfg: Config, names=None, *, progress=None) -> list[Status]:
    return [svc.start(progress=progress) for svc in resolve(cfg, names)]


def prepare(cfg: Config, names=None, *, progress=None) -> None:
    """Fetch jars and build launchers for ``names`` (default: all) without starting them."""
    say = progress or (lambda msg: None)
    ensure_jars("spark")
    for svc in resolve(cfg, names or list(SERVICES)):
        svc.dir.mkdir(parents=True, exist_ok=True)
        svc.build()
        say(f"{svc.name}: prepared")


def down(cfg: Config, names=None, *, purge: bool = False) -> None:
    """Stop services (all known ones when ``names`` is empty); ``purge`` also deletes their data."""
    for svc in resolve(cfg, names or list(SERVICES)):
        svc.stop()
        if purge and svc.dir.exists():
            shutil.rmtree(svc.dir)


def status(cfg: Config, names=None) -> list[Status]:
    return [svc.status() for svc in resolve(cfg, names or list(SERVICES))]
