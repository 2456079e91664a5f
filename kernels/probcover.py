"""ProbCover (Yehuda et al., 2022): greedy maximum coverage of the radius-``delta`` ball graph.

Point ``i`` *covers* every point within Euclidean distance ``delta`` of it (itself included).
Greedy max coverage: each step takes, among the points not chosen yet, the one covering the most
points not covered yet (its *degree*); ties go to the larger ball (more points within ``delta``
in all, i.e. the denser region), then to the lowest index. Once everything is covered (every
degree 0), the remaining picks are the densest points not chosen yet, by the same rule.

Exact, with O(N) state and no graph stored: the ball sizes are one blocked pass over all pairs
(``[block, n]`` distances at a time, ``O(n^2 d)`` once); after a pick ``c``, the points it newly
covers, ``U``, are found with one mat-vec, and every degree drops by the number of points of
``U`` in its ball, computed ``[n, chunk]`` at a time: ``O(n |U| d)`` per step, ``O(n^2 d)`` over
the whole run since each point is newly covered once.

Ball membership compares squared distances with ``delta^2`` (``|a|^2 + |b|^2 - 2 a.b``, float32
accumulation); a pair within rounding of the radius may count on either side.

One body for one device and a mesh (``kernels.collective``). With ``mesh=`` the rows of ``x`` and
of the state are sharded over a 1-D mesh; padding rows are ``taken`` and ``covered`` from the
start (never chosen, never counted). Ball sizes and degrees fold every device's rows past every
device (``fold_all_rows``); after a pick, each device's newly covered rows are ``all_gather``-ed
``chunk`` at a time, so every degree drops by the newly covered points of all devices. Counts are
integers, so on a mesh the indices equal one device's wherever the squared distances compare with
``delta^2`` the same way (always on data whose distances are exact; on floats, up to a pair
within rounding of the radius, as above).

``probcover_radius`` gives a data-driven ``delta``: a quantile of the distance from each point
to its ``num_neighbors``-th nearest neighbour (on up to ``max_points`` rows spread over ``x``).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import collective
from ._checks import (
    as_float_matrix,
    check_block_size,
    check_k,
    check_run_args,
    check_same_width,
)
from .distance import auto_block, block_rank_distances, fold_row_blocks, row_aux
from .sharding import ALL, ROWS, on_mesh, replicate, shard_rows, unpad

__all__ = [
    "ProbCoverState",
    "probcover",
    "probcover_init",
    "probcover_radius",
    "probcover_run",
    "probcover_step",
]

_BIG = jnp.iinfo(jnp.int32).max


class ProbCoverState(NamedTuple):
    """State of a ProbCover run.

    Attributes:
      degree: int32 ``[n]`` points not covered yet within ``delta`` of each point.
      ball_size: int32 ``[n]`` points within ``delta`` of each point (tie-break: denser first).
      covered: bool ``[n]`` points within ``delta`` of a chosen point or an anchor.
      taken: bool ``[n]`` chosen points.
      selected: int32 ``[k]`` chosen indices in order; ``-1`` where not chosen yet.
      count: int32 scalar.
      radius: float32 scalar, ``delta``.
    """

    degree: jax.Array
    ball_size: jax.Array
    covered: jax.Array
    taken: jax.Array
    selected: jax.Array
    count: jax.Array
    radius: jax.Array


_STATE_SPECS = ProbCoverState(ROWS, ROWS, ROWS, ROWS, ALL, ALL, ALL)


def _check_radius(radius) -> float:
    if isinstance(radius, bool) or not isinstance(radius, (int, float)):
        raise TypeError(f"radius must be a positive float, got {radius!r}")
    if not radius > 0:
        raise ValueError(f"radius must be > 0, got {radius}")
    return float(radius)


def _ball_counts(x, aux, n, r2, block, axis, col_ok=None):
    """Per local row: how many rows of all devices (real, and ``col_ok[global index]`` when
    given) lie within ``sqrt(r2)``."""

    def fold(rows, start, fresh_from, other, other_ids, other_ok, out):
        raux = jax.lax.dynamic_slice_in_dim(aux, start, block)
        other_aux = row_aux(other, "euclidean")
        sq = block_rank_distances(rows, raux, other, other_aux, "euclidean")
        ok = other_ok if col_ok is None else other_ok & col_ok[other_ids]
        c = jnp.sum((sq <= r2) & ok[None, :], axis=1).astype(jnp.int32)
        old = jax.lax.dynamic_slice_in_dim(out, start, block)
        # Rows of the last block already counted by the previous one are not counted twice.
        fresh = (start + jnp.arange(block)) >= fresh_from
        return jax.lax.dynamic_update_slice_in_dim(out, jnp.where(fresh, old + c, old), start, 0)

    return collective.fold_all_rows(fold, x, n, axis, block, jnp.zeros((x.shape[0],), jnp.int32))


def _init_body(x, anchors, radius, *, n, k, block_size, axis):
    m = x.shape[0]
    valid = collective.row_ids(m, axis) < n
    block = auto_block(m, m, block_size)
    aux = row_aux(x, "euclidean")
    r2 = radius**2
    ball_size = jnp.where(valid, _ball_counts(x, aux, n, r2, block, axis), 0)
    # Padding rows are covered and taken from the start: never counted, never chosen.
    if anchors is None or anchors.shape[0] == 0:
        covered = ~valid
        degree = ball_size
    else:
        a_aux = row_aux(anchors, "euclidean")
        ablock = auto_block(m, anchors.shape[0], block_size)

        def fold(rows, start, fresh_from, cov):
            raux = jax.lax.dynamic_slice_in_dim(a_aux, start, ablock)
            sq = block_rank_distances(rows, raux, x, aux, "euclidean")
            return cov | jnp.any(sq <= r2, axis=0)

        covered = fold_row_blocks(fold, anchors, ablock, ~valid)
        free = ~collective.all_gather(covered, axis)  # [n] bools, indexed by global row
        degree = jnp.where(valid, _ball_counts(x, aux, n, r2, block, axis, free), 0)
    return ProbCoverState(
        degree,
        ball_size,
        covered,
        ~valid,
        jnp.full((k,), -1, jnp.int32),
        jnp.zeros((), jnp.int32),
        radius,
    )


@partial(jax.jit, static_argnames=("mesh", "n", "k", "block_size"))
def _init(x, anchors, radius, *, mesh, n, k, block_size):
    body = partial(_init_body, n=n, k=k, block_size=block_size)
    return on_mesh(body, mesh, (ROWS, ALL, ALL), _STATE_SPECS)(x, anchors, radius)


def _take(state, x, aux, chunk, axis):
    m = x.shape[0]
    ids = collective.row_ids(m, axis)
    # Most newly covered points, then the larger ball, then the lowest global index.
    free = ~state.taken
    best = collective.pmax(jnp.max(jnp.where(free, state.degree, -1)), axis)
    cand = free & (state.degree == best)
    dense = collective.pmax(jnp.max(jnp.where(cand, state.ball_size, -1)), axis)
    cand = cand & (state.ball_size == dense)
    c = collective.pmin(jnp.min(jnp.where(cand, ids, _BIG)), axis).astype(jnp.int32)
    r2 = state.radius**2
    center = collective.fetch_row(x, ids, c, axis)
    center_aux = collective.fetch_row(aux, ids, c, axis)
    ball = block_rank_distances(center[None, :], center_aux[None], x, aux, "euclidean")[0] <= r2
    newly = ball & ~state.covered
    num_new = jnp.sum(newly.astype(jnp.int32))
    # m + chunk entries (padded with m): every chunk's slice stays in range, none is shifted.
    order = jnp.nonzero(newly, size=m + chunk, fill_value=m)[0].astype(jnp.int32)

    def body(carry):
        t, degree = carry
        j = jax.lax.dynamic_slice_in_dim(order, t * chunk, chunk)
        jj = jnp.minimum(j, m - 1)
        # Every device's next chunk of newly covered rows, against this device's rows.
        rows = collective.all_gather(x[jj], axis)
        rows_aux = collective.all_gather(aux[jj], axis)
        ok = collective.all_gather(j < m, axis)
        sq = block_rank_distances(x, aux, rows, rows_aux, "euclidean")  # [m, P * chunk]
        drop = jnp.sum((sq <= r2) & ok[None, :], axis=1).astype(jnp.int32)
        return t + 1, degree - drop

    num_chunks = collective.pmax((num_new + chunk - 1) // chunk, axis)
    _, degree = jax.lax.while_loop(
        lambda c_: c_[0] < num_chunks, body, (jnp.zeros((), jnp.int32), state.degree)
    )
    return ProbCoverState(
        degree,
        state.ball_size,
        state.covered | ball,
        state.taken | (ids == c),
        state.selected.at[state.count].set(c),
        state.count + 1,
        state.radius,
    )


def _run_body(state, x, max_steps, *, chunk, axis):
    stop = jnp.minimum(state.selected.shape[0], state.count + max_steps)
    aux = row_aux(x, "euclidean")
    # `x` is closed over, not carried: a carried `x` would be copied by XLA every iteration.
    return jax.lax.while_loop(
        lambda s: s.count < stop, lambda s: _take(s, x, aux, chunk, axis), state
    )


@partial(jax.jit, static_argnames=("mesh", "chunk"))
def _run(state, x, max_steps, *, mesh, chunk):
    body = partial(_run_body, chunk=chunk)
    return on_mesh(body, mesh, (_STATE_SPECS, ROWS, ALL), _STATE_SPECS)(state, x, max_steps)


def _chunk(n: int, block_size) -> int:
    return max(1, min(n, block_size or 256))


def _unpadded(state: ProbCoverState, n: int) -> ProbCoverState:
    return state._replace(
        degree=unpad(state.degree, n),
        ball_size=unpad(state.ball_size, n),
        covered=unpad(state.covered, n),
        taken=unpad(state.taken, n),
    )


def _padded(state: ProbCoverState, mesh) -> ProbCoverState:
    """The caller's state on ``mesh``: padding rows covered and taken (never counted, chosen)."""
    return ProbCoverState(
        shard_rows(state.degree, mesh, fill=0),
        shard_rows(state.ball_size, mesh, fill=0),
        shard_rows(state.covered, mesh, fill=True),
        shard_rows(state.taken, mesh, fill=True),
        replicate(state.selected, mesh),
        replicate(jnp.asarray(state.count, jnp.int32), mesh),
        replicate(jnp.asarray(state.radius, jnp.float32), mesh),
    )


