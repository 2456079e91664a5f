"""The kernels at accelerator scale, on whatever device JAX has: k-center (naive and pruned),
kNN and k-means, each with its share of the device's measured read bandwidth.

``goldener-jax bench accel`` (defaults: N = 10,000,000, d = 768, bfloat16, a mixture of 1,000
Gaussians) is the one prepared script of a GPU session (``scripts/gpu_check.sh`` runs it); the
suite runs it on the CPU at a toy size so that it cannot rot. The data are drawn on the device
(no host copy of a 15 GB array), and the roofline is measured on the same array
(``_machine.read_bandwidth``: chained jitted mat-vecs).

Shares, per kernel (bytes of ``x`` = ``n d`` times the storage item size):

* k-center: one read of ``x`` per step, ``k bytes / time``; pruned: the bytes it really read
  (blocks touched per step) over its time, and its time against naive's (same picks checked);
* kNN: one read of ``x`` per block of queries, ``ceil(q / block) bytes / time``, and the matrix
  product rate ``2 q n d / time``;
* k-means: one Lloyd iteration reads ``x`` once (``bytes / time``) and multiplies ``2 n k d``.
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from goldener_jax import kernels as gk
from goldener_jax.benchmarks._machine import machine_summary, read_bandwidth

DTYPES = {"f32": jnp.float32, "bf16": jnp.bfloat16}
SECTIONS = ("kcenter", "knn", "kmeans")


def add_arguments(parser) -> None:
    from goldener_jax.cli import int_at_least

    count = int_at_least(1)

    parser.add_argument("--n", type=count, default=10_000_000, help="rows")
    parser.add_argument("--d", type=count, default=768, help="dimensions")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="storage dtype")
    parser.add_argument("--clusters", type=count, default=1000, help="Gaussians in the mixture")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and keys (0)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--kcenter-k", type=count, default=1000, help="k-center picks")
    parser.add_argument(
        "--block-rows", type=count, default=16384, help="pruned k-center: rows per block"
    )
    parser.add_argument("--knn-queries", type=count, default=2048)
    parser.add_argument("--knn-k", type=count, default=10)
    parser.add_argument("--knn-block", type=count, default=256, help="queries per pass over x")
    parser.add_argument("--kmeans-k", type=count, default=1000, help="k-means clusters")
    parser.add_argument("--kmeans-iters", type=count, default=10, help="Lloyd iterations timed")


def mixture(key, n: int, d: int, clusters: int, dtype) -> jax.Array:
    """``[n, d]`` in ``dtype``, drawn on the device: Gaussian means (1 per coordinate), each row
    a mean plus 0.25-wide noise, rows in random order (``bench kcenter --data clustered``'s
    law)."""
    km, ka, kz = jax.random.split(key, 3)

    @jax.jit
    def draw(km, ka, kz):
        means = jax.random.normal(km, (clusters, d), jnp.float32)
        which = jax.random.randint(ka, (n,), 0, clusters)
        return (means[which] + 0.25 * jax.random.normal(kz, (n, d), jnp.float32)).astype(dtype)

    return draw(km, ka, kz).block_until_ready()


def _timed(fn):
    """``(result, seconds)`` of ``fn()``, which must block until its result is ready."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _kcenter(x, args, data_bytes: int, roof: float) -> dict:
    k = args.kcenter_k
    out: dict = {"k": k}
    picks = {}
    for method in ("naive", "pruned"):
        rows = args.block_rows if method == "pruned" else None

        def call(method=method, rows=rows):
            return jax.block_until_ready(
                gk.greedy_k_center(x, k, method=method, block_rows=rows, return_touched=True)
            )

        _, first = _timed(call)  # compile + run
        (sel, touched), steady = _timed(call)
        picks[method] = np.asarray(sel)
        read = float(np.mean(np.asarray(touched))) if k else 0.0
        out[method] = {
            "first_call_s": first,
            "steady_s": steady,
            "per_step_s": steady / max(1, k),
            "bytes_read_share": read,  # of x, per step
            "bandwidth_share": k * read * data_bytes / steady / roof,
        }
    out["pruned_over_naive"] = out["pruned"]["steady_s"] / out["naive"]["steady_s"]
    out["identical"] = bool(np.array_equal(picks["naive"], picks["pruned"]))
    return out


