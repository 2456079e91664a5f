"""ZCore's brute-force chunk update and per-dimension statistics, written once for one device and
for a row-sharded mesh (``axis``: the mesh axis name, or None for one device; see
``collective.py``).

A body sees its rows ``xt`` (transposed, ``[d, m]``) with their global ``ids``; the draws
(``dims``, ``anchors``) are the same on every device. Per chunk of subspace samples:

* the nearest point to each anchor is a global first argmin (``collective.first_argmin``: ties to
  the lowest global index);
* the centre's ``num_dims`` coordinates are fetched from their owner (one ``psum``, exact);
* the ``r`` neighbours are each device's local top-``r`` (``(distance, index)`` order), gathered
  in device order and cut by one ``top_k``: among equal distances position order is global index
  order, so ``top_k``'s lowest-position rule gives the lowest global index, as one ``top_k`` over
  all rows does on one device;
* each device adds the +1 and the penalties that fall on its own rows.

Every collective runs on every device, the same number of times: the loop bounds and the
branches are static (``n``, ``r``, the chunk size) or the same replicated value everywhere, so no
device can skip a collective that another one waits in.

Exactness: the distances are elementwise (no sum across rows), so the nearest points and the
neighbours are the single-device ones bit for bit; the scores agree up to float32 rounding (a
device adds only its own rows' changes). Without an axis the body is the single-device kernel
as it always was (no masks, one ``top_k``). Pure functions, no I/O.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from . import collective
from ._zcore_window import EPS, subspace_distance

__all__ = ["chunk_body", "chunk_picks", "lower_median", "stats_body"]


def _padded(m: int, n: int, axis: str | None) -> bool:
    """Whether this body's rows end with padding rows (static)."""
    return m * collective.axis_size(axis) != n


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


