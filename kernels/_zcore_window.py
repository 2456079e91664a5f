"""ZCore's window search on one device (``num_dims == 2``), XLA: the per-dimension sorted tables
and the chunk update that proves most samples from a window of consecutive ranks.

Private module of ``zcore.py`` (which draws the samples and drives the chunks); it also holds the
pieces the brute-force body (``_zcore_body.py``) shares: ``EPS`` and ``subspace_distance``.
Pure functions, no I/O.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["EPS", "Tables", "build_tables", "chunk_update", "subspace_distance"]

EPS = 1e-8
"""Added to every neighbour distance before the penalty's power (duplicates at distance 0)."""


def subspace_distance(xt, dims, point, metric: str):
    """``[chunk, n]`` distances from every point to ``point[c]`` in subspace ``dims[c]``."""
    total = None
    for j in range(dims.shape[1]):  # num_dims is small and static
        diff = xt[dims[:, j]] - point[:, j, None]
        term = jnp.abs(diff) if metric == "l1" else diff * diff
        total = term if total is None else total + term
    return total


# --- Window search (num_dims == 2) ------------------------------------------------------------
#
# Per dimension, the points sorted by value (``order``) and the sorted values (``svals``), computed
# once per run. A sample searches a window of ``W_0`` consecutive ranks in its first dimension's
# order and ``W_1 = width - W_0`` in its second's (the split that proves the most, per sample). A
# point in neither window differs from the query by at least ``g_0`` in the first coordinate and
# ``g_1`` in the second (the gaps to the windows' edges), so its distance is at least ``g_0 + g_1``
# (L1) or ``sqrt(g_0^2 + g_1^2)`` (L2), computed with the same float operations, which are
# monotone. When the answer found in the windows is strictly below that bound it is the exact
# answer (ties included: any point outside is strictly farther); otherwise the sample is redone by
# brute force over all ``n`` points.


class Tables(NamedTuple):
    order: jax.Array  # int32 [d * (n + 2 pad)]: per dimension, point indices by value (stable)
    svals: jax.Array  # float32 [d * (n + 2 pad)]: the sorted values, -inf / +inf in the padding


@partial(jax.jit, static_argnames=("pad",))
def build_tables(xt, pad: int) -> Tables:
    d = xt.shape[0]
    # Stable: equal values (-0.0 == 0.0 included) in index order, the order IEEE comparisons and the
    # lexicographic (value, index) test in _window_candidates agree with.
    order = jnp.argsort(xt, axis=1, stable=True).astype(jnp.int32)
    svals = jnp.take_along_axis(xt, order, axis=1)
    order = jnp.pad(order, ((0, 0), (pad, pad)))
    svals = jnp.concatenate(
        [jnp.full((d, pad), -jnp.inf, xt.dtype), svals, jnp.full((d, pad), jnp.inf, xt.dtype)], 1
    )
    return Tables(order.reshape(-1), svals.reshape(-1))


def _combine(g0, g1, metric: str, root: bool):
    """The distance bound from the two gaps, with the distance's own float operations."""
    if metric == "l1":
        return g0 + g1
    sq = g0 * g0 + g1 * g1
    return jnp.sqrt(sq) if root else sq


def _best_window(svals, row, q, width, n: int):
    """For windows of ``width`` consecutive ranks in the sorted row starting at flat offset
    ``row`` (``width`` may be 0): the start maximising the gap ``min(q - v[s - 1], v[s + width] -
    q)`` and that gap (clamped at 0). Binary search: the left gap falls and the right one grows
    with ``s``."""
    lo = jnp.zeros(jnp.broadcast_shapes(row.shape, width.shape), jnp.int32)
    hi = n - width + lo

    def left(s):
        return q - svals[row + s - 1]

    def right(s):
        return svals[row + s + width] - q

    def halve(_, bounds):
        lo, hi = bounds
        mid = (lo + hi) // 2
        ok = right(mid) >= left(mid)
        return jnp.where(ok, lo, mid + 1), jnp.where(ok, mid, hi)

    lo, hi = jax.lax.fori_loop(0, max(1, int(n).bit_length()), halve, (lo, hi))
    g1 = jnp.minimum(left(lo), right(lo))
    g0 = jnp.where(lo > 0, jnp.minimum(left(lo - 1), right(lo - 1)), -jnp.inf)
    start = jnp.where(g0 > g1, lo - 1, lo)
    return start, jnp.maximum(jnp.maximum(g0, g1), 0.0)


