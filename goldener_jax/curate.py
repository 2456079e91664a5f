"""Curation: samples whose label disagrees with their neighbourhood, near-duplicate groups, and
near duplicates that leak across the sets of a split.

* ``label_issues``: each labelled sample's ``k`` nearest neighbours (exact, blocked,
  ``kernels.knn``; the sample itself excluded) vote for a class, weighted by ``1 / (distance +
  eps)`` or uniformly. The class probability ``p`` gives the *self-confidence* ``p[given label]``
  and a *suggested label* ``argmax p``. Samples are ranked by the issue score ``1 - p[given]``
  (highest first), then by how far the best other class beats the given one, then by index.
* ``near_duplicates``: every pair of rows at distance ``<= threshold`` (``kernels.pairs_within``:
  blocked on the device, rechecked in float64), grouped by connected components: a group is a set
  of rows linked by such pairs.
* ``leakage_pairs``: the pairs of samples in *different* sets of a split at distance
  ``<= threshold`` (``kernels.pairs_within`` between every two sets), closest first.

The pair searches share ``pairs_within``'s edge rule: a pair exactly at the threshold counts.

``label_issues`` and ``near_duplicates`` return small dataclasses with ``to_json``.
"""

from __future__ import annotations

import dataclasses
import os
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from goldener_jax import kernels as gk
from goldener_jax._neighbours import nearest_others
from goldener_jax.kernels import collective
from goldener_jax.kernels._checks import as_float_matrix, check_block_size, check_metric
from goldener_jax.kernels.distance import (
    accum_dtype,
    auto_block,
    block_rank_distances,
    fold_row_blocks,
    row_aux,
    to_metric,
)
from goldener_jax.kernels.pairs import check_threshold
from goldener_jax.kernels.sharding import ROWS, on_mesh
from goldener_jax.pipeline.data import open_store_rows, release_freed_memory, spans_processes

__all__ = ["LabelIssues", "NearDuplicates", "label_issues", "leakage_pairs", "near_duplicates"]

WEIGHTINGS = ("distance", "uniform")


def _load(store_or_array, labels=None, mesh=None) -> tuple:
    """``(x, labels, sample_ids)`` under ``select``'s loading rules (one copy of them is to live
    in ``goldener_jax.pipeline.data``; this function is the one place curation loads data):

    * a ``FeatureStore`` (or its path) gives its vectors, and curation needs one vector per
      sample; ``sample_ids`` is each row's sample id, and results are indexed by sample id;
    * labels default to the store's; labels given with a store are per sample: one entry per
      sample id (``max id + 1``) or one per sample present (in sample-id order). They come back
      one per row of ``x``;
    * an array gives itself, ``labels`` as given and ``sample_ids=None``: results are indexed by
      row.
    """
    from goldener_jax.store import FeatureStore

    if isinstance(store_or_array, (str, os.PathLike)):
        store_or_array = FeatureStore.open(store_or_array)
    if not isinstance(store_or_array, FeatureStore):
        return store_or_array, labels, None
    store = store_or_array
    if spans_processes(mesh):
        # The vectors stay in the store: each process reads its own devices' rows (StoreRows).
        x, sidx = open_store_rows(store, mesh)
    else:
        x, sidx = store.read_vectors()
    sidx = np.asarray(sidx, np.int64)
    sample_ids, row_sample = np.unique(sidx, return_inverse=True)
    if len(sample_ids) != len(sidx):
        raise ValueError(
            f"curation needs one vector per sample; store {str(store.path)!r} has {len(sidx)} "
            f"vectors for {len(sample_ids)} samples: fuse each sample's rows into one "
            "vector first (e.g. Vectorizer row fusion)"
        )
    if labels is None:
        labels = store.read_labels()
    if labels is not None:
        labels = np.asarray(labels)
        by_id = int(sample_ids.max(initial=-1)) + 1
        if labels.ndim == 0 or labels.shape[0] not in (by_id, len(sample_ids)):
            raise ValueError(
                f"labels must have one entry per sample ({len(sample_ids)}) or per sample id "
                f"({by_id}) of the store, got shape {labels.shape}"
            )
        if labels.shape[0] != len(sample_ids):
            labels = labels[sample_ids]
        labels = labels[row_sample]
    return x, labels, sidx


# --------------------------------------------------------------------------- label issues


