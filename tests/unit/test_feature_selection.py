"""ctlake.radiomics.selection: each step on a frame whose answer is planted, then the pipeline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from ctlake.radiomics import selection as sel


def _noise(rng: np.random.Generator, n: int, names: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rng.normal(size=(n, len(names))), columns=names)


def test_constant_and_empty_columns_are_dropped():
    rng = np.random.default_rng(0)
    x = _noise(rng, 30, ["a", "b"])
    x["flat"] = 5.0
    x["empty"] = np.nan
    x.loc[3, "flat_with_gaps"] = 2.0          # one value, the rest missing
    out, dropped = sel.drop_constant(x)
    assert list(out.columns) == ["a", "b"]
    assert set(dropped) == {"flat", "empty", "flat_with_gaps"}
    assert dropped["flat"] == "constant: every value is 5"
    pd.testing.assert_frame_equal(out, x[["a", "b"]])


def test_outlier_becomes_missing_then_knn_imputed_from_the_nearest_rows():
    rng = np.random.default_rng(1)
    n = 60
    b = rng.uniform(-1.0, 1.0, size=n)                    # |z| <= sqrt(3): no outlier of its own
    a = 2.0 * b + 0.05 * rng.uniform(-1.0, 1.0, size=n) + 10.0   # a follows b
    a[7] = 500.0                                          # planted outlier
    x = pd.DataFrame({"a": a, "b": b})
    masked, counts = sel.mask_outliers(x)
    assert counts == {"a": 1}
    assert np.isnan(masked.loc[7, "a"]) and masked.drop(index=7).notna().all().all()
    filled, imputed = sel.impute_knn(masked, k=5)
    assert imputed == 1
    # by hand: the 5 rows whose b is closest to row 7's b (the only column row 7 still has)
    others = np.array([i for i in range(n) if i != 7])
    nearest = others[np.argsort(np.abs(b[others] - b[7]), kind="stable")[:5]]
    assert filled.loc[7, "a"] == pytest.approx(a[nearest].mean(), rel=1e-12)
    assert abs(filled.loc[7, "a"] - (2.0 * b[7] + 10.0)) < 0.5       # a plausible value, not 500
    pd.testing.assert_frame_equal(filled.drop(index=7), masked.drop(index=7))  # observed values untouched


def test_no_outlier_masked_without_enough_rows():
    x = pd.DataFrame({"a": [0.0, 0.0, 0.0, 0.0, 100.0]})   # |z| = 2 at most with 5 rows
    masked, counts = sel.mask_outliers(x)
    assert counts == {} and masked.notna().all().all()


def test_minmax_scale_maps_each_column_to_0_1():
    x = pd.DataFrame({"a": [2.0, 4.0, 6.0], "b": [-1.0, 0.0, 3.0]})
    out, ranges = sel.minmax_scale(x)
    assert out["a"].tolist() == [0.0, 0.5, 1.0]
    assert out["b"].tolist() == [0.0, 0.25, 1.0]
    assert ranges == {"a": (2.0, 6.0), "b": (-1.0, 3.0)}


def test_correlated_pair_keeps_the_one_less_correlated_with_the_rest():
    rng = np.random.default_rng(2)
    n = 400
    z, x3, x4 = rng.normal(size=(3, n))
    x1 = z
    x2 = z + 0.35 * x3 + 0.05 * rng.normal(size=n)       # r(x1, x2) ~ 0.94, and x2 also follows x3
    x = pd.DataFrame({"x2": x2, "x1": x1, "x3": x3, "x4": x4})   # x2 first: not "drop the later one"
    out, dropped = sel.drop_correlated(x, threshold=0.8)
    assert list(out.columns) == ["x1", "x3", "x4"]
    assert list(dropped) == ["x2"] and "with x1 (kept)" in dropped["x2"]
    # mirrored: the same pair with x1 carrying the extra correlation drops x1
    out2, dropped2 = sel.drop_correlated(pd.DataFrame({"x1": x2, "x2": x1, "x3": x3}), threshold=0.8)
    assert list(dropped2) == ["x1"] and list(out2.columns) == ["x2", "x3"]
    # below the threshold nothing goes
    assert sel.drop_correlated(x, threshold=0.99)[1] == {}


def test_rfe_keeps_the_informative_features_and_is_deterministic():
    rng = np.random.default_rng(3)
    n = 200
    x = _noise(rng, n, [f"noise{i}" for i in range(6)])
    x.insert(2, "inf_a", rng.normal(size=n))
    x.insert(5, "inf_b", rng.normal(size=n))
    y = (x["inf_a"] + x["inf_b"] > 0).astype(int).to_numpy()
    kept, scores = sel.rfe_cv(x, y, folds=5, seed=0, n_estimators=50)
    assert {"inf_a", "inf_b"} <= set(kept) and len(kept) <= 3
    assert max(scores.values()) > 0.85 and set(scores) == set(range(1, 9))
    assert sel.rfe_cv(x, y, folds=5, seed=0, n_estimators=50) == (kept, scores)
    with pytest.raises(ValueError, match="impute"):
        sel.rfe_cv(x.mask(x > 2.5), y)


def test_pipeline_reports_what_it_kept_and_dropped_and_why():
    rng = np.random.default_rng(4)
    n = 160
    x = _noise(rng, n, ["noise0", "noise1", "noise2"])
    x["original_firstorder_Mean"] = rng.normal(size=n)
    x["original_glcm_JointEntropy"] = rng.normal(size=n)
    x["original_shape_Flat"] = 1.0                                                     # constant
    x["original_firstorder_Median"] = x["original_firstorder_Mean"] + 0.02 * rng.normal(size=n)  # near-duplicate
    x.loc[11, "noise1"] = 40.0                                                         # outlier
    y = (x["original_firstorder_Mean"] - x["original_glcm_JointEntropy"] > 0).astype(int).to_numpy()
    out, report = sel.select_features(x, y, seed=7, n_estimators=50)
    assert report.input_features == list(x.columns)
    assert set(report.kept) | set(report.dropped) == set(x.columns) and not set(report.kept) & set(report.dropped)
    assert report.reason("original_shape_Flat").startswith("constant")
    # one of the near-duplicate pair goes for correlation, the other may be kept
    pair = {"original_firstorder_Mean", "original_firstorder_Median"}
    corr = [c for c in pair if report.dropped.get(c, "").startswith("correlated")]
    assert len(corr) == 1
    assert "original_glcm_JointEntropy" in report.kept and len(pair & set(report.kept)) == 1
    assert report.outliers_masked.get("noise1", 0) >= 1 and report.imputed >= 1
    assert all(report.reason(c).startswith("rfe") for c in ("noise0", "noise2") if c not in report.kept)
    assert list(out.columns) == report.kept
    assert out.min().min() >= 0.0 and out.max().max() <= 1.0
    assert set(report.scale) == set(report.kept)
    again_out, again = sel.select_features(x, y, seed=7, n_estimators=50)
    assert again.to_dict() == report.to_dict()
    pd.testing.assert_frame_equal(again_out, out)
    # without labels: no RFE, both informative features kept
    _, unsupervised = sel.select_features(x)
    assert unsupervised.rfe_scores is None and not any(r.startswith("rfe") for r in unsupervised.dropped.values())


def test_to_wide_from_feature_maps():
    wide = sel.to_wide([{"b": 1.0, "a": 2.0}, {"a": 3.0}], index=["roi1", "roi2"])
    assert list(wide.columns) == ["a", "b"] and list(wide.index) == ["roi1", "roi2"]
    assert wide.loc["roi2", "a"] == 3.0 and np.isnan(wide.loc["roi2", "b"])
