"""Training and prediction of the GAMER-MRIL classifier
(docs/method.md#5-training).

The pieces, in the order a fold is trained:

Session cache
    :func:`build_cache` decodes every session's three preprocessed maps (cropped grid,
    values in [0, 1]) once into ``images.npy``, a plain ``.npy`` array of shape
    ``(N, 3, D, H, W)`` in float16, plus ``index.tsv`` (row, subject, session, age, edss,
    label). :func:`open_cache` memory-maps it; :meth:`SessionCache.batch` reads a batch
    of rows (each distinct row copied once, in file order, straight to its place in the
    batch; page-locked memory when the batch goes to a GPU), converts it to float32
    and puts it on the device. On a GPU the float16 rows travel to the device and are
    converted there, which halves the transfer. float16 keeps ~3 significant digits,
    ample for maps in [0, 1] (rounding error at most 2**-11, about 5e-4, near 1).

Augmentation (:func:`augment`, training batches only)
    One resampling per sample composes three geometric draws, then noise is added:

    * a flip of each spatial axis, independently, with probability ``p_flip``;
    * with probability ``p_rot90`` a rotation by k x 90 degrees, k uniform in {1, 2, 3},
      in the plane of the first two spatial axes (D, H); only when D == H, otherwise this
      draw is ignored (a 90-degree turn would not keep the matrix);
    * an affine: a rotation about **each of the three axes** by an angle uniform in
      [-max_rotation_deg, +max_rotation_deg] (composed Rz . Ry . Rx) and an isotropic scale
      uniform in [1 - max_scale, 1 + max_scale], about the centre of the matrix, in voxel
      units (so a rotation stays rigid on a non-cubic matrix); no translation;
    * Gaussian noise, zero mean, sd ``noise_sd``, added after the resampling so that it is
      not smoothed by the interpolation; values are not clipped afterwards.

    The resampling is trilinear (``grid_sample``, zero outside the matrix, which is the
    background value after masking). All three contrasts of a sample get the same draw,
    the noise field included (one field broadcast over the channels); different samples
    get independent draws. Every random number comes from the ``torch.Generator`` passed
    in, so a seeded generator reproduces the augmentation exactly.

Loss and sampler
    :func:`weighted_bce` is the mean over the batch of BCE-with-logits times
    ``2 - |EDSS - 5| / 5`` (:func:`sample_weights`, 1 at EDSS 0 or 10, 2 at EDSS 5).
    :func:`balanced_sampler` is a seeded ``WeightedRandomSampler`` (with replacement) with
    weight 1 / (size of the sample's class), so both classes are drawn equally often;
    an epoch draws as many samples as the training set holds.

Training (:func:`train_fold`)
    AdamW; per epoch the training batches (BN in train mode), then the validation set
    (BN in eval mode, no augmentation) scored by AUC and by the weighted loss. The
    checkpoint kept is the epoch with the highest validation AUC (ties: the earliest);
    when the AUC is undefined (one class in the validation set) the lowest validation loss
    decides instead. A last training batch of one sample is dropped (batch norm needs
    two samples in train mode). On a GPU the next batch is read from the cache in a
    background thread while the current one is processed.

    Outputs in ``out_dir``: ``epochs.tsv`` (rewritten after every epoch),
    ``model.safetensors`` (state dict of the best epoch, BN buffers included; written
    whenever the best epoch changes), ``model.json`` (architecture config and metadata)
    and ``val_predictions.tsv`` (the best epoch's predictions on the validation set, as
    :func:`predict` returns them).

Reproducibility
    ``train_fold`` seeds torch's global generator and derives two independent
    ``torch.Generator`` objects from ``seed``: one for the sampler (CPU) and one for the
    augmentation (on the training device). The model's initial weights come from
    ``build_model(seed=seed)``. While it runs, ``torch.use_deterministic_algorithms(True,
    warn_only=True)`` is on (and cuDNN's benchmark off, deterministic on); the previous
    settings are restored afterwards. On the CPU two runs with the same seed, on the same
    machine and thread count, give bit-identical weights and metrics (tested). On CUDA,
    the backward passes of ``ReplicationPad3d`` and ``AvgPool3d`` have no deterministic
    kernel (they accumulate with atomic adds), so GPU runs with one seed agree only up to
    float rounding; torch warns about these ops rather than failing.

Prediction
    :func:`predict` (no augmentation, no gradients) returns logits, probabilities and the
    attention weights per session. Table II, the attention summary and the ROC figure
    are made from those predictions by :mod:`gamer_mril.evaluation`.

Nothing here imports snakemake.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from numpy.lib.format import open_memmap

from . import CONTRASTS
from .io import atomic_path, atomic_write_json, atomic_write_text
from .network import build_model, count_parameters
from .modelfiles import MODEL_JSON, MODEL_WEIGHTS, best_fold, find_fold_models, fold_of, read_model_meta  # noqa: F401
from .split import severity_label
from .evaluation import frozen_predictions
from .evaluation import roc_auc as _auc

IMAGES_FILE = "images.npy"
INDEX_FILE = "index.tsv"
INDEX_COLUMNS = ("row", "subject", "session", "age", "edss", "label")
EPOCH_COLUMNS = ("epoch", "lr", "train_loss", "val_loss", "val_auc", "val_auc_smoothed",
                 "seconds")
#: How the kept epoch is chosen (``selection``): the best validation AUC (the paper's
#: choice), the best validation AUC averaged over the last ``selection_window`` epochs,
#: the lowest validation loss, or the last epoch (a fixed schedule).
SELECTIONS = ("val_auc", "val_auc_smoothed", "val_loss", "last")
#: Learning-rate schedules (``lr_schedule``): constant (the paper's) or cosine annealing
#: from ``lr`` to 0 over the configured epochs.
LR_SCHEDULES = ("constant", "cosine")
#: Arithmetic of the network's forward passes in training and prediction
#: (``precision``): float32, or bfloat16 autocast (mixed precision, for GPUs; weights,
#: optimizer and loss stay float32). Relevance maps are always computed in float32.
PRECISIONS = ("fp32", "bf16")
VAL_PREDICTIONS = "val_predictions.tsv"
#: One row per training restart of a fold (:func:`train_fold`).
RESTARTS_FILE = "restarts.tsv"

#: Default augmentation parameters (docs/method.md#5-training).
AUGMENT_DEFAULTS = dict(noise_sd=0.2, max_rotation_deg=30.0, max_scale=0.1, p_flip=0.5,
                        p_rot90=0.5)

#: Tolerance on the [0, 1] value range of cached images (interpolation overshoot).
_RANGE_TOL = 1e-3


# --------------------------------------------------------------------------------------
# Session cache
# --------------------------------------------------------------------------------------

def build_cache(rows: Sequence[Mapping], out_dir, contrasts: Sequence[str] = CONTRASTS) -> None:
    """Decode the sessions' maps once into ``out_dir/images.npy`` and ``out_dir/index.tsv``.

    ``rows``: one mapping per session with ``subject``, ``session``, ``age`` (years),
    ``edss`` and ``paths`` = {contrast: path of the preprocessed map in the cropped grid}.
    Row order is kept. Every map must be 3D, finite and in [0, 1] (a tolerance of 1e-3
    for interpolation overshoot, clipped away), and all maps of all sessions must share
    one shape; otherwise ``ValueError`` naming the session. Both files are written under
    temporary names and renamed when complete.
    """
    import nibabel as nib

    rows = list(rows)
    if not rows:
        raise ValueError("build_cache: no sessions given")
    contrasts = tuple(contrasts)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    records = []
    for r in rows:
        missing = [k for k in ("subject", "session", "age", "edss", "paths") if k not in r]
        if missing:
            raise ValueError(f"build_cache: row {dict(r)!r} lacks {missing}")
        name = f"subject {r['subject']} session {r['session']}"
        lacking = [c for c in contrasts if c not in r["paths"]]
        if lacking:
            raise ValueError(f"{name}: no path for contrast(s) {lacking}")
        age, edss = float(r["age"]), float(r["edss"])
        if not math.isfinite(age) or not math.isfinite(edss):
            raise ValueError(f"{name}: age {r['age']!r} and EDSS {r['edss']!r} must be finite")
        records.append(dict(subject=str(r["subject"]), session=str(r["session"]), age=age,
                            edss=edss, name=name, paths=r["paths"]))

    def load(rec, contrast):
        img = nib.load(str(rec["paths"][contrast]))
        if len(img.shape) != 3:
            raise ValueError(f"{rec['name']}: {contrast} map {rec['paths'][contrast]} is not "
                             f"3D (shape {img.shape})")
        return img

    shape = tuple(load(records[0], contrasts[0]).shape)
    with atomic_path(out_dir / IMAGES_FILE, suffix=".npy") as tmp:
        images = open_memmap(tmp, mode="w+", dtype=np.float16,
                             shape=(len(records), len(contrasts)) + shape)
        for i, rec in enumerate(records):
            for c, contrast in enumerate(contrasts):
                img = load(rec, contrast)
                if tuple(img.shape) != shape:
                    raise ValueError(
                        f"{rec['name']}: {contrast} map has shape {tuple(img.shape)}, but the "
                        f"cache's shape is {shape} (from subject {records[0]['subject']} "
                        f"session {records[0]['session']}); all maps must share the "
                        f"cropped grid")
                data = np.asarray(img.get_fdata(dtype=np.float32))
                if not np.isfinite(data).all():
                    raise ValueError(f"{rec['name']}: {contrast} map has "
                                     f"{int((~np.isfinite(data)).sum())} non-finite voxels")
                lo, hi = float(data.min()), float(data.max())
                if lo < -_RANGE_TOL or hi > 1 + _RANGE_TOL:
                    raise ValueError(f"{rec['name']}: {contrast} values span [{lo:g}, {hi:g}]; "
                                     f"the cache takes preprocessed maps scaled to [0, 1]")
                images[i, c] = np.clip(data, 0.0, 1.0)
        images.flush()
        del images

    index = pd.DataFrame({
        "row": np.arange(len(records)),
        "subject": [r["subject"] for r in records],
        "session": [r["session"] for r in records],
        "age": [r["age"] for r in records],
        "edss": [r["edss"] for r in records],
    })
    index["label"] = severity_label(index["edss"])
    dup = index.duplicated(["subject", "session"])
    if dup.any():
        (out_dir / IMAGES_FILE).unlink()
        row = index[dup].iloc[0]
        raise ValueError(f"subject {row['subject']} session {row['session']} is given twice")
    atomic_write_text(out_dir / INDEX_FILE, index.to_csv(sep="\t", index=False))


@dataclass
class SessionCache:
    """A memory-mapped session cache; see :func:`open_cache`."""

    images: np.memmap          # (N, 3, D, H, W) float16, read-only
    index: pd.DataFrame        # row, subject, session, age, edss, label
    path: Path

    @property
    def shape(self) -> tuple:
        """(N, contrasts, D, H, W)."""
        return tuple(self.images.shape)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def rows_for(self, pairs) -> np.ndarray:
        """Row indices of (subject, session) pairs, in the order given.

        ``pairs``: an iterable of (subject, session) or a DataFrame with those columns
        (e.g. a slice of the split table). ``ValueError`` naming a session not cached.
        """
        if isinstance(pairs, pd.DataFrame):
            pairs = zip(pairs["subject"], pairs["session"])
        lookup = {(s, t): i for s, t, i in zip(self.index["subject"], self.index["session"],
                                                self.index["row"])}
        out, missing = [], []
        for subject, session in pairs:
            key = (str(subject), str(session))
            if key in lookup:
                out.append(lookup[key])
            else:
                missing.append(key)
        if missing:
            raise ValueError(f"{len(missing)} session(s) not in the cache {self.path}, e.g. "
                             f"subject {missing[0][0]} session {missing[0][1]}")
        return np.asarray(out, dtype=np.int64)

    def read(self, indices, pin_memory: bool = False) -> torch.Tensor:
        """float16 CPU tensor (B, 3, D, H, W) of the given rows, in the given order.

        Each distinct row is copied once from the memory map, straight into its place in
        the output, in increasing row order (sequential in the file); a repeated row is
        copied from its first copy. ``pin_memory`` puts the output in page-locked memory
        (for a fast copy to a GPU).
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"row index out of range [0, {len(self)})")
        out = torch.empty((idx.size,) + self.shape[1:], dtype=torch.float16,
                          pin_memory=pin_memory)
        dest = out.numpy()
        first = {}
        for j in np.argsort(idx, kind="stable"):
            row = int(idx[j])
            if row in first:
                dest[j] = dest[first[row]]
            else:
                first[row] = j
                dest[j] = self.images[row]
        return out

    def batch(self, indices, device="cpu"):
        """(x float32 (B, 3, D, H, W), age, label, edss), all float32 tensors on ``device``."""
        device = torch.device(device)
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        # float16 travels to the device and is converted there (half the transfer)
        x = self.read(idx, pin_memory=device.type == "cuda").to(device).to(torch.float32)
        meta = self.index.iloc[idx]
        age, label, edss = (torch.as_tensor(meta[col].to_numpy(np.float32), device=device)
                            for col in ("age", "label", "edss"))
        return x, age, label, edss


