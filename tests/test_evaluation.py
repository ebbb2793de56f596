"""Evaluation beyond Table II: the network against the baselines, reliability, training
curves. Hand-computed cases and invariants."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from gamer_mril import evalfigures as F
from gamer_mril import evaluation as E


def _frame(subjects, labels, probs):
    return pd.DataFrame({"subject": subjects, "session": ["1"] * len(subjects),
                         "edss": [6.0 if y else 2.0 for y in labels], "label": labels,
                         "prob": probs})


def _folds(rng, n_folds=3, per_fold=10, noise=1.0):
    val, test = {}, {}
    test_subjects = [f"t{i}" for i in range(12)]
    test_labels = [i % 2 for i in range(12)]
    for k in range(n_folds):
        subjects = [f"s{k}_{i}" for i in range(per_fold)]
        labels = [i % 2 for i in range(per_fold)]
        val[k] = _frame(subjects, labels, 1 / (1 + np.exp(-(np.array(labels) * 2 - 1
                                                             + rng.normal(0, noise, per_fold)))))
        test[k] = _frame(test_subjects, test_labels,
                         1 / (1 + np.exp(-(np.array(test_labels) * 2 - 1
                                           + rng.normal(0, noise, 12)))))
    return val, test


def test_comparison_with_itself_is_zero():
    rng = np.random.default_rng(0)
    val, test = _folds(rng)
    out = E.baseline_comparison(val, test, {"twin": (val, test)}, n_resamples=200)
    assert list(out["set"]) == ["validation", "test"]
    assert np.allclose(out["difference"], 0)
    assert np.allclose(out[["difference_low", "difference_high"]].to_numpy(), 0)
    assert all("does NOT beat the twin" in v and "within chance" in v for v in out["verdict"])


def test_comparison_figures_by_hand():
    rng = np.random.default_rng(1)
    val, test = _folds(rng, noise=0.3)
    # a baseline that ranks every session backwards
    flipped = ({k: df.assign(prob=1 - df["prob"]) for k, df in val.items()},
               {k: df.assign(prob=1 - df["prob"]) for k, df in test.items()})
    out = E.baseline_comparison(val, test, {"flip": flipped}, n_resamples=300).set_index("set")
    within = [roc_auc_score(df["label"], df["prob"]) for df in val.values()]
    assert out.loc["validation", "auc_network"] == pytest.approx(np.mean(within))
    assert out.loc["validation", "auc_baseline"] == pytest.approx(1 - np.mean(within))
    mean = np.mean([test[k]["prob"] for k in test], axis=0)
    auc = roc_auc_score(test[0]["label"], mean)
    assert out.loc["test", "auc_network"] == pytest.approx(auc)
    assert out.loc["test", "difference"] == pytest.approx(auc - (1 - auc))
    assert out.loc["test", "difference_low"] > 0
    assert "the network beats the flip" in out.loc["test", "verdict"]
    # and the other way round
    back = E.baseline_comparison(*flipped, {"net": (val, test)}, n_resamples=300)
    assert all("does NOT beat" in v and "does worse" in v for v in back["verdict"])


def test_comparison_needs_the_same_sessions():
    rng = np.random.default_rng(2)
    val, test = _folds(rng)
    short = {k: df.iloc[:-1] for k, df in test.items()}
    with pytest.raises(ValueError, match="different sessions"):
        E.baseline_comparison(val, test, {"b": (val, short)}, n_resamples=0)


def test_reliability_by_hand():
    label = [0, 0, 1, 1, 1, 0]
    prob = [0.05, 0.15, 0.5, 0.55, 0.95, 0.9]
    out = F.reliability(label, prob, n_bins=2)
    assert list(out["n"]) == [2, 4]
    assert out["observed"].tolist() == pytest.approx([0.0, 0.75])
    assert out["mean_prob"].tolist() == pytest.approx([0.1, (0.5 + 0.55 + 0.95 + 0.9) / 4])
    out5 = F.reliability(label, prob, n_bins=5)            # empty bins left out
    assert out5["n"].sum() == 6 and (out5["n"] > 0).all()


def test_figures_are_written(tmp_path):
    epochs = {k: pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [0.7, 0.6, 0.5],
                               "val_loss": [0.7, 0.65, 0.7], "val_auc": [0.5, 0.7, 0.6],
                               "seconds": [1, 1, 1]}) for k in (0, 1)}
    F.plot_training_curves(epochs, {0: 2, 1: None}, tmp_path / "curves.png")
    F.plot_reliability({"a": ([0, 1, 1, 0], [0.2, 0.8, 0.6, 0.4])}, tmp_path / "rel.png")
    for name in ("curves.png", "rel.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
