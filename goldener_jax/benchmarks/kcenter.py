"""Greedy k-center: steady-state and compile time, effective bandwidth, NumPy ratio, peak memory;
streaming (``method="naive"``) against pruned steps (``method="pruned"``) in the same run.

Effective bandwidth counts one read of ``x`` per selection step (``k x n x d x bytes / time``) and
is shown next to the read bandwidth of a jitted mat-vec over the same array, measured in the same
run: a streaming k-center cannot beat that roofline, so the ratio says how close it gets. The
NumPy reference runs the same algorithm (mean-shifted mat-vec per step, float32) in this process
for ``--numpy-steps`` steps and is compared per step.

``--data``: ``random`` (standard normal: nothing can be pruned, the pruned steps' worst case),
``clustered`` (a mixture of ``--clusters`` Gaussians, rows in random order) or ``digits``
(scikit-learn's 8x8 digits tiled to ``--n`` rows with Gaussian noise: real-feature-like, ``d``
is 64). ``--method both`` times the two methods on the same array and reports the time ratio,
whether the indices are identical, and the share of row blocks (= bytes of ``x``) the pruned
steps read per step. With ``--dtype bf16`` the float32 streaming picks on the same data are
compared too: identical prefix, overlap, and the coverage radius of both in float32.
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
    from goldener_jax.cli import int_at_least

    count, nonneg = int_at_least(1), int_at_least(0)

    parser.add_argument("--n", type=count, default=100_000, help="points")
    parser.add_argument("--d", type=count, default=256, help="dimensions")
    parser.add_argument("--k", type=count, default=200, help="centers to select")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="f32", help="storage dtype")
    parser.add_argument("--metric", choices=["euclidean", "cosine"], default="euclidean")
    parser.add_argument("--repeats", type=count, default=3, help="steady-state repetitions")
    parser.add_argument(
        "--numpy-steps", type=nonneg, default=20, help="steps of the NumPy reference (0: skip it)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and keys (0)")
    parser.add_argument("--data", choices=["random", "clustered", "digits"], default="random")
    parser.add_argument("--clusters", type=count, default=100, help="Gaussians of --data clustered")
    parser.add_argument(
        "--method", choices=["naive", "pruned", "both"], default="both", help="k-center steps"
    )
    parser.add_argument("--block-rows", type=count, default=None, help="pruned: rows per block")


def make_data(kind: str, n: int, d: int, seed: int, clusters: int = 100) -> np.ndarray:
    """float32 ``[n, d]`` benchmark data (``d`` is 64 for ``"digits"``); rows in random order."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        return rng.standard_normal((n, d), dtype=np.float32)
    if kind == "clustered":
        # Means 1 apart per coordinate (|mu_a - mu_b| ~ sqrt(2 d)), spread 0.25 per coordinate.
        means = rng.standard_normal((clusters, d), dtype=np.float32)
        x = means[rng.integers(0, clusters, n)]
        x += 0.25 * rng.standard_normal((n, d), dtype=np.float32)
        return x
    from sklearn.datasets import load_digits

    digits = load_digits().data.astype(np.float32)  # [1797, 64], values 0..16
    x = digits[rng.integers(0, len(digits), n)]
    x += rng.standard_normal(x.shape, dtype=np.float32)
    return x


