"""Greedy farthest-point and closest-point selection over a nearest-neighbour table.

Semantics of goldener 7.0.0's ``GoldGreedyFarthestPointSelectionTool`` /
``GoldGreedyClosestPointSelectionTool``: each round, among the points not chosen yet, take the one
whose nearest *remaining* neighbour is farthest (isolated points first) or closest (dense points
first), lowest index on ties; it then leaves the pool.

The reference recomputes an ``R x R`` distance matrix every round (``O(k N^2 d)`` time, ``O(N^2)``
memory). Here the nearest-neighbour table is built once, blocked (``O(N^2 d)`` time,
``O(block x N)`` memory), and after each round only the points whose nearest neighbour just left
are recomputed, ``recompute_batch`` of them per pass over ``x`` — on average about one per round.

One body per program, one device or many (``kernels.collective``). With ``mesh=`` the table is
row-sharded like ``x`` (padding rows are not ``remaining`` from the start, so never chosen nor
anyone's neighbour). Building it folds every device's rows past every device
(``fold_all_rows``: a ring, a device holds its rows and one visiting block). After a pick, every
device contributes up to ``_RECOMPUTE_BATCH`` of its stale rows, the batches are
``all_gather``-ed (``O(P x batch x d)``), each device compares them with its own remaining rows,
and a (min, lowest global index) reduction gives their new neighbours.

Exactness on a mesh: the table uses the block form ``|a|^2 + |b|^2 - 2 a.b``, whose rounding (of
order ``eps |a|^2``) depends on the shape of each matrix product, and on a mesh the products are
``[block, n / P]`` instead of ``[block, n]``. The indices equal one device's whenever the
distances are exact (integer data, duplicates on different shards included) and, on random float
data, wherever no two candidates are within that rounding of each other. Closest point on float
data is the sensitive case: it ranks the smallest neighbour distances, where unrelated pairs can
lie within rounding of each other.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import collective
from ._checks import as_float_matrix, check_block_size, check_k, check_metric, check_run_args
from .distance import auto_block, block_rank_distances, row_aux
from .sharding import (
    ALL,
    ROWS,
    on_mesh,
    on_rows,
    real_rows,
    replicate,
    run_rows,
    unpad,
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
# Points whose nearest neighbour left, recomputed together in one pass over `x` (per device).
_RECOMPUTE_BATCH = 16
_BIG = jnp.iinfo(jnp.int32).max


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


_STATE_SPECS = GreedyState(ROWS, ROWS, ROWS, ALL, ALL)


def _nearest(rows, rows_aux, row_ids, other, other_aux, other_ids, other_ok, metric):
    """Nearest of ``other`` (where ``other_ok``, the row itself excluded) to each of ``rows``:
    ``(rank distance, global index)``, lowest index on ties; ``inf`` where there is none."""
    d = block_rank_distances(rows, rows_aux, other, other_aux, metric)
    valid = other_ok[None, :] & (row_ids[:, None] != other_ids[None, :])
    d = jnp.where(valid, d, jnp.inf)
    j = jnp.argmin(d, axis=1).astype(jnp.int32)
    return jnp.take_along_axis(d, j[:, None], axis=1)[:, 0], other_ids[j]


def _init_body(x, *, n, k, metric, block_size, axis):
    m = x.shape[0]
    ids = collective.row_ids(m, axis)
    remaining = ids < n
    aux = row_aux(x, metric)
    block = auto_block(m, m, block_size)

    def fold(rows, start, fresh_from, other, other_ids, other_ok, tables):
        best_d, best_i = tables
        rows_aux = jax.lax.dynamic_slice_in_dim(aux, start, block)
        row_ids = ids[0] + start + jnp.arange(block, dtype=jnp.int32)
        other_aux = row_aux(other, metric)  # hoisted out of the row loop by XLA
        d, i = _nearest(rows, rows_aux, row_ids, other, other_aux, other_ids, other_ok, metric)
        old_d = jax.lax.dynamic_slice_in_dim(best_d, start, block)
        old_i = jax.lax.dynamic_slice_in_dim(best_i, start, block)
        # Visits come in any order: keep the smaller distance, then the lower index.
        take = (d < old_d) | ((d == old_d) & (i < old_i))
        return (
            jax.lax.dynamic_update_slice_in_dim(best_d, jnp.where(take, d, old_d), start, 0),
            jax.lax.dynamic_update_slice_in_dim(best_i, jnp.where(take, i, old_i), start, 0),
        )

    init = (jnp.full((m,), jnp.inf, aux.dtype), jnp.full((m,), _BIG, jnp.int32))
    nn_dist, nn_index = collective.fold_all_rows(fold, x, n, axis, block, init)
    nn_index = jnp.where(jnp.isfinite(nn_dist), nn_index, -1)
    return GreedyState(
        nn_dist, nn_index, remaining, jnp.full((k,), -1, jnp.int32), jnp.zeros((), jnp.int32)
    )


@partial(jax.jit, static_argnames=("mesh", "n", "k", "metric", "block_size"))
def _init(x, *, mesh, n, k, metric, block_size):
    body = partial(_init_body, n=n, k=k, metric=metric, block_size=block_size)
    return on_mesh(body, mesh, (ROWS,), _STATE_SPECS)(x)


def _step(state: GreedyState, x, aux, mode: str, metric: str, axis) -> GreedyState:
    m = x.shape[0]
    # Made here, not closed over by the loop: a closed-over iota becomes an [m] buffer.
    ids = collective.row_ids(m, axis)
    if mode == "farthest":
        pick, skip = collective.first_argmax, -jnp.inf
    else:
        pick, skip = collective.first_argmin, jnp.inf
    chosen = pick(jnp.where(state.remaining, state.nn_dist, skip), ids, axis)
    remaining = state.remaining & (ids != chosen)
    stale = remaining & (state.nn_index == chosen)
    batch = min(_RECOMPUTE_BATCH, m)
    me = collective.axis_index(axis)

    def refresh(carry):
        nn_dist, nn_index, stale = carry
        (slots,) = jnp.nonzero(stale, size=batch, fill_value=m)
        local = jnp.minimum(slots, m - 1)
        # Every device's batch of stale rows, compared with every device's remaining rows.
        rows = collective.all_gather(x[local], axis)  # [P * batch, d]
        rows_aux = collective.all_gather(aux[local], axis)
        row_ids = collective.all_gather(ids[local], axis)
        d, i = _nearest(rows, rows_aux, row_ids, x, aux, ids, remaining, metric)
        dmin = collective.pmin(d, axis)
        i = collective.pmin(jnp.where(d == dmin, i, _BIG), axis)
        i = jnp.where(jnp.isfinite(dmin), i, -1)
        mine_d = jax.lax.dynamic_slice_in_dim(dmin, me * batch, batch)
        mine_i = jax.lax.dynamic_slice_in_dim(i, me * batch, batch)
        # Padding slots carry the out-of-range index m and are dropped by the scatters.
        nn_dist = nn_dist.at[slots].set(mine_d, mode="drop")
        nn_index = nn_index.at[slots].set(mine_i, mode="drop")
        stale = stale.at[slots].set(False, mode="drop")
        return nn_dist, nn_index, stale

    def any_stale(carry):
        return collective.psum(jnp.sum(carry[2], dtype=jnp.int32), axis) > 0

    nn_dist, nn_index, _ = jax.lax.while_loop(
        any_stale, refresh, (state.nn_dist, state.nn_index, stale)
    )
    selected = state.selected.at[state.count].set(chosen.astype(jnp.int32))
    return GreedyState(nn_dist, nn_index, remaining, selected, state.count + 1)


def _run_body(state, x, max_steps, *, mode, metric, axis):
    stop = jnp.minimum(state.selected.shape[0], state.count + max_steps)
    aux = row_aux(x, metric)
    # `x` is closed over, not carried: a carried `x` would be copied by XLA every iteration.
    return jax.lax.while_loop(
        lambda s: s.count < stop, lambda s: _step(s, x, aux, mode, metric, axis), state
    )


@partial(jax.jit, static_argnames=("mesh", "mode", "metric"))
def _run(state, x, max_steps, *, mesh, mode, metric):
    body = partial(_run_body, mode=mode, metric=metric)
    return on_mesh(body, mesh, (_STATE_SPECS, ROWS, ALL), _STATE_SPECS)(state, x, max_steps)


def _check_mode(mode) -> None:
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")


def _unpadded(state: GreedyState, n: int) -> GreedyState:
    return state._replace(
        nn_dist=unpad(state.nn_dist, n),
        nn_index=unpad(state.nn_index, n),
        remaining=unpad(state.remaining, n),
    )


def _padded(state: GreedyState, mesh) -> GreedyState:
    """The caller's state on ``mesh``; padding rows are not remaining (never chosen)."""
    return GreedyState(
        on_rows(state.nn_dist, mesh, jnp.inf),
        on_rows(state.nn_index, mesh, -1),
        on_rows(state.remaining, mesh, False),
        replicate(state.selected, mesh),
        replicate(jnp.asarray(state.count, jnp.int32), mesh),
    )


