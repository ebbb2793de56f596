#!/usr/bin/env python
"""How many patients does the network need? Test AUC against cohort size and effect.

For each planted-effect strength and seed, one synthetic cohort of the largest size is
generated (``gamer_mril.synthetic``; a smaller cohort is the first subjects of a larger
one) and turned into network inputs from its ground truth in seconds
(``bench/truth_cache.py``: true poses and masks instead of registration and skull strip).
For each size, the workflow's own split (test subjects held out, stratified
subject-grouped folds) is made on those subjects, one network is trained per fold
(``gamer_mril.training.train_fold``) and the test set is scored by the mean of the fold
models, as Table II does. Beside the network, on the same folds:

* ``cerebrum means + age``: the workflow's floor baseline (``gamer_mril.baselines``);
* ``all voxels + age``: the same penalised logistic regression on every brain voxel of the
  three network inputs (its penalty chosen by subject-grouped inner folds, as the
  regional baseline's): does the network learn what a linear model on its own inputs sees?
* ``voxel screen + age``: a mass-univariate screen, as a voxel-wise group comparison would
  do it: among the same voxels (and age), the :data:`SCREEN_FEATURES` whose ANOVA F
  between the training sessions' classes is largest, then the same kind of regression on
  them: a model that looks for a few voxels, where the network and the voxel model look
  at all of them;
* ``oracle: planted-region means + age``: the same regression on the mean of each map
  inside the true planted region, which no real analysis has: what a perfect localiser
  followed by a simple statistic would reach.

Each row gives the test AUC with its subject-grouped 95% bootstrap interval and the mean
within-fold validation AUC. Reads the generator's ground truth, so it is a benchmark, never
part of the workflow.

    python bench/learning_curve.py OUT       # default: 24 and 48 subjects, moderate effect
    python bench/learning_curve.py OUT --sizes 24 48 96 --effects 1 0.25 --seeds 0 1
    python bench/learning_curve.py OUT --region 24 20 24 9 --effects 0.45 \
        --set selection=last lr_schedule=cosine augment.noise_sd=0    # a focal effect

``--space aligned`` makes the network inputs in a grid fixed to the head (the true pose
undone; ``bench/truth_cache.py``) instead of the NDI grid the workflow uses, to see what
the inputs' alignment is worth (its inputs and fold models go to ``truth-aligned`` and
``runs-aligned`` beside the native ones); ``--baselines-only`` trains no network.
``--region X Y Z R`` plants the effect in a ball of white matter (MNI mm) instead of the
demo's tracts (``gamer_mril.synthetic``); ``--set KEY=VALUE`` overrides a training setting
of :data:`TRAINING` (``augment.KEY`` one of the augmentation), so that settings are
compared on the same cohorts and folds.

On 2 cores one effect strength at 24 and 48 subjects takes about 18 minutes (cohort
generation 2.5 min, training 30 epochs per fold); every added size, strength or seed adds
its share (96 subjects: about 25 minutes more per strength and seed).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import numpy as np
import pandas as pd

from truth_cache import SPACES, build_truth_cache, truth_dir  # bench/truth_cache.py

from gamer_mril import CONTRASTS
from gamer_mril.baselines import fit_baseline
from gamer_mril.evaluation import table_ii
from gamer_mril.split import make_split
from gamer_mril.synthetic import generate_cohort
from gamer_mril.training import load_model, open_cache, predict, train_fold

#: The network's training settings (the quick demo's); ``--set`` overrides them.
TRAINING = dict(epochs=30, batch_size=4, lr=3e-4, weight_decay=1e-2, growth=4,
                selection="val_auc", selection_window=5, lr_schedule="constant", patience=0,
                restarts=1,
                augment=dict(p_flip=0, p_rot90=0, max_rotation_deg=5, max_scale=0.05,
                             noise_sd=0.05))

NETWORK = "GAMER-MRIL"
FLOOR = "cerebrum means + age"
VOXELS = "all voxels + age"
SCREEN = "voxel screen + age"
#: Features the voxel screen keeps (of every input voxel and age).
SCREEN_FEATURES = 100
ORACLE = "oracle: planted-region means + age"


def cerebrum_means(images: np.ndarray) -> np.ndarray:
    """(sessions, contrasts) mean of each network input over its cerebrum (the non-zero
    voxels: brain minus cerebellum); ``images``: (sessions, contrasts, D, H, W)."""
    return np.array([[x[c][b].mean(dtype=np.float64) for c in range(x.shape[0])]
                     for x, b in zip(images, (images > 0).any(axis=1))])


def session_features(cache, planted: dict) -> dict:
    """{classifier: feature frame indexed like the cache}: cerebrum means, every voxel
    inside any session's cerebrum, and planted-region means (each with age)."""
    index = cache.index
    images = np.asarray(cache.images, dtype=np.float32)
    age = index[["age"]].to_numpy(np.float64)
    anywhere = (images > 0).any(axis=(0, 1))
    voxels = np.concatenate([images[:, c][:, anywhere] for c in range(images.shape[1])]
                            + [age.astype(np.float32)], axis=1)
    oracle = []
    for x, key in zip(images, zip(index["subject"], index["session"])):
        region = planted[key]
        oracle.append([x[c][region].mean(dtype=np.float64) if region.any() else np.nan
                       for c in range(len(CONTRASTS))])
    cols = [*CONTRASTS, "age"]
    return {FLOOR: pd.DataFrame(np.hstack([cerebrum_means(images), age]), columns=cols),
            VOXELS: pd.DataFrame(voxels),
            ORACLE: pd.DataFrame(np.hstack([np.array(oracle), age]), columns=cols)}


