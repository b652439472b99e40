"""The data path of training with the real Spark/Delta and petastorm: pinned Delta versions, patient-split
leaks refused, radiomics features joined for the hybrid, and the petastorm and in-memory loaders
delivering the same tensors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from ctlake.config import LakeConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _cfg(cfg, lake_tmp, **train):
    tc = dataclasses.replace(
        cfg.train, batch_size=8, threads_per_worker=1,
        augment=dataclasses.replace(cfg.train.augment, enabled=False),
        candidate=dataclasses.replace(cfg.train.candidate, size_name="16x16x16"),
        hybrid=dataclasses.replace(cfg.train.hybrid, size_name="16x16x16"), **train)
    return dataclasses.replace(cfg, lake=LakeConfig(root=str(lake_tmp / "lake")), train=tc)


def test_versions_leaks_features_and_loaders(spark, cfg, lake_tmp):
    import torch
    from ctlake.lake import delta
    from ctlake.lake.schemas import NODULE_PATCHES
    from ctlake.train import data as tdata
    from ctlake.train.synthetic import FEATURE_NAMES, SyntheticPatchConfig, make_cohort

    tcfg = _cfg(cfg, lake_tmp)
    a = make_cohort(SyntheticPatchConfig(patients=10, shape_zyx=(16, 16, 16), negatives_per_patient=6, seed=21))
    b = make_cohort(SyntheticPatchConfig(patients=6, shape_zyx=(16, 16, 16), seed=22))
    b.feature_rows = b.feature_rows[3:]                     # three nodules without radiomics features
    va = tdata.write_synthetic(spark, tcfg, a, features=False, mode="append")["gold.nodule_patches"]
    vb = tdata.write_synthetic(spark, tcfg, b, mode="append")
    assert vb["gold.nodule_patches"] > va

    # pinned versions: the earlier version holds only the first cohort
    _, snap_a = tdata.select_rows(spark, tcfg, "candidate", version=va)
    df, snap = tdata.select_rows(spark, tcfg, "candidate")           # the latest: both cohorts
    snap_b = snap
    assert snap_a.version == va and snap_b.version == vb["gold.nodule_patches"]
    assert sum(c["rows"] for c in snap_a.counts.values()) == len(a.patch_rows)
    assert sum(c["rows"] for c in snap_b.counts.values()) == len(a.patch_rows) + len(b.patch_rows)
    assert sum(c["patients"] for c in snap_b.counts.values()) == 16

    # hybrid: features joined by nodule_id, in a fixed name order; nodules without them left out
    hdf, hsnap = tdata.select_rows(spark, tcfg, "hybrid")
    assert hsnap.feature_names == tuple(sorted(FEATURE_NAMES)) and hsnap.params_hash == "synthetic-params"
    assert hsnap.features_version == vb["gold.radiomics_features"]
    nodules_a = [r for r in a.patch_rows if r["kind"] == "nodule"]          # cohort a: no features at all
    nodules_b = [r for r in b.patch_rows if r["kind"] == "nodule"]
    assert hsnap.dropped_without_features == len(nodules_a) + 3
    assert sum(c["rows"] for c in hsnap.counts.values()) == len(nodules_b) - 3
    want = {f["roi_id"]: [f["features"][n] for n in hsnap.feature_names] for f in b.feature_rows}
    for r in hdf.select("nodule_id", "features").collect():
        np.testing.assert_allclose(r["features"], want[r["nodule_id"]], rtol=1e-6)

    # the petastorm and the in-memory loader deliver the same tensors for the same rows
    mem = tdata.build_train_data(spark, tcfg, df, snap, loader="memory")
    pet = tdata.build_train_data(spark, tcfg, df, snap, loader="petastorm")
    assert mem.train_rows == pet.train_rows == snap.counts["train"]["rows"] == len(pet.petastorm_train)
    mv, pv = mem.validation(0, 1, tcfg.train), pet.validation(0, 1, tcfg.train)
    order_m, order_p = torch.argsort(mv.keys), torch.argsort(pv.keys)
    assert torch.equal(mv.keys[order_m], pv.keys[order_p]) and torch.equal(mv.y[order_m], pv.y[order_p])
    torch.testing.assert_close(mv.x[order_m], pv.x[order_p], rtol=0, atol=0)
    by_key = {int(k): (mem.memory_train.images[i], int(mem.memory_train.y[i]))
              for i, k in enumerate(mem.memory_train.keys)}
    norm_ok = 0
    try:
        for batch in pet.batches(0, 1, tcfg.train)(0):
            assert batch.x.shape == (8, 1, 16, 16, 16)
            for k, x, y in zip(batch.keys.tolist(), batch.x, batch.y.tolist(), strict=True):
                img, label = by_key[k]
                assert y == label
                torch.testing.assert_close(x[0], (torch.from_numpy(img.astype(np.float32)).clamp(-1000, 400) + 1000)
                                           / 1400)
                norm_ok += 1
    finally:
        pet.close()
    assert norm_ok == pet.steps_per_epoch * 8

    # oversampling repeats the minority rows (each copy its own augmentation key)
    over = dataclasses.replace(tcfg, train=dataclasses.replace(tcfg.train, balance="oversample"))
    minority, copies = tdata.oversample_factor(snap.counts)
    om = tdata.build_train_data(spark, over, df, snap, loader="memory")
    n_min = int((mem.memory_train.y == minority).sum())
    assert copies >= 2 and om.train_rows == len(om.memory_train) == mem.train_rows + n_min * (copies - 1)
    assert len(set(om.memory_train.keys.tolist())) == om.train_rows
    from pyspark.sql import functions as F  # noqa: N812

    spark_side = tdata._oversample_frame(df.filter(F.col("split") == "train"), snap.counts)   # petastorm's way
    n, distinct = spark_side.agg(F.count("*"), F.countDistinct("sample_key")).first()
    assert n == distinct == om.train_rows

    # a patient in two splits is refused; the earlier (clean) version still reads
    leak = dict(a.patch_rows[0], patch_id="leak", split="test" if a.patch_rows[0]["split"] != "test" else "train")
    delta.write(spark, tcfg, spark.createDataFrame([tuple(leak[f.name] for f in NODULE_PATCHES.fields)],
                                                   NODULE_PATCHES), "gold.nodule_patches", mode="append")
    with pytest.raises(tdata.DataError) as err:
        tdata.select_rows(spark, tcfg, "candidate")
    assert err.value.code == "SPLIT_LEAK" and a.patch_rows[0]["patient_pseudo_id"] in str(err.value)
    assert tdata.select_rows(spark, tcfg, "candidate", version=snap.version)[1].version == snap.version
