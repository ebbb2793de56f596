"""Subject-grouped bootstrap intervals (gamer_mril.bootstrap) and Table II's intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gamer_mril.statistics import grouped_bootstrap


def _sessions(counts: dict) -> pd.DataFrame:
    """One row per session: subject s has counts[s] sessions."""
    return pd.DataFrame([dict(subject=s, session=str(k)) for s, n in counts.items()
                         for k in range(n)])


def test_a_subject_is_resampled_with_all_its_sessions():
    counts = {"a": 1, "b": 2, "c": 3, "d": 5}
    frame = _sessions(counts)

    def whole_subjects(df):
        # every subject drawn brings all its sessions, as often as it is drawn
        per = df.groupby("subject").size()
        ok = all(per[s] % counts[s] == 0 for s in per.index)
        drawn = sum(per[s] // counts[s] for s in per.index)
        return {"whole": float(ok), "subjects": float(drawn), "sessions": float(len(df))}

    ci = grouped_bootstrap(frame, whole_subjects, n_resamples=300, seed=1)
    assert ci["whole"][:2] == (1.0, 1.0)
    assert ci["subjects"][:2] == (4.0, 4.0)          # as many subjects as there are
    low, high, _ = ci["sessions"]
    assert 4 <= low < high <= 20                      # session counts vary with the draw


def test_one_session_per_subject_is_the_ordinary_bootstrap_of_the_mean():
    rng = np.random.default_rng(3)
    x = rng.normal(10.0, 2.0, size=80)
    frame = pd.DataFrame({"subject": [f"s{i}" for i in range(80)], "x": x})
    low, high, n = grouped_bootstrap(frame, lambda df: {"mean": df["x"].mean()},
                                     n_resamples=4000, seed=0)["mean"]
    assert n == 4000
    se = x.std(ddof=0) / np.sqrt(x.size)        # the bootstrap's own standard error
    assert low == pytest.approx(x.mean() - 1.96 * se, abs=0.15 * se * 1.96)
    assert high == pytest.approx(x.mean() + 1.96 * se, abs=0.15 * se * 1.96)
    from scipy.stats import bootstrap

    ref = bootstrap((x,), np.mean, n_resamples=4000, method="percentile",
                    random_state=np.random.default_rng(1)).confidence_interval
    assert (low, high) == pytest.approx((ref.low, ref.high), abs=0.1 * se * 1.96)


def test_seeded_and_undefined_resamples_counted():
    frame = _sessions({f"s{i}": 1 for i in range(10)})

    def needs_s0(df):
        return {"m": 1.0 if "s0" in set(df["subject"]) else float("nan")}

    a = grouped_bootstrap(frame, needs_s0, n_resamples=2000, seed=7)
    assert a == grouped_bootstrap(frame, needs_s0, n_resamples=2000, seed=7)
    low, high, n_valid = a["m"]
    assert (low, high) == (1.0, 1.0)
    expected = 2000 * (1 - 0.9 ** 10)               # P(s0 drawn at least once)
    assert abs(n_valid - expected) < 4 * np.sqrt(2000 * 0.35 * 0.65)
    nothing = grouped_bootstrap(frame, lambda df: {"m": float("nan")}, n_resamples=20)
    assert np.isnan(nothing["m"][0]) and nothing["m"][2] == 0
    with pytest.raises(ValueError):
        grouped_bootstrap(frame, needs_s0, confidence=1.0)


def _pred(subjects, labels, probs):
    return pd.DataFrame({"subject": subjects, "session": "1", "edss": 0.0,
                         "label": labels, "prob": probs})


def test_table_ii_intervals():
    from gamer_mril import evaluation as T

    val = {0: _pred(list("abcdef"), [0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.6, 0.4, 0.8, 0.9]),
           1: _pred(list("ghijkl"), [0, 1, 0, 1, 0, 1], [0.3, 0.7, 0.2, 0.9, 0.4, 0.6])}
    subjects = ["t1", "t2", "t3", "t4", "t5"]
    test = {0: _pred(subjects, [0, 0, 1, 1, 1], [0.1, 0.3, 0.7, 0.8, 0.9]),   # separated
            1: _pred(subjects, [0, 0, 1, 1, 1], [0.2, 0.6, 0.4, 0.8, 0.7])}
    tab = T.table_ii(val, test, n_resamples=300, seed=0).set_index("model")
    for m in T.INTERVAL_METRICS:
        assert (tab[f"{m}_low"] <= tab[m] + 1e-12).all(), m
        assert (tab[m] <= tab[f"{m}_high"] + 1e-12).all(), m
    # the best fold (1: AUC 1 on validation) does not separate the test set; fold 0 does
    # perfectly, so a resample of it has AUC 1 whenever it holds both classes
    assert tab.loc["fold 1", "auc"] == 1.0
    assert (tab.loc["fold 1", "auc_low"], tab.loc["fold 1", "auc_high"]) == (1.0, 1.0)
    assert tab.loc["fold 0", "auc_low"] < tab.loc["fold 0", "auc"] < 1.0 <= \
        tab.loc["fold 0", "auc_high"]
    assert list(T.table_ii(val, test, n_resamples=0).columns) == [
        "set", "model", "auc", "accuracy", "specificity", "sensitivity", "n"]


def test_auc_is_the_mann_whitney_statistic():
    from sklearn.metrics import roc_auc_score

    from gamer_mril.statistics import auc as _auc

    rng = np.random.default_rng(0)
    for _ in range(20):
        label = rng.integers(0, 2, 30)
        prob = np.round(rng.random(30), 1)               # ties included
        if len(set(label)) == 2:
            assert _auc(label, prob) == pytest.approx(roc_auc_score(label, prob))
    assert np.isnan(_auc([1, 1], [0.2, 0.3]))


def test_named_columns_give_the_frame_path_s_intervals():
    """With ``columns`` the statistic sees the same resampled rows, as numpy arrays."""
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"subject": np.repeat([f"s{i}" for i in range(15)], 2),
                          "x": rng.normal(size=30), "y": rng.normal(size=30)})
    seen = []

    def stat(df):
        seen.append(type(df))
        x, y = np.asarray(df["x"]), np.asarray(df["y"])
        return {"r": float(np.corrcoef(x, y)[0, 1]), "n": float(x.size)}

    slow = grouped_bootstrap(frame, stat, n_resamples=300, seed=2)
    fast = grouped_bootstrap(frame, stat, n_resamples=300, seed=2, columns=["x", "y"])
    assert fast == slow
    assert seen[0] is pd.DataFrame and seen[-1] is dict
