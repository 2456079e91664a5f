"""Row-sharded selection kernels over a 1-D ``jax.sharding.Mesh``, with ``jax.shard_map``.

Each device holds ``N / P`` rows of ``x`` and the matching slice of the running state (for greedy
k-center, ``min_dist``). A step of greedy k-center then:

1. finds its local winner (largest ``min_dist``, lowest local index on ties);
2. reduces the ``P`` local winners to the global one with two scalar collectives (``pmax`` of the
   value, then ``pmin`` of the global index among the devices that hold that value: ties go to
   the lowest *global* index, as on one device);
3. fetches the winning row with one collective (``psum`` of the row, zero on every device but its
   owner: adding zeros is exact);
4. updates its local ``min_dist`` with one local mat-vec.

Communication per step is ``O(P + d)`` values; ``x`` never leaves its device. The statistics that
span all rows (the mean row the squared norms are taken from, the seed scores of the first center,
the cosine ``sum u`` and ``U^T U``) are local sums combined with ``psum``.

When ``N`` is not a multiple of ``P``, ``x`` is padded with zero rows whose ``min_dist`` is
``-inf`` from the start, so they can never be selected, and the padding is dropped from every
state returned to the caller (a ``KCenterState`` always has ``min_dist`` of length ``N``, so a
checkpoint restores onto any device count).

Exactness: distances are computed by the same formulas as on one device; the only difference is
the order of the additions in the global sums (a ``psum`` of per-device sums instead of one sum).
Where those sums are exact (cosine, whose shift is zero; 16-bit storage, whose shift is zero; data
whose column sums are exact in float32) every distance is bit-identical, so the indices are too,
ties included. Otherwise the mean row can differ in its last bit, and a distance with it by a
rounding unit: indices still agree unless two *different* candidates are within rounding of each
other — notably exact duplicates of non-centred float data once every distinct point is chosen,
where the remaining distances are all rounding noise around 0 (on one device too: that order is
an artefact of rounding either way).

Public entry points are the ordinary kernels with ``mesh=``: ``greedy_k_center(x, k,
mesh=mesh)``, ``kcenter_init(..., mesh=mesh)``, ``kcenter_run(..., mesh=mesh)``,
``farthest_point(x, k, mesh=mesh)`` and ``closest_point(x, k, mesh=mesh)``; kernel herding
(``kernel_herding``, ``herding_init`` / ``herding_run``), k-means (``kmeans``,
``kmeans_plusplus``, ``kmeans_init`` / ``kmeans_run``, ``kmeans_assign``, ``kmeans_medoids``,
``typicality``, ``typical_points``), exact kNN (``knn``) and ZCore (``zcore_init`` /
``zcore_run`` / ``zcore_scores``); and ``select`` / ``split`` with ``mesh=``. Each section below
says how exact its kernel is.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from .distance import (
    ROW_BLOCK_BUDGET,
    PointStats,
    accum_dtype,
    auto_block,
    block_rank_distances,
    first_argmax,
    fold_row_blocks,
    point_rank_distances,
    row_aux,
    to_metric,
)
from .kcenter import KCenterState

__all__ = [
    "make_mesh",
    "mesh_axis",
    "padded_rows",
    "shard_rows",
    "sharded_kcenter_init",
    "sharded_kcenter_run",
]

AXIS = "data"


def make_mesh(devices=None, axis_name: str = AXIS) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all devices of all processes, ``jax.devices()``)."""
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("make_mesh needs at least one device")
    return Mesh(np.asarray(devices), (axis_name,))


