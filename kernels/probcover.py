"""ProbCover (Yehuda et al., 2022): greedy maximum coverage of the radius-``delta`` ball graph.

Point ``i`` *covers* every point within Euclidean distance ``delta`` of it (itself included).
Each step takes, among the points not chosen yet, the one covering the most points not covered yet
(its *degree*); ties go to the larger ball (the denser region), then to the lowest index. Once
all is covered (every degree 0), the remaining picks are the densest points by the same rule.

Exact, two ways to run the same greedy:
* **Ball graph** (one device, concrete ``x``, at most ``max_edges`` ball entries: the default;
  ``kernels.probcover_graph``). The graph is built once from ``tile x tile`` blocks of the upper
  triangle of the pair matrix only (half the ``O(n^2 d)`` products; a pair's mask serves both
  rows), packed 32 pairs a word on the device and read into per-row neighbour lists (CSR) on the
  host. Degrees are then kept
  by incremental updates: after a pick ``c``, each neighbour of each point ``c`` newly covers
  loses one (each edge touched at most once a run). The state stays ``O(n)`` (what a checkpoint
  saves); the last graph is kept for a run on the same ``x`` and radius (compared in ``O(n d)``).
* **Graph-free** (a mesh, ``x`` traced under ``jit``, or more than ``max_edges`` entries): after
  a pick, the points it newly covers, ``U``, are found with one mat-vec and every degree drops by
  the number of points of ``U`` in its ball, ``[n, chunk]`` at a time (``O(n |U| d)`` a step).
  One body for one device and a mesh (``kernels.collective``; padding rows taken and covered).
  On a mesh, ``x`` may come already padded and row-sharded by ``shard_rows`` (e.g. each process
  reading its own rows of a store) with ``n=`` its real rows: no process then holds all of it.

Ball membership compares squared distances with ``delta^2`` (``|a|^2 + |b|^2 - 2 a.b``, float32
accumulation). Counts are integers: both ways and any device count choose the same indices where
squared distances compare with ``delta^2`` alike (always if distances are exact; on floats, up to
a pair within rounding of the radius).

``probcover_radius`` gives a data-driven ``delta``: a quantile of the distance from a point to
its ``num_neighbors``-th nearest neighbour, over up to ``max_points`` rows spread over ``x``
(on a mesh: those rows fetched onto every device, each device's nearest among its own rows, the
devices' candidates merged; the same values as on one device where distances are exact).
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
    is_concrete,
)
from .distance import (
    accum_dtype,
    auto_block,
    block_rank_distances,
    fold_row_blocks,
    row_aux,
    to_metric,
)
from .knn import knn
from .probcover_graph import MAX_EDGES, ball_graph, graph_greedy, neighbours_of
from .sharding import ALL, ROWS, mesh_axis, on_mesh, replicate, run_rows, shard_rows, unpad

__all__ = ["ProbCoverState", "probcover", "probcover_init", "probcover_radius", "probcover_run"]
__all__ += ["probcover_step"]

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


def _count(mask, axis):
    # As float32 (exact below 2^24): XLA:CPU's integer sums ran ~2x slower than the GEMM before.
    return jnp.sum(mask.astype(jnp.float32), axis=axis).astype(jnp.int32)


def _ball_counts(x, aux, n, r2, block, axis, col_ok=None):
    """Per local row: how many rows of all devices (real, and ``col_ok[global index]`` when
    given) lie within ``sqrt(r2)``."""

    def fold(rows, start, fresh_from, other, other_ids, other_ok, out):
        raux = jax.lax.dynamic_slice_in_dim(aux, start, block)
        other_aux = row_aux(other, "euclidean")
        sq = block_rank_distances(rows, raux, other, other_aux, "euclidean")
        ok = other_ok if col_ok is None else other_ok & col_ok[other_ids]
        c = _count((sq <= r2) & ok[None, :], 1)
        old = jax.lax.dynamic_slice_in_dim(out, start, block)
        # Rows of the last block already counted by the previous one are not counted twice.
        fresh = (start + jnp.arange(block)) >= fresh_from
        return jax.lax.dynamic_update_slice_in_dim(out, jnp.where(fresh, old + c, old), start, 0)

    return collective.fold_all_rows(fold, x, n, axis, block, jnp.zeros((x.shape[0],), jnp.int32))


def _anchor_cover(x, aux, anchors, r2, covered, block_size):
    """``covered`` or within ``sqrt(r2)`` of an anchor (``[block, m]`` distances at a time)."""
    if anchors is None or anchors.shape[0] == 0:
        return covered
    a_aux = row_aux(anchors, "euclidean")
    ablock = auto_block(x.shape[0], anchors.shape[0], block_size)

    def fold(rows, start, fresh_from, cov):
        raux = jax.lax.dynamic_slice_in_dim(a_aux, start, ablock)
        sq = block_rank_distances(rows, raux, x, aux, "euclidean")
        return cov | jnp.any(sq <= r2, axis=0)

    return fold_row_blocks(fold, anchors, ablock, covered)


def _new_state(degree, ball_size, covered, taken, k, radius):
    return ProbCoverState(
        degree, ball_size, covered, taken, jnp.full((k,), -1, jnp.int32),
        jnp.zeros((), jnp.int32), radius,
    )  # fmt: skip


def _init_body(x, anchors, radius, *, n, k, block_size, axis):
    m = x.shape[0]
    valid = collective.row_ids(m, axis) < n
    block = auto_block(m, m, block_size)
    aux = row_aux(x, "euclidean")
    r2 = radius**2
    ball_size = jnp.where(valid, _ball_counts(x, aux, n, r2, block, axis), 0)
    # Padding rows are covered and taken from the start: never counted, never chosen.
    covered = _anchor_cover(x, aux, anchors, r2, ~valid, block_size)
    if anchors is None or anchors.shape[0] == 0:
        degree = ball_size
    else:
        free = ~collective.all_gather(covered, axis)  # [n] bools, indexed by global row
        degree = jnp.where(valid, _ball_counts(x, aux, n, r2, block, axis, free), 0)
    return _new_state(degree, ball_size, covered, ~valid, k, radius)


@partial(jax.jit, static_argnames=("mesh", "n", "k", "block_size"))
def _init(x, anchors, radius, *, mesh, n, k, block_size):
    body = partial(_init_body, n=n, k=k, block_size=block_size)
    return on_mesh(body, mesh, (ROWS, ALL, ALL), _STATE_SPECS)(x, anchors, radius)


# Bytes of other rows a device receives at a time (a step's newly covered rows of every device,
# the radius's sampled rows): wide rows come a few at a time, never [P x 256, d] per device.
_PIECE_BYTES = 8 << 20


def _piece_rows(rows: int, d: int, itemsize: int, devices: int) -> int:
    """Rows per piece: at most ``rows``, and ``devices`` pieces within ``_PIECE_BYTES``."""
    return auto_block(devices * d * itemsize, rows, budget=_PIECE_BYTES)


def _chunk_rows(n: int, d: int, itemsize: int, mesh, block_size) -> int:
    """Newly covered rows per device compared at once in a step: ``block_size``, else 256 within
    ``_PIECE_BYTES`` over all devices. Degrees are integer counts: any chunk, the same state."""
    if block_size:
        return max(1, min(n, block_size))
    return _piece_rows(min(n, 256), d, itemsize, 1 if mesh is None else mesh.devices.size)


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
        drop = _count((sq <= r2) & ok[None, :], 1)
        return t + 1, degree - drop

    num_chunks = collective.pmax((num_new + chunk - 1) // chunk, axis)
    _, degree = jax.lax.while_loop(
        lambda c_: c_[0] < num_chunks, body, (jnp.zeros((), jnp.int32), state.degree)
    )
    sel, taken = state.selected.at[state.count].set(c), state.taken | (ids == c)
    state = state._replace(degree=degree, covered=state.covered | ball, taken=taken)
    return state._replace(selected=sel, count=state.count + 1)


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


@partial(jax.jit, static_argnames=("block_size",))
def _covered_one(x, anchors, radius, *, block_size):
    free = jnp.zeros((x.shape[0],), bool)
    return _anchor_cover(x, row_aux(x, "euclidean"), anchors, radius**2, free, block_size)


# The last graph, ``(key, copy of x, graph)``: a run on equal x (same dtype) and radius (an O(n d)
# comparison) reuses it (select's init, then run, in chunks).
_LAST: list = []


def clear_graph_cache() -> None:
    """Forgets the last ProbCover ball graph (kept for a run on the same ``x`` and radius)."""
    _LAST.clear()


def _cached_graph(x, radius, n: int, max_edges: int):
    if max_edges < n:  # every point is in its own ball: at least n entries
        return None
    xh = np.asarray(x)
    key = (xh.shape, xh.dtype, float(radius))
    if _LAST and _LAST[0][0] == key and np.array_equal(_LAST[0][1], xh):
        return _LAST[0][2] if _LAST[0][2][1].size <= max_edges else None
    _LAST.clear()
    graph = ball_graph(x, radius, n, max_edges)
    # A copy: on CPU ``jnp.asarray`` can share a caller's NumPy buffer, which may change later.
    _LAST.extend([] if graph is None else [(key, xh.copy(), graph)])
    return graph


def _graph_state(x, anchors, radius, *, n, k, block_size, max_edges):
    """One device, concrete ``x``: ``(state, graph)``, or ``None`` past ``max_edges``. Ball
    sizes are row lengths; a degree counts the uncovered rows holding the point (symmetry)."""
    graph = _cached_graph(x, radius, n, max_edges)
    if graph is None:
        return None
    covered = np.asarray(_covered_one(x, anchors, radius, block_size=block_size))
    degree = np.bincount(neighbours_of(graph, np.flatnonzero(~covered)), minlength=n)
    ball = np.diff(graph[0]).astype(np.int32)
    state = _new_state(jnp.asarray(degree, jnp.int32), jnp.asarray(ball), jnp.asarray(covered),
                       jnp.zeros(n, bool), k, radius)  # fmt: skip
    return state, graph


def _unpadded(state: ProbCoverState, n: int) -> ProbCoverState:
    rows = ("degree", "ball_size", "covered", "taken")
    return state._replace(**{f: unpad(getattr(state, f), n) for f in rows})


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


@partial(jax.jit, static_argnames=("mesh",))
def _padded_in_jit(state: ProbCoverState, mesh) -> ProbCoverState:
    # Rows of another process cannot be read here: one program, run alike by every process.
    return _padded(state, mesh)


def _real_rows(x, mesh, n) -> int:
    """The real rows of ``x``: all of them, or ``n`` of an ``x`` padded for ``mesh``."""
    if mesh is not None:
        mesh_axis(mesh)  # a clear TypeError / ValueError for anything but a 1-D Mesh
    if n is None:
        return x.shape[0]
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive int (the real rows of x), got n={n!r}")
    if mesh is None:
        raise ValueError(f"n={n} is for an x padded for a mesh by shard_rows; got mesh=None")
    if run_rows(x, int(n), mesh) != x.shape[0]:
        raise ValueError(
            f"x has {x.shape[0]} rows but n={n}: expected {n} rows, or them padded for the mesh "
            "by shard_rows"
        )
    return int(n)


def _checked(x, k, radius, anchors, block_size, mesh, n=None):
    """Validated arguments -> ``(x, k, radius as a float32 array, anchors, block_size, n)``."""
    radius = _check_radius(radius)
    block_size = check_block_size(block_size)
    x = as_float_matrix(x, "x")
    n = _real_rows(x, mesh, n)
    k = check_k(k, n)
    if anchors is not None:
        anchors = as_float_matrix(anchors, "anchors")
        check_same_width(x, anchors, "x", "anchors")
        anchors = replicate(anchors, mesh)
    return x, k, replicate(np.float32(radius), mesh), anchors, block_size, n


def _checked_init(x, k, radius, anchors, block_size, mesh, max_edges=MAX_EDGES, n=None):
    """Validated arguments -> ``(state padded for mesh, x placed on mesh, n)``; ``n``: the real
    rows of an ``x`` already padded for ``mesh`` by ``shard_rows``."""
    x, k, r, anchors, block_size, n = _checked(x, k, radius, anchors, block_size, mesh, n)
    if mesh is None and is_concrete(x):
        got = _graph_state(x, anchors, r, n=n, k=k, block_size=block_size, max_edges=max_edges)
        if got is not None:
            return got[0], x, n
    x = x if mesh is None else shard_rows(x, mesh)
    return _init(x, anchors, r, mesh=mesh, n=n, k=k, block_size=block_size), x, n


def _check_max_edges(max_edges) -> int:
    if isinstance(max_edges, bool) or not isinstance(max_edges, (int, np.integer)) or max_edges < 0:
        raise ValueError(f"max_edges must be an int >= 0, got {max_edges!r}")
    return int(max_edges)


def _on_graph(x, state, max_edges, mesh, *extra) -> bool:  # one device, concrete, small enough
    if mesh is not None or not all(is_concrete(a) for a in (x, *state, *extra)):
        return False
    return int(np.sum(np.asarray(state.ball_size), dtype=np.int64)) <= max_edges


def probcover_init(
    x,
    k: int,
    radius: float,
    *,
    anchors=None,
    block_size: int | None = None,
    mesh=None,
    n: int | None = None,
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
      n: with ``mesh``, the number of real rows when ``x`` is already padded and sharded by
        ``shard_rows`` (e.g. read per process from a store); rows from ``n`` on are never
        anyone's neighbour, never counted, never chosen. ``None``: every row of ``x`` is real.

    Returns:
      A :class:`ProbCoverState` of ``n`` rows.
    """
    state, _, n = _checked_init(x, k, radius, anchors, block_size, mesh, n=n)
    return _unpadded(state, n)