def open_cache(out_dir) -> SessionCache:
    """Memory-map a cache written by :func:`build_cache` (read-only)."""
    out_dir = Path(out_dir)
    images = np.load(out_dir / IMAGES_FILE, mmap_mode="r")
    index = pd.read_csv(out_dir / INDEX_FILE, sep="\t",
                        dtype={"subject": str, "session": str}, keep_default_na=False)
    missing = [c for c in INDEX_COLUMNS if c not in index.columns]
    if missing:
        raise ValueError(f"{out_dir / INDEX_FILE} lacks columns {missing}")
    if images.ndim != 5 or images.dtype != np.float16:
        raise ValueError(f"{out_dir / IMAGES_FILE}: expected a float16 array (N, C, D, H, W), "
                         f"got {images.dtype} {images.shape}")
    if len(index) != images.shape[0] or not np.array_equal(index["row"], np.arange(len(index))):
        raise ValueError(f"{out_dir}: index.tsv ({len(index)} rows) does not match "
                         f"images.npy ({images.shape[0]} sessions)")
    index = index.astype({"age": float, "edss": float, "label": int, "row": int})
    return SessionCache(images=images, index=index, path=out_dir)


# --------------------------------------------------------------------------------------
# Augmentation
# --------------------------------------------------------------------------------------

