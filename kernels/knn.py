"""Exact k-nearest neighbours, blocked: a block of queries against every row at a time.

For each query the ``k`` rows of ``x`` at the smallest distance are returned, nearest first; equal
distances go to the lowest index. Memory: one ``[block, n]`` block of rank distances (see
``distance.py``) plus the ``[m, k]`` output, never an ``m x n`` matrix.

Building blocks, kept separate so that a sharded version can reuse them:

* ``knn_block(q, q_aux, x, x_aux, ...)``: the ``k`` nearest rows of ``x`` for a block of queries,
  as rank distances and indices offset by ``x_offset`` (the global index of ``x``'s first row);
* ``merge_knn(d_a, i_a, d_b, i_b, k)``: merges two candidate lists (e.g. from two shards of
  ``x``) into the ``k`` best, with the same ordering (distance, then index).

Rank distances from the block form (``|a|^2 + |b|^2 - 2 a.b``) carry rounding of order
``eps * |a|^2`` for near-identical rows: two neighbours closer to each other in distance than that
may come in either order. Centre the rows (subtract the mean row) if they sit far from the origin.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from ._checks import as_float_matrix, check_block_size, check_metric, check_same_width
from .distance import (
    accum_dtype,
    auto_block,
    block_rank_distances,
    fold_row_blocks,
    row_aux,
    to_metric,
)

__all__ = ["knn", "knn_block", "merge_knn"]


def knn_block(
    q: jax.Array,
    q_aux: jax.Array,
    x: jax.Array,
    x_aux: jax.Array,
    *,
    k: int,
    metric: str,
    query_ids: jax.Array | None = None,
    x_offset=0,
    exclude_self: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """The ``k`` nearest rows of ``x`` for each row of ``q``, in rank distances.

    Args:
      q: ``[b, d]`` query rows; ``q_aux`` their ``row_aux`` (squared or inverse norms).
      x: ``[n, d]`` rows to search; ``x_aux`` their ``row_aux``.
      k: neighbours per query (static), ``<= n``.
      metric: ``"euclidean"``, ``"sqeuclidean"`` or ``"cosine"``.
      query_ids: ``[b]`` global index of each query in the searched set, used by
        ``exclude_self`` and to make ``d(x_i, x_i)`` exactly 0 for the Euclidean metrics.
      x_offset: global index of ``x``'s first row (a shard's offset); returned indices are global.
      exclude_self: a query never gets its own ``query_ids`` entry as a neighbour.

    Returns:
      ``(rank_distances [b, k], indices [b, k] int32)``, nearest first, ties to the lowest index.
      If fewer than ``k`` rows are eligible, the rest are ``(inf, -1)``.
    """
    d = block_rank_distances(q, q_aux, x, x_aux, metric)  # [b, n]
    ids = x_offset + jnp.arange(x.shape[0], dtype=jnp.int32)
    if query_ids is not None:
        same = query_ids[:, None] == ids[None, :]
        if exclude_self:
            d = jnp.where(same, jnp.inf, d)
        elif metric != "cosine":
            d = jnp.where(same, 0.0, d)
    # top_k of the negated distances: among equal values the lower index comes first.
    neg, pos = jax.lax.top_k(-d, k)
    dist = -neg
    idx = jnp.where(jnp.isfinite(dist), ids[pos], -1)
    return dist, idx


def merge_knn(d_a, i_a, d_b, i_b, k: int) -> tuple[jax.Array, jax.Array]:
    """The ``k`` best of two candidate lists ``[b, k_a]`` and ``[b, k_b]``, ordered by (distance,
    index); missing entries ``(inf, -1)`` sort last. Both lists must hold disjoint indices."""
    d = jnp.concatenate([d_a, d_b], axis=1)
    i = jnp.concatenate([i_a, i_b], axis=1)
    key_i = jnp.where(i < 0, jnp.iinfo(jnp.int32).max, i)
    d, key_i = jax.lax.sort((d, key_i), dimension=1, num_keys=2)
    i = jnp.where(key_i == jnp.iinfo(jnp.int32).max, -1, key_i)
    return d[:, :k], i[:, :k]


@partial(jax.jit, static_argnames=("k", "metric", "block_size", "self_query"))
def _knn(queries, x, *, k, metric, block_size, self_query):
    m, n = queries.shape[0], x.shape[0]
    acc = accum_dtype(jnp.promote_types(queries.dtype, x.dtype))
    if m == 0:
        return jnp.zeros((0, k), acc), jnp.zeros((0, k), jnp.int32)
    block = auto_block(n, m, block_size)
    x_aux = row_aux(x, metric)
    q_aux = x_aux if self_query is not None else row_aux(queries, metric)

    def one_block(rows, start, fresh_from, out):
        aux = jax.lax.dynamic_slice_in_dim(q_aux, start, block)
        ids = start + jnp.arange(block, dtype=jnp.int32) if self_query is not None else None
        d, i = knn_block(
            rows, aux, x, x_aux, k=k, metric=metric, query_ids=ids,
            exclude_self=self_query == "exclude",
        )  # fmt: skip
        out_d, out_i = out
        out_d = jax.lax.dynamic_update_slice_in_dim(out_d, d.astype(acc), start, axis=0)
        out_i = jax.lax.dynamic_update_slice_in_dim(out_i, i, start, axis=0)
        return out_d, out_i

    init = (jnp.zeros((m, k), acc), jnp.zeros((m, k), jnp.int32))
    dist, idx = fold_row_blocks(one_block, queries, block, init)
    return to_metric(dist, metric), idx


def knn(
    x,
    k: int,
    *,
    queries=None,
    metric: str = "euclidean",
    block_size: int | None = None,
    exclude_self: bool = True,
    mesh=None,
) -> tuple[jax.Array, jax.Array]:
    """Exact k nearest neighbours of each query among the rows of ``x``.

    Args:
      x: ``[n, d]`` floating array, the rows searched.
      k: neighbours per query, ``1 <= k <= n`` (``n - 1`` when a row's own entry is excluded).
      queries: ``[m, d]`` query rows; ``None`` queries every row of ``x`` against ``x``.
      metric: ``"euclidean"``, ``"sqeuclidean"`` or ``"cosine"`` (``1 - cos``; a zero vector is
        at distance 1 from everything).
      block_size: queries handled at once; at most ``block_size x n`` temporary distances exist.
        ``None`` picks a block of at most 16M values.
      exclude_self: with ``queries=None``, row ``i`` is not its own neighbour (a duplicate row
        still is). Without it, the Euclidean distance of a row to itself is exactly 0. Ignored
        when ``queries`` is given (queries are not identified with rows of ``x``).
      mesh: optional 1-D ``jax.sharding.Mesh``: rows of ``x`` and the queries are sharded over
        its devices, the rows travel round a ring and each device merges P x k candidates per
        query (``kernels.sharding``); ties still go to the lowest global index.

    Returns:
      ``(distances [m, k], indices [m, k] int32)``: the metric's distances, nearest first; equal
      distances go to the lowest index.
    """
    check_metric(metric)
    block_size = check_block_size(block_size)
    x = as_float_matrix(x, "x")
    if queries is None:
        q = x
        self_query = "exclude" if exclude_self else "keep"
    else:
        q = as_float_matrix(queries, "queries")
        check_same_width(x, q, "x", "queries")
        self_query = None
    n = x.shape[0]
    limit = n - 1 if self_query == "exclude" else n
    if isinstance(k, bool) or not isinstance(k, int) and not hasattr(k, "__index__"):
        raise TypeError(f"k must be an int, got {k!r} of type {type(k).__name__}")
    k = int(k)
    if not 1 <= k <= limit:
        what = "n - 1 (a row is not its own neighbour)" if self_query == "exclude" else "n"
        raise ValueError(f"k must be in [1, {what}] = [1, {limit}] for n={n} rows, got k={k}")
    if mesh is not None:
        from .sharding import sharded_knn

        return sharded_knn(
            x, k, mesh=mesh, queries=q, metric=metric, block_size=block_size,
            self_query=self_query,
        )  # fmt: skip
    return _knn(q, x, k=k, metric=metric, block_size=block_size, self_query=self_query)
