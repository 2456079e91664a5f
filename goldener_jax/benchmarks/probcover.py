"""ProbCover: phase times (radius, ball counts, ball graph, greedy) against the graph-free way.

The baseline, measured in the same run on the same data, is ProbCover's graph-free way
(``max_edges=0``: after each pick, the newly covered points against all points through a matrix
product, as every run did before the ball graph): the two must return the same indices, and the
ratio of their times is the speed-up. The data are Gaussian blobs (``--centers`` of them) or one
Gaussian (``--centers 0``); the radius is ``probcover_radius`` with ``ceil(n / k)`` neighbours,
as ``select(method="probcover")`` chooses it.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from goldener_jax import kernels as gk
from goldener_jax.benchmarks._machine import machine_summary
from goldener_jax.kernels.probcover import clear_graph_cache


def add_arguments(parser) -> None:
    from goldener_jax.cli import fraction, int_at_least

    count, nonneg = int_at_least(1), int_at_least(0)

    parser.add_argument("--n", type=count, default=50_000, help="points")
    parser.add_argument("--d", type=count, default=256, help="dimensions")
    parser.add_argument("--fraction", type=fraction, default=0.01, help="k = fraction x n")
    parser.add_argument(
        "--centers", type=nonneg, default=50, help="Gaussian blobs (0: one Gaussian)"
    )
    parser.add_argument("--repeats", type=count, default=2, help="timed runs of each way (best)")
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the graph-free way (it is slow)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and keys (0)")


def blobs(n: int, d: int, centers: int, seed: int) -> np.ndarray:
    """``n`` points round ``centers`` Gaussian centres of different spreads (float32)."""
    rng = np.random.default_rng(seed)
    if centers <= 0:
        return rng.normal(size=(n, d)).astype(np.float32)
    c = rng.normal(size=(centers, d)).astype(np.float32) * 3
    label = rng.integers(0, centers, n)
    spread = rng.uniform(0.5, 1.5, centers).astype(np.float32)
    noise = rng.normal(size=(n, d)).astype(np.float32)
    return c[label] + noise * spread[label, None]


def _best(fn, repeats: int, cold: bool = True):
    times, out = [], None
    for _ in range(max(1, repeats)):
        if cold:  # every timed call builds its ball graph (none kept from the previous one)
            clear_graph_cache()
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return out, min(times), times


def run(args) -> dict:
    n, d = args.n, args.d
    k = max(1, int(round(args.fraction * n)))
    x = jax.device_put(blobs(n, d, args.centers, args.seed))
    neighbours = max(1, min(-(-n // k), n - 1))
    gk.probcover_radius(x, neighbours)  # compile
    radius, t_radius, _ = _best(lambda: gk.probcover_radius(x, neighbours), args.repeats)
    gk.probcover(x, k, radius)  # compile
    picks, t_graph, all_graph = _best(lambda: gk.probcover(x, k, radius), args.repeats)
    gk.probcover_init(x, k, radius)  # compile
    state, t_init, _ = _best(lambda: gk.probcover_init(x, k, radius), args.repeats)
    # As select runs it: init builds the graph, run reuses it (kept for the same x and radius).
    _, t_run, _ = _best(lambda: gk.probcover_run(state, x), args.repeats, cold=False)
    result = {
        "benchmark": "probcover",
        "n": n,
        "d": d,
        "k": k,
        "centers": args.centers,
        "radius": radius,
        "ball_entries": int(np.sum(np.asarray(state.ball_size), dtype=np.int64)),
        "radius_s": t_radius,
        "probcover_s": t_graph,
        "probcover_all_s": all_graph,
        "init_s": t_init,
        "run_s": t_run,
        "select_path_s": t_radius + t_init + t_run,
        "machine": machine_summary(),
    }
    if not args.no_baseline:
        gk.probcover_run(state, x, max_steps=1, max_edges=0)  # compiles the graph-free loop
        slow, t_free, all_free = _best(
            lambda: gk.probcover(x, k, radius, max_edges=0), max(1, args.repeats - 1)
        )
        result["graph_free_s"] = t_free
        result["graph_free_all_s"] = all_free
        result["speedup"] = t_free / t_graph
        result["same_picks"] = bool(np.array_equal(np.asarray(picks), np.asarray(slow)))
    _print(result)
    return result


def _print(r: dict) -> None:
    m = r["machine"]
    print(
        f"ProbCover  n={r['n']:,} d={r['d']} k={r['k']} blobs={r['centers']} "
        f"radius={r['radius']:.4g} ({r['ball_entries']:,} ball entries)"
    )
    print(f"  machine: {m['cpu']}, {m['cores']} cores, jax {m['jax']} on {m['backend']}")
    print(f"  radius (kNN quantile on <= 2048 rows): {r['radius_s']:.2f} s")
    print(f"  probcover (ball graph, half a pass):   {r['probcover_s']:.2f} s")
    print(f"  init (builds the graph) + run (reuses): {r['init_s']:.2f} + {r['run_s']:.2f} s")
    print(f"  select's path (radius + init + run):   {r['select_path_s']:.2f} s")
    if "graph_free_s" in r:
        print(
            f"  graph-free way (baseline, same run):   {r['graph_free_s']:.2f} s -> "
            f"{r['speedup']:.1f}x faster; same picks: {r['same_picks']}"
        )