def _rotation_matrices(angles: torch.Tensor) -> torch.Tensor:
    """(B, 3) angles in radians about axes (D, H, W) -> (B, 3, 3) rotations Rd . Rh . Rw."""
    c, s = torch.cos(angles), torch.sin(angles)
    one, zero = torch.ones_like(c[:, 0]), torch.zeros_like(c[:, 0])

    def rot(i, j, k):        # rotation about axis k: acts in the (i, j) plane
        m = torch.stack([one, zero, zero, zero, one, zero, zero, zero, one], 1).view(-1, 3, 3)
        m = m.clone()
        m[:, i, i], m[:, i, j], m[:, j, i], m[:, j, j] = c[:, k], -s[:, k], s[:, k], c[:, k]
        return m

    return rot(1, 2, 0) @ rot(0, 2, 1) @ rot(0, 1, 2)


def draw_augmentation(batch: int, spatial_shape: Sequence[int], generator: torch.Generator, *,
                      noise_sd: float = 0.2, max_rotation_deg: float = 30.0,
                      max_scale: float = 0.1, p_flip: float = 0.5,
                      p_rot90: float = 0.5) -> dict:
    """Draw the random parameters of :func:`augment` for ``batch`` samples.

    Returns a dict (tensors on the generator's device): ``flip`` (B, 3) bool, ``rot90_k``
    (B,) int in 0..3, ``angles_deg`` (B, 3), ``scale`` (B,), ``matrix`` (B, 3, 3), the map
    from an output voxel's offset from the centre to the input offset it samples (voxel
    units, axes D, H, W), and ``noise`` (B, 1, D, H, W) or None when ``noise_sd`` is 0.
    The number of random values drawn depends only on ``batch`` and the shape.
    """
    shape = tuple(int(n) for n in spatial_shape)
    if len(shape) != 3:
        raise ValueError(f"spatial_shape must have 3 dimensions, got {shape}")
    for name, p in (("p_flip", p_flip), ("p_rot90", p_rot90)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {p}")
    if max_rotation_deg < 0 or not 0 <= max_scale < 1 or noise_sd < 0:
        raise ValueError("max_rotation_deg, noise_sd must be >= 0 and max_scale in [0, 1)")
    dev = generator.device
    u = torch.rand((batch, 10), generator=generator, device=dev, dtype=torch.float64)
    flip = u[:, 0:3] < p_flip
    rot90_k = torch.where(u[:, 3] < p_rot90, 1 + (u[:, 4] * 3).long().clamp(max=2),
                          torch.zeros_like(u[:, 3], dtype=torch.long))
    if shape[0] != shape[1]:
        rot90_k = torch.zeros_like(rot90_k)
    angles_deg = (2 * u[:, 5:8] - 1) * max_rotation_deg
    scale = 1 + (2 * u[:, 8] - 1) * max_scale
    noise = None
    if noise_sd > 0:
        noise = torch.randn((batch, 1) + shape, generator=generator, device=dev) * noise_sd

    # sampling map M = Flip . Rot90(D, H) . (scale * R); exact entries for flips and k*90.
    flips = torch.diag_embed(1.0 - 2.0 * flip.double())
    cos_k = torch.tensor([1.0, 0.0, -1.0, 0.0], dtype=torch.float64, device=dev)[rot90_k]
    sin_k = torch.tensor([0.0, 1.0, 0.0, -1.0], dtype=torch.float64, device=dev)[rot90_k]
    r90 = torch.eye(3, dtype=torch.float64, device=dev).repeat(batch, 1, 1)
    r90[:, 0, 0], r90[:, 0, 1], r90[:, 1, 0], r90[:, 1, 1] = cos_k, -sin_k, sin_k, cos_k
    affine = scale.view(-1, 1, 1) * _rotation_matrices(torch.deg2rad(angles_deg))
    matrix = flips @ r90 @ affine
    return dict(flip=flip, rot90_k=rot90_k, angles_deg=angles_deg, scale=scale,
                matrix=matrix, noise=noise)


def apply_augmentation(x: torch.Tensor, params: dict) -> torch.Tensor:
    """Apply parameters from :func:`draw_augmentation` to a batch (B, C, D, H, W)."""
    if x.ndim != 5:
        raise ValueError(f"x must be (B, C, D, H, W), got shape {tuple(x.shape)}")
    batch, shape = x.shape[0], tuple(x.shape[2:])
    matrix = params["matrix"].to(device=x.device, dtype=torch.float64)
    if matrix.shape[0] != batch:
        raise ValueError(f"parameters for {matrix.shape[0]} samples, batch of {batch}")
    out = x
    eye = torch.eye(3, dtype=torch.float64, device=x.device)
    if not torch.equal(matrix, eye.expand_as(matrix)):
        # voxel offsets -> grid_sample's normalised coordinates (align_corners=False:
        # n = offset * 2 / size), and axes (D, H, W) -> grid order (x=W, y=H, z=D).
        size = torch.tensor(shape, dtype=torch.float64, device=x.device)
        norm = (2.0 / size).view(1, 3, 1) * matrix * (size / 2.0).view(1, 1, 3)
        norm = norm.flip(1).flip(2)
        theta = torch.cat([norm, torch.zeros((batch, 3, 1), dtype=torch.float64,
                                             device=x.device)], dim=2)
        work = x if x.is_floating_point() else x.float()
        grid = F.affine_grid(theta.to(work.dtype), list(work.shape), align_corners=False)
        out = F.grid_sample(work, grid, mode="bilinear", padding_mode="zeros",
                            align_corners=False)
    noise = params.get("noise")
    if noise is not None:
        out = out + noise.to(device=out.device, dtype=out.dtype)
    return out


def augment(x: torch.Tensor, generator: torch.Generator, noise_sd: float = 0.2,
            max_rotation_deg: float = 30.0, max_scale: float = 0.1, p_flip: float = 0.5,
            p_rot90: float = 0.5) -> torch.Tensor:
    """Randomly flip, turn by 90 degrees, rotate/scale and add noise to a batch.

    ``x``: (B, C, D, H, W) on any device; returns a new tensor of the same shape, dtype
    and device. One draw per sample, shared by its C channels (see the module docstring).
    Random numbers come from ``generator``; for speed give one on ``x``'s device (a CPU
    generator also works with a CUDA batch: the noise is then made on the CPU and moved).
    """
    params = draw_augmentation(x.shape[0], x.shape[2:], generator, noise_sd=noise_sd,
                               max_rotation_deg=max_rotation_deg, max_scale=max_scale,
                               p_flip=p_flip, p_rot90=p_rot90)
    return apply_augmentation(x, params).to(x.dtype)


# --------------------------------------------------------------------------------------
# Loss and sampler
# --------------------------------------------------------------------------------------

def sample_weights(edss):
    """Loss weight ``2 - |EDSS - 5| / 5``: 2 at EDSS 5, 1 at EDSS 0 and 10.

    Takes a number, array or tensor and returns the same kind.
    """
    if not isinstance(edss, (torch.Tensor, np.ndarray, int, float, np.number)):
        edss = np.asarray(edss, dtype=float)
    return 2 - abs(edss - 5) / 5


def weighted_bce(logit: torch.Tensor, label: torch.Tensor, edss: torch.Tensor) -> torch.Tensor:
    """Mean over samples of BCE-with-logits(logit, label) x :func:`sample_weights` (edss)."""
    label = torch.as_tensor(label, device=logit.device, dtype=logit.dtype)
    edss = torch.as_tensor(edss, device=logit.device, dtype=logit.dtype)
    per_sample = F.binary_cross_entropy_with_logits(logit, label, reduction="none")
    return (per_sample * sample_weights(edss)).mean()


def class_balance_weights(labels) -> np.ndarray:
    """Per-sample weight 1 / (number of samples of its class)."""
    labels = np.asarray(labels).reshape(-1)
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse.reshape(-1)]