def _plan(svals, dims, query, width: int, n: int, pad: int, metric: str, root: bool):
    """Per sample: ranks in the first dimension's window ``[s0, s0 + w0)``, the second's
    ``[s1, s1 + width - w0)``, and the bound proven for points outside both."""
    stride = n + 2 * pad
    splits = sorted({min(n, max(width - n, round(m * width / 4))) for m in range(5)})
    w0 = jnp.asarray(splits, jnp.int32)[None, :]
    w1 = width - w0
    row0 = (dims[:, 0] * stride + pad)[:, None]
    row1 = (dims[:, 1] * stride + pad)[:, None]
    s0, g0 = _best_window(svals, row0, query[:, :1], w0, n)
    s1, g1 = _best_window(svals, row1, query[:, 1:], w1, n)
    bound = _combine(g0, g1, metric, root)
    best = jnp.argmax(bound, axis=1)[:, None]
    pick = lambda a: jnp.take_along_axis(jnp.broadcast_to(a, bound.shape), best, 1)[:, 0]  # noqa: E731
    return pick(s0), pick(s1), pick(w0), pick(bound)


def _window_candidates(tables, xt, dims, s0, s1, w0, width: int, pad: int):
    """Candidate points ``int32 [c, width]`` of the windows and their two coordinates: slots
    ``k < w0`` hold ranks ``s0 + k`` of the first dimension, the others ranks ``s1 - w0 + k`` of
    the second (both contiguous slices of the padded tables)."""
    n = xt.shape[1]
    stride = n + 2 * pad
    k = jnp.arange(width, dtype=jnp.int32)[None, :]
    first = k < w0[:, None]
    start0 = dims[:, 0] * stride + pad + s0
    start1 = dims[:, 1] * stride + pad + s1 - w0
    cut = jax.vmap(lambda flat, s: jax.lax.dynamic_slice(flat, (s,), (width,)), (None, 0))
    idx = jnp.where(first, cut(tables.order, start0), cut(tables.order, start1))
    own = jnp.where(first, cut(tables.svals, start0), cut(tables.svals, start1))
    other_dim = jnp.where(first, dims[:, 1:], dims[:, :1])
    other = xt.reshape(-1)[other_dim * n + idx]
    x0 = jnp.where(first, own, other)
    x1 = jnp.where(first, other, own)
    return idx, x0, x1, first


def _pair_distance(x0, x1, point, metric: str):
    """Same float operations as ``_subspace_distance`` (first dimension's term first)."""
    d0 = x0 - point[:, 0, None]
    d1 = x1 - point[:, 1, None]
    if metric == "l1":
        return jnp.abs(d0) + jnp.abs(d1)
    return d0 * d0 + d1 * d1


def _count(mask):
    """Row counts of a boolean ``[R, M]`` as int32 (a mat-vec: XLA's CPU integer sums are slow;
    exact while ``M < 2**24``)."""
    if mask.shape[1] >= 2**24:
        return jnp.sum(mask, axis=1, dtype=jnp.int32)
    ones = jnp.ones((mask.shape[1],), jnp.float32)
    return jnp.dot(mask.astype(jnp.float32), ones).astype(jnp.int32)


