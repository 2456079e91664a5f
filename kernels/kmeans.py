"""Exact k-means (Lloyd) with k-means++ seeding, blocked, as explicit state. The representative
pickers built on a clustering (``kmeans_medoids``, TypiClust's ``typicality`` /
``typical_points``) live in ``typiclust.py`` and are re-exported here.

Seeding (``kmeans_plusplus``): the first seed is uniform, each next one is drawn with probability
proportional to the squared distance to the nearest seed so far (one mat-vec per seed, O(N)
memory). Draw ``t`` uses ``jax.random.uniform(jax.random.fold_in(key, t))``: the index is the first
``i`` with ``cumsum(D^2)[i] > u * sum(D^2)`` among points not chosen yet, so seeds are distinct.
``init="greedy"`` (greedy k-means++, scikit-learn's seeding) draws ``2 + int(log k)`` candidates
per seed the same way and keeps the one that leaves the smallest potential; one
``[N, d] x [d, trials]`` product per seed, so ``x`` is still read once per seed.

Lloyd (``kmeans_lloyd.py``): each iteration assigns every point to its nearest centroid and moves
each centroid to the mean of its points; a cluster left empty keeps its centroid. The assignment
is the argmin over ``|c|^2 - 2 c.x`` (one GEMM per cache-sized ``[k, block]`` block, ``|x|^2``
never needed), ties to the lowest centroid index by halving adjacent rows of the scores; the
update is a segment sum (scatter-add of each row into its cluster, ``O(N d)``). Rows whose
distance bounds (Hamerly's, kept conservative against the float rounding of the scores) prove
their centroid unchanged are not recomputed: the result is the unbounded iteration's, bit for
bit. The run stops after ``num_iters`` iterations or when an assignment repeats the previous
one. The returned assignment is that of the returned centroids.

Only the Euclidean geometry is supported (``"euclidean"`` and ``"sqeuclidean"`` give the same
clusters); for cosine, normalise the rows first.

Several devices (``mesh=``): the same bodies run row-sharded over a 1-D mesh
(``sharding.on_mesh``); the centroids are replicated, the assignment sharded like the rows. A
seed draw ``psum``s nothing but the mean row once; the cumulative sum of the weights is taken on
every device over the ``all_gather``ed ``[n]`` weights by the very operation one device uses
(a cumsum of 1e5 float32 values is off by many units of one weight, differently for each order of
addition, so per-device cumsums plus offsets would move draws by a point or more), the drawn
index is a global minimum and its row one fetched row. A Lloyd iteration assigns locally and
``psum``s the per-cluster sums and counts (``O(k d)``). Exactness: the assignments and the
per-point distances are computed as on one device; only the order of the additions in the
global sums (the mean row of the seeding distances, the centroid sums) differs, so the centroids
can differ from one device's in their last bits and a draw or a point within that rounding of a
boundary can go the other way (measured at n = 200,000, d = 32, k = 100: equal seeds; after 10
Lloyd iterations 1 to 6 points assigned differently, on 8 and 2 devices). Where the sums are
exact (quarter-integer data symmetric about 0) everything is bit-identical, centroids included.

Rows already padded and sharded (``n=``): every public function takes the real row count ``n``
of an ``x`` that ``sharding.shard_rows`` padded and placed for ``mesh`` (e.g. a store's rows read
per process, where no process may hold them all; such an ``x`` is never gathered). The padding
rows are never drawn, assigned (``-1``) or summed, and only the ``n`` real rows of an assignment
are returned. The result is that of the call with the ``n`` rows unpadded, bit for bit: the same
program on the same padded rows.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from . import collective
from ._checks import as_float_matrix, as_key, check_block_size, check_k
from .distance import PointStats, accum_dtype, column_sums, point_rank_distances, shifted_sq
from .kmeans_lloyd import assign, assign_block_rows, lloyd_loop
from .sharding import (
    ALL,
    ROWS,
    mesh_axis,
    on_mesh,
    on_rows,
    real_rows,
    replicate,
    shard_rows,
    unpad,
)
from .typiclust import kmeans_medoids, typical_points, typicality

__all__ = [
    "KMeansState",
    "kmeans",
    "kmeans_assign",
    "kmeans_compile",
    "kmeans_init",
    "kmeans_medoids",
    "kmeans_plusplus",
    "kmeans_run",
    "typicality",
    "typical_points",
]

_KMEANS_METRICS = ("euclidean", "sqeuclidean")
_INITS = ("kmeans++", "greedy")


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


_STATE_SPECS = KMeansState(ALL, ROWS, ALL, ALL)


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


def _check_iters(num_iters) -> int:
    if isinstance(num_iters, bool) or not isinstance(num_iters, int) or num_iters < 0:
        raise ValueError(f"num_iters must be an int >= 0, got {num_iters!r}")
    return num_iters


# --------------------------------------------------------------------------- seeding


def _stats(x, n: int, axis) -> PointStats:
    """``point_stats(x, "euclidean")`` of all ``n`` rows: the mean row's column sums are
    ``psum``ed over the devices (padding rows left out)."""
    acc = accum_dtype(x.dtype)
    if jnp.dtype(x.dtype).itemsize >= 4:
        valid = None
        if collective.axis_size(axis) * x.shape[0] != n:  # padding rows of any value count 0
            valid = collective.row_ids(x.shape[0], axis) < n
        shift = collective.psum(column_sums(x, acc, valid), axis) / n
    else:
        shift = jnp.zeros((x.shape[1],), acc)
    return PointStats(shift, shifted_sq(x, shift))


def _seed_body(x, key, *, n, k, axis):
    """(seeds int32 [k], their rows [k, d] in the accumulation dtype), on every device."""
    m = x.shape[0]
    ids = collective.row_ids(m, axis)
    big = collective.axis_size(axis) * m
    stats = _stats(x, n, axis)
    acc = stats.sq.dtype
    first = jax.random.randint(jax.random.fold_in(key, 0), (), 0, n).astype(jnp.int32)
    row = collective.fetch_row(x, ids, first, axis)
    min_d = point_rank_distances(x, stats, row, "euclidean").astype(acc)
    min_d = collective.set_row(min_d, ids, first, 0.0)
    taken = collective.set_row(ids >= n, ids, first, True)  # padding rows are never drawn
    seeds = jnp.full((k,), -1, jnp.int32).at[0].set(first)

    def body(t, carry):
        seeds, min_d, taken = carry
        w = jnp.where(taken, 0.0, min_d)
        # The cumulative weights of the n rows, computed on every device by the very operation
        # one device uses on the same [n] vector (its rounding depends on the length, not only
        # on the values): the same bits, so the same draws. On a mesh that is O(n) values per
        # draw, the one exchange here that is not O(P + d).
        cum = jnp.cumsum(collective.all_gather(w, axis)[:n])
        total = cum[-1]
        cum = jax.lax.dynamic_slice_in_dim(jnp.pad(cum, (0, big - n)), ids[0], m)  # own rows
        u = jax.random.uniform(jax.random.fold_in(key, t), (), acc)
        hit = (cum > u * total) & ~taken
        # All remaining points at distance 0 (duplicates): the first one not taken.
        hit = jnp.where(total > 0, hit, ~taken)
        idx = collective.pmin(jnp.min(jnp.where(hit, ids, big)), axis).astype(jnp.int32)
        idx = jnp.minimum(idx, n - 1)
        row = collective.fetch_row(x, ids, idx, axis)
        d = point_rank_distances(x, stats, row, "euclidean").astype(acc)
        return (
            seeds.at[t].set(idx),
            collective.set_row(jnp.minimum(min_d, d), ids, idx, 0.0),
            collective.set_row(taken, ids, idx, True),
        )

    seeds, _, _ = jax.lax.fori_loop(1, k, body, (seeds, min_d, taken))
    return seeds, collective.fetch_rows(x, ids, seeds, axis).astype(acc)


def _greedy_seed_body(x, key, *, n, k, trials, axis):
    """Greedy k-means++: each step draws ``trials`` candidates (with replacement, by the same
    cumulative weights as ``_seed_body``; uniforms ``uniform(fold_in(key, t), [trials])``) and
    keeps the one that leaves the smallest potential ``sum_i min(D_i, d(x_i, cand))^2``, the
    first candidate on ties. One ``[m, d] x [d, trials]`` product per step: ``x`` is still read
    once per seed."""
    m = x.shape[0]
    ids = collective.row_ids(m, axis)
    big = collective.axis_size(axis) * m
    padded = big != n
    stats = _stats(x, n, axis)
    acc = stats.sq.dtype
    first = jax.random.randint(jax.random.fold_in(key, 0), (), 0, n).astype(jnp.int32)
    row = collective.fetch_row(x, ids, first, axis)
    min_d = point_rank_distances(x, stats, row, "euclidean").astype(acc)
    min_d = collective.set_row(min_d, ids, first, 0.0)
    taken = collective.set_row(ids >= n, ids, first, True)
    seeds = jnp.full((k,), -1, jnp.int32).at[0].set(first)
    many = jax.vmap(point_rank_distances, in_axes=(None, None, 0, None))

    def body(t, carry):
        seeds, min_d, taken = carry
        w = jnp.where(taken, 0.0, min_d)
        cum = jnp.cumsum(collective.all_gather(w, axis)[:n])
        total = cum[-1]
        cum = jax.lax.dynamic_slice_in_dim(jnp.pad(cum, (0, big - n)), ids[0], m)
        u = jax.random.uniform(jax.random.fold_in(key, t), (trials,), acc)
        hit = (cum[None, :] > (u * total)[:, None]) & ~taken[None, :]
        hit = jnp.where(total > 0, hit, ~taken[None, :])
        cand = jnp.min(jnp.where(hit, ids[None, :], big), axis=1)
        cand = jnp.minimum(collective.pmin(cand, axis), n - 1).astype(jnp.int32)
        rows = collective.fetch_rows(x, ids, cand, axis)
        new = jnp.minimum(min_d[None, :], many(x, stats, rows, "euclidean").astype(acc))
        if padded:
            new = jnp.where(ids[None, :] < n, new, 0.0)
        pot = collective.psum(jnp.sum(new, axis=1), axis)
        best = jnp.argmin(pot)  # replicated potentials: the same pick everywhere, first on ties
        idx = cand[best]
        return (
            seeds.at[t].set(idx),
            collective.set_row(new[best], ids, idx, 0.0),
            collective.set_row(taken, ids, idx, True),
        )

    seeds, _, _ = jax.lax.fori_loop(1, k, body, (seeds, min_d, taken))
    return seeds, collective.fetch_rows(x, ids, seeds, axis).astype(acc)


def greedy_trials(k: int) -> int:
    """Candidates per greedy k-means++ step: scikit-learn's default ``2 + int(log(k))``."""
    return 2 + int(math.log(k))


