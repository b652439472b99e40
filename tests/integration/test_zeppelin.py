"""`ctlake notebooks export --zeppelin DIR` → a real zeppelin-server 0.10.0 (from Maven Central jars, REST API
only, on 127.0.0.1) loads every exported note; its REST API returns every paragraph with the same code.

What this does NOT test: running the paragraphs. Zeppelin 0.10 has no Spark 4 interpreter and no
interpreter is installed here (see README, "Zeppelin")."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TEST_NOTEBOOKS = ROOT / "tests" / "data" / "notebooks"
LOG4J = """log4j.rootLogger = INFO, stdout
log4j.appender.stdout = org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout = org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern = %5p [%d] (%F:%L) - %m%n
"""


def expected_paragraphs(path: Path) -> list[tuple[str, str]]:
    """(title, text) per cell, written out here independently of ctlake.notebooks."""
    out = []
    for cell in json.loads(path.read_text())["cells"]:
        src = "".join(cell["source"])
        title = "Parameters" if "parameters" in cell["metadata"].get("tags", []) else ""
        if cell["cell_type"] == "markdown":
            out.append((title, "%md\n" + src))
        elif cell["cell_type"] == "raw":
            out.append((title, "%md\n```\n" + src + "\n```"))
        else:
            lines = ["# [jupyter] " + x if x.lstrip()[:1] in ("%", "!") else x for x in src.split("\n")]
            out.append((title, "%spark.pyspark\n" + "\n".join(lines)))
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 (loopback)
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, list[Path]]:
    """The test notebook, plus every notebook in notebooks/, exported into one Zeppelin notebook folder."""
    from ctlake.notebooks import export_zeppelin

    out = tmp_path_factory.mktemp("zeppelin-notebooks")
    sources = sorted(TEST_NOTEBOOKS.glob("*.ipynb")) + sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert sources
    for src in sources:
        export_zeppelin(src, out)
    return out, sources


@pytest.fixture(scope="module")
def zeppelin(exported, tmp_path_factory):
    from ctlake.infra.jars import ensure_jars
    from ctlake.infra.java import java_home

    notebook_dir, _ = exported
    home = tmp_path_factory.mktemp("zeppelin-home")
    for sub in ("conf", "war", "interpreter", "index", "plugins"):
        (home / sub).mkdir()
    (home / "conf" / "log4j.properties").write_text(LOG4J)
    port = _free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
           "ZEPPELIN_IDENT_STRING": "ctlake-test",        # without it the server exits once stdin is closed
           "ZEPPELIN_HOME": str(home), "ZEPPELIN_CONF_DIR": str(home / "conf"), "ZEPPELIN_ADDR": "127.0.0.1",
           "ZEPPELIN_PORT": str(port), "ZEPPELIN_NOTEBOOK_DIR": str(notebook_dir),
           "ZEPPELIN_WAR": str(home / "war"), "ZEPPELIN_ANGULAR_WAR": str(home / "war"),   # no web UI
           "ZEPPELIN_INTERPRETER_DIR": str(home / "interpreter"), "ZEPPELIN_PLUGINS_DIR": str(home / "plugins"),
           "ZEPPELIN_SEARCH_INDEX_PATH": str(home / "index")}
    argv = [str(java_home() / "bin" / "java"), "-Xmx512m",
            f"-Dlog4j.configuration=file:{home / 'conf' / 'log4j.properties'}",
            "-cp", str(ensure_jars("zeppelin") / "*"), "org.apache.zeppelin.server.ZeppelinServer"]
    log = open(home / "server.log", "wb")  # noqa: SIM115 - the child writes it
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                            cwd=home, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, (home / "server.log").read_text()[-4000:]
            try:
                if _get(base + "/api/version")["body"]["version"] == "0.10.0":
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, (home / "server.log").read_text()[-4000:]
            time.sleep(1)
        yield base
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass
        log.close()
        print((home / "server.log").read_text()[-2000:], file=sys.stderr)


def test_every_note_and_paragraph_is_served_with_the_same_code(exported, zeppelin):
    notebook_dir, sources = exported
    files = sorted(notebook_dir.glob("*.zpln"))
    assert len(files) == len(sources)
    listed = {n["id"]: n["path"] for n in _get(zeppelin + "/api/notebook")["body"]}
    for src in sources:
        (file,) = [f for f in files if f.name.startswith(src.stem + "_")]
        note_id = file.stem.rsplit("_", 1)[1]
        assert listed.get(note_id) == "/" + src.stem, listed
        note = _get(f"{zeppelin}/api/notebook/{note_id}")["body"]
        assert note["name"] == src.stem and note["defaultInterpreterGroup"] == "spark"
        got = [(p.get("title", ""), p["text"]) for p in note["paragraphs"]]
        assert got == expected_paragraphs(src), src
        stored = json.loads(file.read_text())
        assert [p["id"] for p in note["paragraphs"]] == [p["id"] for p in stored["paragraphs"]]
        assert all(p["status"] == "READY" for p in note["paragraphs"])
        kinds = [p["text"].split("\n", 1)[0] for p in note["paragraphs"]]
        assert set(kinds) <= {"%md", "%spark.pyspark"}
        assert all(p["config"]["editorHide"] == (k == "%md") for p, k in zip(note["paragraphs"], kinds, strict=True))
        # a single paragraph reads back the same way
        first = note["paragraphs"][0]
        one = _get(f"{zeppelin}/api/notebook/{note_id}/paragraph/{first['id']}")["body"]
        assert one["text"] == first["text"]


def test_the_smoke_notebook_covers_every_cell_kind():
    """The test notebook exercises markdown, parameters, magics, shell lines, raw cells and non-ASCII text."""
    cells = expected_paragraphs(TEST_NOTEBOOKS / "smoke.ipynb")
    texts = "\n".join(t for _, t in cells)
    assert ("Parameters", cells[1][1]) == cells[1]
    assert "# [jupyter] %matplotlib inline" in texts and "# [jupyter] !echo" in texts
    assert "%md\n```\nA raw cell" in texts and "−1000 HU" in texts


def test_export_is_stable_and_refuses_what_it_cannot_convert(tmp_path):
    from ctlake.notebooks import NotebookError, export_zeppelin

    first = export_zeppelin(TEST_NOTEBOOKS, tmp_path / "a")
    again = export_zeppelin(TEST_NOTEBOOKS, tmp_path / "a")
    assert [p.name for p in first] == [p.name for p in again] and len(list((tmp_path / "a").iterdir())) == 1
    r = tmp_path / "r.ipynb"
    r.write_text(json.dumps({"nbformat": 4, "nbformat_minor": 4, "cells": [],
                             "metadata": {"kernelspec": {"name": "ir", "language": "R"}}}))
    with pytest.raises(NotebookError, match="R notebook"):
        export_zeppelin(r, tmp_path / "b")
    with pytest.raises(NotebookError, match="no Jupyter notebooks"):
        export_zeppelin(tmp_path / "b", tmp_path / "c")
