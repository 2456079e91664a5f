"""Greedy k-center: steady-state and compile time, effective bandwidth, NumPy ratio, peak memory.

Effective bandwidth counts one read of ``x`` per selection step (``k x n x d x bytes / time``) and
is shown next to the read bandwidth of a jitted mat-vec over the same array, measured in the same
run: a streaming k-center cannot beat that roofline, so the ratio says how close it gets. The
NumPy reference runs the same algorithm (mean-shifted mat-vec per step, float32) in this process
for ``--numpy-steps`` steps and is compared per step.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from goldener_jax import kernels as gk
from goldener_jax.benchmarks._machine import (
    machine_summary,
    peak_rss_bytes,
    read_bandwidth,
    reset_peak_rss,
    rss_bytes,
    timeit,
)

DTYPES = {"f32": jnp.float32, "bf16": jnp.bfloat16}


def add_arguments(parser) -> None:
    parser.add_argument("--n", type=int, default=100_000, help="points")
    parser.add_argument("--d", type=int, default=256, help="dimensions")
    parser.add_argument("--k", type=int, default=200, help="centers to select")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="f32", help="storage dtype")
    parser.add_argument("--metric", choices=["euclidean", "cosine"], default="euclidean")
    parser.add_argument("--repeats", type=int, default=3, help="steady-state repetitions")
    parser.add_argument(
        "--numpy-steps", type=int, default=20, help="steps of the NumPy reference (0: skip it)"
    )
    parser.add_argument("--seed", type=int, default=0)


def numpy_k_center_steps(x: np.ndarray, steps: int) -> tuple[list[int], float]:
    """The same streaming algorithm in NumPy (float32): returns picks and seconds per step."""
    shift = x.mean(axis=0, dtype=np.float64).astype(np.float32)
    sq = np.einsum("ij,ij->i", x - shift, x - shift)  # one-off, not timed per step
    min_dist = sq.copy()  # the seed score: its argmax is the first center
    picks: list[int] = []
    t0 = time.perf_counter()
    for step in range(steps):
        i = int(np.argmax(min_dist))
        picks.append(i)
        v = x[i] - shift
        d = sq - 2.0 * (x @ v - shift @ v) + v @ v
        min_dist = d if step == 0 else np.minimum(min_dist, d)
        min_dist[i] = -np.inf
    return picks, (time.perf_counter() - t0) / max(1, steps)


def run(args) -> dict:
    n, d, k = args.n, args.d, args.k
    dtype = DTYPES[args.dtype]
    x = jax.random.normal(jax.random.key(args.seed), (n, d), jnp.float32).astype(dtype)
    x.block_until_ready()
    data_bytes = x.size * x.dtype.itemsize
    rss_with_data = rss_bytes()

    def select():
        return gk.greedy_k_center(x, k, metric=args.metric).block_until_ready()

    t0 = time.perf_counter()
    first = np.asarray(select())
    first_call = time.perf_counter() - t0

    reset_peak_rss()
    steady = timeit(select, args.repeats)
    peak = peak_rss_bytes()
    again = np.asarray(select())
    t_steady = float(np.median(steady))
    eff_bw = k * data_bytes / t_steady
    machine_bw = read_bandwidth(x)

    result = {
        "benchmark": "kcenter",
        "n": n,
        "d": d,
        "k": k,
        "dtype": args.dtype,
        "metric": args.metric,
        "data_bytes": data_bytes,
        "first_call_s": first_call,
        "steady_s": t_steady,
        "steady_all_s": steady,
        "per_step_s": t_steady / max(1, k),
        "effective_gb_s": eff_bw / 1e9,
        "read_bandwidth_gb_s": machine_bw / 1e9,
        "bandwidth_share": eff_bw / machine_bw,
        "peak_rss_bytes": peak,
        "rss_with_data_bytes": rss_with_data,
        "peak_rss_over_data": peak / data_bytes,
        "deterministic": bool(np.array_equal(first, again)),
        "machine": machine_summary(),
    }

    if args.numpy_steps > 0 and args.metric == "euclidean":
        steps = min(args.numpy_steps, k)
        x_np = np.asarray(x.astype(jnp.float32))
        del x
        picks, np_step = numpy_k_center_steps(x_np, steps)
        result["numpy_per_step_s"] = np_step
        result["speedup_vs_numpy"] = np_step / result["per_step_s"]
        result["numpy_picks_agree"] = picks == first[:steps].tolist()

    _print(result)
    return result


def _print(r: dict) -> None:
    m = r["machine"]
    print(
        f"greedy k-center  n={r['n']:,} d={r['d']} k={r['k']} dtype={r['dtype']} "
        f"metric={r['metric']}  ({r['data_bytes'] / 1e9:.2f} GB of vectors)"
    )
    print(
        f"  machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, "
        f"jax {m['jax']} on {m['backend']}"
    )
    print(f"  first call (compile + run): {r['first_call_s']:.2f} s")
    print(f"  steady state: {r['steady_s']:.3f} s  ({r['per_step_s'] * 1e3:.2f} ms/step)")
    print(
        f"  effective bandwidth: {r['effective_gb_s']:.1f} GB/s = "
        f"{100 * r['bandwidth_share']:.0f}% of this machine's measured read bandwidth "
        f"({r['read_bandwidth_gb_s']:.1f} GB/s, jitted mat-vec, same array)"
    )
    print(
        f"  peak RSS during steady runs: {r['peak_rss_bytes'] / 1e9:.2f} GB = "
        f"{r['peak_rss_over_data']:.2f}x the data (whole process, runtime included)"
    )
    if "numpy_per_step_s" in r:
        print(
            f"  NumPy reference: {r['numpy_per_step_s'] * 1e3:.2f} ms/step -> "
            f"{r['speedup_vs_numpy']:.1f}x faster; same picks: {r['numpy_picks_agree']}"
        )