@partial(jax.jit, static_argnames=("mesh", "n", "k", "trials", "impl"))
def _seed(x, key_data, *, mesh, n, k, trials=1, impl=None):
    # The key travels as its raw data: a typed key cannot be placed on a mesh spanning
    # processes (that goes through NumPy), its data can.
    key = jax.random.wrap_key_data(key_data, impl=impl)
    if trials == 1:
        body = partial(_seed_body, n=n, k=k)
    else:
        body = partial(_greedy_seed_body, n=n, k=k, trials=trials)
    return on_mesh(body, mesh, (ROWS, ALL), (ALL, ALL))(x, key)


def _check_init(init) -> None:
    if init not in _INITS:
        raise ValueError(f"init must be one of {_INITS}, got {init!r}")


def _trials(init: str, k: int) -> int:
    return greedy_trials(k) if init == "greedy" else 1


def _seeds_checked(x, k, key, mesh, init="kmeans++", n=None):
    """``(seeds, centroids, x as placed)`` for validated arguments (``n``: real rows)."""
    xs = on_rows(x, mesh, 0)
    n = x.shape[0] if n is None else n
    data = replicate(jax.random.key_data(key), mesh)
    impl = str(jax.random.key_impl(key))
    seeds, rows = _seed(xs, data, mesh=mesh, n=n, k=k, trials=_trials(init, k), impl=impl)
    return seeds, rows, xs