def mesh_axis(mesh) -> tuple[str, int]:
    """``(axis name, number of devices)`` of a 1-D mesh; a clear error for anything else."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    if len(mesh.axis_names) != 1:
        raise ValueError(
            f"mesh must be 1-D (rows are sharded over one axis), got axes {mesh.axis_names}; "
            "build one with goldener_jax.kernels.make_mesh()"
        )
    return mesh.axis_names[0], int(mesh.devices.size)


def padded_rows(n: int, mesh) -> int:
    """Rows after padding ``n`` to a multiple of the mesh size."""
    _, p = mesh_axis(mesh)
    return -(-max(n, 1) // p) * p


def shard_rows(x, mesh, fill=0):
    """``x`` (rows first) padded with ``fill`` to a multiple of the mesh size and row-sharded.

    An array already row-sharded on ``mesh`` with the padded length is returned as it is (no
    copy). On one process, anything else is padded where it lives and placed with
    ``jax.device_put``. When the mesh spans several processes, or ``x`` is not an array but
    anything sliceable by rows (a ``FeatureStore``'s TensorStore ``vectors``, a NumPy memmap),
    each process reads only the rows of its own devices (``jax.make_array_from_callback``): every
    process passes the same ``x`` (e.g. the same store path), and none holds all of it.

    The padding rows are ordinary rows to anyone who does not know ``n``: give the result to the
    ``sharded_*`` functions with ``n=`` (they never select a padding row), and give the kernels'
    ``mesh=`` entry points (``greedy_k_center(x, k, mesh=...)``, ``select(..., mesh=...)``) the
    unpadded ``x``: they pad it themselves. When ``n`` is a multiple of the mesh size, nothing is
    padded and both uses are the same.
    """
    axis, _ = mesh_axis(mesh)
    ndim = len(x.shape)
    sharding = NamedSharding(mesh, P(axis, *([None] * (ndim - 1))))
    n = x.shape[0]
    rows = padded_rows(n, mesh)
    if isinstance(x, jax.Array) and rows == n and x.sharding.is_equivalent_to(sharding, ndim):
        return x
    is_array = isinstance(x, (np.ndarray, jax.Array))
    if is_array and sharding.is_fully_addressable:
        if rows != n:
            widths = [(0, rows - n)] + [(0, 0)] * (ndim - 1)
            pad = np.pad if isinstance(x, np.ndarray) else jnp.pad
            x = pad(x, widths, constant_values=fill)
        return jax.device_put(x, sharding)

    def local_rows(index):
        start, stop, _ = index[0].indices(rows)
        real = x[start : min(stop, n)]
        real = np.asarray(real.read().result() if hasattr(real, "read") else real)
        if stop > n:
            extra = np.full((stop - max(start, n), *real.shape[1:]), fill, real.dtype)
            real = np.concatenate([real, extra])
        return real

    dtype = x.dtype.numpy_dtype if hasattr(x.dtype, "numpy_dtype") else x.dtype
    return jax.make_array_from_callback((rows, *x.shape[1:]), sharding, local_rows, dtype=dtype)


def _replicate(a, mesh):
    """``a`` on every device of ``mesh`` (every process passes the same value)."""
    sharding = NamedSharding(mesh, P())
    if isinstance(a, jax.Array) and a.sharding.is_equivalent_to(sharding, a.ndim):
        return a
    if sharding.is_fully_addressable:
        return jax.device_put(a, sharding)
    host = np.asarray(a)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


ROWS = "rows"
"""Spec marker for ``on_mesh``: the argument / result is row-sharded over the mesh axis."""
ALL = "all"
"""Spec marker for ``on_mesh``: the argument / result is the same on every device."""


def _spec(marker, axis):
    if marker == ROWS:
        return P(axis)
    if marker == ALL:
        return P()
    raise ValueError(f"on_mesh specs are ROWS or ALL, got {marker!r}")


def on_mesh(body, mesh, in_specs, out_specs):
    """``body(*args, axis=...)`` as a function of ``args``: one body, one device or a mesh.

    Without a mesh, ``body`` runs on the arrays as they are with ``axis=None`` (the collectives
    of ``kernels.collective`` are then plain array operations). With a 1-D mesh it runs under
    ``jax.shard_map`` with ``axis`` the mesh axis name: arguments and results marked ``ROWS`` are
    row-sharded (pad them first, ``shard_rows``), those marked ``ALL`` replicated. ``in_specs``
    and ``out_specs`` are pytrees of markers matching the arguments (a tuple) and the results.
    Call it inside the caller's ``jax.jit`` (with ``mesh`` static).
    """
    if mesh is None:
        return lambda *args: body(*args, axis=None)
    axis, _ = mesh_axis(mesh)
    to_spec = lambda tree: jax.tree.map(lambda m: _spec(m, axis), tree)  # noqa: E731
    return jax.shard_map(
        partial(body, axis=axis),
        mesh=mesh,
        in_specs=to_spec(tuple(in_specs)),
        out_specs=to_spec(out_specs),
        check_vma=False,
    )


def replicate(a, mesh):
    """``a`` on every device of ``mesh`` (every process passes the same value); ``a`` as it is
    without a mesh."""
    if mesh is None:
        return a
    return _replicate(a, mesh)


def unpad(a, n: int):
    """The first ``n`` rows of ``a`` (drops the padding ``shard_rows`` added)."""
    return a if a.shape[0] == n else a[:n]


# --- inside shard_map: helpers on the local block ----------------------------------------------


def _local_ids(m: int, axis: str) -> jax.Array:
    return jax.lax.axis_index(axis).astype(jnp.int32) * m + jnp.arange(m, dtype=jnp.int32)


def _global_first_argmax(values: jax.Array, ids: jax.Array, big: int, axis: str) -> jax.Array:
    """Global index of the largest value over all devices, lowest global index on ties."""
    i = first_argmax(values)
    v = values[i]
    vmax = jax.lax.pmax(v, axis)
    return jax.lax.pmin(jnp.where(v == vmax, ids[i], big), axis)


def _fetch_row(x: jax.Array, ids: jax.Array, index: jax.Array, axis: str) -> jax.Array:
    """Row ``index`` (global) of the sharded ``x`` on every device: one ``psum`` of d values."""
    m = x.shape[0]
    local = jnp.clip(index - ids[0], 0, m - 1)
    owner = (index >= ids[0]) & (index < ids[0] + m)
    return jax.lax.psum(jnp.where(owner, x[local], jnp.zeros_like(x[local])), axis)


def _local_stats(x: jax.Array, n: int, metric: str, axis: str) -> PointStats:
    """``point_stats`` with the mean row summed over all devices (padding rows are zero)."""
    acc = accum_dtype(x.dtype)
    d = x.shape[1]
    if metric == "cosine":
        return PointStats(jnp.zeros((d,), acc), row_aux(x, "cosine"))
    if jnp.dtype(x.dtype).itemsize >= 4 and n > 0:
        shift = jax.lax.psum(jnp.sum(x.astype(acc), axis=0), axis) / n
    else:
        shift = jnp.zeros((d,), acc)
    return PointStats(shift, jnp.sum(jnp.square(x.astype(acc) - shift), axis=1))


def _local_seed_scores(x, stats: PointStats, n: int, metric: str, axis: str) -> jax.Array:
    """``kcenter._seed_scores`` for the local rows, with the sums over all rows from ``psum``."""
    m, d = x.shape
    acc = accum_dtype(x.dtype)
    if metric != "cosine":
        if jnp.dtype(x.dtype).itemsize >= 4:
            return stats.sq
        mean = jax.lax.psum(jnp.sum(x.astype(acc), axis=0), axis) / n
        return jnp.sum(jnp.square(x.astype(acc) - mean), axis=1)

    block = auto_block(d, m, budget=ROW_BLOCK_BUDGET)
    inv = stats.sq  # 1 / |x_i| (0 for zero rows, padding included)

    def accumulate(rows, start, fresh_from, carry):
        s, gram = carry
        fresh = (start + jnp.arange(block)) >= fresh_from
        w = jnp.where(fresh, jax.lax.dynamic_slice_in_dim(inv, start, block), 0)
        u = rows.astype(acc) * w[:, None]
        return s + jnp.sum(u, axis=0), gram + jnp.dot(u.T, u, precision=jax.lax.Precision.HIGHEST)

    s, gram = fold_row_blocks(accumulate, x, block, (jnp.zeros((d,), acc), jnp.zeros((d, d), acc)))
    s, gram = jax.lax.psum((s, gram), axis)

    def score_block(rows, start, fresh_from, scores):
        u = rows.astype(acc) * jax.lax.dynamic_slice_in_dim(inv, start, block)[:, None]
        ug = jnp.dot(u, gram, precision=jax.lax.Precision.HIGHEST)
        sc = n - 2.0 * (u @ s) + jnp.sum(ug * u, axis=1)
        return jax.lax.dynamic_update_slice_in_dim(scores, sc, start, axis=0)

    return fold_row_blocks(score_block, x, block, jnp.zeros((m,), acc))


def _local_take(min_dist, selected, count, x, ids, stats, index, metric, axis):
    center = _fetch_row(x, ids, index, axis)
    d = point_rank_distances(x, stats, center, metric).astype(min_dist.dtype)
    min_dist = jnp.where(ids == index, -jnp.inf, jnp.minimum(min_dist, d))
    return min_dist, selected.at[count].set(index.astype(jnp.int32)), count + 1


# --- jitted programs ---------------------------------------------------------------------------


@partial(jax.jit, static_argnames=("mesh", "n", "k", "metric", "block_size"))
def _init(xs, anchors, *, mesh, n, k, metric, block_size):
    axis, p = mesh_axis(mesh)
    acc = accum_dtype(xs.dtype)
    has_anchors = anchors is not None and anchors.shape[0] > 0
    big = xs.shape[0]

    def local(x, anchors):
        m = x.shape[0]
        ids = _local_ids(m, axis)
        valid = ids < n
        selected = jnp.full((k,), -1, jnp.int32)
        count = jnp.zeros((), jnp.int32)
        if has_anchors:
            block = auto_block(m, anchors.shape[0], block_size)
            x_aux, a_aux = row_aux(x, metric), row_aux(anchors, metric)

            def fold(rows, start, fresh_from, best):
                aux = jax.lax.dynamic_slice_in_dim(a_aux, start, block)
                return jnp.minimum(
                    best, jnp.min(block_rank_distances(x, x_aux, rows, aux, metric), 1)
                )

            md = fold_row_blocks(fold, anchors, block, jnp.full((m,), jnp.inf, x_aux.dtype))
            return jnp.where(valid, md.astype(acc), -jnp.inf), selected, count
        md = jnp.where(valid, jnp.inf, -jnp.inf).astype(acc)
        if k == 0:
            return md, selected, count
        stats = _local_stats(x, n, metric, axis)
        scores = jnp.where(valid, _local_seed_scores(x, stats, n, metric, axis), -jnp.inf)
        seed = _global_first_argmax(scores, ids, big, axis)
        return _local_take(md, selected, count, x, ids, stats, seed, metric, axis)

    fn = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(axis, None), P()),
        out_specs=(P(axis), P(), P()),
        check_vma=False,
    )
    if anchors is None:
        anchors = jnp.zeros((0, xs.shape[1]), xs.dtype)
    return fn(xs, anchors)


@partial(jax.jit, static_argnames=("mesh", "n", "metric"))
def _run(min_dist, selected, count, xs, max_steps, *, mesh, n, metric):
    axis, _ = mesh_axis(mesh)
    k = selected.shape[0]
    big = xs.shape[0]

    def local(min_dist, selected, count, x, max_steps):
        ids = _local_ids(x.shape[0], axis)
        stop = jnp.minimum(k, count + max_steps)
        stats = _local_stats(x, n, metric, axis)

        # `x` is closed over, not carried: a carried `x` would be copied by XLA every iteration.
        def body(carry):
            md, sel, c = carry
            index = _global_first_argmax(md, ids, big, axis)
            return _local_take(md, sel, c, x, ids, stats, index, metric, axis)

        return jax.lax.while_loop(lambda c: c[2] < stop, body, (min_dist, selected, count))

    fn = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(axis), P(), P(), P(axis, None), P()),
        out_specs=(P(axis), P(), P()),
        check_vma=False,
    )
    return fn(min_dist, selected, count, xs, max_steps)


def _unpad(min_dist: jax.Array, n: int) -> jax.Array:
    return min_dist if min_dist.shape[0] == n else min_dist[:n]


def sharded_kcenter_init(
    x, k: int, *, mesh, metric: str = "euclidean", anchors=None, block_size=None, n=None
):
    """``kcenter_init`` on ``mesh`` (arguments already validated by the caller).

    Returns ``(state, xs)``: the state (``min_dist`` of length ``n``) and ``x`` as placed on the
    mesh. ``n``: the number of real rows when ``x`` is already padded and sharded (e.g. built with
    ``shard_rows`` from a store that no process holds whole); its rows from ``n`` on are never
    selected. ``sharded_kcenter_run(state, xs, ...)`` continues with the same padded ``xs``.
    """
    n = x.shape[0] if n is None else int(n)
    if not 0 <= k <= n <= x.shape[0]:
        raise ValueError(f"need 0 <= k <= n <= rows, got k={k}, n={n}, x of shape {x.shape}")
    xs = shard_rows(x, mesh)
    if anchors is not None:
        anchors = _replicate(anchors, mesh)
    md, selected, count = _init(
        xs, anchors, mesh=mesh, n=n, k=k, metric=metric, block_size=block_size
    )
    return KCenterState(_unpad(md, n), selected, count), xs


def sharded_kcenter_run(
    state: KCenterState, x, max_steps, *, mesh, metric: str = "euclidean", xs=None
):
    """``kcenter_run`` on ``mesh``: pads ``state.min_dist`` with ``-inf``, runs, unpads.

    ``x`` may be the padded, sharded array of ``sharded_kcenter_init``: the real rows are the
    first ``len(state.min_dist)``."""
    n = state.min_dist.shape[0]
    if xs is None:
        xs = shard_rows(x, mesh)
    md = shard_rows(state.min_dist, mesh, fill=-jnp.inf)
    selected = _replicate(state.selected, mesh)
    count = state.count if isinstance(state.count, jax.Array) else np.int32(state.count)
    count = _replicate(count, mesh)
    steps = _replicate(np.asarray(max_steps, np.int32), mesh)
    md, selected, count = _run(md, selected, count, xs, steps, mesh=mesh, n=n, metric=metric)
    return KCenterState(_unpad(md, n), selected, count)


# --- farthest / closest point ------------------------------------------------------------------
#
# The nearest-neighbour table is row-sharded like `x`: device p holds nn_dist / nn_index /
# remaining of its rows. Building it needs every row against every row: the row blocks travel
# round a ring (`ppermute`, P - 1 hops), so a device holds its own block and one visiting block,
# never all of `x`. After each pick, the rows whose neighbour just left ("stale") are recomputed:
# every device contributes up to `_RECOMPUTE_BATCH` of its stale rows, the P batches are
# `all_gather`ed (O(P x batch x d)), each device compares them with its own remaining rows, and a
# (min, lowest global index) reduction over devices gives their new neighbours. Neighbours are
# chosen with ties to the lowest global index, as `jnp.argmin` does on one device.
#
# Exactness: the table uses the block form |a|^2 + |b|^2 - 2 a.b, whose rounding (of order
# eps |a|^2) depends on how XLA fuses and tiles each compiled program, not only on the data. The
# indices equal the single-device kernel's whenever the distances are exact (tested on integer
# data, duplicates on different shards included) and, on random float data, wherever no two
# candidates are within that rounding of each other (farthest point: tested). Closest point on
# float data is the sensitive case: it ranks the smallest neighbour distances, where unrelated
# pairs can lie within rounding of each other, so its order can differ from one device's.

_RECOMPUTE_BATCH = 16


def _better(d, i, best_d, best_i):
    """(d, i) beats (best_d, best_i): smaller distance, or equal and lower index."""
    return (d < best_d) | ((d == best_d) & (i < best_i))


def _block_nearest(rows, rows_aux, row_ids, other, other_aux, other_ids, other_ok, metric):
    """Nearest among ``other`` (where ``other_ok``, excluding the row itself) of each of
    ``rows``: ``(distance, global index)``, ``(inf, big)`` where there is none."""
    d = block_rank_distances(rows, rows_aux, other, other_aux, metric)
    valid = other_ok[None, :] & (row_ids[:, None] != other_ids[None, :])
    d = jnp.where(valid, d, jnp.inf)
    j = jnp.argmin(d, axis=1)
    best = jnp.take_along_axis(d, j[:, None], axis=1)[:, 0]
    return best, other_ids[j]


def _global_first_argmin(values, ids, big, axis):
    i = jnp.argmin(values)
    v = values[i]
    vmin = jax.lax.pmin(v, axis)
    return jax.lax.pmin(jnp.where(v == vmin, ids[i], big), axis)


@partial(jax.jit, static_argnames=("mesh", "n", "k", "metric", "block_size"))
def _greedy_init(xs, *, mesh, n, k, metric, block_size):
    axis, p = mesh_axis(mesh)
    big = xs.shape[0]

    def local(x):
        m = x.shape[0]
        ids = _local_ids(m, axis)
        remaining = ids < n
        aux = row_aux(x, metric)
        block = auto_block(m, m, block_size)
        me = jax.lax.axis_index(axis).astype(jnp.int32)
        perm = [(i, (i + 1) % p) for i in range(p)]

        def visit(s, carry):
            nn_dist, nn_index, other = carry
            owner = (me - s) % p
            other_ids = owner * m + jnp.arange(m, dtype=jnp.int32)
            other_aux = row_aux(other, metric)
            other_ok = other_ids < n

            def fold(rows, start, fresh_from, tables):
                best_d, best_i = tables
                row_ids = ids[0] + start + jnp.arange(block, dtype=jnp.int32)
                aux_rows = jax.lax.dynamic_slice_in_dim(aux, start, block)
                d, i = _block_nearest(
                    rows, aux_rows, row_ids, other, other_aux, other_ids, other_ok, metric
                )
                old_d = jax.lax.dynamic_slice_in_dim(best_d, start, block)
                old_i = jax.lax.dynamic_slice_in_dim(best_i, start, block)
                take = _better(d, i, old_d, old_i)
                new_d, new_i = jnp.where(take, d, old_d), jnp.where(take, i, old_i)
                return (
                    jax.lax.dynamic_update_slice_in_dim(best_d, new_d, start, axis=0),
                    jax.lax.dynamic_update_slice_in_dim(best_i, new_i, start, axis=0),
                )

            nn_dist, nn_index = fold_row_blocks(fold, x, block, (nn_dist, nn_index))
            other = jax.lax.ppermute(other, axis, perm)
            return nn_dist, nn_index, other

        init = (jnp.full((m,), jnp.inf, aux.dtype), jnp.full((m,), big, jnp.int32), x)
        nn_dist, nn_index, _ = jax.lax.fori_loop(0, p, visit, init)
        nn_index = jnp.where(jnp.isfinite(nn_dist), nn_index, -1)
        return nn_dist, nn_index, remaining

    fn = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(axis, None),),
        out_specs=(P(axis), P(axis), P(axis)),
        check_vma=False,
    )
    nn_dist, nn_index, remaining = fn(xs)
    return nn_dist, nn_index, remaining


@partial(jax.jit, static_argnames=("mesh", "n", "mode", "metric"))
def _greedy_run(
    nn_dist, nn_index, remaining, selected, count, xs, max_steps, *, mesh, n, mode, metric
):
    axis, p = mesh_axis(mesh)
    k = selected.shape[0]
    big = xs.shape[0]

    def local(nn_dist, nn_index, remaining, selected, count, x, max_steps):
        m = x.shape[0]
        ids = _local_ids(m, axis)
        aux = row_aux(x, metric)
        batch = min(_RECOMPUTE_BATCH, m)
        stop = jnp.minimum(k, count + max_steps)

        def step(carry):
            nn_dist, nn_index, remaining, selected, count = carry
            if mode == "farthest":
                chosen = _global_first_argmax(
                    jnp.where(remaining, nn_dist, -jnp.inf), ids, big, axis
                )
            else:
                chosen = _global_first_argmin(
                    jnp.where(remaining, nn_dist, jnp.inf), ids, big, axis
                )
            remaining = remaining & (ids != chosen)
            stale = remaining & (nn_index == chosen)

            def refresh(c):
                nn_dist, nn_index, stale = c
                (slots,) = jnp.nonzero(stale, size=batch, fill_value=m)
                real = slots < m
                local_rows = jnp.minimum(slots, m - 1)
                rows = jax.lax.all_gather(x[local_rows], axis, tiled=True)  # [P*batch, d]
                row_ids = jax.lax.all_gather(jnp.where(real, ids[local_rows], -1), axis, tiled=True)
                rows_aux = row_aux(rows, metric)
                d, i = _block_nearest(rows, rows_aux, row_ids, x, aux, ids, remaining, metric)
                dmin = jax.lax.pmin(d, axis)
                i = jax.lax.pmin(jnp.where(d == dmin, i, big), axis)
                i = jnp.where(jnp.isfinite(dmin), i, -1)
                me = jax.lax.axis_index(axis)
                mine_d = jax.lax.dynamic_slice_in_dim(dmin, me * batch, batch)
                mine_i = jax.lax.dynamic_slice_in_dim(i, me * batch, batch)
                nn_dist = nn_dist.at[slots].set(mine_d, mode="drop")
                nn_index = nn_index.at[slots].set(mine_i, mode="drop")
                stale = stale.at[slots].set(False, mode="drop")
                return nn_dist, nn_index, stale

            nn_dist, nn_index, _ = jax.lax.while_loop(
                lambda c: jax.lax.psum(jnp.sum(c[2], dtype=jnp.int32), axis) > 0,
                refresh,
                (nn_dist, nn_index, stale),
            )
            selected = selected.at[count].set(chosen.astype(jnp.int32))
            return nn_dist, nn_index, remaining, selected, count + 1

        return jax.lax.while_loop(
            lambda c: c[4] < stop, step, (nn_dist, nn_index, remaining, selected, count)
        )

    fn = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(axis), P(axis), P(axis), P(), P(), P(axis, None), P()),
        out_specs=(P(axis), P(axis), P(axis), P(), P()),
        check_vma=False,
    )
    return fn(nn_dist, nn_index, remaining, selected, count, xs, max_steps)


def sharded_greedy_select(
    x, k: int, *, mesh, mode: str, metric: str = "euclidean", block_size=None
) -> jax.Array:
    """``farthest_point`` / ``closest_point`` on ``mesh`` (arguments validated by the caller)."""
    n = x.shape[0]
    xs = shard_rows(x, mesh)
    nn_dist, nn_index, remaining = _greedy_init(
        xs, mesh=mesh, n=n, k=k, metric=metric, block_size=block_size
    )
    selected = _replicate(np.full((k,), -1, np.int32), mesh)
    count = _replicate(np.int32(0), mesh)
    steps = _replicate(np.int32(k), mesh)
    out = _greedy_run(
        nn_dist,
        nn_index,
        remaining,
        selected,
        count,
        xs,
        steps,
        mesh=mesh,
        n=n,
        mode=mode,
        metric=metric,
    )
    return out[3]


# --- kernel herding ----------------------------------------------------------------------------
#
# The state's N-vectors (kernel mean, penalty, taken) are row-sharded like `x`; padding rows are
# `taken` from the start, so they can never be chosen. A step: local scores, the global first
# argmax (ties to the lowest global index), the winning row fetched with one `psum` of d values,
# and one local kernel row added to the penalty. The RBF kernel mean needs every row against every
# row: block s is broadcast to every device at step s, so that every device adds the P partial
# sums in the same order (`_ring_fold(ordered=True)`). The linear kernel mean uses the mean row,
# a `psum` of the per-device column sums.
#
# Exactness: each kernel value is computed by the same formula as on one device; only the order
# of the additions of the global sums (mean row, RBF kernel mean) differs, so the kernel mean can
# differ from one device's in its last bit. Equal rows still get equal kernel means (the same
# additions in the same order on every device), so ties between duplicates on different shards
# go to the lowest global index as on one device. Otherwise the indices differ only where two
# different candidates' scores are within rounding of each other.


def _ring_fold(x, n, axis, p, block, fn, init, *, ordered=False, local=None):
    """Folds ``fn(rows, start, fresh_from, other, other_ids, other_ok, carry)`` over every (local
    row block, visiting block) pair, so each device sees every row of ``x`` once and holds at most
    two blocks of rows. ``rows`` are blocks of ``local`` (default: the device's own rows of
    ``x``), ``other`` the visiting rows of ``x``.

    By default the devices' row blocks go round a ring (``ppermute``, P - 1 hops): device ``q``
    sees the blocks in the order ``q, q - 1, ...``, so ``fn`` must not depend on that order (a
    min, a top-k with ties to the lowest index). ``ordered=True`` broadcasts block ``s`` from its
    owner at step ``s`` (a ``psum`` that adds zeros, exact) instead: every device sees the blocks
    in the order ``0, 1, ..., P - 1``, so a floating sum over them rounds the same way for two
    equal rows on different devices (their ties survive)."""
    m = x.shape[0]
    me = jax.lax.axis_index(axis).astype(jnp.int32)
    perm = [(i, (i + 1) % p) for i in range(p)]

    def visit(s, carry):
        acc, other = carry
        if ordered:
            owner = s
            other = jax.lax.psum(jnp.where(me == s, x, jnp.zeros_like(x)), axis)
        else:
            owner = (me - s) % p
        other_ids = owner * m + jnp.arange(m, dtype=jnp.int32)
        other_ok = other_ids < n

        def fold(rows, start, fresh_from, acc):
            return fn(rows, start, fresh_from, other, other_ids, other_ok, acc)

        acc = fold_row_blocks(fold, x if local is None else local, block, acc)
        if not ordered:
            other = jax.lax.ppermute(other, axis, perm)
        return acc, other

    return jax.lax.fori_loop(0, p, visit, (init, x))[0]


@partial(jax.jit, static_argnames=("mesh", "n", "k", "kernel", "length_scale", "block_size"))
def _herding_init(xs, *, mesh, n, k, kernel, length_scale, block_size):
    axis, p = mesh_axis(mesh)
    f32 = jnp.float32

    def local(x):
        m = x.shape[0]
        ids = _local_ids(m, axis)
        valid = ids < n
        if kernel == "linear":
            mean = jax.lax.psum(jnp.sum(x.astype(f32), axis=0), axis) / n
            mean_kernel = jnp.dot(x.astype(f32), mean, precision=jax.lax.Precision.HIGHEST)
        else:
            block = auto_block(m, m, block_size)
            aux = row_aux(x, "euclidean")

            def fold(rows, start, fresh_from, other, other_ids, other_ok, sums):
                raux = jax.lax.dynamic_slice_in_dim(aux, start, block)
                sq = block_rank_distances(
                    rows, raux, other, row_aux(other, "euclidean"), "euclidean"
                )
                kv = jnp.where(other_ok[None, :], jnp.exp(-sq / (2.0 * length_scale**2)), 0.0)
                old = jax.lax.dynamic_slice_in_dim(sums, start, block)
                # The last block may overlap the previous one: its repeated rows are rewritten
                # with the same value, not added twice.
                fresh = (start + jnp.arange(block)) >= fresh_from
                new = jnp.where(fresh, old + jnp.sum(kv, axis=1), old)
                return jax.lax.dynamic_update_slice_in_dim(sums, new, start, axis=0)

            sums = _ring_fold(x, n, axis, p, block, fold, jnp.zeros((m,), f32), ordered=True)
            mean_kernel = sums / n
        return (
            jnp.where(valid, mean_kernel, 0.0).astype(f32),
            jnp.zeros((m,), f32),
            ~valid,
            jnp.full((k,), -1, jnp.int32),
            jnp.zeros((), jnp.int32),
        )

    fn = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(axis, None),),
        out_specs=(P(axis), P(axis), P(axis), P(), P()),
        check_vma=False,
    )
    return fn(xs)


@partial(jax.jit, static_argnames=("mesh", "kernel", "length_scale"))
def _herding_run(
    mean_kernel, penalty, taken, selected, count, xs, max_steps, *, mesh, kernel, length_scale
):
    from .herding import _kernel_row

    axis, _ = mesh_axis(mesh)
    k = selected.shape[0]
    big = xs.shape[0]

    def local(mean_kernel, penalty, taken, selected, count, x, max_steps):
        ids = _local_ids(x.shape[0], axis)
        stop = jnp.minimum(k, count + max_steps)
        x_sq = jnp.sum(jnp.square(x.astype(jnp.float32)), axis=1)

        # `x` is closed over, not carried.
        def body(carry):
            penalty, taken, selected, count = carry
            score = mean_kernel - penalty / (count + 1).astype(jnp.float32)
            index = _global_first_argmax(jnp.where(taken, -jnp.inf, score), ids, big, axis)
            row = _kernel_row(x, x_sq, _fetch_row(x, ids, index, axis), kernel, length_scale)
            return (
                penalty + row,
                taken | (ids == index),
                selected.at[count].set(index.astype(jnp.int32)),
                count + 1,
            )

        carry = (penalty, taken, selected, count)
        penalty, taken, selected, count = jax.lax.while_loop(lambda c: c[3] < stop, body, carry)
        return mean_kernel, penalty, taken, selected, count

    fn = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(axis), P(axis), P(axis), P(), P(), P(axis, None), P()),
        out_specs=(P(axis), P(axis), P(axis), P(), P()),
        check_vma=False,
    )
    return fn(mean_kernel, penalty, taken, selected, count, xs, max_steps)


def sharded_herding_init(
    x, k: int, *, mesh, kernel: str, length_scale: float, block_size=None, n=None
):
    """``herding_init`` on ``mesh`` (arguments validated by the caller).

    Returns ``(state, xs)``: the state (N-vectors of length ``n``) and ``x`` as placed on the
    mesh; ``n`` as in ``sharded_kcenter_init``."""
    from .herding import HerdingState

    n = x.shape[0] if n is None else int(n)
    if not 0 <= k <= n <= x.shape[0]:
        raise ValueError(f"need 0 <= k <= n <= rows, got k={k}, n={n}, x of shape {x.shape}")
    xs = shard_rows(x, mesh)
    out = _herding_init(
        xs, mesh=mesh, n=n, k=k, kernel=kernel, length_scale=length_scale, block_size=block_size
    )
    mean_kernel, penalty, taken, selected, count = out
    state = HerdingState(
        _unpad(mean_kernel, n), _unpad(penalty, n), _unpad(taken, n), selected, count
    )
    return state, xs


def sharded_herding_run(state, x, max_steps, *, mesh, kernel: str, length_scale: float, xs=None):
    """``herding_run`` on ``mesh``: pads the state (padding rows taken), runs, unpads."""
    from .herding import HerdingState

    n = state.mean_kernel.shape[0]
    if xs is None:
        xs = shard_rows(x, mesh)
    mean_kernel = shard_rows(state.mean_kernel, mesh, fill=0.0)
    penalty = shard_rows(state.penalty, mesh, fill=0.0)
    taken = shard_rows(state.taken, mesh, fill=True)
    selected = _replicate(state.selected, mesh)
    count = state.count if isinstance(state.count, jax.Array) else np.int32(state.count)
    count = _replicate(count, mesh)
    steps = _replicate(np.asarray(max_steps, np.int32), mesh)
    out = _herding_run(
        mean_kernel,
        penalty,
        taken,
        selected,
        count,
        xs,
        steps,
        mesh=mesh,
        kernel=kernel,
        length_scale=length_scale,
    )
    return HerdingState(*(_unpad(a, n) for a in out[:3]), out[3], out[4])


# --- k-means -----------------------------------------------------------------------------------
#
# Rows (and the assignment) are row-sharded; centroids are replicated. k-means++ seeding draws
# the same uniforms as on one device; the cumulative sum of the weights is computed on every
# device over the `all_gather`ed [n] weights by the same operation as on one device (a cumsum of
# 1e5 float32 values is off by many units of one weight, differently for each order of addition,
# so per-device cumsums plus offsets would move draws by a point or more), the drawn index is a
# global minimum (`pmin`), the drawn row fetched with one `psum`. A Lloyd iteration assigns
# locally (no communication) and `psum`s the per-cluster sums and counts (O(k d)). The medoid /
# TypiClust picker is a loop of global reductions: per pick a `psum` of k counts and a (value,
# lowest global index) reduction. Typicality needs each point's nearest same-cluster neighbours
# over all rows: the row blocks go round a ring and each device keeps a running top-m of its own
# rows.
#
# Exactness: the assignment step and the per-point scores are local and computed as on one
# device; what differs is the order of the additions in the global sums (mean row of the seeding
# distances, centroid sums). The centroids can therefore differ from one device's in their last
# bits (compare them with a tolerance); the seeds, assignments and picked indices are equal
# unless a draw, a point or a score falls within that rounding of a boundary (measured at
# n = 200,000, d = 32, k = 100: equal seeds; after 10 Lloyd iterations 1 to 6 points assigned
# differently, on 8 and 2 devices). Where the sums are exact (tests: quarter-integer data
# symmetric about 0) everything is bit-identical, centroids included.


def _fetch_rows(x: jax.Array, ids: jax.Array, index: jax.Array, axis: str) -> jax.Array:
    """Rows ``index`` (global, ``[r]``) of the sharded ``x`` on every device: one ``psum``."""
    m = x.shape[0]
    local = jnp.clip(index - ids[0], 0, m - 1)
    owner = (index >= ids[0]) & (index < ids[0] + m)
    rows = x[local]
    return jax.lax.psum(jnp.where(owner[:, None], rows, jnp.zeros_like(rows)), axis)


def _local_plusplus(x, key, ids, n, k, axis, p):
    """``kmeans._plusplus`` on the local rows: the seeds (global indices), replicated."""
    acc = accum_dtype(x.dtype)
    big = p * x.shape[0]
    stats = _local_stats(x, n, "euclidean", axis)
    first = jax.random.randint(jax.random.fold_in(key, 0), (), 0, n).astype(jnp.int32)
    row = _fetch_row(x, ids, first, axis)
    min_d = point_rank_distances(x, stats, row, "euclidean").astype(acc)
    min_d = jnp.where(ids == first, 0.0, min_d)
    taken = (ids == first) | (ids >= n)
    seeds = jnp.full((k,), -1, jnp.int32).at[0].set(first)

    def body(t, carry):
        seeds, min_d, taken = carry
        w = jnp.where(taken, 0.0, min_d)
        # The cumulative weights of all n rows, computed on every device by the very operation
        # one device uses on the same [n] vector: its rounding (tens of units of the weights at
        # n = 1e5, whatever the order) is then the same bits, and so are the draws. O(n) values
        # per draw: the one exchange here that is not O(P + d).
        cum_all = jnp.cumsum(jax.lax.all_gather(w, axis, tiled=True)[:n])
        total = cum_all[-1]
        cum = cum_all[jnp.minimum(ids, n - 1)]
        u = jax.random.uniform(jax.random.fold_in(key, t), (), acc)
        hit = (cum > u * total) & ~taken
        hit = jnp.where(total > 0, hit, ~taken)
        idx = jax.lax.pmin(jnp.min(jnp.where(hit, ids, big)), axis).astype(jnp.int32)
        idx = jnp.minimum(idx, n - 1)
        d = point_rank_distances(x, stats, _fetch_row(x, ids, idx, axis), "euclidean")
        return (
            seeds.at[t].set(idx),
            jnp.where(ids == idx, 0.0, jnp.minimum(min_d, d.astype(acc))),
            taken | (ids == idx),
        )

    return jax.lax.fori_loop(1, k, body, (seeds, min_d, taken))[0]


@partial(jax.jit, static_argnames=("mesh", "n", "k"))
def _kmeans_seed(xs, key, *, mesh, n, k):
    axis, p = mesh_axis(mesh)

    def local(x, key):
        ids = _local_ids(x.shape[0], axis)
        seeds = _local_plusplus(x, key, ids, n, k, axis, p)
        return seeds, _fetch_rows(x, ids, seeds, axis).astype(accum_dtype(x.dtype))

    fn = jax.shard_map(
        local, mesh=mesh, in_specs=(P(axis, None), P()), out_specs=(P(), P()), check_vma=False
    )
    return fn(xs, key)


def _local_assign(x, centroids, valid, block):
    from .kmeans import _assign

    a, _ = _assign(x, centroids, block)
    return jnp.where(valid, a, -1)


@partial(jax.jit, static_argnames=("mesh", "n", "block_size"))
def _kmeans_run(
    centroids, assignment, iteration, changed, xs, max_steps, num_iters, *, mesh, n, block_size
):
    axis, _ = mesh_axis(mesh)
    k, d = centroids.shape

    def local(centroids, assignment, iteration, changed, x, max_steps, num_iters):
        m = x.shape[0]
        valid = _local_ids(m, axis) < n
        block = auto_block(k, m, block_size)
        acc = centroids.dtype
        stop = jnp.minimum(num_iters, iteration + max_steps)

        def sums_counts(a):
            def fold(rows, start, fresh_from, carry):
                sums, counts = carry
                fresh = (start + jnp.arange(block)) >= fresh_from
                rows_a = jax.lax.dynamic_slice_in_dim(a, start, block)
                onehot = ((rows_a[:, None] == jnp.arange(k)[None, :]) & fresh[:, None]).astype(acc)
                sums = sums + jnp.dot(
                    onehot.T, rows.astype(acc), precision=jax.lax.Precision.HIGHEST
                )
                return sums, counts + jnp.sum(onehot, axis=0)

            init = (jnp.zeros((k, d), acc), jnp.zeros((k,), acc))
            return jax.lax.psum(fold_row_blocks(fold, x, block, init), axis)

        # `x` is closed over, not carried.
        def body(s):
            cent, old, it, _ = s
            a = _local_assign(x, cent, valid, block)
            changed = jax.lax.psum(jnp.any(a != old).astype(jnp.int32), axis) > 0
            sums, counts = sums_counts(a)
            safe = jnp.where(counts > 0, counts, 1.0)
            cent = jnp.where(counts[:, None] > 0, sums / safe[:, None], cent)
            return cent, a, it + 1, changed

        init = (centroids, assignment, iteration, changed)
        return jax.lax.while_loop(lambda s: (s[2] < stop) & s[3], body, init)

    fn = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(), P(axis), P(), P(), P(axis, None), P(), P()),
        out_specs=(P(), P(axis), P(), P()),
        check_vma=False,
    )
    return fn(centroids, assignment, iteration, changed, xs, max_steps, num_iters)


@partial(jax.jit, static_argnames=("mesh", "n", "block_size"))
def _kmeans_assign(xs, centroids, *, mesh, n, block_size):
    axis, _ = mesh_axis(mesh)

    def local(x, centroids):
        m = x.shape[0]
        block = auto_block(centroids.shape[0], m, block_size)
        return _local_assign(x, centroids, _local_ids(m, axis) < n, block)

    fn = jax.shard_map(
        local, mesh=mesh, in_specs=(P(axis, None), P()), out_specs=P(axis), check_vma=False
    )
    return fn(xs, centroids)


def sharded_kmeans_seeds(x, k: int, key, *, mesh):
    """``(seeds [k], their rows as float32 [k, d])`` on ``mesh`` (arguments validated)."""
    return _kmeans_seed(shard_rows(x, mesh), _replicate(key, mesh), mesh=mesh, n=x.shape[0], k=k)


def sharded_kmeans_run(state, x, max_steps, num_iters, *, mesh, block_size=None):
    """``kmeans_run`` on ``mesh``: pads the assignment with ``-1``, runs, unpads."""
    from .kmeans import KMeansState

    n = state.assignment.shape[0]
    out = _kmeans_run(
        _replicate(state.centroids, mesh),
        shard_rows(state.assignment, mesh, fill=-1),
        _replicate(jnp.asarray(state.iteration, jnp.int32), mesh),
        _replicate(jnp.asarray(state.changed, bool), mesh),
        shard_rows(x, mesh),
        _replicate(np.asarray(max_steps, np.int32), mesh),
        _replicate(np.asarray(num_iters, np.int32), mesh),
        mesh=mesh,
        n=n,
        block_size=block_size,
    )
    return KMeansState(out[0], _unpad(out[1], n), out[2], out[3])


def sharded_kmeans_assign(x, centroids, *, mesh, block_size=None):
    """``kmeans_assign`` on ``mesh``: int32 ``[n]``."""
    n = x.shape[0]
    a = _kmeans_assign(
        shard_rows(x, mesh), _replicate(centroids, mesh), mesh=mesh, n=n, block_size=block_size
    )
    return _unpad(a, n)


def _local_round_robin(assignment, score, valid, ids, k, num_picks, min_cluster_size, axis, big):
    """``kmeans._round_robin`` with the per-cluster counts ``psum``ed and each pick a global
    (highest score, lowest global index) reduction."""
    a = jnp.where(valid, assignment, 0)
    cids = jnp.arange(k, dtype=jnp.int32)
    size = jax.lax.psum(jax.ops.segment_sum(valid.astype(jnp.int32), a, num_segments=k), axis)
    small = size < min_cluster_size
    total = jax.lax.psum(jnp.sum(valid, dtype=jnp.int32), axis)

    def body(t, carry):
        picks, taken, got = carry
        left = jax.ops.segment_sum((~taken).astype(jnp.int32), a, num_segments=k)
        ok = jax.lax.psum(left, axis) > 0
        ok = ok & (small == jnp.min(jnp.where(ok, small, True)))
        ok = ok & (got == jnp.min(jnp.where(ok, got, total + 1)))
        ok = ok & (size == jnp.max(jnp.where(ok, size, -1)))
        c = jnp.min(jnp.where(ok, cids, k))
        member = (a == c) & ~taken
        i = _global_first_argmax(jnp.where(member, score, -jnp.inf), ids, big, axis)
        return picks.at[t].set(i), taken | (ids == i), got.at[c].add(1)

    init = (jnp.full((num_picks,), -1, jnp.int32), ~valid, jnp.zeros((k,), jnp.int32))
    return jax.lax.fori_loop(0, num_picks, body, init)[0]


@partial(jax.jit, static_argnames=("mesh", "n", "num_picks", "min_cluster_size"))
def _medoids(xs, centroids, assignment, *, mesh, n, num_picks, min_cluster_size):
    axis, _ = mesh_axis(mesh)
    big = xs.shape[0]
    k = centroids.shape[0]

    def local(x, centroids, assignment):
        ids = _local_ids(x.shape[0], axis)
        valid = ids < n
        c = centroids.astype(accum_dtype(x.dtype))
        diff = x.astype(c.dtype) - c[jnp.where(valid, assignment, 0)]
        score = -jnp.sum(diff * diff, axis=1)
        return _local_round_robin(
            assignment, score, valid, ids, k, num_picks, min_cluster_size, axis, big
        )

    fn = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(axis, None), P(), P(axis)),
        out_specs=P(),
        check_vma=False,
    )
    return fn(xs, centroids, assignment)


def sharded_kmeans_medoids(x, centroids, assignment, *, mesh, num_picks, min_cluster_size):
    """``kmeans_medoids`` on ``mesh`` (arguments validated by the caller)."""
    return _medoids(
        shard_rows(x, mesh),
        _replicate(centroids, mesh),
        shard_rows(assignment, mesh, fill=0),
        mesh=mesh,
        n=x.shape[0],
        num_picks=num_picks,
        min_cluster_size=min_cluster_size,
    )


@partial(jax.jit, static_argnames=("mesh", "n", "num_neighbors", "block_size"))
def _typicality(xs, assignment, *, mesh, n, num_neighbors, block_size):
    axis, p = mesh_axis(mesh)
    mm = min(num_neighbors, n - 1)

    def local(x, assignment):
        m = x.shape[0]
        ids = _local_ids(m, axis)
        block = auto_block(m + mm, m, block_size)
        aux = row_aux(x, "euclidean")
        everyone = jax.lax.all_gather(assignment, axis, tiled=True)  # [P m] int32, O(N) ints

        def fold(rows, start, fresh_from, other, other_ids, other_ok, near):
            raux = jax.lax.dynamic_slice_in_dim(aux, start, block)
            a = jax.lax.dynamic_slice_in_dim(assignment, start, block)
            other_a = jax.lax.dynamic_slice_in_dim(everyone, other_ids[0], m)
            row_ids = ids[0] + start + jnp.arange(block, dtype=jnp.int32)
            sq = block_rank_distances(rows, raux, other, row_aux(other, "euclidean"), "euclidean")
            same = (a[:, None] == other_a[None, :]) & (row_ids[:, None] != other_ids[None, :])
            d = jnp.where(same & other_ok[None, :], jnp.sqrt(sq), jnp.inf)
            old = jax.lax.dynamic_slice_in_dim(near, start, block)
            best = -jax.lax.top_k(-jnp.concatenate([old, d], axis=1), mm)[0]
            return jax.lax.dynamic_update_slice_in_dim(near, best, start, axis=0)

        near = _ring_fold(x, n, axis, p, block, fold, jnp.full((m, mm), jnp.inf, jnp.float32))
        valid = jnp.isfinite(near)
        cnt = jnp.sum(valid, axis=1)
        mean = jnp.sum(jnp.where(valid, near, 0.0), axis=1) / jnp.maximum(cnt, 1)
        return jnp.where(mean > 0, 1.0 / jnp.where(mean > 0, mean, 1.0), jnp.inf)

    fn = jax.shard_map(
        local, mesh=mesh, in_specs=(P(axis, None), P(axis)), out_specs=P(axis), check_vma=False
    )
    return fn(xs, assignment)


def sharded_typicality(x, assignment, *, mesh, num_neighbors, block_size=None):
    """``typicality`` on ``mesh``: float32 ``[n]`` (arguments validated by the caller)."""
    n = x.shape[0]
    if n == 1:
        return jnp.full((1,), jnp.inf, jnp.float32)
    typ = _typicality(
        shard_rows(x, mesh),
        shard_rows(assignment, mesh, fill=-1),
        mesh=mesh,
        n=n,
        num_neighbors=num_neighbors,
        block_size=block_size,
    )
    return _unpad(typ, n)


@partial(jax.jit, static_argnames=("mesh", "n", "num_clusters", "num_picks", "min_cluster_size"))
def _typical(assignment, typ, *, mesh, n, num_clusters, num_picks, min_cluster_size):
    axis, _ = mesh_axis(mesh)
    big = assignment.shape[0]

    def local(assignment, typ):
        ids = _local_ids(assignment.shape[0], axis)
        return _local_round_robin(
            assignment, typ, ids < n, ids, num_clusters, num_picks, min_cluster_size, axis, big
        )

    fn = jax.shard_map(
        local, mesh=mesh, in_specs=(P(axis), P(axis)), out_specs=P(), check_vma=False
    )
    return fn(assignment, typ)


def sharded_typical_points(
    x,
    assignment,
    *,
    mesh,
    num_clusters,
    num_neighbors,
    num_picks,
    min_cluster_size,
    block_size=None,
):
    """``typical_points`` on ``mesh`` (arguments validated by the caller)."""
    n = x.shape[0]
    typ = sharded_typicality(
        x, assignment, mesh=mesh, num_neighbors=num_neighbors, block_size=block_size
    )
    return _typical(
        shard_rows(assignment, mesh, fill=0),
        shard_rows(typ, mesh, fill=-jnp.inf),
        mesh=mesh,
        n=n,
        num_clusters=num_clusters,
        num_picks=num_picks,
        min_cluster_size=min_cluster_size,
    )


# --- exact kNN ---------------------------------------------------------------------------------
#
# Rows of `x` and the queries (the rows of `x` themselves by default) are both row-sharded. The
# row blocks of `x` go round a ring (`ppermute`, P - 1 hops); each device keeps, for each of its
# queries, a running top-k that it merges with the visiting block's local top-k (`merge_knn`,
# ordered by (distance, global index)). After P visits each query has merged P x k candidates:
# its k nearest over all rows, ties to the lowest global index as on one device. Per device:
# O(n/P x k) state, one visiting block, `[block, n/P]` distances at a time.
#
# Exactness: the distances are the block form of `knn`, so the indices equal the single-device
# ones where the distances are exact (tested on integer data, duplicates on different shards) and
# elsewhere up to the rounding noted in kernels/knn.py (a matrix product of another shape can
# round its last bit differently).


def _knn_candidates(q, q_aux, q_ids, x, x_aux, x_ids, x_ok, k, metric, self_query):
    """``knn_block`` for a visiting block of rows, padding rows (``~x_ok``) excluded."""
    d = block_rank_distances(q, q_aux, x, x_aux, metric)
    if self_query is not None:
        same = q_ids[:, None] == x_ids[None, :]
        if self_query == "exclude":
            d = jnp.where(same, jnp.inf, d)
        elif metric != "cosine":
            d = jnp.where(same, 0.0, d)
    d = jnp.where(x_ok[None, :], d, jnp.inf)
    neg, pos = jax.lax.top_k(-d, min(k, x.shape[0]))
    dist = -neg
    return dist, jnp.where(jnp.isfinite(dist), x_ids[pos], -1)


@partial(jax.jit, static_argnames=("mesh", "n", "k", "metric", "block_size", "self_query"))
def _knn(qs, xs, *, mesh, n, k, metric, block_size, self_query):
    from .knn import merge_knn

    axis, p = mesh_axis(mesh)
    acc = accum_dtype(jnp.promote_types(qs.dtype, xs.dtype))

    def local(q, x):
        mq, mx = q.shape[0], x.shape[0]
        q_ids = _local_ids(mq, axis)
        q_aux = row_aux(q, metric)
        block = auto_block(mx + k, mq, block_size)

        def fold(rows, start, fresh_from, other, other_ids, other_ok, carry):
            best_d, best_i = carry
            aux = jax.lax.dynamic_slice_in_dim(q_aux, start, block)
            ids = q_ids[0] + start + jnp.arange(block, dtype=jnp.int32)
            d, i = _knn_candidates(
                rows, aux, ids, other, row_aux(other, metric), other_ids, other_ok, k, metric,
                self_query,
            )  # fmt: skip
            old_d = jax.lax.dynamic_slice_in_dim(best_d, start, block)
            old_i = jax.lax.dynamic_slice_in_dim(best_i, start, block)
            # Rows of the last block seen by the previous one already hold this visit's
            # candidates: merging them again would repeat indices.
            fresh = ((start + jnp.arange(block)) >= fresh_from)[:, None]
            new_d, new_i = merge_knn(old_d, old_i, d.astype(acc), i, k)
            new_d, new_i = jnp.where(fresh, new_d, old_d), jnp.where(fresh, new_i, old_i)
            best_d = jax.lax.dynamic_update_slice_in_dim(best_d, new_d, start, axis=0)
            best_i = jax.lax.dynamic_update_slice_in_dim(best_i, new_i, start, axis=0)
            return best_d, best_i

        init = (jnp.full((mq, k), jnp.inf, acc), jnp.full((mq, k), -1, jnp.int32))
        return _ring_fold(x, n, axis, p, block, fold, init, local=q)

    fn = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(axis, None), P(axis, None)),
        out_specs=(P(axis, None), P(axis, None)),
        check_vma=False,
    )
    dist, idx = fn(qs, xs)
    return to_metric(dist, metric), idx


def sharded_knn(
    x, k: int, *, mesh, queries=None, metric="euclidean", block_size=None, self_query=None
):
    """``knn`` on ``mesh`` (arguments validated by the caller): ``(distances [m, k], indices
    [m, k])``, rows of ``x`` and of the queries sharded. ``self_query``: ``"exclude"`` /
    ``"keep"`` when the queries are the rows of ``x`` (then ``queries`` is ignored), ``None``
    otherwise."""
    xs = shard_rows(x, mesh)
    qs = xs if self_query is not None else shard_rows(queries, mesh)
    m = x.shape[0] if self_query is not None else queries.shape[0]
    dist, idx = _knn(
        qs, xs, mesh=mesh, n=x.shape[0], k=k, metric=metric, block_size=block_size,
        self_query=self_query,
    )  # fmt: skip
    return _unpad(dist, m), _unpad(idx, m)


# --- ZCore -------------------------------------------------------------------------------------
#
# Scores are row-sharded like `x`; the per-dimension statistics and each chunk's draws are
# replicated (every device draws the same dimensions and anchors from the same key). Per chunk of
# subspace samples, each device computes the subspace distances of its own rows, and
#
# * the nearest point to each anchor is a global first argmin: a `pmin` of the local minima, then
#   a `pmin` of the global indices that reach it (ties to the lowest global index);
# * the centre's coordinates (num_dims values per sample) are fetched with one `psum`;
# * the redundancy neighbours are each device's local top-r, `all_gather`ed (P x r candidates
#   per sample) and merged by (distance, global index): the global top-r with ties to the lowest
#   index, as `top_k` over all rows gives on one device;
# * each device adds the +1 and the penalties that fall on its own rows, in the order one device
#   adds them.
#
# The per-dimension minimum and maximum are `pmin` / `pmax`; the lower median is found exactly,
# without gathering a column, by bisection over the 32 bits of the values' order-preserving
# integer keys (32 `psum`s of d counts).
#
# Exactness: distances are elementwise (no reduction across rows), so the nearest points and the
# neighbours are the single-device ones bit for bit; the scores agree up to float32 rounding (the
# penalty weights may be computed by another sequence of float operations).


def _float_keys(v: jax.Array) -> jax.Array:
    """uint32 keys with the order of the float32 values (-0.0 taken as 0.0)."""
    v = jnp.where(v == 0, jnp.float32(0), v.astype(jnp.float32))
    bits = jax.lax.bitcast_convert_type(v, jnp.uint32)
    negative = (bits >> 31) == 1
    return jnp.where(negative, ~bits, bits | jnp.uint32(0x80000000))


def _float_from_keys(keys: jax.Array) -> jax.Array:
    positive = (keys >> 31) == 1
    bits = jnp.where(positive, keys & jnp.uint32(0x7FFFFFFF), ~keys)
    return jax.lax.bitcast_convert_type(bits, jnp.float32)


def _global_order_statistic(values, valid, rank: int, axis: str) -> jax.Array:
    """Per column of ``values [m, d]`` (rows of every device, where ``valid``), the value of
    0-based rank ``rank`` in increasing order: bisection over the 32 key bits, exact."""
    keys = _float_keys(values)
    d = values.shape[1]

    def body(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        below = (keys <= mid[None, :]) & valid[:, None]
        count = jax.lax.psum(jnp.sum(below, axis=0, dtype=jnp.int32), axis)
        enough = count >= rank + 1
        return jnp.where(enough, lo, mid + 1), jnp.where(enough, mid, hi)

    init = (jnp.zeros((d,), jnp.uint32), jnp.full((d,), 0xFFFFFFFF, jnp.uint32))
    lo, _ = jax.lax.fori_loop(0, 32, body, init)
    return _float_from_keys(lo)


@partial(jax.jit, static_argnames=("mesh", "n"))
def _zcore_stats(xs, *, mesh, n):
    axis, _ = mesh_axis(mesh)

    def local(x):
        valid = _local_ids(x.shape[0], axis) < n
        xf = x.astype(jnp.float32)
        lo = jax.lax.pmin(jnp.min(jnp.where(valid[:, None], xf, jnp.inf), axis=0), axis)
        hi = jax.lax.pmax(jnp.max(jnp.where(valid[:, None], xf, -jnp.inf), axis=0), axis)
        # Lower median, as zcore._stats (torch.median) takes it.
        med = _global_order_statistic(xf, valid, (n - 1) // 2, axis)
        return lo, med, hi

    fn = jax.shard_map(
        local, mesh=mesh, in_specs=(P(axis, None),), out_specs=(P(), P(), P()), check_vma=False
    )
    return fn(xs)


def _zcore_picks_local(x, ids, n, dims, anchors, r, metric, axis):
    """Nearest point (global index) of each sample's anchor, its subspace distances to the local
    rows (``inf`` for itself and padding), and the global top-r neighbours ``(dist, index)``."""
    from .zcore import _subspace_distance

    m = x.shape[0]
    big = jnp.iinfo(jnp.int32).max
    valid = ids < n
    xt = x.T
    to_anchor = jnp.where(valid[None, :], _subspace_distance(xt, dims, anchors, metric), jnp.inf)
    li = jnp.argmin(to_anchor, axis=1)  # lowest local index on ties
    lv = jnp.take_along_axis(to_anchor, li[:, None], axis=1)[:, 0]
    gv = jax.lax.pmin(lv, axis)
    nearest = jax.lax.pmin(jnp.where(lv == gv, ids[li], big), axis)
    if r <= 0:
        return nearest, None, None
    owned = (nearest >= ids[0]) & (nearest < ids[0] + m)
    local = jnp.where(owned, nearest - ids[0], 0)
    coords = jnp.stack([xt[dims[:, j], local] for j in range(dims.shape[1])], axis=1)
    centre = jax.lax.psum(jnp.where(owned[:, None], coords, jnp.zeros_like(coords)), axis)
    dist = _subspace_distance(xt, dims, centre, metric)
    if metric == "l2":
        dist = jnp.sqrt(dist)
    mask = valid[None, :] & (ids[None, :] != nearest[:, None])  # not itself, not padding
    dist = jnp.where(mask, dist, jnp.inf)
    neg, li = jax.lax.top_k(-dist, min(r, m))  # local top-r, lowest local index on ties
    cand_d = jax.lax.all_gather(-neg, axis, axis=1, tiled=True)  # [chunk, P * min(r, m)]
    cand_i = jax.lax.all_gather(
        jnp.where(jnp.isfinite(-neg), ids[li], big), axis, axis=1, tiled=True
    )
    # The candidates are in device order, each device's in (distance, index) order: among equal
    # distances, position order is global index order, so top_k's lowest-position rule gives the
    # lowest global index (a full two-key sort of the P x r candidates costs far more).
    neg, pos = jax.lax.top_k(-cand_d, r)
    return nearest, -neg, jnp.take_along_axis(cand_i, pos, axis=1)


def _add_owned(scores, ids, index, values):
    """``scores.at[index].add(values)`` for the global indices this device owns, in order."""
    m = scores.shape[0]
    owned = (index >= ids[0]) & (index < ids[0] + m)
    return scores.at[jnp.where(owned, index - ids[0], m)].add(values, mode="drop")


@partial(
    jax.jit,
    static_argnames=("mesh", "n", "chunk", "num_dims", "num_redundancy", "metric", "exponent"),
)
def _zcore_chunk(
    scores, xs, key_data, start, count, lo, med, hi, *, mesh, n, chunk, num_dims,
    num_redundancy, metric, exponent,
):  # fmt: skip
    from .zcore import _EPS, _draw

    axis, _ = mesh_axis(mesh)
    r = min(num_redundancy, n - 1)

    def local(scores, x, key_data, start, count, lo, med, hi):
        ids = _local_ids(x.shape[0], axis)
        dims, anchors = _draw(key_data, start, chunk, lo, med, hi, num_dims)
        live = (jnp.arange(chunk) < count).astype(jnp.float32)
        nearest, near, idx = _zcore_picks_local(x, ids, n, dims, anchors, r, metric, axis)
        scores = _add_owned(scores, ids, nearest, live)
        if r <= 0:
            return scores
        w = ((near[:, :1] + _EPS) / (near + _EPS)) ** exponent
        w = w / jnp.sum(w, axis=1, keepdims=True) * live[:, None]
        return _add_owned(scores, ids, idx.reshape(-1), -w.reshape(-1))

    fn = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(axis), P(axis, None), P(), P(), P(), P(), P(), P()),
        out_specs=P(axis),
        check_vma=False,
    )
    return fn(scores, xs, key_data, start, count, lo, med, hi)


@partial(jax.jit, static_argnames=("mesh", "n", "chunk", "num_dims", "num_redundancy", "metric"))
def _zcore_chunk_picks(
    xs, key_data, start, lo, med, hi, *, mesh, n, chunk, num_dims, num_redundancy, metric
):
    """For tests: the nearest points and neighbour indices of a chunk of samples."""
    axis, _ = mesh_axis(mesh)
    r = min(num_redundancy, n - 1)

    def local(x, key_data, start, lo, med, hi):
        from .zcore import _draw

        ids = _local_ids(x.shape[0], axis)
        dims, anchors = _draw(key_data, start, chunk, lo, med, hi, num_dims)
        nearest, near, idx = _zcore_picks_local(x, ids, n, dims, anchors, r, metric, axis)
        return nearest, idx

    fn = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(axis, None), P(), P(), P(), P(), P()),
        out_specs=(P(), P()),
        check_vma=False,
    )
    return fn(xs, key_data, start, lo, med, hi)


def sharded_zcore_stats(x, *, mesh):
    """``(lo, med, hi)`` per dimension of ``x`` (min, lower median, max), rows on ``mesh``."""
    return _zcore_stats(shard_rows(x, mesh), mesh=mesh, n=x.shape[0])


def sharded_zcore_run(
    state, x, num_samples, *, mesh, chunk, num_dims, num_redundancy, metric, exponent
):
    """``zcore_run`` on ``mesh`` (arguments validated by the caller): the scores are padded,
    updated chunk by chunk on the mesh, and unpadded."""
    n = state.scores.shape[0]
    xs = shard_rows(x, mesh)
    scores = shard_rows(state.scores, mesh, fill=0.0)
    key_data, lo, med, hi = (
        _replicate(a, mesh) for a in (state.key, state.lo, state.med, state.hi)
    )
    done = int(state.done)
    stop = done + num_samples
    while done < stop:
        size = min(chunk, stop - done)
        scores = _zcore_chunk(
            scores, xs, key_data, _replicate(np.int32(done), mesh),
            _replicate(np.int32(size), mesh), lo, med, hi, mesh=mesh, n=n, chunk=chunk,
            num_dims=num_dims, num_redundancy=num_redundancy, metric=metric, exponent=exponent,
        )  # fmt: skip
        done += size
    return state._replace(scores=_unpad(scores, n), done=jnp.asarray(done, jnp.int32))
