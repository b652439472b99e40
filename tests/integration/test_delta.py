"""Delta on the local filesystem through the real Spark: write, MERGE, time travel."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from ctlake.config import LakeConfig
from ctlake.lake import delta

pytestmark = pytest.mark.integration


def _runs(spark, rows):
    from ctlake.lake.schemas import PIPELINE_RUNS

    now = dt.datetime(2026, 1, 1, 12, 0, 0)
    data = [(rid, job, status, now, None, dur, rin, rout, {"bronze.x": 3}, None, None, None, "test")
            for rid, job, status, dur, rin, rout in rows]
    return spark.createDataFrame(data, PIPELINE_RUNS)


def test_write_merge_time_travel(spark, cfg, lake_tmp):
    cfg = dataclasses.replace(cfg, lake=LakeConfig(root=str(lake_tmp)))
    first = delta.write(spark, cfg, _runs(spark, [("r1", "a", "failed", 1.0, 10, 0),
                                                   ("r2", "b", "succeeded", 2.0, 5, 5)]),
                        "ops.pipeline_runs")
    assert first.rows == 2
    v_first = first.version
    # MERGE: r1 is updated, r3 inserted, r2 untouched
    second = delta.write(spark, cfg, _runs(spark, [("r1", "a", "succeeded", 1.5, 10, 10),
                                                    ("r3", "c", "succeeded", 3.0, 1, 1)]),
                         "ops.pipeline_runs")
    assert second.version == v_first + 1
    now = {r.run_id: r for r in delta.read(spark, cfg, "ops.pipeline_runs").collect()}
    assert sorted(now) == ["r1", "r2", "r3"]
    assert now["r1"].status == "succeeded" and now["r1"].rows_out == 10
    assert now["r2"].status == "succeeded"
    assert now["r1"].input_versions == {"bronze.x": 3}
    # time travel: the first version still has the old r1 and no r3
    old = {r.run_id: r for r in delta.read(spark, cfg, "ops.pipeline_runs", as_of=v_first).collect()}
    assert sorted(old) == ["r1", "r2"]
    assert old["r1"].status == "failed"
    # insert_new is a no-op on a replay, and does not touch matched rows
    third = delta.write(spark, cfg, _runs(spark, [("r1", "a", "failed", 9.0, 0, 0)]),
                        "ops.pipeline_runs", mode="insert_new")
    after = {r.run_id: r for r in delta.read(spark, cfg, "ops.pipeline_runs").collect()}
    assert len(after) == 3 and after["r1"].status == "succeeded"
    assert third.version >= second.version
    history = spark.sql(f"DESCRIBE HISTORY delta.`{cfg.table_path('ops.pipeline_runs')}`").collect()
    assert {"MERGE"} <= {h.operation for h in history}


def test_writer_enforces_declared_schema(spark, cfg, lake_tmp):
    cfg = dataclasses.replace(cfg, lake=LakeConfig(root=str(lake_tmp)))
    df = spark.createDataFrame([("r1", "job")], "run_id string, job string")
    from pyspark.errors import AnalysisException

    with pytest.raises(AnalysisException):  # missing declared columns are an error, not a new schema
        delta.write(spark, cfg, df, "ops.pipeline_runs")
    with pytest.raises(KeyError, match="declared tables"):
        delta.write(spark, cfg, df, "ops.no_such_table")


def test_local_frame_holds_the_same_rows_as_create_dataframe_in_a_local_relation(spark):
    """The driver-side lookup frames (the radiomics plan, the run record) go through Arrow into a
    local relation; every column type they use must come out as createDataFrame gives it."""
    from ctlake.lake.schemas import PIPELINE_RUNS
    from ctlake.spark import local_frame

    when = dt.datetime(2026, 3, 4, 5, 6, 7, 890123)
    runs = [("r1", "job", "succeeded", when, when, 0.5, 2**40, -1, {}, {"gold.a": 3}, '{"k": 1}', None, "test"),
            ("r2", "job", "failed", when, None, None, 0, 0, {"silver.b": 1}, None, "{}", "boom", "test")]
    got = local_frame(spark, runs, PIPELINE_RUNS)
    assert got._jdf.queryExecution().analyzed().getClass().getSimpleName() == "LocalRelation"
    assert got.schema == PIPELINE_RUNS
    assert got.collect() == spark.createDataFrame(runs, PIPELINE_RUNS).collect()
    keys = local_frame(spark, [("1.2.3", 7), ("1.2.4", -(2**62))], "series_instance_uid string, _part bigint")
    assert [tuple(r) for r in keys.collect()] == [("1.2.3", 7), ("1.2.4", -(2**62))]
    empty = local_frame(spark, [], "nodule_id string, _part bigint")
    assert empty.collect() == [] and empty.schema.fieldNames() == ["nodule_id", "_part"]