def voxel_screen(k: int = SCREEN_FEATURES):
    """The voxel screen with a fixed ``k`` (the workflow's screen baseline,
    :func:`gamer_mril.baselines.screen_pipeline`, chooses ``k`` by inner folds)."""
    from gamer_mril.baselines import screen_pipeline

    return screen_pipeline(k)


def training_settings(overrides=None, **keywords) -> dict:
    """:data:`TRAINING` with ``overrides`` ({"lr": 1e-4, "augment.noise_sd": 0, ...},
    values as YAML reads them when strings) and keyword settings applied."""
    import yaml

    settings = {**TRAINING, "augment": dict(TRAINING["augment"])}
    for key, value in {**(overrides or {}), **keywords}.items():
        if isinstance(value, str):
            value = yaml.safe_load(value)
            with contextlib.suppress(ValueError, TypeError):
                value = float(value) if isinstance(value, str) else value   # "1e-4"
        head, _, tail = key.partition(".")
        if head == "augment" and tail:
            if tail not in settings["augment"]:
                raise ValueError(f"unknown augmentation setting {tail!r}")
            settings["augment"][tail] = value
        elif head in settings and not tail:
            settings[head] = value
        else:
            raise ValueError(f"unknown training setting {key!r}; known: {sorted(TRAINING)}")
    return settings


def one_point(cache, table, features, n_subjects, runs: Path, *, seed, training: dict, folds,
              test_fraction, log, network=True) -> list[dict]:
    """Every classifier's Table II figures for the first ``n_subjects`` subjects (the
    network's only when ``network``)."""
    subjects = sorted(table["subject"].unique())[:n_subjects]
    part = table[table["subject"].isin(subjects)].reset_index(drop=True)
    split = make_split(part, test_fraction, folds, seed)
    rows_of = {(s, t): i for i, (s, t) in enumerate(zip(cache.index["subject"],
                                                        cache.index["session"]))}
    cv = split[split["set"] == "cv"]
    test = split[split["set"] == "test"]
    test_rows = [rows_of[k] for k in zip(test["subject"], test["session"])]
    names = (NETWORK,) * bool(network) + (FLOOR, VOXELS, SCREEN, ORACLE)
    preds = {name: ({}, {}) for name in names}
    labels = cache.index["label"].to_numpy()
    for k in sorted(int(f) for f in cv["fold"].unique()):
        train = cv[cv["fold"] != k]
        val = cv[cv["fold"] == k]
        tr = [rows_of[x] for x in zip(train["subject"], train["session"])]
        va = [rows_of[x] for x in zip(val["subject"], val["session"])]
        if network:
            out = runs / f"n{n_subjects}-s{seed}-f{k}"
            train_fold(cache, tr, va, out, seed=seed + k, device="auto", progress=False,
                       log=lambda *_: None, **training)
            model = load_model(out)
            preds[NETWORK][0][k] = predict(model, cache, va)
            preds[NETWORK][1][k] = predict(model, cache, test_rows)
        for name in (FLOOR, VOXELS, SCREEN, ORACLE):
            X = features[VOXELS if name == SCREEN else name]
            if name == SCREEN:
                fitted = voxel_screen().fit(X.iloc[tr].to_numpy(float), labels[tr])
            else:
                kind = "regional" if name == VOXELS else "cerebrum"   # regional: C by inner folds
                fitted = fit_baseline(kind, X.iloc[tr], labels[tr], train["subject"].to_numpy())
            for j, rows in ((0, va), (1, test_rows)):
                frame = cache.index.iloc[rows][["subject", "session", "edss", "label"]]
                preds[name][j][k] = frame.assign(
                    prob=fitted.predict_proba(X.iloc[rows].to_numpy(float))[:, 1]
                ).reset_index(drop=True)
        log(f"  n={n_subjects} seed={seed} fold {k} done")
    out_rows = []
    for name, (val, tst) in preds.items():
        t2 = table_ii(val, tst).set_index("model")
        m = t2.loc["mean of folds"]
        out_rows.append(dict(classifier=name, n_subjects=n_subjects,
                             n_sessions=len(part), n_test=int(len(test_rows)), seed=seed,
                             test_auc=m["auc"], test_auc_low=m["auc_low"],
                             test_auc_high=m["auc_high"],
                             val_auc_within=t2.loc["mean", "auc"]))
    return out_rows


