"""Model folders (frozen-model mode) and the choice of the model that explains a session."""


import numpy as np
import pandas as pd
import pytest

from gamer_mril.modelfiles import best_fold, explaining_fold, find_fold_models
from gamer_mril.evaluation import assessment_predictions, frozen_predictions


def _fold(root, k, files=("model.safetensors", "model.json")):
    d = root / f"fold-{k}"
    d.mkdir(parents=True)
    for name in files:
        (d / name).write_text("{}")
    return d


def test_find_fold_models(tmp_path):
    _fold(tmp_path, 1)
    _fold(tmp_path, 0)
    found = find_fold_models(tmp_path)
    assert list(found) == [0, 1] and found[1] == tmp_path / "fold-1"


@pytest.mark.parametrize("case", ["missing", "empty", "incomplete", "misnamed"])
def test_find_fold_models_rejects_bad_folders(tmp_path, case):
    root = tmp_path / "models"
    if case != "missing":
        root.mkdir()
    if case == "incomplete":
        _fold(root, 0, files=("model.json",))
    if case == "misnamed":
        (root / "fold-x").mkdir()
    with pytest.raises(ValueError) as err:
        find_fold_models(root)
    assert str(root) in str(err.value)
    if case == "incomplete":
        assert "model.safetensors" in str(err.value)


def test_best_fold_takes_highest_auc_and_lowest_fold_on_ties():
    assert best_fold({0: {"val_auc": 0.7}, 1: {"val_auc": 0.9}, 2: {"val_auc": 0.9}}) == 1
    assert best_fold({0: {"val_auc": None}, 1: {"val_auc": 0.6}}) == 1
    assert best_fold({2: {"val_auc": None}, 1: {"val_auc": None}}) == 1
    with pytest.raises(ValueError):
        best_fold({})


def test_explaining_fold():
    assert explaining_fold({"set": "cv", "fold": 2}, best=0) == 2
    assert explaining_fold({"set": "test", "fold": -1}, best=1) == 1
    assert explaining_fold(None, best=1) == 1


def _pred(sessions, prob):
    return pd.DataFrame({"subject": [s for s, _ in sessions], "session": ["1"] * len(sessions),
                         "edss": [1.0] * len(sessions), "label": [0, 1][:len(sessions)],
                         "logit": np.zeros(len(sessions)), "prob": prob,
                         "a_qT1": 0.2, "a_MWF": 0.3, "a_NDI": 0.5})


def test_assessment_predictions_pick_the_right_model():
    val = {0: _pred([("a", 1), ("b", 1)], [0.1, 0.2]), 1: _pred([("c", 1), ("d", 1)], [0.3, 0.4])}
    test = {0: _pred([("e", 1), ("f", 1)], [0.5, 0.6]), 1: _pred([("e", 1), ("f", 1)], [0.7, 0.9])}
    out = assessment_predictions(val, test, best=1)
    assert list(out["subject"]) == list("abcdef")
    assert list(out["fold"]) == [0, 0, 1, 1, 1, 1]
    assert list(out["set"]) == ["cv"] * 4 + ["test"] * 2
    assert np.allclose(out["prob"], [0.1, 0.2, 0.3, 0.4, 0.7, 0.9])
    assert np.allclose(out["prob_mean_of_folds"].iloc[4:], [0.6, 0.75])
    assert out["prob_mean_of_folds"].iloc[:4].isna().all()
    with pytest.raises(ValueError, match="sub-a"):
        assessment_predictions(val, {0: _pred([("a", 1), ("f", 1)], [0.5, 0.6])}, best=0)


def test_frozen_predictions_table_and_performance():
    preds = {0: _pred([("e", 1), ("f", 1)], [0.4, 0.6]), 1: _pred([("e", 1), ("f", 1)], [0.7, 0.9])}
    table, perf = frozen_predictions(preds, best=0)
    assert (table["set"] == "new").all() and (table["fold"] == 0).all()
    assert np.allclose(table["prob"], [0.4, 0.6])
    assert list(perf["model"]) == ["fold 0", "fold 1", "mean of folds"]
    # fold 0: e (mild) 0.4 -> correct, f (severe) 0.6 -> correct; fold 1: e 0.7 wrong.
    assert list(perf["accuracy"]) == [1.0, 0.5, 0.5]
    assert list(perf["auc"]) == [1.0, 1.0, 1.0]