def _knn(x, args, data_bytes: int, roof: float) -> dict:
    n, d = x.shape
    q = min(args.knn_queries, n)
    queries = x[:q]

    def call():
        return jax.block_until_ready(
            gk.knn(x, args.knn_k, queries=queries, block_size=args.knn_block)
        )

    _, first = _timed(call)
    _, steady = _timed(call)
    passes = math.ceil(q / min(args.knn_block, q))
    return {
        "queries": q,
        "k": args.knn_k,
        "block": args.knn_block,
        "first_call_s": first,
        "steady_s": steady,
        "passes_over_x": passes,
        "bandwidth_share": passes * data_bytes / steady / roof,
        "tflop_s": 2 * q * n * d / steady / 1e12,
    }


def _kmeans(x, args, data_bytes: int, roof: float) -> dict:
    n, d = x.shape
    k = args.kmeans_k
    key = jax.random.key(args.seed)
    _, seed_first = _timed(lambda: jax.block_until_ready(gk.kmeans_init(x, k, key)))
    state, seed_s = _timed(lambda: jax.block_until_ready(gk.kmeans_init(x, k, key)))

    def run(iters):
        return jax.block_until_ready(gk.kmeans_run(state, x, num_iters=iters))

    _, lloyd_first = _timed(lambda: run(args.kmeans_iters))  # compile + run
    many, t_many = min(
        (_timed(lambda: run(args.kmeans_iters)) for _ in range(3)), key=lambda r: r[1]
    )
    iters = int(many.iteration)  # from the seeds; convergence can stop a run early
    per_iter = t_many / iters  # the call's dispatch included: negligible at accelerator sizes
    return {
        "k": k,
        "seed_first_call_s": seed_first,
        "seed_s": seed_s,  # k-means++: k passes over x
        "seed_bandwidth_share": k * data_bytes / seed_s / roof,
        "lloyd_first_call_s": lloyd_first,
        "iterations_timed": iters,
        "per_iter_s": per_iter,
        "bandwidth_share": data_bytes / per_iter / roof,
        "tflop_s": 2 * n * k * d / per_iter / 1e12,
    }


def run(args) -> dict:
    for name in ("n", "d", "clusters", "kcenter_k", "knn_queries", "knn_k", "kmeans_k"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1")
    if args.kmeans_iters < 1:
        raise SystemExit("--kmeans-iters must be >= 1")
    x = mixture(jax.random.key(args.seed), args.n, args.d, args.clusters, DTYPES[args.dtype])
    data_bytes = x.size * x.dtype.itemsize
    roof = read_bandwidth(x)
    result = {
        "benchmark": "accel",
        "n": args.n,
        "d": args.d,
        "dtype": args.dtype,
        "clusters": args.clusters,
        "data_bytes": data_bytes,
        "read_bandwidth_gb_s": roof / 1e9,
        "machine": machine_summary(),
    }
    m = result["machine"]
    print(
        f"accelerator kernels  n={args.n:,} d={args.d} {args.dtype}, {args.clusters} Gaussians "
        f"({data_bytes / 1e9:.2f} GB) on {m['backend']} {m['devices'][0]}: read bandwidth "
        f"{roof / 1e9:.1f} GB/s (chained jitted mat-vecs, same array)"
    )
    sections = {"kcenter": _kcenter, "knn": _knn, "kmeans": _kmeans}
    for name in SECTIONS:
        if name in args.only:
            result[name] = sections[name](x, args, data_bytes, roof)
            _print_section(name, result[name])
    return result


def _print_section(name: str, r: dict) -> None:
    if name == "kcenter":
        for method in ("naive", "pruned"):
            m = r[method]
            print(
                f"k-center {method} k={r['k']}: {m['steady_s']:.3f} s "
                f"({1e3 * m['per_step_s']:.3f} ms/step), read {100 * m['bytes_read_share']:.1f}% "
                f"of x per step, {100 * m['bandwidth_share']:.0f}% of read bandwidth"
            )
        print(f"  pruned / naive {r['pruned_over_naive']:.3f}x, identical picks: {r['identical']}")
    elif name == "knn":
        print(
            f"kNN {r['queries']} queries k={r['k']}: {r['steady_s']:.3f} s, "
            f"{r['passes_over_x']} passes over x = {100 * r['bandwidth_share']:.0f}% of read "
            f"bandwidth, {r['tflop_s']:.1f} TFLOP/s"
        )
    else:
        print(
            f"k-means k={r['k']}: seeding {r['seed_s']:.2f} s "
            f"({100 * r['seed_bandwidth_share']:.0f}% of read bandwidth), Lloyd "
            f"{1e3 * r['per_iter_s']:.2f} ms/iteration ({100 * r['bandwidth_share']:.0f}% of "
            f"read bandwidth, {r['tflop_s']:.1f} TFLOP/s)"
        )