def probcover_run(
    state: ProbCoverState,
    x,
    *,
    max_steps: int | None = None,
    block_size: int | None = None,
    max_edges: int = MAX_EDGES,
    mesh=None,
) -> ProbCoverState:
    """Continues ``state`` until it holds ``k`` points, or for at most ``max_steps`` more
    (traced: chunked runs do not recompile and equal one run exactly).

    Args:
      state: from :func:`probcover_init` or an earlier run.
      x: the same ``[n, d]`` array; with ``mesh``, also the padded array given to
        ``probcover_init(n=)``.
      max_steps: at most this many more picks (``None``: until ``k``).
      block_size: newly covered points compared with all points at once (per device on a mesh;
        default: 256, fewer for wide rows, 8 MB over all devices), on the graph-free way.
      max_edges: most ball entries of the ball graph (one device); more: the graph-free way.
      mesh: optional 1-D ``jax.sharding.Mesh``: rows sharded over its devices; a state from any
        device count (or none) continues.

    Returns:
      The advanced :class:`ProbCoverState`.
    """
    block_size = check_block_size(block_size)
    n = state.degree.shape[0]
    # x may be the padded array of shard_rows (as given to probcover_init(n=)).
    x, max_steps = check_run_args(x, run_rows(x, n, mesh), state.selected.shape[0], max_steps)
    if state.selected.shape[0] == 0:
        return state
    chunk = _chunk_rows(n, x.shape[1], x.dtype.itemsize, mesh, block_size)
    if _on_graph(x, state, _check_max_edges(max_edges), mesh, max_steps):
        stop = min(state.selected.shape[0], int(state.count) + int(max_steps))
        graph = _cached_graph(x, state.radius, n, max_edges) if stop > state.count else None
        if graph is not None or stop <= state.count:
            return state if graph is None else graph_greedy(graph, state, stop)
    if mesh is None:
        return _run(state, x, max_steps, mesh=None, chunk=chunk)
    xs, steps = shard_rows(x, mesh), replicate(max_steps, mesh)
    # A state whose rows sit on several processes is padded by one program run by all of them.
    local = all(a.is_fully_addressable for a in state if isinstance(a, jax.Array))
    state = (_padded if local else _padded_in_jit)(state, mesh)
    return _unpadded(_run(state, xs, steps, mesh=mesh, chunk=chunk), n)


