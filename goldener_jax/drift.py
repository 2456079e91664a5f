"""Has new data drifted from the reference, where, and which new samples to label.

``drift(reference, new, key=...)`` compares two sets of vectors (arrays ``[n, d]`` or feature
stores) in three ways and returns a :class:`DriftReport`:

1. **Two-sample tests.** The squared MMD with an RBF kernel ``exp(-|a - b|^2 / (2 s^2))`` (``s``:
   the median pairwise distance of the pooled rows, ``kernels.median_length_scale``) and the
   energy distance ``2 E|x - y| - E|x - x'| - E|y - y'|``, both as V-statistics (all pairs, the
   diagonal included). Each gets a permutation p-value: the pooled rows are relabelled
   ``num_permutations`` times, ``p = (1 + #{permuted statistic >= observed}) / (1 +
   num_permutations)`` (never below ``1 / (1 + num_permutations)``). ``p_value`` combines the two
   by the min-p rule over the same permutations (the share of relabellings, the observed one
   included, whose smaller per-test p-value is at most the observed one): one valid p-value for
   "either statistic is extreme", not a Bonferroni bound.

   Every statistic is a quadratic form ``a^T K a`` in a weight vector ``a`` (``1/m`` on the
   reference rows, ``-1/n`` on the new ones; a permutation shuffles ``a``), so all the
   permutations are evaluated in one blocked pass over the pairs: a ``[block, N]`` block of the
   kernel and distance matrices times the ``[N, P + 1]`` weights, inside one jit-compiled loop.
   No ``N x N`` matrix exists. The work is ``O(N^2 (d + P))``, so each side is first subsampled,
   with the key, to at most ``max_samples`` rows (2,000 by default: a few seconds on a CPU).

2. **Coverage.** The reference (at most ``max_reference`` rows, subsampled with the key) covers
   a new sample when the sample is not farther from its nearest reference row than reference
   rows usually are from theirs. Precisely: ``r_i`` is the distance from reference row ``i`` to
   its nearest *other* reference row (``kernels.knn``, exact); the coverage radius ``R`` is the
   ``coverage_quantile`` quantile of the ``r_i`` (0.95: the smallest ``r_i`` that at least 95 %
   of them do not exceed). For each new sample ``q_j`` is its distance to the nearest reference
   row; ``outside_share`` is the share of new samples with ``q_j > R``. Without drift it is about
   ``1 - coverage_quantile`` (``reference_outside_share`` gives the reference's own share);
   new data far from everything seen pushes it towards 1.

3. **Where.** k-means (``n_clusters``) on the reference rows of step 2; every new sample goes to
   its nearest centroid. Per cluster: reference and new counts and shares, ``ratio = new share /
   reference share`` and the share of the cluster's new samples outside coverage. Clusters are
   ranked by ratio (highest first): the top ones are where the new data concentrates.

With ``metric="cosine"`` the rows are scaled to unit length first (then the Euclidean distance
``sqrt(2 (1 - cos))`` orders pairs as the cosine distance does); the coverage distances are
cosine distances.

``monitoring_selection(reference, new, size, key=...)`` picks the new samples most worth labelling
to watch a deployed model: typicality-weighted greedy k-center over the new rows
(``kernels.typical_kcenter``) with the labelled reference rows as anchors:

    pick  argmax_j  w_j * min(distance to the labelled rows, distance to the picks so far)

with ``w_j = (typ_j / max typ) ** power`` and ``typ_j`` the inverse mean distance from new row
``j`` to its ``num_neighbors`` nearest other *new* rows. The distance term is far from what is
labelled; the weight makes it representative of what is new (a lone outlier has a low weight, a
dense new mode a high one).

A store with several vectors per sample (``rows_per_sample > 1``) is reduced to one vector per
sample, the mean of that sample's valid rows; results are indexed by the store's sample ids.
"""

from __future__ import annotations

import dataclasses
import json
import os
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from goldener_jax import kernels as gk
from goldener_jax._keys import as_key

__all__ = ["DriftCluster", "DriftReport", "drift", "monitoring_selection"]

DRIFT_METRICS = ("euclidean", "cosine")
# [block, N] temporaries of the permutation pass hold at most this many values.
_BLOCK_VALUES = 1 << 22


# ---------------------------------------------------------------------------------------------
# inputs


