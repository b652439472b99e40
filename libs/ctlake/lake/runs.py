"""``ops.pipeline_runs``: one row per job run (inputs' Delta versions, rows in/out, status, timing)."""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING

from ctlake.config import Config
from ctlake.lake import delta
from ctlake.lake.schemas import PIPELINE_RUNS

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def utcnow() -> dt.datetime:
    """Naive UTC now (Spark sessions run with spark.sql.session.timeZone=UTC)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def record_run(spark: SparkSession, cfg: Config, *, run_id: str, job: str, started: dt.datetime,
               status: str, rows_in: int, rows_out: int, output_versions: dict, params: dict,
               error: str | None = None, txn: tuple[str, int] | None = None,
               input_versions: dict | None = None) -> None:
    """Append one ``ops.pipeline_runs`` row. ``txn`` = (app id, version): Delta skips the append
    when that pair was already committed, so a replayed micro-batch records its run once.
    ``input_versions``: table -> Delta version the run read (default: none recorded)."""
    ended = utcnow()
    row = [(run_id, job, status, started, ended, (ended - started).total_seconds(), rows_in, rows_out,
            input_versions or {}, output_versions, json.dumps(params, default=str), error, cfg.profile)]
    from ctlake.spark import local_frame

    # a local relation: the append is one task and starts no Python worker
    delta.write(spark, cfg, local_frame(spark, row, PIPELINE_RUNS), "ops.pipeline_runs", mode="append",
                count=False, txn=txn)
