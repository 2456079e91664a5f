"""Content digests that cover every byte: data identity for checkpoints and resumed describes.

``rows_digest`` streams over the rows of an array (NumPy, JAX, a memmap, a TensorStore array such
as ``FeatureStore.vectors``) in blocks and hashes all of them with BLAKE2b, so any changed row, even
one, changes the digest; memory stays at one block. ``batch_digest`` hashes a source batch
(``dict[str, np.ndarray]``), the per-batch record ``describe`` keeps to refuse a resume whose
already-described samples changed. ``chunk_digest`` hashes what one batch wrote to one array of
a feature store, with the batch index and the array name, so that a chunk copied or swapped in
from another batch (whose own checksum is valid) no longer matches its record.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Mapping

import numpy as np

__all__ = ["batch_digest", "chunk_digest", "rows_digest"]

_DEFAULT_BLOCK_BYTES = 64 << 20  # 64 MiB per block: hashing runs at ~1 GB/s, reading dominates


def _block(x, start: int, stop: int) -> np.ndarray:
    part = x[start:stop]
    if hasattr(part, "read") and not isinstance(part, np.ndarray):  # a TensorStore view
        part = part.read().result()
    return np.ascontiguousarray(np.asarray(part))


def rows_digest(x, *, block_rows: int | None = None) -> str:
    """BLAKE2b (32 bytes, hex) of the shape, dtype and every row of ``x``.

    Args:
      x: array of shape ``[n, ...]``: NumPy, JAX, memmap, or anything with ``shape``, ``dtype``
        and row slicing (a TensorStore array: slices are read with ``.read().result()``).
      block_rows: rows hashed per block (default: about 64 MiB of rows). The digest does not
        depend on it.

    Returns:
      64 hex characters. Equal for equal bytes, shape and dtype; any changed element changes it.
    """
    shape = tuple(int(s) for s in getattr(x, "shape", ()))
    if not shape:
        raise ValueError(f"x must have at least one axis (rows), got shape {shape}")
    dtype = getattr(x, "dtype", None)
    dtype = getattr(dtype, "numpy_dtype", dtype)  # TensorStore dtypes wrap a NumPy one
    dtype = np.dtype(dtype)
    n = shape[0]
    row_bytes = max(int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize, 1)
    if block_rows is None:
        block_rows = max(_DEFAULT_BLOCK_BYTES // row_bytes, 1)
    if (
        isinstance(block_rows, bool)
        or not isinstance(block_rows, (int, np.integer))
        or block_rows < 1
    ):
        raise ValueError(f"block_rows must be an int >= 1, got {block_rows!r}")
    h = hashlib.blake2b(digest_size=32)
    h.update(f"rows_digest/1|{shape}|{dtype.str}|".encode())
    for start in range(0, n, int(block_rows)):
        block = _block(x, start, min(start + int(block_rows), n))
        if block.dtype != dtype:
            block = block.astype(dtype)
        h.update(_raw_bytes(block))
    return h.hexdigest()


def batch_digest(batch: Mapping[str, np.ndarray], keys) -> bytes:
    """BLAKE2b (16 bytes) of the arrays ``batch[k]`` for ``k`` in ``keys`` (names, dtypes,
    shapes and bytes), in the order given."""
    h = hashlib.blake2b(digest_size=16)
    for key in keys:
        value = np.ascontiguousarray(np.asarray(batch[key]))
        if value.dtype == object:
            raise TypeError(f"batch key {key!r} holds Python objects; give numeric arrays")
        h.update(f"{key}|{value.dtype.str}|{value.shape}|".encode())
        h.update(_raw_bytes(value))
    return h.digest()


def chunk_digest(batch: int, name: str, value) -> bytes:
    """16 bytes identifying what batch ``batch`` wrote to array ``name`` of a feature store.

    A CRC-32 seeded with the batch index, the array name, the dtype name and the shape, over the
    bytes, then the byte count: equal contents under another batch or array give another
    record, which is what ties a chunk to its batch (the chunk's own ``crc32c`` only says its
    bytes are intact, not whose they are). Not BLAKE2b: this guards against misplaced chunks,
    not adversaries, and every read of the vectors pays it (CRC-32 hashes about 2x faster here,
    2.1 vs 0.9 GB/s on the 2-core Xeon).
    """
    value = np.ascontiguousarray(np.asarray(value))
    head = f"chunk_digest/1|{int(batch)}|{name}|{value.dtype.name}|{value.shape}|".encode()
    crc = zlib.crc32(_raw_bytes(value), zlib.crc32(head))
    return struct.pack("<IQ4x", crc, value.nbytes)


def _raw_bytes(a: np.ndarray) -> memoryview:
    """The bytes of ``a`` in C order, for any dtype (``memoryview`` refuses ml_dtypes' bfloat16)."""
    return memoryview(np.ascontiguousarray(a).reshape(-1).view(np.uint8))