def _checked_init(x, k, radius, anchors, block_size, mesh):
    """Validated arguments -> ``(state padded for mesh, x placed on mesh, n)``."""
    radius = _check_radius(radius)
    block_size = check_block_size(block_size)
    x = as_float_matrix(x, "x")
    n = x.shape[0]
    k = check_k(k, n)
    if anchors is not None:
        anchors = as_float_matrix(anchors, "anchors")
        check_same_width(x, anchors, "x", "anchors")
        anchors = replicate(anchors, mesh)
    if mesh is not None:
        x = shard_rows(x, mesh)
    r = replicate(np.float32(radius), mesh)
    return _init(x, anchors, r, mesh=mesh, n=n, k=k, block_size=block_size), x, n


def probcover_init(
    x,
    k: int,
    radius: float,
    *,
    anchors=None,
    block_size: int | None = None,
    mesh=None,
) -> ProbCoverState:
    """Initial state: ball sizes and degrees (points already covered by ``anchors`` excluded).

    Args:
      x: Array ``[n, d]``, floating.
      k: points to choose, ``0 <= k <= n`` (static).
      radius: ``delta`` > 0, Euclidean (see :func:`probcover_radius`).
      anchors: optional ``[m, d]`` points already chosen (e.g. labelled): what they cover
        counts as covered.
      block_size: rows per block of the pairwise pass (``[block, n]`` temporaries).
      mesh: optional 1-D ``jax.sharding.Mesh``: rows sharded over its devices (the state still
        has ``n`` rows).

    Returns:
      A :class:`ProbCoverState`.
    """
    state, _, n = _checked_init(x, k, radius, anchors, block_size, mesh)
    return _unpadded(state, n)


