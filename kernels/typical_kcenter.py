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
import numpy as np

from . import collective
from ._checks import (
    as_float_matrix,
    check_block_size,
    check_k,
    check_run_args,
    check_same_width,
    empty_selection,
)
from .distance import point_rank_distances
from .kcenter import global_point_stats
from .kmeans import typicality
from .sharding import ALL, ROWS, on_mesh, padded_rows, replicate, run_rows, shard_rows, unpad

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


_STATE_SPECS = TypicalKCenterState(ROWS, ROWS, ALL, ALL)


def typicality_weights(
    x,
    *,
    num_neighbors: int = 20,
    power: float = 1.0,
    block_size: int | None = None,
    mesh=None,
    n: int | None = None,
) -> jax.Array:
    """float32 ``[n]`` weights ``(typ / max typ) ** power`` (``typ``: TypiClust typicality over
    the whole data; a point with only duplicates as neighbours has weight 1). With ``mesh`` the
    typicality pass runs with the rows sharded over its devices (``kmeans.typicality``).
    ``n``: the real rows of an ``x`` already padded by ``shard_rows`` (the weights then have
    ``x``'s padded length)."""
    x = as_float_matrix(x, "x")
    if isinstance(power, bool) or not isinstance(power, (int, float)) or not 0 <= power < np.inf:
        raise ValueError(f"power must be a finite float >= 0, got {power!r}")
    # Padding rows (from n on) are a cluster of their own: never a real row's neighbour, and
    # their typicality is inf (no other member, or duplicates only), left out of the maximum.
    real = x.shape[0] if n is None else n
    typ = typicality(
        x,
        jnp.asarray((np.arange(x.shape[0]) >= real).astype(np.int32)),
        num_neighbors=num_neighbors,
        block_size=block_size,
        mesh=mesh,
    )
    return _relative(typ, jnp.float32(power))


@jax.jit
def _relative(typ, power):
    # One program (not six eager ones per shape: on a mesh spanning processes each task shape
    # would keep them all compiled, ~2 MB each on XLA:CPU).
    finite = jnp.isfinite(typ)
    top = jnp.max(jnp.where(finite, typ, 0.0))
    rel = jnp.where(finite, typ / jnp.where(top > 0, top, 1.0), 1.0)
    return (rel**power).astype(jnp.float32)


def _init_body(x, weight, anchors, *, n, k, axis):
    ids = collective.row_ids(x.shape[0], axis)
    # Padding rows start (and stay) at -inf: never chosen.
    min_dist = jnp.where(ids < n, jnp.inf, -jnp.inf).astype(jnp.float32)
    if anchors is not None and anchors.shape[0] > 0:
        stats = global_point_stats(x, n, "euclidean", axis)

        def body(i, md):
            d = point_rank_distances(x, stats, anchors[i], "euclidean")
            return jnp.minimum(md, jnp.sqrt(d).astype(jnp.float32))

        min_dist = jax.lax.fori_loop(0, anchors.shape[0], body, min_dist)
    return TypicalKCenterState(
        min_dist, weight, jnp.full((k,), -1, jnp.int32), jnp.zeros((), jnp.int32)
    )


@partial(jax.jit, static_argnames=("mesh", "n", "k"))
def _init(x, weight, anchors, *, mesh, n, k):
    body = partial(_init_body, n=n, k=k)
    return on_mesh(body, mesh, (ROWS, ROWS, ALL), _STATE_SPECS)(x, weight, anchors)


def _take(state, x, stats, axis):
    m = x.shape[0]
    # Made here, not closed over by the loop: a closed-over iota becomes an [m] buffer.
    ids = collective.row_ids(m, axis)
    # Before any pick or anchor every min_dist is inf: take the most typical point.
    score = jnp.where(jnp.isinf(state.min_dist), state.weight, state.weight * state.min_dist)
    score = jnp.where(state.min_dist == -jnp.inf, -jnp.inf, score)
    finite = jnp.any(jnp.isfinite(state.min_dist) & (state.min_dist >= 0)).astype(jnp.int32)
    any_finite = collective.pmax(finite, axis) > 0
    score = jnp.where(any_finite & jnp.isinf(state.min_dist), -jnp.inf, score)
    c = collective.first_argmax(score, ids, axis).astype(jnp.int32)
    center = collective.fetch_row(x, ids, c, axis)
    d = jnp.sqrt(point_rank_distances(x, stats, center, "euclidean")).astype(jnp.float32)
    local = c - ids[0]
    local = jnp.where((local >= 0) & (local < m), local, m)  # m: another device's, dropped
    min_dist = jnp.minimum(state.min_dist, d).at[local].set(-jnp.inf, mode="drop")
    return TypicalKCenterState(
        min_dist, state.weight, state.selected.at[state.count].set(c), state.count + 1
    )


def _run_body(state, x, max_steps, *, n, axis):
    stop = jnp.minimum(state.selected.shape[0], state.count + max_steps)
    stats = global_point_stats(x, n, "euclidean", axis)
    # `x` is closed over, not carried: a carried `x` would be copied by XLA every iteration.
    return jax.lax.while_loop(lambda s: s.count < stop, lambda s: _take(s, x, stats, axis), state)


