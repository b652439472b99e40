"""What every benchmark records beside its numbers: the machine and the package versions."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
from pathlib import Path


def machine() -> dict:
    """Platform, Python, CPU count and model (from /proc/cpuinfo where there is one)."""
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "cpu_model": cpu}


def versions(*packages: str) -> dict:
    """Installed versions of ``packages`` (distribution names)."""
    return {p: md.version(p) for p in packages}


def write_result(out: str | Path, result: dict) -> None:
    """Write ``result`` as indented JSON to ``out`` (folders created) and print it."""
    import json

    text = json.dumps(result, indent=2)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text + "\n")
    print(text)