def kmeans_plusplus(
    x, n_clusters: int, key, *, init: str = "kmeans++", mesh=None, n: int | None = None
) -> jax.Array:
    """k-means++ seeds: int32 ``[n_clusters]`` distinct row indices of ``x``, deterministic for
    ``key``. ``init="greedy"`` draws ``greedy_trials(n_clusters)`` candidates per seed and keeps
    the one that lowers the potential most (scikit-learn's default seeding). With ``mesh`` (a 1-D
    ``jax.sharding.Mesh``) the rows are sharded over its devices and the same uniforms are
    drawn. ``n``: with ``mesh``, the real rows of an ``x`` already padded by ``shard_rows``
    (padding rows are never drawn)."""
    key = as_key(key)
    _check_init(init)
    x = as_float_matrix(x, "x")
    n = real_rows(x, n, mesh)
    k = _check_clusters(n_clusters, n)
    return _seeds_checked(x, k, key, mesh, init, n)[0]


# --------------------------------------------------------------------------- Lloyd


def _assign_rows(x, centroids, n, block, axis):
    """Nearest centroid of each row this device holds; ``-1`` for padding rows."""
    a = assign(x, centroids, block)
    if collective.axis_size(axis) * x.shape[0] != n:
        a = jnp.where(collective.row_ids(x.shape[0], axis) < n, a, -1)
    return a