def coverage_radius(x: jax.Array, picks) -> float:
    """Largest Euclidean distance from a row of ``x`` to its nearest pick (float32)."""
    state = gk.kcenter_init(x, 0, anchors=x[jnp.asarray(picks)])
    return float(np.sqrt(max(0.0, float(jnp.max(state.min_dist)))))


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
    if args.data == "random":
        x = jax.random.normal(jax.random.key(args.seed), (n, d), jnp.float32).astype(dtype)
    else:
        x = jnp.asarray(make_data(args.data, n, d, args.seed, args.clusters)).astype(dtype)
        d = x.shape[1]
    x.block_until_ready()
    data_bytes = x.size * x.dtype.itemsize
    rss_with_data = rss_bytes()
    methods = ["naive", "pruned"] if args.method == "both" else [args.method]
    timed = {}
    for method in methods:  # the first method's numbers fill the classic fields below

        def select(method=method):
            out = gk.greedy_k_center(
                x, k, metric=args.metric, method=method, block_rows=args.block_rows
            )
            return out.block_until_ready()

        t0 = time.perf_counter()
        first = np.asarray(select())
        first_call = time.perf_counter() - t0
        reset_peak_rss()
        steady = timeit(select, args.repeats)
        timed[method] = (first, first_call, steady, peak_rss_bytes())
    first, first_call, steady, peak = timed[methods[0]]
    again = np.asarray(
        gk.greedy_k_center(x, k, metric=args.metric, method=methods[0], block_rows=args.block_rows)
    )
    t_steady = float(np.median(steady))
    eff_bw = k * data_bytes / t_steady
    machine_bw = read_bandwidth(x)

    result = {
        "benchmark": "kcenter",
        "data": args.data,
        "method": methods[0],
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
    if "pruned" in timed:
        picks, first_p, steady_p, peak_p = timed["pruned"]
        _, touched = gk.greedy_k_center(
            x,
            k,
            metric=args.metric,
            method="pruned",
            block_rows=args.block_rows,
            return_touched=True,
        )
        touched = np.asarray(touched)
        result.update(
            pruned_first_call_s=first_p,
            pruned_best_s=min(steady_p),
            pruned_all_s=steady_p,
            pruned_peak_rss_bytes=peak_p,
            touched_mean=float(touched.mean()) if k else 0.0,
            touched_last_half=float(touched[k // 2 :].mean()) if k else 0.0,
        )
        if "naive" in timed:
            result["naive_best_s"] = min(timed["naive"][2])
            result["pruned_over_naive"] = result["pruned_best_s"] / result["naive_best_s"]
            result["pruned_identical"] = bool(np.array_equal(timed["naive"][0], picks))
    if args.dtype != "f32" and args.metric == "euclidean":
        x32 = x.astype(jnp.float32)
        ref = np.asarray(gk.greedy_k_center(x32, k, method=methods[0]))
        same = np.flatnonzero(ref != first)
        result.update(
            f32_identical_prefix=int(same[0]) if len(same) else k,
            f32_overlap=len(set(ref.tolist()) & set(first.tolist())) / max(1, k),
            f32_coverage_radius=coverage_radius(x32, ref),
            coverage_radius=coverage_radius(x32, first),
        )

    if args.numpy_steps > 0 and args.metric == "euclidean" and args.data == "random":
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
        f"metric={r['metric']} data={r['data']}  ({r['data_bytes'] / 1e9:.2f} GB of vectors)"
    )
    print(
        f"  machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, "
        f"jax {m['jax']} on {m['backend']}"
    )
    print(f"  {r['method']}: first call (compile + run): {r['first_call_s']:.2f} s")
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
    if "pruned_best_s" in r:
        print(
            f"  pruned: first call {r['pruned_first_call_s']:.2f} s, "
            f"best {r['pruned_best_s']:.3f} s; "
            f"blocks (bytes of x) read per step: {100 * r['touched_mean']:.1f}% "
            f"(second half of the steps: {100 * r['touched_last_half']:.1f}%)"
        )
    if "pruned_over_naive" in r:
        print(
            f"  pruned / naive (best of each, same run): {r['pruned_over_naive']:.3f}x "
            f"(naive best {r['naive_best_s']:.3f} s); identical indices: {r['pruned_identical']}"
        )
    if "f32_overlap" in r:
        print(
            f"  vs float32 picks: identical first {r['f32_identical_prefix']} picks, "
            f"{100 * r['f32_overlap']:.1f}% overlap; coverage radius {r['coverage_radius']:.4f} "
            f"vs float32's {r['f32_coverage_radius']:.4f} (both in float32)"
        )
    if "numpy_per_step_s" in r:
        print(
            f"  NumPy reference: {r['numpy_per_step_s'] * 1e3:.2f} ms/step -> "
            f"{r['speedup_vs_numpy']:.1f}x faster; same picks: {r['numpy_picks_agree']}"
        )