def lower_median(xf: jax.Array, valid: jax.Array, n: int, axis: str | None) -> jax.Array:
    """Per column of ``xf`` (float32 ``[m, d]``), the lower median (0-based rank ``(n - 1) // 2``,
    as ``torch.median`` takes it) over the ``valid`` rows of every device.

    One device: a sort of the columns. A mesh: bisection over the 32 bits of the values'
    order-preserving integer keys, 32 ``psum``s of ``d`` counts, exact, no column gathered."""
    rank = (n - 1) // 2
    if axis is None:
        return jnp.sort(xf, axis=0)[rank]
    keys = _float_keys(xf)

    def halve(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        below = (keys <= mid[None, :]) & valid[:, None]
        count = collective.psum(jnp.sum(below, axis=0, dtype=jnp.int32), axis)
        enough = count >= rank + 1
        return jnp.where(enough, lo, mid + 1), jnp.where(enough, mid, hi)

    d = xf.shape[1]
    init = (jnp.zeros((d,), jnp.uint32), jnp.full((d,), 0xFFFFFFFF, jnp.uint32))
    lo, _ = jax.lax.fori_loop(0, 32, halve, init)
    return _float_from_keys(lo)


def stats_body(x: jax.Array, *, n: int, axis: str | None):
    """``(lo, med, hi)``: per-dimension minimum, lower median and maximum (float32 ``[d]``) of
    the ``n`` real rows of every device."""
    xf = x.astype(jnp.float32)
    valid = collective.row_ids(x.shape[0], axis) < n
    if _padded(x.shape[0], n, axis):
        lo_in = jnp.where(valid[:, None], xf, jnp.inf)
        hi_in = jnp.where(valid[:, None], xf, -jnp.inf)
    else:
        lo_in = hi_in = xf
    lo = collective.pmin(jnp.min(lo_in, axis=0), axis)
    hi = collective.pmax(jnp.max(hi_in, axis=0), axis)
    return lo, lower_median(xf, valid, n, axis), hi


def _nearest(to_anchor: jax.Array, ids: jax.Array, axis: str | None) -> jax.Array:
    """Global first argmin of each row of ``[c, m]`` (int32 ``[c]``)."""
    if axis is None:
        return jnp.argmin(to_anchor, axis=1).astype(jnp.int32)  # lowest index on ties
    return jax.vmap(lambda v: collective.first_argmin(v, ids, axis))(to_anchor)


def _top_r(dist: jax.Array, ids: jax.Array, r: int, axis: str | None):
    """The ``r`` smallest of each row of ``dist`` over every device's rows, ties to the lowest
    global index: ``(distances [c, r], global indices [c, r])``."""
    if axis is None:
        neg, idx = jax.lax.top_k(-dist, r)  # nearest first; ties to the lowest index
        return -neg, idx
    m = dist.shape[1]
    if m <= r:
        # Every row of a device is a candidate: gathered as they are, in global index order.
        cand_d = collective.all_gather(dist.T, axis).T  # [c, P m]
        neg, pos = jax.lax.top_k(-cand_d, r)
        return -neg, pos.astype(jnp.int32)
    big = jnp.iinfo(jnp.int32).max
    neg, local = jax.lax.top_k(-dist, r)  # lowest local index on ties
    cand_i = jnp.where(jnp.isfinite(neg), ids[local], big)
    # Gathered along the candidates (device order): [c, P r].
    cand_d = collective.all_gather(-neg.T, axis).T
    cand_i = collective.all_gather(cand_i.T, axis).T
    neg, pos = jax.lax.top_k(-cand_d, r)
    return -neg, jnp.take_along_axis(cand_i, pos, axis=1)


def _centre(xt: jax.Array, ids: jax.Array, dims: jax.Array, nearest: jax.Array, axis):
    """Coordinates ``[c, num_dims]`` of each sample's nearest point in its own dimensions."""
    if axis is None:
        return jnp.stack([xt[dims[:, j], nearest] for j in range(dims.shape[1])], axis=1)
    m = xt.shape[1]
    owned = (nearest >= ids[0]) & (nearest < ids[0] + m)
    local = jnp.where(owned, nearest - ids[0], 0)
    coords = jnp.stack([xt[dims[:, j], local] for j in range(dims.shape[1])], axis=1)
    return collective.psum(jnp.where(owned[:, None], coords, jnp.zeros_like(coords)), axis)


def chunk_picks(xt, ids, dims, anchors, *, n: int, r: int, metric: str, axis: str | None):
    """Each sample's nearest point (global index, int32 ``[c]``) and, when ``r > 0``, its ``r``
    nearest neighbours in the subspace (itself excluded): ``(nearest, distances [c, r], indices
    [c, r])``; ``(nearest, None, None)`` when ``r <= 0``."""
    padded = _padded(xt.shape[1], n, axis)
    valid = ids < n
    to_anchor = subspace_distance(xt, dims, anchors, metric)
    if padded:
        to_anchor = jnp.where(valid[None, :], to_anchor, jnp.inf)
    nearest = _nearest(to_anchor, ids, axis)
    if r <= 0:
        return nearest, None, None
    centre = _centre(xt, ids, dims, nearest, axis)
    dist = subspace_distance(xt, dims, centre, metric)
    if metric == "l2":
        dist = jnp.sqrt(dist)
    outside = ids[None, :] == nearest[:, None]  # not itself
    if padded:
        outside = outside | ~valid[None, :]
    dist = jnp.where(outside, jnp.inf, dist)
    near, idx = _top_r(dist, ids, r, axis)
    return nearest, near, idx


def _add_rows(scores, ids, index, values, axis: str | None):
    """``scores.at[index].add(values)`` for the global ``index`` this device owns, in order."""
    if axis is None:
        return scores.at[index].add(values)
    m = scores.shape[0]
    owned = (index >= ids[0]) & (index < ids[0] + m)
    return scores.at[jnp.where(owned, index - ids[0], m)].add(values, mode="drop")


def chunk_body(
    scores, xt, ids, dims, anchors, live, *, n: int, r: int, metric: str, exponent: float, axis
):
    """Scores (this device's rows) after one chunk of samples, by brute force over all rows:
    +1 to each nearest point, and penalties summing to 1 on its ``r`` neighbours, neighbour
    ``j`` weighted by ``(dist_j + eps) ** -exponent``. ``live``: float32 ``[c]``, 1 for the
    samples that count (a last, partial chunk is masked, not compiled again)."""
    nearest, near, idx = chunk_picks(xt, ids, dims, anchors, n=n, r=r, metric=metric, axis=axis)
    scores = _add_rows(scores, ids, nearest, live, axis)
    if r <= 0:
        return scores
    # (d0 + eps) / (d + eps) <= 1: the same normalised weights without overflow for duplicates.
    w = ((near[:, :1] + EPS) / (near + EPS)) ** exponent
    w = w / jnp.sum(w, axis=1, keepdims=True) * live[:, None]
    return _add_rows(scores, ids, idx.reshape(-1), -w.reshape(-1), axis)
