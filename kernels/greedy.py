"""Greedy farthest-point and closest-point selection over a nearest-neighbour table.

Semantics of goldener 7.0.0's ``GoldGreedyFarthestPointSelectionTool`` /
``GoldGreedyClosestPointSelectionTool``: each round, among the points not chosen yet, take the one
whose nearest *remaining* neighbour is farthest (isolated points first) or closest (dense points
first), lowest index on ties; it then leaves the pool.

The reference recomputes an ``R x R`` distance matrix every round (``O(k N^2 d)`` time, ``O(N^2)``
memory). Here the nearest-neighbour table is built once, blocked (``O(N^2 d)`` time,
``O(block x N)`` memory), and after each round only the points whose nearest neighbour just left
are recomputed, ``recompute_batch`` of them per pass over ``x`` — on average about one per round.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._checks import as_float_matrix, check_block_size, check_k, check_metric, check_run_args
from .distance import (
    auto_block,
    block_rank_distances,
    first_argmax,
    first_argmin,
    fold_row_blocks,
    row_aux,
)

__all__ = [
    "GreedyState",
    "closest_point",
    "farthest_point",
    "greedy_init",
    "greedy_run",
    "greedy_step",
]

_MODES = ("farthest", "closest")
# Points whose nearest neighbour left, recomputed together in one pass over `x`.
_RECOMPUTE_BATCH = 16


class GreedyState(NamedTuple):
    """State of a farthest / closest point run.

    Attributes:
      nn_dist: float32 ``[n]`` rank distance to the nearest remaining other point (``inf`` if none).
      nn_index: int32 ``[n]`` index of that neighbour (``-1`` if none).
      remaining: bool ``[n]``, False once a point is chosen.
      selected: int32 ``[k]`` chosen indices in order; ``-1`` where not chosen yet.
      count: int32 scalar.
    """

    nn_dist: jax.Array
    nn_index: jax.Array
    remaining: jax.Array
    selected: jax.Array
    count: jax.Array


def _nearest_neighbours(x, aux, metric, rows, row_ids, remaining):
    """Nearest remaining neighbour (other than itself) of each of ``rows``."""
    d = block_rank_distances(rows, aux[row_ids], x, aux, metric)
    valid = remaining[None, :] & (row_ids[:, None] != jnp.arange(x.shape[0])[None, :])
    d = jnp.where(valid, d, jnp.inf)
    nn_index = jnp.argmin(d, axis=1).astype(jnp.int32)
    nn_dist = jnp.take_along_axis(d, nn_index[:, None], axis=1)[:, 0]
    return nn_dist, jnp.where(jnp.isfinite(nn_dist), nn_index, -1)


@partial(jax.jit, static_argnames=("k", "metric", "block_size"))
def _init(x, *, k, metric, block_size):
    n = x.shape[0]
    aux = row_aux(x, metric)
    remaining = jnp.ones((n,), bool)
    block = auto_block(n, n, block_size)

    def fold(rows, start, fresh_from, carry):
        nn_dist, nn_index = carry
        ids = start + jnp.arange(block)
        dist, idx = _nearest_neighbours(x, aux, metric, rows, ids, remaining)
        return (
            jax.lax.dynamic_update_slice_in_dim(nn_dist, dist, start, axis=0),
            jax.lax.dynamic_update_slice_in_dim(nn_index, idx, start, axis=0),
        )

    init = (jnp.full((n,), jnp.inf, aux.dtype), jnp.full((n,), -1, jnp.int32))
    nn_dist, nn_index = fold_row_blocks(fold, x, block, init)
    return GreedyState(
        nn_dist, nn_index, remaining, jnp.full((k,), -1, jnp.int32), jnp.zeros((), jnp.int32)
    )


def greedy_init(
    x, k: int, *, metric: str = "euclidean", block_size: int | None = None
) -> GreedyState:
    """Builds the exact nearest-neighbour table, ``block_size`` rows against all at a time."""
    check_metric(metric)
    block_size = check_block_size(block_size)
    x = as_float_matrix(x, "x")
    k = check_k(k, x.shape[0])
    return _init(x, k=k, metric=metric, block_size=block_size)


def _step(state: GreedyState, x, aux, mode: str, metric: str) -> GreedyState:
    n = x.shape[0]
    if mode == "farthest":
        chosen = first_argmax(jnp.where(state.remaining, state.nn_dist, -jnp.inf))
    else:
        chosen = first_argmin(jnp.where(state.remaining, state.nn_dist, jnp.inf))
    remaining = state.remaining.at[chosen].set(False)
    stale = remaining & (state.nn_index == chosen)
    batch = min(_RECOMPUTE_BATCH, n)

    def refresh(carry):
        nn_dist, nn_index, stale = carry
        (ids,) = jnp.nonzero(stale, size=batch, fill_value=n)
        rows = jnp.minimum(ids, n - 1)
        dist, idx = _nearest_neighbours(x, aux, metric, x[rows], rows, remaining)
        # Padding slots carry the out-of-range index n and are dropped by the scatters.
        nn_dist = nn_dist.at[ids].set(dist, mode="drop")
        nn_index = nn_index.at[ids].set(idx, mode="drop")
        stale = stale.at[ids].set(False, mode="drop")
        return nn_dist, nn_index, stale

    nn_dist, nn_index, _ = jax.lax.while_loop(
        lambda c: jnp.any(c[2]), refresh, (state.nn_dist, state.nn_index, stale)
    )
    selected = state.selected.at[state.count].set(chosen.astype(jnp.int32))
    return GreedyState(nn_dist, nn_index, remaining, selected, state.count + 1)


def greedy_step(
    state: GreedyState, x, *, mode: str = "farthest", metric: str = "euclidean"
) -> GreedyState:
    """Chooses one point; a state that already holds ``k`` points is returned unchanged."""
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if state.selected.shape[0] == 0:
        return state
    done = state.count >= state.selected.shape[0]
    stepped = _step(state, x, row_aux(x, metric), mode, metric)
    return jax.tree.map(lambda old, new: jnp.where(done, old, new), state, stepped)


@partial(jax.jit, static_argnames=("mode", "metric"))
def _run(state, x, max_steps, *, mode, metric):
    stop = jnp.minimum(state.selected.shape[0], state.count + max_steps)
    aux = row_aux(x, metric)
    return jax.lax.while_loop(
        lambda s: s.count < stop, lambda s: _step(s, x, aux, mode, metric), state
    )


def greedy_run(
    state: GreedyState,
    x,
    *,
    mode: str = "farthest",
    metric: str = "euclidean",
    max_steps: int | None = None,
) -> GreedyState:
    """Continues ``state`` until it holds ``k`` points, or for at most ``max_steps`` more."""
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    check_metric(metric)
    x, max_steps = check_run_args(x, state.nn_dist.shape[0], state.selected.shape[0], max_steps)
    if state.selected.shape[0] == 0:
        return state
    return _run(state, x, max_steps, mode=mode, metric=metric)


def _select(x, k, mode, metric, block_size, mesh=None):
    check_metric(metric)
    x = as_float_matrix(x, "x")
    k = check_k(k, x.shape[0])
    if k == x.shape[0]:
        return jnp.arange(k, dtype=jnp.int32)
    if mesh is not None:
        from .sharding import sharded_greedy_select

        return sharded_greedy_select(
            x, k, mesh=mesh, mode=mode, metric=metric, block_size=check_block_size(block_size)
        )
    state = _init(x, k=k, metric=metric, block_size=check_block_size(block_size))
    if k == 0:
        return state.selected
    return _run(state, x, jnp.asarray(k, jnp.int32), mode=mode, metric=metric).selected


def farthest_point(
    x, k: int, *, metric: str = "euclidean", block_size: int | None = None, mesh=None
) -> jax.Array:
    """Greedy farthest-point selection: isolated points first.

    Args:
      x: Array of shape ``[n, d]``, floating.
      k: number of points, ``0 <= k <= n``; ``k == n`` returns ``arange(n)``.
      metric: ``"euclidean"``, ``"sqeuclidean"`` or ``"cosine"``.
      block_size: rows compared against all rows at once when building the neighbour table.
      mesh: optional 1-D ``jax.sharding.Mesh``: rows (and the neighbour table) are sharded over
        its devices (``kernels.sharding``); the indices equal the single-device ones.

    Returns:
      int32 array of shape ``[k]``, indices in selection order.
    """
    return _select(x, k, "farthest", metric, block_size, mesh)


def closest_point(
    x, k: int, *, metric: str = "euclidean", block_size: int | None = None, mesh=None
) -> jax.Array:
    """Greedy closest-point selection: points in dense regions first. Arguments as
    ``farthest_point``."""
    return _select(x, k, "closest", metric, block_size, mesh)
