r"""Binary classification metrics with patient-level bootstrap confidence intervals (pure numpy).

Inputs are 1-D arrays of equal length: ``y`` true labels in {0, 1}, ``score`` a real-valued score
(higher = more likely positive; a probability or, for the diameter baseline, a diameter in mm),
``patients`` the patient id of each row. A row is predicted positive when ``score >= threshold``.

Definitions (TP, FP, TN, FN counted at the threshold):

    AUC                 P(score_pos > score_neg) + 0.5 P(score_pos = score_neg)
                        (Mann-Whitney U / (n_pos n_neg), ties get average ranks = sklearn's roc_auc_score)
    sensitivity/recall  TP / (TP + FN)
    specificity         TN / (TN + FP)
    precision/PPV       TP / (TP + FP)
    NPV                 TN / (TN + FN)
    F1                  2 TP / (2 TP + FP + FN)
    balanced accuracy   (sensitivity + specificity) / 2

A ratio whose denominator is 0 is undefined and returned as NaN (scikit-learn returns 0 with a
warning); AUC is NaN when only one class is present.

Confidence intervals (:func:`metrics_table`): percentile bootstrap over PATIENTS. Each of
``resamples`` (default 1000) draws as many patients as there are, with replacement, and takes all
rows of every drawn patient (a patient drawn twice contributes its rows twice), so rows of one
patient -- correlated nodules -- stay together, as the splits do. The interval is the
``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled statistic over the resamples
where it is defined; ``n_valid`` says how many those were.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "METRIC_NAMES",
    "MetricCI",
    "binary_metrics",
    "bootstrap_ci",
    "confusion",
    "metrics_table",
    "patient_bootstrap_indices",
    "roc_auc",
    "roc_curve",
    "youden_threshold",
]

METRIC_NAMES = ("auc", "sensitivity", "specificity", "precision", "npv", "f1", "balanced_accuracy")


def _arrays(y: Sequence, score: Sequence) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(np.int64).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"y has {y.size} rows, score {s.size}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("y must hold only 0 and 1")
    if np.isnan(s).any():
        raise ValueError("score holds NaN")
    return y, s


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else float("nan")


def _average_ranks(s: np.ndarray) -> np.ndarray:
    """1-based ranks of ``s``; tied values get the mean of their ranks."""
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    first = np.r_[True, sorted_s[1:] != sorted_s[:-1]]
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], s.size]                       # exclusive
    mean_rank = (starts + ends + 1) / 2.0                  # mean of ranks starts+1 .. ends
    ranks = np.empty(s.size)
    ranks[order] = mean_rank[group]
    return ranks


def roc_auc(y: Sequence, score: Sequence) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted 1/2); NaN with one class only."""
    y, s = _arrays(y, score)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(s)
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_curve(y: Sequence, score: Sequence) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds): one point per distinct score, from the highest threshold down,
    starting at (0, 0) with threshold +inf (as scikit-learn with drop_intermediate=False)."""
    y, s = _arrays(y, score)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last = np.r_[s_sorted[1:] != s_sorted[:-1], True]      # last row of each distinct score
    tps = np.cumsum(y_sorted)[last]
    fps = np.cumsum(1 - y_sorted)[last]
    n_pos, n_neg = max(int(y.sum()), 1), max(int((1 - y).sum()), 1)
    fpr = np.r_[0.0, fps / n_neg]
    tpr = np.r_[0.0, tps / n_pos]
    return fpr, tpr, np.r_[np.inf, s_sorted[last]]


def confusion(y: Sequence, score: Sequence, threshold: float) -> dict[str, int]:
    """Counts ``tp, fp, tn, fn`` with ``score >= threshold`` predicted positive."""
    y, s = _arrays(y, score)
    pred = s >= threshold
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    tn = int(np.sum(~pred & (y == 0)))
    return {"tp": tp, "fp": fp, "tn": tn, "fn": fn}


def binary_metrics(y: Sequence, score: Sequence, threshold: float) -> dict[str, float]:
    """Every metric of :data:`METRIC_NAMES` (module docstring) at ``threshold``."""
    c = confusion(y, score, threshold)
    tp, fp, tn, fn = c["tp"], c["fp"], c["tn"], c["fn"]
    sens = _ratio(tp, tp + fn)
    spec = _ratio(tn, tn + fp)
    return {
        "auc": roc_auc(y, score),
        "sensitivity": sens,
        "specificity": spec,
        "precision": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "balanced_accuracy": (sens + spec) / 2.0,
    }


def youden_threshold(y: Sequence, score: Sequence) -> float:
    """The score threshold maximising sensitivity + specificity - 1 (Youden's J) on these rows."""
    fpr, tpr, thr = roc_curve(y, score)
    j = tpr - fpr
    best = int(np.argmax(j[1:])) + 1                       # skip the +inf starting point
    return float(thr[best])


def patient_bootstrap_indices(patients: Sequence, resamples: int,
                              rng: np.random.Generator) -> list[np.ndarray]:
    """``resamples`` row-index arrays, each the rows of n patients drawn with replacement
    (n = number of distinct patients)."""
    patients = np.asarray(patients).ravel()
    uniq, inverse = np.unique(patients, return_inverse=True)
    order = np.argsort(inverse, kind="mergesort")
    counts = np.bincount(inverse, minlength=uniq.size)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    out = []
    for _ in range(resamples):
        drawn = rng.integers(0, uniq.size, size=uniq.size)
        out.append(np.concatenate([order[starts[p]:starts[p] + counts[p]] for p in drawn]))
    return out


def bootstrap_ci(statistic: Callable[[np.ndarray], float], patients: Sequence, *, resamples: int = 1000,
                 level: float = 0.95, rng: np.random.Generator) -> tuple[float, float, int]:
    """Percentile CI of ``statistic(row_indices)`` over patient resamples: (low, high, n_valid)."""
    values = np.array([statistic(idx) for idx in patient_bootstrap_indices(patients, resamples, rng)])
    return _interval(values, level)


def _interval(values: np.ndarray, level: float) -> tuple[float, float, int]:
    ok = values[~np.isnan(values)]
    if ok.size == 0:
        return float("nan"), float("nan"), 0
    lo, hi = np.quantile(ok, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi), int(ok.size)


@dataclass(frozen=True)
class MetricCI:
    metric: str
    estimate: float
    ci_low: float
    ci_high: float
    n_valid: int          # resamples where the metric was defined
    model: str = ""       # e.g. the model name or "diameter baseline"

    def as_dict(self) -> dict:
        return asdict(self)


def metrics_table(y: Sequence, score: Sequence, patients: Sequence, *, threshold: float,
                  resamples: int = 1000, level: float = 0.95, rng: np.random.Generator,
                  model: str = "", metrics: Sequence[str] = METRIC_NAMES) -> list[MetricCI]:
    """Point estimate and patient-bootstrap CI of each of ``metrics`` (one shared set of resamples)."""
    y, s = _arrays(y, score)
    patients = np.asarray(patients).ravel()
    if patients.shape != y.shape:
        raise ValueError(f"patients has {patients.size} rows, y {y.size}")
    point = binary_metrics(y, s, threshold)
    draws = {m: [] for m in metrics}
    for idx in patient_bootstrap_indices(patients, resamples, rng):
        got = binary_metrics(y[idx], s[idx], threshold)
        for m in metrics:
            draws[m].append(got[m])
    rows = []
    for m in metrics:
        lo, hi, n = _interval(np.asarray(draws[m], dtype=np.float64), level)
        rows.append(MetricCI(m, point[m], lo, hi, n, model))
    return rows
