"""gold.nodules + silver.ct_volumes → gold.radiomics_features with the real Spark and Delta.

The inputs are written here with the declared schemas: two synthetic series (int16 HU with textured
spheres, stored as CTT1 slabs of 8 slices) and gold.nodules rows with sphere masks, plus ROIs that
must fail (an empty mask, damaged mask bytes, a series without a volume) and an upstream failure
that must be ignored."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from ctlake.config import LakeConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SLAB = 8
PAD = 5


def _volume(rng: np.random.Generator, shape_zyx, spacing_zyx_mm, spheres):
    """int16 HU: lung-like background with noise, plus textured spheres (centre voxel, diameter mm)."""
    from ctlake.synth import nodule_sphere_mask
    from scipy import ndimage

    hu = -820.0 + 25.0 * rng.normal(size=shape_zyx)
    for centre, diameter in spheres:
        inside = nodule_sphere_mask(shape_zyx, spacing_zyx_mm, np.multiply(centre, spacing_zyx_mm), diameter)
        texture = ndimage.gaussian_filter(rng.normal(size=shape_zyx), 1.0) * 150.0
        hu = np.where(inside, 30.0 + texture, hu)
    return np.clip(np.round(hu), -1000, 400).astype(np.int16)


def _mask(shape_zyx, spacing_zyx_mm, centre, diameter):
    """Sphere mask as a crop: (origin_zyx, uint8 array) of its bounding box plus one voxel."""
    from ctlake.synth import nodule_sphere_mask

    full = nodule_sphere_mask(shape_zyx, spacing_zyx_mm, np.multiply(centre, spacing_zyx_mm), diameter)
    nz = np.nonzero(full)
    lo = [max(0, int(a.min()) - 1) for a in nz]
    hi = [min(s, int(a.max()) + 2) for a, s in zip(nz, shape_zyx, strict=True)]
    return lo, full[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))].astype(np.uint8)


def _rows(schema, dicts):
    return [tuple(d.get(f.name) for f in schema.fields) for d in dicts]


def _write_inputs(spark, cfg):
    """Two series in silver.ct_volumes, six ROIs (+ one upstream failure) in gold.nodules.
    Returns {nodule_id: (volume, spacing, origin, mask)} for the ROIs expected to succeed."""
    from ctlake.lake import codec, delta
    from ctlake.lake.runs import utcnow
    from ctlake.lake.schemas import CT_VOLUMES, NODULES

    rng = np.random.default_rng(5)
    now = utcnow()
    series = {
        "1.2.826.0.1.1": ((64, 56, 56), (1.0, 0.8, 0.8), [((12, 20, 22), 9.0), ((30, 34, 30), 13.0)]),
        "1.2.826.0.1.2": ((40, 48, 48), (1.25, 0.7, 0.7), [((20, 24, 24), 15.0)]),
    }
    slab_rows, nodule_rows, expected = [], [], {}
    for uid, (shape, spacing, spheres) in series.items():
        vol = _volume(rng, shape, spacing, spheres)
        for i, z0 in enumerate(range(0, shape[0], SLAB)):
            slab = vol[z0:z0 + SLAB]
            slab_rows.append({"series_instance_uid": uid, "slab_index": i, "z0": z0, "z1": z0 + slab.shape[0],
                              "dtype": "int16", "slab_shape_zyx": list(slab.shape), "codec": "CTT1",
                              "data": codec.encode(slab), "volume_shape_zyx": list(shape),
                              "spacing_zyx_mm": list(spacing), "origin_xyz_mm": [0.0, 0.0, 0.0],
                              "direction": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0], "run_id": "volumes-run"})
        for k, (centre, diameter) in enumerate(spheres):
            origin, mask = _mask(shape, spacing, centre, diameter)
            nid = f"{uid[-1]}-nodule-{k}"
            expected[nid] = (vol, spacing, origin, mask)
            nodule_rows.append(_nodule(uid, nid, origin, mask, spacing, now))
    uid = "1.2.826.0.1.2"
    empty = np.zeros((5, 5, 5), dtype=np.uint8)
    nodule_rows.append(_nodule(uid, "2-empty", [2, 2, 2], empty, (1.25, 0.7, 0.7), now))
    damaged = _nodule(uid, "2-damaged", [2, 2, 2], empty, (1.25, 0.7, 0.7), now)
    damaged["mask_data"] = damaged["mask_data"][:-6]
    nodule_rows.append(damaged)
    nodule_rows.append(_nodule("1.2.826.0.1.9", "9-novolume", [1, 1, 1], np.ones((3, 3, 3), np.uint8),
                               (1.0, 1.0, 1.0), now))
    upstream = _nodule(uid, "2-upstream-failed", None, None, None, now)
    upstream.update(status="failed", error_code="NO_MASK")
    nodule_rows.append(upstream)
    delta.write(spark, cfg, spark.createDataFrame(_rows(CT_VOLUMES, slab_rows), CT_VOLUMES), "silver.ct_volumes",
                mode="append", count=False)
    delta.write(spark, cfg, spark.createDataFrame(_rows(NODULES, nodule_rows), NODULES), "gold.nodules",
                mode="append", count=False)
    return expected, len(slab_rows)


def _nodule(uid, nid, origin, mask, spacing, now):
    from ctlake.lake import codec

    return {"nodule_id": nid, "series_instance_uid": uid, "patient_pseudo_id": f"P-{uid[-1]}", "source": "luna16",
            "source_ref": nid, "status": "ok", "mask_method": "sphere",
            "mask_origin_zyx": None if origin is None else [int(v) for v in origin],
            "mask_shape_zyx": None if mask is None else list(mask.shape), "mask_codec": "CTT1",
            "mask_data": None if mask is None else codec.encode(mask),
            "spacing_zyx_mm": None if spacing is None else list(spacing), "volumes_version": 0,
            "run_id": "nodules-run-1", "built_at": now}


def _expected_features(vol, spacing, origin, mask, params=None):
    """The pure engine on the same crop the job gives it: mask box + PAD voxels, clipped."""
    from ctlake.radiomics import extract

    lo = [max(0, o - PAD) for o in origin]
    hi = [min(v, o + s + PAD) for o, s, v in zip(origin, mask.shape, vol.shape, strict=True)]
    image = vol[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
    full = np.zeros(image.shape, np.uint8)
    full[tuple(slice(o - a, o - a + s) for o, a, s in zip(origin, lo, mask.shape, strict=True))] = mask
    return extract(image, full, spacing, params)


def _assert_same(got: dict, want: dict):
    assert set(got) == set(want)
    for name, value in want.items():
        if math.isnan(value):
            assert math.isnan(got[name]), name
        else:
            assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name


def test_radiomics_job_values_failures_incremental_params_and_long_view(spark, cfg, lake_tmp, tmp_path,
                                                                        monkeypatch):
    from ctlake.cli import main
    from ctlake.lake import delta
    from ctlake.process.radiomics import FEATURES, extract_radiomics, features_long, param_set
    from ctlake.radiomics import RadiomicsSettingsError, load_params
    from pyspark.sql import functions as F

    icfg = dataclasses.replace(cfg, lake=LakeConfig(root=str(lake_tmp / "lake")))
    expected, n_slabs = _write_inputs(spark, icfg)

    first = extract_radiomics(spark, icfg)
    assert first["rois"] == 6 and first["ok"] == 3 and first["failed"] == 3 and first["series"] == 3
    assert first["replaced"] == 0
    assert 0 < first["slabs_read"] < n_slabs          # only the slabs the crops overlap were read
    table = {r.roi_id: r for r in delta.read(spark, icfg, FEATURES).collect()}
    assert set(table) == {*expected, "2-empty", "2-damaged", "9-novolume"}      # the upstream failure: no row
    default_hash = first["params_hash"]
    for nid, (vol, spacing, origin, mask) in expected.items():
        row = table[nid]
        assert row.status == "ok" and row.error_code is None and row.params_hash == default_hash
        _assert_same(dict(row.features), _expected_features(vol, spacing, origin, mask))
        assert row.feature_count == len(row.features) >= 100
        assert row.ibsi_codes["original_firstorder_Mean"] == "Q4LE" and "original_firstorder_Kurtosis" not in \
            row.ibsi_codes
        assert row.roi_voxels == int(mask.sum()) and row.nodule_run_id == "nodules-run-1"
        assert row.nodules_version == first["nodules_version"] and row.run_id == first["run_id"]
    failed = {nid: (table[nid].status, table[nid].error_code) for nid in ("2-empty", "2-damaged", "9-novolume")}
    assert failed == {"2-empty": ("failed", "EMPTY_ROI"), "2-damaged": ("failed", "MASK_CORRUPT"),
                      "9-novolume": ("failed", "VOLUME_MISSING")}
    assert "label 1" in table["2-empty"].error_detail and table["2-empty"].features is None
    runs = delta.read(spark, icfg, "ops.pipeline_runs").filter("job = 'extract_radiomics'").collect()
    assert [(r.status, r.rows_in, r.rows_out) for r in runs] == [("succeeded", 6, 3)]

    # a second run adds nothing
    version = delta.version(spark, icfg.table_path(FEATURES))
    again = extract_radiomics(spark, icfg)
    assert again["rois"] == 0 and delta.version(spark, icfg.table_path(FEATURES)) == version

    # another parameter file (through the CLI): a second row per ROI; the same settings spelled
    # differently hash the same; unsupported settings are refused
    params = tmp_path / "bw10.yaml"
    params.write_text("setting:\n  binWidth: 10\n  additionalInfo: true\n"
                      "featureClass:\n  firstorder:\n  glcm: [JointEntropy, Contrast, Idm]\n")
    same = tmp_path / "bw10-again.yaml"
    same.write_text("featureClass:\n  glcm: [Idm, Contrast, JointEntropy]\n  firstorder: []\n"
                    "setting:\n  label: 1\n  binWidth: 10.0\n  distances: [1]\n")
    assert param_set(same).params_hash == param_set(params).params_hash != default_hash
    monkeypatch.setenv("CTLAKE__LAKE__ROOT", icfg.lake.root)
    assert main(["--profile", "test", "process", "radiomics", "--params", str(params)]) == 0
    rows = delta.read(spark, icfg, FEATURES)
    assert rows.count() == 12 and rows.select("params_hash").distinct().count() == 2
    nid = "2-nodule-0"
    other = rows.filter((F.col("roi_id") == nid) & (F.col("params_hash") != default_hash)).first()
    assert other.status == "ok" and other.params_source == str(params) and other.feature_count == len(other.features)
    _assert_same(dict(other.features), _expected_features(*expected[nid], params=load_params(params)))
    bad = tmp_path / "resampled.yaml"
    bad.write_text("setting:\n  resampledPixelSpacing: [2, 2, 2]\n")
    with pytest.raises(RadiomicsSettingsError, match="resampledPixelSpacing"):
        param_set(bad)
    assert main(["--profile", "test", "process", "radiomics", "--params", str(bad)]) == 2

    # the long view: one row per feature of every ok row, with the IBSI code where there is one
    long = features_long(spark, icfg)
    ok_rows = delta.read(spark, icfg, FEATURES).filter("status = 'ok'").collect()
    assert long.count() == sum(r.feature_count for r in ok_rows) == \
        spark.sql("SELECT count(*) AS n FROM radiomics_features_long").first().n
    per_roi = {(r.roi_id, r.params_hash): r["count"] for r in long.groupBy("roi_id", "params_hash").count().collect()}
    assert per_roi == {(r.roi_id, r.params_hash): r.feature_count for r in ok_rows}
    mean = long.filter((F.col("roi_id") == nid) & (F.col("feature") == "original_firstorder_Mean")
                       & (F.col("params_hash") == default_hash)).first()
    assert mean.ibsi_code == "Q4LE" and mean.value == table[nid].features["original_firstorder_Mean"]
    assert features_long(spark, icfg, params_hash=default_hash, view=None).select("roi_id").distinct().count() == 3

    # a nodule rebuilt upstream (new run id) is extracted again for the default parameters only
    from ctlake.lake.schemas import NODULES

    rebuilt = delta.read(spark, icfg, "gold.nodules").filter(F.col("nodule_id") == nid) \
        .withColumn("run_id", F.lit("nodules-run-2"))
    delta.write(spark, icfg, spark.createDataFrame(rebuilt.collect(), NODULES), "gold.nodules")
    third = extract_radiomics(spark, icfg)
    assert third["rois"] == 1 and third["ok"] == 1 and third["replaced"] == 1
    row = delta.read(spark, icfg, FEATURES).filter((F.col("roi_id") == nid) & (F.col("params_hash") == default_hash))
    assert [r.nodule_run_id for r in row.collect()] == ["nodules-run-2"]


def test_series_are_placed_in_the_task_of_their_balanced_bin(spark):
    """The plan's bins are what Spark's hash partitioning does with the chosen keys, and the
    longest-first assignment evens the bins' costs."""
    from ctlake.process.radiomics import _placement, balance, spark_hash_long
    from pyspark.sql import Row
    from pyspark.sql import functions as F

    plan = [Row(series_instance_uid=f"s{i:02d}", box=1000 * (1 + i % 7) ** 3) for i in range(40)]
    placement = _placement(plan, 6)
    costs = {r.series_instance_uid: 2e5 + r.box + 2e4 for r in plan}
    bins = balance(costs, 6)
    got = {r.series_instance_uid: r.p for r in spark.createDataFrame(placement, "series_instance_uid string, k bigint")
           .repartition(6, "k").select("series_instance_uid", F.spark_partition_id().alias("p")).collect()}
    assert got == bins
    loads = [sum(c for uid, c in costs.items() if bins[uid] == b) for b in range(6)]
    assert max(loads) - min(loads) <= max(costs.values())
    assert balance({"a": 5.0, "b": 3.0, "c": 3.0}, 2) == {"a": 0, "b": 1, "c": 1}
    values = [0, 1, -1, 42, 2**31, -(2**40) + 7, 2**62 + 12345]
    want = spark.createDataFrame([(v,) for v in values], "v bigint").selectExpr("v", "hash(v) AS h").collect()
    assert [spark_hash_long(r.v) for r in want] == [r.h for r in want]


