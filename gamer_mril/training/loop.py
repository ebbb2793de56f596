"""The training loop of one model (docs/method.md#5-training).

:func:`train_one`: AdamW; per epoch the training batches (BN in train mode), then the
validation set (BN in eval mode, no augmentation) scored by AUC and by the weighted loss.
The checkpoint kept is the epoch with the highest validation AUC (ties: the earliest); when
the AUC is undefined (one class in the validation set) the lowest validation loss decides
instead (other rules: :data:`~.selection.SELECTIONS`). A last training batch of one sample
is dropped (batch norm needs two samples in train mode). On a GPU the next batch is read
from the cache in a background thread while the current one is processed.

Outputs in ``out_dir``: ``epochs.tsv`` (rewritten after every epoch), ``model.safetensors``
(state dict of the best epoch, BN buffers included; written whenever the best epoch
changes), ``model.json`` (architecture config and metadata) and ``val_predictions.tsv``
(the best epoch's predictions on the validation set, as :func:`~.prediction.predict`
returns them).

Random streams: torch's global generator is seeded with ``seed`` and the model's initial
weights come from ``build_model(seed=seed)``; two independent ``torch.Generator`` objects
are derived from ``seed``, one for the sampler (CPU) and one for the augmentation (on the
training device). Determinism and threads: :mod:`gamer_mril.training.runtime`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..io import atomic_path, atomic_write_json, atomic_write_text
from ..modelfiles import MODEL_JSON, MODEL_WEIGHTS
from ..network import build_model, count_parameters
from ..statistics import auc
from .augmentation import AUGMENT_DEFAULTS, augment
from .cache import SessionCache
from .loss import balanced_sampler, weighted_bce
from .prediction import predict
from .runtime import (PRECISIONS, _derived_seed, _deterministic, _threads, autocast,
                      resolve_device)
from .selection import SELECTIONS, _improved, _trailing_mean

EPOCHS_FILE = "epochs.tsv"
EPOCH_COLUMNS = ("epoch", "lr", "train_loss", "val_loss", "val_auc", "val_auc_smoothed",
                 "seconds")
#: Learning-rate schedules (``lr_schedule``): constant (the paper's) or cosine annealing
#: from ``lr`` to 0 over the configured epochs.
LR_SCHEDULES = ("constant", "cosine")
VAL_PREDICTIONS = "val_predictions.tsv"


def _finite_or_none(v):
    return None if v is None or not math.isfinite(v) else float(v)


# ------------------------------------------------------------------ batches

def _batches(order: np.ndarray, batch_size: int) -> list:
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if len(chunks) > 1 and len(chunks[-1]) < 2:
        chunks = chunks[:-1]       # BN in train mode cannot normalise a single sample
    return chunks


def _batch_stream(cache: SessionCache, chunks: Sequence, device, prefetch: bool):
    """``cache.batch`` of each chunk in turn; with ``prefetch`` the next batch is read in
    a background thread while the caller works on the current one (used on GPUs, where
    the reads overlap the device's compute; the order, hence the result, is unchanged)."""
    if not prefetch or len(chunks) < 2:
        for chunk in chunks:
            yield cache.batch(chunk, device)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="gamer-loader") as pool:
        pending = pool.submit(cache.batch, chunks[0], device)
        for nxt in list(chunks[1:]) + [None]:
            current = pending.result()
            pending = pool.submit(cache.batch, nxt, device) if nxt is not None else None
            yield current


# ------------------------------------------------------------------ one run

@dataclass
class _Run:
    """The checked settings of one :func:`train_one` run, kept as the caller gave them
    (the log and model.json write them so)."""

    cache: SessionCache
    train_idx: np.ndarray
    val_idx: np.ndarray
    out_dir: Path
    device: torch.device
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    seed: int
    aug: dict | None
    growth: int
    eval_batch_size: int
    selection: str
    selection_window: int
    lr_schedule: str
    patience: int
    precision: str
    log: Callable


@dataclass
class _State:
    """What a run trains with: the model, its optimizer and schedule, the sampler and the
    augmentation's generator."""

    model: torch.nn.Module
    opt: torch.optim.Optimizer
    scheduler: object | None
    sampler: torch.utils.data.Sampler
    aug_gen: torch.Generator
    n_params: int


