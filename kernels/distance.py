"""Distances between rows, blocked so that no more than ``block_size x m`` values live at once.

Kernels rank points by a *rank distance*: the squared Euclidean distance for ``"euclidean"`` and
``"sqeuclidean"`` (the square root is monotone, so it never changes an argmin / argmax) and the
cosine distance ``1 - clip(cos, -1, 1)`` for ``"cosine"``. ``to_metric`` turns a rank distance into
the metric's own value.

Two ways to compute a distance are used, each where it is best:

* one point against all rows (the inner step of greedy k-center): one mat-vec over ``x``, with
  squared norms taken from the mean row (``PointStats``), so cancellation happens at the scale of
  the data's spread rather than of its offset; memory-bandwidth bound (an elementwise
  ``sum((x_i - c) ** 2)`` is exact too, but XLA on CPU runs it about 10x slower);
* a block of rows against many rows (pairwise matrices, nearest-anchor and nearest-neighbour
  tables): ``|a|^2 + |b|^2 - 2 a.b`` through a matrix product, clamped at zero — compute bound and
  much faster, at the price of rounding of order ``eps * |a|^2`` for near-identical rows.

Inputs may be float32, bfloat16 or float16; products accumulate in float32 (float64 inputs, with
``jax_enable_x64``, stay float64).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._checks import as_float_matrix, check_block_size, check_metric, check_same_width

__all__ = ["pairwise_distances", "to_metric"]

_HIGHEST = jax.lax.Precision.HIGHEST
# Default number of float32 values a block of a distance matrix may hold (64 MiB).
BLOCK_BUDGET = 1 << 24
# Default number of values a temporary (e.g. rescaled) copy of a block of rows may hold (4 MiB).
ROW_BLOCK_BUDGET = 1 << 20
# Rows wider than this are column-summed a block of rows at a time: XLA:CPU's column reduction
# of a [n, d] array copies part of it, growing with d (measured, float32: none at d = 2,048,
# 0.24x at 8,192, 0.48x at 16,384, a whole copy from 32,768 on, and 3 s for 1.1 GB at 131,072
# where a blocked sum reads it once).
WIDE_ROWS = 4096
WIDE_SUM_ROWS = 8


def accum_dtype(dtype) -> jnp.dtype:
    """float64 stays float64; every other floating dtype accumulates in float32."""
    return jnp.dtype(jnp.float64) if jnp.dtype(dtype) == jnp.float64 else jnp.dtype(jnp.float32)


def auto_block(
    n_cols: int, n_rows: int, block_size: int | None = None, budget: int = BLOCK_BUDGET
) -> int:
    """Rows per block: ``block_size`` if given, else as many as keep ``rows x n_cols`` within
    ``budget`` values."""
    if block_size is None:
        block_size = max(1, budget // max(1, n_cols))
    return max(1, min(int(block_size), max(1, n_rows)))


def row_aux(x: jax.Array, metric: str, *, blocked: bool = False) -> jax.Array:
    """Per-row quantity the block form needs: squared norm (Euclidean) or inverse norm (cosine).

    A zero row gets inverse norm 0, so every cosine similarity with it is 0 and its cosine
    distance to anything (itself included) is 1. ``blocked``: rows wider than ``WIDE_ROWS`` are
    summed ``WIDE_SUM_ROWS`` at a time (``shifted_sq``: the one-shot row reduction held 0.75x of a
    ``[735, 131072]`` ``x`` in temporaries; ``pairs_within`` uses it). Not the default: inside
    ``select`` on wide rows the blocked loop raised the peak (0.346x -> 0.36x the store,
    ``scripts/multihost_memory.py --steps select``), and it would change the bits of wide rows.
    """
    acc = accum_dtype(x.dtype)
    if blocked and x.shape[1] > WIDE_ROWS:
        sq = shifted_sq(x, jnp.zeros((x.shape[1],), acc))
    else:
        sq = jnp.sum(jnp.square(x.astype(acc)), axis=1)
    if metric == "cosine":
        return jnp.where(sq > 0, jax.lax.rsqrt(jnp.where(sq > 0, sq, 1)), 0).astype(acc)
    return sq


def block_rank_distances(a, a_aux, b, b_aux, metric: str) -> jax.Array:
    """Rank distances ``[len(a), len(b)]`` through one matrix product."""
    acc = accum_dtype(jnp.promote_types(a.dtype, b.dtype))
    dots = jnp.dot(a, b.T, precision=_HIGHEST, preferred_element_type=acc)
    if metric == "cosine":
        # (a_inv * b_inv) first: the product is then symmetric, so d(a, b) == d(b, a) bit for bit.
        cos = jnp.clip(dots * (a_aux[:, None] * b_aux[None, :]), -1.0, 1.0)
        return 1.0 - cos
    return jnp.maximum(a_aux[:, None] + b_aux[None, :] - 2.0 * dots, 0.0)


class PointStats(NamedTuple):
    """Per-row quantities that let one point be compared with all rows in one mat-vec.

    Attributes:
      shift: ``[d]`` origin the squared norms are taken from: the mean row for float32/float64
        inputs (distances then cancel at the scale of the data's spread, not of its offset from
        0), zeros for 16-bit inputs (whose own rounding dwarfs that cancellation, and whose rows
        then stay exact in the mat-vec).
      sq: ``[n]`` ``|x_i - shift|^2`` (Euclidean) or ``1 / |x_i|`` (cosine; 0 for a zero row).
    """

    shift: jax.Array
    sq: jax.Array


def column_sums(x: jax.Array, acc, valid: jax.Array | None = None) -> jax.Array:
    """``[d]`` column sums of ``x`` in dtype ``acc``, rows where ``valid`` is False left out,
    with no copy of ``x``: one ``jnp.sum`` for rows up to ``WIDE_ROWS`` wide (as every kernel
    summed before; the same bits), else ``WIDE_SUM_ROWS`` rows at a time added pairwise, row
    to row (elementwise over ``d``: XLA:CPU's column reduction of wide rows runs over a copy,
    and even blocked it ran at 0.8 GB/s; measured 2.2 s for 1.1 GB at d = 131,072, this 0.06 s).
    """
    m, d = x.shape
    if d <= WIDE_ROWS or m == 0:
        rows = x.astype(acc)
        if valid is not None:
            rows = jnp.where(valid[:, None], rows, 0)
        return jnp.sum(rows, axis=0)
    block = min(WIDE_SUM_ROWS, m)

    def fold(rows, start, fresh_from, total):
        keep = start + jnp.arange(block) >= fresh_from  # rows of the previous block: once only
        if valid is not None:
            keep = keep & jax.lax.dynamic_slice_in_dim(valid, start, block)
        rows = jnp.where(keep[:, None], rows.astype(acc), 0)
        while rows.shape[0] > 1:  # pairwise: (r0 + r1) + (r2 + r3) ...
            if rows.shape[0] % 2:
                rows = jnp.concatenate([rows, jnp.zeros((1, d), acc)])
            rows = rows[0::2] + rows[1::2]
        return total + rows[0]

    return fold_row_blocks(fold, x, block, jnp.zeros((d,), acc))


def shifted_sq(x: jax.Array, shift: jax.Array) -> jax.Array:
    """``[n]`` ``|x_i - shift|^2`` in ``shift``'s dtype: one fused reduction for rows up to
    ``WIDE_ROWS`` wide, ``WIDE_SUM_ROWS`` rows at a time for wider rows (at d = 131,072 XLA:CPU's
    one-shot row reduction of ``x - shift`` held a quarter of ``x`` in temporaries)."""
    acc = shift.dtype
    m, d = x.shape
    if d <= WIDE_ROWS or m == 0:
        return jnp.sum(jnp.square(x.astype(acc) - shift), axis=1)
    block = min(WIDE_SUM_ROWS, m)

    def fold(rows, start, fresh_from, out):
        sq = jnp.sum(jnp.square(rows.astype(acc) - shift), axis=1)
        return jax.lax.dynamic_update_slice_in_dim(out, sq, start, 0)

    return fold_row_blocks(fold, x, block, jnp.zeros((m,), acc))


def point_stats(x: jax.Array, metric: str) -> PointStats:
    """One pass (two for float32 Euclidean) over ``x``; O(n + d) memory."""
    acc = accum_dtype(x.dtype)
    d = x.shape[1]
    if metric == "cosine":
        return PointStats(jnp.zeros((d,), acc), row_aux(x, "cosine"))
    if jnp.dtype(x.dtype).itemsize >= 4 and x.shape[0] > 0:
        shift = column_sums(x, acc) / x.shape[0]
    else:
        shift = jnp.zeros((d,), acc)
    return PointStats(shift, shifted_sq(x, shift))


# XLA:CPU's mat-vec computes rows in tiles of this many; the last ``m mod MATVEC_TILE`` rows of
# an ``m``-row array take another path whose last bit can differ (measured, float32, d = 7..256).
MATVEC_TILE = 8


def row_dots(x: jax.Array, v: jax.Array, acc) -> jax.Array:
    """``x @ v`` (``[m]``, ``acc`` accumulation) whose every row gets the same bits wherever it
    sits in ``x``.

    A plain mat-vec rounds the last ``m mod 8`` rows by another path than the rest, so the same
    row could get a different last bit on one device than as a shard's last row on a mesh, and
    exact duplicates then broke their ties differently (picks swapped on 8 devices). Here those
    rows are taken from a mat-vec of the last 8 rows (an ``m < 8`` array is padded to 8), so every
    row is computed by the tiled path; ``tests/test_distance.py`` checks every offset. Cost: one
    8-row mat-vec, within noise of the full step at 1,000,003 x 256 (``/tmp``-free figures in
    docs/benchmarks.md).
    """
    m = x.shape[0]
    tail = m % MATVEC_TILE
    dot = partial(jnp.dot, precision=_HIGHEST, preferred_element_type=acc)
    if m < MATVEC_TILE:
        return dot(jnp.pad(x, ((0, MATVEC_TILE - m), (0, 0))), v)[:m]
    out = dot(x, v)
    if tail == 0:
        return out
    last = dot(x[m - MATVEC_TILE :], v)
    return out.at[m - tail :].set(last[MATVEC_TILE - tail :])


def point_rank_distances(
    x: jax.Array, stats: PointStats, center: jax.Array, metric: str
) -> jax.Array:
    """Rank distances ``[n]`` from every row of ``x`` to ``center``: one mat-vec over ``x``.

    ``|x_i - c|^2 = |x_i - s|^2 - 2 (x_i . v - s . v) + |v|^2`` with ``v = c - s``; the mat-vec
    ``x @ v`` runs in the storage dtype with ``acc`` accumulation (for 16-bit inputs ``s = 0`` and
    ``v`` is a row of ``x``, so no precision is lost converting it).
    """
    acc = accum_dtype(x.dtype)
    c = center.astype(acc)
    if metric == "cosine":
        dots = row_dots(x, center.astype(x.dtype), acc)
        c_sq = jnp.sum(c * c)
        c_inv = jnp.where(c_sq > 0, jax.lax.rsqrt(jnp.where(c_sq > 0, c_sq, 1)), 0)
        return 1.0 - jnp.clip(dots * stats.sq * c_inv, -1.0, 1.0)
    v = c - stats.shift
    dots = row_dots(x, v.astype(x.dtype), acc)
    d = stats.sq - 2.0 * (dots - jnp.dot(stats.shift, v)) + jnp.dot(v, v)
    return jnp.maximum(d, 0.0)


def block_point_rank_distances(
    x: jax.Array, stats: PointStats, centers: jax.Array, metric: str
) -> jax.Array:
    """Rank distances ``[n, b]`` from every row of ``x`` to each of ``centers`` ``[b, d]``: one
    matrix product, through the shift of ``stats`` as :func:`point_rank_distances` (the plain
    block form cancels at the scale of the rows' offset from 0: anchors 10,000 away from the
    origin once measured every distance as 0). Cosine, and 16-bit rows (whose shift is 0), keep
    the plain block form."""
    acc = accum_dtype(x.dtype)
    if metric == "cosine" or jnp.dtype(x.dtype).itemsize < 4:
        return block_rank_distances(x, stats.sq, centers, row_aux(centers, metric), metric)
    v = centers.astype(acc) - stats.shift
    dots = jnp.dot(x, v.T, precision=_HIGHEST, preferred_element_type=acc)
    d = stats.sq[:, None] - 2.0 * (dots - jnp.dot(v, stats.shift)[None, :])
    return jnp.maximum(d + jnp.sum(v * v, axis=1)[None, :], 0.0)


def first_argmax(values: jax.Array) -> jax.Array:
    """``jnp.argmax`` (lowest index among equal maxima) as a max then a min-reduction.

    Same result; XLA on CPU runs the two plain reductions about 7x faster than its variadic
    argmax reduction, which otherwise costs a k-center step as much as a tenth of its mat-vec.
    """
    ids = jnp.arange(values.shape[0], dtype=jnp.int32)
    return jnp.min(jnp.where(values == jnp.max(values), ids, values.shape[0]))


def first_argmin(values: jax.Array) -> jax.Array:
    """``jnp.argmin`` (lowest index among equal minima); see ``first_argmax``."""
    ids = jnp.arange(values.shape[0], dtype=jnp.int32)
    return jnp.min(jnp.where(values == jnp.min(values), ids, values.shape[0]))


def to_metric(rank_distance: jax.Array, metric: str) -> jax.Array:
    """Rank distance -> the metric's value (square root for ``"euclidean"``)."""
    check_metric(metric)
    if metric == "euclidean":
        return jnp.sqrt(jnp.maximum(rank_distance, 0.0))
    return rank_distance


