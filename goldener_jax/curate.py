"""Curation: samples whose label disagrees with their neighbourhood, and near-duplicate groups.

* ``label_issues``: each labelled sample's ``k`` nearest neighbours (exact, blocked,
  ``kernels.knn``; the sample itself excluded) vote for a class, weighted by ``1 / (distance +
  eps)`` or uniformly. The class probability ``p`` gives the *self-confidence* ``p[given label]``
  and a *suggested label* ``argmax p``. Samples are ranked by the issue score ``1 - p[given]``
  (highest first), then by how far the best other class beats the given one, then by index.
* ``near_duplicates``: every pair of rows at distance ``<= threshold``, found block by block
  (``[block, n]`` distances on the device, only the pairs come back), rechecked exactly in
  float64, then grouped by connected components (union-find): a group is a set of rows linked by
  such pairs.

Both return small dataclasses with ``to_json``.
"""

from __future__ import annotations

import dataclasses
import os
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from goldener_jax import kernels as gk
from goldener_jax.kernels._checks import as_float_matrix, check_block_size, check_metric
from goldener_jax.kernels.distance import auto_block, block_rank_distances, row_aux

__all__ = ["LabelIssues", "NearDuplicates", "label_issues", "near_duplicates"]

WEIGHTINGS = ("distance", "uniform")


def _load(store_or_array, labels=None) -> tuple:
    """``(x, labels, sample_ids)``: a store (or its path) gives its vectors, its labels when
    ``labels`` is None (``labels`` given are per sample id) and the sample id of each vector; an
    array gives itself, ``labels`` and ``None``."""
    from goldener_jax.store import FeatureStore

    if isinstance(store_or_array, (str, os.PathLike)):
        store_or_array = FeatureStore.open(store_or_array)
    if not isinstance(store_or_array, FeatureStore):
        return store_or_array, labels, None
    store = store_or_array
    x, sidx = store.read_vectors()
    sidx = np.asarray(sidx, np.int64)
    if len(np.unique(sidx)) != len(sidx):
        raise ValueError(
            f"curation needs one vector per sample; store {str(store.path)!r} has {len(sidx)} "
            f"vectors for {len(np.unique(sidx))} samples: fuse each sample's rows into one "
            "vector first (e.g. Vectorizer row fusion)"
        )
    if labels is None:
        labels = store.read_labels()
    if labels is not None:
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.shape[0] < int(sidx.max(initial=-1)) + 1:
            raise ValueError(
                f"labels must have one entry per sample id of the store "
                f"({store.num_samples}), got shape {labels.shape}"
            )
        labels = labels[sidx]
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