@dataclasses.dataclass(frozen=True)
class LabelIssues:
    """Samples ranked from most to least likely mislabelled.

    Attributes:
      indices: ``[n]`` sample indices, most likely wrong first.
      scores: ``[n]`` issue score ``1 - self-confidence`` of each ranked sample, in ``[0, 1]``.
      given: ``[n]`` the label each ranked sample has.
      suggested: ``[n]`` the neighbours' most likely class (``argmax p``, ties to the lower class).
      config: the arguments that produced the ranking.
    """

    indices: np.ndarray
    scores: np.ndarray
    given: np.ndarray
    suggested: np.ndarray
    config: dict

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def num_disagreeing(self) -> int:
        """Samples whose suggested label differs from the given one."""
        return int(np.sum(self.suggested != self.given))

    def top(self, count: int) -> list[dict]:
        """The ``count`` most suspicious samples as ``{"index", "score", "given", "suggested"}``."""
        return [
            {
                "index": int(i),
                "score": float(s),
                "given": int(g),
                "suggested": int(p),
            }
            for i, s, g, p in zip(
                self.indices[:count],
                self.scores[:count],
                self.given[:count],
                self.suggested[:count],
                strict=True,
            )
        ]

    def to_json(self, limit: int | None = None) -> dict:
        """JSON-able dict: config, counts and the ranking (all of it, or its first ``limit``)."""
        count = len(self) if limit is None else min(int(limit), len(self))
        return {
            "config": dict(self.config),
            "num_samples": len(self),
            "num_disagreeing": self.num_disagreeing,
            "ranking": self.top(count),
        }


def _check_labels(labels, n: int, num_classes) -> tuple[np.ndarray, int]:
    if labels is None:
        raise ValueError("labels are required: an int array of shape [n] with values >= 0")
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"labels must have shape [{n}] (one per row of x), got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"labels must be integers (class ids), got dtype {y.dtype}")
    if n and y.min() < 0:
        raise ValueError(f"labels must be >= 0, got {int(y.min())} at index {int(y.argmin())}")
    top = int(y.max()) + 1 if n else 0
    if num_classes is None:
        num_classes = top
    elif isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise TypeError(f"num_classes must be an int or None, got {num_classes!r}")
    elif num_classes < top:
        raise ValueError(f"num_classes={num_classes} but labels go up to {top - 1}")
    return y.astype(np.int64), int(num_classes)


def _class_probabilities(nbr_labels, weights, num_classes, rows):
    """``p [len(rows), C]`` from the neighbours' labels and weights of those rows."""
    p = np.zeros((len(rows), num_classes), np.float64)
    r = np.arange(len(rows))
    for j in range(nbr_labels.shape[1]):
        np.add.at(p, (r, nbr_labels[rows, j]), weights[rows, j])
    return p / p.sum(1, keepdims=True)


# Queries per kNN call over a large set: the progress bar advances once per chunk.
_KNN_CHUNK = 1 << 15


def _neighbours(x, k: int, metric: str, block_size, progress: bool, mesh=None):
    """Each row's ``k`` nearest other rows: ``(float64 distances [n, k], indices [n, k])``, in
    query chunks of ``_KNN_CHUNK`` rows above that size (``_neighbours.nearest_others``)."""
    return nearest_others(
        x, k, metric=metric, block_size=block_size, progress=progress, mesh=mesh,
        desc="label issues (kNN)", chunk=_KNN_CHUNK,
    )  # fmt: skip


def _eps(kth: np.ndarray, weighting: str) -> float | None:
    """The distance weighting's ``eps``: 1% of the median k-th neighbour distance."""
    if weighting == "uniform":
        return None
    scale = float(np.median(kth))
    return 0.01 * scale if scale > 0 else 1e-12


