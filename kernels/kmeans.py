"""Exact k-means (Lloyd) with k-means++ seeding, blocked, as explicit state; and the two
representative pickers built on it: the point nearest each centroid (``kmeans_medoids``) and the
most typical point of each cluster (``typical_points``, TypiClust).

Seeding (``kmeans_plusplus``): the first seed is uniform, each next one is drawn with probability
proportional to the squared distance to the nearest seed so far (one mat-vec per seed, O(N)
memory). Draw ``t`` uses ``jax.random.uniform(jax.random.fold_in(key, t))``: the index is the first
``i`` with ``cumsum(D^2)[i] > u * sum(D^2)`` among points not chosen yet, so seeds are distinct.

Lloyd: each iteration assigns every point to its nearest centroid (``[block, k]`` distances at a
time, ties to the lowest centroid index) and moves each centroid to the mean of its points; a
cluster left empty keeps its centroid. The run stops after ``num_iters`` iterations or when an
assignment repeats the previous one. The returned assignment is that of the returned centroids.

Only the Euclidean geometry is supported (``"euclidean"`` and ``"sqeuclidean"`` give the same
clusters); for cosine, normalise the rows first.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._checks import as_float_matrix, check_block_size, check_k
from .distance import (
    accum_dtype,
    auto_block,
    block_rank_distances,
    fold_row_blocks,
    point_rank_distances,
    point_stats,
    row_aux,
)

__all__ = [
    "KMeansState",
    "kmeans",
    "kmeans_assign",
    "kmeans_init",
    "kmeans_medoids",
    "kmeans_plusplus",
    "kmeans_run",
    "typicality",
    "typical_points",
]

_HIGHEST = jax.lax.Precision.HIGHEST
_KMEANS_METRICS = ("euclidean", "sqeuclidean")


class KMeansState(NamedTuple):
    """State of a Lloyd run.

    Attributes:
      centroids: float32 ``[k, d]``.
      assignment: int32 ``[n]`` cluster of each point at the last assignment; ``-1`` before any.
      iteration: int32 scalar, Lloyd iterations done.
      changed: bool scalar, whether the last assignment differed from the one before (the run
        stops when it did not).
    """

    centroids: jax.Array
    assignment: jax.Array
    iteration: jax.Array
    changed: jax.Array


def _check_clusters(n_clusters, n: int) -> int:
    k = check_k(n_clusters, n, "n_clusters")
    if k < 1:
        raise ValueError(f"n_clusters must be >= 1, got {k}")
    return k


def _check_metric(metric: str) -> None:
    if metric not in _KMEANS_METRICS:
        raise ValueError(
            f"k-means supports metric in {_KMEANS_METRICS}, got {metric!r}; for cosine, "
            "L2-normalise the rows first"
        )


def _check_key(key) -> None:
    if not (isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)):
        raise TypeError(f"key must be a jax.random.key(...), got {key!r}")


def _check_iters(num_iters) -> int:
    if isinstance(num_iters, bool) or not isinstance(num_iters, int) or num_iters < 0:
        raise ValueError(f"num_iters must be an int >= 0, got {num_iters!r}")
    return num_iters


# --------------------------------------------------------------------------- seeding


@partial(jax.jit, static_argnames=("k",))
def _plusplus(x, key, *, k):
    n = x.shape[0]
    stats = point_stats(x, "euclidean")
    acc = stats.sq.dtype
    first = jax.random.randint(jax.random.fold_in(key, 0), (), 0, n).astype(jnp.int32)
    min_d = point_rank_distances(x, stats, x[first], "euclidean").astype(acc)
    min_d = min_d.at[first].set(0.0)
    taken = jnp.zeros((n,), bool).at[first].set(True)
    seeds = jnp.full((k,), -1, jnp.int32).at[0].set(first)
    ids = jnp.arange(n, dtype=jnp.int32)

    def body(t, carry):
        seeds, min_d, taken = carry
        w = jnp.where(taken, 0.0, min_d)
        cum = jnp.cumsum(w)
        total = cum[-1]
        u = jax.random.uniform(jax.random.fold_in(key, t), (), acc)
        hit = (cum > u * total) & ~taken
        # All remaining points at distance 0 (duplicates): the first one not taken.
        hit = jnp.where(total > 0, hit, ~taken)
        idx = jnp.min(jnp.where(hit, ids, n)).astype(jnp.int32)
        idx = jnp.minimum(idx, n - 1)
        d = point_rank_distances(x, stats, x[idx], "euclidean").astype(acc)
        return (
            seeds.at[t].set(idx),
            jnp.minimum(min_d, d).at[idx].set(0.0),
            taken.at[idx].set(True),
        )

    seeds, _, _ = jax.lax.fori_loop(1, k, body, (seeds, min_d, taken))
    return seeds


def kmeans_plusplus(x, n_clusters: int, key, *, mesh=None) -> jax.Array:
    """k-means++ seeds: int32 ``[n_clusters]`` distinct row indices of ``x``, deterministic for
    ``key``. With ``mesh`` (a 1-D ``jax.sharding.Mesh``) the rows are sharded over its devices
    and the same uniforms are drawn (``kernels.sharding``)."""
    _check_key(key)
    x = as_float_matrix(x, "x")
    k = _check_clusters(n_clusters, x.shape[0])
    if mesh is not None:
        from .sharding import sharded_kmeans_seeds

        return sharded_kmeans_seeds(x, k, key, mesh=mesh)[0]
    return _plusplus(x, key, k=k)


# --------------------------------------------------------------------------- Lloyd


def _assign(x, centroids, block):
    """(assignment [n], rank distance to the assigned centroid [n]); ``[block, k]`` at a time."""
    n = x.shape[0]
    acc = accum_dtype(x.dtype)
    x_aux = row_aux(x, "euclidean")
    c_aux = row_aux(centroids, "euclidean")

    def fold(rows, start, fresh_from, carry):
        assign, dist = carry
        aux = jax.lax.dynamic_slice_in_dim(x_aux, start, block)
        d = block_rank_distances(rows, aux, centroids.astype(rows.dtype), c_aux, "euclidean")
        a = jnp.argmin(d, axis=1).astype(jnp.int32)  # lowest index on ties
        best = jnp.min(d, axis=1)
        assign = jax.lax.dynamic_update_slice_in_dim(assign, a, start, axis=0)
        dist = jax.lax.dynamic_update_slice_in_dim(dist, best.astype(acc), start, axis=0)
        return assign, dist

    init = (jnp.zeros((n,), jnp.int32), jnp.zeros((n,), acc))
    return fold_row_blocks(fold, x, block, init)


def _update(x, assignment, centroids, block):
    """Mean of each cluster's points (one-hot products, ``[block, k]`` at a time); an empty
    cluster keeps its centroid."""
    k, d = centroids.shape
    acc = centroids.dtype

    def fold(rows, start, fresh_from, carry):
        sums, counts = carry
        fresh = (start + jnp.arange(block)) >= fresh_from
        a = jax.lax.dynamic_slice_in_dim(assignment, start, block)
        onehot = (a[:, None] == jnp.arange(k)[None, :]) & fresh[:, None]
        onehot = onehot.astype(acc)
        sums = sums + jnp.dot(onehot.T, rows.astype(acc), precision=_HIGHEST)
        return sums, counts + jnp.sum(onehot, axis=0)

    sums, counts = fold_row_blocks(fold, x, block, (jnp.zeros((k, d), acc), jnp.zeros((k,), acc)))
    safe = jnp.where(counts > 0, counts, 1.0)
    return jnp.where(counts[:, None] > 0, sums / safe[:, None], centroids)


@partial(jax.jit, static_argnames=("k", "block_size"))
def _init(x, key, *, k, block_size):
    del block_size
    seeds = _plusplus(x, key, k=k)
    acc = accum_dtype(x.dtype)
    return KMeansState(
        x[seeds].astype(acc),
        jnp.full((x.shape[0],), -1, jnp.int32),
        jnp.zeros((), jnp.int32),
        jnp.ones((), bool),
    )


@partial(jax.jit, static_argnames=("block_size",))
def _run(state, x, max_steps, num_iters, *, block_size):
    n, k = x.shape[0], state.centroids.shape[0]
    block = auto_block(k, n, block_size)
    stop = jnp.minimum(num_iters, state.iteration + max_steps)

    # `x` is closed over, not carried.
    def body(s):
        a, _ = _assign(x, s.centroids, block)
        changed = jnp.any(a != s.assignment)
        return KMeansState(_update(x, a, s.centroids, block), a, s.iteration + 1, changed)

    return jax.lax.while_loop(lambda s: (s.iteration < stop) & s.changed, body, state)


@partial(jax.jit, static_argnames=("block_size",))
def _final_assign(x, centroids, *, block_size):
    block = auto_block(centroids.shape[0], x.shape[0], block_size)
    return _assign(x, centroids, block)


def kmeans_init(
    x,
    n_clusters: int,
    key,
    *,
    metric: str = "euclidean",
    block_size: int | None = None,
    mesh=None,
) -> KMeansState:
    """Initial state: k-means++ seeds from ``key`` as centroids, no assignment yet.

    Args:
      x: Array ``[n, d]``, floating.
      n_clusters: ``1 <= n_clusters <= n`` (static).
      key: a ``jax.random.key``.
      metric: ``"euclidean"`` or ``"sqeuclidean"`` (same clusters).
      block_size: accepted for symmetry with ``kmeans_run``.
      mesh: optional 1-D ``jax.sharding.Mesh``: the seeds are drawn over rows sharded on its
        devices (the same seeds as on one device, ``kernels.sharding``).

    Returns:
      A ``KMeansState``.
    """
    _check_metric(metric)
    _check_key(key)
    block_size = check_block_size(block_size)
    x = as_float_matrix(x, "x")
    k = _check_clusters(n_clusters, x.shape[0])
    if mesh is not None:
        from .sharding import sharded_kmeans_seeds

        centroids = sharded_kmeans_seeds(x, k, key, mesh=mesh)[1]
        return KMeansState(
            centroids,
            jnp.full((x.shape[0],), -1, jnp.int32),
            jnp.zeros((), jnp.int32),
            jnp.ones((), bool),
        )
    return _init(x, key, k=k, block_size=block_size)


def kmeans_run(
    state: KMeansState,
    x,
    *,
    num_iters: int = 100,
    max_steps: int | None = None,
    block_size: int | None = None,
    mesh=None,
) -> KMeansState:
    """Continues ``state`` for at most ``max_steps`` more Lloyd iterations (traced: chunked runs
    do not recompile and equal one run exactly), up to ``num_iters`` in all or convergence.
    With ``mesh`` (a 1-D ``jax.sharding.Mesh``) the rows are sharded over its devices and the
    per-cluster sums are ``psum``ed; a state from any device count (or none) continues."""
    x = as_float_matrix(x, "x")
    num_iters = _check_iters(num_iters)
    block_size = check_block_size(block_size)
    if state.assignment.shape[0] != x.shape[0] or state.centroids.shape[1] != x.shape[1]:
        raise ValueError(
            f"state was made for {state.assignment.shape[0]} points of width "
            f"{state.centroids.shape[1]} but x has shape {tuple(x.shape)}"
        )
    if max_steps is None:
        max_steps = num_iters
    if isinstance(max_steps, int) and max_steps < 0:
        raise ValueError(f"max_steps must be >= 0, got {max_steps}")
    if mesh is not None:
        from .sharding import sharded_kmeans_run

        return sharded_kmeans_run(state, x, max_steps, num_iters, mesh=mesh, block_size=block_size)
    return _run(
        state,
        x,
        jnp.asarray(max_steps, jnp.int32),
        jnp.asarray(num_iters, jnp.int32),
        block_size=block_size,
    )


def kmeans_assign(x, centroids, *, block_size: int | None = None, mesh=None) -> jax.Array:
    """Nearest centroid of each row (lowest index on ties): int32 ``[n]``, ``[block, k]`` at a
    time (on each device of ``mesh`` if given: no communication)."""
    x = as_float_matrix(x, "x")
    centroids = as_float_matrix(centroids, "centroids")
    if centroids.shape[1] != x.shape[1] or centroids.shape[0] < 1:
        raise ValueError(
            f"centroids must be [k >= 1, {x.shape[1]}], got shape {tuple(centroids.shape)}"
        )
    if mesh is not None:
        from .sharding import sharded_kmeans_assign

        return sharded_kmeans_assign(
            x, centroids, mesh=mesh, block_size=check_block_size(block_size)
        )
    return _final_assign(x, centroids, block_size=check_block_size(block_size))[0]


def kmeans(
    x,
    n_clusters: int,
    key,
    *,
    num_iters: int = 100,
    metric: str = "euclidean",
    block_size: int | None = None,
    mesh=None,
) -> tuple[jax.Array, jax.Array]:
    """Exact k-means (Lloyd) from k-means++ seeds drawn from ``key``.

    Args:
      x: Array ``[n, d]``, floating (float32, bfloat16, float16; accumulation in float32).
      n_clusters: number of clusters, ``1 <= n_clusters <= n``.
      key: a ``jax.random.key``; same key, same result.
      num_iters: at most this many Lloyd iterations (stops earlier on convergence).
      metric: ``"euclidean"`` or ``"sqeuclidean"``.
      block_size: rows assigned at once (``[block_size, n_clusters]`` distances); ``None`` picks
        blocks of at most 16M values.
      mesh: optional 1-D ``jax.sharding.Mesh`` (e.g. ``kernels.make_mesh()``): rows are sharded
        over its devices; assignments are local, the per-cluster sums and counts ``psum``ed
        (``kernels.sharding``). The seeds equal the single-device ones; the centroids may
        differ in their last bits (another order of the additions), so a point within rounding
        of a boundary between two clusters can be assigned differently.

    Returns:
      ``(centroids float32 [n_clusters, d], assignment int32 [n])``; the assignment is to the
      nearest returned centroid (lowest index on ties).
    """
    if mesh is not None:
        state = kmeans_init(x, n_clusters, key, metric=metric, block_size=block_size, mesh=mesh)
        state = kmeans_run(state, x, num_iters=num_iters, block_size=block_size, mesh=mesh)
        assignment = kmeans_assign(x, state.centroids, block_size=block_size, mesh=mesh)
        return state.centroids, assignment
    state = kmeans_init(x, n_clusters, key, metric=metric, block_size=block_size)
    x = jnp.asarray(x)
    state = kmeans_run(state, x, num_iters=num_iters, block_size=block_size)
    assignment, _ = _final_assign(x, state.centroids, block_size=block_size)
    return state.centroids, assignment


def _check_clustering(x, centroids, assignment, num_picks, min_cluster_size):
    x = as_float_matrix(x, "x")
    centroids = as_float_matrix(centroids, "centroids")
    if centroids.shape[1] != x.shape[1]:
        raise ValueError(
            f"centroids must have the width of x: {tuple(centroids.shape)} vs {tuple(x.shape)}"
        )
    if centroids.shape[0] < 1:
        raise ValueError("need at least one centroid")
    assignment = jnp.asarray(assignment)
    if assignment.shape != (x.shape[0],) or not jnp.issubdtype(assignment.dtype, jnp.integer):
        raise ValueError(f"assignment must be int [n={x.shape[0]}], got {assignment.shape}")
    if num_picks is None:
        num_picks = centroids.shape[0]
    num_picks = check_k(num_picks, x.shape[0], "num_picks")
    if (
        isinstance(min_cluster_size, bool)
        or not isinstance(min_cluster_size, int)
        or min_cluster_size < 1
    ):
        raise ValueError(f"min_cluster_size must be an int >= 1, got {min_cluster_size!r}")
    return x, centroids, assignment.astype(jnp.int32), num_picks


# --------------------------------------------------------------------------- representatives


def _round_robin(assignment, score, num_clusters, num_picks, min_cluster_size):
    """TypiClust's order. Pick ``t`` goes to the cluster, among those with members not picked
    yet, that (1) has at least ``min_cluster_size`` points if any such cluster is left, (2) has
    the fewest picks so far, (3) is the largest, (4) has the lowest index; it takes that
    cluster's unpicked member with the highest ``score`` (lowest index on ties). With
    ``num_picks == k`` and no empty or small cluster: one pick per cluster, largest first."""
    n, k = assignment.shape[0], num_clusters
    ids = jnp.arange(n, dtype=jnp.int32)
    cids = jnp.arange(k, dtype=jnp.int32)
    size = jax.ops.segment_sum(jnp.ones((n,), jnp.int32), assignment, num_segments=k)
    small = size < min_cluster_size

    def body(t, carry):
        picks, taken, got = carry
        left = jax.ops.segment_sum((~taken).astype(jnp.int32), assignment, num_segments=k)
        ok = left > 0
        ok = ok & (small == jnp.min(jnp.where(ok, small, True)))
        ok = ok & (got == jnp.min(jnp.where(ok, got, n + 1)))
        ok = ok & (size == jnp.max(jnp.where(ok, size, -1)))
        c = jnp.min(jnp.where(ok, cids, k))
        member = (assignment == c) & ~taken
        s = jnp.where(member, score, -jnp.inf)
        i = jnp.min(jnp.where(member & (s == jnp.max(s)), ids, n)).astype(jnp.int32)
        return picks.at[t].set(i), taken.at[i].set(True), got.at[c].add(1)

    init = (
        jnp.full((num_picks,), -1, jnp.int32),
        jnp.zeros((n,), bool),
        jnp.zeros((k,), jnp.int32),
    )
    return jax.lax.fori_loop(0, num_picks, body, init)[0]


@partial(jax.jit, static_argnames=("num_picks", "min_cluster_size"))
def _medoids(x, centroids, assignment, *, num_picks, min_cluster_size):
    c = centroids.astype(accum_dtype(x.dtype))
    diff = x.astype(c.dtype) - c[assignment]
    score = -jnp.sum(diff * diff, axis=1)
    return _round_robin(assignment, score, c.shape[0], num_picks, min_cluster_size)


def kmeans_medoids(
    x,
    centroids,
    assignment,
    *,
    num_picks: int | None = None,
    min_cluster_size: int = 1,
    mesh=None,
) -> jax.Array:
    """The point nearest each centroid: int32 ``[num_picks]`` distinct indices.

    By default (``num_picks = k``, ``min_cluster_size = 1``) the picks are, for every non-empty
    cluster, largest cluster first, its member nearest its centroid (lowest index on ties); the
    picks an empty cluster (or a cluster smaller than ``min_cluster_size``) would get
    go, in TypiClust's order (see ``typical_points``), to the next-nearest members of the
    largest clusters. ``min_cluster_size > 1`` keeps singleton clusters (outliers) out.
    With ``mesh`` (a 1-D ``jax.sharding.Mesh``) the rows are sharded over its devices and each
    pick is a global reduction (``kernels.sharding``).
    """
    x, centroids, assignment, num_picks = _check_clustering(
        x, centroids, assignment, num_picks, min_cluster_size
    )
    if mesh is not None:
        from .sharding import sharded_kmeans_medoids

        return sharded_kmeans_medoids(
            x,
            centroids,
            assignment,
            mesh=mesh,
            num_picks=num_picks,
            min_cluster_size=min_cluster_size,
        )
    return _medoids(
        x, centroids, assignment, num_picks=num_picks, min_cluster_size=min_cluster_size
    )


@partial(jax.jit, static_argnames=("num_neighbors", "block_size"))
def _typicality(x, assignment, *, num_neighbors, block_size):
    n = x.shape[0]
    if n == 1:
        return jnp.full((1,), jnp.inf, jnp.float32)
    block = auto_block(n, n, block_size)
    aux = row_aux(x, "euclidean")
    m = min(num_neighbors, n - 1)

    def fold(rows, start, fresh_from, out):
        raux = jax.lax.dynamic_slice_in_dim(aux, start, block)
        a = jax.lax.dynamic_slice_in_dim(assignment, start, block)
        sq = block_rank_distances(rows, raux, x, aux, "euclidean")  # [block, n]
        row_ids = start + jnp.arange(block)
        same = (a[:, None] == assignment[None, :]) & (row_ids[:, None] != jnp.arange(n)[None, :])
        d = jnp.where(same, jnp.sqrt(sq), jnp.inf)
        near = -jax.lax.top_k(-d, m)[0]  # the m nearest other members of the cluster
        valid = jnp.isfinite(near)
        cnt = jnp.sum(valid, axis=1)
        mean = jnp.sum(jnp.where(valid, near, 0.0), axis=1) / jnp.maximum(cnt, 1)
        typ = jnp.where(mean > 0, 1.0 / jnp.where(mean > 0, mean, 1.0), jnp.inf)
        return jax.lax.dynamic_update_slice_in_dim(out, typ.astype(out.dtype), start, axis=0)

    return fold_row_blocks(fold, x, block, jnp.zeros((n,), jnp.float32))


def typicality(x, assignment, *, num_neighbors: int = 20, block_size: int | None = None, mesh=None):
    """TypiClust typicality: ``1 / mean Euclidean distance to the num_neighbors nearest other
    points of the same cluster`` (fewer when the cluster is smaller; ``inf`` for a point with no
    other member or only duplicates of itself). float32 ``[n]``; ``[block_size, n]`` distances
    at a time (``O(n^2 d)`` work, never an ``n x n`` matrix). With ``mesh`` the rows are sharded
    and travel round a ring of its devices (``kernels.sharding``)."""
    x = as_float_matrix(x, "x")
    assignment = jnp.asarray(assignment)
    if assignment.shape != (x.shape[0],) or not jnp.issubdtype(assignment.dtype, jnp.integer):
        raise ValueError(f"assignment must be int [n={x.shape[0]}], got {assignment.shape}")
    if isinstance(num_neighbors, bool) or not isinstance(num_neighbors, int) or num_neighbors < 1:
        raise ValueError(f"num_neighbors must be an int >= 1, got {num_neighbors!r}")
    block_size = check_block_size(block_size)
    if mesh is not None:
        from .sharding import sharded_typicality

        return sharded_typicality(
            x,
            assignment.astype(jnp.int32),
            mesh=mesh,
            num_neighbors=num_neighbors,
            block_size=block_size,
        )
    return _typicality(
        x, assignment.astype(jnp.int32), num_neighbors=num_neighbors, block_size=block_size
    )


@partial(jax.jit, static_argnames=("num_clusters", "num_picks", "min_cluster_size"))
def _typical(assignment, typ, *, num_clusters, num_picks, min_cluster_size):
    return _round_robin(assignment, typ, num_clusters, num_picks, min_cluster_size)


def typical_points(
    x,
    centroids,
    assignment,
    *,
    num_neighbors: int = 20,
    num_picks: int | None = None,
    min_cluster_size: int = 1,
    block_size: int | None = None,
    mesh=None,
) -> jax.Array:
    """The most typical points of the clusters (TypiClust): int32 ``[num_picks]`` distinct indices.

    Each pick goes to the cluster with members left that has at least ``min_cluster_size`` points
    (if any is left), the fewest picks so far, the most points, the lowest index — in that order —
    and takes its unpicked member of highest :func:`typicality` (lowest index on ties). By default
    (``num_picks = k``) that is one pick per non-empty cluster, largest cluster first. With
    ``mesh`` (a 1-D ``jax.sharding.Mesh``) the rows are sharded over its devices
    (``kernels.sharding``).
    """
    x, centroids, assignment, num_picks = _check_clustering(
        x, centroids, assignment, num_picks, min_cluster_size
    )
    if mesh is not None:
        from .sharding import sharded_typical_points

        return sharded_typical_points(
            x,
            assignment,
            mesh=mesh,
            num_clusters=centroids.shape[0],
            num_neighbors=num_neighbors,
            num_picks=num_picks,
            min_cluster_size=min_cluster_size,
            block_size=check_block_size(block_size),
        )
    typ = typicality(x, assignment, num_neighbors=num_neighbors, block_size=block_size)
    return _typical(
        assignment,
        typ,
        num_clusters=centroids.shape[0],
        num_picks=num_picks,
        min_cluster_size=min_cluster_size,
    )
