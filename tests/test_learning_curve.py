"""bench/learning_curve.py on a two-point grid: the table it prints is complete and
consistent (the figures themselves need the full grid; see docs/benchmarks.md)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import import_bench

from gamer_mril.training import open_cache


@pytest.fixture(scope="module")
def learning_curve():
    return import_bench("learning_curve")


def test_two_point_grid(learning_curve, tmp_path):
    table = learning_curve.run(tmp_path, sizes=[8, 10], effects=[1.0], seeds=[0], epochs=1, folds=2,
                               scale=5.0, crop=(20, 20, 24), log=lambda *_: None)
    names = [learning_curve.NETWORK, learning_curve.FLOOR, learning_curve.VOXELS,
             learning_curve.SCREEN, learning_curve.ORACLE]
    assert list(table["classifier"]) == names * 2
    assert list(table["n_subjects"]) == [8] * 5 + [10] * 5
    first, second = table.iloc[0], table.iloc[5]
    assert second["n_sessions"] > first["n_sessions"] >= 8    # the larger cohort extends it
    for _, row in table.iterrows():
        assert row["n_test"] >= 2
        if np.isfinite(row["test_auc"]):
            assert row["test_auc_low"] - 1e-9 <= row["test_auc"] <= row["test_auc_high"] + 1e-9
    # the oracle reads the planted region, whose mean separates a full-strength effect
    oracle = table[table["classifier"] == learning_curve.ORACLE]
    assert (oracle["val_auc_within"] >= 0.75).all()
    learning_curve.plot(table, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 5000

    # bench/split_null.py on the same cohort: every split scores its held-out sessions
    # (a feature equal to the label ranks them perfectly), the null sets give AUCs in [0, 1]
    split_null = import_bench("split_null")
    cohort = next(tmp_path.glob("cohort-*"))
    cache = open_cache(cohort / "truth" / "cache")
    features = split_null.null_features(cache)
    assert features["cerebrum means + age"].shape == (len(cache), 4)
    features["label"] = cache.index[["label"]].to_numpy(float)
    aucs = split_null.null_aucs(cache, features, n_splits=3, test_fraction=0.2, folds=2)
    assert aucs["label"] == [1.0, 1.0, 1.0]
    for name in ("cerebrum means + age", "age", "noise"):
        assert len(aucs[name]) == 3 and all(0.0 <= v <= 1.0 for v in aucs[name])


def test_baselines_only(learning_curve, tmp_path):
    """--baselines-only trains no network, and fits every baseline on the same folds."""
    table = learning_curve.run(tmp_path, sizes=[8], effects=[1.0], seeds=[0], folds=2,
                               scale=5.0, crop=(20, 20, 24), network=False,
                               log=lambda *_: None)
    assert list(table["classifier"]) == [learning_curve.FLOOR, learning_curve.VOXELS,
                                         learning_curve.SCREEN, learning_curve.ORACLE]
    assert not list(tmp_path.glob("cohort-*/runs/*"))


def test_cerebrum_means_by_hand(learning_curve):
    """The cerebrum is where any contrast is non-zero, the same voxels for every contrast."""
    x = np.zeros((1, 2, 1, 1, 4), dtype=np.float32)
    x[0, 0, 0, 0] = [0.5, 0.25, 0.0, 0.0]     # voxel 2 lies in the cerebrum through contrast 1
    x[0, 1, 0, 0] = [0.0, 0.5, 1.0, 0.0]
    np.testing.assert_allclose(learning_curve.cerebrum_means(x), [[0.75 / 3, 1.5 / 3]])


def test_training_overrides(learning_curve):
    """--set KEY=VALUE: values read as YAML, augment.KEY reaches the augmentation only,
    the defaults stay untouched, an unknown key is refused."""
    got = learning_curve.training_settings({"lr": "1e-4", "selection": "last",
                                            "augment.noise_sd": "0"}, epochs=2)
    assert got["lr"] == 1e-4 and got["selection"] == "last" and got["epochs"] == 2
    assert got["augment"]["noise_sd"] == 0
    assert got["augment"]["max_rotation_deg"] == learning_curve.TRAINING["augment"]["max_rotation_deg"]
    assert learning_curve.TRAINING["augment"]["noise_sd"] == 0.05
    for bad in ({"learning_rate": "1"}, {"augment.flip": "1"}, {"lr.x": "1"}):
        with pytest.raises(ValueError, match="unknown"):
            learning_curve.training_settings(bad)


def test_a_cohort_is_reused_only_when_large_enough(learning_curve, tmp_path):
    """A cohort on disk is reused for sizes up to its subjects and regenerated above."""
    cohort = tmp_path / "c"
    assert learning_curve._subjects(cohort) == 0
    (cohort / "rawdata").mkdir(parents=True)
    (cohort / "rawdata" / "participants.tsv").write_text(
        "subject\tsession\n001\t1\n001\t2\n002\t1\n")
    assert learning_curve._subjects(cohort) == 2
