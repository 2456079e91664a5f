"""Typicality-weighted greedy k-center: coverage that does not start with the outliers.

Plain greedy k-center takes the point farthest from the chosen ones, which at small budgets is an
outlier. Here each candidate's distance to its nearest chosen point (or anchor) is multiplied by
a weight in ``(0, 1]``, its typicality relative to the most typical point raised to ``power``:

    pick  argmax_i  w_i * min_s |x_i - x_s|,    w_i = (typ_i / max_j typ_j) ** power

with ``typ_i = 1 / mean distance to the num_neighbors nearest other points`` (TypiClust's
typicality over the whole data, see ``kmeans.typicality``), ties to the lowest index. The first
pick (nothing chosen yet) is the most typical point. ``power = 0`` is plain k-center from that
first point. The weights are one blocked ``O(n^2 d)`` pass; each step is one mat-vec, O(n) state.
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
from .distance import first_argmax, point_rank_distances, point_stats
from .kmeans import typicality

__all__ = [
    "TypicalKCenterState",
    "typical_kcenter",
    "typical_kcenter_init",
    "typical_kcenter_run",
    "typicality_weights",
]


class TypicalKCenterState(NamedTuple):
    """State of a typicality-weighted k-center run.

    Attributes:
      min_dist: float32 ``[n]`` Euclidean distance to the nearest chosen point or anchor
        (``inf`` before any); ``-inf`` for chosen points.
      weight: float32 ``[n]`` weights in ``[0, 1]``.
      selected: int32 ``[k]`` chosen indices in order; ``-1`` where not chosen yet.
      count: int32 scalar.
    """

    min_dist: jax.Array
    weight: jax.Array
    selected: jax.Array
    count: jax.Array


def typicality_weights(
    x, *, num_neighbors: int = 20, power: float = 1.0, block_size: int | None = None
) -> jax.Array:
    """float32 ``[n]`` weights ``(typ / max typ) ** power`` (``typ``: TypiClust typicality over
    the whole data; a point with only duplicates as neighbours has weight 1)."""
    x = as_float_matrix(x, "x")
    if isinstance(power, bool) or not isinstance(power, (int, float)) or power < 0:
        raise ValueError(f"power must be a float >= 0, got {power!r}")
    typ = typicality(
        x, jnp.zeros((x.shape[0],), jnp.int32), num_neighbors=num_neighbors, block_size=block_size
    )
    finite = jnp.isfinite(typ)
    top = jnp.max(jnp.where(finite, typ, 0.0))
    rel = jnp.where(finite, typ / jnp.where(top > 0, top, 1.0), 1.0)
    return (rel ** jnp.float32(power)).astype(jnp.float32)


@partial(jax.jit, static_argnames=("k",))
def _init(x, weight, anchors, *, k):
    n = x.shape[0]
    min_dist = jnp.full((n,), jnp.inf, jnp.float32)
    if anchors is not None and anchors.shape[0] > 0:
        stats = point_stats(x, "euclidean")

        def body(i, md):
            d = point_rank_distances(x, stats, anchors[i], "euclidean")
            return jnp.minimum(md, jnp.sqrt(d).astype(jnp.float32))

        min_dist = jax.lax.fori_loop(0, anchors.shape[0], body, min_dist)
    return TypicalKCenterState(
        min_dist, weight, jnp.full((k,), -1, jnp.int32), jnp.zeros((), jnp.int32)
    )


def typical_kcenter_init(
    x,
    k: int,
    *,
    weight=None,
    anchors=None,
    num_neighbors: int = 20,
    power: float = 1.0,
    block_size: int | None = None,
) -> TypicalKCenterState:
    """Initial state.

    Args:
      x: Array ``[n, d]``, floating.
      k: points to choose, ``0 <= k <= n`` (static).
      weight: optional float ``[n]`` weights; default :func:`typicality_weights`.
      anchors: optional ``[m, d]`` points already chosen.
      num_neighbors: of :func:`typicality_weights`.
      power: of :func:`typicality_weights`.
      block_size: of :func:`typicality_weights`.

    Returns:
      A :class:`TypicalKCenterState`.
    """
    x = as_float_matrix(x, "x")
    k = check_k(k, x.shape[0])
    block_size = check_block_size(block_size)
    if weight is None:
        weight = typicality_weights(
            x, num_neighbors=num_neighbors, power=power, block_size=block_size
        )
    weight = jnp.asarray(weight, jnp.float32)
    if weight.shape != (x.shape[0],):
        raise ValueError(f"weight must have shape [{x.shape[0]}], got {weight.shape}")
    if anchors is not None:
        anchors = as_float_matrix(anchors, "anchors")
        check_same_width(x, anchors, "x", "anchors")
    return _init(x, weight, anchors, k=k)


def _take(state, x, stats):
    # Before any pick or anchor every min_dist is inf: take the most typical point.
    score = jnp.where(jnp.isinf(state.min_dist), state.weight, state.weight * state.min_dist)
    score = jnp.where(state.min_dist == -jnp.inf, -jnp.inf, score)
    any_finite = jnp.any(jnp.isfinite(state.min_dist) & (state.min_dist >= 0))
    score = jnp.where(any_finite & jnp.isinf(state.min_dist), -jnp.inf, score)
    c = first_argmax(score).astype(jnp.int32)
    d = jnp.sqrt(point_rank_distances(x, stats, x[c], "euclidean")).astype(jnp.float32)
    min_dist = jnp.minimum(state.min_dist, d).at[c].set(-jnp.inf)
    return TypicalKCenterState(
        min_dist, state.weight, state.selected.at[state.count].set(c), state.count + 1
    )


@jax.jit
def _run(state, x, max_steps):
    stop = jnp.minimum(state.selected.shape[0], state.count + max_steps)
    stats = point_stats(x, "euclidean")
    return jax.lax.while_loop(lambda s: s.count < stop, lambda s: _take(s, x, stats), state)


def typical_kcenter_run(
    state: TypicalKCenterState, x, *, max_steps: int | None = None
) -> TypicalKCenterState:
    """Continues ``state`` until it holds ``k`` points, or for at most ``max_steps`` more
    (traced: chunked runs do not recompile and equal one run exactly)."""
    x, max_steps = check_run_args(x, state.min_dist.shape[0], state.selected.shape[0], max_steps)
    if state.selected.shape[0] == 0:
        return state
    return _run(state, x, max_steps)


def typical_kcenter(
    x,
    k: int,
    *,
    anchors=None,
    num_neighbors: int = 20,
    power: float = 1.0,
    block_size: int | None = None,
) -> jax.Array:
    """Typicality-weighted greedy k-center: int32 ``[k]`` indices into ``x`` in selection order.

    Args:
      x: Array ``[n, d]``, floating.
      k: points to choose.
      anchors: optional ``[m, d]`` points already chosen.
      num_neighbors: neighbours of the typicality.
      power: exponent of the relative typicality (0: plain k-center from the most typical point).
      block_size: rows per block of the typicality pass.

    Returns:
      int32 ``[k]`` distinct row indices.
    """
    state = typical_kcenter_init(
        x, k, anchors=anchors, num_neighbors=num_neighbors, power=power, block_size=block_size
    )
    return typical_kcenter_run(state, x).selected
