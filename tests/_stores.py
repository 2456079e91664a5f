"""Small feature stores and chunk damage for the integrity and fault-injection tests."""

from __future__ import annotations

import os
import shutil

import numpy as np

from goldener_jax.describe import describe
from goldener_jax.store import FeatureStore

NUM_SAMPLES, BATCH_SIZE, ROWS, DIM = 22, 4, 2, 3  # 6 batches, the last one partial
ARRAYS = ("vectors", "labels", "sample_idx", "valid")
FAULTS = ("flip", "truncate", "delete", "zero")


class TwoRows:
    """Duck-typed extractor: 2 rows per sample; the second row is padding for odd samples."""

    fingerprint = "two-rows-v1"

    def config(self):
        return {"kind": "two-rows"}

    def __call__(self, x, *, mask=None, key=None):
        rows = x.reshape(x.shape[0], ROWS, DIM)
        valid = (x[:, :1] > -10).repeat(ROWS, axis=1)  # all True, computed on the device
        valid = valid.at[:, 1].set(x[:, 0] > 0)
        return rows, valid


def data(seed: int = 0):
    rng = np.random.RandomState(seed)
    x = rng.randn(NUM_SAMPLES, ROWS * DIM).astype(np.float32)
    labels = rng.randint(0, 3, NUM_SAMPLES)
    groups = np.arange(NUM_SAMPLES) // 2
    return x, labels, groups


def make(path, x=None, labels=None, groups=None, **kw) -> FeatureStore:
    dx, dl, dg = data()
    return describe(
        dx if x is None else x,
        TwoRows(),
        path,
        labels=dl if labels is None else labels,
        groups=dg if groups is None else groups,
        batch_size=BATCH_SIZE,
        progress=False,
        **kw,
    )


def copy(src, dst) -> str:
    shutil.copytree(src, dst)
    return str(dst)


def chunk_file(store_path, array: str, batch: int) -> str:
    store = FeatureStore.open(store_path)
    return os.path.join(os.fspath(store_path), store.batch_chunk_keys(batch)[array])


def damage(store_path, array: str, batch: int, fault: str, position: float = 0.5) -> str:
    """Damages the chunk that ``batch`` wrote in ``array``; returns its file."""
    path = chunk_file(store_path, array, batch)
    raw = bytearray(open(path, "rb").read())
    if fault == "flip":
        raw[min(int(position * len(raw)), len(raw) - 1)] ^= 0x10
    elif fault == "truncate":
        raw = raw[: int(position * len(raw))]
    elif fault == "zero":
        raw = bytearray(len(raw))
    elif fault == "delete":
        os.remove(path)
        return path
    else:
        raise ValueError(fault)
    with open(path, "wb") as f:
        f.write(bytes(raw))
    return path


def arrays(store: FeatureStore) -> dict[str, np.ndarray]:
    out = store.read_rows(0, store.num_rows)
    out["labels"] = store.read_labels()
    out["groups"] = store.read_groups()
    return out