def test_missing_inputs_are_clear_errors_and_a_failed_run_is_recorded(spark, cfg, lake_tmp):
    from ctlake.errors import CtlakeError
    from ctlake.lake import delta
    from ctlake.process.radiomics import extract_radiomics, features_long

    icfg = dataclasses.replace(cfg, lake=LakeConfig(root=str(lake_tmp / "lake")))
    with pytest.raises(CtlakeError) as err:
        extract_radiomics(spark, icfg)
    assert err.value.code == "NO_NODULES" and "ctlake process nodules" in str(err.value)
    runs = delta.read(spark, icfg, "ops.pipeline_runs").collect()
    assert [(r.job, r.status) for r in runs] == [("extract_radiomics", "failed")]
    assert "gold.nodules does not exist" in runs[0].error
    with pytest.raises(CtlakeError) as err:
        features_long(spark, icfg)
    assert err.value.code == "NO_FEATURES"


def test_two_runs_that_race_on_the_same_new_rois_leave_one_row_per_roi(spark, cfg, lake_tmp, monkeypatch):
    """Both runs read the table before either wrote (a barrier holds them there), so both extract
    every ROI and both append: the later one sees the other commit and settles, and the survivors
    are the same whoever settles (ok before failed, then the smaller run id)."""
    import threading

    from ctlake.lake import delta
    from ctlake.process import radiomics
    from ctlake.process.radiomics import FEATURES, extract_radiomics

    icfg = dataclasses.replace(cfg, lake=LakeConfig(root=str(lake_tmp / "lake")))
    _write_inputs(spark, icfg)
    barrier = threading.Barrier(2, timeout=300)
    original = radiomics._extract_and_write

    def held(*args, **kwargs):
        barrier.wait()          # both runs have pinned the features table's version and done-set
        return original(*args, **kwargs)

    monkeypatch.setattr(radiomics, "_extract_and_write", held)
    results, errors = [], []

    def run():
        try:
            results.append(extract_radiomics(spark, icfg))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not errors and len(results) == 2
    assert [r["rois"] for r in results] == [6, 6]          # both extracted everything: they raced
    rows = delta.read(spark, icfg, FEATURES).collect()
    assert len(rows) == 6 and len({r.roi_id for r in rows}) == 6
    assert {r.run_id for r in rows} == {min(r["run_id"] for r in results)}
    ops = [h.operation for h in spark.sql(f"DESCRIBE HISTORY delta.`{icfg.table_path(FEATURES)}`").collect()]
    assert ops.count("WRITE") == 2 and "MERGE" in ops      # two blind appends, then the settle's delete