def probcover_step(state: ProbCoverState, x, *, mesh=None) -> ProbCoverState:
    """Chooses one more point (unchanged once ``k`` are chosen)."""
    return probcover_run(state, x, max_steps=1, mesh=mesh)


def probcover(
    x,
    k: int,
    radius: float,
    *,
    anchors=None,
    block_size: int | None = None,
    max_edges: int = MAX_EDGES,
    mesh=None,
) -> jax.Array:
    """ProbCover selection: int32 ``[k]`` indices into ``x`` in selection order.

    Args:
      x: Array ``[n, d]``, floating.
      k: points to choose.
      radius: ball radius ``delta`` (Euclidean).
      anchors: optional ``[m, d]`` points already chosen.
      block_size: rows per block of the pairwise passes (graph-free way).
      max_edges: most ball entries of the ball graph (one device); more: the graph-free way.
      mesh: optional 1-D ``jax.sharding.Mesh``: rows sharded over its devices; the indices equal
        the single-device ones (see the module docstring).

    Returns:
      int32 ``[k]`` distinct row indices.
    """
    max_edges = _check_max_edges(max_edges)
    if (empty := empty_selection(x, k)) is not None:
        return empty
    if mesh is None and is_concrete(x):
        x, k, r, anchors, block_size, n = _checked(x, k, radius, anchors, block_size, None)
        got = _graph_state(x, anchors, r, n=n, k=k, block_size=block_size, max_edges=max_edges)
        if got is not None:
            return graph_greedy(got[1], got[0], k).selected
        max_edges = 0  # past max_edges: the graph-free way, without building the graph again
    state, xs, n = _checked_init(x, k, radius, anchors, block_size, mesh, max_edges)
    if state.selected.shape[0] == 0:
        return state.selected
    k = state.selected.shape[0]
    steps = jnp.asarray(k, jnp.int32) if mesh is None else replicate(np.int32(k), mesh)
    chunk = _chunk_rows(n, xs.shape[1], xs.dtype.itemsize, mesh, block_size)
    return _run(state, xs, steps, mesh=mesh, chunk=chunk).selected


