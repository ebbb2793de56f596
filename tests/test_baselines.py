"""The baseline classifiers: features by hand, folds without leaks, metrics as sklearn's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from gamer_mril import CONTRASTS
from gamer_mril import baselines as B
from gamer_mril.evaluation import table_ii


def test_region_means_by_hand():
    cerebrum = np.zeros((2, 2, 2), bool)
    cerebrum[0] = True                        # four voxels
    atlas = np.zeros((2, 2, 2), int)
    atlas[0, 0, :] = 7                        # two voxels in the cerebrum
    atlas[1, :, :] = 9                        # outside the cerebrum only
    maps = {c: np.arange(8, dtype=float).reshape(2, 2, 2) * (i + 1)
            for i, c in enumerate(CONTRASTS)}
    out = B.region_means(maps, cerebrum, atlas, {7: "A", 9: "B", 11: "C"}).set_index("region")
    assert list(out.index) == ["cerebrum", "A", "B", "C"]
    assert out.loc["cerebrum", "voxels"] == 4 and out.loc["A", "voxels"] == 2
    for i, c in enumerate(CONTRASTS):
        assert out.loc["cerebrum", c] == pytest.approx(1.5 * (i + 1))   # mean of 0..3
        assert out.loc["A", c] == pytest.approx(0.5 * (i + 1))          # mean of 0, 1
    assert out.loc[["B", "C"], "voxels"].eq(0).all()
    assert out.loc[["B", "C"], list(CONTRASTS)].isna().all().all()


def test_cerebral_regions_leave_out_the_cerebellum():
    regions = B.cerebral_regions()
    assert len(regions) > 100
    assert not any(n.startswith(("Cerebellum", "Vermis")) for n in regions.values())
    assert "Precentral_L" in regions.values()


def _cohort(n_subjects=30, seed=0, effect=1.0):
    """Region tables where the severe sessions have lower MWF in region 'B'."""
    rng = np.random.default_rng(seed)
    tables, rows = {}, []
    for s in range(n_subjects):
        subject = f"{s:03d}"
        label = s % 2
        for session in ("1", "2")[: 1 + (s % 3 == 0)]:
            frame = pd.DataFrame({"region": ["cerebrum", "A", "B"], "label": [0, 1, 2],
                                  "voxels": [100, 50, 50]})
            for c in CONTRASTS:
                frame[c] = rng.normal(0.5, 0.05, 3)
            frame.loc[frame.region == "B", "MWF"] -= effect * 0.2 * label
            tables[(subject, session)] = frame
            rows.append(dict(subject=subject, session=session, age=40.0 + s,
                             edss=6.0 if label else 2.0, label=label))
    participants = pd.DataFrame(rows)
    split = participants[["subject", "session"]].copy()
    subj = split["subject"].astype(int)
    split["set"] = np.where(subj >= 24, "test", "cv")
    split["fold"] = np.where(subj >= 24, np.nan, subj % 3)
    return tables, participants, split


def test_feature_tables():
    tables, participants, _ = _cohort(4)
    ages = {(r.subject, r.session): r.age for r in participants.itertuples()}
    cer = B.feature_table(tables, ages, "cerebrum")
    assert list(cer.columns) == [*CONTRASTS, "age"]
    key = ("000", "1")
    assert cer.loc[key, "MWF"] == tables[key].set_index("region").loc["cerebrum", "MWF"]
    reg = B.feature_table(tables, ages, "regional")
    assert list(reg.columns) == [f"{r}:{c}" for r in "AB" for c in CONTRASTS] + ["age"]
    with pytest.raises(ValueError, match="unknown baseline"):
        B.feature_table(tables, ages, "voxels")


def test_regional_baseline_finds_the_region_and_metrics_match_sklearn():
    tables, participants, split = _cohort()
    pred = B.baseline_predictions(tables, participants, split, seed=0)
    assert set(pred["baseline"]) == set(B.BASELINES)
    assert set(pred["fold"]) == {0, 1, 2}
    val, test = B.split_by_fold(pred, "regional")
    tab = table_ii(val, test, n_resamples=0).set_index("model")
    for k, frame in val.items():
        assert tab.loc[f"fold {k}", "auc"] == pytest.approx(
            roc_auc_score(frame["label"], frame["prob"]))
    mean = test[0][["subject", "session", "label"]].copy()
    mean["prob"] = np.mean([test[k]["prob"].to_numpy() for k in sorted(test)], axis=0)
    assert tab.loc["mean of folds", "auc"] == pytest.approx(
        roc_auc_score(mean["label"], mean["prob"]))
    assert tab.loc["mean of folds", "auc"] > 0.9      # a strong regional effect is found
    # every session of the cv set is predicted once, by the fold that did not train on it
    cv = pred[(pred["baseline"] == "regional") & (pred["set"] == "validation")]
    folds = split.set_index(["subject", "session"])["fold"]
    assert len(cv) == int((split["set"] == "cv").sum())
    assert all(folds[(r.subject, r.session)] == r.fold for r in cv.itertuples())


def test_a_fold_model_never_sees_its_validation_sessions():
    """Changing the features of fold 0's validation sessions changes nothing that fold
    0's model predicts for the test set (the model was fitted without them)."""
    tables, participants, split = _cohort(seed=3)
    before = B.baseline_predictions(tables, participants, split, seed=0)
    val0 = split[(split["set"] == "cv") & (split["fold"] == 0)]
    changed = {k: v.copy() for k, v in tables.items()}
    for key in zip(val0["subject"], val0["session"]):
        changed[key][list(CONTRASTS)] = 9.0
    after = B.baseline_predictions(changed, participants, split, seed=0)
    for kind in B.BASELINES:
        def test_probs(frame, fold):
            sel = (frame["baseline"] == kind) & (frame["set"] == "test") & (frame["fold"] == fold)
            return frame[sel]["prob"].to_numpy()
        np.testing.assert_array_equal(test_probs(before, 0), test_probs(after, 0))
        assert not np.array_equal(test_probs(before, 1), test_probs(after, 1))


def test_without_signal_the_baselines_are_near_chance():
    tables, participants, split = _cohort(n_subjects=60, seed=1, effect=0.0)
    pred = B.baseline_predictions(tables, participants, split, seed=0)
    for kind in B.BASELINES:
        own = pred[(pred["baseline"] == kind) & (pred["set"] == "validation")]
        assert abs(roc_auc_score(own["label"], own["prob"]) - 0.5) < 0.25, kind