def fold_row_blocks(fn, x: jax.Array, block: int, init):
    """Folds ``fn(rows, start, fresh_from, carry) -> carry`` over row blocks of ``x``, no copy.

    The last block is shifted back to end at row ``n`` (it may overlap the previous one), so every
    block has the static shape ``[block, d]``. Rows ``start + j`` with ``start + j < fresh_from``
    were already seen by the previous block: a reduction must mask them; a write may repeat them.
    """
    n = x.shape[0]
    num_blocks = -(-n // block)

    def body(i, carry):
        fresh_from = i * block
        start = jnp.minimum(fresh_from, n - block)
        rows = jax.lax.dynamic_slice_in_dim(x, start, block, axis=0)
        return fn(rows, start, fresh_from, carry)

    return jax.lax.fori_loop(0, num_blocks, body, init)


@partial(jax.jit, static_argnames=("metric", "block_size", "self_distances"))
def _pairwise(x, y, *, metric, block_size, self_distances):
    n, m = x.shape[0], y.shape[0]
    if n == 0 or m == 0:
        return jnp.zeros((n, m), accum_dtype(jnp.promote_types(x.dtype, y.dtype)))
    block = auto_block(m, n, block_size)
    x_aux, y_aux = row_aux(x, metric), row_aux(y, metric)

    def one_block(rows, start, fresh_from, out):
        aux = jax.lax.dynamic_slice_in_dim(x_aux, start, block)
        d = block_rank_distances(rows, aux, y, y_aux, metric)
        if self_distances and metric != "cosine":
            # d(x_i, x_i) is exactly 0, whatever the rounding of the product form says.
            row_ids = start + jnp.arange(block)[:, None]
            d = jnp.where(row_ids == jnp.arange(m)[None, :], 0.0, d)
        return jax.lax.dynamic_update_slice_in_dim(out, d.astype(out.dtype), start, axis=0)

    out_dtype = accum_dtype(jnp.promote_types(x.dtype, y.dtype))
    out = fold_row_blocks(one_block, x, block, jnp.zeros((n, m), out_dtype))
    return to_metric(out, metric)


def pairwise_distances(x, y=None, *, metric: str = "euclidean", block_size: int | None = None):
    """Distance matrix between the rows of ``x`` and the rows of ``y``.

    Args:
      x: Array of shape ``[n, d]``, floating (float32, bfloat16, float16).
      y: Array of shape ``[m, d]``; defaults to ``x`` (then the diagonal is exactly 0 for the
        Euclidean metrics).
      metric: ``"euclidean"``, ``"sqeuclidean"`` or ``"cosine"``. The cosine distance is
        ``1 - clip(cos, -1, 1)``; a zero vector is at cosine distance 1 from everything.
      block_size: rows of ``x`` processed at once, so that at most ``block_size x m`` temporary
        values exist besides the output. ``None`` picks a block of at most 16M values.

    Returns:
      float32 array of shape ``[n, m]`` (float64 for float64 inputs).
    """
    check_metric(metric)
    block_size = check_block_size(block_size)
    x = as_float_matrix(x, "x")
    self_distances = y is None
    if y is None:
        y = x
    else:
        y = as_float_matrix(y, "y")
        check_same_width(x, y, "x", "y")
    return _pairwise(x, y, metric=metric, block_size=block_size, self_distances=self_distances)
