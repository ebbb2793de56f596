"""The classifier's figures (docs/method.md#51-table-ii-and-its-intervals): the ROC
curves, each fold's training curves with the kept epoch, and the reliability diagram with
its table (:func:`reliability`). Every figure is drawn on its own Agg canvas and written
atomically (:mod:`gamer_mril.figures`); the numbers of Table II are
:mod:`gamer_mril.evaluation`'s. Nothing here imports torch or snakemake.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd

from .figures import new_figure, save_png
from .statistics import auc


def plot_roc(curves: Mapping, path, title: str | None = None) -> None:
    """ROC curves {name: (label, prob)} in one PNG at ``path`` (atomic write).

    Uses matplotlib's Agg canvas directly (no pyplot, no global backend change).
    """
    from sklearn.metrics import roc_curve

    fig = new_figure(5, 5)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1, label="chance")
    for name, (label, prob) in curves.items():
        label = np.asarray(label).astype(int)
        prob = np.asarray(prob, dtype=float)
        area = auc(label, prob)
        if len(np.unique(label)) < 2:
            warnings.warn(f"ROC curve {name!r}: one class only, not drawn")
            continue
        fpr, tpr, _ = roc_curve(label, prob)
        ax.plot(fpr, tpr, lw=1.5, label=f"{name} (AUC {area:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("1 - specificity (false positive rate)")
    ax.set_ylabel("sensitivity (true positive rate)")
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    save_png(fig, path)


def plot_training_curves(epochs: Mapping, chosen: Mapping, path) -> None:
    """Per fold, the training and validation loss and the validation AUC per epoch, the
    kept epoch marked. ``epochs``: {fold: epochs.tsv frame}; ``chosen``: {fold: epoch}."""
    folds = sorted(epochs)
    fig = new_figure(4.2 * len(folds), 5.5)
    for j, k in enumerate(folds):
        df = epochs[k]
        top = fig.add_subplot(2, len(folds), j + 1)
        top.plot(df["epoch"], df["train_loss"], label="training loss")
        top.plot(df["epoch"], df["val_loss"], label="validation loss")
        top.set_title(f"fold {k}")
        top.set_xlabel("epoch")
        bottom = fig.add_subplot(2, len(folds), len(folds) + j + 1)
        bottom.plot(df["epoch"], df["val_auc"], color="C2", label="validation AUC")
        if "val_auc_smoothed" in df:
            bottom.plot(df["epoch"], df["val_auc_smoothed"], color="C2", ls=":",
                        label="validation AUC, trailing mean")
        bottom.set_ylim(0, 1.02)
        bottom.set_xlabel("epoch")
        for ax in (top, bottom):
            if chosen.get(k) is not None:
                ax.axvline(chosen[k], color="0.3", ls="--", lw=1, label="kept epoch")
            ax.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path)


def reliability(label, prob, n_bins: int = 5) -> pd.DataFrame:
    """Observed fraction of severe sessions per bin of predicted probability (equal-width
    bins on [0, 1]; empty bins left out): bin_low, bin_high, n, mean_prob, observed."""
    label = np.asarray(label, dtype=float)
    prob = np.asarray(prob, dtype=float)
    edges = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.digitize(prob, edges[1:-1]), 0, n_bins - 1)
    rows = [dict(bin_low=edges[b], bin_high=edges[b + 1], n=int((which == b).sum()),
                 mean_prob=float(prob[which == b].mean()),
                 observed=float(label[which == b].mean()))
            for b in range(n_bins) if (which == b).any()]
    return pd.DataFrame(rows, columns=["bin_low", "bin_high", "n", "mean_prob", "observed"])


def plot_reliability(curves: Mapping, path, n_bins: int = 5) -> None:
    """Reliability diagram {name: (label, prob)}: observed against predicted probability,
    the marker size growing with the sessions in the bin."""
    fig = new_figure(5, 5)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1, label="perfect calibration")
    for name, (label, prob) in curves.items():
        table = reliability(label, prob, n_bins)
        ax.plot(table["mean_prob"], table["observed"], marker="o", label=name)
        ax.scatter(table["mean_prob"], table["observed"], s=10 + 8 * table["n"], alpha=0.3)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("predicted probability of severe")
    ax.set_ylabel("observed fraction severe")
    ax.set_aspect("equal")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    save_png(fig, path)
