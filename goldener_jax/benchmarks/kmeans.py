"""k-means: Lloyd iteration time and final inertia against scikit-learn, in the same run.

Speed: the same data and the same initial centroids (our k-means++ seeds) for every contender;
``kmeans_run`` and ``sklearn.cluster.KMeans(algorithm=A, n_init=1, tol=0)`` for each ``A`` of
``--sklearn-algorithms`` (``"lloyd"``; ``"elkan"``, which like ours skips work by distance
bounds) and each thread count of ``--sklearn-threads`` (and faiss when installed) are each timed
for ``--iters-short`` and ``--iters-long`` iterations (best of ``--repeats``, the contenders
interleaved round by round) and the per-iteration time is the difference over the difference in
iterations, so the one-off costs (sklearn's input checks and copies, our dispatch and our first,
full, pass) cancel. Ours (and elkan) skip rows by bounds, so later iterations are cheaper: the
figure is the mean over iterations ``iters-short + 1 .. iters-long``, the same iterations for
every contender. ``--total-iters`` > 0 also times a whole run of that many iterations (or to
convergence) from the seeds for ours and each sklearn contender. Results: our run and
sklearn's lloyd continued to convergence (at most ``--max-iter`` iterations) from those
centroids; the inertia of each final clustering is computed here in float64.

Seeding (``--seeding-seeds`` > 0): on several datasets (digits raw, a Gaussian mixture, uniform)
the final inertia after Lloyd from our k-means++ seeds, from our greedy k-means++ seeds
(``init="greedy"``) and from scikit-learn's own (greedy) k-means++ with ``n_init=1``, over
several seeds each.

scikit-learn is optional: without it only our side is measured.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from goldener_jax import kernels as gk
from goldener_jax.benchmarks._machine import machine_summary


def add_arguments(parser) -> None:
    from goldener_jax.cli import int_at_least

    count, nonneg = int_at_least(1), int_at_least(0)

    parser.add_argument("--n", type=count, default=100_000, help="points")
    parser.add_argument("--d", type=count, default=64, help="dimensions")
    parser.add_argument("--k", type=count, default=100, help="clusters")
    parser.add_argument(
        "--data", choices=["normal", "mixture", "uniform"], default="normal", help="timed data"
    )
    parser.add_argument("--iters-short", type=count, default=2)
    parser.add_argument("--iters-long", type=count, default=12)
    parser.add_argument("--max-iter", type=count, default=300, help="iterations to convergence")
    parser.add_argument("--repeats", type=count, default=3, help="best of this many timings")
    parser.add_argument(
        "--sklearn-threads",
        default="0,1",
        help="comma-separated thread counts sklearn is timed with (0: its default)",
    )
    parser.add_argument(
        "--sklearn-algorithms",
        default="lloyd,elkan",
        help="comma-separated KMeans algorithms sklearn is timed with",
    )
    parser.add_argument(
        "--total-iters",
        type=nonneg,
        default=0,
        help="also time whole runs of at most this many iterations from the seeds (0: no)",
    )
    parser.add_argument("--total-repeats", type=count, default=2, help="best of, whole runs")
    parser.add_argument(
        "--seeding-seeds", type=nonneg, default=3, help="seeds per dataset in the seeding table"
    )
    parser.add_argument("--seeding-k", type=count, default=30, help="clusters in the seeding table")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and keys (0)")
    parser.add_argument(
        "--cpu-devices",
        type=nonneg,
        default=0,
        help="also time ours row-sharded on a mesh of this many CPU devices (jax_num_cpu_devices, "
        "one per core: how a CPU's cores all work on one k-means); 0: no",
    )


def make_data(kind: str, n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "normal":
        return rng.normal(size=(n, d)).astype(np.float32)
    if kind == "uniform":
        return rng.uniform(size=(n, d)).astype(np.float32)
    if kind == "mixture":  # 50 Gaussians of random widths around random centres
        centres = rng.normal(scale=4.0, size=(50, d))
        scale = rng.uniform(0.3, 2.0, size=50)
        lab = rng.integers(0, 50, n)
        return (centres[lab] + scale[lab, None] * rng.normal(size=(n, d))).astype(np.float32)
    raise ValueError(kind)


def inertia(x: np.ndarray, centroids: np.ndarray) -> float:
    """Sum of squared distances to the nearest centroid, float64, blocked."""
    x = np.asarray(x, np.float64)
    c = np.asarray(centroids, np.float64)
    c_sq = (c * c).sum(1)
    total = 0.0
    for s in range(0, len(x), 8192):
        r = x[s : s + 8192]
        d = (r * r).sum(1)[:, None] + c_sq[None] - 2.0 * r @ c.T
        total += float(np.maximum(d.min(1), 0.0).sum())
    return total


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _threads(n: int):
    from threadpoolctl import threadpool_limits

    return threadpool_limits(n) if n > 0 else threadpool_limits(None)


def _sk_fit(x, init, max_iter, threads, algorithm="lloyd"):
    from sklearn.cluster import KMeans

    m = KMeans(len(init), init=init, n_init=1, max_iter=max_iter, tol=0.0, algorithm=algorithm)
    with _threads(threads):
        m.fit(x)
    return m


def _ours(state, xj, iters):
    out = gk.kmeans_run(state, xj, num_iters=iters)
    out.centroids.block_until_ready()
    return out


def _faiss_fit(faiss, x, c0, iters, threads):
    """faiss ``Kmeans`` from ``c0`` on all points (no subsampling) with ``threads`` threads."""
    default = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        km = faiss.Kmeans(x.shape[1], len(c0), niter=iters, max_points_per_centroid=len(x), seed=0)
        km.train(x, init_centroids=c0)
    finally:
        faiss.omp_set_num_threads(default)
    return iters


def _mesh_fit(state, x, devices: int):
    """fit(iters) for ours on a mesh of ``devices`` CPU devices (rows placed once)."""
    mesh = gk.make_mesh(jax.devices()[:devices])
    xs = gk.shard_rows(x, mesh)

    def fit(iters):
        out = gk.kmeans_run(state, xs, num_iters=iters, mesh=mesh, n=x.shape[0])
        out.centroids.block_until_ready()
        return out

    return fit


def _contenders(state, xj, x, c0, sklearn_threads, algorithms=("lloyd",), devices=0) -> dict:
    """name -> fit(iters) returning the iterations done; ours first (on one device, then on a
    mesh of ``devices`` CPU devices when > 1), then the installed peers."""
    out = {"ours": lambda it: int(_ours(state, xj, it).iteration)}
    if devices > 1:
        mesh_fit = _mesh_fit(state, x, devices)
        out[f"ours_mesh_{devices}"] = lambda it: int(mesh_fit(it).iteration)
    try:
        import sklearn  # noqa: F401

        for alg in algorithms:
            for th in sklearn_threads:
                name = f"sklearn_{alg}_threads_{th or 'default'}"
                out[name] = lambda it, th=th, alg=alg: int(_sk_fit(x, c0, it, th, alg).n_iter_)
    except ImportError:
        pass
    try:
        import faiss

        for th in (1, faiss.omp_get_max_threads()):
            out[f"faiss_threads_{th}"] = lambda it, th=th: _faiss_fit(faiss, x, c0, it, th)
    except ImportError:
        pass
    return out


def _set_cpu_devices(count: int) -> None:
    if count <= 1:
        return
    if jax.config.jax_num_cpu_devices < count:  # never fewer than the process asked for
        try:
            jax.config.update("jax_num_cpu_devices", count)
        except RuntimeError:  # the backend already started: too late to split the CPU
            pass
    if len(jax.devices("cpu")) < count:
        raise SystemExit(
            f"--cpu-devices {count}: JAX has {len(jax.devices('cpu'))} CPU devices (set "
            "jax_num_cpu_devices before JAX starts)"
        )


def run(args) -> dict:
    if args.iters_long <= args.iters_short:  # the per-iteration time is their difference's
        raise ValueError(
            f"--iters-long ({args.iters_long}) must be greater than --iters-short "
            f"({args.iters_short})"
        )
    devices = getattr(args, "cpu_devices", 0)
    _set_cpu_devices(devices)
    x = make_data(args.data, args.n, args.d, args.seed)
    xj = jnp.asarray(x)
    key = jax.random.key(args.seed)
    state = gk.kmeans_init(xj, args.k, key)
    c0 = np.asarray(state.centroids)
    lo, hi = args.iters_short, args.iters_long
    threads = [int(t) for t in str(args.sklearn_threads).split(",")]
    algorithms = [a for a in str(args.sklearn_algorithms).split(",") if a]
    fits = _contenders(state, xj, x, c0, threads, algorithms, devices)
    meshed = f"ours_mesh_{devices}" if devices > 1 else None

    # Rounds interleave the contenders so that each sees the same share of the machine's load
    # (other people's jobs): best of `repeats` per contender and iteration count.
    iters = {name: (fit(lo), fit(hi)) for name, fit in fits.items()}  # warm-up / compile
    best = {name: [float("inf"), float("inf")] for name in fits}
    for _ in range(args.repeats):
        for name, fit in fits.items():
            for j, it in enumerate((lo, hi)):
                t0 = time.perf_counter()
                fit(it)
                best[name][j] = min(best[name][j], time.perf_counter() - t0)
    per_iter = {
        name: (best[name][1] - best[name][0]) / max(1, iters[name][1] - iters[name][0])
        for name in fits
    }
    ours_iter = per_iter["ours"]
    result = {
        "benchmark": "kmeans",
        "n": args.n,
        "d": args.d,
        "k": args.k,
        "data": args.data,
        "repeats": args.repeats,
        "ours_iterations": list(iters["ours"]),
        "ours_per_iter_s": ours_iter,
        "peers": [
            {
                "name": name,
                "iterations": list(iters[name]),
                "per_iter_s": per_iter[name],
                "ours_speedup": per_iter[name] / ours_iter,
                **({"ours_mesh_speedup": per_iter[name] / per_iter[meshed]} if meshed else {}),
            }
            for name in fits
            if name not in ("ours", meshed)
        ],
        "machine": machine_summary(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }
    if meshed:
        result["ours_mesh_devices"] = devices
        result["ours_mesh_iterations"] = list(iters[meshed])
        result["ours_mesh_per_iter_s"] = per_iter[meshed]
    if args.total_iters > 0:
        result["total_runs"] = _total_runs(fits, args.total_iters, args.total_repeats)
    final = gk.kmeans_run(state, xj, num_iters=args.max_iter)
    result["ours_final_iterations"] = int(final.iteration)
    result["ours_final_inertia"] = inertia(x, np.asarray(final.centroids))
    if meshed:  # the mesh's sums add in another order: its own run to convergence
        on_mesh = _mesh_fit(state, x, devices)(args.max_iter)
        result["ours_mesh_final_iterations"] = int(on_mesh.iteration)
        result["ours_mesh_final_inertia"] = inertia(x, np.asarray(on_mesh.centroids))

    try:
        import sklearn
    except ImportError:
        sklearn = None
    if sklearn is not None:
        m = _sk_fit(x, c0, args.max_iter, 0)
        result.update(
            sklearn=sklearn.__version__,
            sklearn_final_iterations=int(m.n_iter_),
            sklearn_final_inertia=inertia(x, m.cluster_centers_),
        )
        result["inertia_ratio_ours_over_sklearn"] = (
            result["ours_final_inertia"] / result["sklearn_final_inertia"]
        )
    if args.seeding_seeds > 0:
        result["seeding"] = _seeding_table(args, sklearn is not None)
    _print(result)
    return result


def _total_runs(fits: dict, iters: int, repeats: int) -> dict:
    """name -> (seconds of a whole run of at most ``iters`` iterations from the seeds, best of
    ``repeats``, interleaved; iterations done; ours' time over this one)."""
    best = {name: float("inf") for name in fits}
    done = {}
    for _ in range(repeats):
        for name, fit in fits.items():
            t0 = time.perf_counter()
            done[name] = fit(iters)
            best[name] = min(best[name], time.perf_counter() - t0)
    return {
        name: {
            "seconds": best[name],
            "iterations": done[name],
            "ours_speedup": best[name] / best["ours"],
        }
        for name in fits
    }


def _datasets(seed: int, main=None) -> dict:
    out = {} if main is None else {main[0]: main[1]}
    try:
        from sklearn.datasets import load_digits

        out["digits_raw"] = load_digits().data.astype(np.float32)
    except ImportError:
        pass
    out["mixture_20000x32"] = make_data("mixture", 20_000, 32, seed)
    out["uniform_20000x16"] = make_data("uniform", 20_000, 16, seed)
    return out


def _seeding_table(args, with_sklearn: bool) -> list[dict]:
    rows = []
    main = (f"{args.data}_{args.n}x{args.d}", make_data(args.data, args.n, args.d, args.seed))
    for name, x in _datasets(args.seed, main).items():
        k = args.k if name == main[0] else args.seeding_k
        xj = jnp.asarray(x)
        row = {"data": name, "n": int(x.shape[0]), "d": int(x.shape[1]), "k": k}
        for init in ("kmeans++", "greedy"):
            vals = []
            for s in range(args.seeding_seeds):
                c, _ = gk.kmeans(xj, k, jax.random.key(s), num_iters=args.max_iter, init=init)
                vals.append(inertia(x, np.asarray(c)))
            row[f"ours_{init}"] = vals
        if with_sklearn:
            from sklearn.cluster import KMeans

            vals = []
            for s in range(args.seeding_seeds):
                m = KMeans(k, n_init=1, random_state=s, max_iter=args.max_iter, tol=0.0)
                vals.append(inertia(x, m.fit(x).cluster_centers_))
            row["sklearn_greedy"] = vals
        for key in [c for c in row if c.startswith(("ours_", "sklearn_"))]:
            row[f"{key}_mean"] = float(np.mean(row[key]))
        rows.append(row)
    return rows


def _print(r: dict) -> None:
    m = r["machine"]
    print(f"k-means Lloyd  n={r['n']:,} d={r['d']} k={r['k']} data={r['data']}")
    print(f"  machine: {m['cpu']}, {m['cores']} cores, jax {m['jax']} on {m['backend']}")
    print(f"  ours:    {r['ours_per_iter_s'] * 1e3:.1f} ms/iteration (best of {r['repeats']})")
    if "ours_mesh_per_iter_s" in r:
        print(
            f"  ours on a mesh of {r['ours_mesh_devices']} CPU devices: "
            f"{r['ours_mesh_per_iter_s'] * 1e3:.1f} ms/iteration"
        )
    print(f"  load average at the end: {r['load_average']}  (a shared machine: compare ratios)")
    for p in r["peers"]:
        mesh = f", on the mesh {p['ours_mesh_speedup']:.2f}x" if "ours_mesh_speedup" in p else ""
        print(
            f"  {p['name']}: {p['per_iter_s'] * 1e3:.1f} ms/iteration -> ours is "
            f"{p['ours_speedup']:.2f}x its speed{mesh}"
        )
    for name, t in r.get("total_runs", {}).items():
        print(
            f"  whole run, {name}: {t['seconds']:.3f} s ({t['iterations']} it) -> ours is "
            f"{t['ours_speedup']:.2f}x its speed"
        )
    if "sklearn_final_inertia" in r:
        print(
            f"  final inertia from the same seeds: ours {r['ours_final_inertia']:.6g} "
            f"({r['ours_final_iterations']} it), sklearn {r['sklearn_final_inertia']:.6g} "
            f"({r['sklearn_final_iterations']} it), ratio "
            f"{r['inertia_ratio_ours_over_sklearn']:.6f}"
        )
    if "ours_mesh_final_inertia" in r:
        print(
            f"  final inertia on the mesh: {r['ours_mesh_final_inertia']:.6g} "
            f"({r['ours_mesh_final_iterations']} it)"
        )
    for row in r.get("seeding", []):
        parts = [
            f"{key} {row[key + '_mean']:.6g}"
            for key in ("ours_kmeans++", "ours_greedy", "sklearn_greedy")
            if key in row
        ]
        print(f"  seeding, mean final inertia on {row['data']} (k={row['k']}): " + ", ".join(parts))
