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
contiguously: a gathered block costs about twice as much per byte on CPU). Each time the centers
double (up to ``min(4096, 2 nb, k)``) the blocks can be rebuilt from all of them: cells shrink
with the coverage radius, so blocks stay tighter than the distances the bound must beat (with a
fixed set of 256 pivots, a mixture of 1,000 Gaussians at 500,000 x 256 left every block
straddling several clusters and none skipped). A block that straddles cells is bounded as up to
four segments (four balls, the last holding the rest). The grouping only decides which rows
share a block, so it affects speed, never the result. A step whose touched blocks exceed
``FULL_PASS_SHARE`` of the blocks reads all rows in one full mat-vec instead (the loop over
blocks runs on one thread; XLA's full mat-vec on all).

Rebuild or stream: a rebuild costs ~15 streaming steps (200,000 x 256: sort 10 ms, row gather
65-75 ms, segment balls 55 ms) and pays only if the next phase skips blocks, so at each boundary
``predicted_skip_share`` tests the cells (pivot ``p_j``, radius ``rho_j``, largest minimum
``M_j``) against the last 8 centers: cell ``j`` is skippable for ``z`` when
``|z - p_j| - rho_j >= sqrt(M_j)``. At a row-weighted share ``>= REBUILD_SHARE`` (0.5) the blocks
are rebuilt and the phase pruned, else it streams (following the cells). Measured shares: at most
0.40 before phases that read (nearly) every block (uniform: 0; 1,000 Gaussians before ~1,000
centers: <= 0.06; 100 Gaussians at 64 centers: 0.15; digits + noise: <= 0.40, a phase that read
95 %), 0.76 and more before phases that read 1-15 % of the blocks. So uniform data (d = 256)
never rebuilds: 0.99-1.07x the streaming run at n = 200,000, k = 500 on a shared 2-core CPU (the
three rebuilds it paid before cost 1.28x in the same run).

Which metrics prune: all three. ``"euclidean"`` / ``"sqeuclidean"`` (rank distance ``|x - z|^2``)
use the bound in Euclidean space and square it; ``"cosine"`` (rank distance ``1 - cos``) uses it
on unit rows, where ``1 - cos(x, z) = |x/|x| - z/|z||^2 / 2`` (a zero row is at distance 1 from
everything, and at most 1/2 on the unit sphere's side: the bound stays a lower bound).

Exactness: a touched row's distance is computed by the same ``point_rank_distances`` formula as
the streaming step (the mat-vec of a block gives each row the same bits as the full mat-vec:
``distance.row_dots`` keeps every row on XLA:CPU's tiled mat-vec path, in a block as in the whole
array; an XLA:CPU property the tests check, not a guarantee of every backend), and
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

from functools import partial
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
    "predicted_skip_share",
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
# A phase boundary rebuilds the blocks only when ``predicted_skip_share`` (from the last
# PREDICT_CENTERS centers) reaches REBUILD_SHARE; else the phase streams (module docstring).
PREDICT_CENTERS = 8
REBUILD_SHARE = 0.5
# Segments per block (each its own ball): a block can hold the ends and middles of several small
# cells once the pivots outnumber the blocks' rows (e.g. 1,564 cells of 64 rows, blocks of 128:
# with two segments the second ball spanned several cells and 88 % of blocks were read).
SEGMENTS = 4
_BIG = jnp.iinfo(jnp.int32).max
_HIGHEST = jax.lax.Precision.HIGHEST


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
        (about 0 for an empty segment, whose ``M`` is ``-inf``: always skipped).
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


def _block_order(key: jax.Array, p: int) -> jax.Array:
    """int32 ``[m]``: the rows in the order of ``key`` (``0 .. p``), ties by row (a stable sort).

    One sort of ``key * m + row`` (unique values: any sort is stable) where that fits an int32,
    about 4x faster on XLA:CPU than a stable argsort (a sort of two operands)."""
    m = key.shape[0]
    if (p + 1) * m < 2**31:
        return jax.lax.sort(key * m + jnp.arange(m, dtype=jnp.int32)) % m
    return jnp.argsort(key, stable=True).astype(jnp.int32)


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
    m = x.shape[0]
    nb = -(-m // rows)
    p = pivots.shape[0]
    rank = _pivot_rank(pivots, row_aux(pivots, metric), metric)
    key = jnp.where(valid, rank[jnp.clip(labels, 0, p - 1)], p)
    order = _block_order(key, p)
    pad = nb * rows - m
    cell = key[order]
    cell = jnp.concatenate([cell, jnp.full((pad,), cell[-1])]).reshape(nb, rows)
    change = jnp.concatenate([jnp.zeros((nb, 1), bool), cell[:, 1:] != cell[:, :-1]], axis=1)
    seg = jnp.minimum(jnp.cumsum(change, axis=1), SEGMENTS - 1).astype(jnp.int32)
    slot_row = jnp.concatenate([order, jnp.full((pad,), order[-1], jnp.int32)])
    slot_id = jnp.concatenate([ids[order], jnp.full((pad,), _BIG, jnp.int32)])
    row_slot = jnp.zeros((m,), jnp.int32).at[order].set(jnp.arange(m, dtype=jnp.int32))
    xb = x[slot_row]  # XLA:CPU's gather (~3 GB/s) beat take / unique-index / loop forms
    sqb = stats.sq[slot_row]
    return BlockIndex(
        slot_row, slot_id, row_slot, xb, sqb, seg, *_block_balls(xb, sqb, seg, metric)
    )


def _block_balls(xb, sqb, seg, metric: str):
    """``(centre, radius, qmax, amax)`` of every block's segments (``BlockIndex``), a chunk of
    about 2 MiB of rows at a time (no temporary the size of ``xb``).

    Vectorised over the blocks of a chunk: each segment's mean by a one-hot product, each row's
    distance to its own segment's centre as ``sum((row - centre)^2)`` (not the expanded form,
    whose cancellation could exceed the margin), the centre picked per row by selects (exact)."""
    nb, rows = seg.shape
    d = xb.shape[1]
    acc = accum_dtype(xb.dtype)
    g = _margin_unit(xb)
    c = max(1, min(nb, (2 << 20) // max(1, rows * d * xb.dtype.itemsize)))
    parts = jnp.arange(SEGMENTS, dtype=jnp.int32)

    def chunk(i, out):
        b0 = jnp.minimum(i * c, nb - c)  # the last chunk overlaps the one before: same values
        blk = jax.lax.dynamic_slice_in_dim(xb, b0 * rows, c * rows).astype(acc)
        blk = blk.reshape(c, rows, d)
        sq = jax.lax.dynamic_slice_in_dim(sqb, b0 * rows, c * rows).reshape(c, rows)
        sg = jax.lax.dynamic_slice_in_dim(seg, b0, c)
        raw = jnp.sum(blk * blk, axis=2)
        if metric == "cosine":
            blk = blk * sq[:, :, None]  # unit rows (sq is 1 / |x_i|, 0 for zero rows)
        member = sg[:, :, None] == parts  # [c, rows, SEGMENTS]
        one_hot = member.astype(acc)
        count = jnp.maximum(jnp.sum(one_hot, axis=1), 1)
        centre = jnp.einsum("brs,brd->bsd", one_hot, blk, precision=_HIGHEST) / count[:, :, None]
        # Each row's own centre: a one-hot product adds one centre and zeros, so it is exact
        # (and faster on XLA:CPU than selects or a gather).
        own = jnp.einsum("brs,bsd->brd", one_hot, centre, precision=_HIGHEST)
        far = jnp.sum(jnp.square(blk - own), axis=2)  # [c, rows]

        def seg_max(v):
            return jnp.max(jnp.where(member, v[:, :, None], -jnp.inf), axis=1)

        r = jnp.sqrt(jnp.maximum(seg_max(far), 0.0))
        # Inflated: the computed radius and (cosine) the computed unit rows are off by ~g.
        r = r * (1 + g) + (2 * g if metric == "cosine" else 0.0)
        amax = jnp.sqrt(jnp.maximum(seg_max(raw), 0.0))
        new = (centre, r, seg_max(sq), amax)
        return tuple(
            jax.lax.dynamic_update_slice_in_dim(o, v, b0, 0) for o, v in zip(out, new, strict=True)
        )

    init = (
        jnp.zeros((nb, SEGMENTS, d), acc),
        jnp.zeros((nb, SEGMENTS), acc),
        jnp.zeros((nb, SEGMENTS), acc),
        jnp.zeros((nb, SEGMENTS), acc),
    )
    return jax.lax.fori_loop(0, -(-nb // c), chunk, init)


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


def predicted_skip_share(
    pivots: jax.Array,
    recent: jax.Array,
    labels: jax.Array,
    near: jax.Array,
    min_dist: jax.Array,
    metric: str,
    axis: str | None = None,
) -> jax.Array:
    """Predicted share of rows that blocks built from ``pivots`` would let a new center skip.

    A cell-level stand-in for ``skip_blocks``, cheap enough to decide at each phase boundary
    whether a block rebuild can pay (``pruned_steps``). Cell ``j`` (the rows labelled ``j``) is
    a ball around pivot ``p_j`` of radius ``rho_j = sqrt(max near)`` whose largest running
    minimum is ``M_j``; it is skippable for a center ``z`` when
    ``|z - p_j| - rho_j >= sqrt(M_j)`` (the block bound without its rounding margin; ``z``'s own
    cell, its nearest pivot, never is). The ``recent`` centers (the last ones picked) stand in
    for the next ones. Blocks are tighter than cells, so this underestimates the blocks' skips.
    Only a speed heuristic: results never depend on it.

    Args:
      pivots: ``[p, d]`` the pivots (the cells' centres).
      recent: ``[L, d]`` centers standing in for the next ones.
      labels: int32 ``[m]`` each row's cell (nearest pivot).
      near: ``[m]`` rank distance of each row to its pivot (an estimate is fine).
      min_dist: ``[m]`` running minima (``-inf``: selected or padding rows, left out).
      metric: the metric (rank distances are squared Euclidean, or ``1 - cos`` =
        ``|u - v|^2 / 2`` on unit rows: ``sqrt`` of either is proportional to a Euclidean
        length, which is all the test needs).
      axis: mesh axis name, or ``None`` on one device (the cells span every device).

    Returns:
      float32 scalar in ``[0, 1]``: the row-weighted share of skippable cells, averaged over the
      ``recent`` centers; the same on every device.
    """
    p = pivots.shape[0]
    live = min_dist > -jnp.inf
    cell = jnp.clip(labels, 0, p - 1)
    rho2 = jax.ops.segment_max(jnp.where(live, near, -jnp.inf), cell, num_segments=p)
    top = jax.ops.segment_max(jnp.where(live, min_dist, -jnp.inf), cell, num_segments=p)
    size = jax.ops.segment_sum(live.astype(jnp.int32), cell, num_segments=p)
    rho2, top = collective.pmax((rho2, top), axis)
    size = collective.psum(size, axis).astype(jnp.float32)
    dz = block_rank_distances(
        recent, row_aux(recent, metric), pivots, row_aux(pivots, metric), metric
    )
    root = lambda v: jnp.sqrt(jnp.maximum(v, 0.0))  # noqa: E731
    own = jnp.argmin(dz, axis=1)[:, None] == jnp.arange(p)
    skip = (root(dz) - root(rho2) >= root(top)) & ~own
    total = jnp.maximum(jnp.sum(size), 1.0) * recent.shape[0]
    return jnp.sum(jnp.where(skip, size, 0.0)) / total


def _streaming_steps(state, x, stats, stop, *, first, cells, exact, metric, axis, nb):
    """The streaming steps (as in ``kcenter``) from ``state``'s count to ``stop``, following for
    each row its nearest center among the ``cells`` (static) picked from ``first`` on: the cells
    of the blocks. ``state``: ``(min_dist, selected, count, near, labels, touched)``, also
    returned. ``exact`` (static): ``near`` is each row's rank distance to that center and
    ``labels`` its ``count - first``; else ``near`` is left alone and a row's label follows each
    center that becomes its running minimum (as in the pruned steps; the same cells without
    anchors or earlier centers): ``near`` costs two more vector reads and writes a step, ~3 % of
    the step at d = 256, where that rule costs ~1.5 %."""
    m = x.shape[0]

    def step(carry):
        md, selected, count, near, labels, touched = carry
        ids = collective.row_ids(m, axis)
        center = collective.first_argmax(md, ids, axis)
        z = collective.fetch_row(x, ids, center, axis)
        d = point_rank_distances(x, stats, z, metric).astype(md.dtype)
        local = center - ids[0]
        local = jnp.where((local >= 0) & (local < m), local, m)  # m: not here, dropped
        md = jnp.minimum(md, d).at[local].set(-jnp.inf, mode="drop")
        follow = count - first < cells
        if exact:
            closer = (d < near) & follow
            near = jnp.where(closer, d, near)
        else:  # reads the updated minima only (no copy of them: see _pruned_loop)
            closer = (md == d) & follow
        labels = jnp.where(closer, count - first, labels)
        # The center's own row (its minimum is now -inf) joins its cell: left in an older cell,
        # each center widened that cell's blocks (measured: 19 % of segments instead of 0.3 %
        # wider than 10 on the 1,000-Gaussian mixture, and no block skipped).
        labels = labels.at[jnp.where(follow, local, m)].set(count - first, mode="drop")
        touched = touched.at[count].set(nb)
        selected = selected.at[count].set(center)
        return md, selected, count + 1, near, labels, touched

    return jax.lax.while_loop(lambda c: c[2] < stop, step, state)


def pruned_steps(
    min_dist, selected, count, x, stats, stop, *, n, metric, rows, axis, rebuild_share=None
):
    """Greedy k-center steps from ``count`` up to ``stop``, reading only blocks that can change.

    The body of ``kcenter``'s pruned run (one device or a ``shard_map`` over ``axis``): same
    state in, same state out as the streaming steps. The first ``p = min(FIRST_PIVOTS, 2 nb, k)``
    steps stream (they read every row anyway while the centers are few) and note each row's
    nearest one of their centers. Then, each time the centers since ``count`` double (up to
    ``cap = min(MAX_PIVOTS, 2 nb, k)``), all of them are the pivots (the cells), and
    ``predicted_skip_share`` decides the next phase: at ``REBUILD_SHARE`` or more the rows are
    grouped into blocks by cell (``block_index``) and the phase's steps are pruned, else they
    stream (a rebuild costs ~15 streaming steps at 200,000 x 256, and a phase that reads every
    block gains nothing from it). More, smaller cells give tighter blocks as the coverage radius
    shrinks (a mixture of 1,000 Gaussians needs about 1,000 cells before a block holds one
    cluster). From ``cap`` centers on, a phase that streams is followed by another prediction
    every ``cap`` steps (the cells stay the first ``cap`` centers), and a rebuild prunes to the
    end.

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
      rebuild_share: the predicted share a rebuild needs (static; ``None``: ``REBUILD_SHARE``;
        below 0 always rebuilds, above 1 never).

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
    threshold = REBUILD_SHARE if rebuild_share is None else rebuild_share
    ids = collective.row_ids(m, axis)
    stream = partial(_streaming_steps, x=x, stats=stats, first=first, cells=cap, metric=metric)
    stream = partial(stream, axis=axis, nb=nb)
    near = jnp.full((m,), jnp.inf, min_dist.dtype)
    state = (min_dist, selected, count, near, jnp.zeros((m,), jnp.int32), jnp.zeros_like(selected))
    state = stream(state, stop=jnp.minimum(stop, count + p), exact=True)

    def phase(state, p, prune_end, stream_end, final=False):
        """Predicts from the ``p`` pivots, then prunes to ``prune_end`` or streams to
        ``stream_end``. ``near`` for the next prediction: the running minima (each row's
        distance to its cell's pivot without anchors or earlier centers; a heuristic), except
        in the ``final`` phases, whose cells stay the first ``cap`` centers and keep theirs."""
        md, selected, count, near, labels, touched = state
        pivots = collective.fetch_rows(
            x, ids, jax.lax.dynamic_slice_in_dim(selected, first, p), axis
        )
        last = min(PREDICT_CENTERS, p)
        recent = collective.fetch_rows(
            x, ids, jax.lax.dynamic_slice_in_dim(selected, count - last, last), axis
        )
        share = predicted_skip_share(pivots, recent, labels, near, md, metric, axis)

        def prune(state):
            md, selected, count, near, labels, touched = state
            index = block_index(x, stats, ids < n, ids, pivots, labels, metric, rows)
            md, selected, count, touched, labels = _pruned_loop(
                index, md, selected, count, touched, labels, x, stats, prune_end,
                base=first, metric=metric, axis=axis,
            )  # fmt: skip
            # ``near`` is not followed by the pruned steps: the running minima stand in for it
            # at the next prediction (equal without anchors or earlier centers; a heuristic).
            return md, selected, count, md, labels, touched

        def streamed(state):
            md, selected, count, near, labels, touched = stream(state, stop=stream_end, exact=False)
            return md, selected, count, near if final else md, labels, touched

        return jax.lax.cond(share >= threshold, prune, streamed, state)

    while p < cap:  # unrolled: one phase per pivot count p (static)
        nxt = min(2 * p, cap)
        end = jnp.minimum(stop, first + nxt)
        # Past the previous steps only if they took all p (so the pivots exist): the same on
        # every device.
        state = jax.lax.cond(
            state[2] < stop, partial(phase, p=p, prune_end=end, stream_end=end), lambda s: s, state
        )
        p = nxt

    def final(state):  # from cap centers on: predict every cap streamed steps
        return phase(state, cap, stop, jnp.minimum(stop, state[2] + cap), final=True)

    state = jax.lax.while_loop(lambda s: s[2] < stop, final, state)
    md, selected, count, _, _, touched = state
    return md, selected, count, collective.psum(touched, axis)


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
                own = (now == d) | (b * rows + lane == slot)  # the center joins its own cell
                lab = jax.lax.dynamic_update_slice_in_dim(lab, jnp.where(own, me, was), b * rows, 0)
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
