"""Append only the rows whose key is not in a Delta table yet, safe against concurrent writers.

An insert-only MERGE does this too, but it joins its whole source with the target (for bronze, a
sort-merge anti-join that shuffles every DICOM byte of the batch: most of an ingest's time). Used by
the ingest (bronze, quarantine) and the radiomics job. Here instead:

1. the keys of a batch are decided on the driver against a narrow read of the target's key
   columns at a pinned version ``v`` (:func:`present`);
2. the rows whose key was absent at ``v`` are appended: a blind append, optionally idempotent
   through Delta's ``txnAppId``/``txnVersion`` (a replayed micro-batch adds nothing);
3. if a commit other than ours landed after ``v`` (:func:`raced`), a concurrent writer may have
   appended the same keys between our read and our commit: :func:`settle` reads those keys again
   and, where one is there twice, keeps the first row by a fixed rank and deletes the others
   (MERGE … WHEN MATCHED DELETE on their row identities). Every writer that looks picks the same
   survivor, so two writers settling at once agree, and Delta serialises their deletes (a conflict
   is retried); a key that is there twice is also settled by the next batch that reads it, so a
   writer killed between its append and its settle leaves nothing behind for good.

Between steps 2 and 3 a reader can see such a key twice (only when two writers raced on it, and
only for the seconds the settle takes); a single writer never produces a duplicate.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ctlake.config import Config
from ctlake.lake import delta

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, Row, SparkSession


@dataclass(frozen=True)
class Spec:
    """How rows of one table are told apart and ranked.

    ``key``: the table's key column. ``ident``: columns that identify one row among the rows of
    one key (unique per writer and batch: they include the ingest run id). ``columns``: what
    :func:`present` reads (key, ident and whatever ``rank`` needs). ``rank(row)``: the smallest
    stays when a key is there twice.
    """

    table: str
    key: str
    ident: tuple[str, ...]
    columns: tuple[str, ...]
    rank: Callable[[Any], tuple]


def present(spark: SparkSession, cfg: Config, spec: Spec, keys: Iterable[str], *,
            where: str | None = None) -> tuple[int, list[Row]]:
    """(``v``, rows of ``spec.columns`` whose key is in ``keys``): ``v`` is the version seen before
    the read (-1: no table yet); the read itself sees ``v`` or later, which only makes
    :func:`raced` more careful (a time-travel read pinned at ``v`` costs a log replay more).
    ``where``: a SQL condition that scopes the key (e.g. ``params_hash = '…'`` where the table's
    key is (roi_id, params_hash)): only rows that meet it count."""
    from pyspark.sql import functions as F

    path = cfg.table_path(spec.table)
    version = delta.version(spark, path)
    keys = sorted(set(keys))
    if version < 0 or not keys:
        return version, []
    table = spark.read.format("delta").load(path)
    if where:
        table = table.filter(where)
    rows = table.select(*spec.columns).filter(F.col(spec.key).isin(keys)).collect()
    return version, rows


def raced(spark: SparkSession, cfg: Config, spec: Spec, read_version: int) -> bool:
    """Whether a commit other than our one append landed after ``read_version`` (a table created
    by the append counts its creation commit as ours)."""
    ours = read_version + 1 if read_version >= 0 else 1
    return delta.version(spark, cfg.table_path(spec.table)) > ours


def doubled(rows: Iterable[Row], spec: Spec) -> dict[str, list[Row]]:
    """Keys that are there more than once, each with its rows sorted by rank (survivor first)."""
    groups: dict[str, list] = {}
    for r in rows:
        groups.setdefault(r[spec.key], []).append(r)
    return {k: sorted(g, key=spec.rank) for k, g in groups.items() if len(g) > 1}


def settle(spark: SparkSession, cfg: Config, spec: Spec, keys: Iterable[str], *,
           before_delete: Callable[[list[Row], dict[str, Row]], None] | None = None,
           retries: int = 8, where: str | None = None) -> int:
    """Where a key of ``keys`` is in the table more than once, delete all but the first by rank.

    ``before_delete(losers, survivor_by_key)`` runs first (e.g. to quarantine losers that carry
    other bytes), so a writer killed in between loses nothing. Idempotent; returns how many rows
    were deleted. ``where``: as for :func:`present` (``spec.ident`` must then include the scope's
    columns, so that the delete touches no row outside it).
    """
    from delta.tables import DeltaTable

    keys = sorted(set(keys))
    if not keys:
        return 0
    _, rows = present(spark, cfg, spec, keys, where=where)
    groups = doubled(rows, spec)
    if not groups:
        return 0
    losers, survivors = [], {}
    for k, g in groups.items():
        survivors[k] = g[0]
        first = tuple(g[0][c] for c in spec.ident)
        # rows identical in every identifying column cannot be told apart: never delete both
        losers += [r for r in g[1:] if tuple(r[c] for c in spec.ident) != first]
    if not losers:
        return 0
    if before_delete is not None:
        before_delete(losers, survivors)
    schema = spark.read.format("delta").load(cfg.table_path(spec.table)).select(*spec.ident).schema
    gone = spark.createDataFrame([tuple(r[c] for c in spec.ident) for r in losers], schema)
    cond = " AND ".join(f"t.`{c}` <=> s.`{c}`" for c in spec.ident)
    for attempt in range(retries + 1):
        try:
            DeltaTable.forPath(spark, cfg.table_path(spec.table)).alias("t") \
                .merge(gone.alias("s"), cond).whenMatchedDelete().execute()
            break
        except Exception as exc:  # noqa: BLE001 - only Delta's write conflicts are retried
            if attempt == retries or not delta._is_write_conflict(exc):  # noqa: SLF001
                raise
            time.sleep(min(8.0, 0.25 * 2**attempt) * (1 + random.random()))  # noqa: S311
    return len(losers)


def append_new(spark: SparkSession, cfg: Config, df: DataFrame, spec: Spec, *, read_version: int,
               txn: tuple[str, int] | None = None, options: dict[str, str] | None = None,
               before_delete: Callable[[list[Row], dict[str, Row]], None] | None = None,
               keys: Iterable[str] = (), where: str | None = None) -> tuple[int, int]:
    """Append ``df`` (rows whose ``keys`` were absent at ``read_version``), then settle a race
    (``where``: the key's scope, see :func:`present`).

    Returns (version after the append, rows deleted by the settle).
    """
    result = delta.write(spark, cfg, df, spec.table, mode="append", count=False, txn=txn, options=options)
    removed = 0
    if raced(spark, cfg, spec, read_version):
        removed = settle(spark, cfg, spec, keys, before_delete=before_delete, where=where)
    return result.version, removed