def _check_settings(cache: SessionCache, train_idx: np.ndarray, val_idx: np.ndarray, *,
                    epochs, batch_size, selection, lr_schedule, precision,
                    selection_window, patience) -> None:
    """``ValueError`` for settings :func:`train_one` cannot run with."""
    if int(epochs) != epochs or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if len(train_idx) < 2:
        raise ValueError(f"need at least 2 training sessions, got {len(train_idx)}")
    if len(val_idx) < 1:
        raise ValueError("the validation set is empty")
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 (batch norm), got {batch_size}")
    if selection not in SELECTIONS:
        raise ValueError(f"unknown selection {selection!r}; expected one of {SELECTIONS}")
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr_schedule {lr_schedule!r}; expected one of "
                         f"{LR_SCHEDULES}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    if int(selection_window) < 1 or int(patience) < 0:
        raise ValueError(f"selection_window must be >= 1 and patience >= 0, got "
                         f"{selection_window} and {patience}")
    overlap = np.intersect1d(train_idx, val_idx)
    if overlap.size:
        row = cache.index.iloc[int(overlap[0])]
        raise ValueError(f"subject {row['subject']} session {row['session']} is in both the "
                         f"training and the validation set")


def _augment_settings(augment_cfg: Mapping | None) -> dict | None:
    """:data:`AUGMENT_DEFAULTS` overridden by ``augment_cfg``; None when it is ``False``."""
    if augment_cfg is False:
        return None
    aug = dict(AUGMENT_DEFAULTS)
    unknown = set(augment_cfg or {}) - set(aug)
    if unknown:
        raise ValueError(f"unknown augmentation settings {sorted(unknown)}; "
                         f"known: {sorted(aug)}")
    aug.update(augment_cfg or {})
    return aug


def _warn_one_class(log: Callable, train_labels: np.ndarray, val_labels: np.ndarray) -> None:
    if len(np.unique(train_labels)) < 2:
        log(f"warning: the training set holds one class only ({int(train_labels[0])})")
    if len(np.unique(val_labels)) < 2:
        log("warning: the validation set holds one class only: validation AUC is undefined "
            "(NaN); the epoch with the lowest validation loss is kept instead")


def _setup(run: _Run, train_labels: np.ndarray, val_labels: np.ndarray) -> _State:
    """Seed torch, then build the model, its optimizer and schedule, the sampler's and the
    augmentation's generators and the sampler, in this order (the order of the draws)."""
    torch.manual_seed(run.seed)
    model = build_model(run.cache.shape[2:], run.growth, seed=run.seed).to(run.device)
    opt = torch.optim.AdamW(model.parameters(), lr=run.lr, weight_decay=run.weight_decay)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=int(run.epochs))
                 if run.lr_schedule == "cosine" else None)
    sampler_gen = torch.Generator().manual_seed(_derived_seed(run.seed, 1))
    aug_gen = torch.Generator(device=run.device).manual_seed(_derived_seed(run.seed, 2))
    sampler = balanced_sampler(train_labels, sampler_gen)
    state = _State(model=model, opt=opt, scheduler=scheduler, sampler=sampler,
                   aug_gen=aug_gen, n_params=count_parameters(model))
    run.log(f"training on {run.device}: {len(run.train_idx)} training sessions "
            f"({int(train_labels.sum())} severe), {len(run.val_idx)} validation sessions "
            f"({int(val_labels.sum())} severe), {state.n_params} parameters, "
            f"{run.epochs} epochs")
    return state


def _train_epoch(run: _Run, state: _State, epoch: int) -> float:
    """One epoch of training (sampler order, augmentation, one optimizer step per batch),
    then the schedule's step; returns the mean training loss per sample."""
    model = state.model
    model.train()
    order = run.train_idx[np.fromiter(iter(state.sampler), dtype=np.int64,
                                      count=len(state.sampler))]
    chunks = _batches(order, run.batch_size)
    total, count = 0.0, 0
    for chunk, (x, age, label, edss) in zip(chunks, _batch_stream(
            run.cache, chunks, run.device, prefetch=run.device.type == "cuda")):
        if run.aug is not None:
            x = augment(x, state.aug_gen, **run.aug)
        with autocast(run.device, run.precision):
            logit = model(x, age)
        loss = weighted_bce(logit.float(), label, edss)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"epoch {epoch}: training loss is {loss.item()}")
        state.opt.zero_grad(set_to_none=True)
        loss.backward()
        state.opt.step()
        total += loss.item() * len(chunk)
        count += len(chunk)
    if state.scheduler is not None:
        state.scheduler.step()
    return total / count


def _validate(run: _Run, model: torch.nn.Module) -> tuple:
    """(predictions, weighted loss, AUC) of the validation set."""
    val_pred = predict(model, run.cache, run.val_idx, device=run.device,
                       batch_size=run.eval_batch_size, precision=run.precision)
    with torch.no_grad():
        val_loss = float(weighted_bce(
            *(torch.tensor(val_pred[c].to_numpy(np.float64))
              for c in ("logit", "label", "edss"))))
    val_auc = auc(val_pred["label"], val_pred["prob"])
    return val_pred, val_loss, val_auc


