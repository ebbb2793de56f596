"""Prediction with a trained model (docs/method.md#5-training): :func:`load_model` reads
what training saved, :func:`predict` (no augmentation, no gradients) returns logits,
probabilities and the attention weights per session. Table II, the attention summary and
the ROC figure are made from those predictions by :mod:`gamer_mril.evaluation`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..modelfiles import MODEL_JSON, MODEL_WEIGHTS
from ..network import build_model
from .cache import SessionCache
from .runtime import autocast, resolve_device


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

