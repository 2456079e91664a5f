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

``probcover_radius`` gives a data-driven ``delta``: a quantile of the distance from each point
to its ``num_neighbors``-th nearest neighbour (on up to ``max_points`` rows spread over ``x``).
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
    check_run_args,
    check_same_width,
)
from .distance import auto_block, block_rank_distances, fold_row_blocks, row_aux

__all__ = [
    "ProbCoverState",
    "probcover",
    "probcover_init",
    "probcover_radius",
    "probcover_run",
    "probcover_step",
]


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


def _check_radius(radius) -> float:
    if isinstance(radius, bool) or not isinstance(radius, (int, float)):
        raise TypeError(f"radius must be a positive float, got {radius!r}")
    if not radius > 0:
        raise ValueError(f"radius must be > 0, got {radius}")
    return float(radius)


def _ball_counts(x, aux, cols, cols_aux, col_mask, r2, block):
    """Per row of ``x``: how many columns with ``col_mask`` lie within ``sqrt(r2)``."""
    n = x.shape[0]

    def fold(rows, start, fresh_from, out):
        raux = jax.lax.dynamic_slice_in_dim(aux, start, block)
        sq = block_rank_distances(rows, raux, cols, cols_aux, "euclidean")
        c = jnp.sum((sq <= r2) & col_mask[None, :], axis=1).astype(jnp.int32)
        return jax.lax.dynamic_update_slice_in_dim(out, c, start, axis=0)

    return fold_row_blocks(fold, x, block, jnp.zeros((n,), jnp.int32))


@partial(jax.jit, static_argnames=("k", "block_size"))
def _init(x, anchors, radius, *, k, block_size):
    n = x.shape[0]
    block = auto_block(n, n, block_size)
    aux = row_aux(x, "euclidean")
    r2 = jnp.asarray(radius, jnp.float32) ** 2
    ball_size = _ball_counts(x, aux, x, aux, jnp.ones((n,), bool), r2, block)
    if anchors is None or anchors.shape[0] == 0:
        covered = jnp.zeros((n,), bool)
        degree = ball_size
    else:
        a_aux = row_aux(anchors, "euclidean")
        ablock = auto_block(n, anchors.shape[0], block_size)

        def fold(rows, start, fresh_from, cov):
            raux = jax.lax.dynamic_slice_in_dim(a_aux, start, ablock)
            sq = block_rank_distances(rows, raux, x, aux, "euclidean")
            return cov | jnp.any(sq <= r2, axis=0)

        covered = fold_row_blocks(fold, anchors, ablock, jnp.zeros((n,), bool))
        degree = _ball_counts(x, aux, x, aux, ~covered, r2, block)
    return ProbCoverState(
        degree,
        ball_size,
        covered,
        jnp.zeros((n,), bool),
        jnp.full((k,), -1, jnp.int32),
        jnp.zeros((), jnp.int32),
        jnp.asarray(radius, jnp.float32),
    )


def probcover_init(
    x,
    k: int,
    radius: float,
    *,
    anchors=None,
    block_size: int | None = None,
) -> ProbCoverState:
    """Initial state: ball sizes and degrees (points already covered by ``anchors`` excluded).

    Args:
      x: Array ``[n, d]``, floating.
      k: points to choose, ``0 <= k <= n`` (static).
      radius: ``delta`` > 0, Euclidean (see :func:`probcover_radius`).
      anchors: optional ``[m, d]`` points already chosen (e.g. labelled): what they cover
        counts as covered.
      block_size: rows per block of the pairwise pass (``[block, n]`` temporaries).

    Returns:
      A :class:`ProbCoverState`.
    """
    radius = _check_radius(radius)
    block_size = check_block_size(block_size)
    x = as_float_matrix(x, "x")
    k = check_k(k, x.shape[0])
    if anchors is not None:
        anchors = as_float_matrix(anchors, "anchors")
        check_same_width(x, anchors, "x", "anchors")
    return _init(x, anchors, radius, k=k, block_size=block_size)