def _epoch_row(rows: Sequence, epoch: int, lr: float, train_loss: float, val_loss: float,
               val_auc: float, seconds: float, window: int) -> dict:
    """The row of epochs.tsv of this epoch (``rows``: those of the epochs before)."""
    smoothed = _trailing_mean([r["val_auc"] for r in rows] + [val_auc], window)
    return dict(epoch=epoch, lr=lr, train_loss=train_loss, val_loss=val_loss,
                val_auc=val_auc, val_auc_smoothed=smoothed, seconds=round(seconds, 3))


def _write_epochs(out_dir: Path, rows: Sequence) -> None:
    atomic_write_text(out_dir / EPOCHS_FILE, pd.DataFrame(rows, columns=EPOCH_COLUMNS)
                      .to_csv(sep="\t", index=False, na_rep="NaN"))


def _state_dict_cpu(model: torch.nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in
            model.state_dict().items()}


def _model_meta(run: _Run, state: _State, epoch: int, val_loss: float,
                val_auc: float) -> dict:
    """model.json of the kept epoch: architecture config, scores and training settings."""
    model = state.model
    return dict(config=model.config, epoch=epoch, val_auc=_finite_or_none(val_auc),
                val_loss=_finite_or_none(val_loss), seed=int(run.seed),
                input_shape=list(run.cache.shape[2:]),
                contrasts=list(model.contrasts), n_parameters=state.n_params,
                n_train=len(run.train_idx), n_val=len(run.val_idx),
                training=dict(epochs=int(run.epochs), batch_size=int(run.batch_size),
                              lr=float(run.lr), weight_decay=float(run.weight_decay),
                              augment=run.aug, device=str(run.device),
                              selection=run.selection,
                              selection_window=int(run.selection_window),
                              lr_schedule=run.lr_schedule, patience=int(run.patience),
                              precision=run.precision),
                torch_version=torch.__version__)


def _save_kept(run: _Run, state: _State, epoch: int, val_pred: pd.DataFrame,
               val_loss: float, val_auc: float) -> None:
    """Write the kept epoch's model.safetensors, model.json and val_predictions.tsv."""
    from safetensors.torch import save_file

    with atomic_path(run.out_dir / MODEL_WEIGHTS, suffix=".safetensors") as tmp:
        save_file(_state_dict_cpu(state.model), str(tmp))
    atomic_write_json(run.out_dir / MODEL_JSON,
                      _model_meta(run, state, epoch, val_loss, val_auc))
    atomic_write_text(run.out_dir / VAL_PREDICTIONS, val_pred.to_csv(sep="\t", index=False))


def _stop_early(run: _Run, epoch: int, best_epoch: int) -> bool:
    """Early stopping: ``patience`` epochs have passed without a better one."""
    return bool(run.patience and run.selection != "last"
                and epoch - best_epoch >= int(run.patience))


def _epochs(run: _Run, state: _State, bar) -> tuple:
    """Train, validate and select epoch after epoch, writing epochs.tsv after each and the
    model files whenever the kept epoch changes; returns (rows, kept row, kept epoch)."""
    rows, best, best_epoch = [], None, None
    for epoch in range(1, int(run.epochs) + 1):
        t0 = time.perf_counter()
        epoch_lr = float(state.opt.param_groups[0]["lr"])
        train_loss = _train_epoch(run, state, epoch)
        val_pred, val_loss, val_auc = _validate(run, state.model)
        seconds = time.perf_counter() - t0
        row = _epoch_row(rows, epoch, epoch_lr, train_loss, val_loss, val_auc, seconds,
                         run.selection_window)
        rows.append(row)
        _write_epochs(run.out_dir, rows)
        improved = _improved(run.selection, row, best)
        if improved:
            best, best_epoch = row, epoch
            _save_kept(run, state, epoch, val_pred, val_loss, val_auc)
        run.log(f"epoch {epoch}/{run.epochs}: train loss {train_loss:.4f}, val loss "
                f"{val_loss:.4f}, val AUC {val_auc:.4f}, {seconds:.1f} s"
                + (" (best so far)" if improved else ""))
        bar.set_postfix(loss=f"{train_loss:.4f}", val_auc=f"{val_auc:.3f}", refresh=False)
        bar.update()
        if _stop_early(run, epoch, best_epoch):
            run.log(f"early stop after epoch {epoch}: no better epoch for {run.patience} "
                    f"epochs")
            break
    return rows, best, best_epoch


