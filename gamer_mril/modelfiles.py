"""Files of trained fold models: finding them, choosing the one that explains a session.

Kept free of torch so that the workflow can check a frozen model folder at parse time.
A fold model folder holds ``model.safetensors`` (weights, no pickle) and ``model.json``
(architecture config, selected epoch, validation AUC, training settings), as written by
:func:`gamer_mril.training.train_fold`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

MODEL_WEIGHTS = "model.safetensors"
MODEL_JSON = "model.json"


def find_fold_models(folder) -> dict:
    """``{fold: folder/fold-<k>}`` for every complete fold model under ``folder``.

    A fold model is complete when it has ``model.safetensors`` and ``model.json``.
    Raises ``ValueError`` naming the folder when there is none, or when a ``fold-*``
    folder is incomplete or misnamed (a half-copied model folder must not pass unnoticed).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"model folder {folder} does not exist")
    found = {}
    for sub in sorted(folder.glob("fold-*")):
        if not sub.is_dir():
            continue
        fold = fold_of(sub)
        missing = [n for n in (MODEL_WEIGHTS, MODEL_JSON) if not (sub / n).is_file()]
        if missing:
            raise ValueError(f"{sub}: incomplete fold model, missing {', '.join(missing)}")
        found[fold] = sub
    if not found:
        raise ValueError(f"{folder} holds no trained fold model (fold-<k>/{MODEL_WEIGHTS} "
                         f"and {MODEL_JSON}, as the training jobs write them)")
    return dict(sorted(found.items()))


def best_fold(metas: Mapping) -> int:
    """The fold whose model has the highest validation AUC (``model.json``'s ``val_auc``).

    ``metas``: {fold: model.json contents}. Ties and undefined AUCs go to the lowest fold,
    as in Table II's "best fold".
    """
    if not metas:
        raise ValueError("no fold models given")
    folds = sorted(metas)
    aucs = np.array([np.nan if metas[k].get("val_auc") is None else float(metas[k]["val_auc"])
                     for k in folds])
    if np.isnan(aucs).all():
        return folds[0]
    return folds[int(np.nanargmax(aucs))]


def explaining_fold(split_row, best: int) -> int:
    """The fold model that explains a session: its own fold's model for a validation
    (cv) session, the best fold's model for a test session or a new session (``None``)."""
    if split_row is None or split_row["set"] != "cv":
        return int(best)
    return int(split_row["fold"])


def read_model_meta(model_dir) -> dict:
    """``model.json`` of a trained fold model."""
    return json.loads((Path(model_dir) / MODEL_JSON).read_text())


def fold_of(model_dir) -> int:
    """The fold number of a ``fold-<k>`` model folder."""
    name = Path(model_dir).name
    if not (name.startswith("fold-") and name[5:].isdigit()):
        raise ValueError(f"{model_dir}: a fold folder must be named fold-<number>")
    return int(name[5:])


def model_dirs(weights) -> dict:
    """``{fold: folder}`` of the fold models whose weight files are given."""
    return {fold_of(Path(w).parent): Path(w).parent for w in weights}