def probcover_run(
    state: ProbCoverState,
    x,
    *,
    max_steps: int | None = None,
    block_size: int | None = None,
    mesh=None,
) -> ProbCoverState:
    """Continues ``state`` until it holds ``k`` points, or for at most ``max_steps`` more
    (traced: chunked runs do not recompile and equal one run exactly).

    Args:
      state: from :func:`probcover_init` or an earlier run.
      x: the same ``[n, d]`` array.
      max_steps: at most this many more picks (``None``: until ``k``).
      block_size: newly covered points compared with all points at once (default 256; per
        device on a mesh).
      mesh: optional 1-D ``jax.sharding.Mesh``: rows sharded over its devices; a state from any
        device count (or none) continues.

    Returns:
      The advanced :class:`ProbCoverState`.
    """
    block_size = check_block_size(block_size)
    n = state.degree.shape[0]
    x, max_steps = check_run_args(x, n, state.selected.shape[0], max_steps)
    if state.selected.shape[0] == 0:
        return state
    chunk = _chunk(n, block_size)
    if mesh is None:
        return _run(state, x, max_steps, mesh=None, chunk=chunk)
    out = _run(
        _padded(state, mesh),
        shard_rows(x, mesh),
        replicate(max_steps, mesh),
        mesh=mesh,
        chunk=chunk,
    )
    return _unpadded(out, n)


def probcover_step(state: ProbCoverState, x, *, mesh=None) -> ProbCoverState:
    """Chooses one more point (unchanged once ``k`` are chosen)."""
    return probcover_run(state, x, max_steps=1, mesh=mesh)


