"""Clusters with globally consistent ids: k-means fitted once, every row assigned by blocks.

``cluster`` fits k-means (``kernels.kmeans``, k-means++ seeds from ``key``) on all rows, or on a
seeded sample of ``fit_size`` rows for large sets, then assigns *every* row to its nearest
centroid (``kernels.kmeans_assign``, ties to the lowest id) chunk by chunk. A row's id depends
only on the centroids and the row, so ids agree across chunk sizes, resumes and device counts
(up to rounding of a point within float32 error of a boundary, see ``kernels.kmeans``).

Resumable with ``checkpoint_dir``: the config, then the centroids, then each chunk's ids are
written atomically (temporary file + rename); a rerun reuses the centroids and assigns only the
chunks not written yet. A directory written with another config is refused unless
``overwrite=True``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from goldener_jax import kernels as gk
from goldener_jax.refine.data import check_int, key_words, load_vectors

__all__ = ["Clusters", "cluster"]


@dataclasses.dataclass(frozen=True)
class Clusters:
    """A clustering of every sample.

    Attributes:
      assignment: int32 ``[n]`` cluster id of each row (rows in sample order).
      centroids: float32 ``[n_clusters, d]`` (``[labels * n_clusters, d]`` per label).
      sizes: int64 rows per cluster, one entry per centroid.
      inertia: sum over rows of the squared distance to their centroid (float64).
      sample_ids: ``[n]`` sample id of each row (a store), or ``None`` (an array: ids are rows).
      config: the arguments.
    """

    assignment: np.ndarray
    centroids: np.ndarray
    sizes: np.ndarray
    inertia: float
    sample_ids: np.ndarray | None
    config: dict

    @property
    def num_clusters(self) -> int:
        return len(self.sizes)

    def members(self, c: int) -> np.ndarray:
        """Sample indices of cluster ``c``, increasing."""
        rows = np.flatnonzero(self.assignment == c)
        return rows if self.sample_ids is None else self.sample_ids[rows]

    def to_json(self) -> dict:
        """The manifest: config, sizes and inertia (not the per-sample ids)."""
        return {
            "config": dict(self.config),
            "num_samples": int(len(self.assignment)),
            "num_clusters": self.num_clusters,
            "sizes": self.sizes.tolist(),
            "inertia": float(self.inertia),
        }


def _write_atomic(path: str, save) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        save(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _data_digest(x: np.ndarray) -> str:
    """Hash of a strided sample of rows plus the shape: enough to refuse another data set."""
    step = max(1, x.shape[0] // 1024)
    h = hashlib.sha256(np.ascontiguousarray(np.asarray(x[::step], np.float32)).tobytes())
    h.update(str(x.shape).encode())
    return h.hexdigest()[:16]


def cluster(
    x,
    n_clusters: int,
    *,
    key,
    fit_size: int | None = None,
    num_iters: int = 100,
    chunk_size: int = 1 << 16,
    block_size: int | None = None,
    mesh=None,
    checkpoint_dir=None,
    overwrite: bool = False,
    per_label: bool = False,
    labels=None,
    progress: bool = True,
    fit: str = "lloyd",
    batch_size: int = 4096,
    num_epochs: int = 3,
) -> Clusters:
    """Clusters every sample with k-means; ids are consistent over the whole set.

    Args:
      x: ``[n, d]`` embeddings, or a ``FeatureStore`` (or its path) with one vector per sample.
      n_clusters: ``1 <= n_clusters <= n`` (``<= fit_size`` when sampling).
      key: a ``jax.random.key``: the k-means++ seeds and the fit sample.
      fit_size: fit the centroids on this many rows drawn without replacement (``None``: all).
      num_iters: at most this many Lloyd iterations.
      chunk_size: rows assigned per call (and per checkpointed chunk).
      block_size: passed to the k-means kernels.
      mesh: passed to the k-means kernels (a mesh shards the rows over devices).
      checkpoint_dir: directory that makes the run resumable (see the module doc).
      overwrite: start afresh in a ``checkpoint_dir`` written with another config.
      per_label: cluster each label's samples apart, ``n_clusters`` per label: label ``j`` (in
        sorted label order) owns ids ``j * n_clusters .. (j + 1) * n_clusters - 1``, fitted with
        ``jax.random.fold_in(key, j)``.
      labels: with ``per_label``: ``[n]`` labels (for a store: per sample id, default the
        store's).
      progress: a tqdm bar over the assigned chunks (when there is more than one).
      fit: ``"lloyd"`` (exact k-means, every fitted row on the device at once) or
        ``"minibatch"`` (``kernels.minibatch_kmeans``: ``batch_size`` rows on the device at a
        time, ``num_epochs`` shuffled passes, greedy k-means++ seeds; for sets whose rows do not
        fit on the device; ``num_iters`` and ``mesh`` do not apply to the fit).
      batch_size: with ``fit="minibatch"``, rows per step.
      num_epochs: with ``fit="minibatch"``, passes over the fitted rows.

    Returns:
      :class:`Clusters`.

    Raises:
      ValueError: ``n_clusters`` < 1 or > the rows fitted on, bad ``fit_size`` / ``chunk_size``,
        a checkpoint of another config. TypeError: ``key`` not a ``jax.random.key``.
    """
    words = key_words(key)
    store_labels = None
    if per_label and labels is None:
        store_labels = _store_labels(x)
    x, sample_ids = load_vectors(x)
    n, d = x.shape
    fit_n = n if fit_size is None else check_int(fit_size, "fit_size", 1, n)
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)):
        raise TypeError(f"n_clusters must be an int, got {n_clusters!r}")
    k = int(n_clusters)
    num_iters = check_int(num_iters, "num_iters", 0)
    chunk_size = check_int(chunk_size, "chunk_size", 1)
    if fit not in ("lloyd", "minibatch"):
        raise ValueError(f"fit must be 'lloyd' or 'minibatch', got {fit!r}")
    batch_size = check_int(batch_size, "batch_size", 1)
    num_epochs = check_int(num_epochs, "num_epochs", 1)
    if per_label:
        group, label_values = _label_groups(
            store_labels if labels is None else labels, sample_ids, n
        )
    else:
        if labels is not None:
            raise ValueError("labels are only used with per_label=True")
        group, label_values = np.zeros(n, np.int64), None
    num_groups = int(group.max()) + 1
    group_rows = [np.flatnonzero(group == j) for j in range(num_groups)]
    fit_sizes = [min(fit_n, len(r)) for r in group_rows]
    smallest = min(fit_sizes)
    if not 1 <= k <= smallest:
        what = "the rows the centroids are fitted on"
        if per_label:
            what += ", in the smallest label"
        raise ValueError(f"n_clusters must be in [1, {smallest}] ({what}), got {n_clusters}")
    config = {
        "n_clusters": k,
        "fit_size": fit_n,
        "num_iters": num_iters,
        "key": words,
        "num_samples": n,
        "dim": d,
        "data": _data_digest(x),
        "per_label": bool(per_label),
    }
    if fit == "minibatch":  # absent for Lloyd: earlier checkpoints keep their config
        config["fit"] = {"method": fit, "batch_size": batch_size, "num_epochs": num_epochs}
    if per_label:
        config["labels"] = [v.item() if hasattr(v, "item") else v for v in label_values]
        config["labels_digest"] = hashlib.sha256(group.tobytes()).hexdigest()[:16]
    centroids = None
    if checkpoint_dir is not None:
        checkpoint_dir = os.fspath(checkpoint_dir)
        os.makedirs(checkpoint_dir, exist_ok=True)
        cfg_path = os.path.join(checkpoint_dir, "config.json")
        if os.path.exists(cfg_path):
            with open(cfg_path) as f:
                old = json.load(f)
            if old != config and not overwrite:
                diff = sorted(name for name in config if old.get(name) != config[name])
                raise ValueError(
                    f"checkpoint_dir {checkpoint_dir!r} holds a clustering with another config "
                    f"(differs in {diff}); pass overwrite=True to start afresh"
                )
            if old != config:
                for name in os.listdir(checkpoint_dir):
                    if name.startswith("chunk_") or name == "centroids.npy":
                        os.remove(os.path.join(checkpoint_dir, name))
        _write_atomic(cfg_path, lambda f: f.write(json.dumps(config, indent=1).encode()))
        cpath = os.path.join(checkpoint_dir, "centroids.npy")
        if os.path.exists(cpath):
            centroids = np.load(cpath)
    if centroids is None:
        parts = []
        for j, rows in enumerate(group_rows):
            # One label's centroids from its own key: adding a label changes no other's.
            key_j = key if not per_label else jax.random.fold_in(key, j)
            if fit_sizes[j] < len(rows):
                tag = [*words, 2] if not per_label else [*words, 2, j]
                rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(tag)))
                rows = rows[np.sort(rng.choice(len(rows), fit_sizes[j], replace=False))]
            if fit == "minibatch":
                c, _ = gk.minibatch_kmeans(
                    x[rows], k, key_j, batch_size=batch_size, num_epochs=num_epochs
                )
            else:
                c, _ = gk.kmeans(
                    jnp.asarray(x[rows]),
                    k,
                    key_j,
                    num_iters=num_iters,
                    block_size=block_size,
                    mesh=mesh,
                )
            parts.append(np.asarray(c, np.float32))
        centroids = np.concatenate(parts)
        if checkpoint_dir is not None:
            _write_atomic(cpath, lambda f: np.save(f, centroids))
    from tqdm.auto import tqdm

    starts = list(range(0, n, chunk_size))
    assignment = np.empty(n, np.int32)
    inertia = 0.0
    c64 = centroids.astype(np.float64)
    with tqdm(
        total=n, desc="cluster (assign)", unit="row", disable=not progress or len(starts) == 1
    ) as bar:
        for i, start in enumerate(starts):
            stop = min(n, start + chunk_size)
            part = None
            if checkpoint_dir is not None:
                path = os.path.join(checkpoint_dir, f"chunk_{i:06d}_{start}_{stop}.npz")
                if os.path.exists(path):
                    with np.load(path) as z:
                        part, sq = z["assignment"], float(z["inertia"])
            if part is None:
                part = _assign_chunk(x, start, stop, group, centroids, k, block_size, mesh)
                diff = np.asarray(x[start:stop], np.float64) - c64[part]
                sq = float(np.sum(diff * diff))
                if checkpoint_dir is not None:
                    _write_atomic(
                        path, lambda f, a=part, s=sq: np.savez(f, assignment=a, inertia=s)
                    )
            assignment[start:stop] = part
            inertia += sq
            bar.update(stop - start)
    sizes = np.bincount(assignment, minlength=len(centroids)).astype(np.int64)
    config = {**config, "chunk_size": chunk_size}
    return Clusters(assignment, centroids, sizes, inertia, sample_ids, config)


def _assign_chunk(x, start, stop, group, centroids, k, block_size, mesh) -> np.ndarray:
    """Ids of rows ``start:stop``: each row's nearest centroid among its label's ``k``."""
    owners = group[start:stop]
    labels_here = np.unique(owners)
    if len(labels_here) == 1:
        j = int(labels_here[0])
        a = gk.kmeans_assign(
            jnp.asarray(x[start:stop]),
            centroids[j * k : (j + 1) * k],
            block_size=block_size,
            mesh=mesh,
        )
        return np.asarray(a, np.int32) + j * k
    out = np.empty(stop - start, np.int32)
    for j in labels_here.tolist():
        rows = np.flatnonzero(owners == j)
        a = gk.kmeans_assign(
            jnp.asarray(x[start + rows]),
            centroids[j * k : (j + 1) * k],
            block_size=block_size,
            mesh=mesh,
        )
        out[rows] = np.asarray(a, np.int32) + j * k
    return out


def _store_labels(source):
    """A store's labels (per sample id), or ``None`` for anything else."""
    from goldener_jax.store import FeatureStore

    if isinstance(source, (str, os.PathLike)):
        source = FeatureStore.open(source)
    if isinstance(source, FeatureStore):
        labels = source.read_labels()
        if labels is None:
            raise ValueError("per_label=True needs labels: the store has none, pass labels=")
        return labels
    raise ValueError("per_label=True needs labels= (one per row of x)")


def _label_groups(labels, sample_ids, n: int) -> tuple[np.ndarray, list]:
    """``(group index of each row, the sorted label values)``. Labels are per row for an
    array; for a store, per sample id (``max id + 1`` entries) or per sample present."""
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    if sample_ids is not None and y.shape[0] != n:
        if y.shape[0] != int(sample_ids.max()) + 1:
            raise ValueError(
                f"labels must have one entry per sample ({n}) or per sample id "
                f"({int(sample_ids.max()) + 1}), got {y.shape[0]}"
            )
        y = y[sample_ids]
    if y.shape[0] != n:
        raise ValueError(f"labels must have shape [{n}] (one per row of x), got {y.shape}")
    values, group = np.unique(y, return_inverse=True)
    return group.astype(np.int64), values.tolist()
