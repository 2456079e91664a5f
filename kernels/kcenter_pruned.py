"""Pruned exact greedy k-center: the steps of ``kcenter`` that skip row blocks no new center can
change, by the triangle inequality. Same indices as the streaming steps, ties included.

The streaming (``"naive"``) step reads every row of ``x`` to update each point's distance to its
nearest center. Most of those reads change nothing once the centers cover the data: a point far
from the new center keeps its running minimum. This body groups the rows into blocks of rows that
lie close together and keeps, per block ``b``,

* a centre ``c_b`` (the mean of its rows) and a radius ``r_b >= max_i |x_i - c_b|``;
* ``M_b``, the largest running minimum (rank distance) of its rows.

When center ``z`` is added, every row of the block is at least ``|z - c_b| - r_b`` from ``z``; if
the square of that bound (less a rounding margin, below) is ``>= M_b``, no row of the block gets a
smaller minimum and the block is not read. The next center is the first argmax over the blocks
whose ``M_b`` equals the global maximum, so only touched blocks are read at all.

Blocks: the first ``p = min(64, 2 nb, k)`` steps of a run stream (while the centers are few,
they read nearly every block anyway) and note each row's nearest one of their centers. Those
centers, in farthest-first order, are the pivots: the rows of each device are ordered by their
nearest pivot (cells next to nearby cells, ``_pivot_rank``), cut into blocks of ``rows`` rows and
copied in that order (one extra copy of the local rows, the price of reading a block
contiguously: a gathered block costs about twice as much per byte on CPU). The pruned steps keep
each row's nearest center, and each time the centers double (up to ``min(4096, 2 nb, k)``) the
blocks are rebuilt from all of them: cells shrink with the coverage radius, so blocks stay
tighter than the distances the bound must beat (with a fixed set of 256 pivots, a mixture of
1,000 Gaussians at 500,000 x 256 left every block straddling several clusters and none
skipped). A block that straddles cells is bounded as up to four segments (four balls, the last
holding the rest), so a block holding the end of one cluster and the start of another is read
only when the new center is near one of them. The grouping only
decides which rows share a block, so it affects speed, never the result. A step whose touched
blocks exceed ``FULL_PASS_SHARE`` of the blocks reads all rows in one full mat-vec instead (the
loop over blocks runs on one thread; XLA's full mat-vec on all), so data that cannot be pruned
(uniform in high dimension) costs the full pass plus the bounds and rebuilds (about 1.27x the
streaming run at n=200,000, d=256, k=500 on a quiet 2-core CPU).

Which metrics prune: all three. ``"euclidean"`` / ``"sqeuclidean"`` (rank distance ``|x - z|^2``)
use the bound in Euclidean space and square it; ``"cosine"`` (rank distance ``1 - cos``) uses it
on unit rows, where ``1 - cos(x, z) = |x/|x| - z/|z||^2 / 2`` (a zero row is at distance 1 from
everything, and at most 1/2 on the unit sphere's side: the bound stays a lower bound).

Exactness: a touched row's distance is computed by the same ``point_rank_distances`` formula as
the streaming step (the mat-vec of a block gives each row the same bits as the full mat-vec: an
XLA:CPU property the tests check, not a guarantee of every backend), and
a block is skipped only when every row's *computed* distance provably exceeds its minimum: the
bound is shrunk by a margin ``g (Q_b + 2 (A_b + |s|) |v| + |v|^2)`` covering the rounding of the
mean-shifted mat-vec formula (``Q_b = max |x_i - s|^2``, ``A_b = max |x_i|``, ``v = z - s``,
``g = 4 (d + 16) eps``: a few times the textbook ``gamma_d`` bound of a length-``d`` dot
product), and ``|z - c_b|`` and ``r_b`` are deflated and inflated by ``g``. For cosine the margin
is ``2 g`` (distances are at most 2). So the indices are those of the streaming steps, bit for
bit; ``tests/test_kcenter_pruned.py`` checks both the picks and, step by step, that no skipped
block would have changed.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from . import collective
from .distance import PointStats, accum_dtype, block_rank_distances, point_rank_distances, row_aux

__all__ = [
    "FULL_PASS_SHARE",
    "BlockIndex",
    "block_index",
    "default_block_rows",
    "pruned_steps",
    "skip_blocks",
]

# Share of blocks above which a step reads every row in one mat-vec (see the module docstring).
# A block read in the loop costs 2x or more a block of the full mat-vec on a 2-core CPU; at 0.5,
# d=64 digits-like data (65-80% of blocks touched) ran 1.43x the streaming time.
FULL_PASS_SHARE = 0.25
# Pivots (cells) that group the rows into blocks: the greedy centers of the run so far. The
# first FIRST_PIVOTS steps stream and note each row's nearest one; the blocks are then rebuilt
# each time the centers double, from every center so far (finer cells: tighter blocks), up to
# MAX_PIVOTS (the tree that orders the cells compares every pivot with every pivot).
FIRST_PIVOTS = 64
MAX_PIVOTS = 4096
# Segments per block (each its own ball): a block can hold the ends and middles of several small
# cells once the pivots outnumber the blocks' rows (e.g. 1,564 cells of 64 rows, blocks of 128:
# with two segments the second ball spanned several cells and 88 % of blocks were read).
SEGMENTS = 4
_BIG = jnp.iinfo(jnp.int32).max


def default_block_rows(d: int, itemsize: int, m: int) -> int:
    """Rows per block: about 128 KiB of storage (in cache while it is read), 32..1024 rows."""
    rows = max(32, min(1024, (128 * 1024) // max(1, d * itemsize)))
    rows = 1 << (rows.bit_length() - 1)  # a power of two
    return max(1, min(rows, m))


class BlockIndex(NamedTuple):
    """One device's rows grouped into blocks (built once per run by ``block_index``).

    Attributes:
      slot_row: int32 ``[nb * rows]`` local row held by each slot (padding slots repeat a row of
        the last block: they never widen a block).
      slot_id: int32 ``[nb * rows]`` global index of each slot's row; ``int32 max`` for padding.
      row_slot: int32 ``[m]`` slot of each local row.
      xb: ``[nb * rows, d]`` the rows in slot order (storage dtype).
      sqb: ``[nb * rows]`` ``stats.sq`` in slot order.
      seg: int32 ``[nb, rows]`` segment of each slot of a block, ``0 .. SEGMENTS - 1``: a new
        segment starts where a cell ends inside the block (the last one holds the rest), so a
        block that straddles cells (clusters, say) is bounded by tight balls and read only when
        the new center is near one of them.
      centre: ``[nb, SEGMENTS, d]`` accumulation dtype, each segment's mean row (unit rows for
        cosine).
      radius: ``[nb, SEGMENTS]`` an upper bound on each row's distance to its segment's centre
        (``-inf`` for an empty segment).
      qmax: ``[nb, SEGMENTS]`` largest ``stats.sq`` of the segment (Euclidean margin).
      amax: ``[nb, SEGMENTS]`` largest ``|x_i|`` of the segment (Euclidean margin).
    """

    slot_row: jax.Array
    slot_id: jax.Array
    row_slot: jax.Array
    xb: jax.Array
    sqb: jax.Array
    seg: jax.Array
    centre: jax.Array
    radius: jax.Array
    qmax: jax.Array
    amax: jax.Array


def _margin_unit(x) -> float:
    """``g``: relative rounding allowance of a length-``d`` accumulation (module docstring)."""
    return 4.0 * (x.shape[1] + 16) * float(jnp.finfo(accum_dtype(x.dtype)).eps)


def _pivot_rank(piv: jax.Array, piv_aux: jax.Array, metric: str) -> jax.Array:
    """int32 ``[p]`` position of each pivot's cell in the row order.

    Farthest-first prefixes are coarser and coarser covers: each pivot's parent is its nearest
    pivot among the first ``p / 2``, its parent's among the first ``p / 4``, and so on; cells in
    the depth-first order of that tree put neighbouring cells next to each other, so a block
    that straddles two cells holds nearby rows."""
    p = piv.shape[0]
    near = block_rank_distances(piv, piv_aux, piv, piv_aux, metric)
    keys = [jnp.arange(p, dtype=jnp.int32)]  # least significant first (lexsort)
    coarse = p // 2
    while coarse >= 2:  # a tree: each pivot's ancestor is its parent's nearest coarser pivot
        keys.append(jnp.argmin(near[keys[-1], :coarse], axis=1).astype(jnp.int32))
        coarse //= 2
    by = jnp.lexsort(keys)
    return jnp.zeros((p,), jnp.int32).at[by].set(jnp.arange(p, dtype=jnp.int32))


def block_index(
    x: jax.Array,
    stats: PointStats,
    valid: jax.Array,
    ids: jax.Array,
    pivots: jax.Array,
    labels: jax.Array,
    metric: str,
    rows: int,
) -> BlockIndex:
    """Groups this device's rows into blocks of ``rows`` rows of nearby points.

    Args:
      x: ``[m, d]`` this device's rows.
      stats: ``point_stats`` of the rows (``kcenter.global_point_stats`` on a mesh).
      valid: bool ``[m]``, rows that are real (padding rows go last).
      ids: int32 ``[m]`` global indices of the rows.
      pivots: ``[p, d]`` rows in farthest-first order (the first greedy centers of the run).
      labels: int32 ``[m]`` each row's nearest pivot (the cells).
      metric: the metric (cosine groups unit rows).
      rows: rows per block (static).

    Returns:
      The ``BlockIndex``.
    """
    m, d = x.shape
    acc = accum_dtype(x.dtype)
    nb = -(-m // rows)
    p = pivots.shape[0]
    rank = _pivot_rank(pivots, row_aux(pivots, metric), metric)
    key = jnp.where(valid, rank[jnp.clip(labels, 0, p - 1)], p)
    order = jnp.argsort(key, stable=True).astype(jnp.int32)
    cell = jnp.concatenate([key[order], jnp.full((nb * rows - m,), key[order[-1]])])
    cell = cell.reshape(nb, rows)
    change = jnp.concatenate([jnp.zeros((nb, 1), bool), cell[:, 1:] != cell[:, :-1]], axis=1)
    seg = jnp.minimum(jnp.cumsum(change, axis=1), SEGMENTS - 1).astype(jnp.int32)
    pad = nb * rows - m
    slot_row = jnp.concatenate([order, jnp.full((pad,), order[-1], jnp.int32)])
    slot_id = jnp.concatenate([ids[order], jnp.full((pad,), _BIG, jnp.int32)])
    row_slot = jnp.zeros((m,), jnp.int32).at[order].set(jnp.arange(m, dtype=jnp.int32))
    xb = x[slot_row]
    sqb = stats.sq[slot_row]
    g = _margin_unit(x)

    def one_block(b):
        blk = jax.lax.dynamic_slice_in_dim(xb, b * rows, rows).astype(acc)
        sq = jax.lax.dynamic_slice_in_dim(sqb, b * rows, rows)
        raw = jnp.sum(blk * blk, axis=1)
        if metric == "cosine":
            blk = blk * sq[:, None]  # unit rows (sq is 1 / |x_i|, 0 for zero rows)
        segs = seg[b][None, :] == jnp.arange(SEGMENTS)[:, None]  # [SEGMENTS, rows]
        count = jnp.maximum(jnp.sum(segs, axis=1, keepdims=True), 1)
        centre = jnp.dot(segs.astype(acc), blk, precision=jax.lax.Precision.HIGHEST) / count
        far = jnp.sum(jnp.square(blk[None] - centre[:, None]), axis=2)  # [2, rows]
        r = jnp.sqrt(jnp.max(jnp.where(segs, far, -jnp.inf), axis=1, initial=0.0))
        # Inflated: the computed radius and (cosine) the computed unit rows are off by ~g.
        r = r * (1 + g) + (2 * g if metric == "cosine" else 0.0)
        seg_max = lambda v: jnp.max(jnp.where(segs, v[None], -jnp.inf), axis=1)  # noqa: E731
        return centre, r, seg_max(sq), jnp.sqrt(jnp.maximum(seg_max(raw), 0.0))

    centre, radius, qmax, amax = jax.lax.map(one_block, jnp.arange(nb))
    return BlockIndex(slot_row, slot_id, row_slot, xb, sqb, seg, centre, radius, qmax, amax)


def skip_blocks(index: BlockIndex, stats: PointStats, z: jax.Array, top: jax.Array, metric: str):
    """bool ``[nb]``: blocks that adding center ``z`` provably cannot change.

    Args:
      index: the ``BlockIndex``.
      stats: the rows' ``PointStats`` (its ``shift`` sets the Euclidean margin).
      z: the new center, ``[d]``.
      top: ``[nb, SEGMENTS]`` each segment's largest running minimum ``M_b`` (``-inf`` if empty).
      metric: the metric.

    Returns:
      bool ``[nb, SEGMENTS]``: True where every row of the segment has a computed distance to ``z``
      ``>=`` its running minimum.
    """
    acc = index.centre.dtype
    g = _margin_unit(index.xb)
    zc = z.astype(acc)
    if metric == "cosine":
        zsq = jnp.sum(zc * zc)
        zc = zc * jnp.where(zsq > 0, jax.lax.rsqrt(jnp.where(zsq > 0, zsq, 1)), 0)
    dz = jnp.sqrt(jnp.sum(jnp.square(index.centre - zc), axis=2))
    lb = dz * (1 - g) - index.radius
    if metric == "cosine":
        low = 0.5 * jnp.square(lb) * (1 - g) - 2 * g
    else:
        v = jnp.sqrt(jnp.sum(jnp.square(z.astype(acc) - stats.shift)))
        s = jnp.sqrt(jnp.sum(jnp.square(stats.shift)))
        margin = g * (index.qmax + 2 * (index.amax + s) * v + v * v)
        low = jnp.square(lb) * (1 - g) - margin
    return ((lb > 0) & (low >= top)) | (top == -jnp.inf)


def _segment_max(md: jax.Array, seg: jax.Array) -> jax.Array:
    """``[nb, SEGMENTS]`` largest running minimum of each block's segments (``md`` and ``seg``
    are ``[nb, rows]``, or ``[rows]`` for one block)."""
    return jnp.stack(
        [jnp.max(jnp.where(seg == j, md, -jnp.inf), axis=-1) for j in range(SEGMENTS)], axis=-1
    )


def _first_slot_of_max(mdb, top, slot_id, best, rows: int) -> jax.Array:
    """Lowest global index among this device's rows whose running minimum equals ``best``
    (``int32 max`` if none): reads only the blocks whose ``M_b`` equals ``best``."""
    nb = top.shape[0]
    hit = jnp.max(top, axis=1) == best
    blocks = jnp.nonzero(hit, size=nb, fill_value=0)[0]

    def body(i, low):
        b = blocks[i]
        md = jax.lax.dynamic_slice_in_dim(mdb, b * rows, rows)
        sid = jax.lax.dynamic_slice_in_dim(slot_id, b * rows, rows)
        return jnp.minimum(low, jnp.min(jnp.where(md == best, sid, _BIG)))

    return jax.lax.fori_loop(0, jnp.sum(hit, dtype=jnp.int32), body, jnp.int32(_BIG))


def _streaming_steps(md, selected, count, x, stats, stop, *, metric, axis, nb):
    """The streaming steps (as in ``kcenter``) from ``count`` to ``stop``, noting for each row
    its nearest center of these steps (``labels``, 0 for the first): the cells of the blocks."""
    m = x.shape[0]
    first = count

    def step(carry):
        md, selected, count, near, labels, touched = carry
        ids = collective.row_ids(m, axis)
        center = collective.first_argmax(md, ids, axis)
        z = collective.fetch_row(x, ids, center, axis)
        d = point_rank_distances(x, stats, z, metric).astype(md.dtype)
        local = center - ids[0]
        local = jnp.where((local >= 0) & (local < m), local, m)  # m: not here, dropped
        md = jnp.minimum(md, d).at[local].set(-jnp.inf, mode="drop")
        closer = d < near
        near = jnp.where(closer, d, near)
        labels = jnp.where(closer, count - first, labels)
        touched = touched.at[count].set(nb)
        selected = selected.at[count].set(center)
        return md, selected, count + 1, near, labels, touched

    near = jnp.full((m,), jnp.inf, md.dtype)
    init = (md, selected, count, near, jnp.zeros((m,), jnp.int32), jnp.zeros_like(selected))
    md, selected, count, _, labels, touched = jax.lax.while_loop(lambda c: c[2] < stop, step, init)
    return md, selected, count, labels, touched


def pruned_steps(min_dist, selected, count, x, stats, stop, *, n, metric, rows, axis):
    """Greedy k-center steps from ``count`` up to ``stop``, reading only blocks that can change.

    The body of ``kcenter``'s pruned run (one device or a ``shard_map`` over ``axis``): same
    state in, same state out as the streaming steps. The first ``p = min(FIRST_PIVOTS, 2 nb, k)``
    steps stream (they read every row anyway while the centers are few) and note each row's
    nearest one of their centers; those centers, in farthest-first order, are the pivots that
    group the rows into blocks (``block_index``); the next steps are pruned and keep each row's
    nearest center, and each time the centers since ``count`` double (up to
    ``min(MAX_PIVOTS, 2 nb, k)``) the blocks are rebuilt from all of them: more, smaller cells
    give tighter blocks as the coverage radius shrinks (a mixture of 1,000 Gaussians needs about
    1,000 cells before a block holds one cluster).

    Args:
      min_dist: ``[m]`` running minima of this device's rows (``-inf``: selected or padding).
      selected: int32 ``[k]`` chosen global indices (``-1`` not yet).
      count: int32 scalar, centers chosen so far.
      x: ``[m, d]`` this device's rows.
      stats: the rows' ``PointStats`` (global mean row on a mesh).
      stop: int32 scalar, the count to stop at.
      n: real rows over all devices (static).
      metric: the metric (static).
      rows: rows per block (static).
      axis: mesh axis name, or ``None`` on one device.

    Returns:
      ``(min_dist, selected, count, touched)``: the new state and, per step ``j`` taken by this
      call (position ``j`` of ``[k]``, zero elsewhere), the number of blocks read over all devices
      (``nb`` per device when the step took the full pass).
    """
    m = x.shape[0]
    nb = -(-m // rows)
    k = selected.shape[0]
    p = max(1, min(FIRST_PIVOTS, 2 * nb, k))
    cap = max(p, min(MAX_PIVOTS, 2 * nb, k))
    first = count
    min_dist, selected, count, labels, touched = _streaming_steps(
        min_dist,
        selected,
        count,
        x,
        stats,
        jnp.minimum(stop, count + p),
        metric=metric,
        axis=axis,
        nb=nb,
    )
    ids = collective.row_ids(m, axis)
    while True:  # unrolled: one phase per pivot count p (static), each rebuilding the blocks
        last = p >= cap
        nxt = p if last else min(2 * p, cap)

        def phase(min_dist, selected, count, touched, labels, p=p, nxt=nxt, last=last):
            pivots = collective.fetch_rows(
                x, ids, jax.lax.dynamic_slice_in_dim(selected, first, p), axis
            )
            index = block_index(x, stats, ids < n, ids, pivots, labels, metric, rows)
            end = stop if last else jnp.minimum(stop, first + nxt)
            return _pruned_loop(
                index,
                min_dist,
                selected,
                count,
                touched,
                labels,
                x,
                stats,
                end,
                base=first,
                metric=metric,
                axis=axis,
            )

        # Past the previous steps only if they took all p (so the pivots exist): the same on
        # every device.
        min_dist, selected, count, touched, labels = jax.lax.cond(
            count < stop, phase, lambda *a: a, min_dist, selected, count, touched, labels
        )
        if last:
            break
        p = nxt
    return min_dist, selected, count, collective.psum(touched, axis)


def _pruned_loop(
    index, min_dist, selected, count, touched, labels, x, stats, stop, *, base, metric, axis
):
    """The pruned steps from ``count`` to ``stop`` over the blocks of ``index``; ``labels`` (each
    row's nearest center, counted from ``base``) follow every row whose minimum drops."""
    m = x.shape[0]
    ids = collective.row_ids(m, axis)
    nb, rows = index.seg.shape
    mdb = jnp.where(index.slot_id < _BIG, min_dist[index.slot_row], -jnp.inf)
    top = _segment_max(mdb.reshape(nb, rows), index.seg)
    lab = labels[index.slot_row]
    shared = PointStats(stats.shift, index.sqb)

    def step(carry):
        mdb, top, lab, selected, count, touched = carry
        me = count - base
        best = collective.pmax(jnp.max(top), axis)
        center = collective.pmin(_first_slot_of_max(mdb, top, index.slot_id, best, rows), axis)
        z = collective.fetch_row(x, ids, center, axis)
        local = center - ids[0]
        mine = (local >= 0) & (local < m)
        slot = jnp.where(mine, index.row_slot[jnp.clip(local, 0, m - 1)], nb * rows)
        active = ~jnp.all(skip_blocks(index, stats, z, top, metric), axis=1)
        active = active.at[slot // rows].set(True, mode="drop")  # the center's own block
        n_active = jnp.sum(active, dtype=jnp.int32)

        def full(mdb, top, lab):
            d = point_rank_distances(index.xb, shared, z, metric).astype(mdb.dtype)
            lab = jnp.where(d < mdb, me, lab)
            mdb = jnp.minimum(mdb, d).at[slot].set(-jnp.inf, mode="drop")
            return mdb, _segment_max(mdb.reshape(nb, rows), index.seg), lab

        def partial_pass(mdb, top, lab):
            blocks = jnp.nonzero(active, size=nb, fill_value=0)[0]
            lane = jnp.arange(rows, dtype=jnp.int32)

            def body(i, carry):
                mdb, top, lab = carry
                b = blocks[i]
                blk = jax.lax.dynamic_slice_in_dim(index.xb, b * rows, rows)
                sq = jax.lax.dynamic_slice_in_dim(index.sqb, b * rows, rows)
                old = jax.lax.dynamic_slice_in_dim(mdb, b * rows, rows)
                d = point_rank_distances(blk, PointStats(stats.shift, sq), z, metric)
                new = jnp.where(b * rows + lane == slot, -jnp.inf, jnp.minimum(old, d))
                mdb = jax.lax.dynamic_update_slice_in_dim(mdb, new, b * rows, 0)
                # Everything after the update reads the updated mdb, never the old one: a read
                # of the old values after an in-place update makes XLA copy all of mdb at every
                # block read (measured: two m-vector copies per block). So the labels follow the
                # rows whose minimum now equals their distance to the new center (ties included:
                # labels only group rows, they never change a result).
                now = jax.lax.dynamic_slice_in_dim(mdb, b * rows, rows)
                was = jax.lax.dynamic_slice_in_dim(lab, b * rows, rows)
                lab = jax.lax.dynamic_update_slice_in_dim(
                    lab, jnp.where(now == d, me, was), b * rows, 0
                )
                return mdb, top.at[b].set(_segment_max(now, index.seg[b])), lab

            return jax.lax.fori_loop(0, n_active, body, (mdb, top, lab))

        use_full = n_active > int(FULL_PASS_SHARE * nb)
        mdb, top, lab = jax.lax.cond(use_full, full, partial_pass, mdb, top, lab)
        touched = touched.at[count].set(jnp.where(use_full, nb, n_active))
        selected = selected.at[count].set(center)
        return mdb, top, lab, selected, count + 1, touched

    mdb, top, lab, selected, count, touched = jax.lax.while_loop(
        lambda c: c[4] < stop, step, (mdb, top, lab, selected, count, touched)
    )
    return mdb[index.row_slot], selected, count, touched, lab[index.row_slot]
