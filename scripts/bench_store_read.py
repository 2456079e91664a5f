"""Times ``FeatureStore.read_vectors`` on a 210 MB store (docs/benchmarks.md, "What the batch
digests cost a read").

    python scripts/bench_store_read.py /tmp/rb_new
    PYTHONPATH=/tmp/oldtree python scripts/bench_store_read.py /tmp/rb_old  # another checkout

Writes 50 batches of 4,096 x 256 float32 rows (random normal) to PATH (replaced), then reads all
vectors 4 times and prints the best and every time, with the package directory that ran.
"""

from __future__ import annotations

import os
import shutil
import sys
import time

import numpy as np

import goldener_jax
from goldener_jax.store import FeatureStore

BATCHES, ROWS, DIM = 50, 4096, 256


def main(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
    manifest = FeatureStore.build_manifest(
        extractor_fingerprint="fp",
        extractor_config={},
        source={"name": "bench"},
        num_samples=BATCHES * ROWS,
        rows_per_sample=1,
        dim=DIM,
        dtype="float32",
        batch_size=ROWS,
    )
    store = FeatureStore.create(path, manifest)
    rng = np.random.default_rng(0)
    for b in range(BATCHES):
        store.write_batch(b, rng.normal(size=(ROWS, DIM)).astype(np.float32), np.ones(ROWS, bool))
    store = FeatureStore.open(path)
    times = []
    for _ in range(4):
        start = time.perf_counter()
        got = store.read_vectors()
        times.append(time.perf_counter() - start)
    vectors = got[0] if isinstance(got, tuple) else got
    print(
        f"{os.path.dirname(goldener_jax.__file__)}: read_vectors of {vectors.nbytes / 1e6:.1f} MB:"
        f" best {min(times):.3f} s, all {[round(t, 3) for t in times]}"
    )


if __name__ == "__main__":
    main(sys.argv[1])
