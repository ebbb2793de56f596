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


#: Voxels per contrast of the toy cohort's template maps, and the MWF voxels that hold its
#: effect; the last 10 voxels of each contrast lie outside every brain (always 0).
VOXELS, EFFECT_VOXELS, OUTSIDE = 60, (12, 13, 14), 10


def _cohort(n_subjects=30, seed=0, effect=1.0, with_voxels=False):
    """Region tables where the severe sessions have lower MWF in region 'B' (and, with
    ``with_voxels``, template maps where they have lower MWF in three voxels)."""
    rng = np.random.default_rng(seed)
    tables, rows, voxels = {}, [], {}
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
            maps = rng.normal(0.5, 0.05, (len(CONTRASTS), VOXELS))
            maps[CONTRASTS.index("MWF"), list(EFFECT_VOXELS)] -= effect * 0.2 * label
            maps[:, VOXELS - OUTSIDE:] = 0.0
            voxels[(subject, session)] = maps.ravel()
            rows.append(dict(subject=subject, session=session, age=40.0 + s,
                             edss=6.0 if label else 2.0, label=label))
    participants = pd.DataFrame(rows)
    split = participants[["subject", "session"]].copy()
    subj = split["subject"].astype(int)
    split["set"] = np.where(subj >= 24, "test", "cv")
    split["fold"] = np.where(subj >= 24, np.nan, subj % 3)
    if with_voxels:
        return tables, participants, split, voxels
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
    tables, participants, split, voxels = _cohort(with_voxels=True)
    pred = B.baseline_predictions(tables, participants, split, seed=0, screen_voxels=voxels)
    assert set(pred["baseline"]) == set(B.BASELINES)
    # without template maps there is no screen
    assert set(B.baseline_predictions(tables, participants, split)["baseline"]) == \
        {"cerebrum", "regional"}
    val, test = B.split_by_fold(pred, "screen")
    assert table_ii(val, test, n_resamples=0).set_index("model").loc[
        "mean of folds", "auc"] > 0.9                   # three effect voxels among 180
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
    tables, participants, split, voxels = _cohort(seed=3, with_voxels=True)
    before = B.baseline_predictions(tables, participants, split, seed=0, screen_voxels=voxels)
    val0 = split[(split["set"] == "cv") & (split["fold"] == 0)]
    changed = {k: v.copy() for k, v in tables.items()}
    changed_voxels = dict(voxels)
    for key in zip(val0["subject"], val0["session"]):
        changed[key][list(CONTRASTS)] = 9.0
        changed_voxels[key] = np.full_like(voxels[key], 9.0)
    after = B.baseline_predictions(changed, participants, split, seed=0,
                                   screen_voxels=changed_voxels)
    for kind in B.BASELINES:
        def test_probs(frame, fold):
            sel = (frame["baseline"] == kind) & (frame["set"] == "test") & (frame["fold"] == fold)
            return frame[sel]["prob"].to_numpy()
        np.testing.assert_array_equal(test_probs(before, 0), test_probs(after, 0))
        assert not np.array_equal(test_probs(before, 1), test_probs(after, 1))


def test_without_signal_the_baselines_are_near_chance():
    tables, participants, split, voxels = _cohort(n_subjects=60, seed=1, effect=0.0,
                                                  with_voxels=True)
    pred = B.baseline_predictions(tables, participants, split, seed=0, screen_voxels=voxels)
    for kind in B.BASELINES:
        own = pred[(pred["baseline"] == kind) & (pred["set"] == "validation")]
        assert abs(roc_auc_score(own["label"], own["prob"]) - 0.5) < 0.25, kind


def test_screen_features_and_the_k_it_keeps():
    """The screen's table leaves out the voxels zero in every session and adds age; its
    pipeline keeps, of the voxels that vary over the training sessions, the k whose
    classes differ most (ANOVA F); k never exceeds the varying features of any (inner)
    training set."""
    _, participants, _, voxels = _cohort(4, with_voxels=True)
    ages = {(r.subject, r.session): r.age for r in participants.itertuples()}
    X = B.screen_table(voxels, ages)
    inside = [c * VOXELS + v for c in range(len(CONTRASTS)) for v in range(VOXELS - OUTSIDE)]
    assert list(X.columns) == [f"v{i}" for i in inside] + ["age"]
    key = ("001", "1")
    assert X.loc[key, "v61"] == np.float32(voxels[key][61]) and X.loc[key, "age"] == 41.0

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 10)
    Z = rng.normal(size=(20, 30))
    Z[:, 3] = 0.0                                   # constant: never kept
    Z[:, 7] += 3.0 * y                              # the two columns that separate
    Z[:, 21] -= 2.0 * y
    screen = B.screen_pipeline(k=2).fit(Z, y)
    varying = np.flatnonzero(screen.named_steps["variancethreshold"].get_support())
    assert sorted(varying[screen.named_steps["selectkbest"].get_support()]) == [7, 21]
    assert B.screen_ks(Z, None) == [10]             # 29 varying features: 10 only
    assert B.screen_ks(Z[:, :5], [(np.arange(10), np.arange(10, 20))]) == [4]


def test_template_maps_by_hand(tmp_path):
    """Identity transforms, maps on a 2 mm grid that holds a linear ramp along x (linear
    interpolation reproduces it exactly): on the 4 mm grid over the same extent the
    voxel i along x holds the ramp at 2 mm voxel 2 i, contrast c the ramp times c + 1."""
    import ants
    import nibabel as nib

    shape, affine = (10, 8, 6), np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-9.0, -7.0, -5.0]
    mask = tmp_path / "template_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.ones(shape, np.uint8), affine), mask)
    ramp = np.broadcast_to(np.arange(shape[0], dtype=np.float32)[:, None, None], shape)
    maps = {}
    for i, c in enumerate(CONTRASTS):
        maps[c] = tmp_path / f"{c}.nii.gz"
        nib.save(nib.Nifti1Image(ramp * (i + 1), affine), maps[c])
    identity = str(tmp_path / "identity.mat")
    ants.write_transform(ants.create_ants_transform(transform_type="AffineTransform",
                                                    dimension=3), identity)
    data, out_affine = B.session_template_maps(maps, {"affine": identity, "coreg": identity},
                                               voxel_mm=4.0, extent=mask)
    assert data.shape == (5, 4, 3, 3)
    np.testing.assert_allclose(out_affine[:3, :3], np.diag([4.0, 4.0, 4.0]))
    np.testing.assert_allclose(out_affine[:3, 3], affine[:3, 3])
    for i in range(3):
        np.testing.assert_allclose(data[..., i], (i + 1) * 2.0 * np.arange(5)[:, None, None]
                                   * np.ones((5, 4, 3)), atol=1e-4)
    out = tmp_path / "maps.nii.gz"
    B.run_template_maps(maps, {"affine": identity, "coreg": identity}, out, screen_voxel_mm=4.0,
                        extent=mask)
    vector = B.read_template_maps(out)
    np.testing.assert_allclose(vector[:60], data[..., 0].ravel(), atol=1e-6)
    np.testing.assert_allclose(vector[60:120], data[..., 1].ravel(), atol=1e-6)
