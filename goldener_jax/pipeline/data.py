"""Inputs of ``select`` / ``split``: vectors from a store or an array, per-sample labels and
groups, exclusions, dimension reduction, argument checks shared by both."""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import gc
import hashlib
import os
import re
import sys
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
    "StoreRows",
    "anchor_samples",
    "apply_reduce",
    "bound_heap",
    "check_common",
    "full_hash",
    "key_data",
    "load_data",
    "open_store_rows",
    "parse_reduce",
    "release_freed_memory",
    "spans_processes",
]


# Set to "1" to leave the C allocator and JAX's compiled programs as they are in multi-process
# runs (see ``release_freed_memory`` and ``bound_heap``).
KEEP_MEMORY_ENV = "GOLDENER_JAX_KEEP_MEMORY"
_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter (malloc.h)
_MMAP_THRESHOLD_BYTES = 1 << 20


def _releasing() -> bool:
    return os.environ.get(KEEP_MEMORY_ENV, "") != "1"


@functools.lru_cache(maxsize=1)
def _libc():
    """glibc, or ``None`` (another OS or C library: nothing to call)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 (both exist: glibc)
    except (OSError, AttributeError):  # no glibc (e.g. musl)
        return None
    return libc


@functools.lru_cache(maxsize=1)
def bound_heap() -> bool:
    """Makes glibc map every buffer of 1 MB or more on its own (``mallopt(M_MMAP_THRESHOLD)``,
    once per process; what ``MALLOC_MMAP_THRESHOLD_=1048576`` does), so that a freed buffer
    goes back to the OS at once. Called when a multi-process step starts reading rows per
    process: rows arrive in pieces of a few MB, decoded by TensorStore's threads, and with
    glibc's default (a threshold that rises to 32 MB after the first large free) the freed
    pieces stay in those threads' heaps, where a step's peak reached 0.7-0.9x the store per
    process instead of 0.5x (``scripts/multihost_memory.py``). Nothing on other systems, or with
    ``GOLDENER_JAX_KEEP_MEMORY=1``. Returns whether the setting was made."""
    libc = _libc()
    if libc is None or not _releasing():
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES))


def release_freed_memory() -> None:
    """Hands memory a finished multi-process task no longer needs back to the OS.

    * The rows of a task read per process live in buffers of a few MB per device (and XLA's
      temporaries in smaller ones): glibc keeps freed blocks in its heap, so the rows of
      finished tasks would stay resident and pile up: a garbage collection (the arrays sit in
      reference cycles) and ``malloc_trim(0)`` return them.
    * Every task shape compiles its own programs (``n`` and ``k`` are static), and on XLA:CPU a
      compiled program with JAX's caches of it holds about 1-3 MB of host memory: a stratified
      selection compiles hundreds, which stayed resident (0.2-0.4x the store per process on a
      1.1 GB store). So ``jax.clear_caches()`` runs too: programs of the process's other code
      compile again on their next call. ``GOLDENER_JAX_KEEP_MEMORY=1`` keeps them (and the
      allocator, ``bound_heap``) as they are.

    Called only where a multi-process step (a mesh spanning processes, rows read per process)
    frees a task's rows; it changes no result."""
    if _releasing():
        jax.clear_caches()
    trim_heap()


def trim_heap() -> None:
    """A garbage collection and ``malloc_trim(0)``: freed buffers back to the OS, compiled
    programs kept (``release_freed_memory`` without its ``jax.clear_caches()``)."""
    gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def spans_processes(mesh) -> bool:
    """Whether ``mesh`` holds devices of other processes than this one."""
    if mesh is None:
        return False
    me = jax.process_index()
    return any(d.process_index != me for d in np.asarray(mesh.devices).flat)


# Rows read from a store at a time into a device shard's host buffer: bounds the transient
# memory of building a shard to one piece (TensorStore's decoded chunk and the piece).
_PIECE_BYTES = 8 << 20
_ALIGN = 4096


