"""Runs ``describe`` on a tiny Linen CNN for the crash tests (as a subprocess, then SIGKILLed).

Usage: python _describe_worker.py STORE COUNTER [SLEEP_S]

Appends one line (the batch index) to COUNTER each time a batch is read from the source to be
computed: an upper bound of the batches computed, flushed before the computation starts.
"""

from __future__ import annotations

import sys
import time

import flax.linen as nn
import jax
import numpy as np

from goldener_jax.describe import describe
from goldener_jax.features import FeatureExtractor
from goldener_jax.sources import ArraySource

NUM_SAMPLES = 45  # 12 batches of 4, the last one partial
BATCH_SIZE = 4


class TinyCNN(nn.Module):
    """conv -> batch norm -> relu stages with pooling: a tiny Linen CNN."""

    @nn.compact
    def __call__(self, x):
        for i, width in enumerate((4, 8, 8)):
            x = nn.Conv(width, (3, 3), name=f"conv_{i}")(x)
            x = nn.relu(nn.BatchNorm(use_running_average=True, name=f"bn_{i}")(x))
            if i < 2:
                x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        return nn.Dense(3, name="head")(x.mean(axis=(1, 2)))


def build():
    """The data, labels and extractor every run uses (fixed seeds)."""
    rng = np.random.RandomState(0)
    x = rng.rand(NUM_SAMPLES, 8, 8, 3).astype(np.float32)
    labels = rng.randint(0, 3, NUM_SAMPLES)
    model = TinyCNN()
    # Weights drawn with NumPy from the shapes: model.init would compile for seconds.
    shapes = jax.eval_shape(model.init, jax.random.key(0), x[:1])
    variables = jax.tree_util.tree_map_with_path(
        lambda path, s: (
            np.ones(s.shape, s.dtype)
            if "var" in jax.tree_util.keystr(path)
            else (0.5 * rng.standard_normal(s.shape)).astype(s.dtype)
        ),
        shapes,
    )
    extractor = FeatureExtractor(model=model, variables=variables, layers=["conv_1", "conv_2"])
    return x, labels, extractor


class CountingSource(ArraySource):
    def __init__(self, x, labels, counter: str | None, sleep_s: float):
        super().__init__(x, labels=labels, name="crash-test")
        self._counter, self._sleep_s = counter, sleep_s

    def iter_batches(self, batch_size, batch_indices):
        for b, batch in super().iter_batches(batch_size, batch_indices):
            if self._counter:
                with open(self._counter, "a") as f:
                    f.write(f"{b}\n")
            time.sleep(self._sleep_s)
            yield b, batch


def run(store: str, counter: str | None = None, sleep_s: float = 0.0):
    x, labels, extractor = build()
    source = CountingSource(x, labels, counter, sleep_s)
    # check_source=False: COUNTER counts source reads as batches computed; the resume-time
    # source check (tests/test_integrity.py) would add reads of the done batches.
    return describe(
        source, extractor, store, batch_size=BATCH_SIZE, progress=False, check_source=False
    )


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 0.0)
