"""Network inputs answered once (docs/method.md#73-voxel-inverting): voxel inverting asks
the network about the same inverted image many times, and :class:`DistinctImages` sends
each distinct one through it once."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np


class DistinctImages:
    """A ``predict(images, ages) -> probabilities`` that sends each distinct (image, age)
    through ``predict`` once and answers repeats from memory.

    Voxel inverting asks the same question many times: the random masks of a draw are the
    same for every scenario whose top-N mask has the same voxel count (common random
    numbers), two scenarios may pick the same voxels, and every pass starts from the
    uninverted image. An inverted image is identified by its bytes and its age
    (BLAKE2b), so an answer is only reused for an identical network input; ``calls`` and
    ``images`` count what reached ``predict``, ``asked`` what was asked.
    """

    def __init__(self, predict: Callable):
        self.predict = predict
        self.answers: dict = {}
        self.asked = self.images = self.calls = 0

    @staticmethod
    def key(image, age) -> bytes:
        h = hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=20)
        h.update(np.float64(age).tobytes())
        return h.digest()

    def __call__(self, batch, ages) -> np.ndarray:
        batch, ages = np.asarray(batch), np.asarray(ages, dtype=np.float64).reshape(-1)
        keys = [self.key(x, a) for x, a in zip(batch, ages)]
        new = [i for i, k in enumerate(keys) if k not in self.answers and k not in keys[:i]]
        self.asked += len(keys)
        if new:
            p = np.asarray(self.predict(batch[new], ages[new]), dtype=np.float64).reshape(-1)
            if p.shape != (len(new),):
                raise ValueError(f"predict returned {p.size} values for {len(new)} images")
            self.answers.update(zip((keys[i] for i in new), p))
            self.calls += 1
            self.images += len(new)
        return np.array([self.answers[k] for k in keys])
