"""Exact greedy k-center with O(N) extra memory, as explicit state.

``greedy_k_center`` follows goldener 7.0.0's ``GoldGreedyKCenterSelectionTool``: without anchors
the first center is the point with the largest root-sum-square distance to all points (for the
Euclidean metrics that is the point farthest from the mean, found in one pass); then each step
takes the point farthest from its nearest center. With anchors (points chosen earlier, e.g. a
labelled set) the running minimum starts at the distance to the nearest anchor and ``k`` new
points are chosen. Ties go to the lowest index.

Fixed with respect to the reference: ``k == 0`` selects nothing; a selected point is never
selected again (its running minimum is ``-inf``), even when the data has exact duplicates; and no
``N x N`` (or ``N x k``) matrix is ever built.

The state is a ``NamedTuple`` of arrays (what a checkpoint saves); ``kcenter_run`` continues any
state, so resuming is restore-and-continue.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._checks import (
    as_float_matrix,
    check_block_size,
    check_k,
    check_metric,
    check_run_args,
    check_same_width,
)
from .distance import (
    ROW_BLOCK_BUDGET,
    PointStats,
    accum_dtype,
    auto_block,
    block_rank_distances,
    first_argmax,
    fold_row_blocks,
    point_rank_distances,
    point_stats,
    row_aux,
    to_metric,
)

__all__ = [
    "KCenterState",
    "greedy_k_center",
    "kcenter_coverage_radius",
    "kcenter_init",
    "kcenter_run",
    "kcenter_step",
]


class KCenterState(NamedTuple):
    """State of a greedy k-center run.

    Attributes:
      min_dist: float32 ``[n]`` rank distance (squared for the Euclidean metrics) from each point
        to its nearest center or anchor; ``-inf`` for selected points.
      selected: int32 ``[k]`` chosen indices in selection order; ``-1`` where not chosen yet.
      count: int32 scalar, how many centers are chosen.
    """

    min_dist: jax.Array
    selected: jax.Array
    count: jax.Array


def _seed_scores(x: jax.Array, stats: PointStats, metric: str, block: int) -> jax.Array:
    """Per point, a value ordered like the root-sum-square distance to all points, in O(N d^2).

    Euclidean: ``sum_j |x_i - x_j|^2 = n |x_i - mean|^2 + const``, so the score is
    ``|x_i - mean|^2``. Cosine, with unit rows ``u`` (zero rows stay zero):
    ``sum_j (1 - u_i.u_j)^2 = n - 2 u_i.s + u_i^T G u_i`` with ``s = sum_j u_j``, ``G = U^T U``.
    """
    n, d = x.shape
    acc = accum_dtype(x.dtype)
    if metric != "cosine":
        mean = jnp.sum(x.astype(acc), axis=0) / n
        if jnp.dtype(x.dtype).itemsize >= 4:
            return stats.sq  # already |x_i - mean|^2
        return jnp.sum(jnp.square(x.astype(acc) - mean), axis=1)  # once, elementwise: exact

    inv = row_aux(x, "cosine")

    def accumulate(rows, start, fresh_from, carry):
        s, gram = carry
        fresh = (start + jnp.arange(block)) >= fresh_from
        w = jnp.where(fresh, jax.lax.dynamic_slice_in_dim(inv, start, block), 0)
        u = rows.astype(acc) * w[:, None]
        return s + jnp.sum(u, axis=0), gram + jnp.dot(u.T, u, precision=jax.lax.Precision.HIGHEST)

    s, gram = fold_row_blocks(accumulate, x, block, (jnp.zeros((d,), acc), jnp.zeros((d, d), acc)))

    def score_block(rows, start, fresh_from, scores):
        u = rows.astype(acc) * jax.lax.dynamic_slice_in_dim(inv, start, block)[:, None]
        ug = jnp.dot(u, gram, precision=jax.lax.Precision.HIGHEST)
        sc = n - 2.0 * (u @ s) + jnp.sum(ug * u, axis=1)
        return jax.lax.dynamic_update_slice_in_dim(scores, sc, start, axis=0)

    return fold_row_blocks(score_block, x, block, jnp.zeros((n,), acc))


def _nearest_anchor(x: jax.Array, anchors: jax.Array, metric: str, block: int) -> jax.Array:
    """Rank distance from each row of ``x`` to its nearest anchor; ``[n, block]`` at a time."""
    x_aux = row_aux(x, metric)
    a_aux = row_aux(anchors, metric)
    init = jnp.full((x.shape[0],), jnp.inf, x_aux.dtype)

    def fold(rows, start, fresh_from, best):
        aux = jax.lax.dynamic_slice_in_dim(a_aux, start, block)
        d = block_rank_distances(x, x_aux, rows, aux, metric)  # [n, block]
        return jnp.minimum(best, jnp.min(d, axis=1))

    return fold_row_blocks(fold, anchors, block, init)


def _take(
    state: KCenterState, x: jax.Array, stats: PointStats, index: jax.Array, metric: str
) -> KCenterState:
    d = point_rank_distances(x, stats, x[index], metric).astype(state.min_dist.dtype)
    min_dist = jnp.minimum(state.min_dist, d).at[index].set(-jnp.inf)
    selected = state.selected.at[state.count].set(index.astype(jnp.int32))
    return KCenterState(min_dist, selected, state.count + 1)


@partial(jax.jit, static_argnames=("k", "metric", "block_size"))
def _init(x, anchors, *, k, metric, block_size):
    n = x.shape[0]
    acc = accum_dtype(x.dtype)
    selected = jnp.full((k,), -1, jnp.int32)
    count = jnp.zeros((), jnp.int32)
    if anchors is not None and anchors.shape[0] > 0:
        block = auto_block(n, anchors.shape[0], block_size)
        min_dist = _nearest_anchor(x, anchors, metric, block)
        return KCenterState(min_dist.astype(acc), selected, count)
    state = KCenterState(jnp.full((n,), jnp.inf, acc), selected, count)
    if k == 0:
        return state
    block = auto_block(x.shape[1], n, budget=ROW_BLOCK_BUDGET)
    stats = point_stats(x, metric)
    seed = first_argmax(_seed_scores(x, stats, metric, block))
    return _take(state, x, stats, seed, metric)


def kcenter_init(
    x,
    k: int,
    *,
    metric: str = "euclidean",
    anchors=None,
    block_size: int | None = None,
    mesh=None,
) -> KCenterState:
    """Initial state: nearest-anchor distances, or the first center chosen when there are none.

    Args:
      x: Array of shape ``[n, d]``, floating.
      k: number of centers to choose, ``0 <= k <= n`` (static: it sets the state's shape).
      metric: ``"euclidean"``, ``"sqeuclidean"`` (same choices as ``"euclidean"``) or ``"cosine"``.
      anchors: optional array ``[a, d]`` of points already chosen; never returned.
      block_size: anchor rows compared at once (``[n, block_size]`` temporary values).
      mesh: optional 1-D ``jax.sharding.Mesh``: rows of ``x`` are sharded over its devices
        (``kernels.sharding``); the state's ``min_dist`` still has length ``n``.

    Returns:
      A ``KCenterState``.
    """
    check_metric(metric)
    block_size = check_block_size(block_size)
    x = as_float_matrix(x, "x")
    k = check_k(k, x.shape[0])
    if anchors is not None:
        anchors = as_float_matrix(anchors, "anchors")
        check_same_width(x, anchors, "x", "anchors")
    if mesh is not None:
        from .sharding import sharded_kcenter_init

        return sharded_kcenter_init(
            x, k, mesh=mesh, metric=metric, anchors=anchors, block_size=block_size
        )[0]
    return _init(x, anchors, k=k, metric=metric, block_size=block_size)


def kcenter_step(
    state: KCenterState, x, *, metric: str = "euclidean", stats: PointStats | None = None
) -> KCenterState:
    """Chooses one more center: the point farthest from its nearest center (lowest index on ties).

    A state that already holds ``k`` centers is returned unchanged. One pass over ``x`` when
    ``stats`` (``point_stats(x, metric)``, computed once per run) is given, two otherwise.
    """
    if state.selected.shape[0] == 0:
        return state
    if stats is None:
        stats = point_stats(x, metric)
    done = state.count >= state.selected.shape[0]
    index = first_argmax(state.min_dist)
    stepped = _take(state, x, stats, index, metric)
    return jax.tree.map(lambda old, new: jnp.where(done, old, new), state, stepped)


@partial(jax.jit, static_argnames=("metric",))
def _run(state, x, max_steps, *, metric):
    k = state.selected.shape[0]
    stop = jnp.minimum(k, state.count + max_steps)

    stats = point_stats(x, metric)

    # `x` is closed over, not carried: a carried `x` would be copied by XLA every iteration.
    def body(s):
        return _take(s, x, stats, first_argmax(s.min_dist), metric)

    return jax.lax.while_loop(lambda s: s.count < stop, body, state)


def kcenter_run(
    state: KCenterState,
    x,
    *,
    metric: str = "euclidean",
    max_steps: int | None = None,
    mesh=None,
) -> KCenterState:
    """Continues ``state`` until it holds ``k`` centers, or for at most ``max_steps`` more.

    ``max_steps`` is a traced value: changing it does not recompile, so a caller can run in
    chunks and checkpoint the state between them. With ``mesh`` (a 1-D ``jax.sharding.Mesh``)
    the rows are sharded over its devices; a state from any device count (or none) continues.
    """
    check_metric(metric)
    x, max_steps = check_run_args(x, state.min_dist.shape[0], state.selected.shape[0], max_steps)
    if state.selected.shape[0] == 0:
        return state
    if mesh is not None:
        from .sharding import sharded_kcenter_run

        return sharded_kcenter_run(state, x, max_steps, mesh=mesh, metric=metric)
    return _run(state, x, max_steps, metric=metric)


def kcenter_coverage_radius(state: KCenterState, *, metric: str = "euclidean") -> jax.Array:
    """Largest distance from an unselected point to its nearest center (the k-center objective)."""
    return to_metric(jnp.maximum(jnp.max(state.min_dist, initial=0.0), 0.0), metric)


def greedy_k_center(
    x,
    k: int,
    *,
    metric: str = "euclidean",
    anchors=None,
    block_size: int | None = None,
    mesh=None,
) -> jax.Array:
    """Greedy k-center selection (Gonzalez), exact, in O(N) extra memory.

    Args:
      x: Array of shape ``[n, d]``, floating (float32, bfloat16, float16).
      k: number of points to choose, ``0 <= k <= n``.
      metric: ``"euclidean"``, ``"sqeuclidean"`` or ``"cosine"``.
      anchors: optional ``[a, d]`` points already chosen (e.g. labelled): they count as centers,
        and ``k`` new points of ``x`` are chosen.
      block_size: anchor rows compared at once when computing nearest-anchor distances.
      mesh: optional 1-D ``jax.sharding.Mesh`` (e.g. ``kernels.make_mesh()``): rows of ``x``
        are sharded over its devices and each step exchanges ``O(P + d)`` values
        (``kernels.sharding``); the indices equal the single-device ones.

    Returns:
      int32 array of shape ``[k]``: indices into ``x`` in selection order. ``k == n`` returns
      ``arange(n)``, as the reference does.
    """
    check_metric(metric)
    x = as_float_matrix(x, "x")
    k = check_k(k, x.shape[0])
    if k == x.shape[0]:
        if anchors is not None:
            anchors = as_float_matrix(anchors, "anchors")
            check_same_width(x, anchors, "x", "anchors")
        return jnp.arange(k, dtype=jnp.int32)
    block_size = check_block_size(block_size)
    if anchors is not None:
        anchors = as_float_matrix(anchors, "anchors")
        check_same_width(x, anchors, "x", "anchors")
    # Validated once here (each check is a pass over x); the internals take it from here.
    if mesh is not None:
        from .sharding import sharded_kcenter_init, sharded_kcenter_run

        state, xs = sharded_kcenter_init(
            x, k, mesh=mesh, metric=metric, anchors=anchors, block_size=block_size
        )
        if k == 0:
            return state.selected
        return sharded_kcenter_run(state, x, k, mesh=mesh, metric=metric, xs=xs).selected
    state = _init(x, anchors, k=k, metric=metric, block_size=block_size)
    if k == 0:
        return state.selected
    return _run(state, x, jnp.asarray(k, jnp.int32), metric=metric).selected
