"""Measures the extra peak memory of one kernel call (run as a subprocess by test_memory.py).

usage: python _memory_worker.py KERNEL N D K [BLOCK]  -> prints JSON
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from goldener_jax import kernels as gk
from goldener_jax.benchmarks._machine import peak_rss_bytes, reset_peak_rss, rss_bytes

kernel, n, d, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
block = int(sys.argv[5]) if len(sys.argv) > 5 else None
x = jax.random.normal(jax.random.key(0), (n, d), jnp.float32)
x.block_until_ready()
fns = {
    "kcenter": lambda: gk.greedy_k_center(x, k),
    "kcenter_cosine": lambda: gk.greedy_k_center(x, k, metric="cosine"),
    "kcenter_anchors": lambda: gk.greedy_k_center(x, k, anchors=x[:1000] + 1.0, block_size=block),
    "farthest": lambda: gk.farthest_point(x, k, block_size=block),
    # wide rows: the mean row and |x - mean|^2 of every row, with no copy of x
    "kcenter_wide": lambda: gk.greedy_k_center(x, k),
    "kmeans_wide": lambda: gk.kmeans(x, k, jax.random.key(1), num_iters=3)[1],
    # every pair a candidate: the float64 recheck gathers its rows a piece at a time
    "pairs_wide": lambda: gk.pairs_within(x, 1e9)[0],
}
fn = fns[kernel]
np.asarray(fn())  # compile and warm up at the same shapes
before = rss_bytes()
ok = reset_peak_rss()
out = np.asarray(fn())
peak = peak_rss_bytes()
print(json.dumps({"reset": ok, "extra": peak - before, "data": x.size * 4, "n_out": len(out)}))
