"""Collectives that vanish on one device: what lets every kernel body be written once.

A kernel body sees the rows it holds and an ``axis: str | None``:

* under ``jax.shard_map`` over a 1-D mesh (``sharding.on_mesh``) ``axis`` is the mesh axis name
  and each device holds one contiguous block of ``m`` rows, rows ``[p m, (p + 1) m)`` on device
  ``p``; the last device's block may end with padding rows (global index ``>= n``);
* with ``axis=None`` the body holds all ``n`` rows and every helper here is the plain array
  operation (``psum`` is the identity, the global first argmax is ``first_argmax``, a row fetch is
  an index), so the single-device program is exactly what a hand-written one would be.

Every helper keeps the library's tie rule: among equal values the lowest *global* index wins, on
one device and on many. The helpers are pure and jit-able; none does I/O.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .distance import first_argmax as _local_first_argmax
from .distance import first_argmin as _local_first_argmin
from .distance import fold_row_blocks

__all__ = [
    "all_gather",
    "axis_index",
    "axis_size",
    "fetch_row",
    "fetch_rows",
    "first_argmax",
    "first_argmin",
    "fold_all_rows",
    "pmax",
    "pmin",
    "psum",
    "row_ids",
    "set_row",
]


def axis_size(axis: str | None) -> int:
    """Number of devices along ``axis`` (static); 1 without an axis."""
    return 1 if axis is None else int(jax.lax.axis_size(axis))


def axis_index(axis: str | None) -> jax.Array:
    """This device's position along ``axis`` (int32 scalar); 0 without an axis."""
    if axis is None:
        return jnp.zeros((), jnp.int32)
    return jax.lax.axis_index(axis).astype(jnp.int32)


def row_ids(m: int, axis: str | None) -> jax.Array:
    """Global indices ``int32[m]`` of the ``m`` rows this device holds."""
    local = jnp.arange(m, dtype=jnp.int32)
    return local if axis is None else axis_index(axis) * m + local


def psum(x, axis: str | None):
    """Sum over the devices of ``axis`` (any pytree); the identity without an axis."""
    return x if axis is None else jax.lax.psum(x, axis)


def pmax(x, axis: str | None):
    """Maximum over the devices of ``axis``; the identity without an axis."""
    return x if axis is None else jax.lax.pmax(x, axis)


def pmin(x, axis: str | None):
    """Minimum over the devices of ``axis``; the identity without an axis."""
    return x if axis is None else jax.lax.pmin(x, axis)


def all_gather(x: jax.Array, axis: str | None) -> jax.Array:
    """Every device's ``x`` concatenated along the first axis in device order; ``x`` alone
    without an axis."""
    return x if axis is None else jax.lax.all_gather(x, axis, tiled=True)


def first_argmax(values: jax.Array, ids: jax.Array, axis: str | None) -> jax.Array:
    """Global index (int32 scalar, on every device) of the largest of ``values`` over all rows of
    all devices; the lowest global index among equal maxima. ``ids``: ``row_ids`` of the rows."""
    i = _local_first_argmax(values)
    if axis is None:
        return ids[i]
    v = values[i]
    best = jax.lax.pmax(v, axis)
    big = jnp.iinfo(jnp.int32).max
    return jax.lax.pmin(jnp.where(v == best, ids[i], big), axis)


def first_argmin(values: jax.Array, ids: jax.Array, axis: str | None) -> jax.Array:
    """Global index of the smallest of ``values`` (lowest global index on ties); see
    ``first_argmax``."""
    i = _local_first_argmin(values)
    if axis is None:
        return ids[i]
    v = values[i]
    best = jax.lax.pmin(v, axis)
    big = jnp.iinfo(jnp.int32).max
    return jax.lax.pmin(jnp.where(v == best, ids[i], big), axis)


def set_row(v: jax.Array, ids: jax.Array, index: jax.Array, value) -> jax.Array:
    """``v`` (row-sharded like the rows, ``ids`` their ``row_ids``) with its entry of global index
    ``index`` set to ``value`` on the device that holds it: a scatter of one element, cheaper than
    a compare over all rows, on one device as on many."""
    local = index - ids[0]
    local = jnp.where((local >= 0) & (local < v.shape[0]), local, v.shape[0])
    return v.at[local].set(value, mode="drop")


def fetch_rows(x: jax.Array, ids: jax.Array, index: jax.Array, axis: str | None) -> jax.Array:
    """Rows ``index`` (global, int ``[r]``) of the row-sharded ``x`` on every device.

    On a mesh: one ``psum`` of ``r x d`` values, zero on every device but each row's owner
    (adding zeros is exact, so the rows arrive bit for bit)."""
    if axis is None:
        return x[index]
    m = x.shape[0]
    local = jnp.clip(index - ids[0], 0, m - 1)
    owner = (index >= ids[0]) & (index < ids[0] + m)
    rows = x[local]
    mask = owner.reshape(owner.shape + (1,) * (rows.ndim - owner.ndim))
    return jax.lax.psum(jnp.where(mask, rows, jnp.zeros_like(rows)), axis)


def fetch_row(x: jax.Array, ids: jax.Array, index: jax.Array, axis: str | None) -> jax.Array:
    """Row ``index`` (global int scalar) of the row-sharded ``x`` on every device."""
    return fetch_rows(x, ids, jnp.reshape(index, (1,)), axis)[0]


def fold_all_rows(
    fn, x: jax.Array, n: int, axis: str | None, block: int, init, *, ordered=False, local=None
):
    """Folds ``fn(rows, start, fresh_from, other, other_ids, other_ok, carry)`` over every pair
    (block of this device's rows, all rows of one device), so that each device meets every row.

    ``rows`` are ``[block, ...]`` row blocks of ``local`` (default ``x``) as in
    ``fold_row_blocks``; ``other`` is one device's whole ``x`` with its global ``other_ids`` and
    ``other_ok = other_ids < n`` (padding rows are not ok). Without an axis there is one visit,
    with ``other = x``. On a mesh there are ``P`` visits: by default the blocks go round a ring
    (``ppermute``, P - 1 hops; device ``q`` meets them in the order ``q, q - 1, ...``), so ``fn``
    must not depend on the order (a min, a top-k with ties to the lowest index);
    ``ordered=True`` broadcasts device ``s``'s rows at visit ``s`` instead (a ``psum`` of zeros
    and one block, exact), so every device adds the visits in the order ``0, 1, ..., P - 1`` and
    two equal rows on different devices get bit-equal floating sums. A device holds at most its
    own rows and one visiting block.
    """
    m = x.shape[0]
    rows_of = x if local is None else local

    def visit_one(owner, other, carry):
        other_ids = owner * m + jnp.arange(m, dtype=jnp.int32)
        other_ok = other_ids < n

        def fold(rows, start, fresh_from, acc):
            return fn(rows, start, fresh_from, other, other_ids, other_ok, acc)

        return fold_row_blocks(fold, rows_of, block, carry)

    if axis is None:
        return visit_one(jnp.zeros((), jnp.int32), x, init)
    p = axis_size(axis)
    me = axis_index(axis)
    perm = [(i, (i + 1) % p) for i in range(p)]

    def visit(s, carry):
        acc, other = carry
        if ordered:
            owner = s
            other = jax.lax.psum(jnp.where(me == s, x, jnp.zeros_like(x)), axis)
        else:
            owner = (me - s) % p
        acc = visit_one(owner, other, acc)
        if not ordered:
            other = jax.lax.ppermute(other, axis, perm)
        return acc, other

    return jax.lax.fori_loop(0, p, visit, (init, x))[0]
