"""Walking a folder or a zip archive of DICOM files, one file at a time (pure, no Spark).

A zip is read entry by entry through :class:`zipfile.ZipFile` streams, so an archive of any size
never sits in memory whole; only one entry's bytes do (bounded by ``max_file_bytes``).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# DICOMDIR indexes and OS clutter are not instances.
_SKIP_NAMES = {"DICOMDIR", ".DS_Store", "Thumbs.db"}


@dataclass(frozen=True)
class SourceFile:
    """One candidate file. ``relpath`` is relative to the folder or archive root (posix)."""

    relpath: str
    size_bytes: int
    data: bytes


@dataclass(frozen=True)
class Oversized:
    """A file larger than ``max_file_bytes``: reported, never read whole."""

    relpath: str
    size_bytes: int


def _skip(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base or base in _SKIP_NAMES or base.startswith("._")


def count_files(source: Path) -> int:
    """How many candidate files ``source`` (folder or .zip) holds (for progress bars)."""
    source = Path(source)
    if source.is_dir():
        return sum(1 for root, _, files in os.walk(source) for f in files if not _skip(f))
    with zipfile.ZipFile(source) as zf:
        return sum(1 for i in zf.infolist() if not i.is_dir() and not _skip(i.filename))


def iter_source(source: Path, *, max_file_bytes: int = 2 * 1024**3) -> Iterator[SourceFile | Oversized]:
    """Yield every file under a folder (sorted, recursive) or in a zip archive (archive order)."""
    source = Path(source)
    if source.is_dir():
        for root, dirs, files in os.walk(source):
            dirs.sort()
            for name in sorted(files):
                if _skip(name):
                    continue
                path = Path(root) / name
                rel = path.relative_to(source).as_posix()
                size = path.stat().st_size
                if size > max_file_bytes:
                    yield Oversized(rel, size)
                    continue
                yield SourceFile(rel, size, path.read_bytes())
    elif zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as zf:
            for info in zf.infolist():
                if info.is_dir() or _skip(info.filename):
                    continue
                if info.file_size > max_file_bytes:
                    yield Oversized(info.filename, info.file_size)
                    continue
                with zf.open(info) as fh:
                    yield SourceFile(info.filename, info.file_size, fh.read())
    elif source.is_file():
        yield SourceFile(source.name, source.stat().st_size, source.read_bytes())
    else:
        raise FileNotFoundError(f"{source}: not a folder, zip archive or file")
