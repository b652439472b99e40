"""Jupyter notebooks → Apache Zeppelin notes (``.zpln``), for users who work in Zeppelin.

Each notebook ``notebooks/<name>.ipynb`` becomes ``<DIR>/<name>_<noteId>.zpln``: the JSON that Zeppelin
0.10's ``Note``/``Paragraph`` classes read with Gson (the note's ``paragraphs``, ``name``, ``id``,
``defaultInterpreterGroup``, ``version``, ``noteParams``, ``noteForms``, ``angularObjects``, ``config``,
``info``; each paragraph's ``title``, ``text``, ``user``, ``dateUpdated``, ``progress``, ``config``,
``settings``, ``apps``, ``runtimeInfos``, ``progressUpdateIntervalMs``, ``jobName``, ``id``,
``dateCreated``, ``status``). One cell is one paragraph, in order:

- code cell → ``%spark.pyspark`` + the code. Zeppelin's Spark interpreter predefines ``spark``; ctlake's
  ``get_spark()`` returns that active session, so the same code runs in both. IPython-only lines
  (``%magic``, ``%%cell_magic``, ``!shell``) are kept as comments (``# [jupyter] …``).
- markdown cell → ``%md`` + the text (editor hidden, as Zeppelin shows rendered markdown);
- raw cell → ``%md`` with the text in a fenced block.

Outputs are not exported (the notebooks are stored stripped). The note id is derived from the notebook's
file name, so a re-export replaces the same file and keeps links to the note. Pure Python: no Zeppelin
is needed to export; tests/integration/test_zeppelin.py loads the notes into a real zeppelin-server.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

from ctlake.errors import CtlakeError

ZEPPELIN_VERSION = "0.10.0"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_MAGIC_PREFIXES = ("%", "!")


class NotebookError(CtlakeError):
    """A notebook cannot be read or exported (not nbformat 4 JSON, not a Python notebook)."""

    code = "NOTEBOOK_INVALID"


def note_id(key: str) -> str:
    """A Zeppelin-style note id (9 characters, digits and capitals, like ``2EWM84JXA``) derived from ``key``."""
    n = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    chars = []
    for _ in range(8):
        n, r = divmod(n, 36)
        chars.append(_ALPHABET[r])
    return "2" + "".join(chars)


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def pyspark_text(code: str) -> str:
    """The paragraph text of a code cell: ``%spark.pyspark`` and the code, IPython-only lines commented out."""
    lines = [f"# [jupyter] {line}" if line.lstrip().startswith(_MAGIC_PREFIXES) else line
             for line in code.split("\n")]
    return "%spark.pyspark\n" + "\n".join(lines)


def _editor(language: str, *, hidden: bool) -> dict:
    return {"editorSetting": {"language": language, "editOnDblClick": hidden, "completionKey": "TAB",
                              "completionSupport": not hidden},
            "colWidth": 12.0, "editorMode": f"ace/mode/{language}", "fontSize": 9.0, "editorHide": hidden,
            "title": False, "results": {}, "enabled": True}


def _paragraph(text: str, index: int, note: str, config: dict, stamp: str, title: str | None) -> dict:
    pid = f"paragraph_{int(note_id(note + str(index))[1:], 36) % 10**13}_{index}"
    if title:
        config = {**config, "title": True}
    return {"title": title or "", "text": text, "user": "anonymous", "dateUpdated": stamp, "progress": 0,
            "config": config, "settings": {"params": {}, "forms": {}}, "apps": [], "runtimeInfos": {},
            "progressUpdateIntervalMs": 500, "jobName": pid, "id": pid, "dateCreated": stamp, "status": "READY"}


def read_notebook(path: Path) -> dict:
    try:
        nb = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise NotebookError(f"{path}: not a readable notebook: {exc}") from None
    if not isinstance(nb, dict) or nb.get("nbformat") != 4 or not isinstance(nb.get("cells"), list):
        raise NotebookError(f"{path}: not an nbformat 4 notebook")
    language = ((nb.get("metadata") or {}).get("kernelspec") or {}).get("language") or \
        ((nb.get("metadata") or {}).get("language_info") or {}).get("name") or "python"
    if language != "python":
        raise NotebookError(f"{path}: a {language} notebook; only Python notebooks export to %spark.pyspark")
    return nb


def notebook_to_note(nb: dict, name: str, *, source: str = "", now: dt.datetime | None = None) -> dict:
    """The Zeppelin note (a JSON-able dict) for a parsed notebook ``nb`` named ``name``."""
    nid = note_id(name)
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    paragraphs = []
    for i, cell in enumerate(nb["cells"]):
        kind, text = cell.get("cell_type"), _source(cell)
        tags = set((cell.get("metadata") or {}).get("tags") or [])
        title = "Parameters" if "parameters" in tags else None
        if kind == "code":
            paragraphs.append(_paragraph(pyspark_text(text), i, nid, _editor("python", hidden=False), stamp, title))
        elif kind == "markdown":
            paragraphs.append(_paragraph("%md\n" + text, i, nid, _editor("markdown", hidden=True), stamp, title))
        elif kind == "raw":
            paragraphs.append(_paragraph("%md\n```\n" + text + "\n```", i, nid, _editor("markdown", hidden=True),
                                         stamp, title))
        else:
            raise NotebookError(f"{name}: cell {i} has an unknown cell_type {kind!r}")
    return {"paragraphs": paragraphs, "name": name, "id": nid, "defaultInterpreterGroup": "spark",
            "version": ZEPPELIN_VERSION, "noteParams": {}, "noteForms": {}, "angularObjects": {},
            "config": {"isZeppelinNotebookCronEnable": False},
            "info": {"ctlakeSource": source} if source else {}}


def zpln_name(note: dict) -> str:
    """``<name>_<noteId>.zpln`` (Zeppelin's VFS notebook repo layout for a note at ``/<name>``)."""
    return f"{note['name']}_{note['id']}.zpln"


def export_zeppelin(src: Path, out: Path, *, now: dt.datetime | None = None) -> list[Path]:
    """Write every ``*.ipynb`` under ``src`` (a folder, or one notebook) as a ``.zpln`` note into ``out``."""
    src, out = Path(src), Path(out)
    notebooks = [src] if src.is_file() else sorted(p for p in src.glob("*.ipynb") if p.is_file())
    if not notebooks:
        raise NotebookError(f"no Jupyter notebooks (*.ipynb) in {src}", code="NO_NOTEBOOKS")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in notebooks:
        note = notebook_to_note(read_notebook(path), path.stem, source=path.name, now=now)
        target = out / zpln_name(note)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(note, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.replace(target)
        written.append(target)
    return written