def _lloyd(state, x, max_steps, num_iters, *, mesh, n, block_size):
    body = partial(lloyd_loop, n=n, block_size=block_size)
    specs = (_STATE_SPECS, ROWS, ALL, ALL)
    return on_mesh(body, mesh, specs, _STATE_SPECS)(state, x, max_steps, num_iters)


_run = jax.jit(_lloyd, static_argnames=("mesh", "n", "block_size"))
# ``kmeans``' own run: its state is internal, so the result takes the state's buffers (the
# [k, d] centroids held once less per device: wide rows read per process are short of memory).
_run_own_state = jax.jit(_lloyd, static_argnames=("mesh", "n", "block_size"), donate_argnums=0)


def _assign_body(x, centroids, *, n, block_size, axis):
    block = assign_block_rows(centroids.shape[0], x.shape[0], block_size, x.shape[1])
    return _assign_rows(x, centroids, n, block, axis)


@partial(jax.jit, static_argnames=("mesh", "n", "block_size"))
def _final_assign(x, centroids, *, mesh, n, block_size):
    body = partial(_assign_body, n=n, block_size=block_size)
    return on_mesh(body, mesh, (ROWS, ALL), ROWS)(x, centroids)


def _new_state(centroids, n: int) -> KMeansState:
    return KMeansState(
        centroids,
        jnp.full((n,), -1, jnp.int32),
        jnp.zeros((), jnp.int32),
        jnp.ones((), bool),
    )


def _run_checked(state, xs, n, max_steps, num_iters, block_size, mesh, own_state=False):
    """``kmeans_run`` on ``xs`` (``x`` as placed): the state placed, run, unpadded
    (``own_state``: ``state`` is the caller's no longer, its buffers are reused)."""
    max_steps = jnp.asarray(max_steps, jnp.int32)
    num_iters = jnp.asarray(num_iters, jnp.int32)
    if mesh is not None:
        state = KMeansState(
            replicate(state.centroids, mesh),
            shard_rows(state.assignment, mesh, fill=-1),
            replicate(jnp.asarray(state.iteration, jnp.int32), mesh),
            replicate(jnp.asarray(state.changed, bool), mesh),
        )
        max_steps, num_iters = replicate(max_steps, mesh), replicate(num_iters, mesh)
    run = _run_own_state if own_state else _run
    out = run(state, xs, max_steps, num_iters, mesh=mesh, n=n, block_size=block_size)
    return out._replace(assignment=unpad(out.assignment, n))


def _assign_checked(xs, n, centroids, block_size, mesh):
    a = _final_assign(xs, replicate(centroids, mesh), mesh=mesh, n=n, block_size=block_size)
    return unpad(a, n)


