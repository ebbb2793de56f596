"""Tests of gamer_mril.split on synthetic cohorts made here with numpy.

Tolerance on class proportions. The split rounds per class, so for a group of n_G
subjects (the test set or one fold) the number of severe subjects differs from its exact
proportional share by less than one subject, and so does the number of mild subjects.
Working this through (see gamer_mril.split's docstring) bounds the group's fraction of
severe subjects p_G against the whole cohort's p:
    test set:  |p_G - p| < 1 / n_G
    a fold:    |p_G - p| < (1 + 1 / n_folds) / n_G
i.e. within what whole subjects allow; no looser tolerance is needed, and a split that
ignored the labels would break it on most cohorts and seeds (checked below).
"""

import math
import os

import numpy as np
import pandas as pd
import pytest

from gamer_mril.split import (SPLIT_COLUMNS, check_split, make_split, natural_key,
                              read_split, write_split)

SEEDS = range(30)

# (n_subjects, severe fraction at baseline, fraction with follow-ups,
#  fraction of follow-up subjects whose label changes, session naming)
COHORTS = {
    "20-subjects-25pct": (20, 0.25, 0.5, 0.3, "padded"),
    "30-subjects-15pct": (30, 0.15, 0.3, 0.2, "visit"),
    "57-subjects-50pct-all-followup": (57, 0.50, 1.0, 0.3, "visit"),
    "120-subjects-33pct-baseline-only": (120, 0.33, 0.0, 0.0, "padded"),
    "200-subjects-15pct": (200, 0.15, 0.6, 0.25, "padded"),
}


def make_cohort(n_subjects, severe_frac, followup_frac, change_frac, naming, seed=0):
    """Participants table (shuffled rows) and each subject's true baseline label."""
    rng = np.random.default_rng(1000 + seed)
    n_severe = math.floor(severe_frac * n_subjects + 0.5)
    severe = np.zeros(n_subjects, dtype=bool)
    severe[rng.choice(n_subjects, n_severe, replace=False)] = True
    mild_values, severe_values = np.arange(0, 5, 0.5), np.arange(5, 9.5, 0.5)
    rows, baseline = [], {}
    for i in range(n_subjects):
        subject = f"{i + 1:03d}"
        baseline[subject] = int(severe[i])
        n_sessions = 1 + (rng.integers(1, 3) if rng.random() < followup_frac else 0)
        changes = rng.random() < change_frac
        visit = int(rng.integers(1, 10))
        for k in range(n_sessions):
            if naming == "padded":
                session = f"{k + 1:02d}"
            else:                      # visit numbers without padding: 8, 10, 13 ...
                session = str(visit)
                visit += int(rng.integers(1, 4))
            is_severe = severe[i] != (changes and k > 0)
            edss = rng.choice(severe_values if is_severe else mild_values)
            rows.append(dict(subject=subject, session=session, edss=float(edss),
                             age=float(rng.integers(20, 70))))
    table = pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    return table, baseline


def _per_subject(out):
    places = out.groupby("subject")[["set", "fold"]].nunique()
    assert (places["set"] == 1).all() and (places["fold"] == 1).all()
    return out.groupby("subject")[["set", "fold"]].first()


@pytest.mark.parametrize("cohort, test_fraction, n_folds",
                         [(name, 0.2, 3) for name in COHORTS]
                         + [(name, 0.3, 4) for name in COHORTS if COHORTS[name][0] >= 57])
