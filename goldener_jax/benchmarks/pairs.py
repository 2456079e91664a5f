"""Pairs within a threshold (near duplicates): ``pairs_within`` vs sklearn and faiss, same run.

Three parts, each measured in this process (best of ``--repeats``, interleaved so that load from
other users of the machine hits every contestant alike):

* **extraction**: per ``[2048, 2048]`` tile of the search, the ns per pair of the distance block
  alone (reduced to a count) and of each way to get its candidates out: ``jnp.nonzero(size=cap)``
  on the device (the old path), a boolean mask pulled back and ``np.nonzero``-ed on the host,
  and the mask packed to 32 bits a word in the distance epilogue, its non-zero words found on the
  host (the path ``pairs_within`` takes).
* **threshold** ``--threshold`` on ``--n x --d`` clustered data with ``--planted`` planted near
  duplicates: ``pairs_within`` vs ``sklearn.neighbors.NearestNeighbors.radius_neighbors``
  (float64 distances) and faiss ``IndexFlatL2.range_search`` (squared radius; default threads
  and 1 thread) when ``faiss`` is importable ("not installed" otherwise); the pair sets compared.
* **threshold 0** on ``--dup-n x --dup-d`` Gaussian rows with ``--dup-planted`` rows copied from
  others (one copy with ``-0.0`` for ``+0.0``): ``pairs_within(x, 0)`` (the hash path) vs
  ``np.unique(x, axis=0)`` (one run: slow), the pairs checked against the planted ones; then
  the cosine metric at threshold 0 (the projection-window path) with the copies scaled by 2.
"""

from __future__ import annotations

import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from goldener_jax import kernels as gk
from goldener_jax.benchmarks._machine import machine_summary
from goldener_jax.kernels.distance import block_rank_distances, row_aux


def add_arguments(parser) -> None:
    from goldener_jax.cli import int_at_least, nonneg_float

    count, nonneg = int_at_least(1), int_at_least(0)

    parser.add_argument("--n", type=count, default=50_000, help="rows (threshold part)")
    parser.add_argument("--d", type=count, default=128, help="dimensions (threshold part)")
    parser.add_argument("--threshold", type=nonneg_float, default=1.0, help="Euclidean distance")
    parser.add_argument("--clusters", type=count, default=500, help="Gaussian clusters")
    parser.add_argument("--planted", type=nonneg, default=1000, help="planted near duplicates")
    parser.add_argument("--dup-n", type=count, default=1_000_000, help="rows (threshold 0 part)")
    parser.add_argument("--dup-d", type=count, default=256, help="dimensions (threshold 0 part)")
    parser.add_argument("--dup-planted", type=nonneg, default=10_000, help="planted exact copies")
    parser.add_argument("--repeats", type=count, default=3, help="best of this many runs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and keys (0)")
    parser.add_argument(
        "--parts", default="extraction,threshold,zero",
        help="comma-separated subset of extraction,threshold,zero",
    )  # fmt: skip
    parser.add_argument("--no-sklearn", action="store_true", help="skip sklearn")
    parser.add_argument("--no-numpy-unique", action="store_true", help="skip np.unique")


def _best(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), times, out


