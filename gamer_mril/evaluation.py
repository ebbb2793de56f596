"""Evaluation of the classifier: Table II, attention weights, the network against the
baselines, and which model scores (and explains) each assessed session
(docs/method.md#51-table-ii-and-its-intervals).

:func:`binary_metrics` gives AUC (the Mann-Whitney statistic, :func:`gamer_mril.statistics.auc`), accuracy,
specificity and sensitivity at a threshold (a session is called severe when p >= 0.5);
:func:`table_ii` assembles them per fold, their mean and the test set, each with a
subject-grouped bootstrap interval (:mod:`gamer_mril.statistics`); :func:`mean_attention`
makes the attention summary; :func:`baseline_comparison` sets the network against each
baseline on the same resamples; :func:`assessment_predictions` picks, for each assessed
session, the model that never trained on it. The figures (ROC, training curves,
reliability) are :mod:`gamer_mril.evalfigures`'. Nothing here imports torch or snakemake.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from . import CONTRASTS
from .evalfigures import plot_reliability, plot_roc, plot_training_curves
from .io import atomic_write_text
from .modelfiles import best_fold, fold_of, read_model_meta
from .statistics import N_RESAMPLES, auc, grouped_bootstrap


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
    return dict(auc=auc(label, prob),
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


def _metrics(frame, threshold: float) -> dict:
    """The interval metrics of a frame or a {column: array} mapping (label, prob)."""
    m = binary_metrics(frame["label"], frame["prob"], threshold)
    return {k: m[k] for k in INTERVAL_METRICS}


def _by_fold(frame) -> list:
    """A frame or {column: array} mapping split by its ``fold`` column, as mappings."""
    cols = {c: np.asarray(frame[c]) for c in frame.keys()}
    fold = cols["fold"]
    return [{c: a[fold == k] for c, a in cols.items()} for k in np.unique(fold)]


def _fold_mean_metrics(frame, threshold: float) -> dict:
    """The unweighted mean over folds (column ``fold``) of each fold's metrics."""
    per_fold = [_metrics(part, threshold) for part in _by_fold(frame)]
    return {k: float(np.mean([m[k] for m in per_fold])) for k in INTERVAL_METRICS}


def table_ii(val_predictions: Mapping, test_predictions: Mapping,
             threshold: float = 0.5, n_resamples: int | None = None,
             seed: int = 0) -> pd.DataFrame:
    """Table II: per-fold validation metrics, their mean, and the test set's metrics,
    each with a 95% subject-grouped bootstrap interval (:mod:`gamer_mril.statistics`:
    ``<metric>_low``, ``<metric>_high``; ``n_resamples`` resamples, 2,000 by default,
    seeded; 0 leaves the intervals out).

    ``val_predictions`` / ``test_predictions``: {fold: predictions frame (label, prob,
    subject, session)}; the same folds in both. Rows (columns ``set``, ``model``, then
    auc, accuracy, specificity, sensitivity, n, then the interval bounds):

    * ``validation`` / ``fold k`` for each fold, on its own validation sessions;
    * ``validation`` / ``mean``: the unweighted mean over folds of each metric (a NaN in
      any fold makes the mean NaN), ``n`` the total of the folds: the within-fold figure,
      which does not depend on the fold models sharing one probability scale;
    * ``validation`` / ``pooled``: the metrics of all validation sessions together, each
      scored by its own fold's model (what a pooled assessment set sees; it falls below
      the mean when the fold models' outputs sit on different scales);
    * ``test`` / ``best fold k``: the test set scored by the fold model with the highest
      validation AUC (ties: the lowest fold);
    * ``test`` / ``mean of folds``: the test set scored by the mean over fold models of
      each session's probability (:func:`mean_of_folds`).

    The mean row's interval resamples the subjects of all folds together (each subject is
    in one fold) and averages the folds' metrics in each resample.
    """

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
    pooled = pd.concat([val_predictions[k].assign(fold=k) for k in folds],
                       ignore_index=True)
    rows.append(dict(set="validation", model="pooled",
                     **binary_metrics(pooled["label"], pooled["prob"], threshold)))
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
        samples = [(val_predictions[k], _metrics) for k in folds]
        samples += [(pooled, _fold_mean_metrics), (pooled, _metrics),
                    (test_predictions[best], _metrics), (combined, _metrics)]
        for row, (frame, stat) in zip(rows, samples):
            ci = grouped_bootstrap(frame, lambda f, stat=stat: stat(f, threshold),
                                   n_resamples=n_resamples, seed=seed,
                                   columns=[c for c in ("label", "prob", "fold") if c in frame])
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


