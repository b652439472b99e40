"""ctlake.train.models and ctlake.train.loop: architecture, init, batch-norm, fine-tuning, the loop (pure torch)."""

from __future__ import annotations

import dataclasses
import math
import pickle

import numpy as np
import pytest
import torch
from ctlake.config import ConfigError, TrainConfig, TrainModelConfig
from ctlake.train.loop import Batch, LocalComm, fit, lr_factor, predict_scores, weights_digest
from ctlake.train.models import (
    CandidateNet,
    SyncableBatchNorm3d,
    build_model,
    freeze_leading,
    load_backbone,
    set_stats_allreduce,
)


def test_candidate_net_is_the_source_architecture():
    torch.manual_seed(0)
    net = CandidateNet((32, 48, 48))
    assert isinstance(net.backbone.tail_batchnorm, torch.nn.BatchNorm3d)
    assert [b.conv1.out_channels for b in net.backbone.blocks] == [8, 16, 32, 64]
    for b in net.backbone.blocks:
        assert b.conv1.kernel_size == b.conv2.kernel_size == (3, 3, 3) and b.pool.kernel_size == 2
    assert net.head.in_features == 1152 and net.head.out_features == 2   # 64 x 2 x 3 x 3, as the source
    assert net(torch.rand(3, 1, 32, 48, 48)).shape == (3, 2)
    with pytest.raises(ValueError, match="multiple of 16"):
        CandidateNet((20, 48, 48))


def test_he_initialisation():
    torch.manual_seed(0)
    net = CandidateNet((32, 48, 48), conv_channels=16)
    w = net.backbone.blocks[2].conv2.weight                 # 64 -> 64 channels, fan_out = 64 * 27
    assert float(w.detach().std()) == pytest.approx(math.sqrt(2.0 / (64 * 27)), rel=0.05)
    bound = 1 / math.sqrt(64 * 27)
    assert float(net.backbone.blocks[2].conv2.bias.detach().abs().max()) <= bound


def test_syncable_batchnorm_equals_torch_batchnorm_in_one_process():
    torch.manual_seed(1)
    ours, ref = SyncableBatchNorm3d(1), torch.nn.BatchNorm3d(1)
    for _ in range(3):
        x = torch.rand(6, 1, 8, 8, 8) * 3 + 1
        torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    ours.eval()
    ref.eval()
    x = torch.rand(2, 1, 8, 8, 8)
    torch.testing.assert_close(ours(x), ref(x))


def test_syncable_batchnorm_with_an_allreduce_normalises_over_the_global_batch():
    """Two 'workers' in one process: each half sees the other half's sums through the allreduce."""
    x = torch.rand(8, 1, 4, 4, 4) * 2
    halves = [x[:4], x[4:]]
    whole = torch.nn.BatchNorm3d(1)(x)
    outputs = []
    for i, half in enumerate(halves):
        other = halves[1 - i]
        bn = SyncableBatchNorm3d(1)
        calls = []

        def allreduce(t, other=other, calls=calls):
            # the other worker contributes the same statistic over its half
            calls.append(t)
            if len(calls) == 1:
                return t + torch.cat([other.sum([0, 2, 3, 4]), torch.tensor([float(other.numel())])])
            mean = (x.sum() / x.numel()).reshape(1)
            return t + ((other - mean) ** 2).sum([0, 2, 3, 4])

        set_stats_allreduce(bn, allreduce)
        outputs.append(bn(half))
        assert len(calls) == 2
    torch.testing.assert_close(torch.cat(outputs), whole, atol=1e-5, rtol=1e-5)
    # the hook is not pickled: a saved model is an ordinary module
    clone = pickle.loads(pickle.dumps(bn))
    assert clone._allreduce is None


def test_hybrid_packed_input_equals_two_inputs():
    torch.manual_seed(0)
    net = build_model({"kind": "hybrid", "patch_zyx": [16, 16, 16], "feature_names": ["a", "b", "c"], "hidden": 8})
    net.set_feature_scaling(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 0.0, 2.0]))
    assert net.feature_std.tolist() == [1.0, 1.0, 2.0]           # SD 0 -> 1
    net.eval()
    x, f = torch.rand(3, 1, 16, 16, 16), torch.rand(3, 3)
    torch.testing.assert_close(net(x, f), net(torch.cat([x.reshape(3, -1), f], 1)))


