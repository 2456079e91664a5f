"""ZCore coverage / redundancy scores (Griffin et al., "Zero-Shot Coreset Selection via Iterative
Subspace Sampling", WACV 2026), vectorised over many subspace samples at once.

One *subspace sample* ``s``: choose ``num_dims`` distinct dimensions at random, draw an anchor from
the per-dimension triangular distribution ``(min, median, max)`` on them, give ``+1`` to the point
nearest the anchor in that subspace, and take a redundancy penalty (summing to 1) off that point's
``num_redundancy`` nearest neighbours in the same subspace, neighbour ``j`` weighted by
``(dist_j + eps) ** -exponent``. The highest scores are the selection.

Variants:

* ``"paper"``: L1 distance, exponent 4, initial scores ``U(0, 1)`` (the authors' code).
* ``"goldener"``: Euclidean distance, penalty ``1 / ((dist + eps) * scale)`` (the scale cancels in
  the normalisation, so exponent 1), initial scores 0 (goldener 7.0.0's ``GoldZCoreSelectionTool``).

Fixed with respect to goldener: the chosen point itself is excluded from its neighbours by index
(goldener drops the first of a full argsort, which may be an exact duplicate instead); a constant
dimension gives anchors at its value (numpy's triangular raises); all randomness comes from an
explicit key, sample ``s`` drawing from ``fold_in(split(key)[0], s)``, so the draws do not
depend on how samples are chunked; the nearest point and the neighbours come from ``top_k``
over a chunk of samples, never from a full argsort.

Memory: ``O(chunk x n)`` temporaries (one row of subspace distances per sample of a chunk).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import as_float_matrix, check_k

__all__ = [
    "IMPLS",
    "ZCORE_VARIANTS",
    "ZCoreState",
    "zcore_draws",
    "zcore_init",
    "zcore_run",
    "zcore_scores",
    "zcore_select",
    "zcore_step",
    "native_status",
]

ZCORE_VARIANTS = {
    "paper": {"metric": "l1", "exponent": 4.0, "random_init": True},
    "goldener": {"metric": "l2", "exponent": 1.0, "random_init": False},
}
_EPS = 1e-8


class ZCoreState(NamedTuple):
    """State of a ZCore scoring run.

    Attributes:
      scores: float32 ``[n]`` running scores.
      done: int32 scalar, subspace samples processed so far.
      key: uint32 raw key data (``jax.random.key_data``) the samples draw from.
      lo, med, hi: float32 ``[d]`` per-dimension min / median / max (the anchors' distribution).
    """

    scores: jax.Array
    done: jax.Array
    key: jax.Array
    lo: jax.Array
    med: jax.Array
    hi: jax.Array


def _check_variant(variant: str) -> dict:
    if variant not in ZCORE_VARIANTS:
        raise ValueError(f"variant must be one of {tuple(ZCORE_VARIANTS)}, got {variant!r}")
    return ZCORE_VARIANTS[variant]


def _key_data(key) -> jax.Array:
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    if isinstance(key, (jax.Array, np.ndarray)) and key.dtype == np.uint32:
        return jnp.asarray(key)
    raise TypeError(f"key must be a jax.random.key(...), got {type(key).__name__}")


def _triangular(u, lo, mode, hi):
    """Inverse CDF of triangular(lo, mode, hi); a constant dimension (lo == hi) gives lo."""
    width = hi - lo
    safe = jnp.where(width > 0, width, 1.0)
    split = (mode - lo) / safe
    left = lo + jnp.sqrt(u * width * (mode - lo))
    right = hi - jnp.sqrt((1.0 - u) * width * (hi - mode))
    return jnp.where(width > 0, jnp.where(u < split, left, right), lo)


def _distinct_dims(key, d: int, k: int):
    """``k`` distinct dimensions of ``d``, uniformly at random and in draw order (the first
    uniform over all ``d``, the next over the rest, ...): one ``randint`` each, O(k^2), instead of
    ranking ``d`` random numbers. Draw ``t`` picks a slot among the ``d - t`` dimensions still
    free and moves past the taken ones in increasing order."""
    keys = jax.random.split(key, k)
    taken = []
    for t in range(k):  # k (num_dims) is small and static
        v = jax.random.randint(keys[t], (), 0, d - t, dtype=jnp.int32)
        if taken:
            for c in jnp.sort(jnp.stack(taken)):
                v = v + (v >= c).astype(jnp.int32)
        taken.append(v)
    return jnp.stack(taken)


def _draw(key_data, start, count: int, lo, med, hi, num_dims: int):
    """Dimensions ``int32 [count, num_dims]`` and anchors ``[count, num_dims]`` of samples
    ``start .. start + count - 1``."""
    key = jax.random.wrap_key_data(key_data)
    d = lo.shape[0]

    def one(s):
        k = jax.random.fold_in(key, s)
        k_dims, k_anchor = jax.random.split(k)
        dims = _distinct_dims(k_dims, d, num_dims)
        u = jax.random.uniform(k_anchor, (num_dims,))
        return dims.astype(jnp.int32), _triangular(u, lo[dims], med[dims], hi[dims])

    return jax.vmap(one)(start + jnp.arange(count, dtype=jnp.int32))


def zcore_draws(state: ZCoreState, start: int, count: int, num_dims: int = 2):
    """The dimensions and anchors samples ``start .. start + count - 1`` of ``state`` use (for
    references and inspection)."""
    return _draw(state.key, jnp.int32(start), count, state.lo, state.med, state.hi, num_dims)


def _subspace_distance(xt, dims, point, metric: str):
    """``[chunk, n]`` distances from every point to ``point[c]`` in subspace ``dims[c]``."""
    total = None
    for j in range(dims.shape[1]):  # num_dims is small and static
        diff = xt[dims[:, j]] - point[:, j, None]
        term = jnp.abs(diff) if metric == "l1" else diff * diff
        total = term if total is None else total + term
    return total


@partial(jax.jit, static_argnames=("chunk", "num_dims", "num_redundancy", "metric", "exponent"))
def _chunk_update(
    scores,
    xt,
    key_data,
    start,
    count,
    lo,
    med,
    hi,
    *,
    chunk,
    num_dims,
    num_redundancy,
    metric,
    exponent,
):
    # Samples start .. start + count - 1 (count <= chunk is traced: a last, partial chunk is
    # masked rather than compiled again).
    n = xt.shape[1]
    dims, anchors = _draw(key_data, start, chunk, lo, med, hi, num_dims)
    live = (jnp.arange(chunk) < count).astype(jnp.float32)
    to_anchor = _subspace_distance(xt, dims, anchors, metric)
    nearest = jnp.argmin(to_anchor, axis=1).astype(jnp.int32)  # lowest index on ties
    scores = scores.at[nearest].add(live)
    r = min(num_redundancy, n - 1)
    if r <= 0:
        return scores
    centre = jnp.stack([xt[dims[:, j], nearest] for j in range(num_dims)], axis=1)
    dist = _subspace_distance(xt, dims, centre, metric)
    if metric == "l2":
        dist = jnp.sqrt(dist)
    dist = jnp.where(jnp.arange(n)[None, :] == nearest[:, None], jnp.inf, dist)  # not itself
    neg, idx = jax.lax.top_k(-dist, r)  # nearest first; ties to the lowest index
    near = -neg
    # (d0 + eps) / (d + eps) <= 1: the same normalised weights without overflow for duplicates.
    w = ((near[:, :1] + _EPS) / (near + _EPS)) ** exponent
    w = w / jnp.sum(w, axis=1, keepdims=True) * live[:, None]
    return scores.at[idx.reshape(-1)].add(-w.reshape(-1))


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


class _Tables(NamedTuple):
    order: jax.Array  # int32 [d * (n + 2 pad)]: per dimension, point indices by value (stable)
    svals: jax.Array  # float32 [d * (n + 2 pad)]: the sorted values, -inf / +inf in the padding


@partial(jax.jit, static_argnames=("pad",))
def _tables(xt, pad: int) -> _Tables:
    d = xt.shape[0]
    # Stable: equal values (-0.0 == 0.0 included) in index order, the order IEEE comparisons and the
    # lexicographic (value, index) test in _window_candidates agree with.
    order = jnp.argsort(xt, axis=1, stable=True).astype(jnp.int32)
    svals = jnp.take_along_axis(xt, order, axis=1)
    order = jnp.pad(order, ((0, 0), (pad, pad)))
    svals = jnp.concatenate(
        [jnp.full((d, pad), -jnp.inf, xt.dtype), svals, jnp.full((d, pad), jnp.inf, xt.dtype)], 1
    )
    return _Tables(order.reshape(-1), svals.reshape(-1))


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
    w = jnp.where(selected, _power((d0 + _EPS) / (dist + _EPS), exponent), 0.0)
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
    d = _subspace_distance(xt, dims, centre, metric)
    if metric == "l2":
        d = jnp.sqrt(d)
    everyone = jnp.arange(n, dtype=jnp.int32)[None, :]
    d = jnp.where(everyone == nearest[:, None], jnp.inf, d)
    selected, _ = _select(d, everyone, r, n)
    return d, selected


@partial(
    jax.jit,
    static_argnames=(
        "chunk",
        "num_redundancy",
        "metric",
        "exponent",
        "width_anchor",
        "width_redundancy",
        "pad",
        "fallback",
    ),
)
def _chunk_update_windows(
    scores,
    xt,
    tables,
    key_data,
    start,
    count,
    lo,
    med,
    hi,
    *,
    chunk,
    num_redundancy,
    metric,
    exponent,
    width_anchor,
    width_redundancy,
    pad,
    fallback,
):
    """``_chunk_update`` (num_dims == 2) by window search, ``_GROUP`` samples at a time (the
    ``[group, width]`` temporaries stay in cache); the samples a window cannot prove are redone
    by brute force, ``fallback`` at a time. Also returns how many were redone."""
    dims, anchors = _draw(key_data, start, chunk, lo, med, hi, 2)
    live = jnp.arange(chunk) < count
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
        d = _subspace_distance(xt, dims[ids], anchors[ids], metric)
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


def _stats(x):
    xf = x.astype(jnp.float32)
    lo = jnp.min(xf, axis=0)
    hi = jnp.max(xf, axis=0)
    # Lower median, as torch.median (goldener) returns.
    med = jnp.sort(xf, axis=0)[(x.shape[0] - 1) // 2]
    return lo, med, hi


def _stats_host(x: np.ndarray):
    """``_stats`` on the host: the same values (min, max and the lower median is an order
    statistic), from a partition instead of XLA's CPU sort (0.2 s instead of 7 s at 50k x 256)."""
    k = (x.shape[0] - 1) // 2
    med = np.partition(x.T, k, axis=1)[:, k]
    return jnp.asarray(x.min(0)), jnp.asarray(med), jnp.asarray(x.max(0))


def zcore_init(x, key, *, variant: str = "paper", mesh=None) -> ZCoreState:
    """Initial state: per-dimension statistics and the variant's initial scores.

    Args:
      x: Array of shape ``[n, d]``, floating.
      key: a ``jax.random.key``; the same key gives the same scores.
      variant: ``"paper"`` (random ``U(0, 1)`` initial scores) or ``"goldener"`` (zeros).
      mesh: optional 1-D ``jax.sharding.Mesh``: the statistics are reduced over rows sharded
        on its devices (the same values, ``kernels.sharding``).

    Returns:
      A ``ZCoreState``.
    """
    spec = _check_variant(variant)
    x = as_float_matrix(x, "x")
    sample_key, init_key = jax.random.split(jax.random.wrap_key_data(_key_data(key)))
    key_data = jax.random.key_data(sample_key)
    if mesh is not None:
        from .sharding import sharded_zcore_stats

        lo, med, hi = sharded_zcore_stats(x, mesh=mesh)
    elif all(dev.platform == "cpu" for dev in x.devices()):
        lo, med, hi = _stats_host(np.asarray(x, np.float32))
    else:
        lo, med, hi = jax.jit(_stats)(x)
    n = x.shape[0]
    if spec["random_init"]:
        scores = jax.random.uniform(init_key, (n,), jnp.float32)
    else:
        scores = jnp.zeros((n,), jnp.float32)
    return ZCoreState(scores, jnp.zeros((), jnp.int32), key_data, lo, med, hi)


def _options(x, variant, num_dims, num_redundancy, metric, exponent):
    spec = _check_variant(variant)
    metric = spec["metric"] if metric is None else metric
    if metric not in ("l1", "l2"):
        raise ValueError(f"metric must be 'l1' or 'l2', got {metric!r}")
    exponent = float(spec["exponent"] if exponent is None else exponent)
    if not exponent > 0:
        raise ValueError(f"exponent must be > 0, got {exponent}")
    if isinstance(num_dims, bool) or not isinstance(num_dims, int) or num_dims < 1:
        raise ValueError(f"num_dims must be an int >= 1, got {num_dims!r}")
    if num_dims > x.shape[1]:
        raise ValueError(f"num_dims={num_dims} is larger than the dimension of x ({x.shape[1]})")
    if isinstance(num_redundancy, bool) or not isinstance(num_redundancy, int):
        raise TypeError(f"num_redundancy must be an int >= 0, got {num_redundancy!r}")
    if num_redundancy < 0:
        raise ValueError(f"num_redundancy must be >= 0, got {num_redundancy}")
    return metric, exponent


def zcore_step(
    state: ZCoreState,
    x,
    *,
    chunk: int = 256,
    variant: str = "paper",
    num_dims: int = 2,
    num_redundancy: int = 1000,
    metric: str | None = None,
    exponent: float | None = None,
    mesh=None,
    impl: str = "auto",
) -> ZCoreState:
    """Processes the next ``chunk`` subspace samples (``x`` as ``[n, d]``)."""
    return zcore_run(
        state, x, chunk, chunk=chunk, variant=variant, num_dims=num_dims,
        num_redundancy=num_redundancy, metric=metric, exponent=exponent, mesh=mesh, impl=impl,
    )  # fmt: skip


def _default_widths(n: int, num_dims: int, num_redundancy: int):
    """Window widths (anchor, redundancy) of the window search, or None for brute force."""
    r = min(num_redundancy, n - 1)
    widths = (512, max(1024, 10 * r))
    if num_dims != 2 or 2 * max(widths) > n:
        return None  # small n: brute force is as cheap as the windows
    return widths


_draw_jit = jax.jit(_draw, static_argnames=("count", "num_dims"))
_DRAW_BLOCK = 16384  # samples per draw call of the CPU path

IMPLS = ("auto", "native", "xla")


def native_status() -> tuple[bool, str]:
    """Whether ZCore's compiled CPU path (``_zcore_cpu.cpp``) is available, and if not, why."""
    from . import _zcore_native

    return _zcore_native.status()


def _resolve_impl(impl: str, num_dims: int, x, mesh) -> str:
    """``"native"`` (the compiled CPU walk) or ``"xla"`` for ``impl`` in ``IMPLS``."""
    if not isinstance(impl, str) or impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "xla":
        return "xla"
    on_cpu = all(dev.platform == "cpu" for dev in x.devices())
    ok, reason = native_status()
    if impl == "native":
        if num_dims != 2:
            raise ValueError(f"impl='native' needs num_dims == 2, got {num_dims}")
        if mesh is not None:
            raise ValueError("impl='native' runs on this host's CPU; it does not take a mesh")
        if not ok:
            raise RuntimeError(f"impl='native' is unavailable: {reason}")
        if x.shape[0] >= 2**31:
            raise ValueError(f"impl='native' indexes points with int32; n = {x.shape[0]}")
        return "native"
    if num_dims == 2 and mesh is None and on_cpu and ok and x.shape[0] < 2**31:
        return "native"
    return "xla"


def _run_native(state, xt, num_samples, num_redundancy, metric, exponent, threads=None):
    from concurrent.futures import ThreadPoolExecutor

    from . import _zcore_native

    done = int(state.done)
    if num_samples == 0:
        return state
    n = xt.shape[1]
    with ThreadPoolExecutor(_zcore_native.default_threads()) as pool:
        tables = _zcore_native.Tables(np.asarray(xt, np.float32), pool)

    def draw(first, count):
        # Fixed-size blocks: one compilation per process whatever the run's size.
        parts = [
            _draw_jit(state.key, jnp.int32(first + at), _DRAW_BLOCK, state.lo, state.med,
                      state.hi, 2)  # fmt: skip
            for at in range(0, count, _DRAW_BLOCK)
        ]
        dims, anchors = (jnp.concatenate(p)[:count] for p in zip(*parts, strict=True))
        return dims, anchors

    scores = _zcore_native.run(
        np.asarray(state.scores, np.float32), tables, draw, done, num_samples, metric, exponent,
        min(num_redundancy, n - 1), threads=threads,
    )  # fmt: skip
    return state._replace(
        scores=jnp.asarray(scores), done=jnp.asarray(done + num_samples, jnp.int32)
    )


def _run(
    state,
    xt,
    num_samples,
    chunk,
    num_dims,
    num_redundancy,
    metric,
    exponent,
    widths="auto",
    fallback: int = 8,
    stats: dict | None = None,
    impl: str = "xla",
    threads: int | None = None,
):
    """``widths``: ``(anchor, redundancy)`` window widths, ``"auto"``, or None (brute force).
    ``stats``, when given, receives the number of samples redone by brute force. ``impl``:
    ``"xla"`` or ``"native"`` (resolved by ``_resolve_impl``; ``widths`` is then unused)."""
    if impl == "native":
        if stats is not None:
            stats.update(anchor_fallbacks=0, redundancy_fallbacks=0)
        return _run_native(state, xt, num_samples, num_redundancy, metric, exponent, threads)
    scores, done = state.scores, int(state.done)
    n = xt.shape[1]
    if isinstance(widths, str):
        widths = _default_widths(n, num_dims, num_redundancy)
    if widths is not None and (num_dims != 2 or max(widths) > n or min(widths) < 1):
        raise ValueError(f"widths {widths} need num_dims == 2 and 1 <= width <= n = {n}")
    stop = done + num_samples
    misses = [0, 0]
    if widths is not None and num_samples > 0:
        pad = max(widths)
        tables = _tables(xt.astype(jnp.float32), pad)
    while done < stop:
        size = min(chunk, stop - done)
        common = dict(chunk=chunk, num_redundancy=num_redundancy, metric=metric, exponent=exponent)
        args = (state.key, jnp.int32(done), jnp.int32(size), state.lo, state.med, state.hi)
        if widths is None:
            scores = _chunk_update(scores, xt, *args, num_dims=num_dims, **common)
        else:
            scores, miss_a, miss_r = _chunk_update_windows(
                scores,
                xt.astype(jnp.float32),
                tables,
                *args,
                width_anchor=widths[0],
                width_redundancy=widths[1],
                pad=pad,
                fallback=fallback,
                **common,
            )
            if stats is not None:
                misses[0] += int(miss_a)
                misses[1] += int(miss_r)
        done += size
    if stats is not None:
        stats.update(anchor_fallbacks=misses[0], redundancy_fallbacks=misses[1])
    return state._replace(scores=scores, done=jnp.asarray(done, jnp.int32))


def zcore_run(
    state: ZCoreState,
    x,
    num_samples: int,
    *,
    chunk: int = 256,
    variant: str = "paper",
    num_dims: int = 2,
    num_redundancy: int = 1000,
    metric: str | None = None,
    exponent: float | None = None,
    mesh=None,
    impl: str = "auto",
) -> ZCoreState:
    """Processes ``num_samples`` more subspace samples, ``chunk`` at a time.

    Sample ``s`` always draws from the same key: resuming a saved state draws exactly the
    samples an uninterrupted run would. Scores are sums of float32 updates, so a different
    ``chunk`` may change their last bits (not the draws). With ``mesh`` (a 1-D
    ``jax.sharding.Mesh``) the rows and scores are sharded over its devices: each sample's
    nearest point is a global first argmin and its neighbours the merge of every device's top
    ``num_redundancy`` (``kernels.sharding``): the same points as on one device, the scores
    equal up to float32 rounding; a state from any device count (or none) continues.

    ``impl``: ``"auto"`` (default) takes the compiled CPU walk (``native_status()``) when
    ``num_dims == 2``, there is no ``mesh`` and ``x`` lives on the CPU, and the XLA kernel
    otherwise; ``"native"`` or ``"xla"`` force one (``"native"`` raises if it cannot run). Both
    score the same draws and find the same points (exact, ties to the lowest index); the scores
    differ by float rounding only (the CPU walk sums each chunk's changes in float64), so
    continue a run with the ``impl`` it started with when the last bits matter.
    """
    x = as_float_matrix(x, "x")
    metric, exponent = _options(x, variant, num_dims, num_redundancy, metric, exponent)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be an int >= 1, got {chunk!r}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 0:
        raise ValueError(f"num_samples must be an int >= 0, got {num_samples!r}")
    if state.scores.shape[0] != x.shape[0]:
        raise ValueError(
            f"state was made for {state.scores.shape[0]} points but x has shape {tuple(x.shape)}"
        )
    impl = _resolve_impl(impl, num_dims, x, mesh)
    if mesh is not None:
        from .sharding import sharded_zcore_run

        return sharded_zcore_run(
            state, x, num_samples, mesh=mesh, chunk=chunk, num_dims=num_dims,
            num_redundancy=num_redundancy, metric=metric, exponent=exponent,
        )  # fmt: skip
    return _run(
        state, x.T, num_samples, chunk, num_dims, num_redundancy, metric, exponent, impl=impl
    )


def zcore_scores(
    x,
    key,
    *,
    num_samples: int = 1_000_000,
    variant: str = "paper",
    num_dims: int = 2,
    num_redundancy: int = 1000,
    metric: str | None = None,
    exponent: float | None = None,
    chunk: int = 256,
    mesh=None,
    impl: str = "auto",
) -> jax.Array:
    """ZCore scores of every row of ``x`` (higher = keep first).

    Args:
      x: Array of shape ``[n, d]``, floating.
      key: a ``jax.random.key``.
      num_samples: subspace samples (the paper uses 1e6).
      variant: ``"paper"`` or ``"goldener"`` (see the module docstring).
      num_dims: dimensions per subspace (default 2).
      num_redundancy: neighbours penalised per sample (default 1000).
      metric: override the variant's distance, ``"l1"`` or ``"l2"``.
      exponent: override the variant's exponent.
      chunk: samples processed at once (``[chunk, n]`` temporaries).
      mesh: optional 1-D ``jax.sharding.Mesh`` (e.g. ``kernels.make_mesh()``): rows are
        sharded over its devices (see :func:`zcore_run`).
      impl: ``"auto"``, ``"native"`` (the compiled CPU walk) or ``"xla"`` (see
        :func:`zcore_run`).

    Returns:
      float32 array of shape ``[n]``.
    """
    state = zcore_init(x, key, variant=variant, mesh=mesh)
    state = zcore_run(
        state,
        x,
        num_samples,
        chunk=chunk,
        variant=variant,
        num_dims=num_dims,
        num_redundancy=num_redundancy,
        metric=metric,
        exponent=exponent,
        mesh=mesh,
        impl=impl,
    )
    return state.scores


def zcore_select(scores, k: int) -> jax.Array:
    """Indices of the ``k`` highest scores, highest first, lowest index on ties (int32 ``[k]``)."""
    scores = jnp.asarray(scores)
    k = check_k(k, scores.shape[0])
    return jax.lax.top_k(scores, k)[1].astype(jnp.int32)
