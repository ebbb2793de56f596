"""Training end to end on a small synthetic cohort, then frozen-model mode on its models."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from gamer_mril.modelfiles import best_fold
from gamer_mril.split import read_split

from .conftest import jobs_run, run_snakemake, training_config

pytestmark = pytest.mark.slow


def test_training_runs_end_to_end(trained, training_cohort):
    group = trained / "results" / "group"
    split = read_split(group / "split.tsv")
    table = pd.read_csv(training_cohort / "rawdata" / "participants.tsv", sep="\t",
                        dtype={"subject": str, "session": str})
    assert len(split) == len(table) == 8
    # Both folds trained, each kept a checkpoint and logged every epoch.
    for fold in (0, 1):
        mdir = trained / "results" / "models" / f"fold-{fold}"
        epochs = pd.read_csv(mdir / "epochs.tsv", sep="\t")
        assert list(epochs["epoch"]) == list(range(1, 9))
        meta = json.loads((mdir / "model.json").read_text())
        assert meta["n_train"] + meta["n_val"] == (split["set"] == "cv").sum()
        assert 1 <= meta["epoch"] <= 8
        # The training loss falls: the model fits its training sessions.
        loss = epochs["train_loss"].to_numpy()
        assert loss[-2:].mean() < 0.7 * loss[:2].mean(), loss
    t2 = pd.read_csv(group / "table_ii.tsv", sep="\t")
    assert list(t2["model"])[:3] == ["fold 0", "fold 1", "mean"]
    assert set(t2["set"]) == {"validation", "test"}
    assert (t2["n"] > 0).all()
    for m in ("auc", "accuracy", "specificity", "sensitivity"):    # 95% bootstrap intervals
        defined = t2[m].notna()
        assert (t2.loc[defined, f"{m}_low"] <= t2.loc[defined, m] + 1e-9).all(), m
        assert (t2.loc[defined, m] <= t2.loc[defined, f"{m}_high"] + 1e-9).all(), m
    # the baselines: rows of Table II on the same folds, and the comparison
    assert t2["classifier"].iloc[0] == "GAMER-MRIL"
    assert set(t2["classifier"]) == {"GAMER-MRIL", "baseline: cerebrum means + age",
                                     "baseline: AAL3 regional means + age",
                                     "baseline: MNI152 voxel screen + age"}
    for _, rows in t2.groupby("classifier"):
        assert list(rows["model"])[:3] == ["fold 0", "fold 1", "mean"]
    comparison = pd.read_csv(group / "baseline_comparison.tsv", sep="\t")
    assert len(comparison) == 6 and comparison["verdict"].str.contains("the network").all()
    net = t2[(t2["classifier"] == "GAMER-MRIL") & (t2["model"] == "mean of folds")]
    test_rows = comparison[comparison["set"] == "test"]
    assert np.allclose(test_rows["auc_network"], net["auc"].iloc[0], equal_nan=True)
    for name in ("training_curves.png", "reliability.png"):
        assert (group / name).stat().st_size > 5000, name
    att = pd.read_csv(group / "attention_weights.tsv", sep="\t")
    assert list(att["contrast"]) == ["qT1", "MWF", "NDI"]
    assert (group / "roc.png").stat().st_size > 1000


def test_every_session_is_predicted_by_a_model_that_never_saw_it(trained):
    group = trained / "results" / "group"
    split = read_split(group / "split.tsv")
    pred = pd.read_csv(group / "predictions.tsv", sep="\t",
                       dtype={"subject": str, "session": str})
    assert sorted(zip(pred.subject, pred.session)) == sorted(zip(split.subject, split.session))
    metas = {k: json.loads((trained / "results" / "models" / f"fold-{k}" / "model.json")
                           .read_text()) for k in (0, 1)}
    best = best_fold(metas)
    merged = pred.merge(split, on=["subject", "session"], suffixes=("", "_split"))
    cv = merged[merged["set"] == "cv"]
    assert (cv["fold"] == cv["fold_split"]).all()
    test = merged[merged["set"] == "test"]
    assert len(test) >= 2 and (test["fold"] == best).all()
    assert np.allclose(pred[["a_qT1", "a_MWF", "a_NDI"]].sum(axis=1), 1.0, atol=1e-6)
    assert pred["prob"].between(0, 1).all()


def test_frozen_models_predict_without_training(trained, training_cohort, tmp_path):
    # A second project that reuses the first one's preprocessing but only has the
    # trained models: copy the run, drop everything that training made.
    work = tmp_path / "frozen_run"
    shutil.copytree(trained, work, symlinks=True)
    models = tmp_path / "frozen_models"
    shutil.move(work / "results" / "models", models)
    for name in ("split.tsv", "table_ii.tsv", "attention_weights.tsv", "roc.png",
                 "predictions.tsv"):
        (work / "results" / "group" / name).unlink()
    config = training_config(training_cohort, frozen_models=str(models))
    # The whole plan: predictions, then explanation and assessment, never training.
    dry = run_snakemake(work, config, "all", "-n")
    assert dry.returncode == 0, dry.stderr[-5000:]
    planned = jobs_run(dry)
    assert planned.get("predict_sessions") == 1, planned
    assert {"explain_session", "invert_session", "voxel_inverting"} <= set(planned), planned
    assert not {"train_fold", "split_sessions", "predict_test", "evaluate_models"} & set(planned)
    # Run for real up to the predictions (the explanation rules are the same rules as in
    # the training run, checked there).
    proc = run_snakemake(work, config, "predict_sessions")
    assert proc.returncode == 0, proc.stderr[-5000:]
    jobs = jobs_run(proc)
    assert jobs == {"predict_sessions": 1}, jobs
    assert not (work / "results" / "models").exists()
    group = work / "results" / "group"
    pred = pd.read_csv(group / "predictions.tsv", sep="\t", dtype={"subject": str, "session": str})
    assert len(pred) == 8 and (pred["set"] == "new").all()
    metas = {k: json.loads((models / f"fold-{k}" / "model.json").read_text()) for k in (0, 1)}
    assert (pred["fold"] == best_fold(metas)).all()
    perf = pd.read_csv(group / "performance_frozen.tsv", sep="\t")
    assert list(perf["model"]) == ["fold 0", "fold 1", "mean of folds"]
    assert (perf["n"] == 8).all()
    # The frozen predictions of test sessions equal the first run's (same model, same data).
    first = pd.read_csv(trained / "results" / "group" / "predictions.tsv", sep="\t",
                        dtype={"subject": str, "session": str})
    t = first[first["set"] == "test"].merge(pred, on=["subject", "session"])
    assert np.allclose(t["prob_x"], t["prob_y"], atol=1e-6)


def test_frozen_model_folder_is_checked(training_cohort, tmp_path):
    bad = tmp_path / "models" / "fold-0"
    bad.mkdir(parents=True)
    (bad / "model.json").write_text("{}")
    config = training_config(training_cohort, frozen_models=str(tmp_path / "models"))
    proc = run_snakemake(tmp_path / "work", config, "all", "-n")
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "frozen_models" in text and "model.safetensors" in text and str(bad) in text