def test_fine_tuning_copies_and_freezes_the_backbone():
    torch.manual_seed(0)
    candidate = build_model({"kind": "candidate", "patch_zyx": [32, 48, 48]})
    torch.manual_seed(1)
    malignancy = build_model({"kind": "malignancy", "patch_zyx": [32, 32, 32]})
    load_backbone(malignancy, candidate)
    torch.testing.assert_close(malignancy.backbone.blocks[3].conv2.weight, candidate.backbone.blocks[3].conv2.weight)
    assert malignancy.head.in_features != candidate.head.in_features     # the head stays the model's own
    freeze_leading(malignancy, 2)
    frozen = [n for n, p in malignancy.named_parameters() if not p.requires_grad]
    assert frozen == ["backbone.tail_batchnorm.weight", "backbone.tail_batchnorm.bias"] + [
        f"backbone.blocks.{b}.{c}.{w}" for b in (0, 1) for c in ("conv1", "conv2") for w in ("weight", "bias")]
    malignancy.train()
    assert not malignancy.backbone.tail_batchnorm.training and malignancy.backbone.blocks[2].training


def test_lr_schedules():
    cfg = TrainConfig(lr_schedule="cosine", warmup_epochs=2)
    f = [lr_factor(e, cfg, 10) for e in range(10)]
    assert f[:2] == pytest.approx([1 / 3, 2 / 3]) and f[2] == 1.0 and f[-1] < 0.05
    assert all(a >= b for a, b in zip(f[2:], f[3:], strict=False))
    cfg = TrainConfig(lr_schedule="step", lr_step_epochs=3, lr_gamma=0.5)
    assert [lr_factor(e, cfg, 9) for e in range(7)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]


def _toy_batches(n=64, seed=0):
    """Bright cubes (positives) vs dark ones, 16^3; in memory."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(0.2, 0.05, (n, 1, 16, 16, 16)).astype(np.float32)
    x[y == 1, :, 6:10, 6:10, 6:10] += 0.6
    return torch.from_numpy(x), torch.from_numpy(y).long()


def test_fit_learns_stops_early_and_keeps_the_best_epoch():
    torch.set_num_threads(1)
    x, y = _toy_batches()
    vx, vy = _toy_batches(32, seed=1)
    cfg = TrainConfig(epochs=12, batch_size=16, lr=0.003, early_stopping_patience=2, lr_schedule="none",
                      malignancy=TrainModelConfig(size_name="16x16x16", conv_channels=4))

    def batches(epoch):
        order = np.random.default_rng([0, epoch]).permutation(len(y))
        for i in range(0, len(y), 16):
            idx = torch.from_numpy(order[i:i + 16])
            yield Batch(x[idx], y[idx])

    torch.manual_seed(0)
    net = build_model({"kind": "malignancy", "patch_zyx": [16, 16, 16], "conv_channels": 4})
    seen = []
    out = fit(net, batches, Batch(vx, vy), cfg, class_weights=(1.0, 1.0), comm=LocalComm(), on_epoch=seen.append)
    assert seen == out.history and out.history[0]["samples"] == 64
    assert max(h["val_auc"] for h in out.history) > 0.95
    best = out.history[out.best_epoch]["val_auc"]
    assert best == max(h["val_auc"] for h in out.history)
    assert out.stopped_early and len(out.history) == out.best_epoch + 1 + cfg.early_stopping_patience < cfg.epochs
    scores, _ = predict_scores(net, vx)       # the kept weights are the best epoch's
    from ctlake.train.metrics import roc_auc

    assert roc_auc(vy.numpy(), scores) == pytest.approx(best)
    assert weights_digest(net) == weights_digest(net) and len(weights_digest(net)) == 64


def test_train_config_is_validated():
    with pytest.raises(ConfigError, match="optimizer"):
        TrainConfig(optimizer="lbfgs")
    with pytest.raises(ConfigError, match="multiple of 16"):
        TrainModelConfig(size_name="20x48x48")
    with pytest.raises(ConfigError, match="window_hu"):
        TrainConfig(window_hu=(400, -1000))
    cfg = TrainConfig(window_hu=[-1000, 600])
    assert cfg.window_hu == (-1000.0, 600.0)
    assert dataclasses.replace(cfg, np=2).np == 2