def probcover(
    x, k: int, radius: float, *, anchors=None, block_size: int | None = None, mesh=None
) -> jax.Array:
    """ProbCover selection: int32 ``[k]`` indices into ``x`` in selection order.

    Args:
      x: Array ``[n, d]``, floating.
      k: points to choose.
      radius: ball radius ``delta`` (Euclidean).
      anchors: optional ``[m, d]`` points already chosen.
      block_size: rows per block of the pairwise passes.
      mesh: optional 1-D ``jax.sharding.Mesh``: rows sharded over its devices; the indices equal
        the single-device ones (see the module docstring).

    Returns:
      int32 ``[k]`` distinct row indices.
    """
    state, xs, n = _checked_init(x, k, radius, anchors, block_size, mesh)
    if state.selected.shape[0] == 0:
        return state.selected
    k = state.selected.shape[0]
    steps = jnp.asarray(k, jnp.int32) if mesh is None else replicate(np.int32(k), mesh)
    return _run(state, xs, steps, mesh=mesh, chunk=_chunk(n, block_size)).selected


def _kth_body(sub, x, *, n, num_neighbors, block_size, axis):
    """Per row of ``sub`` (replicated): the distance to its ``num_neighbors``-th nearest row of
    ``x`` (all devices' rows; the row itself is its 0-th neighbour)."""
    s = sub.shape[0]
    m = x.shape[0]
    valid = collective.row_ids(m, axis) < n
    block = auto_block(m, s, block_size)
    s_aux, x_aux = row_aux(sub, "euclidean"), row_aux(x, "euclidean")
    top = num_neighbors + 1
    # Each device's `top` nearest (as many as it has); over all devices there are at least `top`
    # real ones, since n >= top.
    local_top = min(top, m)

    def fold(rows, start, fresh_from, out):
        raux = jax.lax.dynamic_slice_in_dim(s_aux, start, block)
        sq = block_rank_distances(rows, raux, x, x_aux, "euclidean")
        sq = jnp.where(valid[None, :], sq, jnp.inf)
        near = -jax.lax.top_k(-sq, local_top)[0]  # [block, local_top], ascending
        near = collective.all_gather(near.T, axis).T  # [block, P * local_top]
        kth = -jax.lax.top_k(-near, top)[0][:, num_neighbors]
        return jax.lax.dynamic_update_slice_in_dim(out, jnp.sqrt(kth), start, axis=0)

    return fold_row_blocks(fold, sub, block, jnp.zeros((s,), jnp.float32))


@partial(jax.jit, static_argnames=("mesh", "n", "num_neighbors", "block_size"))
def _kth_neighbour(sub, x, *, mesh, n, num_neighbors, block_size):
    body = partial(_kth_body, n=n, num_neighbors=num_neighbors, block_size=block_size)
    return on_mesh(body, mesh, (ALL, ROWS), ALL)(sub, x)


def probcover_radius(
    x,
    num_neighbors: int,
    *,
    quantile: float = 0.5,
    max_points: int = 2048,
    block_size: int | None = None,
    mesh=None,
) -> float:
    """A ``delta`` for ProbCover: the ``quantile`` of the distance from a point to its
    ``num_neighbors``-th nearest other point, over up to ``max_points`` rows spread evenly over
    ``x`` (against all rows; deterministic; ``[block, n]`` temporaries). With the median, half
    the points have at least ``num_neighbors`` others in their ball.

    Args:
      x: Array ``[n, d]``, floating.
      num_neighbors: ``1 <= num_neighbors < n``.
      quantile: in ``(0, 1]``.
      max_points: rows whose neighbour distance is measured.
      block_size: rows per block.
      mesh: optional 1-D ``jax.sharding.Mesh``: rows of ``x`` sharded over its devices (the
        sampled rows are on every device).

    Returns:
      The radius (a positive float; 1.0 if every such distance is 0).
    """
    x = as_float_matrix(x, "x")
    n = x.shape[0]
    if n < 2:
        return 1.0
    if isinstance(num_neighbors, bool) or not isinstance(num_neighbors, int):
        raise TypeError(f"num_neighbors must be an int, got {num_neighbors!r}")
    if not 1 <= num_neighbors < n:
        raise ValueError(f"num_neighbors must be in [1, {n - 1}], got {num_neighbors}")
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    block_size = check_block_size(block_size)
    step = max(1, n // max_points)
    xs = x if mesh is None else shard_rows(x, mesh)
    sub = replicate(x[::step][:max_points], mesh)
    d = _kth_neighbour(sub, xs, mesh=mesh, n=n, num_neighbors=num_neighbors, block_size=block_size)
    r = float(jnp.quantile(d, quantile))
    return r if r > 0 else 1.0