def _votes(dist, idx, y, rows, eps, num_classes):
    """``(self-confidence, suggested label, margin)`` of the rows ``rows`` (global ids) from
    their neighbours ``dist`` / ``idx`` (one row each, float64 / int)."""
    nbr_labels = y[idx]
    weights = np.ones_like(dist) if eps is None else 1.0 / (dist + eps)
    m = len(rows)
    self_conf = np.empty(m)
    suggested = np.empty(m, np.int64)
    margin = np.empty(m)
    chunk = max(1, (1 << 22) // max(1, num_classes))
    for start in range(0, m, chunk):
        local = np.arange(start, min(m, start + chunk))
        given_y = y[rows[local]]
        p = _class_probabilities(nbr_labels, weights, num_classes, local)
        given = p[np.arange(len(local)), given_y]
        self_conf[local] = given
        suggested[local] = np.argmax(p, axis=1)
        p[np.arange(len(local)), given_y] = -np.inf
        margin[local] = p.max(axis=1) - given if num_classes > 1 else -given
    return self_conf, suggested, margin


# Bytes of rows sent to every device at a time by the multi-process kNN.
_PIECE_BYTES = 8 << 20


def _pieces_knn_body(x, *, n, k, metric, piece, block, axis):
    """The ``k`` nearest other rows of each of this device's rows, over the ``n`` real rows of
    all devices: pieces of ``piece`` rows are fetched from their owners onto every device in
    turn (``collective.fetch_rows``: a ``psum`` of zeros and the owner's rows, exact) and each
    device merges a piece's nearest into its rows' running ``k`` nearest, ordered by (distance,
    global index) as ``kernels.knn`` does. A device holds its rows and one piece."""
    m = x.shape[0]
    ids = collective.row_ids(m, axis)
    total = m * collective.axis_size(axis)
    acc = accum_dtype(x.dtype)
    aux = row_aux(x, metric)

    def visit(s, carry):
        gids = s * piece + jnp.arange(piece, dtype=jnp.int32)
        rows = collective.fetch_rows(x, ids, jnp.minimum(gids, total - 1), axis)
        rows_aux = row_aux(rows, metric)
        bad = (gids >= n)[None, :]

        def fold(q, start, fresh_from, c):
            best_d, best_i = c
            q_aux = jax.lax.dynamic_slice_in_dim(aux, start, block)
            q_ids = jax.lax.dynamic_slice_in_dim(ids, start, block)
            d = block_rank_distances(q, q_aux, rows, rows_aux, metric)  # [block, piece]
            d = jnp.where(bad | (q_ids[:, None] == gids[None, :]), jnp.inf, d)
            neg, pos = jax.lax.top_k(-d, min(k, piece))
            dd = (-neg).astype(acc)
            ii = jnp.where(jnp.isfinite(dd), gids[pos], -1)
            old_d = jax.lax.dynamic_slice_in_dim(best_d, start, block)
            old_i = jax.lax.dynamic_slice_in_dim(best_i, start, block)
            new_d, new_i = gk.merge_knn(old_d, old_i, dd, ii, k)
            # rows the previous (overlapping) block already merged keep their lists
            fresh = ((start + jnp.arange(block)) >= fresh_from)[:, None]
            new_d, new_i = jnp.where(fresh, new_d, old_d), jnp.where(fresh, new_i, old_i)
            best_d = jax.lax.dynamic_update_slice_in_dim(best_d, new_d, start, axis=0)
            best_i = jax.lax.dynamic_update_slice_in_dim(best_i, new_i, start, axis=0)
            return best_d, best_i

        return fold_row_blocks(fold, x, block, carry)

    init = (jnp.full((m, k), jnp.inf, acc), jnp.full((m, k), -1, jnp.int32))
    dist, idx = jax.lax.fori_loop(0, -(-total // piece), visit, init)
    return to_metric(dist, metric), idx


@partial(jax.jit, static_argnames=("mesh", "n", "k", "metric", "piece", "block"))
def _pieces_knn(x, *, mesh, n, k, metric, piece, block):
    body = partial(_pieces_knn_body, n=n, k=k, metric=metric, piece=piece, block=block)
    return on_mesh(body, mesh, (ROWS,), (ROWS, ROWS))(x)


def _local_rows(a: jax.Array, n: int) -> list[tuple[int, np.ndarray]]:
    """``(first global row, rows)`` of each shard of ``a`` on this process, real rows only."""
    out = []
    for shard in a.addressable_shards:
        start, stop, _ = shard.index[0].indices(a.shape[0])
        if start < n:
            out.append((start, np.asarray(shard.data)[: min(stop, n) - start]))
    return sorted(out, key=lambda t: t[0])


def _allgather(n: int, parts: list[tuple[int, tuple[np.ndarray, ...]]], mesh) -> list:
    """Rows computed per process, ``parts = [(first global row, (column arrays...))]``, gathered
    into whole ``[n, ...]`` arrays on every process (sent as raw 32-bit words, so float64 and
    int64 values arrive bit for bit without 64-bit JAX)."""
    from jax.experimental import multihost_utils

    rows = gk.sharding.padded_rows(n, mesh)
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(mesh.axis_names[0]))
    per_process: dict[int, int] = {}
    for device, index in sharding.devices_indices_map((rows,)).items():
        start, stop, _ = index[0].indices(rows)
        per_process[device.process_index] = per_process.get(device.process_index, 0) + stop - start
    cap = max(per_process.values())  # the same buffer length on every process
    cols = len(parts[0][1]) if parts else 0
    widths = None
    words = []
    ids = []
    for start, columns in parts:
        flat = [np.ascontiguousarray(c).reshape(len(c), -1).view(np.uint32) for c in columns]
        widths = [f.shape[1] for f in flat]
        words.append(np.concatenate(flat, axis=1))
        ids.append(np.arange(start, start + len(columns[0]), dtype=np.int64))
    if not parts:
        raise ValueError("a process of the mesh holds no rows")  # pragma: no cover
    words = np.concatenate(words)
    ids = np.concatenate(ids)
    buf = np.zeros((cap, 1 + words.shape[1]), np.uint32)
    buf[:, 0] = np.uint32(0xFFFFFFFF)  # no row
    buf[: len(ids), 0] = ids.astype(np.uint32)
    buf[: len(ids), 1:] = words
    every = np.asarray(multihost_utils.process_allgather(buf)).reshape(-1, buf.shape[1])
    every = every[every[:, 0] != np.uint32(0xFFFFFFFF)]
    out = []
    offset = 1
    for j in range(cols):
        w = widths[j]
        full = np.zeros((n, w), np.uint32)
        full[every[:, 0].astype(np.int64)] = every[:, offset : offset + w]
        dtype = parts[0][1][j].dtype
        out.append(full.view(dtype).reshape((n, *parts[0][1][j].shape[1:])))
        offset += w
    return out


def _sharded_votes(x, n, y, k, metric, weighting, num_classes, block_size, mesh):
    """``label_issues``' votes on a mesh spanning several processes: each process holds only its
    own devices' rows (read per process from a store, ``StoreRows``, or placed from the array),
    finds their ``k`` nearest among all rows (``_pieces_knn``), counts their votes, and the
    per-row results are gathered. Equal to one device's votes where distances are exact."""
    axis, p = gk.sharding.mesh_axis(mesh)
    from_store = hasattr(x, "num_vectors")  # StoreRows
    if from_store:
        rows = gk.sharding.padded_rows(n, mesh)
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axis))
        # The program is compiled before the rows are read: the compile's transient memory is
        # handed back first, and never sits on top of the rows.
        xs = jax.ShapeDtypeStruct((rows, x.dim), x.dtype, sharding=sharding)
    else:
        xs = gk.sharding.shard_rows(as_float_matrix(np.asarray(x), "x"), mesh)
    m = xs.shape[0] // p
    d = xs.shape[1]
    piece = int(max(1, min(xs.shape[0], _PIECE_BYTES // max(1, d * np.dtype(xs.dtype).itemsize))))
    block = auto_block(piece, m, block_size)
    knn = _pieces_knn.lower(
        xs, mesh=mesh, n=n, k=k, metric=metric, piece=piece, block=block
    ).compile()
    if from_store:
        release_freed_memory()
        xs = x.sharded(np.arange(n))
    dist, idx = knn(xs)
    dist.block_until_ready()
    # Freed now rather than at the next garbage collection (the rows sit in a reference cycle).
    xs.delete()
    del xs, knn
    release_freed_memory()
    local_d = [(a, np.asarray(v, np.float64)) for a, v in _local_rows(dist, n)]
    local_i = [(a, np.asarray(v, np.int64)) for a, v in _local_rows(idx, n)]
    eps = None
    if weighting != "uniform":
        (kth,) = _allgather(n, [(a, (v[:, -1].copy(),)) for a, v in local_d], mesh)
        eps = _eps(kth, weighting)
    parts = []
    for (a, dv), (_, iv) in zip(local_d, local_i, strict=True):
        rows = np.arange(a, a + len(dv))
        parts.append((a, _votes(dv, iv, y, rows, eps, num_classes)))
    self_conf, suggested, margin = _allgather(n, parts, mesh)
    return self_conf, suggested, margin


def label_issues(
    x,
    labels=None,
    *,
    k: int = 10,
    metric: str = "euclidean",
    weighting: str = "distance",
    num_classes: int | None = None,
    block_size: int | None = None,
    progress: bool = True,
    mesh=None,
) -> LabelIssues:
    """Ranks samples by how strongly their ``k`` nearest neighbours disagree with their label.

    Args:
      x: ``[n, d]`` embeddings (floating), or a ``FeatureStore`` (or its path) with one vector per
        sample; indices are then the store's sample ids.
      labels: ``[n]`` int class ids ``>= 0`` (for a store: per sample id, default its labels).
      k: neighbours that vote, ``1 <= k < n`` (the sample itself never votes).
      metric: ``"euclidean"``, ``"sqeuclidean"`` or ``"cosine"``.
      weighting: ``"distance"``: a neighbour at distance ``d`` weighs ``1 / (d + eps)`` with
        ``eps`` 1% of the median k-th neighbour distance (so exact duplicates do not drown the
        others); ``"uniform"``: every neighbour weighs 1.
      num_classes: number of classes (default: ``max(labels) + 1``).
      block_size: queries per block of the kNN (``block_size x n`` temporary distances).
      progress: show a tqdm bar over the kNN's queries when there are more than
        ``32768`` samples (below that the kNN is one call).
      mesh: optional 1-D ``jax.sharding.Mesh``: the kNN runs with the rows sharded over its
        devices, with the same ranking. When the mesh spans several processes each process
        holds (and, from a store, reads) only its own devices' rows: pieces of the rows are
        sent to every device in turn (a few MB each) and each device keeps its own rows' ``k``
        nearest; the votes are counted per process and gathered (``O(n)`` values).

    Returns:
      :class:`LabelIssues`, most likely mislabelled first.
    """
    check_metric(metric)
    block_size = check_block_size(block_size)
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    x, labels, sample_ids = _load(x, labels, mesh)
    sharded = spans_processes(mesh)
    if not sharded:
        x = as_float_matrix(x, "x")
    n = x.num_vectors if hasattr(x, "num_vectors") else x.shape[0]
    y, num_classes = _check_labels(labels, n, num_classes)
    if n < 2:
        raise ValueError(f"label_issues needs at least 2 samples, got n={n}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an int, got {k!r}")
    if not 1 <= k <= n - 1:
        raise ValueError(f"k must be in [1, n - 1] = [1, {n - 1}], got k={k}")
    if sharded:
        self_conf, suggested, margin = _sharded_votes(
            x, n, y, int(k), metric, weighting, num_classes, block_size, mesh
        )
    else:
        dist, idx = _neighbours(x, int(k), metric, block_size, progress, mesh)
        eps = _eps(dist[:, -1], weighting)
        self_conf, suggested, margin = _votes(dist, idx, y, np.arange(n), eps, num_classes)
    score = 1.0 - self_conf
    # highest score first, then largest margin, then lowest index
    order = np.lexsort((np.arange(n), -margin, -score))
    config = {
        "k": int(k),
        "metric": metric,
        "weighting": weighting,
        "num_classes": num_classes,
        "score": "1 - weighted kNN probability of the given label",
    }
    return LabelIssues(
        indices=(order if sample_ids is None else sample_ids[order]).astype(np.int64),
        scores=score[order],
        given=y[order],
        suggested=suggested[order],
        config=config,
    )


# --------------------------------------------------------------------------- near duplicates


@dataclasses.dataclass(frozen=True)
class NearDuplicates:
    """Groups of rows within ``threshold`` of each other (linked through pairs).

    Attributes:
      groups: list of int64 arrays, each sorted, of size >= 2, ordered by their lowest index.
      pairs: ``[p, 2]`` int64, every pair ``(i, j)``, ``i < j``, at distance ``<= threshold``.
      distances: ``[p]`` float64 distance of each pair (the metric's value).
      config: the arguments.
    """

    groups: list
    pairs: np.ndarray
    distances: np.ndarray
    config: dict

    def __len__(self) -> int:
        return len(self.groups)

    def to_drop(self) -> np.ndarray:
        """Every row of a group except its lowest index: what to remove to keep one per group."""
        parts = [g[1:] for g in self.groups]
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)

    def to_json(self) -> dict:
        """JSON-able dict: config, counts, the groups and every pair with its distance."""
        return {
            "config": dict(self.config),
            "num_groups": len(self.groups),
            "num_pairs": len(self.pairs),
            "rows_in_groups": int(sum(len(g) for g in self.groups)),
            "groups": [g.tolist() for g in self.groups],
            "pairs": [
                {"a": int(a), "b": int(b), "distance": float(d)}
                for (a, b), d in zip(self.pairs, self.distances, strict=True)
            ],
        }


def near_duplicates(
    x,
    *,
    threshold: float,
    metric: str = "euclidean",
    block_size: int | None = None,
    max_pairs: int = 10_000_000,
    progress: bool = True,
) -> NearDuplicates:
    """Groups of near-duplicate rows: pairs at distance ``<= threshold``, joined transitively.

    The pairs come from :func:`goldener_jax.kernels.pairs_within`: a pair exactly at the
    threshold is a near duplicate, judged on float64 distances of the input values (cosine:
    ``1 - u.v / sqrt(|u|^2 |v|^2)``).

    Args:
      x: ``[n, d]`` embeddings (floating), or a ``FeatureStore`` (or its path) with one vector per
        sample; indices are then the store's sample ids.
      threshold: largest distance (in the metric's units) of a near-duplicate pair, ``>= 0``;
        ``0`` finds exact duplicates (cosine: same direction).
      metric: ``"euclidean"``, ``"sqeuclidean"`` or ``"cosine"``.
      block_size: rows compared with all rows at once (``block_size x n`` temporary distances).
      max_pairs: refuse to collect more pairs than this (a threshold that is too large would
        otherwise make every pair a near duplicate); the search stops at the first block that
        goes over.
      progress: show a tqdm bar over the rows searched.

    Returns:
      :class:`NearDuplicates` with the groups, the pairs (ordered by ``(i, j)``) and their
      distances.
    """
    check_metric(metric)
    block_size = check_block_size(block_size)
    threshold = check_threshold(threshold)
    x, _, sample_ids = _load(x)
    x = as_float_matrix(x, "x")
    n = x.shape[0]
    config = {"threshold": threshold, "metric": metric, "num_samples": int(n)}
    from tqdm.auto import tqdm

    with tqdm(total=n, desc="near duplicates", unit="row", disable=not progress) as bar:

        def on_block(rows: int, pairs: int) -> None:
            if pairs > max_pairs:
                raise ValueError(
                    f"more than {max_pairs} pairs within threshold={threshold}: lower the "
                    "threshold or raise max_pairs"
                )
            bar.update(rows)

        a, b, dists = gk.pairs_within(
            x, threshold, metric=metric, block_size=block_size, on_block=on_block
        )
    order = np.lexsort((b, a))
    a, b, dists = a[order], b[order], dists[order]
    groups = _groups(n, a, b)
    if sample_ids is not None:  # rows -> sample ids (ascending, as the store's rows are)
        a, b = sample_ids[a], sample_ids[b]
        groups = sorted((np.sort(sample_ids[g]) for g in groups), key=lambda g: int(g[0]))
    return NearDuplicates(groups, np.stack([a, b], 1), dists, config)


def _groups(n: int, a: np.ndarray, b: np.ndarray) -> list:
    """Connected components (union-find) of the pair graph, singletons dropped."""
    if len(a) == 0:
        return []
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    order = np.argsort(comp, kind="stable")  # rows by component, ascending inside each
    sizes = np.bincount(comp)
    groups = np.split(order, np.cumsum(sizes)[:-1])
    groups = [g.astype(np.int64) for g in groups if len(g) >= 2]
    groups.sort(key=lambda g: int(g[0]))
    return groups


# --------------------------------------------------------------------------- leakage


def leakage_pairs(
    x,
    vec_set: np.ndarray,
    vec_sample: np.ndarray,
    threshold: float,
    *,
    metric="euclidean",
    max_pairs: int = 1000,
    block_size: int = 1024,
) -> list[dict]:
    """Pairs of samples in different sets at distance ``<= threshold``: near duplicates that
    leak across a split.

    Each two sets are searched against each other with :func:`goldener_jax.kernels.pairs_within`
    (blocked, ``O(block_size x n)`` memory), so a pair exactly at the threshold is a leak, judged
    on float64 distances. A sample with several vectors counts once per pair of samples, at its
    closest vectors.

    Args:
      x: ``[n, d]`` vectors (floating).
      vec_set: ``[n]`` the set (name) each vector belongs to.
      vec_sample: ``[n]`` the sample id of each vector.
      threshold: largest distance of a leaking pair, ``>= 0``.
      metric: ``"euclidean"``, ``"sqeuclidean"`` or ``"cosine"``.
      max_pairs: the most pairs returned (the closest ones).
      block_size: vectors compared with a whole set at once.

    Returns:
      ``[{"a": sample, "b": sample, "set_a", "set_b", "distance"}]``, each unordered pair of
      samples once, closest first; equal distances are ordered by the pair's vector rows
      ``(lower row, higher row)``, and ``a`` / ``set_a`` belong to the lower row.
    """
    check_metric(metric)
    block_size = check_block_size(block_size)
    threshold = check_threshold(threshold)
    if isinstance(max_pairs, bool) or not isinstance(max_pairs, (int, np.integer)):
        raise TypeError(f"max_pairs must be an int >= 1, got {max_pairs!r}")
    if max_pairs < 1:
        raise ValueError(f"max_pairs must be >= 1, got {max_pairs}")
    x = as_float_matrix(x, "x")
    n = x.shape[0]
    vec_set, vec_sample = np.asarray(vec_set), np.asarray(vec_sample)
    for name, value in (("vec_set", vec_set), ("vec_sample", vec_sample)):
        if value.shape != (n,):
            raise ValueError(f"{name} must have shape [{n}] (one per row of x), got {value.shape}")
    set_names, set_of = np.unique(vec_set, return_inverse=True)
    members = [np.flatnonzero(set_of == s) for s in range(len(set_names))]

    def search(budget: int):
        """Each two sets: their ``budget`` closest pairs (rows of ``x``)."""
        for s in range(len(members)):
            for t in range(s + 1, len(members)):
                i, j, d = gk.pairs_within(
                    x[members[s]], threshold, y=x[members[t]], metric=metric,
                    block_size=block_size, max_pairs=budget,
                )  # fmt: skip
                yield members[s][i], members[t][j], d

    return closest_leaks(search, vec_set, vec_sample, max_pairs)


def closest_leaks(search, vec_set, vec_sample, max_pairs: int, gather=None) -> list[dict]:
    """``leakage_pairs``' result from ``search(budget)``, which yields ``(rows, rows, distances)``
    lists of vector pairs in different sets, each list its ``budget`` closest pairs, closest
    first (a list of ``budget`` pairs is *cut*: pairs at its last distance or more may be
    missing). ``gather`` (optional) combines the lists of every process: it takes and returns
    ``(rows_a, rows_b, distances, cut_at)`` arrays.

    Samples with several vectors can repeat a pair of samples, so a cut list may be short of
    unique pairs after merging: then the search is run again with twice the budget. The merge is
    exact once no cut list could still hold a pair as close as the last one returned."""
    budget = max_pairs
    while True:
        rows_a, rows_b, dists, cut_at = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [], []
        for i, j, d in search(budget):
            rows_a.append(np.minimum(i, j))
            rows_b.append(np.maximum(i, j))
            dists.append(d)
            if len(d) == budget:  # cut: pairs at distances >= d[-1] may be missing
                cut_at.append(d[-1])
        ra, rb = np.concatenate(rows_a), np.concatenate(rows_b)
        d, cut = np.concatenate([np.zeros(0), *dists]), np.asarray(cut_at, np.float64)
        if gather is not None:
            ra, rb, d, cut = gather(ra, rb, d, cut)
        order = np.lexsort((rb, ra, d))
        out, seen = [], set()
        for r, c, dist in zip(ra[order].tolist(), rb[order].tolist(), d[order].tolist(),
                              strict=True):  # fmt: skip
            pair = (int(vec_sample[r]), int(vec_sample[c]))
            # Unordered: rows are ordered by row index, not sample id, so the samples of one
            # pair can come in either order (once kept twice, the second at a farther distance).
            key = (min(pair), max(pair))
            if key in seen or pair[0] == pair[1]:
                continue
            seen.add(key)
            out.append(
                {
                    "a": pair[0],
                    "b": pair[1],
                    "set_a": str(vec_set[r]),
                    "set_b": str(vec_set[c]),
                    "distance": float(dist),
                }
            )
            if len(out) == max_pairs:
                break
        last = out[-1]["distance"] if len(out) == max_pairs else np.inf
        if not cut.size or cut.min() > last:
            return out
        budget *= 2