def _kth_body(x, *, n, step, s, kk, piece, block_size, axis):
    """The ``kk``-th smallest distance from each sampled row (real rows ``0, step, ...``, ``s``
    of them, fetched onto every device a piece at a time) to the ``n`` real rows of all
    devices."""
    m = x.shape[0]
    ids = collective.row_ids(m, axis)
    acc = accum_dtype(x.dtype)
    aux, local_k = row_aux(x, "euclidean"), min(kk, m)
    block = auto_block(m, piece, block_size)

    def nearest(sub_aux):
        def fold(rows, start, fresh_from, out):  # this device's local_k nearest real rows
            raux = jax.lax.dynamic_slice_in_dim(sub_aux, start, block)
            sq = block_rank_distances(rows, raux, x, aux, "euclidean")
            near = -jax.lax.top_k(-jnp.where((ids < n)[None, :], sq, jnp.inf), local_k)[0]
            return jax.lax.dynamic_update_slice_in_dim(out, near.astype(acc), start, 0)

        return fold

    def fill(j, near):
        # A piece of the sampled rows on every device (wide rows: never all of them at once);
        # the last piece ends at row s (it overlaps the one before: the same values again).
        start = jnp.minimum(j * piece, s - piece)
        rows = (start + jnp.arange(piece, dtype=jnp.int32)) * step
        sub = collective.fetch_rows(x, ids, rows, axis)
        init = jnp.full((piece, local_k), jnp.inf, acc)
        part = fold_row_blocks(nearest(row_aux(sub, "euclidean")), sub, block, init)
        return jax.lax.dynamic_update_slice_in_dim(near, part, start, 0)

    near = jax.lax.fori_loop(0, -(-s // piece), fill, jnp.full((s, local_k), jnp.inf, acc))

    def merge(rows, start, fresh_from, other, other_ids, other_ok, best):
        # The kk smallest of a union are the kk smallest of each part's kk smallest, merged in
        # any order: each device's candidate lists go round the ring (one visiting list).
        return -jax.lax.top_k(-jnp.concatenate([best, other], axis=1), kk)[0]

    best = collective.fold_all_rows(merge, near, s, axis, s, jnp.full((s, kk), jnp.inf, acc))
    return to_metric(best[:, kk - 1], "euclidean")


@partial(jax.jit, static_argnames=("mesh", "n", "step", "s", "kk", "piece", "block_size"))
def _kth(x, *, mesh, n, step, s, kk, piece, block_size):
    body = partial(_kth_body, n=n, step=step, s=s, kk=kk, piece=piece, block_size=block_size)
    return on_mesh(body, mesh, (ROWS,), ALL)(x)


def probcover_radius(
    x,
    num_neighbors: int,
    *,
    quantile: float = 0.5,
    max_points: int = 2048,
    block_size: int | None = None,
    mesh=None,
    n: int | None = None,
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
        sampled rows are fetched onto every device, no process reads ``x`` whole).
      n: with ``mesh``, the number of real rows when ``x`` is already padded and sharded by
        ``shard_rows``: the rows sampled and searched are the first ``n``, as for the unpadded
        ``x``. ``None``: every row of ``x`` is real.

    Returns:
      The radius (a positive float; 1.0 if every such distance is 0).
    """
    x = as_float_matrix(x, "x")
    n = _real_rows(x, mesh, n)
    if n < 2:
        return 1.0
    if isinstance(num_neighbors, bool) or not isinstance(num_neighbors, int):
        raise TypeError(f"num_neighbors must be an int, got {num_neighbors!r}")
    if not 1 <= num_neighbors < n:
        raise ValueError(f"num_neighbors must be in [1, {n - 1}], got {num_neighbors}")
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    if isinstance(max_points, bool) or not isinstance(max_points, (int, np.integer)):
        raise TypeError(f"max_points must be an int >= 1, got {max_points!r}")
    if max_points < 1:
        raise ValueError(f"max_points must be an int >= 1, got {max_points!r}")
    block_size = check_block_size(block_size)
    step = max(1, n // max_points)
    # The row itself is its 0-th neighbour: the queries are not identified with rows of x.
    if mesh is None:
        sub = x[::step][:max_points]
        kth = knn(x, num_neighbors + 1, queries=sub, block_size=block_size)[0][:, num_neighbors]
    else:
        s = len(range(0, n, step)[:max_points])
        piece = _piece_rows(s, x.shape[1], x.dtype.itemsize, 1)
        kth = _kth(shard_rows(x, mesh), mesh=mesh, n=n, step=step, s=s, kk=num_neighbors + 1,
                   piece=piece, block_size=block_size)  # fmt: skip
        kth = jnp.asarray(np.asarray(kth))  # replicated: every process holds it
    r = float(jnp.quantile(kth, quantile))
    return r if r > 0 else 1.0