def greedy_init(
    x,
    k: int,
    *,
    metric: str = "euclidean",
    block_size: int | None = None,
    mesh=None,
    n: int | None = None,
) -> GreedyState:
    """Builds the exact nearest-neighbour table, ``block_size`` rows against all at a time.

    With ``mesh`` (1-D ``jax.sharding.Mesh``) the rows and the table are sharded over its
    devices; the returned state has ``n`` rows either way. ``n``: with ``mesh``, the real rows
    of an ``x`` already padded by ``shard_rows`` (padding rows never a neighbour or chosen);
    ``greedy_run`` then takes the same padded ``x``."""
    check_metric(metric)
    block_size = check_block_size(block_size)
    x = as_float_matrix(x, "x")
    n = real_rows(x, n, mesh)
    k = check_k(k, n)
    xs = x if mesh is None else on_rows(x, mesh, 0)
    state = _init(xs, mesh=mesh, n=n, k=k, metric=metric, block_size=block_size)
    return _unpadded(state, n)


def greedy_step(
    state: GreedyState, x, *, mode: str = "farthest", metric: str = "euclidean", mesh=None
) -> GreedyState:
    """Chooses one point; a state that already holds ``k`` points is returned unchanged. With
    ``mesh``, the same as ``greedy_run(..., max_steps=1, mesh=mesh)``."""
    _check_mode(mode)
    if mesh is not None:
        return greedy_run(state, x, mode=mode, metric=metric, max_steps=1, mesh=mesh)
    if state.selected.shape[0] == 0:
        return state
    done = state.count >= state.selected.shape[0]
    stepped = _step(state, x, row_aux(x, metric), mode, metric, None)
    return jax.tree.map(lambda old, new: jnp.where(done, old, new), state, stepped)