# ------------------------------------------------------------------ against the baselines
#: Table II's name for the network.
NETWORK = "GAMER-MRIL"


def with_classifier(table: pd.DataFrame, classifier: str) -> pd.DataFrame:
    """A Table II frame with a first column naming the classifier."""
    out = table.copy()
    out.insert(0, "classifier", classifier)
    return out


def _pooled_folds(predictions: Mapping) -> pd.DataFrame:
    return pd.concat([predictions[k].assign(fold=k) for k in sorted(predictions)],
                     ignore_index=True)


def _paired(network: pd.DataFrame, baseline: pd.DataFrame) -> pd.DataFrame:
    """The same sessions scored by both: subject, session, label, fold?, prob, prob_other."""
    keys = ["subject", "session"] + (["fold"] if "fold" in network else [])
    merged = network[keys + ["label", "prob"]].merge(
        baseline[keys + ["label", "prob"]].rename(columns={"prob": "prob_other",
                                                            "label": "label_other"}),
        on=keys, how="inner", validate="one_to_one")
    if len(merged) != len(network) or len(merged) != len(baseline):
        raise ValueError("the network and the baseline scored different sessions")
    if not (merged["label"] == merged["label_other"]).all():
        raise ValueError("the network's and the baseline's labels disagree")
    return merged


def _auc_difference(frame) -> dict:
    return {"difference": auc(frame["label"], frame["prob"])
            - auc(frame["label"], frame["prob_other"])}


def _fold_mean_auc_difference(frame) -> dict:
    diffs = [_auc_difference(part)["difference"] for part in _by_fold(frame)]
    return {"difference": float(np.mean(diffs))}


def verdict(baseline: str, where: str, auc_net: float, auc_base: float, low: float,
            high: float) -> str:
    """One plain sentence on whether the network beats a baseline."""
    figures = (f"AUC {auc_net:.2f} against {auc_base:.2f}, difference "
               f"{auc_net - auc_base:+.2f} (95% interval {low:+.2f} to {high:+.2f})")
    if not np.isfinite([auc_net, auc_base]).all():
        return f"{where}: the comparison with the {baseline} is undefined (one class only)."
    if low > 0:
        return f"{where}: the network beats the {baseline}: {figures}."
    if high < 0:
        return f"{where}: the network does NOT beat the {baseline}; it does worse: {figures}."
    return (f"{where}: the network does NOT beat the {baseline}; the difference is within "
            f"chance: {figures}.")