def clustered(n, d, clusters, planted, seed):
    """Gaussian clusters (centres ~ N(0, 3^2), spread 0.6: within-cluster distances ~ 0.6 sqrt(2d))
    and ``planted`` rows replaced by a copy of another row plus N(0, 0.03^2) noise (distance ~
    0.03 sqrt(2 d)): the near-duplicate pairs, ``(source, copy)``."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d)).astype(np.float32) * 3
    x = centres[rng.integers(0, clusters, n)] + rng.normal(size=(n, d)).astype(np.float32) * 0.6
    rows = rng.choice(n, 2 * planted, replace=False)
    src, dst = rows[:planted], rows[planted:]
    x[dst] = x[src] + rng.normal(size=(planted, d)).astype(np.float32) * 0.03
    return x.astype(np.float32), np.minimum(src, dst), np.maximum(src, dst)


def _pair_set(i, j):
    return set(zip(np.minimum(i, j).tolist(), np.maximum(i, j).tolist(), strict=True))


# --------------------------------------------------------------------------- extraction
def _tile_dist(x, aux, r0, c0, b):
    rows = jax.lax.dynamic_slice_in_dim(x, r0, b)
    cols = jax.lax.dynamic_slice_in_dim(x, c0, b)
    ra = jax.lax.dynamic_slice_in_dim(aux, r0, b)
    ca = jax.lax.dynamic_slice_in_dim(aux, c0, b)
    return block_rank_distances(rows, ra, cols, ca, "sqeuclidean")


@partial(jax.jit, static_argnames=("b",))
def _row_min(x, aux, r0, c0, limit, *, b):
    return jnp.min(_tile_dist(x, aux, r0, c0, b), axis=1)


@partial(jax.jit, static_argnames=("b",))
def _row_counts(x, aux, r0, c0, limit, *, b):
    return jnp.sum(_tile_dist(x, aux, r0, c0, b) <= limit, axis=1, dtype=jnp.int32)


@partial(jax.jit, static_argnames=("b",))
def _count(x, aux, r0, c0, limit, *, b):
    return jnp.sum(_tile_dist(x, aux, r0, c0, b) <= limit, dtype=jnp.int32)


@partial(jax.jit, static_argnames=("b", "cap"))
def _nonzero(x, aux, r0, c0, limit, *, b, cap):
    return jnp.nonzero(_tile_dist(x, aux, r0, c0, b) <= limit, size=cap, fill_value=-1)


@partial(jax.jit, static_argnames=("b",))
def _mask(x, aux, r0, c0, limit, *, b):
    return _tile_dist(x, aux, r0, c0, b) <= limit


@partial(jax.jit, static_argnames=("b",))
def _packed(x, aux, r0, c0, limit, *, b):
    bits = (_tile_dist(x, aux, r0, c0, b) <= limit).reshape(b, b // 32, 32).astype(jnp.uint32)
    return jnp.sum(bits * (jnp.uint32(1) << jnp.arange(32, dtype=jnp.uint32)), -1, jnp.uint32)


def _extraction(x, threshold, repeats, b=2048, tiles=6):
    xs = jnp.asarray(x - x.mean(0))
    aux = row_aux(xs, "euclidean")
    limit = threshold**2
    n = x.shape[0]
    starts = [((t * 5 * b) % (n - b), (t * 3 * b + b) % (n - b)) for t in range(tiles)]

    def row_min():
        return [np.asarray(_row_min(xs, aux, r, c, limit, b=b)) for r, c in starts]

    def row_counts():
        return [np.asarray(_row_counts(xs, aux, r, c, limit, b=b)) for r, c in starts]

    def count():
        return [int(_count(xs, aux, r, c, limit, b=b)) for r, c in starts]

    def nonzero():
        return [np.asarray(_nonzero(xs, aux, r, c, limit, b=b, cap=1024)[0]) for r, c in starts]

    def mask():
        return [np.nonzero(np.asarray(_mask(xs, aux, r, c, limit, b=b))) for r, c in starts]

    def packed():
        out = []
        for r, c in starts:
            w = np.asarray(_packed(xs, aux, r, c, limit, b=b)).reshape(-1)
            hit = np.flatnonzero(w)
            out.append(np.unpackbits(w[hit].view(np.uint8).reshape(-1, 4), 1, bitorder="little"))
        return out

    variants = {"distance_row_min": row_min, "row_counts": row_counts, "total_count": count,
                "device_nonzero_cap1024": nonzero,
                "bool_mask_host_nonzero": mask, "packed_bits_host": packed}  # fmt: skip
    for fn in variants.values():
        fn()  # compile
    best = {k: float("inf") for k in variants}
    for _ in range(repeats):
        for k, fn in variants.items():
            t, _, _ = _best(fn, 1)
            best[k] = min(best[k], t)
    per_pair = {k: v / (tiles * b * b) * 1e9 for k, v in best.items()}
    base = per_pair["distance_row_min"]
    result = {"tile": b, "tiles": tiles, "ns_per_pair": per_pair,
              "x_distance_block": {k: v / base for k, v in per_pair.items()}}  # fmt: skip
    print(f"extraction, [{b}, {b}] tiles, ns per pair (x the distance block to a row min):")
    for k, v in per_pair.items():
        print(f"  {k:26s} {v:7.3f}  ({v / base:.2f}x)")
    return result


# --------------------------------------------------------------------------- threshold
def _faiss():
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def _threshold_part(args):
    x, src, dst = clustered(args.n, args.d, args.clusters, args.planted, args.seed)
    t = args.threshold
    t0 = time.perf_counter()
    gk.pairs_within(x, t)  # compiles the tile kernel for this padded shape
    first_call = time.perf_counter() - t0

    def ours():
        i, j, _ = gk.pairs_within(x, t)
        return _pair_set(i, j)

    def sklearn():
        from sklearn.neighbors import NearestNeighbors

        nbrs = NearestNeighbors(radius=t).fit(x).radius_neighbors(x, return_distance=False)
        rows = np.repeat(np.arange(len(nbrs)), [len(a) for a in nbrs])
        cols = np.concatenate(nbrs)
        keep = cols > rows
        return _pair_set(rows[keep], cols[keep])

    faiss = _faiss()
    default_threads = faiss.omp_get_max_threads() if faiss is not None else None

    def faiss_run(threads):
        def run():
            faiss.omp_set_num_threads(threads)
            try:
                index = faiss.IndexFlatL2(x.shape[1])
                index.add(x)
                lims, _, ids = index.range_search(x, t * t)  # squared L2 radius
            finally:
                faiss.omp_set_num_threads(default_threads)
            rows = np.repeat(np.arange(len(x)), np.diff(lims.astype(np.int64)))
            keep = ids > rows
            return _pair_set(rows[keep], ids[keep].astype(np.int64))

        return run

    contestants = {"ours": ours}
    if faiss is not None:
        contestants[f"faiss_range_search_{default_threads}_threads"] = faiss_run(default_threads)
        contestants["faiss_range_search_1_thread"] = faiss_run(1)
    if not args.no_sklearn:
        contestants["sklearn_radius_neighbors"] = sklearn
    times = {k: [] for k in contestants}
    pairs = {}
    for _ in range(args.repeats):
        for k, fn in contestants.items():
            t0 = time.perf_counter()
            pairs[k] = fn()
            times[k].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}
    planted = _pair_set(src, dst)
    result = {
        "n": args.n, "d": args.d, "threshold": t, "clusters": args.clusters,
        "planted": args.planted, "pairs": len(pairs["ours"]),
        "planted_found": len(planted & pairs["ours"]),
        "best_s": best, "times_s": times, "ours_first_call_s": first_call,
        "ratio_peer_over_ours": {k: best[k] / best["ours"] for k in best if k != "ours"},
        "same_pairs": {k: pairs[k] == pairs["ours"] for k in pairs if k != "ours"},
        "faiss": "installed" if faiss is not None else "not installed",
        "faiss_default_threads": default_threads,
    }  # fmt: skip
    found = f"{len(pairs['ours'])} pairs ({result['planted_found']} planted found)"
    print(f"threshold {t}: {args.n} x {args.d}, {args.clusters} clusters, {args.planted} planted "
          f"near duplicates; {found}")  # fmt: skip
    print(f"  ours, first call (compiles)        {first_call:8.3f} s")
    for k in contestants:
        same = (
            ""
            if k == "ours"
            else f"  {best[k] / best['ours']:.2f}x ours, same pairs: "
            + str(result["same_pairs"][k])
        )
        print(f"  {k:34s} best {best[k]:8.3f} s  {[round(v, 2) for v in times[k]]}{same}")
    if faiss is None:
        print("  faiss range_search: not installed (pip install faiss-cpu)")
    return result


# --------------------------------------------------------------------------- threshold 0
def _zero_part(args):
    rng = np.random.default_rng(args.seed + 1)
    n, d, k = args.dup_n, args.dup_d, args.dup_planted
    x = rng.standard_normal((n, d), dtype=np.float32)
    rows = rng.choice(n, 2 * k, replace=False)
    src, dst = rows[:k], rows[k:]
    x[dst] = x[src]
    x[src[0], 0], x[dst[0], 0] = 0.0, -0.0  # equal values, different bytes
    planted = _pair_set(src, dst)

    def ours():
        i, j, _ = gk.pairs_within(x, 0.0)
        return _pair_set(i, j)

    best, times, got = _best(ours, args.repeats)
    result = {"n": n, "d": d, "planted": k, "best_s": best, "times_s": times,
              "pairs": len(got), "same_as_planted": got == planted}  # fmt: skip
    runs = [round(v, 2) for v in times]
    print(f"threshold 0: {n} x {d}, {k} planted copies: ours best {best:.3f} s {runs}, "
          f"{len(got)} pairs, same as planted: {got == planted}")  # fmt: skip
    # Cosine at threshold 0: the same rows, the copies scaled by 2 (exactly parallel: a copy
    # scaled by 3 is rounded to float32 and is then at float64 cosine distance 0 only sometimes).
    x[dst] = x[src] * np.float32(2)

    def ours_cosine():
        i, j, _ = gk.pairs_within(x, 0.0, metric="cosine")
        return _pair_set(i, j)

    best_c, times_c, got_c = _best(ours_cosine, args.repeats)
    result["cosine"] = {"best_s": best_c, "times_s": times_c, "pairs": len(got_c),
                        "same_as_planted": got_c == planted}  # fmt: skip
    runs = [round(v, 2) for v in times_c]
    print(f"  cosine, copies x2: best {best_c:.3f} s {runs}, {len(got_c)} pairs, "
          f"same as planted: {got_c == planted}")  # fmt: skip
    x[dst] = x[src]
    x[src[0], 0], x[dst[0], 0] = 0.0, -0.0
    if not args.no_numpy_unique:
        t0 = time.perf_counter()
        _, inverse, counts = np.unique(x + np.float32(0), axis=0, return_inverse=True,
                                       return_counts=True)  # fmt: skip
        t_unique = time.perf_counter() - t0
        groups = int(np.count_nonzero(counts > 1))
        result["numpy_unique_s"] = t_unique
        result["numpy_unique_groups"] = groups
        result["ratio_numpy_unique_over_ours"] = t_unique / best
        print(f"  np.unique(x, axis=0) (one run) {t_unique:.3f} s ({t_unique / best:.2f}x ours), "
              f"{groups} groups of equal rows")  # fmt: skip
    return result


def run(args) -> dict:
    parts = set(args.parts.split(","))
    print("note: a shared 2-core machine, loaded by other users; best of "
          f"{args.repeats}, contestants interleaved in one process")  # fmt: skip
    result = {"benchmark": "pairs", "repeats": args.repeats, "machine": machine_summary()}
    if "extraction" in parts:
        x, _, _ = clustered(min(args.n, 20_000), args.d, args.clusters, 100, args.seed)
        result["extraction"] = _extraction(x, args.threshold, args.repeats)
    if "threshold" in parts:
        result["threshold"] = _threshold_part(args)
    if "zero" in parts:
        result["zero"] = _zero_part(args)
    with open("/proc/loadavg") as f:
        result["load_average_after"] = f.read().split()[:3]
    return result