def test_split_invariants_over_seeds(cohort, test_fraction, n_folds):
    n_subjects = COHORTS[cohort][0]
    table, baseline = make_cohort(*COHORTS[cohort])
    base = pd.Series(baseline)
    p = base.mean()
    for seed in SEEDS:
        out = make_split(table, test_fraction=test_fraction, n_folds=n_folds, seed=seed)
        assert list(out.columns) == list(SPLIT_COLUMNS)

        # Every session exactly once, with its own EDSS and per-session label.
        assert len(out) == len(table)
        assert not out.duplicated(["subject", "session"]).any()
        merged = table.merge(out, on=["subject", "session"], suffixes=("", "_out"))
        assert len(merged) == len(table)
        assert (merged["edss"] == merged["edss_out"]).all()
        assert (out["label"] == (out["edss"] >= 5).astype(int)).all()

        # One set and one fold per subject; fold -1 exactly for test.
        subj = _per_subject(out)
        assert ((subj["set"] == "test") == (subj["fold"] == -1)).all()
        cv = subj[subj["set"] == "cv"]
        assert sorted(cv["fold"].unique()) == list(range(n_folds))
        sizes = cv["fold"].value_counts()
        assert sizes.max() - sizes.min() <= 1

        # Test set size: per-class rounding, at least one subject of each class.
        test = subj.index[subj["set"] == "test"]
        counts = base.value_counts()
        want = {c: max(1, math.floor(test_fraction * counts[c] + 0.5)) for c in (0, 1)}
        assert base[test].value_counts().to_dict() == want
        assert abs(len(test) - test_fraction * n_subjects) <= 1

        # Class proportions of subjects (baseline label) in the test set and each fold.
        assert abs(base[test].mean() - p) < 1 / len(test)
        for fold, members in cv.groupby("fold").groups.items():
            n_g = len(members)
            assert abs(base[members].mean() - p) < (1 + 1 / n_folds) / n_g, (seed, fold)
            for c in (0, 1):                       # per-class counts: floor or ceil
                share = (base[cv.index] == c).sum() / n_folds
                assert math.floor(share) <= (base[members] == c).sum() <= math.ceil(share)


def test_cohorts_include_label_changes():
    """The generator makes subjects whose label changes, and the split keeps them whole."""
    table, _ = make_cohort(*COHORTS["57-subjects-50pct-all-followup"])
    out = make_split(table, seed=0)
    changing = out.groupby("subject")["label"].nunique()
    assert (changing > 1).sum() >= 5
    _per_subject(out[out["subject"].isin(changing.index[changing > 1])])


def test_label_blind_split_breaks_the_tolerance():
    """The proportion check has teeth: random subject-level splits fail it often."""
    table, baseline = make_cohort(*COHORTS["200-subjects-15pct"])
    base = pd.Series(baseline)
    subjects = base.index.to_numpy()
    failures = 0
    for seed in SEEDS:
        folds = np.random.default_rng(seed).permutation(len(subjects)) % 3
        for f in range(3):
            members = subjects[folds == f]
            if abs(base[members].mean() - base.mean()) >= (1 + 1 / 3) / len(members):
                failures += 1
                break
    assert failures >= 10


def test_deterministic_and_seed_dependent():
    table, _ = make_cohort(*COHORTS["57-subjects-50pct-all-followup"])
    first = make_split(table, seed=5)
    pd.testing.assert_frame_equal(first, make_split(table, seed=5))
    # Row order and extra columns do not matter.
    shuffled = table.sample(frac=1.0, random_state=99).assign(extra="x")
    pd.testing.assert_frame_equal(first, make_split(shuffled, seed=5))
    # Different seeds give different assignments.
    assignments = {tuple(make_split(table, seed=s)["fold"]) for s in SEEDS}
    assert len(assignments) == len(SEEDS)


def test_baseline_is_first_session_in_natural_order():
    # Subjects A: session 9 severe, session 10 mild -> baseline severe (plain string order
    # would put "10" first and call them mild). Subjects B: always mild.
    rows = []
    for i in range(12):
        rows += [dict(subject=f"A{i}", session="9", edss=6.0),
                 dict(subject=f"A{i}", session="10", edss=3.0),
                 dict(subject=f"B{i}", session="9", edss=2.0)]
    out = make_split(pd.DataFrame(rows), test_fraction=0.2, n_folds=3, seed=0)
    test_subjects = set(out.loc[out["set"] == "test", "subject"])
    assert sum(s.startswith("A") for s in test_subjects) == 2      # round(0.2 * 12)
    assert sum(s.startswith("B") for s in test_subjects) == 2
    assert natural_key("ses-9") < natural_key("ses-10")


def test_no_test_set():
    table, _ = make_cohort(*COHORTS["30-subjects-15pct"])
    out = make_split(table, test_fraction=0.0, n_folds=3, seed=1)
    assert (out["set"] == "cv").all()
    assert sorted(out["fold"].unique()) == [0, 1, 2]


def _valid_split():
    table, _ = make_cohort(*COHORTS["57-subjects-50pct-all-followup"])
    return make_split(table, seed=0)


def test_check_split_catches_fold_leak():
    out = _valid_split()
    cv = out[out["set"] == "cv"]
    subject = cv.groupby("subject").size().idxmax()             # has >= 2 sessions
    row = out.index[out["subject"] == subject][-1]
    leaked = out.copy()
    leaked.loc[row, "fold"] = (leaked.loc[row, "fold"] + 1) % 3
    with pytest.raises(ValueError, match=f"subject {subject} "):
        check_split(leaked)
    check_split(out)                                            # the original is fine