def baseline_comparison(val: Mapping, test: Mapping, baselines: Mapping,
                        n_resamples: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The network against each baseline, paired (the same sessions, the same resamples).

    ``val`` / ``test``: the network's {fold: predictions}; ``baselines``: {label: (val,
    test)} in the same form. Two rows per baseline: ``validation`` (the mean over folds of
    the within-fold AUC) and ``test`` (the mean of the fold models' probabilities). The
    interval of the AUC difference comes from one subject-grouped bootstrap in which both
    classifiers see the same resampled subjects. Columns: baseline, set, auc_network,
    auc_baseline, difference, difference_low, difference_high, verdict.
    """

    n_resamples = N_RESAMPLES if n_resamples is None else int(n_resamples)
    rows = []
    for label, (b_val, b_test) in baselines.items():
        cases = [("validation", "validation folds (mean of within-fold AUCs)",
                  _paired(_pooled_folds(val), _pooled_folds(b_val)),
                  _fold_mean_auc_difference),
                 ("test", "test set (mean of the fold models)",
                  _paired(mean_of_folds(test), mean_of_folds(b_test)), _auc_difference)]
        for set_name, where, frame, stat in cases:
            if set_name == "validation":
                aucs = [(auc(df["label"], df["prob"]), auc(df["label"], df["prob_other"]))
                        for _, df in frame.groupby("fold")]
                auc_net, auc_base = (float(np.mean(x)) for x in zip(*aucs))
            else:
                auc_net = auc(frame["label"], frame["prob"])
                auc_base = auc(frame["label"], frame["prob_other"])
            low = high = float("nan")
            if n_resamples:
                low, high, _ = grouped_bootstrap(
                    frame, stat, n_resamples=n_resamples, seed=seed,
                    columns=[c for c in ("label", "prob", "prob_other", "fold") if c in frame],
                )["difference"]
            rows.append(dict(baseline=label, set=set_name, auc_network=auc_net,
                             auc_baseline=auc_base, difference=auc_net - auc_base,
                             difference_low=low, difference_high=high,
                             verdict=verdict(label, where, auc_net, auc_base, low, high)))
    return pd.DataFrame(rows, columns=["baseline", "set", "auc_network", "auc_baseline",
                                       "difference", "difference_low", "difference_high",
                                       "verdict"])


# ------------------------------------------------------------------ the rule's job

def _read_predictions(path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype={"subject": str, "session": str})


def run_evaluate_models(val_paths: Sequence, test_paths: Sequence, table_out, attention_out,
                        roc_out, predictions_out, *, baselines=None, comparison_out=None,
                        epochs_paths: Sequence = (), curves_out=None, reliability_out=None,
                        log_file=None, threads: int = 1) -> None:
    """Rule evaluate_models: Table II (the network, then each baseline), the network
    against each baseline, attention weights, ROC curves, and each assessed session's
    prediction by the model that explains it. ``val_paths`` / ``test_paths``: each fold's
    predictions (``<models>/fold-<k>/...``); ``baselines``: the baselines' predictions
    (:func:`gamer_mril.baselines.baseline_predictions`)."""
    from .baselines import BASELINES, split_by_fold
    from .jobs import log, step

    inputs = {"val": list(val_paths), "test": list(test_paths), "baselines": baselines,
              "epochs": list(epochs_paths) or None}
    outputs = [table_out, attention_out, roc_out, predictions_out]
    outputs += [p for p in (comparison_out, curves_out, reliability_out) if p]
    with step("evaluate_models", inputs=inputs, outputs=outputs, log_file=log_file,
              threads=threads):
        folds = [fold_of(Path(p).parent) for p in val_paths]
        val = {k: _read_predictions(p) for k, p in zip(folds, val_paths)}
        test = {fold_of(Path(p).parent): _read_predictions(p) for p in test_paths}
        tables = [with_classifier(table_ii(val, test), NETWORK)]
        others = {}
        if baselines:
            frame = _read_predictions(baselines)
            present = set(frame["baseline"])
            for kind, label in BASELINES.items():
                if kind not in present:
                    continue
                b_val, b_test = split_by_fold(frame, kind)
                others[label] = (b_val, b_test)
                tables.append(with_classifier(table_ii(b_val, b_test), label))
        atomic_write_text(table_out, pd.concat(tables, ignore_index=True)
                          .to_csv(sep="\t", index=False))
        if comparison_out:
            comparison = baseline_comparison(val, test, others)
            for sentence in comparison["verdict"]:
                log.info(sentence)
            atomic_write_text(comparison_out, comparison.to_csv(sep="\t", index=False))
        att = mean_attention(list(val.values()) + list(test.values()))
        atomic_write_text(attention_out, att.to_csv(sep="\t", index=False))
        curves = {f"validation fold {k}": (v.label, v.prob) for k, v in val.items()}
        mean = mean_of_folds(test)
        curves["test, mean of folds"] = (mean.label, mean.prob)
        for label, (_, b_test) in others.items():
            b_mean = mean_of_folds(b_test)
            curves[f"test, {label}"] = (b_mean.label, b_mean.prob)
        plot_roc(curves, roc_out)
        if reliability_out:
            pooled = _pooled_folds(val)
            plot_reliability({"validation folds": (pooled.label, pooled.prob),
                              "test, mean of folds": (mean.label, mean.prob)},
                             reliability_out)
        if curves_out:
            epochs = {fold_of(Path(p).parent): pd.read_csv(p, sep="\t") for p in epochs_paths}
            chosen = {k: read_model_meta(Path(p).parent).get("epoch") for k, p in
                      zip(folds, val_paths)}
            plot_training_curves(epochs, chosen, curves_out)
        best = best_fold({k: read_model_meta(Path(p).parent) for k, p in zip(folds, val_paths)})
        pred = assessment_predictions(val, test, best)
        atomic_write_text(predictions_out, pred.to_csv(sep="\t", index=False))
