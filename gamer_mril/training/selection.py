"""Epoch selection (docs/method.md#5-training): which epoch of a run is kept, by the rule
``selection`` names, and the comparison that also picks the best of a fold's restarts.

A defined validation AUC beats an undefined one (one class in the validation set), a
higher AUC beats a lower one, and when the AUC is undefined the lower validation loss
wins; ties keep the earlier epoch (or restart).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

#: How the kept epoch is chosen (``selection``): the best validation AUC (the paper's
#: choice), the best validation AUC averaged over the last ``selection_window`` epochs,
#: the lowest validation loss, or the last epoch (a fixed schedule).
SELECTIONS = ("val_auc", "val_auc_smoothed", "val_loss", "last")


def _trailing_mean(values: Sequence, window: int) -> float:
    """Mean of the defined values among the last ``window`` (NaN when none is)."""
    tail = np.asarray(values[-int(window):], dtype=np.float64)
    tail = tail[np.isfinite(tail)]
    return float(tail.mean()) if tail.size else float("nan")


def _selection_key(selection: str, row: Mapping) -> tuple:
    """The (AUC-like, loss) pair :func:`_better` compares for one epoch's row."""
    if selection == "val_auc":
        return row["val_auc"], row["val_loss"]
    if selection == "val_auc_smoothed":
        return row["val_auc_smoothed"], row["val_loss"]
    if selection == "val_loss":
        return float("nan"), row["val_loss"]
    raise ValueError(f"unknown selection {selection!r}; expected one of {SELECTIONS}")


def _better(candidate: tuple, best: tuple | None) -> bool:
    """Epoch selection: a defined AUC beats an undefined one; higher AUC, then lower
    validation loss when the AUC is undefined; ties keep the earlier epoch."""
    if best is None:
        return True
    (auc_c, loss_c), (auc_b, loss_b) = candidate, best
    if math.isfinite(auc_c) != math.isfinite(auc_b):
        return math.isfinite(auc_c)
    if math.isfinite(auc_c):
        return auc_c > auc_b
    if math.isfinite(loss_c) != math.isfinite(loss_b):
        return math.isfinite(loss_c)
    return loss_c < loss_b


def _improved(selection: str, row: Mapping, best: Mapping | None) -> bool:
    """Whether epoch ``row`` replaces the kept epoch ``best`` (always, with ``last``)."""
    if selection == "last":
        return True
    return _better(_selection_key(selection, row),
                   None if best is None else _selection_key(selection, best))
