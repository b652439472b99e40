"""Radiomics feature selection, step by step (pure pandas / numpy / scikit-learn; no Spark).

The steps of the source study, in the order :func:`select_features` runs them, on a wide frame
(one row per ROI, one column per feature, e.g. ``original_glcm_JointEntropy``):

1. :func:`drop_constant` — columns with one distinct value (or none).
2. :func:`mask_outliers` — values with |z| > 3 become missing (z from the column's mean and
   population standard deviation, missing values ignored). With n rows no |z| can exceed
   sqrt(n - 1), so nothing is masked below 11 rows.
3. :func:`impute_knn` — each missing value becomes the mean of that column over the k = 5 nearest
   rows that have it (nan-Euclidean distance over the columns both rows have, on z-scored
   columns so that no feature dominates by its unit).
4. :func:`minmax_scale` — every column to [0, 1].
5. :func:`drop_correlated` — while two columns have |Pearson r| > 0.8, drop the one of the most
   correlated pair whose mean |r| with the remaining other columns is higher (keep the less
   correlated one).
6. :func:`rfe_cv` — recursive feature elimination with a random forest; the number of features
   with the best mean balanced accuracy over stratified k-fold cross-validation wins.

Every step returns a new frame and says what it did; :func:`select_features` chains them and
returns a :class:`SelectionReport` with what was kept and why each column was dropped. Given the
same data and ``seed`` the result is identical (the forests and the fold split are seeded; the
other steps have no randomness). Fit on training rows only: the statistics come from the rows given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

__all__ = [
    "SelectionReport",
    "drop_constant",
    "drop_correlated",
    "impute_knn",
    "mask_outliers",
    "minmax_scale",
    "rfe_cv",
    "select_features",
    "to_wide",
]


def _numeric(x: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(x, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame (rows = ROIs, columns = features), got {type(x).__name__}")
    bad = [c for c in x.columns if not pd.api.types.is_numeric_dtype(x[c])]
    if bad:
        raise ValueError(f"non-numeric feature columns {bad[:5]}{' …' if len(bad) > 5 else ''}; "
                         "pass only the feature values (ids go in the index)")
    return x.astype(np.float64)


def to_wide(features: Iterable[Mapping[str, float]], index: Sequence | None = None) -> pd.DataFrame:
    """A wide frame (rows = ROIs, columns = feature names, sorted) from per-ROI feature mappings,
    e.g. the ``features`` map column of ``gold.radiomics_features`` after ``toPandas()``.
    A feature missing for a ROI is NaN."""
    rows = [dict(f or {}) for f in features]
    frame = pd.DataFrame(rows, index=None if index is None else list(index), dtype=np.float64)
    return frame.reindex(columns=sorted(frame.columns))


def drop_constant(x: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """Drop columns with at most one distinct non-missing value. Returns (frame, {column: reason})."""
    x = _numeric(x)
    dropped: dict[str, str] = {}
    for c in x.columns:
        values = x[c].dropna().unique()
        if len(values) == 0:
            dropped[str(c)] = "constant: no values"
        elif len(values) == 1:
            dropped[str(c)] = f"constant: every value is {values[0]:.6g}"
    return x.drop(columns=list(dropped)), dropped


def mask_outliers(x: pd.DataFrame, *, z: float = 3.0) -> tuple[pd.DataFrame, dict[str, int]]:
    """Values with |z-score| > ``z`` → NaN, per column (mean and population standard deviation,
    ddof 0, over the non-missing values). Returns (frame, {column: values masked}) — columns with
    none masked are left out of the mapping."""
    x = _numeric(x)
    mean = x.mean(axis=0, skipna=True)
    sd = x.std(axis=0, ddof=0, skipna=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = (x - mean) / sd.where(sd > 0)
    outlier = scores.abs() > z
    counts = {str(c): int(n) for c, n in outlier.sum(axis=0).items() if n}
    return x.mask(outlier), counts


def impute_knn(x: pd.DataFrame, *, k: int = 5) -> tuple[pd.DataFrame, int]:
    """Fill each missing value with the mean of its column over the ``k`` nearest rows that have
    it (scikit-learn's ``KNNImputer``, uniform weights, nan-Euclidean distance) computed on
    z-scored columns and mapped back to the original units. Returns (frame, values imputed)."""
    from sklearn.impute import KNNImputer

    x = _numeric(x)
    missing = int(x.isna().to_numpy().sum())
    if missing == 0:
        return x.copy(), 0
    empty = [str(c) for c in x.columns if x[c].isna().all()]
    if empty:
        raise ValueError(f"columns {empty} have no values to impute from; run drop_constant first")
    mean = x.mean(axis=0)
    sd = x.std(axis=0, ddof=0).replace(0.0, 1.0)
    z = ((x - mean) / sd).to_numpy()
    filled = KNNImputer(n_neighbors=k, weights="uniform").fit_transform(z)
    out = pd.DataFrame(filled, index=x.index, columns=x.columns) * sd + mean
    # observed values pass through exactly (no round trip through the z-scores)
    out = x.where(x.notna(), out)
    return out, missing


def minmax_scale(x: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, tuple[float, float]]]:
    """Scale every column to [0, 1]: (v - min) / (max - min). A constant column becomes 0.
    Returns (frame, {column: (min, max)}) so new rows can be scaled the same way."""
    x = _numeric(x)
    lo, hi = x.min(axis=0), x.max(axis=0)
    span = (hi - lo).where(hi > lo, 1.0)
    return (x - lo) / span, {str(c): (float(lo[c]), float(hi[c])) for c in x.columns}


def drop_correlated(x: pd.DataFrame, *, threshold: float = 0.8) -> tuple[pd.DataFrame, dict[str, str]]:
    """Drop one column of each pair with |Pearson r| > ``threshold``.

    Repeatedly take the remaining pair with the highest |r| (ties: first in column order); of the
    two, drop the one whose mean |r| with the other remaining columns (the pair itself left out)
    is higher, i.e. keep the less correlated one (ties: drop the later column). Stop when no pair
    exceeds the threshold. Returns (frame, {column: reason})."""
    x = _numeric(x)
    cols = [str(c) for c in x.columns]
    if len(cols) > 1:
        with np.errstate(invalid="ignore", divide="ignore"):   # a constant column has no r: counted as 0
            r = np.abs(np.nan_to_num(np.corrcoef(x.to_numpy(), rowvar=False), nan=0.0))
    else:
        r = np.zeros((len(cols), len(cols)))
    np.fill_diagonal(r, 0.0)
    alive = np.ones(len(cols), dtype=bool)
    dropped: dict[str, str] = {}
    while alive.sum() > 1:
        sub = np.where(alive[:, None] & alive[None, :], r, 0.0)
        upper = np.triu(sub, k=1)
        flat = int(np.argmax(upper))
        i, j = divmod(flat, len(cols))
        if upper[i, j] <= threshold:
            break
        others = alive.copy()
        others[[i, j]] = False
        n_other = int(others.sum())
        mean_i = float(r[i, others].sum() / n_other) if n_other else 0.0
        mean_j = float(r[j, others].sum() / n_other) if n_other else 0.0
        drop, keep = (i, j) if mean_i > mean_j else (j, i)
        dropped[cols[drop]] = (f"correlated: |r| = {upper[i, j]:.3f} with {cols[keep]} (kept); mean |r| with the "
                               f"rest {max(mean_i, mean_j):.3f} vs {min(mean_i, mean_j):.3f}")
        alive[drop] = False
    return x.loc[:, [c for c, a in zip(x.columns, alive, strict=True) if a]], dropped


def rfe_cv(x: pd.DataFrame, y: Sequence, *, folds: int = 5, seed: int = 0, n_estimators: int = 100,
           step: int = 1, min_features: int = 1) -> tuple[list[str], dict[int, float]]:
    """Recursive feature elimination with a random forest (``n_estimators`` trees, seeded) and
    stratified ``folds``-fold cross-validation scored by balanced accuracy (scikit-learn ``RFECV``).
    Removes ``step`` features per round, down to ``min_features``; the count with the best mean
    score wins (the smallest count among ties). Returns (kept columns in input order,
    {feature count: mean balanced accuracy})."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.feature_selection import RFECV
    from sklearn.model_selection import StratifiedKFold

    x = _numeric(x)
    if x.isna().to_numpy().any():
        raise ValueError("rfe_cv needs complete data: impute missing values first (impute_knn)")
    labels = np.asarray(y)
    if labels.shape[0] != x.shape[0]:
        raise ValueError(f"{x.shape[0]} rows but {labels.shape[0]} labels")
    _, per_class = np.unique(labels, return_counts=True)
    if len(per_class) < 2 or per_class.min() < folds:
        raise ValueError(f"rfe_cv needs >= 2 classes with >= {folds} rows each (stratified {folds}-fold), "
                         f"got class sizes {per_class.tolist()}")
    forest = RandomForestClassifier(n_estimators=n_estimators, random_state=seed, n_jobs=1)
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    rfe = RFECV(forest, step=step, min_features_to_select=min_features, cv=cv, scoring="balanced_accuracy",
                n_jobs=1)
    rfe.fit(x.to_numpy(), labels)
    counts = [int(n) for n in rfe.cv_results_["n_features"]]
    scores = {n: float(s) for n, s in zip(counts, rfe.cv_results_["mean_test_score"], strict=True)}
    kept = [str(c) for c, s in zip(x.columns, rfe.support_, strict=True) if s]
    return kept, scores


@dataclass
class SelectionReport:
    """What :func:`select_features` did.

    input_features: the columns given; kept: the columns selected, in input order; dropped:
    {column: "<step>: reason"} for every other column; outliers_masked: {column: values set
    missing}; imputed: values filled by KNN; scale: {kept column: (min, max)} used by the min-max
    step (apply the same to new rows); rfe_scores: {feature count: mean CV balanced accuracy}, or
    None when no labels were given."""

    input_features: list[str]
    kept: list[str]
    dropped: dict[str, str] = field(default_factory=dict)
    outliers_masked: dict[str, int] = field(default_factory=dict)
    imputed: int = 0
    scale: dict[str, tuple[float, float]] = field(default_factory=dict)
    rfe_scores: dict[int, float] | None = None
    settings: dict[str, float | int] = field(default_factory=dict)

    def reason(self, feature: str) -> str:
        """Why ``feature`` was dropped ("kept" if it was not)."""
        if feature in self.kept:
            return "kept"
        return self.dropped[feature]

    def to_dict(self) -> dict:
        return asdict(self)


def select_features(x: pd.DataFrame, y: Sequence | None = None, *, z: float = 3.0, k: int = 5,
                    threshold: float = 0.8, folds: int = 5, seed: int = 0, n_estimators: int = 100,
                    step: int = 1) -> tuple[pd.DataFrame, SelectionReport]:
    """Run the six steps on ``x`` (rows = ROIs, columns = features) and return the selected,
    min-max scaled frame and the report. Without ``y`` the RFE step is skipped."""
    x = _numeric(x)
    inputs = [str(c) for c in x.columns]
    x.columns = inputs
    dropped: dict[str, str] = {}
    cur, gone = drop_constant(x)
    dropped.update(gone)
    cur, masked = mask_outliers(cur, z=z)
    # a column can lose all but one distinct value to the outlier mask: it carries no information now
    cur, gone = drop_constant(cur)
    dropped.update({c: f"{reason} after outlier masking" for c, reason in gone.items()})
    cur, imputed = impute_knn(cur, k=k)
    cur, scale = minmax_scale(cur)
    cur, gone = drop_correlated(cur, threshold=threshold)
    dropped.update(gone)
    scores = None
    if y is not None:
        kept, scores = rfe_cv(cur, y, folds=folds, seed=seed, n_estimators=n_estimators, step=step)
        best = max(scores.values())
        for c in cur.columns:
            if c not in kept:
                dropped[c] = (f"rfe: not among the {len(kept)} features with the best mean balanced accuracy "
                              f"{best:.3f} ({folds}-fold CV)")
        cur = cur.loc[:, kept]
    report = SelectionReport(
        input_features=inputs, kept=list(cur.columns), dropped={c: dropped[c] for c in inputs if c in dropped},
        outliers_masked=masked, imputed=imputed, scale={c: scale[c] for c in cur.columns}, rfe_scores=scores,
        settings={"z": z, "k": k, "threshold": threshold, "folds": folds, "seed": seed,
                  "n_estimators": n_estimators, "step": step})
    return cur, report