def _aligned_empty(rows: int, dim: int, dtype: np.dtype) -> np.ndarray:
    """An uninitialised ``[rows, dim]`` array whose data starts on a page boundary: the CPU
    client then wraps it as a device buffer without copying it (checked with jax 0.10:
    ``device_put`` of an aligned array adds no resident memory), so a shard never exists twice.
    On an accelerator it is the host staging copy of one device's shard at a time."""
    nbytes = rows * dim * dtype.itemsize
    raw = np.empty(nbytes + _ALIGN, np.uint8)
    off = (-raw.ctypes.data) % _ALIGN
    return raw[off : off + nbytes].view(dtype).reshape(rows, dim)


@functools.lru_cache(maxsize=64)
def _first_rows_everywhere(mesh, m: int):
    """A jitted ``a[:m]`` gathered onto every device of ``mesh`` (one program per mesh and m)."""
    everywhere = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return jax.jit(lambda a: a[:m], out_shardings=everywhere)


class StoreRows:
    """The vectors of a store as a mesh spanning several processes sees them: every array built
    here is row-sharded over ``mesh``, and each process reads from the store only the rows of
    its own devices (no process holds, or reads, all of them).

    ``rows_read`` counts the vector rows this process read from the store (what the
    multi-process tests check), ``builds`` the arrays built, as ``(rows asked, rows read)``.
    """

    def __init__(self, store, store_rows: np.ndarray, mesh):
        bound_heap()  # freed pieces of rows go back to the OS at once (see there)
        self.store = store
        self.vectors = store.vectors
        self.store_rows = np.asarray(store_rows, np.int64)  # [Nv] store row of each vector
        self.mesh = mesh
        self.axis, self.size = gk.sharding.mesh_axis(mesh)
        self.dim = int(self.vectors.shape[1])
        self.dtype = np.dtype(self.vectors.dtype.numpy_dtype)
        self.rows_read = 0
        self.builds: list[tuple[int, int]] = []

    @property
    def num_vectors(self) -> int:
        return int(self.store_rows.shape[0])

    def _read(self, vecs: np.ndarray) -> np.ndarray:
        """Rows ``vecs`` (sorted or not) from the store, as a NumPy array."""
        rows = self.store_rows[vecs]
        self.rows_read += int(rows.size)
        if rows.size == 0:
            return np.zeros((0, self.dim), self.dtype)
        try:
            if rows[-1] - rows[0] + 1 == rows.size and np.all(np.diff(rows) == 1):
                return np.asarray(self.vectors[int(rows[0]) : int(rows[-1]) + 1].read().result())
            return self._scattered(rows)
        except ValueError as e:  # a damaged chunk (checksum, truncated)
            from goldener_jax.store import StoreCorruptError

            raise StoreCorruptError(
                f"store {str(self.store.path)!r}: vectors could not be read ({e}); "
                "FeatureStore.verify() names the damaged batches"
            ) from e

    def _scattered(self, rows: np.ndarray) -> np.ndarray:
        """Store rows ``rows`` (any order) a few chunks at a time: TensorStore decodes every
        chunk an index array touches at once (200 rows from 200 chunks of 16 x 131,072 floats
        peaked at 689 MB for a 105 MB result), so the sorted rows go in groups spanning at most
        ``_PIECE_BYTES`` of chunks (at least one chunk)."""
        chunk = max(1, int(self.vectors.chunk_layout.read_chunk.shape[0] or 1))
        per = max(1, _PIECE_BYTES // max(1, chunk * self.dim * self.dtype.itemsize))
        order = np.argsort(rows, kind="stable")
        srt = rows[order]
        first = np.flatnonzero(np.r_[True, np.diff(srt // chunk) > 0])  # each chunk's first row
        ends = np.r_[first[per::per], srt.size]
        out = np.empty((rows.size, self.dim), self.dtype)
        for a, b in zip(first[::per], ends, strict=True):
            out[order[a:b]] = np.asarray(self.vectors[srt[a:b]].read().result())
        return out

    def host_rows(self, vecs: np.ndarray) -> np.ndarray:
        """Rows ``vecs`` read whole on this process (for kernels without ``n=``)."""
        return self._read(np.asarray(vecs, np.int64))

    def read_rows(self, vecs: np.ndarray) -> np.ndarray:
        """Rows ``vecs`` on the host: a piece (this process's own rows, a block streamed past
        them), not a task whole (that is :meth:`host_rows`). Read ``_PIECE_BYTES`` at a time
        into a page-aligned array, which the CPU client then uses as a device buffer without a
        copy (``_aligned_empty``)."""
        vecs = np.asarray(vecs, np.int64)
        out = _aligned_empty(int(vecs.shape[0]), self.dim, self.dtype)
        piece = max(1, _PIECE_BYTES // max(1, self.dim * self.dtype.itemsize))
        for a in range(0, vecs.shape[0], piece):
            out[a : a + piece] = self._read(vecs[a : a + piece])
        return out

    def sharded(self, vecs: np.ndarray) -> jax.Array:
        """Rows ``vecs`` of the vectors as a ``[padded_rows(m), d]`` array row-sharded over the
        mesh (``kernels.shard_rows``' layout: padding rows of zeros at the end); each process
        reads only its own devices' rows, a piece at a time, into its device buffers (no
        program is compiled for it)."""
        vecs = np.asarray(vecs, np.int64)
        m = int(vecs.shape[0])
        rows = gk.sharding.padded_rows(m, self.mesh)
        shape = (rows, self.dim)
        sharding = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec(self.axis))
        before = self.rows_read
        piece = max(1, _PIECE_BYTES // max(1, self.dim * self.dtype.itemsize))
        arrays = []
        for device, index in sharding.addressable_devices_indices_map(shape).items():
            start, stop, _ = index[0].indices(rows)
            buf = _aligned_empty(stop - start, self.dim, self.dtype)
            buf[max(0, min(stop, m) - start) :] = 0  # padding rows
            for a in range(start, min(stop, m), piece):
                b = min(a + piece, stop, m)
                buf[a - start : b - start] = self._read(vecs[a:b])
            arrays.append(jax.device_put(buf, device))
            del buf
        self.builds.append((m, self.rows_read - before))
        return jax.make_array_from_single_device_arrays(shape, sharding, arrays)

    def replicated(self, vecs: np.ndarray) -> jax.Array:
        """Rows ``vecs`` (few: anchors) as an ``[m, d]`` array on every device of the mesh: read
        per process as in :meth:`sharded`, then gathered over the mesh."""
        vecs = np.asarray(vecs, np.int64)
        parts = self.sharded(vecs)
        out = _first_rows_everywhere(self.mesh, int(vecs.shape[0]))(parts)
        parts.delete()  # the per-device pieces: not kept next to the copies
        return out

    def own_vector_ranges(self) -> list[tuple[int, int]]:
        """``[start, stop)`` vector ranges of this process's devices in the whole pool's
        layout."""
        n = self.num_vectors
        rows = gk.sharding.padded_rows(n, self.mesh)
        sharding = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec(self.axis))
        out = []
        for index in sharding.addressable_devices_indices_map((rows, self.dim)).values():
            start, stop, _ = index[0].indices(rows)
            if start < n:
                out.append((start, min(stop, n)))
        return sorted(out)

    def fingerprint(self) -> tuple[str, bool]:
        """``(digest, all finite)`` over every vector: each process hashes its own rows of the
        pool (the layout of :meth:`sharded` over every vector), the digests of all processes are
        gathered and hashed in process order. It covers every row, like ``rows_digest``, but its
        value depends on the mesh's layout (a checkpoint resumes with the same layout)."""
        from jax.experimental import multihost_utils

        h = hashlib.blake2b(digest_size=32)
        h.update(f"sharded_rows/1|{self.num_vectors}|{self.dim}|{self.dtype.str}|".encode())
        finite = True
        piece = max(1, (64 << 20) // max(1, self.dim * self.dtype.itemsize))
        for start, stop in self.own_vector_ranges():
            h.update(f"{start}:{stop}|".encode())
            for a in range(start, stop, piece):
                block = np.ascontiguousarray(self._read(np.arange(a, min(a + piece, stop))))
                finite &= bool(np.isfinite(block).all())
                h.update(block.tobytes())
        self.rows_read = 0  # the fingerprint pass is not a task's read
        mine = np.frombuffer(h.digest(), np.uint8)
        every = multihost_utils.process_allgather(
            np.concatenate([mine, np.asarray([finite], np.uint8)])
        )
        every = np.asarray(every).reshape(-1, mine.size + 1)
        digest = hashlib.blake2b(every[:, :-1].tobytes(), digest_size=32).hexdigest()
        return digest, bool(every[:, -1].all())


@dataclasses.dataclass
class Data:
    """Vectors and per-sample metadata, samples renumbered 0..S-1.

    With a store and a mesh spanning several processes, ``source`` reads each task's rows per
    process (:class:`StoreRows`) and no process holds all the vectors: ``x`` then reads them all
    on first use (with a warning), for the paths that still need every row on the host
    (``reduce``)."""

    x_host: np.ndarray | None  # [Nv, d] on the host (None: read per task from `source`)
    vec_sample: np.ndarray  # [Nv] compact sample id of each vector
    sample_ids: np.ndarray  # [S] original sample index of each compact id
    label_matrix: np.ndarray | None  # [S, L] bool
    label_names: list | None
    unit: np.ndarray | None  # [S] compact group id, or None (each sample its own unit)
    fingerprint: dict
    x_dev: jax.Array | None = None  # the same rows on the device, when they are unchanged
    source: StoreRows | None = None  # per-process reads of a store (mesh spanning processes)

    @property
    def num_vectors(self) -> int:
        return int(self.vec_sample.shape[0])

    @property
    def x(self) -> np.ndarray:
        """Every vector on the host (read now when only ``source`` has them)."""
        if self.x_host is None:
            import warnings

            warnings.warn(
                "this step needs every vector on the host: each process reads the whole store "
                "(select, split and label_issues read per process)",
                stacklevel=2,
            )
            self.x_host = np.asarray(
                as_float_matrix(self.source.host_rows(np.arange(self.num_vectors)))
            )
        return self.x_host

    @x.setter
    def x(self, value) -> None:
        self.x_host = value

    def rows(self, vecs: np.ndarray) -> jax.Array:
        """Rows ``vecs`` on the device; all of them without a copy when ``vecs`` is every row."""
        every = vecs.shape[0] == self.x.shape[0] and np.array_equal(vecs, np.arange(vecs.shape[0]))
        if every and self.x_dev is not None:
            return self.x_dev
        return jnp.asarray(self.x[vecs])

    def task_rows(self, vecs: np.ndarray) -> tuple[jax.Array, int]:
        """``(x, n)``: the rows ``vecs`` for a kernel, and how many of ``x``'s rows are real.

        Read per process (``source``): ``x`` is row-sharded and padded to a multiple of the
        mesh size (``kernels.shard_rows``' layout), ``n = len(vecs)``; give ``n`` to the kernel.
        Otherwise ``x`` is :meth:`rows` and ``n == len(x)``."""
        vecs = np.asarray(vecs)
        if self.source is None or self.x_host is not None:
            return self.rows(vecs), int(vecs.shape[0])
        return self.source.sharded(vecs), int(vecs.shape[0])

    def anchor_rows(self, vecs: np.ndarray) -> jax.Array:
        """Rows ``vecs`` (anchors: few) on every device that needs them."""
        if self.source is None or self.x_host is not None:
            return jnp.asarray(self.x[vecs])
        return self.source.replicated(vecs)


def key_data(key) -> np.ndarray:
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(key))
    raise TypeError(f"key must be a jax.random.key(...), got {key!r}")


def full_hash(a) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.asarray(a)).tobytes()).hexdigest()[:16]


def _store_metadata(store) -> np.ndarray:
    """Store row of each valid vector, with the checks ``read_vectors`` makes, without reading
    the vectors."""
    missing = np.flatnonzero(~store.done_batches())
    if missing.size:
        raise ValueError(
            f"store {store.path!r} is incomplete: {missing.size} of {store.num_batches} "
            f"batches not done (first: {int(missing[0])}); run describe again to finish it"
        )
    # Each process reads only its rows of the vectors, never a whole chunk: a missing chunk
    # would read as zeros (whole-chunk reads check it, and the batch digests, themselves).
    absent = store.missing_chunks()
    if absent:
        from goldener_jax.store import StoreCorruptError

        first = min(absent)
        raise StoreCorruptError(
            f"store {store.path!r} is damaged: chunk {absent[first]!r} of done batch {first} is "
            f"missing ({len(absent)} batches); run describe again: it re-does damaged batches",
            batches=sorted(absent),
        )
    valid = np.asarray(store.valid.read().result(), bool)
    return np.flatnonzero(valid)


def open_store_rows(store, mesh) -> tuple[StoreRows, np.ndarray]:
    """``(rows, sample_idx)``: the valid vectors of ``store`` read per process for ``mesh``
    (:class:`StoreRows`, nothing read yet) and the sample index of each (read whole: small)."""
    gk.sharding.mesh_axis(mesh)  # a clear error for anything but a 1-D Mesh
    store_rows = _store_metadata(store)
    sidx = np.asarray(store.sample_idx.read().result())[store_rows]
    return StoreRows(store, store_rows, mesh), sidx


def _load(store_or_array, labels, groups, sample_idx, mesh=None) -> tuple:
    """(x, sample_idx, labels, groups, source fingerprint, per-process source or None)."""
    from goldener_jax.store import FeatureStore

    if isinstance(store_or_array, (str, os.PathLike)):
        store_or_array = FeatureStore.open(store_or_array)
    if isinstance(store_or_array, FeatureStore):
        store = store_or_array
        if sample_idx is not None:
            raise ValueError("sample_idx is only for arrays; a store has its own")
        source = None
        if spans_processes(mesh):
            # Every process reads the small per-row metadata whole, and of the vectors only
            # the rows of its own devices, task by task (StoreRows).
            source, sidx = open_store_rows(store, mesh)
            x = None
        else:
            x, sidx = store.read_vectors()
        if labels is None:
            labels = store.read_labels()
        if groups is None:
            groups = store.read_groups()
        fp = {"store": str(store.path), "extractor": store.extractor_fingerprint}
        return x, sidx, labels, groups, fp, source
    x = store_or_array
    if not hasattr(x, "shape"):
        x = np.asarray(x)
    fp = {"array_shape": list(x.shape)}
    return x, sample_idx, labels, groups, fp, None


def load_data(store_or_array, labels, groups, sample_idx, exclude_labels, mesh=None) -> Data:
    """The inputs of a selection run. With a store and a ``mesh`` spanning several processes,
    the vectors stay in the store: ``Data.source`` reads each task's rows per process, each
    process only its own devices' rows (:class:`StoreRows`); the rest is read whole."""
    # labels=False: no labels at all, not even a store's (an active-learning selection must not
    # be stratified by ground truth it may not see).
    no_labels = labels is False
    x, sidx, labels, groups, fp, source = _load(
        store_or_array, None if no_labels else labels, groups, sample_idx, mesh
    )
    if no_labels:
        labels = None
    if source is not None:
        nv = source.num_vectors
        if nv == 0:
            raise ValueError("there are no vectors to select from")
        if not jnp.issubdtype(source.dtype, jnp.floating):
            raise TypeError(f"x must have a floating dtype, got {source.dtype}")
        # Every row hashed (and checked finite), each process its own rows.
        fp["vectors_sharded"], finite = source.fingerprint()
        if not finite:
            raise ValueError(
                "x contains NaN or Inf; selection over non-finite vectors is undefined"
            )
        x_dev = None
    else:
        if hasattr(x, "ndim") and x.ndim != 2:
            raise ValueError(f"vectors must be 2-D [n, d], got shape {tuple(x.shape)}")
        # Validated on the device, kept on the host: each task gathers its rows with NumPy (a
        # jnp gather would compile once per chunk shape).
        x_dev = as_float_matrix(x, "x")
        x = np.asarray(x_dev)
        nv = x.shape[0]
        if nv == 0:
            raise ValueError("there are no vectors to select from")
        # Data identity of a checkpoint: a digest of every row (a changed row, even one, is
        # refused on resume rather than mixed with the saved selection).
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
        if source is None:
            x = x[np.flatnonzero(keep_vec)]
        else:
            source = StoreRows(source.store, source.store_rows[keep_vec], source.mesh)
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
    return Data(x, vec_sample, sample_ids, label_matrix, label_names, unit, fp, x_dev, source)


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
    if anchors.size == 0 and anchors.ndim == 1:  # [] is float64 to NumPy: no anchors, not a type
        return np.zeros((0,), np.int64)
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