def _select(dist, idx, r: int, n: int):
    """Exact ``r`` smallest of each row of ``dist`` (``inf``: not a candidate), ties to the lowest
    ``idx``, without sorting: the ``r``-th value by counting passes (pivots interpolated on the
    square root of the count, as counts in two dimensions grow with the area; every other pass a
    bisection of the float bits once past the first six, so the number of passes is bounded),
    then the lowest indices among the tied values by bisection.

    Returns ``(selected bool [R, M], r-th value [R])``; the value is ``inf`` for a row with fewer
    than ``r`` candidates (then nothing is selected).
    """
    inf = jnp.float32(jnp.inf)
    valid = dist < inf
    count = _count(valid)
    enough = count >= r
    dmin = jnp.min(dist, axis=1)
    hi = jnp.max(jnp.where(valid, dist, -inf), axis=1)
    # Invariants: #(dist <= hi) = c_hi >= r, hi a value of the row; #(dist < b_lo) = c_lo < r,
    # b_lo a value of the row. Done when b_lo == hi: hi is the r-th value.
    state = (jnp.zeros_like(count), dmin, hi, count, ~enough | (dmin >= hi), jnp.int32(0))
    target = jnp.sqrt(jnp.float32(r) - 0.5)

    def cond(s):
        return ~jnp.all(s[4])

    def body(s):
        c_lo, b_lo, hi, c_hi, done, it = s
        rlo = jnp.sqrt(c_lo.astype(jnp.float32))
        f = (target - rlo) / (jnp.sqrt(c_hi.astype(jnp.float32)) - rlo)
        t_interp = b_lo + (hi - b_lo) * f
        bl = jax.lax.bitcast_convert_type(jnp.where(done, 0.0, b_lo), jnp.int32)
        bh = jax.lax.bitcast_convert_type(jnp.where(done, 0.0, hi), jnp.int32)
        t_bits = jax.lax.bitcast_convert_type(bl + (bh - bl) // 2, jnp.float32)
        t = jnp.where((it < 6) | (it % 2 == 0), t_interp, t_bits)
        t = jnp.clip(t, b_lo, jnp.nextafter(hi, -inf))
        le = dist <= t[:, None]
        c = _count(le)
        below = jnp.max(jnp.where(le, dist, -inf), axis=1)
        above = jnp.min(jnp.where(le, inf, dist), axis=1)
        up = (c >= r) & ~done
        down = (c < r) & ~done
        hi = jnp.where(up, below, hi)
        c_hi = jnp.where(up, c, c_hi)
        b_lo = jnp.where(down, above, b_lo)
        c_lo = jnp.where(down, c, c_lo)
        return c_lo, b_lo, hi, c_hi, done | (b_lo >= hi), it + 1

    _, _, value, c_le, _, _ = jax.lax.while_loop(cond, body, state)
    value = jnp.where(enough, value, inf)
    less = dist < value[:, None]
    need = r - _count(less)
    excess = enough & (c_le > r)
    tied = dist == value[:, None]

    def cut_ties(_):
        # Smallest index bound I with #(tied & idx <= I) >= need.
        lo = jnp.zeros_like(need)
        hi = jnp.full_like(need, n - 1)
        for _ in range(max(1, int(n - 1).bit_length())):
            mid = (lo + hi) // 2
            ok = _count(tied & (idx <= mid[:, None])) >= need
            hi = jnp.where(ok, mid, hi)
            lo = jnp.where(ok, lo, mid + 1)
        return jnp.where(excess, lo, n)

    limit = jax.lax.cond(jnp.any(excess), cut_ties, lambda _: jnp.full_like(need, n), None)
    selected = valid & (less | (tied & (idx <= limit[:, None])))
    return selected, value


def _power(q, exponent: float):
    """``q ** exponent``; integer exponents by multiplication (a float ``pow`` is an exp / log)."""
    e = int(exponent)
    if e != exponent or not 1 <= e <= 16:
        return q**exponent
    out, base = None, q
    while e:
        if e & 1:
            out = base if out is None else out * base
        e >>= 1
        if e:
            base = base * base
    return out


def _penalty(dist, selected, exponent: float):
    """Each selected neighbour's share of the redundancy penalty (rows sum to 1)."""
    d0 = jnp.min(dist, axis=1, keepdims=True)
    # (d0 + eps) / (d + eps) <= 1: the same normalised weights without overflow for duplicates.
    w = jnp.where(selected, _power((d0 + EPS) / (dist + EPS), exponent), 0.0)
    return w / jnp.sum(w, axis=1, keepdims=True)


def _first_true(mask, size: int):
    """Indices of the first ``size`` true entries of ``mask`` and which of them exist."""
    ids = jnp.nonzero(mask, size=size, fill_value=0)[0].astype(jnp.int32)
    return ids, jnp.arange(size) < jnp.sum(mask)


def _window_nearest(xt, tables, dims, anchors, width: int, pad: int, metric: str):
    """Nearest point to each anchor among the windows' candidates, and whether the window proves
    it is the nearest of all ``n`` points (lowest index on ties)."""
    n = xt.shape[1]
    s0, s1, w0, bound = _plan(tables.svals, dims, anchors, width, n, pad, metric, False)
    idx, x0, x1, _ = _window_candidates(tables, xt, dims, s0, s1, w0, width, pad)
    # Materialise the gathered candidates once (XLA would otherwise redo the gathers in every
    # fusion that reads them).
    idx, x0, x1 = jax.lax.optimization_barrier((idx, x0, x1))
    dist = _pair_distance(x0, x1, anchors, metric)
    best = jnp.min(dist, axis=1)
    nearest = jnp.min(jnp.where(dist == best[:, None], idx, n), axis=1)
    return nearest, best < bound


def _window_neighbours(xt, tables, dims, nearest, r: int, width: int, pad: int, metric: str):
    """Each chosen point's ``r`` nearest neighbours among the windows' candidates (itself
    excluded, lowest index on ties): candidate indices ``[c, width]``, their distances (``inf``
    for a point already in the first window, or the point itself), which are selected, and
    whether the window proves that these are the ``r`` nearest of all ``n`` points."""
    n = xt.shape[1]
    centre = xt[dims, nearest[:, None]]
    s0, s1, w0, bound = _plan(tables.svals, dims, centre, width, n, pad, metric, True)
    idx, x0, x1, first = _window_candidates(tables, xt, dims, s0, s1, w0, width, pad)
    idx, x0, x1 = jax.lax.optimization_barrier((idx, x0, x1))
    dist = _pair_distance(x0, x1, centre, metric)
    if metric == "l2":
        dist = jnp.sqrt(dist)
    # A slot of the second window whose point is also in the first one: (value, index) between
    # the first window's ends, in the tables' (stable) order.
    stride = n + 2 * pad
    end0 = dims[:, 0] * stride + pad + s0
    end1 = end0 + w0 - 1
    v_lo, i_lo = tables.svals[end0][:, None], tables.order[end0][:, None]
    v_hi, i_hi = tables.svals[end1][:, None], tables.order[end1][:, None]
    inside = ((x0 > v_lo) | ((x0 == v_lo) & (idx >= i_lo))) & (
        (x0 < v_hi) | ((x0 == v_hi) & (idx <= i_hi))
    )
    twice = ~first & (w0[:, None] > 0) & inside
    dist = jnp.where(twice | (idx == nearest[:, None]), jnp.inf, dist)
    dist = jax.lax.optimization_barrier(dist)
    selected, value = _select(dist, idx, r, n)
    return idx, dist, selected, value < bound


def _brute_neighbours(xt, dims, nearest, r: int, metric: str):
    """Distances ``[c, n]`` from each chosen point (``inf`` for itself) and its ``r`` nearest
    neighbours (lowest index on ties), over all points."""
    n = xt.shape[1]
    centre = xt[dims, nearest[:, None]]
    d = subspace_distance(xt, dims, centre, metric)
    if metric == "l2":
        d = jnp.sqrt(d)
    everyone = jnp.arange(n, dtype=jnp.int32)[None, :]
    d = jnp.where(everyone == nearest[:, None], jnp.inf, d)
    selected, _ = _select(d, everyone, r, n)
    return d, selected


def chunk_update(
    scores,
    xt,
    tables,
    dims,
    anchors,
    live,
    *,
    num_redundancy,
    metric,
    exponent,
    width_anchor,
    width_redundancy,
    pad,
    fallback,
):
    """Scores after one chunk of drawn samples (``dims``, ``anchors`` of shape ``[chunk, 2]``,
    ``live``: bool ``[chunk]``, the samples that count) by window search, ``_GROUP`` samples at
    a time (the ``[group, width]`` temporaries stay in cache); the samples a window cannot
    prove are redone by brute force, ``fallback`` at a time. Also returns how many were redone
    (anchor, redundancy). Call it inside ``jax.jit`` with the keywords static."""
    chunk = dims.shape[0]
    group = min(chunk, _GROUP)
    groups = -(-chunk // group)
    extra = groups * group - chunk
    if extra:
        dims = jnp.pad(dims, ((0, extra), (0, 0)), mode="edge")
        anchors = jnp.pad(anchors, ((0, extra), (0, 0)), mode="edge")
        live = jnp.pad(live, (0, extra))
    dims = dims.reshape(groups, group, 2)
    anchors = anchors.reshape(groups, group, 2)
    live = live.reshape(groups, group)
    opts = dict(
        num_redundancy=num_redundancy,
        metric=metric,
        exponent=exponent,
        width_anchor=width_anchor,
        width_redundancy=width_redundancy,
        pad=pad,
        fallback=fallback,
    )

    def one(g, carry):
        scores, miss_a, miss_r = carry
        scores, a, r = _group_update(scores, xt, tables, dims[g], anchors[g], live[g], **opts)
        return scores, miss_a + a, miss_r + r

    zero = jnp.zeros((), jnp.int32)
    return jax.lax.fori_loop(0, groups, one, (scores, zero, zero))


_GROUP = 32


def _group_update(
    scores,
    xt,
    tables,
    dims,
    anchors,
    live,
    *,
    num_redundancy,
    metric,
    exponent,
    width_anchor,
    width_redundancy,
    pad,
    fallback,
):
    n = xt.shape[1]
    size = dims.shape[0]
    nearest, proven = _window_nearest(xt, tables, dims, anchors, width_anchor, pad, metric)
    miss_anchor = live & ~proven

    def brute_nearest(carry):
        nearest, todo = carry
        ids, real = _first_true(todo, fallback)
        d = subspace_distance(xt, dims[ids], anchors[ids], metric)
        found = jnp.argmin(d, axis=1).astype(jnp.int32)  # lowest index on ties
        drop = jnp.where(real, ids, size)
        nearest = nearest.at[drop].set(found, mode="drop")
        return nearest, todo.at[drop].set(False, mode="drop")

    nearest, _ = jax.lax.while_loop(lambda c: jnp.any(c[1]), brute_nearest, (nearest, miss_anchor))
    scores = scores.at[nearest].add(live.astype(jnp.float32))
    r = min(num_redundancy, n - 1)
    if r <= 0:
        return scores, jnp.sum(miss_anchor, dtype=jnp.int32), jnp.int32(0)

    idx, dist, selected, proven = _window_neighbours(
        xt, tables, dims, nearest, r, width_redundancy, pad, metric
    )
    hit = live & proven
    share = _penalty(dist, selected, exponent) * hit[:, None]
    scores = scores.at[idx.reshape(-1)].add(-share.reshape(-1))
    miss = live & ~proven

    def brute(carry):
        scores, todo = carry
        ids, real = _first_true(todo, fallback)
        d, sel = _brute_neighbours(xt, dims[ids], nearest[ids], r, metric)
        scores = scores - jnp.sum(_penalty(d, sel, exponent) * real[:, None], axis=0)
        return scores, todo.at[jnp.where(real, ids, size)].set(False, mode="drop")

    scores, _ = jax.lax.while_loop(lambda c: jnp.any(c[1]), brute, (scores, miss))
    return scores, jnp.sum(miss_anchor, dtype=jnp.int32), jnp.sum(miss, dtype=jnp.int32)
