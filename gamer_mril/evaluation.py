"""Evaluation of the classifier: Table II, attention weights, ROC curves, and which
model scores (and explains) each assessed session (docs/method.md#51-table-ii-and-its-intervals).

:func:`binary_metrics` gives AUC (the Mann-Whitney statistic, :func:`roc_auc`), accuracy,
specificity and sensitivity at a threshold (a session is called severe when p >= 0.5);
:func:`table_ii` assembles them per fold, their mean and the test set, each with a
subject-grouped bootstrap interval (:mod:`gamer_mril.bootstrap`); :func:`mean_attention`
and :func:`plot_roc` make the attention summary and the ROC figure;
:func:`assessment_predictions` picks, for each assessed session, the model that never
trained on it. Nothing here imports torch or snakemake.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from . import CONTRASTS
from .io import atomic_path, atomic_write_text
from .modelfiles import best_fold, fold_of, read_model_meta


def roc_auc(label, prob) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count one half), NaN with one class."""
    from scipy.stats import rankdata

    label, prob = np.asarray(label).astype(int), np.asarray(prob, dtype=float)
    pos = label == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0 or not np.isfinite(prob).all():
        return float("nan")
    ranks = rankdata(prob)
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


METRIC_COLUMNS = ("auc", "accuracy", "specificity", "sensitivity", "n")


