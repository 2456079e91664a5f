"""Vectors for the refining tools: one row per sample, from a ``FeatureStore`` or an array.

A store gives its vectors and each row's sample id (results are then indexed by sample id); an
array gives itself and results are indexed by row. Refining works on one vector per sample: a
store with several rows per sample must fuse them first.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["check_int", "key_words", "load_vectors", "rows_of"]


def load_vectors(store_or_array, what: str = "x") -> tuple[np.ndarray, np.ndarray | None]:
    """``(x float [n, d] on the host, sample_ids [n] int64 or None)``.

    Raises:
      ValueError: not 2-D, empty, non-finite values, or a store with several rows per sample.
      TypeError: not floating.
    """
    from goldener_jax.store import FeatureStore

    if isinstance(store_or_array, (str, os.PathLike)):
        store_or_array = FeatureStore.open(store_or_array)
    sample_ids = None
    if isinstance(store_or_array, FeatureStore):
        store = store_or_array
        x, sidx = store.read_vectors()
        sidx = np.asarray(sidx, np.int64)
        if len(np.unique(sidx)) != len(sidx):
            raise ValueError(
                f"refining needs one vector per sample; store {str(store.path)!r} has "
                f"{len(sidx)} vectors for {len(np.unique(sidx))} samples: fuse each sample's "
                "rows into one vector first (e.g. Vectorizer row fusion)"
            )
        order = np.argsort(sidx, kind="stable")
        x, sample_ids = np.asarray(x)[order], sidx[order]
    else:
        x = store_or_array
    if isinstance(x, jax.Array):
        x = np.asarray(x)
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array [n, d], got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{what} must have at least one row and one column, got {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or x.dtype == jnp.bfloat16):
        if np.issubdtype(x.dtype, np.integer) or x.dtype == bool:
            x = x.astype(np.float32)
        else:
            raise TypeError(f"{what} must hold numbers, got dtype {x.dtype}")
    if not np.isfinite(np.asarray(x, np.float32)).all():
        bad = int(np.argwhere(~np.isfinite(np.asarray(x, np.float32)))[0, 0])
        raise ValueError(f"{what} has NaN or Inf values (first in row {bad})")
    return x, sample_ids


def rows_of(indices, sample_ids: np.ndarray | None, n: int, what: str) -> np.ndarray:
    """Row numbers of ``indices`` (sample ids for a store, rows for an array), int64 ``[m]``.

    Raises:
      TypeError: not integers. ValueError: not 1-D, out of range, unknown sample id.
    """
    idx = np.asarray(indices)
    if idx.ndim != 1:
        raise ValueError(f"{what} must be a 1-D array of indices, got shape {idx.shape}")
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"{what} must hold integer indices, got dtype {idx.dtype}")
    idx = idx.astype(np.int64)
    if sample_ids is None:
        bad = (idx < 0) | (idx >= n)
        if bad.any():
            raise ValueError(f"{what} must be row indices in [0, {n - 1}], got {int(idx[bad][0])}")
        return idx
    pos = np.searchsorted(sample_ids, idx)
    pos = np.minimum(pos, len(sample_ids) - 1)
    bad = sample_ids[pos] != idx
    if bad.any():
        raise ValueError(f"{what}: sample id {int(idx[bad][0])} is not in the store")
    return pos


def check_int(value, name: str, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]``, or a TypeError / ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        where = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be in {where}, got {value}")
    return value


def key_words(key) -> list[int]:
    """The words of a ``jax.random.key`` (or a legacy uint32 key), to seed NumPy generators."""
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        data = jax.random.key_data(key)
    elif isinstance(key, (jax.Array, np.ndarray)) and key.dtype == np.uint32 and key.ndim == 1:
        data = key
    else:
        raise TypeError(f"key must be a jax.random.key(...), got {key!r}")
    return [int(w) for w in np.asarray(data).ravel()]