@partial(jax.jit, static_argnames=("mesh", "n"))
def _run(state, x, max_steps, *, mesh, n):
    body = partial(_run_body, n=n)
    return on_mesh(body, mesh, (_STATE_SPECS, ROWS, ALL), _STATE_SPECS)(state, x, max_steps)


def _unpadded(state: TypicalKCenterState, n: int) -> TypicalKCenterState:
    return state._replace(min_dist=unpad(state.min_dist, n), weight=unpad(state.weight, n))


def _padded(state: TypicalKCenterState, mesh) -> TypicalKCenterState:
    """The caller's state on ``mesh``: padding rows at ``-inf``, weight 0 (never chosen)."""
    return TypicalKCenterState(
        shard_rows(state.min_dist, mesh, fill=-jnp.inf),
        shard_rows(state.weight, mesh, fill=0.0),
        replicate(state.selected, mesh),
        replicate(jnp.asarray(state.count, jnp.int32), mesh),
    )


def _checked_init(x, k, weight, anchors, num_neighbors, power, block_size, mesh, n=None):
    """Validated arguments -> ``(state padded for mesh, x placed on mesh, n)``; ``n``: the real
    rows of an ``x`` already padded for ``mesh`` by ``shard_rows``."""
    x = as_float_matrix(x, "x")
    if n is not None and (mesh is None or x.shape[0] not in (n, padded_rows(n, mesh))):
        raise ValueError(f"x has {x.shape[0]} rows but n={n}: expected n rows padded for mesh")
    n = x.shape[0] if n is None else n
    k = check_k(k, n)
    block_size = check_block_size(block_size)
    if weight is None:
        weight = typicality_weights(
            x, num_neighbors=num_neighbors, power=power, block_size=block_size, mesh=mesh, n=n
        )
    weight = jnp.asarray(weight, jnp.float32)
    if weight.shape not in ((n,), (x.shape[0],)):
        raise ValueError(f"weight must have shape [{n}], got {weight.shape}")
    if anchors is not None:
        anchors = as_float_matrix(anchors, "anchors")
        check_same_width(x, anchors, "x", "anchors")
        anchors = replicate(anchors, mesh)
    if mesh is not None:
        x, weight = shard_rows(x, mesh), shard_rows(weight, mesh, fill=0.0)
    return _init(x, weight, anchors, mesh=mesh, n=n, k=k), x, n


def typical_kcenter_init(
    x,
    k: int,
    *,
    weight=None,
    anchors=None,
    num_neighbors: int = 20,
    power: float = 1.0,
    block_size: int | None = None,
    mesh=None,
    n: int | None = None,
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
      mesh: optional 1-D ``jax.sharding.Mesh``: rows sharded over its devices (the state still
        has ``n`` rows).
      n: with ``mesh``, the number of real rows when ``x`` is already padded and sharded by
        ``shard_rows`` (e.g. read per process from a store); rows from ``n`` on are never
        chosen. ``None``: every row of ``x`` is real.

    Returns:
      A :class:`TypicalKCenterState`.
    """
    state, _, n = _checked_init(x, k, weight, anchors, num_neighbors, power, block_size, mesh, n)
    return _unpadded(state, n)


def typical_kcenter_run(
    state: TypicalKCenterState, x, *, max_steps: int | None = None, mesh=None
) -> TypicalKCenterState:
    """Continues ``state`` until it holds ``k`` points, or for at most ``max_steps`` more
    (traced: chunked runs do not recompile and equal one run exactly). With ``mesh`` the rows
    are sharded over its devices; a state from any device count (or none) continues."""
    n = state.min_dist.shape[0]
    # x may be the padded array of shard_rows (as given to typical_kcenter_init(n=)).
    x, max_steps = check_run_args(x, run_rows(x, n, mesh), state.selected.shape[0], max_steps)
    if state.selected.shape[0] == 0:
        return state
    if mesh is None:
        return _run(state, x, max_steps, mesh=None, n=n)
    out = _run(
        _padded(state, mesh), shard_rows(x, mesh), replicate(max_steps, mesh), mesh=mesh, n=n
    )
    return _unpadded(out, n)


def typical_kcenter(
    x,
    k: int,
    *,
    anchors=None,
    num_neighbors: int = 20,
    power: float = 1.0,
    block_size: int | None = None,
    mesh=None,
) -> jax.Array:
    """Typicality-weighted greedy k-center: int32 ``[k]`` indices into ``x`` in selection order.

    Args:
      x: Array ``[n, d]``, floating.
      k: points to choose.
      anchors: optional ``[m, d]`` points already chosen.
      num_neighbors: neighbours of the typicality.
      power: exponent of the relative typicality (0: plain k-center from the most typical point).
      block_size: rows per block of the typicality pass.
      mesh: optional 1-D ``jax.sharding.Mesh``: rows sharded over its devices; the indices equal
        the single-device ones (see the module docstring for float rounding).

    Returns:
      int32 ``[k]`` distinct row indices.
    """
    if (empty := empty_selection(x, k)) is not None:
        return empty
    state, xs, n = _checked_init(x, k, None, anchors, num_neighbors, power, block_size, mesh)
    if state.selected.shape[0] == 0:
        return state.selected
    k = state.selected.shape[0]
    steps = jnp.asarray(k, jnp.int32) if mesh is None else replicate(np.int32(k), mesh)
    return _run(state, xs, steps, mesh=mesh, n=n).selected
