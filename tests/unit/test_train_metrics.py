"""ctlake.train.metrics against scikit-learn on fixed inputs, and the patient bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
from ctlake.train import metrics as M  # noqa: N812
from sklearn import metrics as skm

# fixed inputs: ties in the scores, both classes, a threshold that leaves every cell of the table filled
Y = np.array([1, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0, 1, 1, 0, 1, 0, 0, 0, 1, 1])
S = np.array([0.9, 0.1, 0.8, 0.4, 0.4, 0.3, 0.7, 0.6, 0.55, 0.2, 0.4, 0.35, 0.95, 0.05, 0.6, 0.5, 0.7, 0.1, 0.3, 0.65])
THR = 0.5


def test_auc_equals_sklearn_with_ties():
    assert M.roc_auc(Y, S) == pytest.approx(skm.roc_auc_score(Y, S), abs=1e-15)
    rounded = np.round(S, 1)                               # many more ties
    assert M.roc_auc(Y, rounded) == pytest.approx(skm.roc_auc_score(Y, rounded), abs=1e-15)
    rng = np.random.default_rng(5)
    y, s = rng.integers(0, 2, 500), rng.integers(0, 20, 500).astype(float)
    assert M.roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)


def test_threshold_metrics_equal_sklearn():
    got = M.binary_metrics(Y, S, THR)
    pred = (S >= THR).astype(int)
    assert got["sensitivity"] == pytest.approx(skm.recall_score(Y, pred))
    assert got["specificity"] == pytest.approx(skm.recall_score(Y, pred, pos_label=0))
    assert got["precision"] == pytest.approx(skm.precision_score(Y, pred))
    assert got["npv"] == pytest.approx(skm.precision_score(Y, pred, pos_label=0))
    assert got["f1"] == pytest.approx(skm.f1_score(Y, pred))
    assert got["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(Y, pred))
    assert got["auc"] == pytest.approx(skm.roc_auc_score(Y, S))
    tn, fp, fn, tp = skm.confusion_matrix(Y, pred).ravel()
    assert M.confusion(Y, S, THR) == {"tp": tp, "fp": fp, "tn": tn, "fn": fn}


def test_roc_curve_equals_sklearn():
    fpr, tpr, thr = M.roc_curve(Y, S)
    sk_fpr, sk_tpr, sk_thr = skm.roc_curve(Y, S, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_allclose(thr[1:], sk_thr[1:])
    assert M.youden_threshold(Y, S) in set(S)


def test_undefined_metrics_are_nan():
    y = np.array([0, 0, 0])
    got = M.binary_metrics(y, np.array([0.1, 0.2, 0.3]), 0.5)
    assert np.isnan(got["auc"]) and np.isnan(got["sensitivity"]) and np.isnan(got["precision"])
    assert got["specificity"] == 1.0
    with pytest.raises(ValueError, match="only 0 and 1"):
        M.roc_auc([0, 2], [0.1, 0.2])


def test_patient_bootstrap_keeps_patients_whole():
    patients = np.array(["a", "a", "b", "c", "c", "c"])
    for idx in M.patient_bootstrap_indices(patients, 50, np.random.default_rng(0)):
        drawn = patients[idx]
        for p in set(drawn.tolist()):   # a drawn patient brings all its rows, k times
            assert (drawn == p).sum() % (patients == p).sum() == 0
        # as many patients drawn as there are
        assert sum((drawn == p).sum() // (patients == p).sum() for p in set(drawn.tolist())) == 3


def _cohort(n_patients: int, seed: int):
    """Patients with 1-3 rows each; score = label + noise (AUC about 0.85)."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(1, 4, n_patients)
    patients = np.repeat(np.arange(n_patients), rows)
    y = rng.integers(0, 2, patients.size)
    return y, y + rng.normal(0, 0.8, patients.size), patients


def test_bootstrap_ci_contains_estimate_and_narrows_with_n():
    widths = []
    for n in (20, 80, 320):
        y, s, patients = _cohort(n, seed=n)
        table = M.metrics_table(y, s, patients, threshold=0.5, resamples=1000, rng=np.random.default_rng(1))
        assert [r.metric for r in table] == list(M.METRIC_NAMES)
        for r in table:
            assert r.ci_low <= r.estimate <= r.ci_high, r
            assert r.n_valid == 1000
        widths.append({r.metric: r.ci_high - r.ci_low for r in table})
    for metric in M.METRIC_NAMES:
        w = [x[metric] for x in widths]
        assert w[0] > w[1] > w[2], (metric, w)
    # 16 x the patients -> about 4 x narrower (1 / sqrt(n))
    assert 2.5 < widths[0]["auc"] / widths[2]["auc"] < 6.5


def test_bootstrap_is_reproducible_and_paired():
    y, s, patients = _cohort(40, seed=3)
    a = M.metrics_table(y, s, patients, threshold=0.5, resamples=200, rng=np.random.default_rng(7))
    b = M.metrics_table(y, s, patients, threshold=0.5, resamples=200, rng=np.random.default_rng(7))
    assert a == b
    lo, hi, n = M.bootstrap_ci(lambda idx: M.roc_auc(y[idx], s[idx]), patients, resamples=200,
                               rng=np.random.default_rng(7))
    assert (lo, hi) == pytest.approx((a[0].ci_low, a[0].ci_high)) and n == 200