def _summary(run: _Run, state: _State, rows: Sequence, best: Mapping, best_epoch: int,
             started: float) -> dict:
    scores = ("val_auc", "val_loss", "train_loss", "val_auc_smoothed")
    return dict(best_epoch=best_epoch, val_auc=_finite_or_none(best["val_auc"]),
                val_loss=_finite_or_none(best["val_loss"]), epochs_run=len(rows),
                epochs=[{k: (_finite_or_none(v) if k in scores else v) for k, v in r.items()}
                        for r in rows],
                n_train=len(run.train_idx), n_val=len(run.val_idx),
                n_parameters=state.n_params, device=str(run.device), seed=int(run.seed),
                seconds=round(time.perf_counter() - started, 3))


def train_one(cache: SessionCache, train_idx, val_idx, out_dir, *, epochs: int,
              batch_size: int = 70, lr: float = 5e-5, weight_decay: float = 1e-2,
              seed: int = 0, device="auto", augment: Mapping | bool | None = None,
              growth: int = 4, progress: bool = True, log=print,
              eval_batch_size: int = 16, num_threads: int | None = None,
              selection: str = "val_auc", selection_window: int = 5,
              lr_schedule: str = "constant", patience: int = 0,
              precision: str = "fp32") -> dict:
    """Train one model on cache rows ``train_idx``, select the epoch on ``val_idx``.

    ``selection`` (:data:`~.selection.SELECTIONS`) says which epoch's weights are kept; ties
    keep the earlier epoch, and an undefined AUC (one class in the validation set) falls
    back to the lowest validation loss. ``lr_schedule`` (:data:`LR_SCHEDULES`): constant or
    cosine annealing to 0 over ``epochs``. ``patience`` > 0 stops training once that many
    epochs have passed without a better epoch (early stopping; not with ``last``).
    ``precision`` (:data:`~.runtime.PRECISIONS`): ``"bf16"`` runs forward passes and loss
    under bfloat16 autocast (validation too); the default float32 keeps CPU runs
    bit-reproducible.

    ``augment`` (``training.augment``): keyword arguments of :func:`~.augmentation.augment` overriding
    :data:`~.augmentation.AUGMENT_DEFAULTS`; ``False`` turns augmentation off.
    ``num_threads``: torch's intra-op thread count for the run (restored afterwards); give
    the job's thread count, since oversubscribed OpenMP threads slow the small 3D ops down
    many-fold on a busy machine. ``eval_batch_size`` is the batch size of validation (use
    the same in :func:`~.prediction.predict` to reproduce the validation predictions bit
    for bit). Writes ``epochs.tsv``, ``model.safetensors``, ``model.json`` and
    ``val_predictions.tsv`` in ``out_dir`` (see the module docstring) and returns a
    JSON-serialisable summary: ``best_epoch``, ``val_auc``, ``val_loss``, ``epochs`` (the
    rows of epochs.tsv), ``n_train``, ``n_val``, ``n_parameters``, ``device``, ``seed``,
    ``seconds``.
    """
    from ..progress import bar as progress_bar

    train_idx = np.asarray(train_idx, dtype=np.int64).reshape(-1)
    val_idx = np.asarray(val_idx, dtype=np.int64).reshape(-1)
    _check_settings(cache, train_idx, val_idx, epochs=epochs, batch_size=batch_size,
                    selection=selection, lr_schedule=lr_schedule, precision=precision,
                    selection_window=selection_window, patience=patience)
    aug = _augment_settings(augment)
    run = _Run(cache=cache, train_idx=train_idx, val_idx=val_idx, out_dir=Path(out_dir),
               device=resolve_device(device), epochs=epochs, batch_size=batch_size, lr=lr,
               weight_decay=weight_decay, seed=seed, aug=aug, growth=growth,
               eval_batch_size=eval_batch_size, selection=selection,
               selection_window=selection_window, lr_schedule=lr_schedule,
               patience=patience, precision=precision, log=log)
    run.out_dir.mkdir(parents=True, exist_ok=True)
    labels = cache.index["label"].to_numpy()
    train_labels, val_labels = labels[train_idx], labels[val_idx]
    _warn_one_class(log, train_labels, val_labels)

    started = time.perf_counter()
    with _deterministic(run.device), _threads(num_threads):
        state = _setup(run, train_labels, val_labels)
        bar = progress_bar(int(epochs), "training", unit="epoch", disable=not progress)
        try:
            rows, best, best_epoch = _epochs(run, state, bar)
        finally:
            bar.close()
    return _summary(run, state, rows, best, best_epoch, started)