def test_check_split_catches_set_leak():
    out = _valid_split()
    subject = out.groupby("subject").size().idxmax()
    row = out.index[out["subject"] == subject][-1]
    leaked = out.copy()
    new_set = "cv" if leaked.loc[row, "set"] == "test" else "test"
    leaked.loc[row, ["set", "fold"]] = [new_set, 0 if new_set == "cv" else -1]
    with pytest.raises(ValueError, match=f"subject {subject} "):
        check_split(leaked)


def test_check_split_catches_malformed_rows():
    out = _valid_split()
    with pytest.raises(ValueError, match="listed 2 times"):
        check_split(pd.concat([out, out.iloc[[0]]]))
    bad = out.copy()
    bad.loc[bad.index[bad["set"] == "test"][0], "fold"] = 1
    with pytest.raises(ValueError, match="does not fit set"):
        check_split(bad)
    bad = out.copy()
    bad.loc[0, "set"] = "train"
    with pytest.raises(ValueError, match="set must be"):
        check_split(bad)
    with pytest.raises(ValueError, match="lacks columns"):
        check_split(out.drop(columns="fold"))


def test_write_and_read_split(tmp_path):
    out = _valid_split()
    path = tmp_path / "sub" / "split.tsv"
    write_split(out, path)
    assert os.listdir(path.parent) == ["split.tsv"]              # no temporary left
    back = read_split(path)
    pd.testing.assert_frame_equal(back, out, check_dtype=False)
    assert back["subject"].iloc[0] == "001"                      # ids stay text
    # A leak: the first session of a multi-session subject in the test set, the rest in cv.
    leaked = out.copy()
    rows = leaked.index[leaked["subject"] == leaked.groupby("subject").size().idxmax()]
    leaked.loc[rows[0], ["set", "fold"]] = ["test", -1]
    leaked.loc[rows[1:], ["set", "fold"]] = ["cv", 0]
    leaky_path = tmp_path / "leaky.tsv"
    with pytest.raises(ValueError, match="split across"):
        write_split(leaked, leaky_path)
    assert not leaky_path.exists()
    assert sorted(os.listdir(tmp_path)) == ["sub"]


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.drop(columns="edss"), "lacks columns"),
    (lambda t: t.iloc[:0], "no rows"),
    (lambda t: t.assign(edss=t["edss"].where(t.index != 3, np.nan)), "EDSS"),
    (lambda t: t.assign(edss=t["edss"].where(t.index != 3, 11.0)), "EDSS"),
    (lambda t: pd.concat([t, t.iloc[[0]]]), "more than once"),
    (lambda t: t.assign(subject=t["subject"].where(t.index != 2, "")), "empty subject"),
    (lambda t: t.assign(edss=1.0), "too few severe"),
    (lambda t: t.assign(edss=7.0), "too few mild"),
])
def test_bad_tables_raise(edit, message):
    table, _ = make_cohort(*COHORTS["30-subjects-15pct"])
    with pytest.raises(ValueError, match=message):
        make_split(edit(table))


def test_too_few_subjects_per_class_for_folds():
    # 4 severe subjects: one to the test set leaves 3, enough for 3 folds but not for 4.
    table = pd.DataFrame(dict(subject=[f"s{i}" for i in range(24)], session="1",
                              edss=[6.0] * 4 + [1.0] * 20))
    make_split(table, n_folds=3)
    with pytest.raises(ValueError, match="too few severe .* at least 5"):
        make_split(table, n_folds=4)
    make_split(table, test_fraction=0.0, n_folds=4)
    # 5 severe subjects, 30 % to test: round(1.5) = 2 leave 3 < 4 folds; 6 are needed
    # (6 - round(1.8) = 4).
    table = pd.DataFrame(dict(subject=[f"s{i}" for i in range(25)], session="1",
                              edss=[6.0] * 5 + [1.0] * 20))
    with pytest.raises(ValueError, match="too few severe .* at least 6"):
        make_split(table, test_fraction=0.3, n_folds=4)


@pytest.mark.parametrize("kwargs", [dict(test_fraction=1.0), dict(test_fraction=-0.1),
                                    dict(n_folds=1), dict(n_folds=2.5)])
def test_bad_arguments_raise(kwargs):
    table, _ = make_cohort(*COHORTS["120-subjects-33pct-baseline-only"])
    with pytest.raises(ValueError):
        make_split(table, **kwargs)
