"""The training loss and the class-balanced sampler (docs/method.md#5-training).

:func:`weighted_bce` is the mean over the batch of BCE-with-logits times
``2 - |EDSS - 5| / 5`` (:func:`sample_weights`, 1 at EDSS 0 or 10, 2 at EDSS 5).
:func:`balanced_sampler` is a seeded ``WeightedRandomSampler`` (with replacement) with
weight 1 / (size of the sample's class), so both classes are drawn equally often; an epoch
draws as many samples as the training set holds.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


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
