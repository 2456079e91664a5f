"""Exact k-nearest neighbours, blocked: a block of queries against every row at a time.

For each query the ``k`` rows of ``x`` at the smallest distance are returned, nearest first; equal
distances go to the lowest index. Memory: one ``[block, n]`` block of rank distances (see
``distance.py``) plus the ``[m, k]`` output, never an ``m x n`` matrix.

Several devices (``mesh=``): the rows of ``x`` and the queries are both row-sharded over a 1-D
mesh and the same body runs there (``sharding.on_mesh``): the row blocks of ``x`` go round a ring
of the devices (``collective.fold_all_rows``, P - 1 hops) and each device merges, for each of its
queries, the visiting block's ``k`` nearest into its running ``k`` nearest (``merge_knn``,
ordered by (distance, global index)); after P visits each query has its ``k`` nearest over all
rows, ties to the lowest global index. Per device: ``O(n/P x k)`` state, one visiting block,
``[block, n/P]`` distances at a time. The indices equal one device's where the distances are
exact (integer data, duplicates on different shards) and elsewhere up to the rounding below (a
matrix product of another shape can round its last bit differently).

Public building blocks:

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

from . import collective
from ._checks import as_float_matrix, check_block_size, check_metric, check_same_width
from .distance import accum_dtype, auto_block, block_rank_distances, row_aux, to_metric
from .sharding import ROWS, on_mesh, shard_rows, unpad

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
    ids = x_offset + jnp.arange(x.shape[0], dtype=jnp.int32)
    self_query = None if query_ids is None else ("exclude" if exclude_self else "keep")
    return _candidates(
        q, q_aux, query_ids, x, x_aux, ids, None, k=k, metric=metric, self_query=self_query
    )


def merge_knn(d_a, i_a, d_b, i_b, k: int) -> tuple[jax.Array, jax.Array]:
    """The ``k`` best of two candidate lists ``[b, k_a]`` and ``[b, k_b]``, ordered by (distance,
    index); missing entries ``(inf, -1)`` sort last. Both lists must hold disjoint indices."""
    d = jnp.concatenate([d_a, d_b], axis=1)
    i = jnp.concatenate([i_a, i_b], axis=1)
    key_i = jnp.where(i < 0, jnp.iinfo(jnp.int32).max, i)
    d, key_i = jax.lax.sort((d, key_i), dimension=1, num_keys=2)
    i = jnp.where(key_i == jnp.iinfo(jnp.int32).max, -1, key_i)
    return d[:, :k], i[:, :k]


def _candidates(q, q_aux, q_ids, x, x_aux, x_ids, x_ok, *, k, metric, self_query):
    """``knn_block`` with global ``x_ids`` and, when ``x_ok`` is given, the rows it marks False
    (padding rows of a mesh) excluded; ``self_query`` as in ``_knn_body``."""
    d = block_rank_distances(q, q_aux, x, x_aux, metric)  # [b, n]
    if self_query is not None:
        same = q_ids[:, None] == x_ids[None, :]
        if self_query == "exclude":
            d = jnp.where(same, jnp.inf, d)
        elif metric != "cosine":
            d = jnp.where(same, 0.0, d)
    if x_ok is not None:
        d = jnp.where(x_ok[None, :], d, jnp.inf)
    # top_k of the negated distances: among equal values the lower index comes first.
    neg, pos = jax.lax.top_k(-d, k)
    dist = -neg
    return dist, jnp.where(jnp.isfinite(dist), x_ids[pos], -1)


def _knn_body(queries, x, *, n, k, metric, block_size, self_query, axis):
    """The k nearest of the ``n`` rows of ``x`` for each of this device's queries.

    ``self_query``: ``"exclude"`` / ``"keep"`` when the queries are the rows of ``x`` (their
    global ids are then the rows'), ``None`` otherwise. On a mesh the row blocks of ``x`` go
    round a ring of the devices (``collective.fold_all_rows``): each device merges, for each of
    its queries, the visiting block's ``k`` nearest into its running ``k`` nearest, ordered by
    (distance, global index), so ties go to the lowest global index as on one device."""
    mq, mx = queries.shape[0], x.shape[0]
    acc = accum_dtype(jnp.promote_types(queries.dtype, x.dtype))
    if mq == 0:
        return jnp.zeros((0, k), acc), jnp.zeros((0, k), jnp.int32)
    block = auto_block(mx, mq, block_size)
    x_aux = row_aux(x, metric)
    q_aux = x_aux if self_query is not None else row_aux(queries, metric)
    q_ids = collective.row_ids(mq, axis)
    one_visit = collective.axis_size(axis) == 1  # then the visiting rows are x itself
    padded = collective.axis_size(axis) * mx != n

    def fold(rows, start, fresh_from, other, other_ids, other_ok, carry):
        best_d, best_i = carry
        aux = jax.lax.dynamic_slice_in_dim(q_aux, start, block)
        ids = jax.lax.dynamic_slice_in_dim(q_ids, start, block)
        other_aux = x_aux if one_visit else row_aux(other, metric)
        d, i = _candidates(
            rows, aux, ids, other, other_aux, other_ids, other_ok if padded else None,
            k=min(k, mx), metric=metric, self_query=self_query,
        )  # fmt: skip
        d = d.astype(acc)
        if not one_visit:
            old_d = jax.lax.dynamic_slice_in_dim(best_d, start, block)
            old_i = jax.lax.dynamic_slice_in_dim(best_i, start, block)
            new_d, new_i = merge_knn(old_d, old_i, d, i, k)
            # Rows of the last block seen by the previous one already hold this visit's
            # candidates: merging them again would repeat indices.
            fresh = ((start + jnp.arange(block)) >= fresh_from)[:, None]
            d, i = jnp.where(fresh, new_d, old_d), jnp.where(fresh, new_i, old_i)
        best_d = jax.lax.dynamic_update_slice_in_dim(best_d, d, start, axis=0)
        best_i = jax.lax.dynamic_update_slice_in_dim(best_i, i, start, axis=0)
        return best_d, best_i

    init = (jnp.full((mq, k), jnp.inf, acc), jnp.full((mq, k), -1, jnp.int32))
    dist, idx = collective.fold_all_rows(fold, x, n, axis, block, init, local=queries)
    return to_metric(dist, metric), idx


@partial(jax.jit, static_argnames=("k", "metric", "block_size", "self_query", "mesh", "n"))
def _knn(queries, x, *, k, metric, block_size, self_query, mesh=None, n=None):
    body = partial(
        _knn_body, n=x.shape[0] if n is None else n, k=k, metric=metric, block_size=block_size,
        self_query=self_query,
    )  # fmt: skip
    return on_mesh(body, mesh, (ROWS, ROWS), (ROWS, ROWS))(queries, x)


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
        query; ties still go to the lowest global index.

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
    if mesh is None:
        return _knn(q, x, k=k, metric=metric, block_size=block_size, self_query=self_query)
    xs = shard_rows(x, mesh)
    qs = xs if self_query is not None else shard_rows(q, mesh)
    dist, idx = _knn(
        qs, xs, k=k, metric=metric, block_size=block_size, self_query=self_query, mesh=mesh, n=n
    )
    return unpad(dist, q.shape[0]), unpad(idx, q.shape[0])
