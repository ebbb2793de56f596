"""Training a cross-validation fold from several random starts (docs/method.md#5-training):
:func:`train_fold` runs :func:`~.loop.train_one` once per restart and keeps the best.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..io import atomic_write_json, atomic_write_text
from ..modelfiles import MODEL_JSON, MODEL_WEIGHTS
from .cache import SessionCache
from .loop import EPOCHS_FILE, VAL_PREDICTIONS, train_one
from .runtime import _derived_seed
from .selection import _better, _selection_key

#: One row per training restart of a fold (:func:`train_fold`).
RESTARTS_FILE = "restarts.tsv"


def _restart_seed(seed: int, restart: int) -> int:
    """Restart 0 trains with ``seed`` itself, restart r > 0 with a seed derived from both."""
    return int(seed) if restart == 0 else _derived_seed(seed, 100 + restart) % 2**31


def _train_restarts(cache: SessionCache, train_idx, val_idx, out_dir: Path, restarts: int,
                    seed: int, selection: str, log, settings: dict) -> list:
    """[(restart, summary)] of every start; one start trains in ``out_dir`` itself, several
    each in ``out_dir/restart-<r>``."""
    if restarts == 1:
        return [(0, train_one(cache, train_idx, val_idx, out_dir, seed=seed,
                              selection=selection, log=log, **settings))]
    runs = []
    for r in range(restarts):
        r_seed = _restart_seed(seed, r)
        log(f"restart {r + 1}/{restarts} (seed {r_seed})")
        runs.append((r, train_one(cache, train_idx, val_idx, out_dir / f"restart-{r}",
                                  seed=r_seed, selection=selection, log=log, **settings)))
    return runs


def _chosen_restart(runs: Sequence, key: str) -> int:
    """The restart whose kept epoch is best by selection ``key``; ties keep the earlier."""
    chosen, best = 0, None
    for r, summary in runs:
        kept = next(e for e in summary["epochs"] if e["epoch"] == summary["best_epoch"])
        candidate = _selection_key(key, {k: float("nan") if v is None else v
                                         for k, v in kept.items()})
        if _better(candidate, best):
            chosen, best = r, candidate
    return chosen


def _keep_restart(out_dir: Path, chosen: int, runs: Sequence, restarts: int) -> None:
    """Move the chosen restart's files into ``out_dir`` (model.json noting the restart) and
    remove every restart's folder."""
    source = out_dir / f"restart-{chosen}"
    for name in (MODEL_WEIGHTS, MODEL_JSON, EPOCHS_FILE, VAL_PREDICTIONS):
        os.replace(source / name, out_dir / name)
    meta = json.loads((out_dir / MODEL_JSON).read_text())
    meta["training"]["restarts"] = restarts
    meta["restart"] = chosen
    atomic_write_json(out_dir / MODEL_JSON, meta)
    for r, _ in runs:
        shutil.rmtree(out_dir / f"restart-{r}", ignore_errors=True)


def train_fold(cache: SessionCache, train_idx, val_idx, out_dir, *, restarts: int = 1,
               seed: int = 0, selection: str = "val_auc", log=print, **settings) -> dict:
    """Train ``restarts`` models of one fold from different initial weights (and
    augmentation and sampling draws) and keep the one whose kept epoch is best on the
    validation fold, by the same ``selection`` that chose its epoch (``last``: the lowest
    validation loss of the last epoch); ties keep the earlier restart.

    Small cohorts make training depend on its random start: from one start the network
    finds the effect, from another it only memorises the training sessions (validation
    loss never below its first epoch's). Restart 0 uses ``seed`` itself, so ``restarts=1``
    is a single run as before; restart r > 0 a seed derived from ``seed`` and r. Every
    restart trains in ``out_dir/restart-<r>``; the chosen one's files are then moved into
    ``out_dir`` and the other folders removed. ``out_dir/restarts.tsv`` lists every
    restart (seed, kept epoch, validation loss and AUC, chosen). Other keywords: those of
    :func:`~.loop.train_one`. Returns the chosen run's summary with ``restart``,
    ``restarts`` (the table's rows) added.
    """
    restarts = int(restarts)
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    out_dir = Path(out_dir)
    runs = _train_restarts(cache, train_idx, val_idx, out_dir, restarts, seed, selection,
                           log, settings)
    key = "val_loss" if selection == "last" else selection
    chosen = _chosen_restart(runs, key)
    table = [dict(restart=r, seed=s["seed"], best_epoch=s["best_epoch"],
                  val_loss=s["val_loss"], val_auc=s["val_auc"], chosen=r == chosen)
             for r, s in runs]
    if restarts > 1:
        _keep_restart(out_dir, chosen, runs, restarts)
        log(f"kept restart {chosen + 1} of {restarts} (by {key})")
    atomic_write_text(out_dir / RESTARTS_FILE,
                      pd.DataFrame(table).to_csv(sep="\t", index=False, na_rep="NaN"))
    summary = dict(runs[chosen][1])
    summary.update(restart=chosen, restarts=table)
    return summary
