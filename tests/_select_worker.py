"""Runs a resumable k-center ``select`` for the crash test (as a subprocess, then SIGKILLed).

Usage: python _select_worker.py CHECKPOINT_DIR OUT_NPY

Writes OUT_NPY (the selected sample indices) only when the selection finishes.
"""

from __future__ import annotations

import sys

import jax
import numpy as np

from goldener_jax.select import select

N, D, SIZE = 2400, 12, 500


def build():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype(np.float32)
    labels = rng.integers(0, 3, N)
    sample_idx = np.arange(N) // 2  # two vectors per sample: 1200 samples
    return x, labels[: N // 2], sample_idx


def run(checkpoint_dir=None):
    x, labels, sample_idx = build()
    return select(
        x,
        SIZE,
        method="kcenter",
        key=jax.random.key(7),
        labels=labels,
        sample_idx=sample_idx,
        chunk_size=900,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=8,
        coverage=False,
    )


if __name__ == "__main__":
    open(sys.argv[1] + ".started", "w").close()
    sel = run(sys.argv[1])
    np.save(sys.argv[2], sel.indices)
