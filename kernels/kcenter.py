"""Exact greedy k-center with O(N) extra memory, as explicit state.

``greedy_k_center`` follows goldener 7.0.0's ``GoldGreedyKCenterSelectionTool``: without anchors
the first center is the point with the largest root-sum-square distance to all points (for the
Euclidean metrics that is the point farthest from the mean, found in one pass); then each step
takes the point farthest from its nearest center. With anchors (points chosen earlier, e.g. a
labelled set) the running minimum starts at the distance to the nearest anchor and ``k`` new
points are chosen. Ties go to the lowest index.

``method="pruned"`` (``kernels.kcenter_pruned``) takes the same steps but reads only the row
blocks a new center can change (triangle inequality, with a rounding margin): same indices, ties
included, several times faster on clustered data on CPU; ``"auto"`` (the default of
``greedy_k_center``) chooses it on CPU for large runs.

Fixed with respect to the reference: ``k == 0`` selects nothing; a selected point is never
selected again (its running minimum is ``-inf``), even when the data has exact duplicates; and no
``N x N`` (or ``N x k``) matrix is ever built.

The state is a ``NamedTuple`` of arrays (what a checkpoint saves); ``kcenter_run`` continues any
state, so resuming is restore-and-continue.

One body per program, one device or many (``kernels.collective``): with ``mesh=`` the rows of
``x`` and ``min_dist`` are sharded over a 1-D mesh, padded to a multiple of its size with rows
whose ``min_dist`` is ``-inf`` (never chosen). A step is a local mat-vec plus a global first
argmax (two scalar collectives) and one row fetch (a ``psum`` of ``d`` values): ``O(P + d)``
communication, ``x`` never leaves its device. The sums over all rows (the mean row, the cosine
``sum u`` and ``U^T U`` of the seed scores) are local sums combined with ``psum``.

Exactness on a mesh: every distance uses the same formula; only the order of the additions of the
global sums differs. Where they are exact (cosine and 16-bit storage, whose shift is zero; data
whose column sums are exact in float32) the indices are bit-identical to one device's, ties
included. Otherwise the mean row can differ in its last bit, so a distance can differ by one
rounding unit, and only two candidates within rounding of each other can be ordered otherwise.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import collective, kcenter_pruned
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
    block_point_rank_distances,
    column_sums,
    fold_row_blocks,
    point_rank_distances,
    point_stats,
    row_aux,
    shifted_sq,
    to_metric,
)
from .sharding import ALL, ROWS, on_mesh, padded_rows, replicate, shard_rows, unpad

__all__ = [
    "KCenterState",
    "global_point_stats",
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


_STATE_SPECS = KCenterState(ROWS, ALL, ALL)


def global_point_stats(x: jax.Array, n: int, metric: str, axis: str | None) -> PointStats:
    """``distance.point_stats`` of all ``n`` rows, for the rows this device holds.

    The mean row is the ``psum`` of the per-device column sums over ``n`` (padding rows are zero
    and add nothing); without an axis it is exactly ``point_stats(x, metric)``."""
    acc = accum_dtype(x.dtype)
    d = x.shape[1]
    if metric == "cosine":
        return PointStats(jnp.zeros((d,), acc), row_aux(x, "cosine"))
    if jnp.dtype(x.dtype).itemsize >= 4 and n > 0:
        shift = collective.psum(column_sums(x, acc), axis) / n
    else:
        shift = jnp.zeros((d,), acc)
    return PointStats(shift, shifted_sq(x, shift))


def _seed_scores(x, stats: PointStats, n: int, metric: str, axis) -> jax.Array:
    """Per point, a value ordered like the root-sum-square distance to all points, in O(N d^2).

    Euclidean: ``sum_j |x_i - x_j|^2 = n |x_i - mean|^2 + const``, so the score is
    ``|x_i - mean|^2``. Cosine, with unit rows ``u`` (zero rows stay zero):
    ``sum_j (1 - u_i.u_j)^2 = n - 2 u_i.s + u_i^T G u_i`` with ``s = sum_j u_j``, ``G = U^T U``.
    """
    m, d = x.shape
    acc = accum_dtype(x.dtype)
    if metric != "cosine":
        if jnp.dtype(x.dtype).itemsize >= 4:
            return stats.sq  # already |x_i - mean|^2
        mean = collective.psum(column_sums(x, acc), axis) / n
        return jnp.sum(jnp.square(x.astype(acc) - mean), axis=1)  # once, elementwise: exact

    block = auto_block(d, m, budget=ROW_BLOCK_BUDGET)
    inv = stats.sq  # 1 / |x_i| (0 for zero rows, padding included)

    def accumulate(rows, start, fresh_from, carry):
        s, gram = carry
        fresh = (start + jnp.arange(block)) >= fresh_from
        w = jnp.where(fresh, jax.lax.dynamic_slice_in_dim(inv, start, block), 0)
        u = rows.astype(acc) * w[:, None]
        return s + jnp.sum(u, axis=0), gram + jnp.dot(u.T, u, precision=jax.lax.Precision.HIGHEST)

    s, gram = fold_row_blocks(accumulate, x, block, (jnp.zeros((d,), acc), jnp.zeros((d, d), acc)))
    s, gram = collective.psum((s, gram), axis)

    def score_block(rows, start, fresh_from, scores):
        u = rows.astype(acc) * jax.lax.dynamic_slice_in_dim(inv, start, block)[:, None]
        ug = jnp.dot(u, gram, precision=jax.lax.Precision.HIGHEST)
        sc = n - 2.0 * (u @ s) + jnp.sum(ug * u, axis=1)
        return jax.lax.dynamic_update_slice_in_dim(scores, sc, start, axis=0)

    return fold_row_blocks(score_block, x, block, jnp.zeros((m,), acc))


def _nearest_anchor(x, anchors, stats: PointStats, metric: str, block: int) -> jax.Array:
    """Rank distance from each row of ``x`` to its nearest anchor; ``[m, block]`` at a time,
    through the shift of ``stats`` (as the steps' distances)."""
    init = jnp.full((x.shape[0],), jnp.inf, stats.sq.dtype)

    def fold(rows, start, fresh_from, best):
        d = block_point_rank_distances(x, stats, rows, metric)  # [m, block]
        return jnp.minimum(best, jnp.min(d, axis=1))

    return fold_row_blocks(fold, anchors, block, init)


def _take(state: KCenterState, x, ids, stats: PointStats, index, metric: str, axis):
    """Adds center ``index`` (global): one row fetch, one local mat-vec."""
    center = collective.fetch_row(x, ids, index, axis)
    d = point_rank_distances(x, stats, center, metric).astype(state.min_dist.dtype)
    # A one-element update at the local index (none on other devices), not a select against
    # `ids`: the step reads no [m] index vector.
    m = x.shape[0]
    local = index - ids[0]
    local = jnp.where((local >= 0) & (local < m), local, m)  # m: not here, dropped
    min_dist = jnp.minimum(state.min_dist, d).at[local].set(-jnp.inf, mode="drop")
    selected = state.selected.at[state.count].set(index.astype(jnp.int32))
    return KCenterState(min_dist, selected, state.count + 1)


def _init_body(x, anchors, *, n, k, metric, block_size, axis):
    m = x.shape[0]
    acc = accum_dtype(x.dtype)
    ids = collective.row_ids(m, axis)
    valid = ids < n
    selected = jnp.full((k,), -1, jnp.int32)
    count = jnp.zeros((), jnp.int32)
    if anchors is not None and anchors.shape[0] > 0:
        block = auto_block(m, anchors.shape[0], block_size)
        stats = global_point_stats(x, n, metric, axis)
        min_dist = _nearest_anchor(x, anchors, stats, metric, block).astype(acc)
        return KCenterState(jnp.where(valid, min_dist, -jnp.inf), selected, count)
    # Padding rows start (and stay) at -inf: never chosen.
    state = KCenterState(jnp.where(valid, jnp.inf, -jnp.inf).astype(acc), selected, count)
    if k == 0:
        return state
    stats = global_point_stats(x, n, metric, axis)
    scores = jnp.where(valid, _seed_scores(x, stats, n, metric, axis), -jnp.inf)
    seed = collective.first_argmax(scores, ids, axis)
    return _take(state, x, ids, stats, seed, metric, axis)


@partial(jax.jit, static_argnames=("mesh", "n", "k", "metric", "block_size"))
def _init(x, anchors, *, mesh, n, k, metric, block_size):
    body = partial(_init_body, n=n, k=k, metric=metric, block_size=block_size)
    return on_mesh(body, mesh, (ROWS, ALL), _STATE_SPECS)(x, anchors)


def _run_body(state, x, max_steps, *, n, metric, axis):
    stop = jnp.minimum(state.selected.shape[0], state.count + max_steps)
    stats = global_point_stats(x, n, metric, axis)

    # `x` is closed over, not carried: a carried `x` would be copied by XLA every iteration.
    def body(s):
        # Made here, not closed over: a closed-over iota becomes an [m] buffer read every step.
        ids = collective.row_ids(x.shape[0], axis)
        index = collective.first_argmax(s.min_dist, ids, axis)
        return _take(s, x, ids, stats, index, metric, axis)

    return jax.lax.while_loop(lambda s: s.count < stop, body, state)


@partial(jax.jit, static_argnames=("mesh", "n", "metric"))
def _run(state, x, max_steps, *, mesh, n, metric):
    body = partial(_run_body, n=n, metric=metric)
    return on_mesh(body, mesh, (_STATE_SPECS, ROWS, ALL), _STATE_SPECS)(state, x, max_steps)


def _run_pruned_body(state, x, max_steps, *, n, metric, rows, axis):
    stop = jnp.minimum(state.selected.shape[0], state.count + max_steps)
    stats = global_point_stats(x, n, metric, axis)
    *out, touched = kcenter_pruned.pruned_steps(
        *state, x, stats, stop, n=n, metric=metric, rows=rows, axis=axis
    )
    return KCenterState(*out), touched


@partial(jax.jit, static_argnames=("mesh", "n", "metric", "rows"))
def _run_pruned(state, x, max_steps, *, mesh, n, metric, rows):
    body = partial(_run_pruned_body, n=n, metric=metric, rows=rows)
    specs = (_STATE_SPECS, ALL)
    return on_mesh(body, mesh, (_STATE_SPECS, ROWS, ALL), specs)(state, x, max_steps)


# `method="auto"` takes the pruned steps on CPU from this many rows and centers on (measured with
# goldener-jax bench kcenter, docs/benchmarks.md): the first min(64, 2 * blocks) steps stream
# anyway (they pick the pivots), so fewer centers gain little. On data that cannot be pruned
# (uniform, d=256) the pruned run streams too (a cell-level prediction skips the block
# rebuilds): 0.99-1.07x the streaming time; clustered data gains several-fold. 16-bit storage
# keeps the streaming steps: XLA:CPU's bf16 mat-vec of a block is slow (pruned bf16 ran 2.3x
# the streaming time on clustered data). Accelerators keep the
# streaming steps too (not measured there: no device here).
AUTO_PRUNE_MIN_ROWS = 50_000
AUTO_PRUNE_MIN_K = 512
METHODS = ("naive", "pruned", "auto")


def _method(method, n: int, k: int, dtype) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "auto":
        big = n >= AUTO_PRUNE_MIN_ROWS and k >= AUTO_PRUNE_MIN_K
        wide = jnp.dtype(dtype).itemsize >= 4
        return "pruned" if big and wide and jax.default_backend() == "cpu" else "naive"
    return method


def _steps(state, x, steps, *, mesh, n, metric, method, block_rows):
    """Runs ``steps`` more steps on the padded ``state`` / ``x``: ``(state, touched [k])``."""
    if method == "naive":
        out = _run(state, x, steps, mesh=mesh, n=n, metric=metric)
        k = state.selected.shape[0]
        done = jnp.arange(k) >= state.count
        return out, jnp.where(done & (jnp.arange(k) < out.count), 1.0, 0.0)
    m = x.shape[0] // (1 if mesh is None else mesh.devices.size)
    if block_rows is None:
        block_rows = kcenter_pruned.default_block_rows(x.shape[1], x.dtype.itemsize, m)
    elif isinstance(block_rows, bool) or not isinstance(block_rows, int) or block_rows < 1:
        raise ValueError(f"block_rows must be an int >= 1 or None, got {block_rows!r}")
    rows = min(block_rows, m)
    out, touched = _run_pruned(state, x, steps, mesh=mesh, n=n, metric=metric, rows=rows)
    per_step = -(-m // rows) * (1 if mesh is None else mesh.devices.size)
    return out, touched / per_step


def _real_rows(x, n, mesh) -> int:
    """Real rows of ``x``: ``n`` where ``x`` is already padded for ``mesh`` (``shard_rows``)."""
    if n is None:
        return x.shape[0]
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise TypeError(f"n must be an int >= 0 or None, got {n!r}")
    if mesh is None:
        if x.shape[0] != n:
            raise ValueError(f"x has {x.shape[0]} rows but n={n}; without a mesh they must agree")
    elif x.shape[0] not in (n, padded_rows(n, mesh)):
        raise ValueError(
            f"x has {x.shape[0]} rows but n={n}: expected {n} rows, or {padded_rows(n, mesh)} "
            "(n padded by shard_rows for the mesh)"
        )
    return n


def _padded_state(state: KCenterState, mesh) -> KCenterState:
    """The caller's (unpadded) state placed on ``mesh``: padding rows at ``-inf``."""
    count = jnp.asarray(state.count, jnp.int32)
    return KCenterState(
        shard_rows(state.min_dist, mesh, fill=-jnp.inf),
        replicate(state.selected, mesh),
        replicate(count, mesh),
    )


def _unpadded(state: KCenterState, n: int) -> KCenterState:
    return state._replace(min_dist=unpad(state.min_dist, n))


def kcenter_init(
    x,
    k: int,
    *,
    metric: str = "euclidean",
    anchors=None,
    block_size: int | None = None,
    mesh=None,
    n: int | None = None,
) -> KCenterState:
    """Initial state: nearest-anchor distances, or the first center chosen when there are none.

    Args:
      x: Array of shape ``[n, d]``, floating.
      k: number of centers to choose, ``0 <= k <= n`` (static: it sets the state's shape).
      metric: ``"euclidean"``, ``"sqeuclidean"`` (same choices as ``"euclidean"``) or ``"cosine"``.
      anchors: optional array ``[a, d]`` of points already chosen; never returned.
      block_size: anchor rows compared at once (``[n, block_size]`` temporary values).
      mesh: optional 1-D ``jax.sharding.Mesh``: rows of ``x`` are sharded over its devices; the
        state's ``min_dist`` still has length ``n``.
      n: with ``mesh``, the number of real rows when ``x`` is already padded and sharded by
        ``shard_rows`` (e.g. read per process from a store); rows from ``n`` on are never
        chosen. ``None``: every row of ``x`` is real.

    Returns:
      A ``KCenterState``.
    """
    check_metric(metric)
    block_size = check_block_size(block_size)
    x = as_float_matrix(x, "x")
    n = _real_rows(x, n, mesh)
    k = check_k(k, n)
    if anchors is not None:
        anchors = as_float_matrix(anchors, "anchors")
        check_same_width(x, anchors, "x", "anchors")
        anchors = replicate(anchors, mesh)
    if mesh is not None:
        x = shard_rows(x, mesh)
    state = _init(x, anchors, mesh=mesh, n=n, k=k, metric=metric, block_size=block_size)
    return _unpadded(state, n)


def kcenter_step(
    state: KCenterState,
    x,
    *,
    metric: str = "euclidean",
    stats: PointStats | None = None,
    mesh=None,
) -> KCenterState:
    """Chooses one more center: the point farthest from its nearest center (lowest index on ties).

    A state that already holds ``k`` centers is returned unchanged. One pass over ``x`` when
    ``stats`` (``point_stats(x, metric)``, computed once per run) is given, two otherwise. With
    ``mesh``, the same as ``kcenter_run(..., max_steps=1, mesh=mesh)`` (``stats`` unused).
    """
    if mesh is not None:
        return kcenter_run(state, x, metric=metric, max_steps=1, mesh=mesh)
    if state.selected.shape[0] == 0:
        return state
    if stats is None:
        stats = point_stats(x, metric)
    done = state.count >= state.selected.shape[0]
    ids = collective.row_ids(x.shape[0], None)
    index = collective.first_argmax(state.min_dist, ids, None)
    stepped = _take(state, x, ids, stats, index, metric, None)
    return jax.tree.map(lambda old, new: jnp.where(done, old, new), state, stepped)


def kcenter_run(
    state: KCenterState,
    x,
    *,
    metric: str = "euclidean",
    max_steps: int | None = None,
    mesh=None,
    method: str = "naive",
    block_rows: int | None = None,
) -> KCenterState:
    """Continues ``state`` until it holds ``k`` centers, or for at most ``max_steps`` more.

    ``max_steps`` is a traced value: changing it does not recompile, so a caller can run in
    chunks and checkpoint the state between them. With ``mesh`` (a 1-D ``jax.sharding.Mesh``)
    the rows are sharded over its devices; a state from any device count (or none) continues.
    ``x`` may then also be the padded array of ``shard_rows`` (its first ``len(min_dist)`` rows
    are the real ones). ``method`` and ``block_rows``: as in ``greedy_k_center`` (the pruned
    steps group the rows once per call, so they pay off for long calls, not one-step chunks).
    """
    check_metric(metric)
    n = state.min_dist.shape[0]
    k = state.selected.shape[0]
    method = _method(method, n, k, getattr(x, "dtype", jnp.float32))
    rows = n
    if mesh is not None and len(getattr(x, "shape", ())) == 2:
        if x.shape[0] == padded_rows(n, mesh):  # already padded by shard_rows
            rows = x.shape[0]
    x, max_steps = check_run_args(x, rows, k, max_steps)
    if k == 0:
        return state
    run = partial(_steps, mesh=mesh, n=n, metric=metric, method=method, block_rows=block_rows)
    if mesh is None:
        return run(state, x, max_steps)[0]
    out = run(_padded_state(state, mesh), shard_rows(x, mesh), replicate(max_steps, mesh))[0]
    return _unpadded(out, n)


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
    method: str = "naive",
    block_rows: int | None = None,
    return_touched: bool = False,
):
    """Greedy k-center selection (Gonzalez), exact, in O(N) extra memory (streaming steps).

    Args:
      x: Array of shape ``[n, d]``, floating (float32, bfloat16, float16).
      k: number of points to choose, ``0 <= k <= n``.
      metric: ``"euclidean"``, ``"sqeuclidean"`` or ``"cosine"``.
      anchors: optional ``[a, d]`` points already chosen (e.g. labelled): they count as centers,
        and ``k`` new points of ``x`` are chosen.
      block_size: anchor rows compared at once when computing nearest-anchor distances.
      mesh: optional 1-D ``jax.sharding.Mesh`` (e.g. ``kernels.make_mesh()``): rows of ``x``
        are sharded over its devices and each step exchanges ``O(P + d)`` values; the indices
        equal the single-device ones (see the module docstring for float rounding).
      method: ``"naive"`` streams all rows every step; ``"pruned"`` (``kernels.kcenter_pruned``)
        skips row blocks the new center provably cannot change (same indices, ties included;
        it holds one grouped copy of ``x``); ``"auto"``: pruned on CPU from
        ``AUTO_PRUNE_MIN_ROWS`` rows and ``AUTO_PRUNE_MIN_K`` centers with 32-bit storage,
        naive otherwise. The default is ``"naive"``, which holds no copy of ``x``: pruning costs
        0.99-1.07x on data that cannot be pruned (uniform, d = 256); it took 0.26x on a
        1,000-Gaussian mixture at 500,000 x 256, k = 5,000, and 0.52x on digits tiled with
        noise (docs/benchmarks.md): opt in where the data has clusters and memory to spare.
      block_rows: rows per block of the pruned steps (``None``: about 128 KiB of rows).
      return_touched: also return, per step, the share of the rows' blocks read (1.0 for a
        streaming step; for benchmarks).

    Returns:
      int32 array of shape ``[k]``: indices into ``x`` in selection order. ``k == n`` returns
      ``arange(n)``, as the reference does. With ``return_touched``, ``(indices, touched)`` with
      ``touched`` float32 ``[k]`` (the seed step, chosen in ``kcenter_init``, counts 1.0).
    """
    check_metric(metric)
    x = as_float_matrix(x, "x")
    n = x.shape[0]
    k = check_k(k, n)
    method = _method(method, n, k, x.dtype)
    if anchors is not None:
        anchors = as_float_matrix(anchors, "anchors")
        check_same_width(x, anchors, "x", "anchors")
    if k == n:
        out = jnp.arange(k, dtype=jnp.int32)
        return (out, jnp.ones((k,), jnp.float32)) if return_touched else out
    block_size = check_block_size(block_size)
    # Validated once here (each check is a pass over x); the state stays padded between the two
    # programs, and x is placed on the mesh once.
    if mesh is not None:
        x = shard_rows(x, mesh)
        anchors = replicate(anchors, mesh) if anchors is not None else None
    state = _init(x, anchors, mesh=mesh, n=n, k=k, metric=metric, block_size=block_size)
    if k == 0:
        return (state.selected, jnp.zeros((0,), jnp.float32)) if return_touched else state.selected
    steps = jnp.asarray(k, jnp.int32) if mesh is None else replicate(np.int32(k), mesh)
    run = partial(_steps, mesh=mesh, n=n, metric=metric, method=method, block_rows=block_rows)
    out, touched = run(state, x, steps)
    # Steps taken by kcenter_init (the seed without anchors) read every row.
    touched = jnp.where(jnp.arange(k) < state.count, 1.0, touched)
    return (out.selected, touched) if return_touched else out.selected
