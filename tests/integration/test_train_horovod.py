"""Horovod training = single-process training: 2 CPU workers (gloo, horovod.spark.run on the Spark
executors) end with identical weights on both ranks, and those weights equal one process trained on
the same global batches (augmentation on), within float tolerance (summation order). A control run
without synchronised batch-norm (started by horovodrun) shows the tolerance is tight enough to see
the difference that makes: its parameters are off by orders of magnitude more and its batch-norm
running statistics differ between the ranks."""

from __future__ import annotations

import dataclasses
import io

import pytest
from ctlake.config import LakeConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _state(result: dict):
    import torch

    return torch.load(io.BytesIO(result["state_dict"]), weights_only=True)


def _max_diff(a: dict, b: dict, *, params_only: bool = False) -> tuple[float, str]:
    """Largest absolute difference over the floating tensors of two state dicts, and where."""
    keys = [k for k in b if b[k].is_floating_point() and not (params_only and k.endswith(("running_mean",
                                                                                          "running_var")))]
    return max((float((a[k] - b[k]).abs().max()), k) for k in keys)


def test_two_workers_match_one_process(spark, cfg, lake_tmp):
    import torch
    from ctlake.train import data as tdata
    from ctlake.train.distributed import launch
    from ctlake.train.models import build_model
    from ctlake.train.synthetic import SyntheticPatchConfig, make_cohort
    from ctlake.train.worker import WorkerPlan

    tc = dataclasses.replace(
        cfg.train, epochs=2, batch_size=16, lr=0.002, threads_per_worker=1,
        early_stopping_patience=0,
        restore_best=False, lr_schedule="none", loader="memory",
        malignancy=dataclasses.replace(cfg.train.malignancy, size_name="16x16x16", conv_channels=4))
    tcfg = dataclasses.replace(cfg, lake=LakeConfig(root=str(lake_tmp / "lake")), train=tc)
    cohort = make_cohort(SyntheticPatchConfig(patients=24, shape_zyx=(16, 16, 16), diameter_mm=(3.0, 12.0),
                                              negatives_per_patient=0, seed=11))
    tdata.write_synthetic(spark, tcfg, cohort, features=False)
    df, snap = tdata.select_rows(spark, tcfg, "malignancy")
    data = tdata.build_train_data(spark, tcfg, df, snap, np_workers=2)
    assert data.steps_per_epoch >= 2
    spec = {"kind": "malignancy", "patch_zyx": [16, 16, 16], "conv_channels": 4}

    def plan(train_cfg):
        return WorkerPlan(cfg=train_cfg, spec=spec, data=data,
                          class_weights=tdata.class_weights(snap.counts, "weighted_loss"))

    two = launch(plan(tc), 2, tcfg, launcher="spark", spark=spark)
    one = launch(plan(tc), 1, tcfg)

    assert [r["rank"] for r in two] == [0, 1] and all(r["size"] == 2 for r in two)
    assert two[0]["digest"] == two[1]["digest"], "ranks ended with different weights"
    # every epoch's metrics are global (allreduce/allgather), so both runs report the same numbers
    assert [h["samples"] for h in two[0]["history"]] == [h["samples"] for h in one[0]["history"]]
    for h2, h1 in zip(two[0]["history"], one[0]["history"], strict=True):
        assert h2["train_loss"] == pytest.approx(h1["train_loss"], rel=1e-4)
        assert h2["val_auc"] == pytest.approx(h1["val_auc"], abs=1e-6)

    w2, w1 = _state(two[0]), _state(one[0])
    torch.manual_seed(tc.seed)
    w0 = build_model(spec).state_dict()
    moved, _ = _max_diff(w1, w0)
    diff, where = _max_diff(w2, w1)
    print(f"\nlargest change by training {moved:.3g}; 2 workers vs 1 process {diff:.3g} ({where})")
    assert moved > 1e-2, "training did not move the weights: the comparison would be vacuous"
    assert diff < 1e-5, f"2 workers differ from 1 process by {diff:.3g} in {where}"

    # control: each worker normalises by its own half batch -> the parameters still agree across ranks
    # (gradients are allreduced) but differ from one process, and the batch-norm running statistics
    # (buffers, never allreduced) differ between the ranks
    # (started by the other launcher: horovodrun --gloo -np 2, no Spark)
    unsynced = launch(plan(dataclasses.replace(tc, sync_batchnorm=False)), 2, tcfg, launcher="horovodrun")
    assert unsynced[0]["digest"] != unsynced[1]["digest"]
    u0 = _state(unsynced[0])
    control, where = _max_diff(u0, w1, params_only=True)
    print(f"without synchronised batch-norm: parameters differ by {control:.3g} ({where})")
    assert control > 10 * max(diff, 1e-7), "the tolerance cannot tell synced from per-worker batch-norm"
