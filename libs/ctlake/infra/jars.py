"""JVM artefacts from Maven Central, resolved once into the cache.

Each bundle is a folder under ``infra/jvm/`` with a ``pom.xml`` (Elasticsearch's launcher resolves
its own jars in infra/elasticsearch/build.sh);
``mvn dependency:copy-dependencies`` copies its jars into ``<cache>/jars/<bundle>-<pom hash>/``.
A changed pom gets a new folder, so stale jars are never mixed in. Nothing is downloaded when a
SparkSession or a service starts once the bundle is there.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ctlake.errors import SetupError
from ctlake.infra.java import cache_dir, java_env, project_root

BUNDLES = {
    "spark": "infra/jvm/spark/pom.xml",
    "kafka": "infra/jvm/kafka/pom.xml",
    "hdfs": "infra/hdfs/pom.xml",   # MiniDFSCluster; its launcher: infra/hdfs/src, HdfsService
    "zeppelin": "infra/zeppelin/pom.xml",   # zeppelin-server 0.10 (tests/integration/test_zeppelin.py)
}
_MARKER = ".complete"


def pom_path(bundle: str) -> Path:
    if bundle not in BUNDLES:
        raise SetupError(f"unknown jar bundle {bundle!r}; known: {sorted(BUNDLES)}")
    path = project_root() / BUNDLES[bundle]
    if not path.is_file():
        # ctlake imported from a wheel/zip (spark-submit --py-files): the poms are in the checkout
        # that holds the conf/ folder in use
        from ctlake.config import find_conf_dir
        from ctlake.errors import ConfigError

        try:
            alt = find_conf_dir().parent / BUNDLES[bundle]
        except ConfigError:
            return path
        if alt.is_file():
            return alt
    return path


def bundle_dir(bundle: str) -> Path:
    """Where the jars of ``bundle`` live (whether or not they are there yet)."""
    digest = hashlib.sha256(pom_path(bundle).read_bytes()).hexdigest()[:12]
    return cache_dir() / "jars" / f"{bundle}-{digest}"


def ensure_jars(bundle: str, *, quiet: bool = True) -> Path:
    """Resolve ``bundle``'s jars into the cache if they are not there; return the folder."""
    target = bundle_dir(bundle)
    if (target / _MARKER).exists():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise SetupError("Maven (mvn) is not on PATH", hint="install maven (apt-get install maven)")
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"[ctlake] resolving {bundle} jars from Maven Central into {target} ...", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix=f".{bundle}-", dir=target.parent))
    cmd = [mvn, "-B", "-f", str(pom_path(bundle)), "dependency:copy-dependencies",
           f"-DoutputDirectory={tmp}", "-DincludeScope=runtime"]
    if quiet:
        cmd.insert(1, "-q")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=java_env())
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise SetupError(f"mvn could not resolve the {bundle} jars:\n{tail}",
                         hint="check that Maven Central is reachable (mvn -v; ~/.m2/settings.xml)")
    (tmp / _MARKER).write_text("ok\n")
    try:
        tmp.rename(target)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def jar_files(bundle: str) -> list[Path]:
    """The jar files of ``bundle``, resolving them first if needed."""
    return sorted(ensure_jars(bundle).glob("*.jar"))