def balanced_sampler(labels, generator: torch.Generator, num_samples: int | None = None):
    """``WeightedRandomSampler`` (with replacement) that draws both classes equally often."""
    weights = torch.as_tensor(class_balance_weights(labels), dtype=torch.double)
    n = len(weights) if num_samples is None else int(num_samples)
    return torch.utils.data.WeightedRandomSampler(weights, n, replacement=True,
                                                  generator=generator)


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------

def autocast(device: torch.device, precision: str = "fp32"):
    """The autocast context of ``precision`` (:data:`PRECISIONS`) on ``device``: bfloat16
    autocast for ``"bf16"``, nothing (float32) for ``"fp32"``."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def model_precision(model_dir) -> str:
    """The precision a saved model was trained in (``model.json``; float32 when absent),
    which its predictions use too."""
    return (read_model_meta(model_dir).get("training") or {}).get("precision", "fp32")


def resolve_device(device="auto") -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; anything else as ``torch.device``."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _derived_seed(seed: int, stream: int) -> int:
    """An independent 63-bit seed for a named random stream of a run."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(seed) >> 32 & 0xFFFFFFFF,
                                    stream]).generate_state(2, np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


@contextlib.contextmanager
def _threads(n: int | None):
    if n is None:
        yield
        return
    if int(n) != n or n < 1:
        raise ValueError(f"num_threads must be a positive integer, got {n!r}")
    prev = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(prev)


@contextlib.contextmanager
def _deterministic(device: torch.device):
    prev_mode = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    prev_env = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    try:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
        yield
    finally:
        torch.use_deterministic_algorithms(prev_mode, warn_only=prev_warn)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = prev_cudnn
        if prev_env is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def _state_dict_cpu(model: torch.nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in
            model.state_dict().items()}


def _finite_or_none(v):
    return None if v is None or not math.isfinite(v) else float(v)


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
    :func:`train_one`. Returns the chosen run's summary with ``restart``, ``restarts``
    (the table's rows) added.
    """
    restarts = int(restarts)
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    out_dir = Path(out_dir)
    if restarts == 1:
        summary = train_one(cache, train_idx, val_idx, out_dir, seed=seed,
                            selection=selection, log=log, **settings)
        runs = [(0, summary)]
    else:
        runs = []
        for r in range(restarts):
            r_seed = int(seed) if r == 0 else _derived_seed(seed, 100 + r) % 2**31
            log(f"restart {r + 1}/{restarts} (seed {r_seed})")
            runs.append((r, train_one(cache, train_idx, val_idx, out_dir / f"restart-{r}",
                                      seed=r_seed, selection=selection, log=log,
                                      **settings)))
    key = "val_loss" if selection == "last" else selection
    chosen, best = 0, None
    for r, summary in runs:
        kept = next(e for e in summary["epochs"] if e["epoch"] == summary["best_epoch"])
        candidate = _selection_key(key, {k: float("nan") if v is None else v
                                         for k, v in kept.items()})
        if _better(candidate, best):
            chosen, best = r, candidate
    table = [dict(restart=r, seed=s["seed"], best_epoch=s["best_epoch"],
                  val_loss=s["val_loss"], val_auc=s["val_auc"], chosen=r == chosen)
             for r, s in runs]
    if restarts > 1:
        source = out_dir / f"restart-{chosen}"
        for name in (MODEL_WEIGHTS, MODEL_JSON, "epochs.tsv", VAL_PREDICTIONS):
            os.replace(source / name, out_dir / name)
        meta = json.loads((out_dir / MODEL_JSON).read_text())
        meta["training"]["restarts"] = restarts
        meta["restart"] = chosen
        atomic_write_json(out_dir / MODEL_JSON, meta)
        for r, _ in runs:
            shutil.rmtree(out_dir / f"restart-{r}", ignore_errors=True)
        log(f"kept restart {chosen + 1} of {restarts} (by {key})")
    atomic_write_text(out_dir / RESTARTS_FILE,
                      pd.DataFrame(table).to_csv(sep="\t", index=False, na_rep="NaN"))
    summary = dict(runs[chosen][1])
    summary.update(restart=chosen, restarts=table)
    return summary


def train_one(cache: SessionCache, train_idx, val_idx, out_dir, *, epochs: int,
              batch_size: int = 70, lr: float = 5e-5, weight_decay: float = 1e-2,
              seed: int = 0, device="auto", augment_cfg: Mapping | None = None,
              growth: int = 4, progress: bool = True, log=print,
              eval_batch_size: int = 16, num_threads: int | None = None,
              selection: str = "val_auc", selection_window: int = 5,
              lr_schedule: str = "constant", patience: int = 0,
              precision: str = "fp32") -> dict:
    """Train one model on cache rows ``train_idx``, select the epoch on ``val_idx``.

    ``selection`` (:data:`SELECTIONS`) says which epoch's weights are kept; ties keep the
    earlier epoch, and an undefined AUC (one class in the validation set) falls back to
    the lowest validation loss. ``lr_schedule`` (:data:`LR_SCHEDULES`): constant or
    cosine annealing to 0 over ``epochs``. ``patience`` > 0 stops training once that many
    epochs have passed without a better epoch (early stopping; not with ``last``).
    ``precision`` (:data:`PRECISIONS`): ``"bf16"`` runs forward passes and loss under
    bfloat16 autocast (validation too); the default float32 keeps CPU runs bit-reproducible.

    ``augment_cfg``: keyword arguments of :func:`augment` overriding
    :data:`AUGMENT_DEFAULTS`; ``False`` turns augmentation off. ``num_threads``: torch's
    intra-op thread count for the run (restored afterwards); give the job's thread count,
    since oversubscribed OpenMP threads slow the small 3D ops down many-fold on a busy
    machine. ``eval_batch_size`` is the batch size of validation (use the same in
    :func:`predict` to reproduce the validation predictions bit for bit). Writes ``epochs.tsv``,
    ``model.safetensors``, ``model.json`` and ``val_predictions.tsv`` in ``out_dir`` (see
    the module docstring) and returns a JSON-serialisable summary: ``best_epoch``,
    ``val_auc``, ``val_loss``, ``epochs`` (the rows of epochs.tsv), ``n_train``,
    ``n_val``, ``n_parameters``, ``device``, ``seed``, ``seconds``.
    """
    from safetensors.torch import save_file

    from .progress import bar as progress_bar

    train_idx = np.asarray(train_idx, dtype=np.int64).reshape(-1)
    val_idx = np.asarray(val_idx, dtype=np.int64).reshape(-1)
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
    if augment_cfg is False:
        aug = None
    else:
        aug = dict(AUGMENT_DEFAULTS)
        unknown = set(augment_cfg or {}) - set(aug)
        if unknown:
            raise ValueError(f"unknown augmentation settings {sorted(unknown)}; "
                             f"known: {sorted(aug)}")
        aug.update(augment_cfg or {})

    device = resolve_device(device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = cache.index["label"].to_numpy()
    train_labels, val_labels = labels[train_idx], labels[val_idx]
    if len(np.unique(train_labels)) < 2:
        log(f"warning: the training set holds one class only ({int(train_labels[0])})")
    if len(np.unique(val_labels)) < 2:
        log("warning: the validation set holds one class only: validation AUC is undefined "
            "(NaN); the epoch with the lowest validation loss is kept instead")

    started = time.perf_counter()
    rows, best, best_epoch, summary = [], None, None, None
    with _deterministic(device), _threads(num_threads):
        torch.manual_seed(seed)
        model = build_model(cache.shape[2:], growth, seed=seed).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=int(epochs))
                     if lr_schedule == "cosine" else None)
        sampler_gen = torch.Generator().manual_seed(_derived_seed(seed, 1))
        aug_gen = torch.Generator(device=device).manual_seed(_derived_seed(seed, 2))
        sampler = balanced_sampler(train_labels, sampler_gen)
        n_params = count_parameters(model)
        log(f"training on {device}: {len(train_idx)} training sessions "
            f"({int(train_labels.sum())} severe), {len(val_idx)} validation sessions "
            f"({int(val_labels.sum())} severe), {n_params} parameters, {epochs} epochs")

        bar = progress_bar(int(epochs), "training", unit="epoch", disable=not progress)
        for epoch in range(1, int(epochs) + 1):
            t0 = time.perf_counter()
            epoch_lr = float(opt.param_groups[0]["lr"])
            model.train()
            order = train_idx[np.fromiter(iter(sampler), dtype=np.int64, count=len(sampler))]
            chunks = _batches(order, batch_size)
            total, count = 0.0, 0
            for chunk, (x, age, label, edss) in zip(chunks, _batch_stream(
                    cache, chunks, device, prefetch=device.type == "cuda")):
                if aug is not None:
                    x = augment(x, aug_gen, **aug)
                with autocast(device, precision):
                    logit = model(x, age)
                loss = weighted_bce(logit.float(), label, edss)
                if not torch.isfinite(loss):
                    bar.close()
                    raise FloatingPointError(f"epoch {epoch}: training loss is {loss.item()}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(chunk)
                count += len(chunk)
            train_loss = total / count
            if scheduler is not None:
                scheduler.step()

            val_pred = predict(model, cache, val_idx, device=device, batch_size=eval_batch_size,
                               precision=precision)
            with torch.no_grad():
                val_loss = float(weighted_bce(
                    *(torch.tensor(val_pred[c].to_numpy(np.float64))
                      for c in ("logit", "label", "edss"))))
            val_auc = _auc(val_pred["label"], val_pred["prob"])
            seconds = time.perf_counter() - t0
            smoothed = _trailing_mean([r["val_auc"] for r in rows] + [val_auc],
                                      selection_window)
            row = dict(epoch=epoch, lr=epoch_lr, train_loss=train_loss, val_loss=val_loss,
                       val_auc=val_auc, val_auc_smoothed=smoothed, seconds=round(seconds, 3))
            rows.append(row)
            atomic_write_text(out_dir / "epochs.tsv",
                              pd.DataFrame(rows, columns=EPOCH_COLUMNS)
                              .to_csv(sep="\t", index=False, na_rep="NaN"))
            if selection == "last":
                improved = True
            else:
                improved = _better(_selection_key(selection, row),
                                   None if best is None else _selection_key(selection, best))
            if improved:
                best, best_epoch = row, epoch
                with atomic_path(out_dir / MODEL_WEIGHTS, suffix=".safetensors") as tmp:
                    save_file(_state_dict_cpu(model), str(tmp))
                meta = dict(config=model.config, epoch=epoch, val_auc=_finite_or_none(val_auc),
                            val_loss=_finite_or_none(val_loss), seed=int(seed),
                            input_shape=list(cache.shape[2:]),
                            contrasts=list(model.contrasts), n_parameters=n_params,
                            n_train=len(train_idx), n_val=len(val_idx),
                            training=dict(epochs=int(epochs), batch_size=int(batch_size),
                                          lr=float(lr), weight_decay=float(weight_decay),
                                          augment=aug, device=str(device),
                                          selection=selection,
                                          selection_window=int(selection_window),
                                          lr_schedule=lr_schedule, patience=int(patience),
                                          precision=precision),
                            torch_version=torch.__version__)
                atomic_write_json(out_dir / MODEL_JSON, meta)
                atomic_write_text(out_dir / VAL_PREDICTIONS,
                                  val_pred.to_csv(sep="\t", index=False))
            log(f"epoch {epoch}/{epochs}: train loss {train_loss:.4f}, val loss "
                f"{val_loss:.4f}, val AUC {val_auc:.4f}, {seconds:.1f} s"
                + (" (best so far)" if improved else ""))
            bar.set_postfix(loss=f"{train_loss:.4f}", val_auc=f"{val_auc:.3f}", refresh=False)
            bar.update()
            if patience and selection != "last" and epoch - best_epoch >= int(patience):
                log(f"early stop after epoch {epoch}: no better epoch for {patience} epochs")
                break
        bar.close()

    summary = dict(best_epoch=best_epoch, val_auc=_finite_or_none(best["val_auc"]),
                   val_loss=_finite_or_none(best["val_loss"]), epochs_run=len(rows),
                   epochs=[{k: (_finite_or_none(v) if k in ("val_auc", "val_loss",
                                                            "train_loss",
                                                            "val_auc_smoothed") else v)
                            for k, v in r.items()} for r in rows],
                   n_train=len(train_idx), n_val=len(val_idx), n_parameters=n_params,
                   device=str(device), seed=int(seed),
                   seconds=round(time.perf_counter() - started, 3))
    return summary


def load_model(model_dir, device="cpu"):
    """The model saved by :func:`train_fold` in ``model_dir``, in eval mode on ``device``.

    Weights come from ``model.safetensors`` (no pickle), the architecture from
    ``model.json``'s ``config``.
    """
    from safetensors.torch import load_file

    model_dir = Path(model_dir)
    meta = json.loads((model_dir / MODEL_JSON).read_text())
    model = build_model(**meta["config"])
    state = load_file(str(model_dir / MODEL_WEIGHTS), device="cpu")
    model.load_state_dict(state, strict=True)
    return model.to(resolve_device(device)).eval()


def predict(model, cache: SessionCache, indices, device="cpu",
            batch_size: int = 16, precision: str = "fp32") -> pd.DataFrame:
    """Logit, probability and attention weights of cache rows ``indices`` (order kept),
    forward passes in ``precision`` (:data:`PRECISIONS`).

    Eval mode (BN running statistics), no augmentation, no gradients; the model's
    train/eval mode is restored afterwards. Columns: subject, session, edss, label,
    logit, prob, a_<contrast> for each contrast.
    """
    device = resolve_device(device)
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    was_training = model.training
    model.eval()
    logits, probs, attention = [], [], []
    try:
        with torch.no_grad(), autocast(device, precision):
            for start in range(0, len(idx), batch_size):
                x, age, _, _ = cache.batch(idx[start:start + batch_size], device)
                out = model(x, age, return_details=True)
                logits.append(out["logit"].double().cpu().numpy())
                probs.append(out["p"].double().cpu().numpy())
                attention.append(out["a"].double().cpu().numpy())
    finally:
        model.train(was_training)
    meta = cache.index.iloc[idx]
    df = pd.DataFrame({"subject": meta["subject"].to_numpy(),
                       "session": meta["session"].to_numpy(),
                       "edss": meta["edss"].to_numpy(float),
                       "label": meta["label"].to_numpy(int)})
    n_c = len(model.contrasts)
    df["logit"] = np.concatenate(logits) if logits else np.empty(0)
    df["prob"] = np.concatenate(probs) if probs else np.empty(0)
    att = np.concatenate(attention) if attention else np.empty((0, n_c))
    for j, contrast in enumerate(model.contrasts):
        df[f"a_{contrast}"] = att[:, j]
    return df


# ------------------------------------------------------------------ the rules' jobs
# One function per rule of rules/training.smk (gamer_mril.jobs.step around each).


def run_build_cache(table_path, maps: Mapping, images_out, index_out, *,
                    log_file=None, threads: int = 1) -> None:
    """Rule build_cache: every session's network inputs decoded once into one
    memory-mapped array. ``maps``: {contrast: [every session's preprocessed map]}."""
    from .inputs import load_participants
    from .jobs import step
    from .layout import roles, session_of

    inputs = {"table": table_path, **roles({c: list(maps[c]) for c in CONTRASTS})}
    with step("build_cache", inputs=inputs, outputs=[images_out, index_out],
              log_file=log_file, threads=threads) as s:
        table = load_participants(table_path)
        paths = {c: {session_of(p): p for p in maps[c]} for c in CONTRASTS}
        rows = [dict(subject=r.subject, session=r.session, age=r.age, edss=r.edss,
                     paths={c: paths[c][(str(r.subject), str(r.session))]
                            for c in CONTRASTS})
                for r in table.itertuples()]
        build_cache(rows, Path(images_out).parent)
        for out in (images_out, index_out):
            s.sidecar(out, {"sessions": len(rows)})


def run_train_fold(images, index, split_path, fold: int, weights_out, outputs: Sequence, *,
                   training: Mapping, threads: int = 1, log_file=None) -> None:
    """Rule train_fold: the model of one cross-validation fold, written into the folder of
    ``weights_out``; ``outputs``: every file the rule declares there (weights, model.json,
    epochs.tsv, val_predictions.tsv); ``training``: the config's training block (epochs,
    batch_size, lr, weight_decay, seed, augment, growth, selection, selection_window,
    lr_schedule, patience, restarts)."""
    import logging

    from .jobs import step
    from .split import read_split

    t = dict(training)
    out_dir = Path(weights_out).parent
    with step("train_fold", inputs={"images": images, "index": index, "split": split_path},
              params={"training": t}, outputs=outputs, log_file=log_file,
              threads=threads) as s:
        log = logging.getLogger("gamer_mril").info
        cache = open_cache(Path(images).parent)
        split = read_split(split_path)
        cv = split[split["set"] == "cv"]
        train, val = cv[cv.fold != fold], cv[cv.fold == fold]
        summary = train_fold(
            cache, cache.rows_for(zip(train.subject, train.session)),
            cache.rows_for(zip(val.subject, val.session)), out_dir,
            epochs=t["epochs"], batch_size=t["batch_size"], lr=t["lr"],
            weight_decay=t["weight_decay"], seed=t["seed"] + fold,
            augment_cfg=t.get("augment"), growth=t.get("growth", 4), device="auto", log=log,
            num_threads=threads, selection=t.get("selection", "val_auc"),
            selection_window=t.get("selection_window", 5),
            lr_schedule=t.get("lr_schedule", "constant"), patience=t.get("patience", 0),
            precision=t.get("precision", "fp32"), restarts=t.get("restarts", 1))
        s.sidecar(weights_out, {k: summary[k] for k in
                                ("best_epoch", "epochs_run", "val_auc", "n_train", "n_val",
                                 "device", "restart", "restarts")})
        log("fold %d: restart %d of %d, best epoch %s, validation AUC %s, %s", fold,
            summary["restart"] + 1, len(summary["restarts"]), summary["best_epoch"],
            summary["val_auc"], summary["device"])


def run_predict_test(images, split_path, weights, out, *, threads: int = 1,
                     log_file=None) -> None:
    """Rule predict_test: the held-out test sessions scored by one fold's model
    (``weights``: its model.safetensors)."""
    from .jobs import step
    from .split import read_split

    model_dir = Path(weights).parent
    with step("predict_test", inputs={"images": images, "split": split_path,
                                      "model": str(weights)},
              outputs=[out], log_file=log_file, threads=threads):
        device = resolve_device("auto")
        cache = open_cache(Path(images).parent)
        split = read_split(split_path)
        test = split[split["set"] == "test"]
        model = load_model(model_dir, device=device)
        pred = predict(model, cache, cache.rows_for(zip(test.subject, test.session)),
                       device=device, precision=model_precision(model_dir))
        atomic_write_text(out, pred.to_csv(sep="\t", index=False))


def run_predict_sessions(images, model_dirs: Sequence, predictions_out, performance_out, *,
                         threads: int = 1, log_file=None) -> None:
    """Rule predict_sessions (frozen-model mode): every session scored by every given
    fold model; the best fold's model is the one that explains."""
    from .jobs import step

    with step("predict_sessions", inputs={"images": images},
              params={"models": [str(d) for d in model_dirs]},
              outputs=[predictions_out, performance_out], log_file=log_file,
              threads=threads):
        device = resolve_device("auto")
        cache = open_cache(Path(images).parent)
        rows = list(range(len(cache)))
        dirs = {fold_of(d): Path(d) for d in model_dirs}
        preds = {k: predict(load_model(d, device=device), cache, rows, device=device,
                            precision=model_precision(d))
                 for k, d in dirs.items()}
        best = best_fold({k: read_model_meta(d) for k, d in dirs.items()})
        table, performance = frozen_predictions(preds, best)
        atomic_write_text(predictions_out, table.to_csv(sep="\t", index=False))
        atomic_write_text(performance_out,
                          performance.to_csv(sep="\t", index=False, na_rep="NaN"))
