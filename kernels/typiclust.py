"""Representative points of a clustering: the point nearest each centroid (``kmeans_medoids``)
and the most typical point of each cluster (TypiClust: ``typicality``, ``typical_points``).

Both pick in TypiClust's round-robin order over the clusters (``_round_robin``). ``existing``
(anchored runs: the anchors already chosen, counted per cluster of their nearest centroid) starts
the count of picks each cluster holds, as TypiClust's labelled counts do: clusters without an
anchor are served first, largest first, then round robin by fewest (anchors + picks). Every pick is
a global reduction over the rows (a ``psum`` of ``k`` counts and a first argmax, ties to the lowest
global index), so the same body runs on one device and, with ``mesh=``, over rows sharded on a 1-D
mesh (``sharding.on_mesh``). Typicality needs each point's nearest same-cluster neighbours over all
rows: ``[block, n]`` distances at a time on one device; on a mesh the row blocks go round a ring of
the devices (``collective.fold_all_rows``) and each device keeps a running top-m of its own rows.
The picks on a mesh equal one device's; the typicality values are the same distances selected the
same way, so they agree to the last bit where the block products round alike (exact on integer or
quarter-integer data), within float32 rounding elsewhere.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from . import collective
from ._checks import as_float_matrix, check_block_size, check_k, is_concrete
from .distance import accum_dtype, auto_block, block_rank_distances, row_aux
from .sharding import ALL, ROWS, on_mesh, on_rows, real_rows, replicate, unpad

__all__ = ["kmeans_medoids", "typical_points", "typicality"]


def _check_existing(existing, num_clusters: int):
    """``existing`` as int32 ``[num_clusters]`` counts ``>= 0``; None stays None."""
    if existing is None:
        return None
    existing = jnp.asarray(existing)
    if existing.shape != (num_clusters,) or not jnp.issubdtype(existing.dtype, jnp.integer):
        raise ValueError(
            f"existing must be int [num_clusters={num_clusters}] counts, got {existing.dtype} "
            f"of shape {existing.shape}"
        )
    if bool(jnp.any(existing < 0)):
        raise ValueError("existing counts must be >= 0")
    return existing.astype(jnp.int32)


def _check_clustering(x, centroids, assignment, num_picks, min_cluster_size, n=None, mesh=None):
    """Validated ``(x, centroids, assignment, num_picks, n)``; ``n``: the real rows of an ``x``
    padded for ``mesh`` (``assignment`` is ``[n]``)."""
    x = as_float_matrix(x, "x")
    n = real_rows(x, n, mesh)
    centroids = as_float_matrix(centroids, "centroids")
    if centroids.shape[1] != x.shape[1]:
        raise ValueError(
            f"centroids must have the width of x: {tuple(centroids.shape)} vs {tuple(x.shape)}"
        )
    if centroids.shape[0] < 1:
        raise ValueError("need at least one centroid")
    assignment = _check_assignment(assignment, n, centroids.shape[0])
    if num_picks is None:
        num_picks = centroids.shape[0]
    num_picks = check_k(num_picks, n, "num_picks")
    if (
        isinstance(min_cluster_size, bool)
        or not isinstance(min_cluster_size, int)
        or min_cluster_size < 1
    ):
        raise ValueError(f"min_cluster_size must be an int >= 1, got {min_cluster_size!r}")
    return x, centroids, assignment, num_picks, n


def _check_assignment(assignment, n: int, num_clusters: int | None = None) -> jax.Array:
    assignment = jnp.asarray(assignment)
    if assignment.shape != (n,) or not jnp.issubdtype(assignment.dtype, jnp.integer):
        raise ValueError(f"assignment must be int [n={n}], got {assignment.shape}")
    # Ids outside [0, k) once gave the same pick k times. Checked where the values are at hand
    # (not under jit, not rows spread over other processes).
    if (
        num_clusters is not None
        and n > 0
        and is_concrete(assignment)
        and assignment.is_fully_addressable
    ):
        low, high = int(assignment.min()), int(assignment.max())
        if low < 0 or high >= num_clusters:
            raise ValueError(
                f"assignment ids must be in [0, {num_clusters}) (one per centroid), got "
                f"{low}..{high}"
            )
    return assignment.astype(jnp.int32)


def _round_robin(
    assignment, score, existing, *, n, num_clusters, num_picks, min_cluster_size, axis
):
    """TypiClust's order. Pick ``t`` goes to the cluster, among those with members not picked
    yet, that (1) has at least ``min_cluster_size`` points if any such cluster is left, (2) has
    the fewest picks so far (counting ``existing``, e.g. anchors, when given), (3) is the
    largest, (4) has the lowest index; it takes that
    cluster's unpicked member with the highest ``score`` (lowest global index on ties). With
    ``num_picks == k`` and no empty or small cluster: one pick per cluster, largest first.
    Padding rows (global index ``>= n``) count nowhere and are never picked."""
    m, k = assignment.shape[0], num_clusters
    ids = collective.row_ids(m, axis)
    valid = ids < n
    cids = jnp.arange(k, dtype=jnp.int32)
    size = collective.psum(
        jax.ops.segment_sum(valid.astype(jnp.int32), assignment, num_segments=k), axis
    )
    small = size < min_cluster_size
    # A member scored -inf still ranks above the non-members (masked to -inf below).
    score = jnp.maximum(score, jnp.finfo(score.dtype).min)

    def body(t, carry):
        picks, taken, got = carry
        left = jax.ops.segment_sum((~taken).astype(jnp.int32), assignment, num_segments=k)
        ok = collective.psum(left, axis) > 0
        ok = ok & (small == jnp.min(jnp.where(ok, small, True)))
        ok = ok & (got == jnp.min(jnp.where(ok, got, jnp.iinfo(jnp.int32).max)))
        ok = ok & (size == jnp.max(jnp.where(ok, size, -1)))
        c = jnp.min(jnp.where(ok, cids, k))
        member = (assignment == c) & ~taken
        i = collective.first_argmax(jnp.where(member, score, -jnp.inf), ids, axis)
        return picks.at[t].set(i), collective.set_row(taken, ids, i, True), got.at[c].add(1)

    got = jnp.zeros((k,), jnp.int32) if existing is None else existing
    init = (jnp.full((num_picks,), -1, jnp.int32), ~valid, got)
    return jax.lax.fori_loop(0, num_picks, body, init)[0]


def _medoids_body(x, centroids, assignment, existing, *, n, num_picks, min_cluster_size, axis):
    c = centroids.astype(accum_dtype(x.dtype))
    diff = x.astype(c.dtype) - c[assignment]
    score = -jnp.sum(diff * diff, axis=1)
    return _round_robin(
        assignment, score, existing, n=n, num_clusters=c.shape[0], num_picks=num_picks,
        min_cluster_size=min_cluster_size, axis=axis,
    )  # fmt: skip


@partial(jax.jit, static_argnames=("mesh", "n", "num_picks", "min_cluster_size"))
def _medoids(x, centroids, assignment, existing, *, mesh, n, num_picks, min_cluster_size):
    body = partial(_medoids_body, n=n, num_picks=num_picks, min_cluster_size=min_cluster_size)
    return on_mesh(body, mesh, (ROWS, ALL, ROWS, ALL), ALL)(x, centroids, assignment, existing)


def kmeans_medoids(
    x,
    centroids,
    assignment,
    *,
    num_picks: int | None = None,
    min_cluster_size: int = 1,
    existing=None,
    mesh=None,
    n: int | None = None,
) -> jax.Array:
    """The point nearest each centroid: int32 ``[num_picks]`` distinct indices.

    By default (``num_picks = k``, ``min_cluster_size = 1``) the picks are, for every non-empty
    cluster, largest cluster first, its member nearest its centroid (lowest index on ties); the
    picks an empty cluster (or a cluster smaller than ``min_cluster_size``) would get
    go, in TypiClust's order (see ``typical_points``), to the next-nearest members of the
    largest clusters. ``min_cluster_size > 1`` keeps singleton clusters (outliers) out.
    ``existing`` (int ``[k]``, e.g. anchors per cluster of their nearest centroid) counts as
    picks the clusters already hold: clusters with none are served first (TypiClust's anchored
    order). With ``mesh`` (a 1-D ``jax.sharding.Mesh``) the rows are sharded over its devices
    and each pick is a global reduction. ``n``: with ``mesh``, the real rows of an ``x`` already
    padded by ``shard_rows`` (e.g. each process its own rows of a store); ``assignment`` is
    ``[n]``, as ``kmeans_assign(..., n=n)`` returns it.
    """
    x, centroids, assignment, num_picks, n = _check_clustering(
        x, centroids, assignment, num_picks, min_cluster_size, n, mesh
    )
    existing = _check_existing(existing, centroids.shape[0])
    if num_picks == 0:
        return jnp.zeros((0,), jnp.int32)
    return _medoids(
        on_rows(x, mesh, 0),
        replicate(centroids, mesh),
        on_rows(assignment, mesh, 0),
        None if existing is None else replicate(existing, mesh),
        mesh=mesh,
        n=n,
        num_picks=num_picks,
        min_cluster_size=min_cluster_size,
    )


def _typicality_of(near):
    """Typicality from the distances ``[b, m]`` to each point's nearest cluster mates (``inf``
    where there are fewer)."""
    valid = jnp.isfinite(near)
    cnt = jnp.sum(valid, axis=1)
    mean = jnp.sum(jnp.where(valid, near, 0.0), axis=1) / jnp.maximum(cnt, 1)
    typ = jnp.where(mean > 0, 1.0 / jnp.where(mean > 0, mean, 1.0), jnp.inf)
    return typ.astype(jnp.float32)


def _typicality_body(x, assignment, *, n, num_neighbors, block_size, axis):
    m = x.shape[0]
    near_count = min(num_neighbors, n - 1)
    acc = accum_dtype(x.dtype)
    ids = collective.row_ids(m, axis)
    block = auto_block(m, m, block_size)
    aux = row_aux(x, "euclidean")
    # One visit (one device): the visiting rows are x itself and each block's nearest mates are
    # final, so the fold writes typicality directly (no [n, m] running top-m is kept).
    one_visit = collective.axis_size(axis) == 1
    padded = collective.axis_size(axis) * m != n
    everyone = collective.all_gather(assignment, axis)  # [P m] int32: O(n) ints, not rows

    def fold(rows, start, fresh_from, other, other_ids, other_ok, out):
        raux = jax.lax.dynamic_slice_in_dim(aux, start, block)
        a = jax.lax.dynamic_slice_in_dim(assignment, start, block)
        other_a = jax.lax.dynamic_slice_in_dim(everyone, other_ids[0], m)
        other_aux = aux if one_visit else row_aux(other, "euclidean")
        row_ids = ids[0] + start + jnp.arange(block, dtype=jnp.int32)
        sq = block_rank_distances(rows, raux, other, other_aux, "euclidean")  # [block, m]
        same = (a[:, None] == other_a[None, :]) & (row_ids[:, None] != other_ids[None, :])
        if padded:
            same = same & other_ok[None, :]
        d = jnp.where(same, jnp.sqrt(sq), jnp.inf)
        # the nearest other members of the cluster among these rows
        best = -jax.lax.top_k(-d, min(near_count, m))[0]
        if one_visit:
            best = _typicality_of(best)
        else:
            # merged with the nearest found so far; rows the previous block already merged
            # this visit (the last block may overlap it) keep their value
            old = jax.lax.dynamic_slice_in_dim(out, start, block)
            best = -jax.lax.top_k(-jnp.concatenate([old, best], axis=1), near_count)[0]
            fresh = ((start + jnp.arange(block)) >= fresh_from)[:, None]
            best = jnp.where(fresh, best, old)
        return jax.lax.dynamic_update_slice_in_dim(out, best.astype(out.dtype), start, axis=0)

    if one_visit:
        return collective.fold_all_rows(fold, x, n, axis, block, jnp.zeros((m,), jnp.float32))
    near = collective.fold_all_rows(
        fold, x, n, axis, block, jnp.full((m, near_count), jnp.inf, acc)
    )
    return _typicality_of(near)


@partial(jax.jit, static_argnames=("mesh", "n", "num_neighbors", "block_size"))
def _typicality(x, assignment, *, mesh, n, num_neighbors, block_size):
    body = partial(_typicality_body, n=n, num_neighbors=num_neighbors, block_size=block_size)
    return on_mesh(body, mesh, (ROWS, ROWS), ROWS)(x, assignment)


def _check_neighbors(num_neighbors) -> int:
    if isinstance(num_neighbors, bool) or not isinstance(num_neighbors, int) or num_neighbors < 1:
        raise ValueError(f"num_neighbors must be an int >= 1, got {num_neighbors!r}")
    return num_neighbors


def _typicality_checked(x, assignment, num_neighbors, block_size, mesh, n):
    """``typicality`` of validated arguments (``n`` real rows): float32 ``[n]``."""
    if n == 1:
        return jnp.full((1,), jnp.inf, jnp.float32)
    typ = _typicality(
        on_rows(x, mesh, 0),
        on_rows(assignment, mesh, -1),
        mesh=mesh,
        n=n,
        num_neighbors=num_neighbors,
        block_size=block_size,
    )
    return unpad(typ, n)


def typicality(
    x,
    assignment,
    *,
    num_neighbors: int = 20,
    block_size: int | None = None,
    mesh=None,
    n: int | None = None,
):
    """TypiClust typicality: ``1 / mean Euclidean distance to the num_neighbors nearest other
    points of the same cluster`` (fewer when the cluster is smaller; ``inf`` for a point with no
    other member or only duplicates of itself). float32 ``[n]``; ``[block_size, n]`` distances
    at a time (``O(n^2 d)`` work, never an ``n x n`` matrix). With ``mesh`` (a 1-D
    ``jax.sharding.Mesh``) the rows are sharded and travel round a ring of its devices
    (``[block_size, n / P]`` distances at a time). ``n``: as in :func:`kmeans_medoids`."""
    x = as_float_matrix(x, "x")
    n = real_rows(x, n, mesh)
    assignment = _check_assignment(assignment, n)
    num_neighbors = _check_neighbors(num_neighbors)
    block_size = check_block_size(block_size)
    return _typicality_checked(x, assignment, num_neighbors, block_size, mesh, n)


def _typical_body(assignment, typ, existing, *, n, num_clusters, num_picks, min_cluster_size, axis):
    return _round_robin(
        assignment, typ, existing, n=n, num_clusters=num_clusters, num_picks=num_picks,
        min_cluster_size=min_cluster_size, axis=axis,
    )  # fmt: skip


@partial(jax.jit, static_argnames=("mesh", "n", "num_clusters", "num_picks", "min_cluster_size"))
def _typical(assignment, typ, existing, *, mesh, n, num_clusters, num_picks, min_cluster_size):
    body = partial(
        _typical_body, n=n, num_clusters=num_clusters, num_picks=num_picks,
        min_cluster_size=min_cluster_size,
    )  # fmt: skip
    return on_mesh(body, mesh, (ROWS, ROWS, ALL), ALL)(assignment, typ, existing)


def typical_points(
    x,
    centroids,
    assignment,
    *,
    num_neighbors: int = 20,
    num_picks: int | None = None,
    min_cluster_size: int = 1,
    block_size: int | None = None,
    existing=None,
    mesh=None,
    n: int | None = None,
) -> jax.Array:
    """The most typical points of the clusters (TypiClust): int32 ``[num_picks]`` distinct indices.

    Each pick goes to the cluster with members left that has at least ``min_cluster_size`` points
    (if any is left), the fewest picks so far, the most points, the lowest index — in that order —
    and takes its unpicked member of highest :func:`typicality` (lowest index on ties). By default
    (``num_picks = k``) that is one pick per non-empty cluster, largest cluster first.
    ``existing`` (int ``[k]``, e.g. anchors per cluster) counts as picks the clusters already
    hold, as in :func:`kmeans_medoids`. With ``mesh`` (a 1-D ``jax.sharding.Mesh``) the rows
    are sharded over its devices; ``n`` as in :func:`kmeans_medoids`.
    """
    x, centroids, assignment, num_picks, n = _check_clustering(
        x, centroids, assignment, num_picks, min_cluster_size, n, mesh
    )
    num_neighbors = _check_neighbors(num_neighbors)
    existing = _check_existing(existing, centroids.shape[0])
    block_size = check_block_size(block_size)
    if num_picks == 0:
        return jnp.zeros((0,), jnp.int32)
    typ = _typicality_checked(x, assignment, num_neighbors, block_size, mesh, n)
    return _typical(
        on_rows(assignment, mesh, 0),
        on_rows(typ, mesh, 0.0),
        None if existing is None else replicate(existing, mesh),
        mesh=mesh,
        n=n,
        num_clusters=centroids.shape[0],
        num_picks=num_picks,
        min_cluster_size=min_cluster_size,
    )
