"""A tiny Flax model factory that pipeline specs name by import path ("_workflow_model:tiny_cnn",
with tests/ on the path), and the data the pipeline tests describe."""

from __future__ import annotations

import flax.linen as nn
import numpy as np


class TinyCNN(nn.Module):
    width: int = 4

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(self.width, (3, 3), name="conv1")(x))
        x = nn.relu(nn.Conv(self.width, (3, 3), name="conv2")(x))
        return nn.Dense(3, name="head")(x.mean(axis=(1, 2)))


def tiny_cnn(width: int = 4) -> TinyCNN:
    return TinyCNN(width=width)


not_a_factory = 3


def digits_npz(path, start: int, stop: int) -> str:
    """sklearn digits ``[start, stop)`` as ``image`` [n, 8, 8, 1] float32 and ``label``."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images[start:stop, :, :, None] / 16.0).astype(np.float32)
    np.savez(path, image=images, label=d.target[start:stop].astype(np.int64))
    return str(path)
