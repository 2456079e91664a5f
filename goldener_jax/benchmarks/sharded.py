"""Sharded vs single-device kernels on fake CPU devices: the overhead of sharding.

The fake devices (``--xla_force_host_platform_device_count``) share this machine's cores and
memory, so the sharded run cannot be faster here: what it shows is the cost of the shard_map
program and of its collectives (per greedy step two scalar reductions and one ``d``-vector
``psum``; per Lloyd iteration a ``[k, d]`` ``psum``; for the all-pairs parts, row blocks round a
ring of devices) next to the single-device kernel, measured in the same process on the same
data, and whether both return the same indices (k-means: the same assignment; kNN: the same
neighbours). When the current process has fewer devices than ``--devices`` (JAX fixes
the count when it starts), the benchmark re-runs itself in a subprocess with the flag set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from goldener_jax import kernels as gk
from goldener_jax.benchmarks._machine import machine_summary, timeit

DTYPES = {"f32": jnp.float32, "bf16": jnp.bfloat16}


def _herding(x, k, metric, mesh):
    # RBF with a bandwidth of the order of the distances between standard normal rows.
    scale = float(np.sqrt(2.0 * x.shape[1]))
    return gk.kernel_herding(x, k, kernel="rbf", length_scale=scale, mesh=mesh)


def _zcore(x, k, metric, mesh):
    # 2,048 subspace samples (paper variant, 1,000 neighbours each), then the top k.
    scores = gk.zcore_scores(x, jax.random.key(0), num_samples=2048, mesh=mesh)
    return gk.zcore_select(scores, k)


# name -> (x, k, metric, mesh) -> the array compared with the single-device result; whether the
# kernel's time is k greedy steps (then a time per step is reported).
KERNELS = {
    "kcenter": (lambda x, k, metric, mesh: gk.greedy_k_center(x, k, metric=metric, mesh=mesh), 1),
    "farthest": (lambda x, k, metric, mesh: gk.farthest_point(x, k, metric=metric, mesh=mesh), 1),
    "closest": (lambda x, k, metric, mesh: gk.closest_point(x, k, metric=metric, mesh=mesh), 1),
    "herding": (_herding, 1),
    "kmeans": (
        lambda x, k, metric, mesh: gk.kmeans(x, k, jax.random.key(0), num_iters=10, mesh=mesh)[1],
        0,
    ),
    "knn": (lambda x, k, metric, mesh: gk.knn(x, k, metric=metric, mesh=mesh)[1], 0),
    "zcore": (_zcore, 0),
}


def add_arguments(parser) -> None:
    from goldener_jax.cli import int_at_least

    count = int_at_least(1)

    parser.add_argument(
        "--kernel",
        choices=sorted(KERNELS),
        default="kcenter",
        help="greedy k-center; farthest / closest point, RBF herding, kNN (O(N^2 d): use a "
        "smaller --n); k-means (--k clusters, 10 Lloyd iterations); ZCore (2,048 samples, then "
        "the top --k)",
    )
    parser.add_argument("--n", type=count, default=200_000, help="points")
    parser.add_argument("--d", type=count, default=128, help="dimensions")
    parser.add_argument("--k", type=count, default=100, help="centers to select")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="f32", help="storage dtype")
    parser.add_argument("--metric", choices=["euclidean", "cosine"], default="euclidean")
    parser.add_argument("--devices", type=count, default=8, help="fake CPU devices")
    parser.add_argument(
        "--meshes", default="1,2,8", help="mesh sizes to time, comma-separated (<= --devices)"
    )
    parser.add_argument("--repeats", type=count, default=3, help="steady-state repetitions")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and keys (0)")


_ARGS = ("kernel", "n", "d", "k", "dtype", "metric", "devices", "meshes", "repeats", "seed")


def _in_subprocess(args) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={args.devices}"
    )
    env["JAX_PLATFORMS"] = "cpu"
    cmd = [sys.executable, "-m", "goldener_jax.benchmarks.sharded"]
    for name in _ARGS:
        cmd += [f"--{name}", str(getattr(args, name))]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    lines = out.stdout.strip().splitlines()
    print("\n".join(lines[:-1]))
    return json.loads(lines[-1])


def run(args) -> dict:
    if jax.device_count() < args.devices:
        return _in_subprocess(args)
    result = _measure(args)
    _print(result)
    return result


def _measure(args) -> dict:
    n, d, k = args.n, args.d, args.k
    meshes = [int(m) for m in str(args.meshes).split(",") if m]
    if any(m < 1 or m > jax.device_count() for m in meshes):
        raise ValueError(f"--meshes {args.meshes} must be within 1..{jax.device_count()}")
    dtype = DTYPES[args.dtype]
    x = jax.random.normal(jax.random.key(args.seed), (n, d), jnp.float32).astype(dtype)
    x = jax.device_put(x, jax.devices()[0]).block_until_ready()

    kernel, stepwise = KERNELS[args.kernel]
    steps = max(1, k) if stepwise else 1

    def single():
        return kernel(x, k, args.metric, None).block_until_ready()

    t0 = time.perf_counter()
    want = np.asarray(single())
    single_first = time.perf_counter() - t0
    single_steady = float(np.median(timeit(single, args.repeats)))

    rows = []
    for size in meshes:
        mesh = gk.make_mesh(jax.devices()[:size])
        xs = gk.shard_rows(x, mesh)  # placed once, as a pipeline would hold it
        xs.block_until_ready()

        def sharded(xs=xs, mesh=mesh):
            return kernel(xs, k, args.metric, mesh).block_until_ready()

        t0 = time.perf_counter()
        got = np.asarray(sharded())
        first = time.perf_counter() - t0
        steady = float(np.median(timeit(sharded, args.repeats)))
        rows.append(
            {
                "devices": size,
                "first_call_s": first,
                "steady_s": steady,
                "per_step_s": steady / steps if stepwise else None,
                "ratio_vs_single": steady / single_steady,
                "same_indices": bool(np.array_equal(got, want)),
                "mismatches": int(np.count_nonzero(got != want)) if got.shape == want.shape else -1,
            }
        )
        del xs
    return {
        "benchmark": "sharded",
        "kernel": args.kernel,
        "n": n,
        "d": d,
        "k": k,
        "dtype": args.dtype,
        "metric": args.metric,
        "fake_devices": jax.device_count(),
        "single_first_call_s": single_first,
        "single_steady_s": single_steady,
        "single_per_step_s": single_steady / steps if stepwise else None,
        "sharded": rows,
        "machine": machine_summary(),
    }


def _print(r: dict) -> None:
    m = r["machine"]
    print(
        f"sharded {r['kernel']}  n={r['n']:,} d={r['d']} k={r['k']} dtype={r['dtype']} "
        f"metric={r['metric']}  on {r['fake_devices']} fake CPU devices"
    )
    print(
        f"  machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, "
        f"jax {m['jax']} on {m['backend']} (fake devices share these cores)"
    )

    def step(per_step):
        return "" if per_step is None else f"{per_step * 1e3:.2f} ms/step; "

    print(
        f"  single device: {r['single_steady_s']:.3f} s  ({step(r['single_per_step_s'])}"
        f"first call {r['single_first_call_s']:.2f} s)"
    )
    for row in r["sharded"]:
        print(
            f"  mesh of {row['devices']}: {row['steady_s']:.3f} s  ({step(row['per_step_s'])}"
            f"first call {row['first_call_s']:.2f} s)  = {row['ratio_vs_single']:.2f}x single; "
            f"same indices: {row['same_indices']}"
        )


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parsed = parser.parse_args()
    out = _measure(parsed)
    _print(out)
    print(json.dumps(out))