def _subjects(cohort: Path) -> int:
    """Subjects of the cohort already generated there (0 if none)."""
    table = cohort / "rawdata" / "participants.tsv"
    if not table.exists():
        return 0
    return pd.read_csv(table, sep="\t", dtype={"subject": str})["subject"].nunique()


def run(out: Path, sizes, effects, seeds, *, scale=2.0, crop=(48, 48, 56), folds=3,
        test_fraction=0.2, region=None, space="native", network=True, training=None,
        log=print, **settings) -> pd.DataFrame:
    """The learning-curve table; ``training``: overrides of :data:`TRAINING` (as
    ``--set``), ``settings``: the same as keywords (``epochs=1``)."""
    training = training_settings(training, **settings)
    rows = []
    for effect in effects:
        for seed in seeds:
            started = time.perf_counter()
            place = "" if region is None else "-r" + "_".join(f"{v:g}" for v in region)
            cohort = out / f"cohort-e{effect:g}-s{seed}-x{scale:g}{place}"
            if _subjects(cohort) < max(sizes):       # a larger cohort holds a smaller one
                generate_cohort(cohort, n_subjects=max(sizes), followup_fraction=0.4,
                                severe_fraction=0.4, scale=scale, seed=seed,
                                log=lambda *_: None, effect_scale=effect, region=region)
            inputs = truth_dir(cohort, space)
            table, planted = build_truth_cache(cohort, inputs, crop, with_planted=True,
                                               space=space)
            cache = open_cache(inputs / "cache")
            features = session_features(cache, planted)
            log(f"effect {effect:g}, seed {seed}: cohort and cache in "
                f"{time.perf_counter() - started:.0f} s")
            for n in sizes:
                runs = cohort / ("runs" if space == "native" else f"runs-{space}")
                for r in one_point(cache, table, features, n, runs, seed=seed,
                                   training=training, folds=folds,
                                   test_fraction=test_fraction, log=log,
                                   network=network):
                    rows.append(dict(effect_scale=effect, **r))
    return pd.DataFrame(rows)


def plot(table: pd.DataFrame, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    effects = sorted(table["effect_scale"].unique(), reverse=True)
    fig = Figure(figsize=(4.5 * len(effects), 4), dpi=120)
    FigureCanvasAgg(fig)
    for i, effect in enumerate(effects):
        ax = fig.add_subplot(1, len(effects), i + 1)
        sub = table[table["effect_scale"] == effect]
        for name, rows in sub.groupby("classifier", sort=False):
            g = rows.groupby("n_subjects")
            mean = g["test_auc"].mean()
            ax.plot(mean.index, mean.values, marker="o", label=name)
            ax.fill_between(mean.index, g["test_auc_low"].mean(), g["test_auc_high"].mean(),
                            alpha=0.15)
        ax.axhline(0.5, color="0.6", ls="--", lw=1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("subjects in the cohort")
        ax.set_ylabel("test AUC (mean of fold models)")
        ax.set_title(f"planted effect x {effect:g}")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(str(path))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--sizes", type=int, nargs="+", default=[24, 48])
    ap.add_argument("--effects", type=float, nargs="+", default=[0.25])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--epochs", type=int, default=TRAINING["epochs"])
    ap.add_argument("--scale", type=float, default=2.0, help="voxel size x 1.8 mm")
    ap.add_argument("--crop", type=int, nargs=3, default=(48, 48, 56))
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--selection", default=TRAINING["selection"], help="training.selection")
    ap.add_argument("--region", type=float, nargs=4, metavar=("X", "Y", "Z", "RADIUS"),
                    help="plant the effect in a ball of white matter (MNI mm)")
    ap.add_argument("--space", choices=SPACES, default="native",
                    help="network inputs in the NDI grid (the workflow's) or aligned to the head")
    ap.add_argument("--baselines-only", action="store_true",
                    help="no network: the baselines and the oracle alone (seconds per point)")
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                    help="training settings (augment.KEY for the augmentation)")
    a = ap.parse_args(argv)
    overrides = dict(kv.split("=", 1) for kv in a.set)
    a.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    table = run(a.out, a.sizes, a.effects, a.seeds, scale=a.scale, crop=tuple(a.crop),
                test_fraction=a.test_fraction, region=a.region, space=a.space,
                network=not a.baselines_only,
                training={"epochs": a.epochs, "selection": a.selection, **overrides})
    table.to_csv(a.out / "learning_curve.tsv", sep="\t", index=False)
    plot(table, a.out / "learning_curve.png")
    cols = ["effect_scale", "n_subjects", "n_test", "seed", "classifier", "test_auc",
            "test_auc_low", "test_auc_high", "val_auc_within"]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"{time.perf_counter() - started:.0f} s; table and figure in {a.out}")


if __name__ == "__main__":
    main()