def kmeans_init(
    x,
    n_clusters: int,
    key,
    *,
    metric: str = "euclidean",
    block_size: int | None = None,
    init: str = "kmeans++",
    mesh=None,
    n: int | None = None,
) -> KMeansState:
    """Initial state: k-means++ seeds from ``key`` as centroids, no assignment yet.

    Args:
      x: Array ``[n, d]``, floating.
      n_clusters: ``1 <= n_clusters <= n`` (static).
      key: a ``jax.random.key``.
      metric: ``"euclidean"`` or ``"sqeuclidean"`` (same clusters).
      block_size: accepted for symmetry with ``kmeans_run``.
      init: ``"kmeans++"`` (one candidate per seed) or ``"greedy"`` (greedy k-means++, see
        ``kmeans_plusplus``).
      mesh: optional 1-D ``jax.sharding.Mesh``: the seeds are drawn over rows sharded on its
        devices (the same seeds as on one device).
      n: with ``mesh``, the real rows of an ``x`` already padded and sharded by ``shard_rows``
        (e.g. read per process); ``None``: every row of ``x`` is real. The state has ``n``
        rows.

    Returns:
      A ``KMeansState``.
    """
    _check_metric(metric)
    key = as_key(key)
    _check_init(init)
    check_block_size(block_size)
    x = as_float_matrix(x, "x")
    n = real_rows(x, n, mesh)
    k = _check_clusters(n_clusters, n)
    return _new_state(_seeds_checked(x, k, key, mesh, init, n)[1], n)


def kmeans_run(
    state: KMeansState,
    x,
    *,
    num_iters: int = 100,
    max_steps: int | None = None,
    block_size: int | None = None,
    mesh=None,
    n: int | None = None,
) -> KMeansState:
    """Continues ``state`` for at most ``max_steps`` more Lloyd iterations (traced: chunked runs
    do not recompile and equal one run exactly), up to ``num_iters`` in all or convergence.
    With ``mesh`` (a 1-D ``jax.sharding.Mesh``) the rows are sharded over its devices and the
    per-cluster sums are ``psum``ed; a state from any device count (or none) continues.
    ``n``: with ``mesh``, the real rows of an ``x`` already padded by ``shard_rows`` (the state
    has ``n`` rows)."""
    x = as_float_matrix(x, "x")
    n = real_rows(x, n, mesh)
    num_iters = _check_iters(num_iters)
    block_size = check_block_size(block_size)
    if state.assignment.shape[0] != n or state.centroids.shape[1] != x.shape[1]:
        raise ValueError(
            f"state was made for {state.assignment.shape[0]} points of width "
            f"{state.centroids.shape[1]} but x has shape {tuple(x.shape)}"
        )
    if max_steps is None:
        max_steps = num_iters
    if isinstance(max_steps, int) and max_steps < 0:
        raise ValueError(f"max_steps must be >= 0, got {max_steps}")
    xs = on_rows(x, mesh, 0)
    return _run_checked(state, xs, n, max_steps, num_iters, block_size, mesh)


def kmeans_assign(
    x, centroids, *, block_size: int | None = None, mesh=None, n: int | None = None
) -> jax.Array:
    """Nearest centroid of each row (lowest index on ties): int32 ``[n]``, ``[block, k]`` at a
    time (on each device of ``mesh`` if given: no communication). ``n``: with ``mesh``, the
    real rows of an ``x`` already padded by ``shard_rows`` (only those are returned)."""
    x = as_float_matrix(x, "x")
    n = real_rows(x, n, mesh)
    centroids = as_float_matrix(centroids, "centroids")
    if centroids.shape[1] != x.shape[1] or centroids.shape[0] < 1:
        raise ValueError(
            f"centroids must be [k >= 1, {x.shape[1]}], got shape {tuple(centroids.shape)}"
        )
    block_size = check_block_size(block_size)
    return _assign_checked(on_rows(x, mesh, 0), n, centroids, block_size, mesh)


