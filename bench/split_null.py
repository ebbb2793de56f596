#!/usr/bin/env python
"""What test AUC does a classifier get from features unrelated to the planted effect?

Reads a synthetic cohort whose truth cache ``bench/learning_curve.py`` built
(``COHORT/truth/cache``), draws ``--splits`` workflow splits (held-out test subjects,
``gamer_mril.split.make_split`` with seeds 0, 1, ...), fits the cerebrum-mean baseline's
regression on the training subjects of each and scores the test sessions, for three
feature sets: the cerebrum means of the three maps plus age (the floor baseline), age
alone, and four Gaussian noise columns. Prints the mean test AUC and its 10th, 50th and
90th percentile over the splits.

A cohort is a finite set of subjects: when a feature's association with the label over
the whole cohort is weak, the training subjects and the held-out ones carry it with
opposite signs more often than not, so a model of it tends to score below 0.5 on the test
set.
This script measures how far below, so that a sub-0.5 test AUC in the learning curves can
be read as "learned nothing that transfers", not as "learned the opposite of the effect".

    python bench/split_null.py COHORT [--splits 100] [--test-fraction 0.3]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from learning_curve import cerebrum_means  # bench/learning_curve.py
from truth_cache import truth_dir  # bench/truth_cache.py

from gamer_mril.statistics import auc
from gamer_mril.baselines import fit_baseline
from gamer_mril.split import make_split
from gamer_mril.training import open_cache


def null_features(cache, seed: int = 0) -> dict:
    """{name: (sessions, features)}: cerebrum means + age, age alone, Gaussian noise."""
    means = cerebrum_means(np.asarray(cache.images, dtype=np.float32))
    age = cache.index["age"].to_numpy(float)[:, None]
    noise = np.random.default_rng(seed).normal(size=(len(cache.index), 4))
    return {"cerebrum means + age": np.hstack([means, age]), "age": age, "noise": noise}


def null_aucs(cache, features: dict, n_splits: int = 100, test_fraction: float = 0.3,
              folds: int = 3) -> dict:
    """{feature set: test AUCs over ``n_splits`` splits (seeds 0, 1, ...)}; ``features``:
    {name: (sessions, features) array in the cache's row order}."""
    index = cache.index
    labels = index["label"].to_numpy(int)
    table = index[["subject", "session", "age", "edss"]]
    out = {name: [] for name in features}
    for s in range(n_splits):
        split = make_split(table, test_fraction, folds, s)
        train = cache.rows_for(split[split["set"] == "cv"])
        test = cache.rows_for(split[split["set"] == "test"])
        groups = index["subject"].to_numpy()[train]
        for name, X in features.items():
            fitted = fit_baseline("cerebrum", pd.DataFrame(X[train]), labels[train], groups)
            out[name].append(auc(labels[test], fitted.predict_proba(X[test])[:, 1]))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cohort", type=Path, help="a cohort folder of bench/learning_curve.py")
    ap.add_argument("--splits", type=int, default=100)
    ap.add_argument("--test-fraction", type=float, default=0.3)
    a = ap.parse_args(argv)
    cache = open_cache(truth_dir(a.cohort) / "cache")
    for name, aucs in null_aucs(cache, null_features(cache), a.splits,
                                a.test_fraction).items():
        q = np.percentile(aucs, [10, 50, 90])
        print(f"{name:22s} mean test AUC {np.mean(aucs):.3f}  "
              f"(10/50/90%: {q[0]:.2f} / {q[1]:.2f} / {q[2]:.2f}) over {len(aucs)} splits")


if __name__ == "__main__":
    main()
