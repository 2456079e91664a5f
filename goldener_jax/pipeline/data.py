"""Inputs of ``select`` / ``split``: vectors from a store or an array, per-sample labels and
groups, exclusions, dimension reduction, argument checks shared by both."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from goldener_jax import kernels as gk
from goldener_jax._allocation import check_group_ids
from goldener_jax._digest import rows_digest
from goldener_jax._keys import as_key
from goldener_jax.kernels._checks import as_float_matrix

__all__ = [
    "Data",
    "anchor_samples",
    "apply_reduce",
    "check_common",
    "full_hash",
    "key_data",
    "load_data",
    "parse_reduce",
]


@dataclasses.dataclass
class Data:
    """Vectors and per-sample metadata, samples renumbered 0..S-1."""

    x: np.ndarray  # [Nv, d] on the host
    vec_sample: np.ndarray  # [Nv] compact sample id of each vector
    sample_ids: np.ndarray  # [S] original sample index of each compact id
    label_matrix: np.ndarray | None  # [S, L] bool
    label_names: list | None
    unit: np.ndarray | None  # [S] compact group id, or None (each sample its own unit)
    fingerprint: dict
    x_dev: jax.Array | None = None  # the same rows on the device, when they are unchanged

    def rows(self, vecs: np.ndarray) -> jax.Array:
        """Rows ``vecs`` on the device; all of them without a copy when ``vecs`` is every row."""
        every = vecs.shape[0] == self.x.shape[0] and np.array_equal(vecs, np.arange(vecs.shape[0]))
        if every and self.x_dev is not None:
            return self.x_dev
        return jnp.asarray(self.x[vecs])


def key_data(key) -> np.ndarray:
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(key))
    raise TypeError(f"key must be a jax.random.key(...), got {key!r}")


def full_hash(a) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.asarray(a)).tobytes()).hexdigest()[:16]


def _load(store_or_array, labels, groups, sample_idx) -> tuple:
    """(x, sample_idx, labels, groups, source fingerprint)."""
    from goldener_jax.store import FeatureStore

    if isinstance(store_or_array, (str, os.PathLike)):
        store_or_array = FeatureStore.open(store_or_array)
    if isinstance(store_or_array, FeatureStore):
        store = store_or_array
        if sample_idx is not None:
            raise ValueError("sample_idx is only for arrays; a store has its own")
        x, sidx = store.read_vectors()
        if labels is None:
            labels = store.read_labels()
        if groups is None:
            groups = store.read_groups()
        fp = {"store": str(store.path), "extractor": store.extractor_fingerprint}
        return x, sidx, labels, groups, fp
    x = store_or_array
    if not hasattr(x, "shape"):
        x = np.asarray(x)
    fp = {"array_shape": list(x.shape)}
    return x, sample_idx, labels, groups, fp


def load_data(store_or_array, labels, groups, sample_idx, exclude_labels) -> Data:
    # labels=False: no labels at all, not even a store's (an active-learning selection must not
    # be stratified by ground truth it may not see).
    no_labels = labels is False
    x, sidx, labels, groups, fp = _load(
        store_or_array, None if no_labels else labels, groups, sample_idx
    )
    if no_labels:
        labels = None
    if hasattr(x, "ndim") and x.ndim != 2:
        raise ValueError(f"vectors must be 2-D [n, d], got shape {tuple(x.shape)}")
    # Validated on the device, kept on the host: each task gathers its rows with NumPy (a jnp
    # gather would compile once per chunk shape).
    x_dev = as_float_matrix(x, "x")
    x = np.asarray(x_dev)
    nv = x.shape[0]
    if nv == 0:
        raise ValueError("there are no vectors to select from")
    # Data identity of a checkpoint: a digest of every row (a changed row, even one, is refused
    # on resume rather than mixed with the saved selection).
    fp["vectors"] = rows_digest(x)
    if sidx is not None:
        fp["sample_idx"] = rows_digest(np.asarray(sidx))
    if sidx is None:
        sidx = np.arange(nv)
    sidx = np.asarray(sidx)
    if sidx.shape != (nv,):
        raise ValueError(f"sample_idx must have shape [{nv}] (one per vector), got {sidx.shape}")
    if not np.issubdtype(sidx.dtype, np.integer):
        raise TypeError(f"sample_idx must hold integers, got {sidx.dtype}")
    sample_ids, vec_sample = np.unique(sidx, return_inverse=True)
    num_samples = sample_ids.shape[0]
    # Labels and groups are per sample, indexed by sample id (store) or by compact order.
    label_matrix, label_names = None, None
    if labels is not None:
        labels = np.asarray(labels)
        if labels.dtype == object:  # hashable, deterministic bytes for the fingerprint
            labels = labels.astype(str)
        n_expected = int(sample_ids.max()) + 1 if sample_idx is None else num_samples
        if labels.shape[0] not in (n_expected, num_samples):
            raise ValueError(
                f"labels must have one entry per sample ({num_samples}), got shape {labels.shape}"
            )
        if labels.shape[0] != num_samples:
            labels = labels[sample_ids]
        if labels.ndim == 1:
            if np.issubdtype(labels.dtype, np.floating):
                raise TypeError(f"labels must be integers or strings, got {labels.dtype}")
            label_names = sorted(set(labels.tolist()))
            label_matrix = labels[:, None] == np.asarray(label_names, dtype=labels.dtype)[None]
        elif labels.ndim == 2:
            label_matrix = labels.astype(bool)
            label_names = list(range(labels.shape[1]))
        else:
            raise ValueError(f"labels must be [N] or multi-hot [N, L], got shape {labels.shape}")
        fp["labels"] = rows_digest(labels)
    # Groups per compact sample (before any exclusion, so both are trimmed together).
    group_ids = None
    if groups is not None:
        groups = check_group_ids(groups)  # 1-D, no NaN id (NaN != NaN merges or splits groups)
        if groups.dtype == object:
            groups = groups.astype(str)
        n_expected = int(sample_ids.max()) + 1 if sample_idx is None else num_samples
        if groups.shape[0] not in (n_expected, num_samples):
            raise ValueError(
                f"groups must have one entry per sample ({num_samples}), got shape {groups.shape}"
            )
        fp["groups"] = rows_digest(groups)
        group_ids = groups if groups.shape[0] == num_samples else groups[sample_ids]
    if exclude_labels:
        if label_matrix is None:
            raise ValueError("exclude_labels needs labels")
        unknown = [v for v in exclude_labels if v not in label_names]
        if unknown:
            raise ValueError(f"exclude_labels {unknown} are not labels of the data ({label_names})")
        drop_cols = [label_names.index(v) for v in exclude_labels]
        dead = label_matrix[:, drop_cols].any(axis=1)
        keep_cols = [j for j in range(len(label_names)) if j not in drop_cols]
        label_matrix = label_matrix[:, keep_cols]
        label_names = [label_names[j] for j in keep_cols]
        keep_vec = ~dead[vec_sample]
        if not keep_vec.any():
            raise ValueError("exclude_labels removes every sample")
        x = x[np.flatnonzero(keep_vec)]
        x_dev = None
        sample_ids, vec_sample = np.unique(sample_ids[vec_sample[keep_vec]], return_inverse=True)
        label_matrix = label_matrix[~dead]
        if group_ids is not None:
            group_ids = group_ids[~dead]
        fp["exclude_labels"] = [str(v) for v in exclude_labels]
    if label_matrix is not None:
        empty = [label_names[j] for j in np.flatnonzero(~label_matrix.any(axis=0))]
        if empty:
            raise ValueError(f"label(s) {empty} have no samples; exclude them or fix the labels")
    unit = None if group_ids is None else np.unique(group_ids, return_inverse=True)[1]
    return Data(x, vec_sample, sample_ids, label_matrix, label_names, unit, fp, x_dev)


def parse_reduce(reduce) -> dict | None:
    if reduce is None:
        return None
    if isinstance(reduce, str):
        name, _, comps = reduce.partition(":")
        if name not in ("pca", "random") or not re.fullmatch(r"\s*[0-9]+\s*", comps):
            raise ValueError(
                f"reduce must be 'pca:N' or 'random:N' with N a positive integer (the number of "
                f"components), got {reduce!r}"
            )
        reduce = {"method": name, "n_components": int(comps)}
    elif isinstance(reduce, (tuple, list)):
        reduce = {"method": reduce[0], "n_components": reduce[1]}
    if not isinstance(reduce, Mapping) or reduce.get("method") not in ("pca", "random"):
        raise ValueError(
            "reduce must be None, 'pca:C', 'random:C', ('pca', C) or "
            f"{{'method': 'pca'|'random', 'n_components': C}}, got {reduce!r}"
        )
    if not isinstance(reduce.get("n_components"), int) or reduce["n_components"] < 1:
        raise ValueError(f"reduce needs n_components >= 1, got {reduce!r}")
    return dict(reduce)


def apply_reduce(data: Data, reduce: dict | None, key) -> None:
    """Replaces ``data``'s vectors by their reduction (in place)."""
    if reduce is None:
        return
    x = data.x_dev if data.x_dev is not None else data.x
    rkey = jax.random.fold_in(key, 0x5EED)
    c = reduce["n_components"]
    if reduce["method"] == "random":
        reduced = gk.random_projection(x, c, rkey)
    else:
        sample = reduce.get("sample_size")
        state = gk.pca_fit(x, c, key=rkey if sample else None, sample_size=sample)
        reduced = gk.pca_transform(state, x)
    data.x_dev, data.x = reduced, np.asarray(reduced)


