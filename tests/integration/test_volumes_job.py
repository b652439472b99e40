"""bronze → silver.ct_series / silver.ct_volumes with the real Spark and Delta."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from ctlake.config import LakeConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_volumes_built_refused_and_incremental(spark, cfg, lake_tmp, tmp_path):
    from ctlake.dicom.deid import DeidProfile, deidentify_bytes, remap_uid
    from ctlake.dicom.reader import parse_dicom
    from ctlake.imaging.volume import build_volume
    from ctlake.ingest import bronze
    from ctlake.ingest.keys import site_key
    from ctlake.process.volumes import build_volumes, read_volume
    from ctlake.synth import SynthConfig, generate_cohort

    icfg = dataclasses.replace(cfg, lake=LakeConfig(root=str(lake_tmp / "lake")))
    manifest = generate_cohort(tmp_path / "c", SynthConfig(patients=3, size=48, slices=16, seed=8,
                                                           edge_cases=("missing_slice", "gantry_tilt")))
    bronze.ingest_folder(spark, icfg, str(tmp_path / "c"))
    first = build_volumes(spark, icfg)
    assert first["series"] == 3 and first["built"] == 2 and first["refused"] == 1 and first["slabs"] >= 2
    series = {r.series_instance_uid: r for r in spark.read.format("delta")
              .load(icfg.table_path("silver.ct_series")).collect()}
    key = site_key(icfg)
    by_case = {(list(s.edge_cases) or ["clean"])[0]: remap_uid(s.series_uid, key) for s in manifest.ct_series()}
    refused = series[by_case["missing_slice"]]
    assert refused.status == "refused" and refused.refusal_code == "MISSING_SLICES"
    assert "MISSING_SLICES" in refused.qc_flags
    q = spark.read.format("delta").load(icfg.table_path("bronze.quarantine")).filter("stage = 'series_qc'")
    assert [r.error_code for r in q.collect()] == ["MISSING_SLICES"]
    tilted = series[by_case["gantry_tilt"]]
    assert tilted.status == "built" and "GANTRY_TILT" in tilted.qc_flags and tilted.decisions["GANTRY_TILT"]
    # the lake's volume equals the pure build of the same de-identified files, voxel for voxel
    clean = next(s for s in manifest.ct_series() if not s.edge_cases)
    profile = DeidProfile(site_key=key)
    datasets = [parse_dicom(deidentify_bytes((tmp_path / "c" / f.path).read_bytes(), profile)[0])
                for f in clean.files]
    expected = build_volume(datasets)
    arr, grid = read_volume(spark, icfg, by_case["clean"])
    assert arr.dtype == np.int16 and grid == expected.grid
    np.testing.assert_array_equal(arr, expected.array)
    assert series[by_case["clean"]].shape_zyx == list(grid.shape_zyx)
    # incremental: nothing new, nothing rebuilt
    again = build_volumes(spark, icfg)
    assert again["series"] == 0 and again["slabs"] == 0
    runs = spark.read.format("delta").load(icfg.table_path("ops.pipeline_runs")).filter("job = 'build_volumes'")
    assert runs.count() == 2