def kmeans_compile(
    x,
    n_clusters: int,
    key,
    *,
    block_size: int | None = None,
    init: str = "kmeans++",
    mesh=None,
    n: int | None = None,
) -> None:
    """Compiles the programs ``kmeans(x, n_clusters, key, ...)`` runs, without running them.

    For a caller short of memory: an XLA:CPU compile holds transient host memory (about 60 MB
    per k-means program, measured), so rows read afterwards (e.g. each process its own rows of a
    store) never have it on top of them. The next ``kmeans`` call with the same shapes and
    settings runs these programs (until ``jax.clear_caches()``). Nothing else changes.

    Args:
      x: the rows, or a ``jax.ShapeDtypeStruct`` of them as ``kmeans`` will get them (with
        ``mesh``: padded by ``shard_rows``, with its row sharding).
      n_clusters: as for ``kmeans``.
      key: as for ``kmeans`` (only its kind matters).
      block_size: as for ``kmeans``.
      init: as for ``kmeans``.
      mesh: as for ``kmeans``.
      n: as for ``kmeans``.
    """
    key = as_key(key)
    _check_init(init)
    block_size = check_block_size(block_size)
    if len(getattr(x, "shape", ())) != 2 or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x must be [n, d] floating rows, got {x!r}")
    n = real_rows(x, n, mesh)
    k = _check_clusters(n_clusters, n)
    data = jax.random.key_data(key)
    rows_spec = vec_spec = all_spec = None  # without a mesh: no sharding
    if mesh is not None:  # as shard_rows (rows), replicate (all) and the state's ROWS place them
        axis, _ = mesh_axis(mesh)
        spec = jax.sharding.PartitionSpec
        rows_spec = jax.sharding.NamedSharding(mesh, spec(axis, None))
        vec_spec = jax.sharding.NamedSharding(mesh, spec(axis))
        all_spec = jax.sharding.NamedSharding(mesh, spec())

    like = lambda shape, dtype, sharding: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)  # noqa: E731
    xs = like(x.shape, x.dtype, rows_spec)
    acc = accum_dtype(x.dtype)
    state = KMeansState(
        like((k, x.shape[1]), acc, all_spec),
        like((x.shape[0],), jnp.int32, vec_spec),
        like((), jnp.int32, all_spec),
        like((), jnp.bool_, all_spec),
    )
    scalar = like((), jnp.int32, all_spec)
    impl = str(jax.random.key_impl(key))
    trials = _trials(init, k)
    _seed.lower(
        xs, like(data.shape, data.dtype, all_spec), mesh=mesh, n=n, k=k, trials=trials, impl=impl
    ).compile()
    _run_own_state.lower(state, xs, scalar, scalar, mesh=mesh, n=n, block_size=block_size).compile()
    _final_assign.lower(xs, state.centroids, mesh=mesh, n=n, block_size=block_size).compile()


def kmeans(
    x,
    n_clusters: int,
    key,
    *,
    num_iters: int = 100,
    metric: str = "euclidean",
    block_size: int | None = None,
    init: str = "kmeans++",
    mesh=None,
    n: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Exact k-means (Lloyd) from k-means++ seeds drawn from ``key``.

    Args:
      x: Array ``[n, d]``, floating (float32, bfloat16, float16; accumulation in float32).
      n_clusters: number of clusters, ``1 <= n_clusters <= n``.
      key: a ``jax.random.key``; same key, same result.
      num_iters: at most this many Lloyd iterations (stops earlier on convergence).
      metric: ``"euclidean"`` or ``"sqeuclidean"``.
      block_size: rows assigned at once (``[n_clusters, block_size]`` scores); ``None`` picks
        blocks of at most 64K values, 128 to 512 rows (cache-sized).
      init: ``"kmeans++"`` (default) or ``"greedy"``: greedy k-means++, ``2 + int(log k)``
        candidates per seed, the one lowering the potential most kept (scikit-learn's seeding).
      mesh: optional 1-D ``jax.sharding.Mesh`` (e.g. ``kernels.make_mesh()``): rows are sharded
        over its devices; assignments are local, the per-cluster sums and counts ``psum``ed.
        The seeds equal the single-device ones; the centroids may differ in their last bits
        (another order of the additions), so a point within rounding of a boundary between two
        clusters can be assigned differently.
      n: with ``mesh``, the real rows of an ``x`` already padded and sharded by ``shard_rows``
        (e.g. read per process from a store: never gathered on one process); the padding rows
        are never drawn, assigned or summed, and the result equals the call on the ``n`` rows
        unpadded, bit for bit. ``None``: every row of ``x`` is real.

    Returns:
      ``(centroids float32 [n_clusters, d], assignment int32 [n])``; the assignment is to the
      nearest returned centroid (lowest index on ties).
    """
    _check_metric(metric)
    key = as_key(key)
    _check_init(init)
    block_size = check_block_size(block_size)
    x = as_float_matrix(x, "x")
    n = real_rows(x, n, mesh)
    k = _check_clusters(n_clusters, n)
    num_iters = _check_iters(num_iters)
    _, centroids, xs = _seeds_checked(x, k, key, mesh, init, n)
    state = _new_state(centroids, n)
    state = _run_checked(state, xs, n, num_iters, num_iters, block_size, mesh, own_state=True)
    return state.centroids, _assign_checked(xs, n, state.centroids, block_size, mesh)
