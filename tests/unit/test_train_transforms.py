"""Patch decoding, normalisation, augmentation and the synthetic cohort (numpy/torch, no Spark)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ctlake.train.synthetic import FEATURE_NAMES, SyntheticPatchConfig, make_cohort, malignancy_of
from ctlake.train.transforms import Normaliser, augment_batch, decode_images


def test_decode_images_and_normalise():
    a = np.array([[[-1000, 400], [0, -2000]]], dtype="<i2")      # (1, 2, 2) patch
    imgs = decode_images([a.tobytes(), (a + 1).tobytes()], (1, 2, 2))
    assert imgs.shape == (2, 1, 2, 2) and imgs.dtype == np.int16
    np.testing.assert_array_equal(imgs[0], a)
    x = Normaliser("window", (-1000.0, 400.0))(imgs[0])
    assert x.dtype == torch.float32
    np.testing.assert_allclose(x.numpy().ravel(), [0.0, 1.0, 1000 / 1400, 0.0])   # clipped to the window
    z = Normaliser("zscore", zscore_hu=(-700.0, 300.0))(imgs[0])
    np.testing.assert_allclose(z.numpy().ravel(), [-1.0, 11 / 3, 7 / 3, -13 / 3], rtol=1e-6)
    with pytest.raises(ValueError, match="expected 8"):
        decode_images([a.tobytes()[:6]], (1, 2, 2))


def _batch(n=4, shape=(8, 12, 12)):
    rng = np.random.default_rng(0)
    return torch.from_numpy(rng.random((n, 1, *shape), dtype=np.float32))


def test_augmentation_depends_on_the_sample_not_the_batch():
    x = _batch()
    keys = [11, 22, 33, 44]
    whole = augment_batch(x, keys, epoch=3, seed=0)
    for i in range(4):   # one sample at a time, in another order: the same result
        alone = augment_batch(x[i:i + 1], keys[i:i + 1], epoch=3, seed=0)
        torch.testing.assert_close(alone[0], whole[i])
    assert not torch.equal(augment_batch(x, keys, epoch=4, seed=0), whole)      # epoch changes it
    assert not torch.equal(augment_batch(x, keys, epoch=3, seed=1), whole)      # seed changes it
    assert whole.shape == x.shape


def test_flips_and_rotations_only_permute_voxels():
    x = _batch(8, shape=(8, 12, 12))
    out = augment_batch(x, list(range(8)), epoch=0, seed=0, scale=0.0, offset_vox=0.0, noise_sd=0.0)
    for i in range(8):
        np.testing.assert_allclose(np.sort(out[i].numpy().ravel()), np.sort(x[i].numpy().ravel()), atol=1e-6)
    assert any(not torch.allclose(out[i], x[i]) for i in range(8))
    same = augment_batch(x, list(range(8)), epoch=0, seed=0, flip_axes="", rot90=False, scale=0.0,
                         offset_vox=0.0, noise_sd=0.0)
    torch.testing.assert_close(same, x)
    noisy = augment_batch(x, list(range(8)), epoch=0, seed=0, flip_axes="", rot90=False, scale=0.0,
                          offset_vox=0.0, noise_sd=0.1)
    assert float((noisy - x).std()) == pytest.approx(0.1, rel=0.1)


def test_non_square_planes_rotate_by_180_only():
    x = _batch(16, shape=(4, 8, 12))
    out = augment_batch(x, list(range(16)), epoch=0, seed=0, flip_axes="", scale=0.0, offset_vox=0.0, noise_sd=0.0)
    for i in range(16):
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], torch.rot90(x[i], 2, dims=(2, 3)))


def test_synthetic_cohort_splits_by_patient_and_is_deterministic():
    cfg = SyntheticPatchConfig(patients=30, shape_zyx=(16, 16, 16), seed=4)
    a, b = make_cohort(cfg), make_cohort(cfg)
    assert [r["patch_id"] for r in a.patch_rows] == [r["patch_id"] for r in b.patch_rows]
    assert all(x["image"] == y["image"] for x, y in zip(a.patch_rows, b.patch_rows, strict=True))
    splits: dict[str, set] = {}
    for r in a.patch_rows:
        splits.setdefault(r["patient_pseudo_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in splits.values())                 # patient-disjoint
    counts = {s: sum(1 for v in splits.values() if v == {s}) for s in ("train", "validation", "test")}
    assert counts == {"train": 18, "validation": 6, "test": 6}
    assert len({r["patch_id"] for r in a.patch_rows}) == len(a.patch_rows)
    for r in a.patch_rows:
        img = decode_images([r["image"]], r["shape_zyx"])[0]
        mask = np.frombuffer(r["mask"], np.uint8).reshape(r["shape_zyx"])
        assert img.min() >= -1000 and img.max() <= 400 and r["size_name"] == "16x16x16"
        if r["kind"] == "nodule":
            assert mask.sum() > 0 and img[mask == 1].mean() > img[mask == 0].mean() + 200
            assert r["malignant"] == int(r["malignancy"] >= 3) and r["nodule_id"]
        else:
            assert mask.sum() == 0 and r["malignant"] is None and r["label"] == 0
    feats = {f["roi_id"]: f["features"] for f in a.feature_rows}
    assert set(feats) == {r["nodule_id"] for r in a.patch_rows if r["kind"] == "nodule"}
    assert all(set(f) == set(FEATURE_NAMES) for f in feats.values())


def test_synthetic_malignancy_depends_on_size_density_and_margin():
    cfg = SyntheticPatchConfig(noise_sd=0.0)
    rng = np.random.default_rng(0)
    _, small = malignancy_of(5.0, False, False, cfg, rng)
    _, big = malignancy_of(20.0, False, False, cfg, rng)
    _, solid = malignancy_of(5.0, True, False, cfg, rng)
    _, spiculated = malignancy_of(5.0, False, True, cfg, rng)
    assert big - small == pytest.approx(cfg.size_weight * math.log(4))
    assert solid - small == pytest.approx(cfg.solid_weight)
    assert spiculated - small == pytest.approx(cfg.spiculated_weight)