def _take(state, x, aux, chunk):
    n = x.shape[0]
    ids = jnp.arange(n, dtype=jnp.int32)
    free = ~state.taken
    best = jnp.max(jnp.where(free, state.degree, -1))
    cand = free & (state.degree == best)
    dense = jnp.max(jnp.where(cand, state.ball_size, -1))
    cand = cand & (state.ball_size == dense)
    c = jnp.min(jnp.where(cand, ids, n)).astype(jnp.int32)
    r2 = state.radius**2
    ball = block_rank_distances(x[c][None, :], aux[c][None], x, aux, "euclidean")[0] <= r2
    newly = ball & ~state.covered
    num_new = jnp.sum(newly.astype(jnp.int32))
    # n + chunk entries (padded with n): every chunk's slice stays in range, none is shifted.
    order = jnp.nonzero(newly, size=n + chunk, fill_value=n)[0].astype(jnp.int32)

    def body(carry):
        t, degree = carry
        j = jax.lax.dynamic_slice_in_dim(order, t * chunk, chunk)
        valid = j < n
        jj = jnp.minimum(j, n - 1)
        sq = block_rank_distances(x, aux, x[jj], aux[jj], "euclidean")  # [n, chunk]
        drop = jnp.sum((sq <= r2) & valid[None, :], axis=1).astype(jnp.int32)
        return t + 1, degree - drop

    num_chunks = (num_new + chunk - 1) // chunk
    _, degree = jax.lax.while_loop(
        lambda c_: c_[0] < num_chunks, body, (jnp.zeros((), jnp.int32), state.degree)
    )
    return ProbCoverState(
        degree,
        state.ball_size,
        state.covered | ball,
        state.taken.at[c].set(True),
        state.selected.at[state.count].set(c),
        state.count + 1,
        state.radius,
    )


@partial(jax.jit, static_argnames=("chunk",))
def _run(state, x, max_steps, *, chunk):
    stop = jnp.minimum(state.selected.shape[0], state.count + max_steps)
    aux = row_aux(x, "euclidean")
    return jax.lax.while_loop(lambda s: s.count < stop, lambda s: _take(s, x, aux, chunk), state)


def _chunk(n: int, block_size) -> int:
    return max(1, min(n, block_size or 256))


def probcover_run(
    state: ProbCoverState, x, *, max_steps: int | None = None, block_size: int | None = None
) -> ProbCoverState:
    """Continues ``state`` until it holds ``k`` points, or for at most ``max_steps`` more
    (traced: chunked runs do not recompile and equal one run exactly).

    Args:
      state: from :func:`probcover_init` or an earlier run.
      x: the same ``[n, d]`` array.
      max_steps: at most this many more picks (``None``: until ``k``).
      block_size: newly covered points compared with all points at once (default 256).

    Returns:
      The advanced :class:`ProbCoverState`.
    """
    block_size = check_block_size(block_size)
    x, max_steps = check_run_args(x, state.degree.shape[0], state.selected.shape[0], max_steps)
    if state.selected.shape[0] == 0:
        return state
    return _run(state, x, max_steps, chunk=_chunk(x.shape[0], block_size))


def probcover_step(state: ProbCoverState, x) -> ProbCoverState:
    """Chooses one more point (unchanged once ``k`` are chosen)."""
    return probcover_run(state, x, max_steps=1)


def probcover(
    x, k: int, radius: float, *, anchors=None, block_size: int | None = None
) -> jax.Array:
    """ProbCover selection: int32 ``[k]`` indices into ``x`` in selection order.

    Args:
      x: Array ``[n, d]``, floating.
      k: points to choose.
      radius: ball radius ``delta`` (Euclidean).
      anchors: optional ``[m, d]`` points already chosen.
      block_size: rows per block of the pairwise passes.

    Returns:
      int32 ``[k]`` distinct row indices.
    """
    state = probcover_init(x, k, radius, anchors=anchors, block_size=block_size)
    return probcover_run(state, x, block_size=block_size).selected


@partial(jax.jit, static_argnames=("m", "block_size"))
def _kth_neighbour(sub, x, *, m, block_size):
    s = sub.shape[0]
    block = auto_block(x.shape[0], s, block_size)
    s_aux, x_aux = row_aux(sub, "euclidean"), row_aux(x, "euclidean")

    def fold(rows, start, fresh_from, out):
        raux = jax.lax.dynamic_slice_in_dim(s_aux, start, block)
        sq = block_rank_distances(rows, raux, x, x_aux, "euclidean")
        kth = -jax.lax.top_k(-sq, m + 1)[0][:, m]  # the point itself is its 0-th neighbour
        return jax.lax.dynamic_update_slice_in_dim(out, jnp.sqrt(kth), start, axis=0)

    return fold_row_blocks(fold, sub, block, jnp.zeros((s,), jnp.float32))


def probcover_radius(
    x,
    num_neighbors: int,
    *,
    quantile: float = 0.5,
    max_points: int = 2048,
    block_size: int | None = None,
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
    step = max(1, n // max_points)
    sub = x[::step][:max_points]
    d = _kth_neighbour(sub, x, m=num_neighbors, block_size=check_block_size(block_size))
    r = float(jnp.quantile(d, quantile))
    return r if r > 0 else 1.0
