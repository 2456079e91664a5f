"""Lloyd iterations of exact k-means: the blocked assignment, the centroid update and the run
loop with conservative distance bounds (Hamerly's), which skip the rows whose nearest centroid
provably cannot have changed. Used by ``kmeans.py``; the bodies take ``axis`` (``None`` on one
device) so that the same code runs row-sharded on a mesh.

Assignment: per block of ``b`` rows the scores ``|c|^2 - 2 c.x`` (``[k, b]``, one GEMM with the
centroids as the left operand, ``|x|^2`` left out: it is the same for every centroid of a row),
then the first minimum over the *major* axis by halving adjacent rows (rows ``2i`` and ``2i + 1``
meet, the right one wins only when strictly smaller: the lowest index wins ties at every level,
since each survivor stands for a contiguous run of indices). Every step is elementwise over
contiguous ``b``-long rows, so it vectorises; the same halving carries the second smallest
score, which the bounds use. (Measured at n = 100,000, d = 64, k = 100 on CPU: the halving over
the minor axis of ``[b, k]`` scores cost about 8 ms an iteration, 0.6x of the GEMM; this one
about a quarter of that.)

Bounds (float32 / float64 rows; 16-bit rows always take the full pass, see ``lloyd_loop``): per
row an upper bound ``u`` on the distance to its centroid and a lower bound ``l`` on the distance
to every other centroid, both kept valid across the centroid moves (``u += shift[a]``,
``l -= the largest shift of another centroid``). A row whose bounds prove that its centroid is
still the nearest by more than the rounding of the scores (``max(l, sep[a] - u)^2 > u^2 + M``,
``sep[a]`` the distance from its centroid to the nearest other one, ``M`` a bound on twice the
float error of a score) keeps it; the rows that fail are gathered into blocks of the same shape
as the full pass and recomputed. When more than ``DENSE_FRACTION`` of the rows fail, the full
pass is cheaper than the gather and runs instead. (Hamerly's tightening, an exact ``u`` for the
failing rows before the second test, cost more than it saved: a gathered row-wise reduction runs
at about a third of a full pass on XLA:CPU, measured 1.3x to 1.6x slower runs to convergence.)
The skipped rows' assignment is the one the full pass would give (their float argmin is
certified), and a recomputed block has the full pass's shape (the GEMM's rounding of a row
depends on the block's shape, not on the row's place in it: measured), so the run is the
unbounded run, tested equal iteration by iteration. The centroid sums are always taken over all
rows (a segment sum, ``O(n d)``): the centroids are those of the full pass, bit for bit. The
bounds live only inside one ``kmeans_run`` call (the first iteration of a call is a full pass),
so ``KMeansState`` and its checkpoints are unchanged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from . import collective
from .distance import ROW_BLOCK_BUDGET, accum_dtype, auto_block, fold_row_blocks

__all__ = [
    "ASSIGN_BLOCK_ROWS",
    "ASSIGN_BLOCK_VALUES",
    "DENSE_FRACTION",
    "assign",
    "assign_block_rows",
    "first_two_min",
    "lloyd_loop",
    "update",
]

HIGHEST = jax.lax.Precision.HIGHEST
# Blocks of [block, k] scores of at most 64K values (256 KiB, L2-sized), 128 to 512 rows: the
# GEMM's output and the halving over it stay in cache (measured at n = 100,000, d = 64 on CPU:
# k = 100, 256 to 512 rows took ~0.7x the time of 2,621; k = 500: 128 rows best; k = 20: 512).
ASSIGN_BLOCK_VALUES = 1 << 16
ASSIGN_BLOCK_ROWS = (128, 512)
# Above this fraction of rows to recompute, one full pass beats gathering them into blocks.
DENSE_FRACTION = 0.7


def assign_block_rows(k: int, n_rows: int, block_size: int | None, d: int = 1) -> int:
    """Rows per assignment block: ``block_size`` if given, else ``ASSIGN_BLOCK_VALUES // k``
    clipped to ``ASSIGN_BLOCK_ROWS``, and for rows wider than 8,192 at most
    ``ROW_BLOCK_BUDGET // d`` (a block of rows gathered by the bounded pass is a copy: 512 rows
    of 131,072 floats held 268 MB per device)."""
    if block_size is None:
        lo, hi = ASSIGN_BLOCK_ROWS
        block_size = max(lo, min(hi, ASSIGN_BLOCK_VALUES // max(1, k)))
        block_size = max(1, min(block_size, ROW_BLOCK_BUDGET // max(1, d)))
    return auto_block(k, n_rows, block_size)


def first_two_min(scores):
    """Of ``[k, b]`` scores, per column: (row of the minimum, lowest on ties; the minimum; the
    second smallest, ``inf`` when ``k == 1``), by halving adjacent rows (see the module doc)."""
    k, b = scores.shape
    vals = scores
    idx = jnp.broadcast_to(jnp.arange(k, dtype=jnp.int32)[:, None], (k, b))
    second = jnp.full((k, b), jnp.inf, scores.dtype)
    while vals.shape[0] > 1:
        if vals.shape[0] % 2:  # one more row that never wins: +inf loses even a tie at +inf
            vals = jnp.concatenate([vals, jnp.full((1, b), jnp.inf, vals.dtype)])
            idx = jnp.concatenate([idx, jnp.full((1, b), k, jnp.int32)])
            second = jnp.concatenate([second, jnp.full((1, b), jnp.inf, vals.dtype)])
        h = vals.shape[0] // 2
        vals, idx, second = (a.reshape(h, 2, b) for a in (vals, idx, second))
        left, right = vals[:, 0], vals[:, 1]
        take = right < left
        second = jnp.minimum(jnp.maximum(left, right), jnp.minimum(second[:, 0], second[:, 1]))
        vals = jnp.where(take, right, left)
        idx = jnp.where(take, idx[:, 1], idx[:, 0])
    return idx[0], vals[0], second[0]


def _scores(rows, c, c_sq):
    """``[k, b]`` scores ``|c|^2 - 2 c.x`` of a block of rows."""
    dots = jnp.einsum("kd,bd->kb", c, rows, precision=HIGHEST, preferred_element_type=c_sq.dtype)
    return c_sq[:, None] - 2.0 * dots


def _prepared(x, centroids):
    acc = accum_dtype(x.dtype)
    return centroids.astype(x.dtype), jnp.sum(jnp.square(centroids.astype(acc)), axis=1)


def _full_pass(x, c, c_sq, block):
    """(assignment, best score, second best score) of every row, a block at a time."""
    m = x.shape[0]
    put = jax.lax.dynamic_update_slice_in_dim

    def fold(rows, start, fresh_from, out):
        a, v1, v2 = first_two_min(_scores(rows, c, c_sq))
        return put(out[0], a, start, 0), put(out[1], v1, start, 0), put(out[2], v2, start, 0)

    init = (jnp.zeros((m,), jnp.int32), jnp.zeros((m,), c_sq.dtype), jnp.zeros((m,), c_sq.dtype))
    return fold_row_blocks(fold, x, block, init)


def assign(x, centroids, block):
    """Assignment int32 ``[n]``: nearest centroid of each row (lowest index on ties),
    ``[block, k]`` scores at a time; no clamp at 0 (it could make distinct distances tie)."""
    m = x.shape[0]
    c, c_sq = _prepared(x, centroids)

    def fold(rows, start, fresh_from, out):
        a, _, _ = first_two_min(_scores(rows, c, c_sq))
        return jax.lax.dynamic_update_slice_in_dim(out, a, start, axis=0)

    return fold_row_blocks(fold, x, block, jnp.zeros((m,), jnp.int32))


def update(x, assignment, centroids, axis):
    """Mean of each cluster's points over all devices: per-cluster sums by a segment sum (a
    scatter-add of each row into its cluster's sum, ``O(n d)``, no one-hot ``[n, k]``; fusing it
    into the assignment blocks measured no faster), in row blocks of at most
    ``ROW_BLOCK_BUDGET`` values when 16-bit rows must be widened, over all rows at once
    otherwise; sums and counts ``psum``ed; an empty cluster keeps its centroid. Padding rows
    (``-1``) are dropped by the segment sum."""
    k, d = centroids.shape
    acc = centroids.dtype
    block = auto_block(d, x.shape[0], None, budget=ROW_BLOCK_BUDGET)

    def fold(rows, start, fresh_from, sums):
        a = jax.lax.dynamic_slice_in_dim(assignment, start, block)
        a = jnp.where(start + jnp.arange(block) >= fresh_from, a, -1)  # rows seen already
        return sums + jax.ops.segment_sum(rows.astype(acc), a, num_segments=k)

    if x.dtype == acc:  # nothing to widen: one scatter over all rows, no block copies
        sums = jax.ops.segment_sum(x, assignment, num_segments=k)
    else:
        sums = fold_row_blocks(fold, x, block, jnp.zeros((k, d), acc))
    counts = jax.ops.segment_sum(jnp.ones_like(assignment, acc), assignment, num_segments=k)
    sums, counts = collective.psum((sums, counts), axis)
    safe = jnp.where(counts > 0, counts, 1.0)
    return jnp.where(counts[:, None] > 0, sums / safe[:, None], centroids)


# --------------------------------------------------------------------------- bounds


def _slack(x) -> float:
    """Relative slack ``rho`` of every bound: ``4 (d + 8)`` units of rounding, above the error of
    a length-``d`` dot product (``gamma_d``) and of the few operations after it."""
    return 4.0 * (x.shape[1] + 8) * float(jnp.finfo(x.dtype).eps) / 2.0


def _separation(c, c_sq, rho):
    """Lower bound on the distance from each centroid to the nearest other one (``inf`` when
    ``k == 1``), through the Gram form less its rounding bound."""
    k = c.shape[0]
    if k == 1:
        return jnp.full((1,), jnp.inf, c_sq.dtype)
    gram = jnp.dot(c, c.T, precision=HIGHEST, preferred_element_type=c_sq.dtype)
    sq = c_sq[:, None] + c_sq[None, :] - 2.0 * gram
    sq = jnp.where(jnp.eye(k, dtype=bool), jnp.inf, sq)
    sq = jnp.min(sq, axis=1) - 4.0 * rho * jnp.max(c_sq)
    return jnp.sqrt(jnp.maximum(sq, 0.0)) * (1.0 - rho)


def _certified(upper, lower, sep_a, margin, rho):
    """Whether the bounds prove that the row's centroid is nearer than every other one by more
    than ``margin`` (squared): then the float argmin is that centroid, strictly."""
    low = jnp.maximum(lower, jnp.where(jnp.isfinite(upper), sep_a - upper, 0.0))
    low = jnp.maximum(low, 0.0)
    return low * low * (1.0 - rho) > upper * upper * (1.0 + rho) + margin


def _shifted(upper, lower, a, old, new, rho):
    """Bounds of the rows after the centroids moved from ``old`` to ``new``."""
    shift = jnp.sqrt(jnp.sum(jnp.square(new - old), axis=1)) * (1.0 + rho)
    top = jnp.argmax(shift)
    first = shift[top]
    second = jnp.max(jnp.where(jnp.arange(shift.shape[0]) == top, 0.0, shift))
    others = jnp.where(a == top, second, first)  # largest move of a centroid other than a's
    upper = (upper + shift[jnp.maximum(a, 0)]) * (1.0 + rho)
    lower = jnp.maximum(lower - others, 0.0) * (1.0 - rho)
    return upper, lower


def _sparse_pass(x, c, c_sq, active, prev, block, count):
    """(assignment, best score, second best score) of the ``active`` rows (others: ``prev`` and
    zeros), gathered ``block`` at a time into blocks of the full pass's shape."""
    m = x.shape[0]
    size = -(-m // block) * block
    # The active rows' indices in order, then ``m`` (no row): a scatter to each one's rank (measured
    # 0.6x the time of ``jnp.nonzero``).
    rank = jnp.cumsum(active.astype(jnp.int32)) - 1
    idx = jnp.full((size,), m, jnp.int32).at[jnp.where(active, rank, size)]
    idx = idx.set(jnp.arange(m, dtype=jnp.int32), mode="drop")
    zeros = jnp.zeros((m,), c_sq.dtype)

    def body(i, out):
        sel = jax.lax.dynamic_slice_in_dim(idx, i * block, block)
        rows = x.at[sel].get(mode="fill", fill_value=0)
        got = first_two_min(_scores(rows, c, c_sq))
        return tuple(o.at[sel].set(g, mode="drop") for o, g in zip(out, got, strict=True))

    return jax.lax.fori_loop(0, -(-count // block), body, (prev, zeros, zeros))


def lloyd_loop(
    state, x, max_steps, num_iters, *, n, block_size, axis, dense_fraction=DENSE_FRACTION
):
    """Lloyd iterations from ``state`` (a ``KMeansState``: ``centroids``, ``assignment``,
    ``iteration``, ``changed``) until ``num_iters`` in all, ``max_steps`` more, or an
    assignment that repeats the previous one. ``x``: this device's rows (``n`` in all).
    ``dense_fraction`` (static): the full pass runs when more than this fraction of the rows
    must be recomputed (``< 0``: always, the unbounded iteration; ``>= 1``: never, only the
    gathered blocks)."""
    m, d = x.shape
    k = state.centroids.shape[0]
    block = assign_block_rows(k, m, block_size, d)
    stop = jnp.minimum(num_iters, state.iteration + max_steps)
    padded = collective.axis_size(axis) * m != n
    valid = collective.row_ids(m, axis) < n
    acc = state.centroids.dtype
    # 16-bit rows: the scores use the rounded centroids against |c|^2 of the exact ones, so no
    # distance bounds them tightly; every iteration takes the full pass.
    bounded = x.dtype == acc
    rho = _slack(x) if bounded else 0.0
    x_sq = jnp.sum(jnp.square(x), axis=1) if bounded else None

    def assign_step(c, prev, upper, lower):
        """(assignment, upper, lower) for centroids ``c``."""
        cx, c_sq = _prepared(x, c)
        if not bounded:
            return _full_pass(x, cx, c_sq, block)[0], upper, lower
        margin = 2.0 * rho * (x_sq + 2.0 * jnp.max(c_sq))
        sep = _separation(c, c_sq, rho)
        ok = (prev >= 0) & _certified(upper, lower, sep[jnp.maximum(prev, 0)], margin, rho)
        active = valid & ~ok
        count = jnp.sum(active.astype(jnp.int32))

        def full(_):
            return _full_pass(x, cx, c_sq, block)

        def sparse(_):
            return _sparse_pass(x, cx, c_sq, active, prev, block, count)

        dense = count > dense_fraction * m
        a, v1, v2 = jax.lax.cond(dense, full, sparse, None)
        fresh = active | dense
        up = jnp.sqrt(jnp.maximum(v1 + x_sq + margin, 0.0)) * (1.0 + rho)
        low = jnp.sqrt(jnp.maximum(v2 + x_sq - margin, 0.0)) * (1.0 - rho)
        return a, jnp.where(fresh, up, upper), jnp.where(fresh, low, lower)

    def body(carry):
        s, upper, lower = carry
        a, upper, lower = assign_step(s.centroids, s.assignment, upper, lower)
        if padded:
            a = jnp.where(valid, a, -1)
        changed = collective.psum(jnp.any(a != s.assignment).astype(jnp.int32), axis) > 0
        centroids = update(x, a, s.centroids, axis)
        if bounded:
            upper, lower = _shifted(upper, lower, a, s.centroids, centroids, rho)
        s = s._replace(centroids=centroids, assignment=a, iteration=s.iteration + 1)
        return s._replace(changed=changed), upper, lower

    # Unknown bounds at the start of a call: every row fails the test, the first pass is full.
    upper = jnp.full((m,), jnp.inf, acc)
    lower = jnp.zeros((m,), acc)
    carry = (state, upper, lower)
    out = jax.lax.while_loop(lambda c: (c[0].iteration < stop) & c[0].changed, body, carry)
    return out[0]
