"""Finding a Java 17 runtime and the project's build caches (outside the repository)."""

from __future__ import annotations

import os
import re
import subprocess
from functools import lru_cache
from pathlib import Path

from ctlake.errors import SetupError

REQUIRED_JAVA_MAJOR = 17


def cache_dir() -> Path:
    """Big caches shared by every clone on this machine: ``$CTLAKE_CACHE`` or ``~/.cache/ctlake``."""
    path = Path(os.environ.get("CTLAKE_CACHE", Path.home() / ".cache" / "ctlake")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def project_root() -> Path:
    """The source checkout that holds ``infra/`` (libs/ctlake/infra/java.py → three levels up)."""
    return Path(__file__).resolve().parents[3]


def _java_major(java: Path) -> int | None:
    try:
        out = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2)) if major == 1 and m.group(2) else major


@lru_cache(maxsize=1)
def java_home() -> Path:
    """A JDK 17 home: ``$JAVA_HOME`` if it is 17, else the first 17 under /usr/lib/jvm.

    Spark 4.0 does not run on newer JDKs (e.g. the Temurin 25 also installed on our machines).
    """
    candidates: list[Path] = []
    if os.environ.get("JAVA_HOME"):
        candidates.append(Path(os.environ["JAVA_HOME"]))
    jvm = Path("/usr/lib/jvm")
    if jvm.is_dir():
        candidates += sorted(p for p in jvm.iterdir() if "17" in p.name and p.is_dir())
    for home in candidates:
        java = home / "bin" / "java"
        if java.exists() and _java_major(java) == REQUIRED_JAVA_MAJOR:
            return home.resolve()
    raise SetupError(
        f"no Java {REQUIRED_JAVA_MAJOR} found (looked at $JAVA_HOME and /usr/lib/jvm/*17*)",
        hint="install openjdk-17-jdk-headless and/or set JAVA_HOME to it",
    )


def java_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The current environment with JAVA_HOME/PATH pointing at Java 17."""
    env = dict(os.environ)
    home = java_home()
    env["JAVA_HOME"] = str(home)
    env["PATH"] = f"{home / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra or {})
    return env