def binary_metrics(label, prob, threshold: float = 0.5) -> dict:
    """AUC, accuracy, specificity, sensitivity (predicted severe when prob >= threshold), n.

    AUC is NaN with one class only; specificity (sensitivity) NaN without negatives
    (positives).
    """
    label = np.asarray(label).astype(int).reshape(-1)
    prob = np.asarray(prob, dtype=float).reshape(-1)
    if label.shape != prob.shape:
        raise ValueError(f"{label.size} labels but {prob.size} probabilities")
    if not np.isin(label, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    pred = prob >= threshold
    pos, neg = label == 1, label == 0
    tp, tn = int((pred & pos).sum()), int((~pred & neg).sum())
    n = int(label.size)
    nan = float("nan")
    return dict(auc=roc_auc(label, prob),
                accuracy=(tp + tn) / n if n else nan,
                specificity=tn / int(neg.sum()) if neg.any() else nan,
                sensitivity=tp / int(pos.sum()) if pos.any() else nan,
                n=n)


def mean_of_folds(test_predictions: Mapping) -> pd.DataFrame:
    """Per session, the mean over fold models of the predicted probability.

    Every fold's frame must hold the same sessions (``ValueError`` otherwise). Returns
    subject, session, edss, label, prob (and logit = mean of the fold logits, for
    reference), in the first fold's row order.
    """
    keys = sorted(test_predictions)
    if not keys:
        raise ValueError("no fold predictions given")
    first = test_predictions[keys[0]]
    base = first[["subject", "session", "edss", "label"]].reset_index(drop=True)
    ref = set(zip(base["subject"], base["session"]))
    probs, logits = [], []
    for k in keys:
        df = test_predictions[k]
        if set(zip(df["subject"], df["session"])) != ref or len(df) != len(base):
            raise ValueError(f"fold {k}'s test predictions cover other sessions than fold "
                             f"{keys[0]}'s")
        merged = base.merge(df, on=["subject", "session"], how="left",
                            suffixes=("", "_fold"), validate="one_to_one")
        if not (merged["label"] == merged["label_fold"]).all():
            raise ValueError(f"fold {k}: labels disagree with fold {keys[0]}'s")
        probs.append(merged["prob"].to_numpy(float))
        if "logit" in merged:
            logits.append(merged["logit"].to_numpy(float))
    out = base.copy()
    out["prob"] = np.mean(probs, axis=0)
    if len(logits) == len(probs):
        out["logit"] = np.mean(logits, axis=0)
    return out


#: Metrics of Table II that get a confidence interval.
INTERVAL_METRICS = ("auc", "accuracy", "specificity", "sensitivity")


def _metrics(frame: pd.DataFrame, threshold: float) -> dict:
    m = binary_metrics(frame["label"], frame["prob"], threshold)
    return {k: m[k] for k in INTERVAL_METRICS}


def _fold_mean_metrics(frame: pd.DataFrame, threshold: float) -> dict:
    """The unweighted mean over folds (column ``fold``) of each fold's metrics."""
    per_fold = [_metrics(df, threshold) for _, df in frame.groupby("fold")]
    return {k: float(np.mean([m[k] for m in per_fold])) for k in INTERVAL_METRICS}


def table_ii(val_predictions: Mapping, test_predictions: Mapping,
             threshold: float = 0.5, n_resamples: int | None = None,
             seed: int = 0) -> pd.DataFrame:
    """Table II: per-fold validation metrics, their mean, and the test set's metrics,
    each with a 95% subject-grouped bootstrap interval (:mod:`gamer_mril.bootstrap`:
    ``<metric>_low``, ``<metric>_high``; ``n_resamples`` resamples, 2,000 by default,
    seeded; 0 leaves the intervals out).

    ``val_predictions`` / ``test_predictions``: {fold: predictions frame (label, prob,
    subject, session)}; the same folds in both. Rows (columns ``set``, ``model``, then
    auc, accuracy, specificity, sensitivity, n, then the interval bounds):

    * ``validation`` / ``fold k`` for each fold, on its own validation sessions;
    * ``validation`` / ``mean``: the unweighted mean over folds of each metric (a NaN in
      any fold makes the mean NaN), ``n`` the total of the folds;
    * ``test`` / ``best fold k``: the test set scored by the fold model with the highest
      validation AUC (ties: the lowest fold);
    * ``test`` / ``mean of folds``: the test set scored by the mean over fold models of
      each session's probability (:func:`mean_of_folds`).

    The mean row's interval resamples the subjects of all folds together (each subject is
    in one fold) and averages the folds' metrics in each resample.
    """
    from .bootstrap import N_RESAMPLES, grouped_bootstrap

    n_resamples = N_RESAMPLES if n_resamples is None else int(n_resamples)
    folds = sorted(val_predictions)
    if not folds:
        raise ValueError("no folds given")
    if sorted(test_predictions) != folds:
        raise ValueError(f"validation folds {folds} and test folds "
                         f"{sorted(test_predictions)} differ")
    rows = []
    for k in folds:
        df = val_predictions[k]
        rows.append(dict(set="validation", model=f"fold {k}",
                         **binary_metrics(df["label"], df["prob"], threshold)))
    per_fold = pd.DataFrame(rows)
    mean = {c: float(per_fold[c].mean(skipna=False)) for c in METRIC_COLUMNS if c != "n"}
    rows.append(dict(set="validation", model="mean", **mean, n=int(per_fold["n"].sum())))
    aucs = per_fold["auc"].to_numpy(float)
    if np.isnan(aucs).all():
        best = folds[0]
    else:
        best = folds[int(np.nanargmax(aucs))]     # first maximum: ties -> lowest fold
    df = test_predictions[best]
    rows.append(dict(set="test", model=f"best fold {best}",
                     **binary_metrics(df["label"], df["prob"], threshold)))
    combined = mean_of_folds(test_predictions)
    rows.append(dict(set="test", model="mean of folds",
                     **binary_metrics(combined["label"], combined["prob"], threshold)))
    columns = ["set", "model", *METRIC_COLUMNS]
    if n_resamples:
        pooled = pd.concat([val_predictions[k].assign(fold=k) for k in folds],
                           ignore_index=True)
        samples = [(val_predictions[k], _metrics) for k in folds]
        samples += [(pooled, _fold_mean_metrics), (test_predictions[best], _metrics),
                    (combined, _metrics)]
        for row, (frame, stat) in zip(rows, samples):
            ci = grouped_bootstrap(frame, lambda f, stat=stat: stat(f, threshold),
                                   n_resamples=n_resamples, seed=seed)
            for k in INTERVAL_METRICS:
                row[f"{k}_low"], row[f"{k}_high"] = ci[k][:2]
        columns += [f"{k}_{b}" for k in INTERVAL_METRICS for b in ("low", "high")]
    return pd.DataFrame(rows, columns=columns)


def mean_attention(predictions, contrasts: Sequence[str] = CONTRASTS,
                   threshold: float = 0.5) -> pd.DataFrame:
    """Mean (and sd) attention weight per contrast over correctly classified sessions.

    ``predictions``: a frame from :func:`predict` or a list / dict of such frames (they
    are concatenated). Correct: (prob >= threshold) == label. Columns: contrast,
    mean_attention, sd_attention, n (correct sessions), one row per contrast.
    """
    if isinstance(predictions, Mapping):
        predictions = list(predictions.values())
    if not isinstance(predictions, pd.DataFrame):
        predictions = pd.concat(list(predictions), ignore_index=True)
    correct = (predictions["prob"].to_numpy(float) >= threshold) == \
        predictions["label"].to_numpy(int).astype(bool)
    sub = predictions[correct]
    rows = []
    for c in contrasts:
        vals = sub[f"a_{c}"].to_numpy(float)
        rows.append(dict(contrast=c,
                         mean_attention=float(vals.mean()) if vals.size else float("nan"),
                         sd_attention=float(vals.std(ddof=1)) if vals.size > 1 else float("nan"),
                         n=int(vals.size)))
    return pd.DataFrame(rows, columns=["contrast", "mean_attention", "sd_attention", "n"])


def plot_roc(curves: Mapping, path, title: str | None = None) -> None:
    """ROC curves {name: (label, prob)} in one PNG at ``path`` (atomic write).

    Uses matplotlib's Agg canvas directly (no pyplot, no global backend change).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_curve

    fig = Figure(figsize=(5, 5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1, label="chance")
    for name, (label, prob) in curves.items():
        label = np.asarray(label).astype(int)
        prob = np.asarray(prob, dtype=float)
        auc = roc_auc(label, prob)
        if len(np.unique(label)) < 2:
            warnings.warn(f"ROC curve {name!r}: one class only, not drawn")
            continue
        fpr, tpr, _ = roc_curve(label, prob)
        ax.plot(fpr, tpr, lw=1.5, label=f"{name} (AUC {auc:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("1 - specificity (false positive rate)")
    ax.set_ylabel("sensitivity (true positive rate)")
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(str(tmp), format="png")



def assessment_predictions(val_predictions: Mapping, test_predictions: Mapping,
                           best: int) -> pd.DataFrame:
    """Each assessed session with the prediction of the model that explains it.

    Validation sessions of fold k are scored by fold k's model (``set`` = ``cv``), test
    sessions by the best fold's model (``set`` = ``test``; :func:`best_fold`), so no
    session is scored or explained by a model that trained on it. Columns: subject,
    session, edss, label, set, fold (the model), logit, prob, a_<contrast>...,
    prob_mean_of_folds (test sessions only; NaN for cv).
    """
    frames = []
    for k in sorted(val_predictions):
        df = val_predictions[k].copy()
        df.insert(4, "set", "cv")
        df.insert(5, "fold", int(k))
        frames.append(df)
    if test_predictions:
        df = test_predictions[best].copy()
        df.insert(4, "set", "test")
        df.insert(5, "fold", int(best))
        mean = mean_of_folds(test_predictions)[["subject", "session", "prob"]]
        df = df.merge(mean.rename(columns={"prob": "prob_mean_of_folds"}),
                      on=["subject", "session"], how="left", validate="one_to_one")
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    if "prob_mean_of_folds" not in out:
        out["prob_mean_of_folds"] = np.nan
    dup = out.duplicated(["subject", "session"])
    if dup.any():
        row = out[dup].iloc[0]
        raise ValueError(f"sub-{row['subject']} ses-{row['session']} is predicted twice "
                         f"(validation and test overlap)")
    return out.sort_values(["subject", "session"], kind="stable").reset_index(drop=True)


def frozen_predictions(predictions: Mapping, best: int) -> tuple:
    """Frozen-model mode: (per-session table, performance table) from every fold model's
    predictions of the same sessions (``{fold: frame}``).

    The session table holds the best fold's prediction (the model that explains,
    ``set`` = ``new``) and ``prob_mean_of_folds``; the performance table has one row per
    fold model and one for the mean of the folds (AUC etc. when the sessions hold both
    classes, NaN otherwise).
    """
    table = assessment_predictions({}, predictions, best)
    table["set"] = "new"
    rows = [dict(model=f"fold {k}", **binary_metrics(df["label"], df["prob"]))
            for k, df in sorted(predictions.items())]
    mean = mean_of_folds(predictions)
    rows.append(dict(model="mean of folds", **binary_metrics(mean["label"], mean["prob"])))
    return table, pd.DataFrame(rows, columns=["model", *METRIC_COLUMNS])


# ------------------------------------------------------------------ the rule's job

def _read_predictions(path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype={"subject": str, "session": str})


def run_evaluate_models(val_paths: Sequence, test_paths: Sequence, table_out, attention_out,
                        roc_out, predictions_out, *, log_file=None, threads: int = 1) -> None:
    """Rule evaluate_models: Table II, attention weights, ROC curves, and each assessed
    session's prediction by the model that explains it. ``val_paths`` / ``test_paths``:
    each fold's predictions (``<models>/fold-<k>/...``)."""
    from .jobs import step

    with step("evaluate_models", inputs={"val": list(val_paths), "test": list(test_paths)},
              outputs=[table_out, attention_out, roc_out, predictions_out],
              log_file=log_file, threads=threads):
        folds = [fold_of(Path(p).parent) for p in val_paths]
        val = {k: _read_predictions(p) for k, p in zip(folds, val_paths)}
        test = {fold_of(Path(p).parent): _read_predictions(p) for p in test_paths}
        table = table_ii(val, test)
        atomic_write_text(table_out, table.to_csv(sep="\t", index=False))
        att = mean_attention(list(val.values()) + list(test.values()))
        atomic_write_text(attention_out, att.to_csv(sep="\t", index=False))
        curves = {f"validation fold {k}": (v.label, v.prob) for k, v in val.items()}
        mean = mean_of_folds(test)
        curves["test, mean of folds"] = (mean.label, mean.prob)
        plot_roc(curves, roc_out)
        best = best_fold({k: read_model_meta(Path(p).parent) for k, p in zip(folds, val_paths)})
        pred = assessment_predictions(val, test, best)
        atomic_write_text(predictions_out, pred.to_csv(sep="\t", index=False))