def greedy_run(
    state: GreedyState,
    x,
    *,
    mode: str = "farthest",
    metric: str = "euclidean",
    max_steps: int | None = None,
    mesh=None,
) -> GreedyState:
    """Continues ``state`` until it holds ``k`` points, or for at most ``max_steps`` more
    (traced: chunked runs do not recompile and equal one run). With ``mesh`` the rows and the
    table are sharded over its devices; a state from any device count (or none) continues."""
    _check_mode(mode)
    check_metric(metric)
    n = state.nn_dist.shape[0]
    x, max_steps = check_run_args(x, run_rows(x, n, mesh), state.selected.shape[0], max_steps)
    if state.selected.shape[0] == 0:
        return state
    if mesh is None:
        return _run(state, x, max_steps, mesh=None, mode=mode, metric=metric)
    out = _run(
        _padded(state, mesh),
        on_rows(x, mesh, 0),
        replicate(max_steps, mesh),
        mesh=mesh,
        mode=mode,
        metric=metric,
    )
    return _unpadded(out, n)


def _select(x, k, mode, metric, block_size, mesh=None):
    check_metric(metric)
    x = as_float_matrix(x, "x")
    n = x.shape[0]
    k = check_k(k, n)
    if k == n:
        return jnp.arange(k, dtype=jnp.int32)
    block_size = check_block_size(block_size)
    # x is placed once and the state stays padded between the two programs.
    xs = x if mesh is None else on_rows(x, mesh, 0)
    state = _init(xs, mesh=mesh, n=n, k=k, metric=metric, block_size=block_size)
    if k == 0:
        return state.selected
    steps = jnp.asarray(k, jnp.int32) if mesh is None else replicate(np.int32(k), mesh)
    return _run(state, xs, steps, mesh=mesh, mode=mode, metric=metric).selected


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
        its devices; the indices equal the single-device ones (see the module docstring for
        float rounding).

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
