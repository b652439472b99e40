"""Figures logged with every model: training curves, ROC curves, confusion matrix (matplotlib, no pyplot)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["confusion_png", "roc_png", "training_curves_png"]


def _figure(**kwargs):
    """A figure that is not pyplot's: no backend is switched, so a notebook's inline backend keeps
    working after training (the file is written by the figure's own Agg canvas)."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def training_curves_png(history: Sequence[dict], out: Path, *, title: str = "") -> Path:
    """Loss (train, validation) and validation AUC per epoch."""
    epochs = [h["epoch"] + 1 for h in history]
    fig = _figure(figsize=(9, 3.5), dpi=100)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    if any("val_loss" in h for h in history):
        ax1.plot(epochs, [h.get("val_loss", np.nan) for h in history], "o-", label="validation")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("cross-entropy")
    ax1.legend()
    ax2.plot(epochs, [h.get("val_auc", np.nan) for h in history], "o-", color="tab:green")
    ax2.set_ylim(0, 1)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation AUC")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out)
    return out


def roc_png(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], out: Path, *, title: str = "") -> Path:
    """``curves``: label -> (fpr, tpr, auc); the chance diagonal for reference."""
    fig = _figure(figsize=(4.5, 4.5), dpi=100)
    ax = fig.subplots()
    for label, (fpr, tpr, auc) in curves.items():
        ax.step(fpr, tpr, where="post", label=f"{label} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title or "ROC, test split")
    fig.tight_layout()
    fig.savefig(out)
    return out


def confusion_png(counts: dict[str, int], out: Path, *, threshold: float, split: str = "test",
                  labels=("negative", "positive")) -> Path:
    """2x2 matrix: rows = truth, columns = prediction at ``threshold``."""
    m = np.array([[counts["tn"], counts["fp"]], [counts["fn"], counts["tp"]]])
    fig = _figure(figsize=(4, 3.6), dpi=100)
    ax = fig.subplots()
    ax.imshow(m, cmap="Blues")
    for i in range(2):
        for j in range(2):
            ax.text(j, i, str(m[i, j]), ha="center", va="center",
                    color="white" if m[i, j] > m.max() / 2 else "black", fontsize=14)
    ax.set_xticks([0, 1], [f"pred. {lab}" for lab in labels])
    ax.set_yticks([0, 1], [f"true {lab}" for lab in labels])
    ax.set_title(f"{split} split, threshold {threshold:g}")
    fig.tight_layout()
    fig.savefig(out)
    return out