def anchor_samples(anchors, data: Data) -> np.ndarray:
    """Compact ids of the given anchor sample indices (sorted, unique); empty for ``None``."""
    if anchors is None:
        return np.zeros((0,), np.int64)
    anchors = np.asarray(anchors)
    if anchors.ndim != 1 or not np.issubdtype(anchors.dtype, np.integer):
        raise TypeError(
            f"anchors must be a 1-D array of sample indices, got {anchors.dtype} "
            f"of shape {anchors.shape}"
        )
    pos = np.searchsorted(data.sample_ids, anchors)
    bad = (pos >= data.sample_ids.shape[0]) | (
        data.sample_ids[np.minimum(pos, data.sample_ids.shape[0] - 1)] != anchors
    )
    if bad.any():
        raise ValueError(f"anchors {anchors[bad][:5].tolist()} are not sample indices of the data")
    return np.unique(pos)


def check_common(key, metric, chunk_size, max_anchors, checkpoint_every) -> jax.Array:
    """The argument checks ``select`` and ``split`` share; returns the typed key (a legacy
    ``jax.random.PRNGKey`` is wrapped into the key it stands for)."""
    key = as_key(key, "key")
    if metric not in gk.METRICS:
        raise ValueError(f"metric must be one of {gk.METRICS}, got {metric!r}")
    for name, v, allow_none in (
        ("chunk_size", chunk_size, True),
        ("max_anchors", max_anchors, True),
        ("checkpoint_every", checkpoint_every, False),
    ):
        if v is None and allow_none:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(
                f"{name} must be an int >= 1{' or None' if allow_none else ''}, got {v!r}"
            )
    return key