def label_issues(
    x,
    labels=None,
    *,
    k: int = 10,
    metric: str = "euclidean",
    weighting: str = "distance",
    num_classes: int | None = None,
    block_size: int | None = None,
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

    Returns:
      :class:`LabelIssues`, most likely mislabelled first.
    """
    check_metric(metric)
    block_size = check_block_size(block_size)
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    x, labels, sample_ids = _load(x, labels)
    x = as_float_matrix(x, "x")
    n = x.shape[0]
    y, num_classes = _check_labels(labels, n, num_classes)
    if n < 2:
        raise ValueError(f"label_issues needs at least 2 samples, got n={n}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an int, got {k!r}")
    if not 1 <= k <= n - 1:
        raise ValueError(f"k must be in [1, n - 1] = [1, {n - 1}], got k={k}")
    dist, idx = gk.knn(x, int(k), metric=metric, block_size=block_size)
    dist = np.asarray(dist, np.float64)
    nbr_labels = y[np.asarray(idx)]
    if weighting == "uniform":
        weights = np.ones_like(dist)
    else:
        scale = float(np.median(dist[:, -1]))
        eps = 0.01 * scale if scale > 0 else 1e-12
        weights = 1.0 / (dist + eps)

    self_conf = np.empty(n)
    suggested = np.empty(n, np.int64)
    margin = np.empty(n)
    chunk = max(1, (1 << 22) // max(1, num_classes))
    for start in range(0, n, chunk):
        rows = np.arange(start, min(n, start + chunk))
        p = _class_probabilities(nbr_labels, weights, num_classes, rows)
        given = p[np.arange(len(rows)), y[rows]]
        self_conf[rows] = given
        suggested[rows] = np.argmax(p, axis=1)
        p[np.arange(len(rows)), y[rows]] = -np.inf
        margin[rows] = p.max(axis=1) - given if num_classes > 1 else -given
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


# Relative slack of the candidate filter: the block form's rounding is far below it, and every
# candidate is rechecked exactly, so slack only costs rechecks.
_SLACK = 2.0**-14


@partial(jax.jit, static_argnames=("block", "cap", "metric"))
def _candidate_pairs(x, aux, start, fresh_from, limit, *, block, cap, metric):
    """Pairs ``(i, j)``, ``i`` in the block, ``j > i``, with rank distance ``<= limit`` (within
    rounding slack): ``(count, rows [cap], cols [cap])``, padded with -1."""
    n = x.shape[0]
    rows = jax.lax.dynamic_slice_in_dim(x, start, block)
    raux = jax.lax.dynamic_slice_in_dim(aux, start, block)
    d = block_rank_distances(rows, raux, x, aux, metric)
    if metric == "cosine":
        slack = _SLACK
    else:
        slack = _SLACK * (raux[:, None] + aux[None, :])
    row_ids = start + jnp.arange(block)
    cols = jnp.arange(n)
    mask = (d <= limit + slack) & (cols[None, :] > row_ids[:, None])
    mask &= (row_ids >= fresh_from)[:, None]
    count = jnp.sum(mask, dtype=jnp.int32)
    r, c = jnp.nonzero(mask, size=cap, fill_value=-1)
    return count, jnp.where(r >= 0, r + start, -1), c


def _exact_distances(x: np.ndarray, a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """float64 distances of the pairs ``(a, b)`` computed elementwise (duplicates give 0)."""
    out = np.empty(len(a))
    step = max(1, (1 << 22) // max(1, x.shape[1]))
    for s in range(0, len(a), step):
        u = x[a[s : s + step]].astype(np.float64)
        v = x[b[s : s + step]].astype(np.float64)
        if metric == "cosine":
            nu = np.linalg.norm(u, axis=1, keepdims=True)
            nv = np.linalg.norm(v, axis=1, keepdims=True)
            zero = (nu[:, 0] == 0) | (nv[:, 0] == 0)
            u = u / np.where(nu > 0, nu, 1)
            v = v / np.where(nv > 0, nv, 1)
            # 1 - cos = |u - v|^2 / 2 for unit rows, exact 0 for equal directions
            out[s : s + step] = np.where(zero, 1.0, 0.5 * ((u - v) ** 2).sum(1))
        else:
            sq = ((u - v) ** 2).sum(1)
            out[s : s + step] = np.sqrt(sq) if metric == "euclidean" else sq
    return out


def near_duplicates(
    x,
    *,
    threshold: float,
    metric: str = "euclidean",
    block_size: int | None = None,
    max_pairs: int = 10_000_000,
) -> NearDuplicates:
    """Groups of near-duplicate rows: pairs at distance ``<= threshold``, joined transitively.

    Args:
      x: ``[n, d]`` embeddings (floating), or a ``FeatureStore`` (or its path) with one vector per
        sample; indices are then the store's sample ids.
      threshold: largest distance (in the metric's units) of a near-duplicate pair, ``>= 0``;
        ``0`` finds exact duplicates (cosine: same direction).
      metric: ``"euclidean"``, ``"sqeuclidean"`` or ``"cosine"``.
      block_size: rows compared with all rows at once (``block_size x n`` temporary distances).
      max_pairs: refuse to collect more pairs than this (a threshold that is too large would
        otherwise make every pair a near duplicate).

    Returns:
      :class:`NearDuplicates` with the groups, the pairs and their distances.
    """
    check_metric(metric)
    block_size = check_block_size(block_size)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)):
        raise TypeError(f"threshold must be a number, got {threshold!r}")
    threshold = float(threshold)
    if not (np.isfinite(threshold) and threshold >= 0):
        raise ValueError(f"threshold must be a finite distance >= 0, got {threshold}")
    x, _, sample_ids = _load(x)
    x = as_float_matrix(x, "x")
    host = np.asarray(x)
    n = x.shape[0]
    config = {"threshold": threshold, "metric": metric, "num_samples": int(n)}
    if n < 2:
        empty = np.zeros((0, 2), np.int64)
        return NearDuplicates([], empty, np.zeros(0), config)
    if jnp.dtype(x.dtype).itemsize < 4:
        x = x.astype(jnp.float32)  # 16-bit rounding would exceed the candidate filter's slack
    if metric == "cosine":
        limit = threshold
        xs = x
    else:
        limit = threshold**2 if metric == "euclidean" else threshold
        # distances do not move with the origin; centring keeps the norms (and rounding) small
        xs = x - jnp.mean(x.astype(jnp.float32), axis=0).astype(x.dtype)
    aux = row_aux(xs, "cosine" if metric == "cosine" else "euclidean")
    rank_metric = "cosine" if metric == "cosine" else "sqeuclidean"
    block = auto_block(n, n, block_size)
    cap = 1024
    found_a, found_b, found_d = [], [], []
    total = 0
    for fresh_from in range(0, n, block):
        start = min(fresh_from, n - block)
        while True:
            count, r, c = _candidate_pairs(
                xs, aux, start, fresh_from, limit, block=block, cap=cap, metric=rank_metric
            )
            count = int(count)
            if count <= cap:
                break
            cap = 1 << int(np.ceil(np.log2(count)))
        total += count
        if total > 4 * max_pairs:  # candidates; at most a rounding margin above the pairs
            raise ValueError(f"more than {max_pairs} pairs within threshold={threshold}: "
                             "lower the threshold or raise max_pairs")  # fmt: skip
        r, c = np.asarray(r)[:count], np.asarray(c)[:count]
        d = _exact_distances(host, r, c, metric)
        keep = d <= threshold
        found_a.append(r[keep])
        found_b.append(c[keep])
        found_d.append(d[keep])
    a = np.concatenate(found_a).astype(np.int64)
    b = np.concatenate(found_b).astype(np.int64)
    if len(a) > max_pairs:
        raise ValueError(
            f"{len(a)} pairs within threshold={threshold} exceed max_pairs={max_pairs}: "
            "lower the threshold or raise max_pairs"
        )
    order = np.lexsort((b, a))
    a, b, dists = a[order], b[order], np.concatenate(found_d)[order]
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