def _per_sample(x: np.ndarray, sidx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids, inverse = np.unique(sidx, return_inverse=True)
    if ids.shape[0] == x.shape[0]:
        order = np.argsort(sidx, kind="stable")
        return x[order], ids
    sums = np.zeros((ids.shape[0], x.shape[1]), np.float64)
    np.add.at(sums, inverse, x.astype(np.float64))
    counts = np.bincount(inverse, minlength=ids.shape[0])[:, None]
    return (sums / counts).astype(np.float32), ids


def _load(obj, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(vectors [n, d] float32, sample ids [n])`` from an array, a store or a store's path."""
    from goldener_jax.store import FeatureStore

    if isinstance(obj, (str, os.PathLike)):
        obj = FeatureStore.open(obj)
    if isinstance(obj, FeatureStore):
        x, sidx = obj.read_vectors()
        x, ids = _per_sample(np.asarray(x), np.asarray(sidx, np.int64))
    else:
        if not hasattr(obj, "shape"):
            try:
                obj = np.asarray(obj)
            except Exception as e:  # ragged lists and the like
                raise TypeError(f"{name} must be an array [n, d] or a FeatureStore: {e}") from e
        x = np.asarray(obj)
        ids = np.arange(x.shape[0] if x.ndim else 0, dtype=np.int64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D [n, d], got shape {tuple(x.shape)}")
    if not (jnp.issubdtype(x.dtype, jnp.floating) or np.issubdtype(x.dtype, np.integer)):
        raise TypeError(f"{name} must hold numbers, got dtype {x.dtype}")
    x = x.astype(np.float32)
    if x.shape[0] < 2:
        raise ValueError(f"{name} must have at least 2 rows, got {x.shape[0]}")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise ValueError(
            f"{name} has {int(bad.sum())} rows with NaN or Inf (first: row {int(np.argmax(bad))})"
        )
    return x, ids


def _check_int(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def _check_metric(metric) -> None:
    if metric not in DRIFT_METRICS:
        raise ValueError(f"metric must be one of {DRIFT_METRICS}, got {metric!r}")


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norm > 0, x / np.maximum(norm, 1e-30), x)


def _subsample(x: np.ndarray, limit: int, key) -> np.ndarray:
    """Row indices: all rows when ``n <= limit``, else ``limit`` of them drawn with ``key``,
    in increasing order."""
    n = x.shape[0]
    if n <= limit:
        return np.arange(n)
    return np.sort(np.asarray(jax.random.permutation(key, n))[:limit])


# ---------------------------------------------------------------------------------------------
# the permutation tests


@partial(jax.jit, static_argnames=("m", "num_permutations", "block"))
def _permutation_stats(z, key, scale, *, m, num_permutations, block):
    """``(mmd2 [P + 1], energy [P + 1])``: entry 0 for the given split (rows ``< m`` reference),
    the others for ``num_permutations`` random relabellings of the pooled rows ``z``."""
    total = z.shape[0]
    n_new = total - m
    base = jnp.where(jnp.arange(total) < m, 1.0 / m, -1.0 / n_new).astype(jnp.float32)
    keys = jax.random.split(key, num_permutations)
    perms = jax.vmap(lambda k: jax.random.permutation(k, total))(keys)
    shuffled = jax.vmap(lambda p: jnp.zeros(total, jnp.float32).at[p].set(base))(perms)
    weights = jnp.concatenate([base[None], shuffled])  # [P + 1, total]
    num_blocks = -(-total // block)
    pad = num_blocks * block - total
    # Centred rows: the squared distances then cancel at the scale of the spread, not the offset.
    zc = z - jnp.mean(z, axis=0)
    zp = jnp.pad(zc, ((0, pad), (0, 0)))
    wp = jnp.pad(weights, ((0, 0), (0, pad)))  # padding rows weigh 0 on both sides
    sq_norm = jnp.sum(zp * zp, axis=1)
    ids = jnp.arange(num_blocks * block)
    hi = jax.lax.Precision.HIGHEST

    def body(b, acc):
        mmd_acc, energy_acc = acc
        start = b * block
        rows = jax.lax.dynamic_slice_in_dim(zp, start, block)
        row_sq = jax.lax.dynamic_slice_in_dim(sq_norm, start, block)
        row_ids = jax.lax.dynamic_slice_in_dim(ids, start, block)
        sq = row_sq[:, None] + sq_norm[None, :] - 2.0 * jnp.dot(rows, zp.T, precision=hi)
        # A row's distance to itself is exactly 0 (the formula leaves rounding there).
        sq = jnp.where(row_ids[:, None] == ids[None, :], 0.0, jnp.maximum(sq, 0.0))
        w_rows = jax.lax.dynamic_slice_in_dim(wp, start, block, axis=1)  # [P + 1, block]
        rbf = jnp.exp(-sq / (2.0 * scale * scale))
        dist = jnp.sqrt(sq)
        mmd_acc += jnp.sum(w_rows * jnp.dot(wp, rbf.T, precision=hi), axis=1)
        energy_acc -= jnp.sum(w_rows * jnp.dot(wp, dist.T, precision=hi), axis=1)
        return mmd_acc, energy_acc

    zeros = jnp.zeros(num_permutations + 1, jnp.float32)
    return jax.lax.fori_loop(0, num_blocks, body, (zeros, zeros))


def _p_values(stats: np.ndarray) -> np.ndarray:
    """Permutation p-value of every entry among all of them (``>=``, the entry itself counts)."""
    stats = np.asarray(stats, np.float64)
    order = np.sort(stats)
    at_least = stats.shape[0] - np.searchsorted(order, stats, side="left")
    return at_least / stats.shape[0]


# ---------------------------------------------------------------------------------------------
# the report


@dataclasses.dataclass(frozen=True)
class DriftCluster:
    """One k-means cell of the reference and the new samples it received."""

    cluster: int
    reference_count: int
    new_count: int
    reference_share: float
    new_share: float
    ratio: float  # new share / reference share; inf when the reference share is 0
    outside_share: float  # share of this cell's new samples outside the coverage radius


@dataclasses.dataclass(frozen=True)
class DriftReport:
    """Result of :func:`drift`. Arrays are per new sample unless said otherwise.

    Attributes:
      p_value: min-p combination of the two permutation tests (small: drift).
      mmd, mmd_p_value: squared RBF MMD (V-statistic) and its permutation p-value.
      energy_distance, energy_p_value: energy distance (V-statistic) and its p-value.
      length_scale: RBF length scale used.
      num_permutations: relabellings drawn.
      reference_size, new_size: samples given; ``tested_reference`` / ``tested_new``: rows in
        the permutation tests after subsampling.
      coverage_radius: ``coverage_quantile`` quantile of the reference's nearest-other-row
        distances.
      outside_share: share of new samples farther than ``coverage_radius`` from the reference;
        ``reference_outside_share``: the same share among the reference rows (about ``1 -
        coverage_quantile``).
      new_nearest: float32 ``[new_size]`` distance of each new sample to its nearest reference
        row; ``reference_nearest``: float32 ``[coverage_rows]`` each reference row's distance
        to its nearest other one.
      new_cluster: int32 ``[new_size]`` k-means cell of each new sample.
      new_ids: int64 ``[new_size]`` sample id of each new row (row number for an array).
      clusters: :class:`DriftCluster` per cell, highest ratio first.
      config: the arguments (JSON-able).
    """

    p_value: float
    mmd: float
    mmd_p_value: float
    energy_distance: float
    energy_p_value: float
    length_scale: float
    num_permutations: int
    reference_size: int
    new_size: int
    tested_reference: int
    tested_new: int
    coverage_radius: float
    coverage_quantile: float
    outside_share: float
    reference_outside_share: float
    new_nearest: np.ndarray
    reference_nearest: np.ndarray
    new_cluster: np.ndarray
    new_ids: np.ndarray
    clusters: list
    config: dict

    def drifted(self, alpha: float = 0.05) -> bool:
        """Whether the combined test rejects "same distribution" at level ``alpha``."""
        return self.p_value < alpha

    def to_dict(self) -> dict:
        """The scalars and the per-cluster table (no per-sample arrays), JSON-able."""
        out = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if not isinstance(getattr(self, f.name), np.ndarray) and f.name != "clusters"
        }
        out["clusters"] = [
            {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in c.items()}
            for c in (dataclasses.asdict(c) for c in self.clusters)
        ]
        return out

    def to_json(self, path=None) -> str:
        """JSON text of :meth:`to_dict` (an infinite ratio is written ``null``); also written
        to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        if path is not None:
            with open(path, "w") as f:
                f.write(text + "\n")
        return text

    def plot(self, path) -> None:
        """Writes a PNG: left, histograms of nearest-reference distances (reference rows vs new
        samples) with the coverage radius; right, reference vs new share per cluster, ranked by
        ratio. The title says whether the test flags drift."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
        both = np.concatenate([self.reference_nearest, self.new_nearest])
        bins = np.linspace(0.0, float(both.max()) * 1.02 + 1e-12, 40)
        left.hist(
            self.reference_nearest,
            bins=bins,
            density=True,
            alpha=0.55,
            label="reference: nearest other reference row",
            color="tab:blue",
        )
        left.hist(
            self.new_nearest,
            bins=bins,
            density=True,
            alpha=0.55,
            label="new: nearest reference row",
            color="tab:orange",
        )
        left.axvline(
            self.coverage_radius,
            color="k",
            ls="--",
            label=f"coverage radius (q={self.coverage_quantile:g})",
        )
        left.set_xlabel(f"distance ({self.config['metric']})")
        left.set_ylabel("density")
        left.set_title(
            f"{100 * self.outside_share:.1f}% of new samples outside coverage "
            f"(reference: {100 * self.reference_outside_share:.1f}%)"
        )
        left.legend(fontsize=8)
        ids = [c.cluster for c in self.clusters]
        pos = np.arange(len(ids))
        right.bar(
            pos - 0.2,
            [c.reference_share for c in self.clusters],
            0.4,
            label="reference",
            color="tab:blue",
        )
        right.bar(
            pos + 0.2, [c.new_share for c in self.clusters], 0.4, label="new", color="tab:orange"
        )
        for i, c in zip(pos, self.clusters, strict=True):
            top = max(c.reference_share, c.new_share)
            text = "new only" if not np.isfinite(c.ratio) else f"x{c.ratio:.1f}"
            right.text(i, top, text, ha="center", va="bottom", fontsize=8)
        right.set_xticks(pos, [str(i) for i in ids])
        right.set_xlabel("cluster (k-means on the reference), highest new/reference ratio first")
        right.set_ylabel("share of samples")
        right.set_title("where the new data goes")
        right.legend(fontsize=8)
        verdict = "DRIFT" if self.drifted(0.05) else "no drift detected"
        fig.suptitle(
            f"{verdict}: p = {self.p_value:.3g} (MMD p = {self.mmd_p_value:.3g}, "
            f"energy p = {self.energy_p_value:.3g}, {self.num_permutations} permutations)",
            fontsize=12,
            fontweight="bold",
            color="tab:red" if self.drifted(0.05) else "black",
        )
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)


def drift(
    reference,
    new,
    *,
    key,
    num_permutations: int = 200,
    metric: str = "euclidean",
    length_scale: float | None = None,
    max_samples: int = 2000,
    max_reference: int = 20_000,
    coverage_quantile: float = 0.95,
    n_clusters: int = 8,
) -> DriftReport:
    """Compares ``new`` samples with ``reference`` ones (see the module docstring for every
    definition).

    Args:
      reference: array ``[m, d]``, a :class:`~goldener_jax.FeatureStore` or its path.
      new: array ``[n, d]``, a store or its path (same ``d``).
      key: a ``jax.random.key``: subsamples, permutations, k-means seeds. Same key, same report.
      num_permutations: relabellings of the permutation tests, ``>= 1`` (the smallest p-value
        is ``1 / (1 + num_permutations)``).
      metric: ``"euclidean"`` or ``"cosine"``.
      length_scale: RBF length scale; ``None``: the median pairwise distance of the pooled rows.
      max_samples: rows per side in the permutation tests (subsampled with ``key`` beyond).
      max_reference: reference rows for the coverage radius and the clusters.
      coverage_quantile: quantile of the reference's nearest-other-row distances that defines
        the coverage radius, in ``(0, 1]``.
      n_clusters: k-means cells of the reference (at most the reference rows).

    Returns:
      A :class:`DriftReport`.
    """
    key = as_key(key)
    _check_metric(metric)
    num_permutations = _check_int(num_permutations, "num_permutations", 1)
    max_samples = _check_int(max_samples, "max_samples", 2)
    max_reference = _check_int(max_reference, "max_reference", 2)
    n_clusters = _check_int(n_clusters, "n_clusters", 1)
    if isinstance(coverage_quantile, bool) or not 0.0 < float(coverage_quantile) <= 1.0:
        raise ValueError(f"coverage_quantile must be in (0, 1], got {coverage_quantile!r}")
    if length_scale is not None and not float(length_scale) > 0:
        raise ValueError(f"length_scale must be > 0 or None, got {length_scale!r}")
    ref, _ = _load(reference, "reference")
    nx, new_ids = _load(new, "new")
    if ref.shape[1] != nx.shape[1]:
        raise ValueError(
            f"reference and new must have the same width, got {ref.shape[1]} and {nx.shape[1]}"
        )
    k_ref, k_new, k_perm, k_cov, k_km = jax.random.split(key, 5)
    ref_t = _unit_rows(ref) if metric == "cosine" else ref
    new_t = _unit_rows(nx) if metric == "cosine" else nx

    # 1. permutation tests on at most max_samples rows per side
    ref_s = ref_t[_subsample(ref_t, max_samples, k_ref)]
    new_s = new_t[_subsample(new_t, max_samples, k_new)]
    pooled = np.concatenate([ref_s, new_s])
    scale = gk.median_length_scale(pooled) if length_scale is None else float(length_scale)
    block = max(8, min(pooled.shape[0], _BLOCK_VALUES // pooled.shape[0]))
    mmd_stats, energy_stats = _permutation_stats(
        jnp.asarray(pooled),
        k_perm,
        jnp.float32(scale),
        m=ref_s.shape[0],
        num_permutations=num_permutations,
        block=block,
    )
    mmd_stats, energy_stats = np.asarray(mmd_stats), np.asarray(energy_stats)
    p_mmd, p_energy = _p_values(mmd_stats), _p_values(energy_stats)
    smaller = np.minimum(p_mmd, p_energy)
    p_value = float(np.count_nonzero(smaller <= smaller[0]) / smaller.shape[0])

    # 2. coverage
    ref_c = ref[_subsample(ref, max_reference, k_cov)]
    ref_near = np.asarray(gk.knn(ref_c, 1, metric=metric)[0][:, 0], np.float32)
    new_near = np.asarray(gk.knn(ref_c, 1, queries=nx, metric=metric)[0][:, 0], np.float32)
    radius = float(np.quantile(ref_near, float(coverage_quantile), method="higher"))
    outside = new_near > radius

    # 3. clusters of the reference, and where the new samples fall
    ref_ct = _unit_rows(ref_c) if metric == "cosine" else ref_c
    k = min(n_clusters, ref_ct.shape[0])
    centroids, ref_assign = gk.kmeans(ref_ct, k, k_km)
    new_assign = np.asarray(gk.kmeans_assign(new_t, centroids), np.int32)
    ref_counts = np.bincount(np.asarray(ref_assign), minlength=k)
    new_counts = np.bincount(new_assign, minlength=k)
    clusters = []
    for c in range(k):
        r_share = ref_counts[c] / ref_counts.sum()
        n_share = new_counts[c] / new_counts.sum()
        ratio = n_share / r_share if r_share > 0 else (np.inf if n_share > 0 else 0.0)
        in_c = new_assign == c
        clusters.append(
            DriftCluster(
                cluster=c,
                reference_count=int(ref_counts[c]),
                new_count=int(new_counts[c]),
                reference_share=float(r_share),
                new_share=float(n_share),
                ratio=float(ratio),
                outside_share=float(outside[in_c].mean()) if in_c.any() else 0.0,
            )
        )
    clusters.sort(key=lambda c: (-c.ratio, c.cluster))
    config = {
        "num_permutations": num_permutations,
        "metric": metric,
        "length_scale": length_scale,
        "max_samples": max_samples,
        "max_reference": max_reference,
        "coverage_quantile": float(coverage_quantile),
        "n_clusters": k,  # at most the reference rows
        "n_clusters_requested": n_clusters,
        "key": np.asarray(jax.random.key_data(key)).tolist(),
    }
    return DriftReport(
        p_value=p_value,
        mmd=max(float(mmd_stats[0]), 0.0),
        mmd_p_value=float(p_mmd[0]),
        energy_distance=max(float(energy_stats[0]), 0.0),
        energy_p_value=float(p_energy[0]),
        length_scale=float(scale),
        num_permutations=num_permutations,
        reference_size=int(ref.shape[0]),
        new_size=int(nx.shape[0]),
        tested_reference=int(ref_s.shape[0]),
        tested_new=int(new_s.shape[0]),
        coverage_radius=radius,
        coverage_quantile=float(coverage_quantile),
        outside_share=float(outside.mean()),
        reference_outside_share=float((ref_near > radius).mean()),
        new_nearest=new_near,
        reference_nearest=ref_near,
        new_cluster=new_assign,
        new_ids=new_ids,
        clusters=clusters,
        config=config,
    )


# ---------------------------------------------------------------------------------------------
# monitoring selection


def monitoring_selection(
    reference,
    new,
    size,
    *,
    key,
    labelled=None,
    metric: str = "euclidean",
    num_neighbors: int = 20,
    power: float = 1.0,
    max_anchors: int | None = None,
) -> np.ndarray:
    """The new samples most worth labelling: far from what is labelled, typical of what is new.

    Typicality-weighted greedy k-center over the new rows, the labelled reference rows as
    anchors (the rule is in the module docstring).

    Args:
      reference: array ``[m, d]``, a store or its path: the data the model knows.
      new: array ``[n, d]``, a store or its path: the new data to choose from.
      size: an int in ``[1, n]`` or a float in ``(0, 1]`` (``ceil(size x n)``).
      key: a ``jax.random.key``; used only to subsample the anchors beyond ``max_anchors``
        (the rule itself is deterministic, ties to the lowest index).
      labelled: which reference samples are labelled: int indices (rows of an array, sample ids
        of a store) or a boolean mask ``[m]``. ``None``: every reference sample; an empty list:
        none (then the first pick is the most typical new sample).
      metric: ``"euclidean"`` or ``"cosine"`` (rows scaled to unit length first).
      num_neighbors: neighbours of the typicality (at most ``n - 1``).
      power: exponent of the relative typicality (0: plain k-center from the anchors).
      max_anchors: at most this many anchors (drawn with ``key``); ``None``: all of them.

    Returns:
      int64 ``[size]``: indices of new samples (row numbers of an array, sample ids of a store),
      in pick order.
    """
    key = as_key(key)
    _check_metric(metric)
    ref, ref_ids = _load(reference, "reference")
    nx, new_ids = _load(new, "new")
    if ref.shape[1] != nx.shape[1]:
        raise ValueError(
            f"reference and new must have the same width, got {ref.shape[1]} and {nx.shape[1]}"
        )
    n = nx.shape[0]
    if isinstance(size, bool) or not isinstance(size, (int, float, np.integer, np.floating)):
        raise TypeError(f"size must be an int in [1, {n}] or a float in (0, 1], got {size!r}")
    if isinstance(size, (float, np.floating)):
        if not 0.0 < size <= 1.0:
            raise ValueError(f"size as a float must be in (0, 1], got {size}")
        size = int(np.ceil(size * n))
    size = int(size)
    if not 1 <= size <= n:
        raise ValueError(f"size must be in [1, {n}] (new samples), got {size}")
    num_neighbors = _check_int(num_neighbors, "num_neighbors", 1)
    if isinstance(power, bool) or not isinstance(power, (int, float)) or not 0 <= power < np.inf:
        raise ValueError(f"power must be a finite float >= 0, got {power!r}")
    if labelled is None:
        rows = np.arange(ref.shape[0])
    else:
        lab = np.asarray(labelled)
        if lab.dtype == bool:
            if lab.shape != (ref.shape[0],):
                raise ValueError(
                    f"labelled as a mask must have shape [{ref.shape[0]}], got {lab.shape}"
                )
            rows = np.flatnonzero(lab)
        elif lab.size == 0:
            rows = np.zeros(0, np.int64)
        elif lab.ndim == 1 and np.issubdtype(lab.dtype, np.integer):
            pos = np.searchsorted(ref_ids, lab)
            ok = (pos < ref_ids.shape[0]) & (ref_ids[np.minimum(pos, ref_ids.shape[0] - 1)] == lab)
            if not ok.all():
                raise ValueError(
                    f"labelled holds {int((~ok).sum())} ids that are not reference samples "
                    f"(first: {int(lab[~ok][0])}); expected ids in the reference's sample ids"
                )
            rows = np.unique(pos)
        else:
            raise TypeError(
                f"labelled must be None, 1-D int indices or a bool mask, got {lab.dtype} "
                f"{lab.shape}"
            )
    if max_anchors is not None:
        max_anchors = _check_int(max_anchors, "max_anchors", 1)
        if rows.shape[0] > max_anchors:
            rows = rows[
                np.sort(np.asarray(jax.random.permutation(key, rows.shape[0]))[:max_anchors])
            ]
    x = _unit_rows(nx) if metric == "cosine" else nx
    anchors = None
    if rows.shape[0]:
        anchors = (_unit_rows(ref) if metric == "cosine" else ref)[rows]
    picked = gk.typical_kcenter(
        x, size, anchors=anchors, num_neighbors=min(num_neighbors, n - 1), power=float(power)
    )
    return new_ids[np.asarray(picked)]
