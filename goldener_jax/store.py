"""FeatureStore: sample descriptions on TensorStore (zarr v3), written resumably.

Layout under ``path`` (a local directory or any TensorStore kvstore URL: ``file://``, ``gs://``,
``s3://``, ``memory://``)::

    manifest.json   schema version, extractor fingerprint + config, source fingerprint, layout
    vectors/        zarr v3 [Nv, D] float32 or bfloat16  -- row r belongs to sample r // R
    sample_idx/     zarr v3 [Nv] int64                   -- r // R once written, -1 before
    valid/          zarr v3 [Nv] bool                    -- False for padding rows
    labels/         zarr v3 [N] int or [N, L] multi-hot  (only when the source has labels)
    groups/         zarr v3 [N] int                      (only when the source has groups)
    done/           zarr v3 [num_batches] uint8          -- 1 once a batch is fully written
    source_digest/  zarr v3 [num_batches, 16] uint8      -- BLAKE2b of the source batch described
    batch_digest/   zarr v3 [num_batches, K, 16] uint8   -- CRC-32 of what batch b wrote to each of
                                                            the K arrays above, b included
    .goldener-jax.lock                                   -- flock of the run writing (describe)

Row layout: every sample owns ``R`` consecutive rows (``R`` = rows per sample of the extractor,
``Nv = N * R``); a sample whose mask yields fewer valid rows keeps its slots, the unused ones
zero-filled with ``valid = False``. A row's position therefore depends only on its sample index:
not on the batch size, the number of processes, or where a run was resumed.

Chunks: one chunk per batch along the row axis (``batch_size * R`` rows, all ``D`` columns;
``batch_size`` samples for labels / groups; one flag per batch), so a batch writes whole chunks
that no other batch touches (no read-modify-write, safe for several processes writing disjoint
batches). Writes are ordered data-then-flag: a batch's ``done`` flag is written only after all
its data writes are committed, so a killed run never leaves a batch marked done with missing data.

Integrity: every array has zarr v3's ``crc32c`` codec (a checksum in each chunk file) and chunks
equal to the fill value are stored too, so a done batch ``b`` has written exactly chunk ``b`` (along
the first axis) of every array, recorded as the manifest's ``integrity`` section
(:meth:`FeatureStore.batch_chunk_keys`). A flipped or truncated chunk fails its checksum, a
deleted one is missing from the listing: :meth:`FeatureStore.verify` reports both per batch, reads
raise :class:`StoreCorruptError` naming the batch, and ``describe`` re-does the damaged batches.
Stores written before checksums (no ``integrity`` section) open and read as before, but
``verify`` says it cannot check them (describe them again with ``overwrite=True`` to add it).

A checksum says a chunk's bytes are intact, not that they are its batch's: a chunk copied or
swapped in from another batch passes it. So every batch also records, next to its data (written
with it, before its done flag), one digest per array it writes (``batch_digest[b, k]``: a CRC-32 of
``b``, the array's name and the bytes of its chunk ``b``; the arrays ``k`` are listed in the
manifest's ``integrity.batch_digest``). ``verify`` compares them with the chunks it reads, and
:meth:`FeatureStore.read_vectors` / :meth:`FeatureStore.read_labels` /
:meth:`FeatureStore.read_groups` (what ``select`` and ``split`` read) hash the bytes they have
just read, so a moved chunk is damage like a flipped one. Stores written before batch digests
(checksums, no ``batch_digest``) open, read and append as before; ``verify`` checks their
checksums and says that their chunks are not tied to their batches (only ``sample_idx`` is).

The manifest's ``layout`` (counts) and ``arrays`` (shapes, chunks) must agree with each other:
opening a store whose manifest was edited or damaged raises :class:`StoreCorruptError` naming the
disagreement, rather than reading a different number of rows than the arrays hold.

Creating a store writes the manifest, then each array's ``zarr.json``. A write that fails (a full
disk, permissions) raises ``OSError`` naming the problem (``errno`` set when the OS gave one); a
store whose arrays were never created, or only some, is not corrupt: opening it raises
:class:`StoreIncompleteError` ("creation interrupted") and running ``describe`` again finishes it.

Appending (:meth:`FeatureStore.grow`, used by ``describe(..., append=True)``): a store records
how many samples it holds (``layout.num_samples``); growing it rewrites the manifest to the one a
one-shot description of the grown source has and extends every array along its first axis
(zarr chunks past the old end read as the fill value, so the old partial last chunk simply gets
its new rows). The samples already described are never rewritten except the rows of a partial
last batch, whose chunk is completed.
"""

from __future__ import annotations

import errno
import json
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np
import tensorstore as ts

from goldener_jax._digest import chunk_digest

__all__ = [
    "FeatureStore",
    "IntegrityReport",
    "StoreCorruptError",
    "StoreIncompleteError",
    "StoreMismatchError",
]

SCHEMA_VERSION = 1
FORMAT = "goldener-jax.feature-store"
MANIFEST = "manifest.json"
_ARRAY_NAMES = (
    "vectors", "sample_idx", "valid", "labels", "groups", "done", "source_digest", "batch_digest",
)  # fmt: skip
# The arrays whose chunk b each batch b ties to itself in batch_digest (in this order; those a
# store has). Not `done`: a flag a batch owns and rewrites, and `batch_digest` itself.
_TIED = ("vectors", "sample_idx", "valid", "labels", "groups", "source_digest")
_VECTOR_DTYPES = ("float32", "bfloat16")
_LOCK_NAME = ".goldener-jax.lock"  # goldener_jax._locks.LOCK_NAME (checked by the lock tests)
SOURCE_DIGEST_BYTES = 16
BATCH_DIGEST_BYTES = 16
_INTEGRITY = {
    "checksum": "crc32c",
    "fill_chunks_stored": True,
    "batch_chunks": "batch b writes chunk b along the first axis of every array",
}
_BATCH_DIGEST_HASH = (
    "batch_digest[b, k] = CRC-32 (then the byte count) of b, the name of array k (arrays, in "
    "this order), its dtype, shape and the bytes batch b wrote to it "
    "(goldener_jax._digest.chunk_digest)"
)
_REPAIR = "run describe again: it re-does damaged batches (goldener-jax verify STORE lists them)"
_UNTIED = (
    "chunks are not tied to their batches (store written before goldener-jax recorded batch "
    "digests: a chunk copied or swapped between batches is caught only in sample_idx); describe "
    "it again with overwrite=True to add them"
)


class StoreMismatchError(ValueError):
    """The store at a path was written with another configuration (extractor, source, layout)."""


class StoreCorruptError(ValueError):
    """The store's manifest or arrays cannot be read as a goldener-jax feature store, or a chunk
    of a done batch is damaged (checksum mismatch, truncated, missing, another batch's). ``batches``
    lists the damaged batches when known."""

    def __init__(self, message: str, batches: Iterable[int] = ()):
        super().__init__(message)
        self.batches = sorted(set(int(b) for b in batches))


class StoreIncompleteError(StoreCorruptError):
    """The store's creation was interrupted (a full disk, a killed run) after its manifest was
    written and before all its arrays were: nothing is damaged, running ``describe`` again
    finishes it. A :class:`StoreCorruptError` for callers that catch that (the store cannot be
    read either way)."""


class IntegrityReport(NamedTuple):
    """What :meth:`FeatureStore.verify` found.

    Attributes:
      checked: False when the store has no checksums (written before them): nothing was checked.
      reason: why nothing was checked (empty when ``checked``).
      batches_checked: number of done batches whose chunks were read.
      damaged: ``{batch: [problem, ...]}`` for every damaged batch (each problem names the chunk).
      batches_not_done: batches not written yet (not damage: ``describe`` computes them).
      limits: what could not be checked in a checked store (empty when nothing): stores written
        before batch digests do not tie their chunks to their batches.
    """

    checked: bool
    reason: str
    batches_checked: int
    damaged: dict[int, list[str]]
    batches_not_done: int = 0
    limits: str = ""

    @property
    def ok(self) -> bool:
        return self.checked and not self.damaged

    def summary(self) -> str:
        """One line: ``ok: ...``, ``incomplete: ...`` (intact, batches not done yet: other
        commands refuse the store until describe finishes it), ``damaged: ...`` or ``cannot
        check: ...``."""
        if not self.checked:
            return f"cannot check: {self.reason}"
        pending = (
            f"; {self.batches_not_done} batches not done yet (run describe to finish)"
            if self.batches_not_done
            else ""
        )
        if not self.damaged:
            limits = f"; {self.limits}" if self.limits else ""
            lead = "incomplete" if self.batches_not_done else "ok"
            return (
                f"{lead}: {self.batches_checked} done batches, every chunk present and intact"
                f"{pending}{limits}"
            )
        bad = sorted(self.damaged)
        first = self.damaged[bad[0]][0]
        shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
        return (
            f"damaged: {len(bad)} of {self.batches_checked} done batches ({shown}; first: "
            f"{first}); {_REPAIR}"
        )


def _write_manifest(kv, manifest: dict, whose: str, advice: str) -> None:
    """Writes ``manifest.json``; a failed write is an ``OSError`` naming the disk problem."""
    try:
        kv.write(MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode()).result()
    except (ValueError, OSError) as e:
        raise _write_error(e, f"writing {MANIFEST} of {whose}", advice) from e


def _fspath(path):
    return os.fspath(path) if isinstance(path, os.PathLike) else path


def kvstore_spec(path) -> dict:
    """Kvstore spec (JSON) of a directory: local paths become ``file`` kvstores."""
    path = _fspath(path)
    if not isinstance(path, str) or not path:
        raise TypeError(
            f"path must be a directory path or a kvstore URL (str), got {path!r} "
            f"of type {type(path).__name__}"
        )
    if "://" not in path:
        if os.path.exists(path) and not os.path.isdir(path):
            raise ValueError(
                f"path {path!r} is an existing file; a feature store is a directory "
                "(give a new or empty directory, or an existing store)"
            )
        path = "file://" + os.path.abspath(path)
    elif path.startswith("file://"):
        local = path[len("file://") :]
        if os.path.exists(local) and not os.path.isdir(local):
            raise ValueError(f"path {path!r} is an existing file; a feature store is a directory")
    if not path.endswith("/"):
        path += "/"
    try:
        return ts.KvStore.Spec(path).to_json()
    except ValueError as e:
        raise ValueError(f"path {path!r} is not a usable TensorStore kvstore URL: {e}") from e


def _sub(kvspec: dict, name: str) -> dict:
    return {**kvspec, "path": kvspec.get("path", "") + name + "/"}


def _zarr3_metadata(shape, chunk, dtype: str, fill, checksum: bool = False) -> dict:
    codecs = [{"name": "bytes", "configuration": {"endian": "little"}}]
    if checksum:
        codecs.append({"name": "crc32c"})
    return {
        "shape": list(shape),
        "data_type": dtype,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunk)}},
        "chunk_key_encoding": {"name": "default"},
        "codecs": codecs,
        "fill_value": fill,
    }


_CHUNK_KEY = re.compile(
    r"(?:^|/)(vectors|sample_idx|valid|labels|groups|done|source_digest|batch_digest)/c/(\d+)"
)
_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")
# Above this many bytes the per-batch digests of a read are hashed on several threads (hashlib
# releases the GIL while it hashes): the tie then costs little next to reading the chunks.
_PARALLEL_DIGEST_BYTES = 16 << 20


def _chunk_of_error(e: BaseException) -> tuple[str, int] | None:
    """(array, chunk index along axis 0) named in a TensorStore error, if any."""
    m = _CHUNK_KEY.search(str(e))
    return (m.group(1), int(m.group(2))) if m else None


def _short(e: BaseException) -> str:
    """A TensorStore error without its (long) spec."""
    text = str(e).split("[tensorstore_spec=")[0].strip()
    return text[:300] + "..." if len(text) > 300 else text


def _write_error(e: BaseException, doing: str, advice: str) -> OSError:
    """The ``OSError`` for a failed write, naming the OS's problem (TensorStore raises
    ``ValueError("RESOURCE_EXHAUSTED: ... [os_error_code='28']")`` for a full disk; callers catch
    ``OSError`` for disk problems, and "no space left on device" says what to do)."""
    text = str(e)
    code = e.errno if isinstance(e, OSError) and e.errno else None
    found = _OS_ERROR_CODE.search(text)
    if code is None and found:
        code = int(found.group(1))
    if code is None and ("No space left on device" in text or "RESOURCE_EXHAUSTED" in text):
        code = errno.ENOSPC
    if code is None:
        return OSError(f"{doing} failed: {_short(e)}; {advice}")
    problem = "no space left on device" if code == errno.ENOSPC else os.strerror(code).lower()
    if code == errno.ENOSPC:
        advice += " (free disk space first)"
    return OSError(code, f"{doing} failed: {problem} ({_short(e)}); {advice}")


def _digests(items: list[tuple[int, str, np.ndarray]]) -> list[bytes]:
    """``chunk_digest(batch, name, value)`` of each item, on several threads for large reads."""
    total = sum(int(value.nbytes) for _, _, value in items)
    if total < _PARALLEL_DIGEST_BYTES or len(items) < 2:
        return [chunk_digest(*item) for item in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda item: chunk_digest(*item), items))


def config_differences(
    a: Any, b: Any, prefix: str = "", *, held: str = "in store", request: str = "request"
) -> list[str]:
    """Human-readable differences between two JSON-like values: ``a`` (what is ``held``, e.g.
    ``"in the checkpoint"``) against ``b`` (the ``request``)."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            key = f"{prefix}.{k}" if prefix else str(k)
            if k not in a:
                out.append(f"{key}: absent {held}, {b[k]!r} requested")
            elif k not in b:
                out.append(f"{key}: {a[k]!r} {held}, absent in {request}")
            else:
                out += config_differences(a[k], b[k], key, held=held, request=request)
        return out
    if a != b:
        return [f"{prefix or 'value'}: {a!r} {held}, {b!r} requested"]
    return []


def _layout_problems(manifest: dict) -> list[str]:
    """How the manifest's ``layout`` disagrees with itself or with its ``arrays`` (empty: it
    agrees). Every read trusts the layout's counts (rows, batches, batch size) to index the
    arrays, and opening checks the arrays against ``arrays`` only: a layout that disagrees would
    read a different number of rows than the arrays hold, or fail with an internal error."""
    layout, arrays = manifest["layout"], manifest["arrays"]
    if not isinstance(layout, dict) or not isinstance(arrays, dict):
        return ["'layout' and 'arrays' must be JSON objects"]
    problems = []
    counts = {}
    for key, low in (
        ("num_samples", 0), ("rows_per_sample", 1), ("num_rows", 0), ("dim", 1),
        ("batch_size", 1), ("num_batches", 0),
    ):  # fmt: skip
        value = layout.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            problems.append(f"layout.{key} is {value!r}, expected an int >= {low}")
        counts[key] = value
    if layout.get("dtype") not in _VECTOR_DTYPES:
        problems.append(
            f"layout.dtype is {layout.get('dtype')!r}, expected one of {_VECTOR_DTYPES}"
        )
    unknown = sorted(set(arrays) - set(_ARRAY_NAMES), key=str)
    if unknown:
        problems.append(f"arrays has unknown entries {unknown}")
    for name in ("vectors", "sample_idx", "valid", "done"):
        if arrays.get(name) is None:
            problems.append(f"arrays.{name} is missing")
    for name, meta in arrays.items():
        if meta is None:
            continue
        if not isinstance(meta, dict) or not all(
            isinstance(meta.get(k), list)
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in meta[k])
            for k in ("shape", "chunk_shape")
        ):
            problems.append(f"arrays.{name} needs a shape and a chunk_shape (lists of ints)")
        elif "dtype" not in meta or "fill_value" not in meta:
            problems.append(f"arrays.{name} needs a dtype and a fill_value")
    if problems:
        return problems
    n, r, rows = counts["num_samples"], counts["rows_per_sample"], counts["num_rows"]
    d, bs, nb = counts["dim"], counts["batch_size"], counts["num_batches"]
    if n * r != rows:
        problems.append(
            f"layout.num_rows is {rows}, but num_samples x rows_per_sample is {n} x {r} = {n * r}"
        )
    if -(-n // bs) != nb:
        problems.append(
            f"layout.num_batches is {nb}, but ceil(num_samples / batch_size) is "
            f"ceil({n} / {bs}) = {-(-n // bs)}"
        )
    tied = [k for k in _TIED if arrays.get(k) is not None]
    expected = {
        "vectors": ([rows, d], [max(bs * r, 1), d], layout["dtype"]),
        "sample_idx": ([rows], [max(bs * r, 1)], "int64"),
        "valid": ([rows], [max(bs * r, 1)], "bool"),
        "done": ([nb], [1], "uint8"),
        "source_digest": ([nb, SOURCE_DIGEST_BYTES], [1, SOURCE_DIGEST_BYTES], "uint8"),
        "batch_digest": (
            [nb, len(tied), BATCH_DIGEST_BYTES], [1, len(tied), BATCH_DIGEST_BYTES], "uint8",
        ),
    }  # fmt: skip
    for name in ("labels", "groups"):
        meta = arrays.get(name)
        if meta is not None:
            rest = meta["shape"][1:]
            expected[name] = ([n, *rest], [max(bs, 1), *rest], meta["dtype"])
    for name, (shape, chunk, dtype) in expected.items():
        meta = arrays.get(name)
        if meta is None:
            continue
        if meta["shape"] != shape:
            problems.append(f"arrays.{name}.shape is {meta['shape']}, the layout says {shape}")
        elif meta["chunk_shape"] != chunk:
            problems.append(
                f"arrays.{name}.chunk_shape is {meta['chunk_shape']}, the layout says {chunk}"
            )
        if meta["dtype"] != dtype:
            problems.append(f"arrays.{name}.dtype is {meta['dtype']!r}, the layout says {dtype!r}")
    integrity = manifest.get("integrity") or {}
    record = integrity.get("batch_digest") if isinstance(integrity, dict) else None
    if arrays.get("batch_digest") is not None:
        if not isinstance(record, dict) or record.get("arrays") != tied:
            problems.append(
                f"integrity.batch_digest.arrays is "
                f"{record.get('arrays') if isinstance(record, dict) else None!r}, the store's "
                f"arrays are {tied}"
            )
    elif record is not None:
        problems.append("integrity.batch_digest is recorded but arrays.batch_digest is missing")
    return problems


class FeatureStore:
    """Vectors describing samples, stored as zarr v3 arrays on TensorStore.

    Open an existing store with :meth:`FeatureStore.open`; :func:`goldener_jax.describe` creates
    and fills one. Arrays are exposed as TensorStore objects (``store.vectors[a:b].read()``
    reads rows ``a:b`` only); :meth:`read_rows` and :meth:`read_vectors` return NumPy arrays.
    """

    def __init__(self, path, kvspec: dict, manifest: dict, arrays: dict[str, Any]):
        self.path = _fspath(path)
        self._kvspec = kvspec
        self.manifest = manifest
        self._arrays = arrays

    # ------------------------------------------------------------------ opening / creating
    @staticmethod
    def _read_manifest(kv, path) -> dict | None:
        try:
            result = kv.read(MANIFEST).result()
        except ValueError as e:
            raise OSError(f"cannot read {MANIFEST} of store {path!r}: {e}") from e
        if result.state != "value":
            return None
        try:
            manifest = json.loads(result.value.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise StoreCorruptError(
                f"{MANIFEST} of store {path!r} is corrupt (not valid JSON: {e}); "
                "pass overwrite=True to start the store over"
            ) from e
        problems = []
        if not isinstance(manifest, dict):
            problems.append(f"expected a JSON object, got {type(manifest).__name__}")
        else:
            if manifest.get("format") != FORMAT:
                problems.append(f"format is {manifest.get('format')!r}, expected {FORMAT!r}")
            for key in ("schema_version", "extractor", "source", "layout", "arrays"):
                if key not in manifest:
                    problems.append(f"missing key {key!r}")
            if not problems and manifest["schema_version"] != SCHEMA_VERSION:
                problems.append(
                    f"schema_version is {manifest['schema_version']!r}, this version of "
                    f"goldener-jax reads {SCHEMA_VERSION}"
                )
        if problems:
            raise StoreCorruptError(
                f"{MANIFEST} of store {path!r} is not a goldener-jax feature store manifest: "
                + "; ".join(problems)
                + "; pass overwrite=True to start the store over"
            )
        problems = _layout_problems(manifest)
        if problems:
            raise StoreCorruptError(
                f"{MANIFEST} of store {path!r} is inconsistent (it was edited or damaged): "
                + "; ".join(problems[:5])
                + ("; ..." if len(problems) > 5 else "")
                + "; restore it from a copy of the store, or pass overwrite=True to start the "
                "store over"
            )
        return manifest

    @classmethod
    def open(cls, path) -> FeatureStore:
        """Opens an existing store (read and write). Raises ``FileNotFoundError`` when ``path``
        holds no store, :class:`StoreCorruptError` when its manifest is unreadable."""
        path = _fspath(path)
        kvspec = kvstore_spec(path)
        kv = ts.KvStore.open(kvspec).result()
        manifest = cls._read_manifest(kv, path)
        if manifest is None:
            raise FileNotFoundError(f"no feature store at {path!r} (no {MANIFEST})")
        return cls(path, kvspec, manifest, cls._open_arrays(kvspec, manifest, path, create=False))

    @classmethod
    def resume(cls, path, manifest: dict) -> FeatureStore:
        """Opens the store whose manifest is ``manifest`` for writing, creating the arrays a run
        killed between writing the manifest and creating them left missing."""
        path = _fspath(path)
        kvspec = kvstore_spec(path)
        return cls(path, kvspec, manifest, cls._open_arrays(kvspec, manifest, path, create=True))

    @classmethod
    def _open_arrays(cls, kvspec, manifest, path, *, create: bool) -> dict:
        futures, futures_spec = {}, {}
        checksum = bool(manifest.get("integrity"))
        for name, meta in manifest["arrays"].items():
            if meta is None:
                futures[name] = None
                continue
            spec = {
                "driver": "zarr3",
                "kvstore": _sub(kvspec, name),
                "metadata": _zarr3_metadata(
                    meta["shape"], meta["chunk_shape"], meta["dtype"], meta["fill_value"], checksum
                ),
            }
            if checksum:
                # A done batch then always has its chunk, even an all-zero one: a missing chunk
                # is damage, not "equal to the fill value".
                spec["store_data_equal_to_fill_value"] = True
            futures_spec[name] = spec
            futures[name] = ts.open(spec, open=True, create=create)  # opened concurrently
        # Every open (and creation) is waited for before any failure is raised: one array
        # failing does not cancel the others' creation, so what a rerun finds does not depend
        # on timing.
        outcomes: dict[str, Any] = {}
        for name, future in futures.items():
            try:
                outcomes[name] = None if future is None else future.result()
            except ValueError as e:
                outcomes[name] = e
        arrays = {}
        for name, outcome in outcomes.items():
            if not isinstance(outcome, ValueError):
                arrays[name] = outcome
                continue
            e = outcome
            if not cls._has_metadata(kvspec, name):
                # Never created: the creation stopped between the manifest and this array
                # (a full disk, a kill). Not damage: describe creates what is missing.
                if create:
                    raise _write_error(
                        e,
                        f"creating array {name!r} of store {path!r}",
                        "the store's creation is not finished: run describe again to finish it",
                    ) from e
                if not cls._has_chunks(kvspec, name):
                    raise StoreIncompleteError(
                        f"store {path!r} is incomplete: its creation was interrupted before "
                        f"array {name!r} was created (a full disk or a killed run, say); run "
                        "describe again to finish creating it"
                    ) from e
            # An append killed between writing the grown manifest (its commit point) and
            # resizing every array leaves arrays shorter than the manifest: the writer
            # finishes the resize, a reader is told how to finish the append.
            grown = cls._open_shorter(futures_spec[name], manifest["arrays"][name])
            if grown is not None and create:
                arrays[name] = grown.resize(
                    exclusive_max=manifest["arrays"][name]["shape"], expand_only=True
                ).result()
                continue
            if grown is not None:
                want = manifest["arrays"][name]["shape"][0]
                raise StoreCorruptError(
                    f"array {name!r} of store {path!r} does not match its manifest: it holds "
                    f"{grown.shape[0]} rows, the manifest {want}"
                    "; if an append to the store was interrupted, run describe(..., "
                    "append=True) with the grown source again to finish it"
                ) from e
            raise StoreCorruptError(
                f"array {name!r} of store {path!r} does not match its manifest or cannot be "
                f"opened ({e}); pass overwrite=True to start the store over"
            ) from e
        return arrays

    @staticmethod
    def _has_metadata(kvspec: dict, name: str) -> bool:
        """Whether array ``name`` has its ``zarr.json`` (True when that cannot be told: the
        caller then reports what opening it said)."""
        try:
            kv = ts.KvStore.open(_sub(kvspec, name)).result()
            return kv.read("zarr.json").result().state == "value"
        except ValueError:
            return True

    @staticmethod
    def _has_chunks(kvspec: dict, name: str) -> bool:
        """Whether array ``name`` holds any chunk (True when that cannot be told)."""
        try:
            kv = ts.KvStore.open(_sub(kvspec, name)).result()
            return bool(kv.list(ts.KvStore.KeyRange("c/", "c0")).result())
        except ValueError:
            return True

    @staticmethod
    def _open_shorter(spec: dict, meta: dict):
        """The array of ``spec`` when it exists and only its first axis is shorter than ``meta``
        says (an interrupted append), else None."""
        loose = {**spec, "metadata": {k: v for k, v in spec["metadata"].items() if k != "shape"}}
        try:
            array = ts.open(loose, open=True).result()
        except ValueError:
            return None
        have, want = list(array.shape), list(meta["shape"])
        if len(have) != len(want) or have[1:] != want[1:] or have[0] >= want[0]:
            return None
        return array

    @staticmethod
    def build_manifest(
        *,
        extractor_fingerprint: str,
        extractor_config: Any,
        source: Mapping,
        num_samples: int,
        rows_per_sample: int,
        dim: int,
        dtype: str,
        batch_size: int,
        labels: tuple[tuple[int, ...], str] | None = None,
        groups: tuple[tuple[int, ...], str] | None = None,
        input_spec: tuple[tuple[int, ...], str] | None = None,
        batch_digests: bool = True,
    ) -> dict:
        """The manifest of a new store; ``labels`` / ``groups`` / ``input_spec`` (the model
        input) are (per-sample shape, dtype). ``batch_digests=False`` gives the layout of stores
        written before batch digests (:meth:`grow` keeps an old store's layout)."""
        if dtype not in _VECTOR_DTYPES:
            raise ValueError(f"dtype must be one of {_VECTOR_DTYPES}, got {dtype!r}")
        for name, value in (
            ("num_samples", num_samples),
            ("rows_per_sample", rows_per_sample),
            ("dim", dim),
            ("batch_size", batch_size),
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, np.integer))
                or value < (0 if name == "num_samples" else 1)
            ):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        n, r, b = int(num_samples), int(rows_per_sample), int(batch_size)
        num_batches = -(-n // b)
        rows = n * r
        chunk_rows = max(b * r, 1)
        arrays: dict[str, Any] = {
            "vectors": {
                "shape": [rows, int(dim)],
                "chunk_shape": [chunk_rows, int(dim)],
                "dtype": dtype,
                "fill_value": 0.0,
            },
            "sample_idx": {
                "shape": [rows],
                "chunk_shape": [chunk_rows],
                "dtype": "int64",
                "fill_value": -1,
            },
            "valid": {
                "shape": [rows],
                "chunk_shape": [chunk_rows],
                "dtype": "bool",
                "fill_value": False,
            },
            "done": {
                "shape": [max(num_batches, 0)],
                "chunk_shape": [1],
                "dtype": "uint8",
                "fill_value": 0,
            },
            "labels": None,
            "groups": None,
            "source_digest": {
                "shape": [max(num_batches, 0), SOURCE_DIGEST_BYTES],
                "chunk_shape": [1, SOURCE_DIGEST_BYTES],
                "dtype": "uint8",
                "fill_value": 0,
            },
        }
        for name, spec in (("labels", labels), ("groups", groups)):
            if spec is None:
                continue
            shape, kind = tuple(int(s) for s in spec[0]), str(spec[1])
            fill = False if kind == "bool" else (0 if kind.startswith("uint") else -1)
            arrays[name] = {
                "shape": [n, *shape],
                "chunk_shape": [max(b, 1), *shape],
                "dtype": kind,
                "fill_value": fill,
            }
        integrity: dict[str, Any] = dict(_INTEGRITY)
        if batch_digests:
            tied = [name for name in _TIED if arrays.get(name) is not None]
            arrays["batch_digest"] = {
                "shape": [max(num_batches, 0), len(tied), BATCH_DIGEST_BYTES],
                "chunk_shape": [1, len(tied), BATCH_DIGEST_BYTES],
                "dtype": "uint8",
                "fill_value": 0,
            }
            integrity["batch_digest"] = {"arrays": tied, "hash": _BATCH_DIGEST_HASH}
        try:
            json.dumps(extractor_config)
        except TypeError as e:
            raise TypeError(f"extractor config must be JSON-able: {e}") from e
        layout_input = {}
        if input_spec is not None:
            layout_input = {
                "input_shape": [int(s) for s in input_spec[0]],
                "input_dtype": str(input_spec[1]),
            }
        return {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "integrity": integrity,
            "extractor": {"fingerprint": str(extractor_fingerprint), "config": extractor_config},
            "source": dict(source),
            "layout": {
                "num_samples": n,
                "rows_per_sample": r,
                "num_rows": rows,
                "dim": int(dim),
                "dtype": dtype,
                "batch_size": b,
                "num_batches": num_batches,
                "row_layout": "fixed: rows [i*R, (i+1)*R) belong to sample i; valid marks padding",
                **layout_input,
            },
            "arrays": arrays,
        }

    @classmethod
    def create(cls, path, manifest: dict, *, overwrite: bool = False) -> FeatureStore:
        """Creates the store described by ``manifest`` (from :meth:`build_manifest`) or reopens a
        store written with the same configuration. Anything else raises
        :class:`StoreMismatchError` naming what differs, unless ``overwrite=True`` (which
        deletes the old store's arrays and manifest, nothing else)."""
        path = _fspath(path)
        problems = (
            _layout_problems(manifest)
            if isinstance(manifest, dict) and {"layout", "arrays"} <= set(manifest)
            else ["it needs 'layout' and 'arrays' sections"]
        )
        if problems:
            # Refused before anything is written: opening the store would refuse it anyway.
            raise ValueError(
                f"manifest for store {path!r} is inconsistent: {'; '.join(problems[:5])}; build "
                "it with FeatureStore.build_manifest"
            )
        kvspec = kvstore_spec(path)
        kv = ts.KvStore.open(kvspec).result()
        if overwrite:
            cls._delete(kv)
            existing = None
        else:
            existing = cls._read_manifest(kv, path)
        if existing is not None:
            cls._check_same(existing, manifest, path)
            return cls(
                path, kvspec, existing, cls._open_arrays(kvspec, existing, path, create=True)
            )
        keys = [k.decode() for k in kv.list().result()]
        own = (*_ARRAY_NAMES, MANIFEST, _LOCK_NAME)
        foreign = [k for k in keys if k.split("/", 1)[0] not in own]
        if foreign and not overwrite:
            raise ValueError(
                f"path {path!r} is not empty and holds no feature store (found e.g. "
                f"{foreign[0]!r}, no {MANIFEST}); give a new or empty directory"
            )
        # Manifest first, arrays after: a run killed in between finds the manifest and creates
        # the missing arrays (open=True, create=True) on the next call.
        if len([k for k in keys if k != _LOCK_NAME]) > len(foreign):
            cls._delete(kv)  # leftovers of an interrupted overwrite, if any
        _write_manifest(
            kv, manifest, f"new store {path!r}", "no store was created: run describe again"
        )
        return cls(path, kvspec, manifest, cls._open_arrays(kvspec, manifest, path, create=True))

    def grow(self, num_samples: int, source: Mapping) -> FeatureStore:
        """Grows the store to ``num_samples`` samples (the first ``self.num_samples`` kept as
        they are) and returns it reopened; the caller holds the store's lock (``describe(...,
        append=True)`` does). The manifest is the one a store described in one run from the
        grown source would have, so an appended store equals a one-shot one file for file.

        Crash-safe order: the done flag of a partial last batch is cleared first (it gets new
        samples), then the grown manifest is written (the commit point), then every array is
        resized; a run killed in between is finished by the next writer that opens the store
        (:meth:`resume` resizes the arrays the manifest says are short).

        Args:
            num_samples: The new number of samples, at least the current one.
            source: The fingerprint of the grown source (recorded in the manifest).

        Returns:
            The grown store (``self`` when nothing changes).

        Raises:
            ValueError: ``num_samples`` is smaller than the samples the store holds.
            StoreMismatchError: The store was written before chunk checksums and source digests
                (it cannot be checked, so it is not grown: describe it again with
                ``overwrite=True``).
        """
        n_old = self.num_samples
        if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)):
            raise TypeError(f"num_samples must be an int, got {num_samples!r}")
        n = int(num_samples)
        if n < n_old:
            raise ValueError(
                f"num_samples must be at least the {n_old} samples store {self.path!r} holds, "
                f"got {n}; a store only grows"
            )
        if not self.has_checksums or self._arrays.get("source_digest") is None:
            raise StoreMismatchError(
                f"store {self.path!r} was written before goldener-jax recorded chunk checksums "
                "and source digests, so it cannot be appended to; describe it again with "
                "overwrite=True"
            )
        layout, arrays = self.layout, self.manifest["arrays"]

        def spec(name):
            meta = arrays.get(name)
            return None if meta is None else (tuple(meta["shape"][1:]), meta["dtype"])

        manifest = self.build_manifest(
            extractor_fingerprint=self.extractor_fingerprint,
            extractor_config=self.manifest["extractor"]["config"],
            source=source,
            num_samples=n,
            rows_per_sample=self.rows_per_sample,
            dim=self.dim,
            dtype=self.dtype,
            batch_size=self.batch_size,
            labels=spec("labels"),
            groups=spec("groups"),
            input_spec=(layout["input_shape"], layout["input_dtype"])
            if "input_shape" in layout
            else None,
            # A store written before batch digests keeps its layout: its described batches
            # have none to check (it grows as before; verify says what it cannot check).
            batch_digests=self.has_batch_digests,
        )
        if manifest == self.manifest:
            return self
        if n_old % self.batch_size:
            self.mark_not_done([self.num_batches - 1])  # flag first: it gets new samples
        kv = ts.KvStore.open(self._kvspec).result()
        _write_manifest(
            kv,
            manifest,
            f"store {self.path!r} (grown)",
            "the store still holds its samples: run describe(..., append=True) again",
        )
        return FeatureStore(
            self.path,
            self._kvspec,
            manifest,
            self._open_arrays(self._kvspec, manifest, self.path, create=True),
        )

    @staticmethod
    def _delete(kv) -> None:
        # The manifest first: a store without manifest is never taken for a finished one.
        kv.delete_range(ts.KvStore.KeyRange(MANIFEST, MANIFEST + "\0")).result()
        futures = [
            kv.delete_range(ts.KvStore.KeyRange(name + "/", name + "0")) for name in _ARRAY_NAMES
        ]
        for future in futures:
            future.result()

    @classmethod
    def peek_manifest(cls, path) -> dict | None:
        """The manifest at ``path`` or None when there is no store (corrupt ones raise)."""
        path = _fspath(path)
        kvspec = kvstore_spec(path)
        return cls._read_manifest(ts.KvStore.open(kvspec).result(), path)

    @staticmethod
    def _check_same(existing: dict, requested: dict, path) -> None:
        """Raises :class:`StoreMismatchError` naming what differs. ``requested`` may hold only
        some layout keys and no ``arrays`` (a resume that does not know the shapes yet)."""
        ex_fp = existing["extractor"].get("fingerprint")
        rq_fp = requested["extractor"]["fingerprint"]
        if ex_fp != rq_fp:
            details = config_differences(
                existing["extractor"].get("config"), requested["extractor"]["config"]
            )
            raise StoreMismatchError(
                f"store {path!r} was written with another extractor: fingerprint {ex_fp!r} in "
                f"store, {rq_fp!r} requested"
                + (f" (config differs: {'; '.join(details[:5])})" if details else "")
                + "; use another path or pass overwrite=True"
            )
        for section in ("source", "layout"):
            if section == "layout":
                have = {k: existing["layout"].get(k) for k in requested["layout"]}
            else:
                have = existing[section]
            details = config_differences(have, requested[section])
            if details:
                raise StoreMismatchError(
                    f"store {path!r} was written with another {section}: {'; '.join(details[:5])}"
                    "; use another path, the same settings, or pass overwrite=True"
                )
        requested_arrays = requested.get("arrays")
        if requested_arrays is not None and "batch_digest" not in existing["arrays"]:
            # A store written before batch digests is reopened as it is (its format, not its
            # configuration, differs): it keeps working, verify says what it cannot check.
            requested_arrays = {k: v for k, v in requested_arrays.items() if k != "batch_digest"}
        details = (
            config_differences(existing["arrays"], requested_arrays)
            if requested_arrays is not None
            else []
        )
        if details:
            raise StoreMismatchError(
                f"store {path!r} has other arrays than requested: {'; '.join(details[:5])}; "
                "use another path or pass overwrite=True"
            )

    # ------------------------------------------------------------------ properties
    @property
    def layout(self) -> dict:
        return self.manifest["layout"]

    @property
    def num_samples(self) -> int:
        return self.layout["num_samples"]

    @property
    def num_rows(self) -> int:
        return self.layout["num_rows"]

    @property
    def rows_per_sample(self) -> int:
        return self.layout["rows_per_sample"]

    @property
    def dim(self) -> int:
        return self.layout["dim"]

    @property
    def dtype(self) -> str:
        return self.layout["dtype"]

    @property
    def batch_size(self) -> int:
        return self.layout["batch_size"]

    @property
    def num_batches(self) -> int:
        return self.layout["num_batches"]

    @property
    def extractor_fingerprint(self) -> str:
        return self.manifest["extractor"]["fingerprint"]

    @property
    def vectors(self) -> ts.TensorStore:
        """TensorStore array of shape ``[Nv, D]``."""
        return self._arrays["vectors"]

    @property
    def sample_idx(self) -> ts.TensorStore:
        """TensorStore array of shape ``[Nv]``: the sample each row describes."""
        return self._arrays["sample_idx"]

    @property
    def valid(self) -> ts.TensorStore:
        """TensorStore bool array of shape ``[Nv]``: False for padding rows."""
        return self._arrays["valid"]

    @property
    def labels(self) -> ts.TensorStore | None:
        """TensorStore array ``[N]`` (int) or ``[N, L]`` (multi-hot), or None."""
        return self._arrays["labels"]

    @property
    def groups(self) -> ts.TensorStore | None:
        """TensorStore int array ``[N]``, or None."""
        return self._arrays["groups"]

    def __repr__(self) -> str:
        done = int(self.done_batches().sum())
        return (
            f"FeatureStore({self.path!r}, samples={self.num_samples}, rows={self.num_rows}, "
            f"dim={self.dim}, dtype={self.dtype}, batches done={done}/{self.num_batches})"
        )

    # ------------------------------------------------------------------ batches
    def batch_samples(self, b: int) -> tuple[int, int]:
        """Sample range ``[start, stop)`` of batch ``b``."""
        if not 0 <= b < self.num_batches:
            raise IndexError(f"batch index {b} out of range [0, {self.num_batches})")
        start = b * self.batch_size
        return start, min(start + self.batch_size, self.num_samples)

    def batch_rows(self, b: int) -> tuple[int, int]:
        """Row range ``[start, stop)`` of batch ``b``."""
        start, stop = self.batch_samples(b)
        return start * self.rows_per_sample, stop * self.rows_per_sample

    def _batch_index(self, name: str, b: int):
        """The slice of array ``name`` that batch ``b`` writes (its chunk ``b``)."""
        if name in ("vectors", "sample_idx", "valid"):
            return slice(*self.batch_rows(b))
        if name in ("labels", "groups"):
            return slice(*self.batch_samples(b))
        return slice(b, b + 1)  # done, source_digest: one entry per batch

    def batch_chunk_keys(self, b: int) -> dict[str, str]:
        """``{array: key}`` of every chunk that batch ``b`` writes, relative to the store root
        (stores with checksums: each array is chunked so that batch ``b`` owns chunk ``b``)."""
        self.batch_samples(b)  # range check
        return {
            name: f"{name}/c/" + "/".join([str(b)] + ["0"] * (array.rank - 1))
            for name, array in self._arrays.items()
            if array is not None
        }

    def missing_chunks(self) -> dict[int, str]:
        """``{batch: key}``: the first absent chunk of each done batch that lacks one. Cheap (one
        listing, no chunk read), for readers that do not read whole chunks (the per-process
        reads of a mesh spanning processes): a missing chunk would read as its fill value.
        Empty for stores without checksums (they did not store fill-value chunks)."""
        if not self.has_checksums or self.num_batches == 0:
            return {}
        import tensorstore as ts

        kv = ts.KvStore.open(kvstore_spec(self.path)).result()
        keys = {k.decode() for k in kv.list().result()}
        missing = {}
        for b in np.flatnonzero(self.done_batches()).tolist():
            absent = [k for k in self.batch_chunk_keys(b).values() if k not in keys]
            if absent:
                missing[b] = absent[0]
        return missing

    @property
    def has_checksums(self) -> bool:
        """Whether the chunks carry ``crc32c`` checksums (stores written since they exist)."""
        return bool(self.manifest.get("integrity"))

    @property
    def has_batch_digests(self) -> bool:
        """Whether each batch records digests tying its chunks to it (stores written since
        they exist; older ones cannot tell a chunk copied from another batch)."""
        return self._arrays.get("batch_digest") is not None

    @property
    def _tied(self) -> tuple[str, ...]:
        """The arrays of ``batch_digest[b, k]``, in order (checked against the arrays on open)."""
        if not self.has_batch_digests:
            return ()
        return tuple(self.manifest["integrity"]["batch_digest"]["arrays"])

    def done_batches(self) -> np.ndarray:
        """Bool array ``[num_batches]``: True where the batch is fully written. A done flag whose
        chunk is damaged counts as not done (describe re-does that batch)."""
        if self.num_batches == 0:
            return np.zeros((0,), bool)
        done = self._arrays["done"]
        try:
            return done.read().result().astype(bool)
        except ValueError:
            pass
        futures = [done[b].read() for b in range(self.num_batches)]
        flags = np.zeros(self.num_batches, bool)
        for b, future in enumerate(futures):
            try:
                flags[b] = bool(future.result())
            except ValueError:
                flags[b] = False
        return flags

    def is_complete(self) -> bool:
        return bool(self.done_batches().all())

    def write_batch(
        self,
        b: int,
        vectors,
        valid,
        *,
        labels=None,
        groups=None,
        source_digest=None,
    ) -> None:
        """Writes batch ``b`` (data, then its done flag).

        Args:
            b: Batch index.
            vectors: Array ``[n_b * R, D]`` (or ``[n_b, R, D]``) of the store's dtype.
            valid: Bool array ``[n_b * R]`` (or ``[n_b, R]``).
            labels: Per-sample labels ``[n_b, ...]`` when the store has them.
            groups: Per-sample group ids ``[n_b]`` when the store has them.
            source_digest: 16 bytes identifying the source batch described (``describe``
                checks them when it resumes); None records "unknown".

        Raises:
            OSError: A write failed (full disk, permissions...); the batch is not marked done.
        """
        self.write_batch_data(
            b, vectors, valid, labels=labels, groups=groups, source_digest=source_digest
        )
        self.mark_done(b)

    def write_batch_data(
        self, b: int, vectors, valid, *, labels=None, groups=None, source_digest=None
    ) -> None:
        """Writes the rows of batch ``b`` without marking it done (see :meth:`write_batch`)."""
        r0, r1 = self.batch_rows(b)
        s0, s1 = self.batch_samples(b)
        rows = r1 - r0
        vectors = np.asarray(vectors).reshape(rows, -1) if rows else np.asarray(vectors)
        valid = np.asarray(valid, dtype=bool).reshape(rows)
        if vectors.shape != (rows, self.dim):
            raise ValueError(
                f"batch {b}: vectors must have shape [{rows}, {self.dim}] "
                f"({s1 - s0} samples x {self.rows_per_sample} rows, dim {self.dim}), "
                f"got {vectors.shape}"
            )
        target = self.vectors.dtype.numpy_dtype
        if vectors.dtype != target:
            vectors = vectors.astype(target)
        # Padding rows are zero whatever the model produced there: the stored bytes depend only
        # on valid rows.
        if not valid.all():
            vectors = np.where(valid[:, None], vectors, np.zeros((), target))
        sample_idx = np.repeat(np.arange(s0, s1, dtype=np.int64), self.rows_per_sample)
        writes = {
            "vectors": (slice(r0, r1), vectors),
            "valid": (slice(r0, r1), valid),
            "sample_idx": (slice(r0, r1), sample_idx),
        }
        for name, value in (("labels", labels), ("groups", groups)):
            array = self._arrays[name]
            if array is None:
                continue
            if value is None:
                raise ValueError(f"batch {b}: the store has {name} but none were given")
            value = np.asarray(value)
            expected = (s1 - s0, *array.shape[1:])
            if value.shape != expected:
                raise ValueError(
                    f"batch {b}: {name} must have shape {list(expected)}, got {list(value.shape)}"
                )
            writes[name] = (slice(s0, s1), value.astype(array.dtype.numpy_dtype))
        digest_array = self._arrays.get("source_digest")
        if digest_array is not None:
            digest = np.zeros(SOURCE_DIGEST_BYTES, np.uint8)
            if source_digest is not None:
                raw = np.frombuffer(bytes(source_digest), np.uint8)
                if raw.shape != digest.shape:
                    raise ValueError(
                        f"batch {b}: source_digest must be {SOURCE_DIGEST_BYTES} bytes, "
                        f"got {raw.size}"
                    )
                digest = raw
            writes["source_digest"] = (slice(b, b + 1), digest[None])
        if self.has_batch_digests:
            # Hashed as written: the bytes a read of chunk b gives back (same dtype and shape).
            # Written with the data, before the done flag, so a done batch always has them.
            tied = self._tied
            record = np.frombuffer(
                b"".join(_digests([(b, name, writes[name][1]) for name in tied])), np.uint8
            ).reshape(1, len(tied), BATCH_DIGEST_BYTES)
            writes["batch_digest"] = (slice(b, b + 1), record)
        try:
            futures = [
                self._arrays[name][index].write(value) for name, (index, value) in writes.items()
            ]
            for future in futures:
                future.result()
        except (ValueError, OSError) as e:
            raise _write_error(
                e,
                f"writing batch {b} (rows {r0}..{r1}) to store {self.path!r}",
                "the batch is not marked done, run describe again to resume",
            ) from e

    def mark_done(self, b: int) -> None:
        self.batch_samples(b)  # range check
        try:
            self._arrays["done"][b].write(np.uint8(1)).result()
        except (ValueError, OSError) as e:
            raise _write_error(
                e,
                f"marking batch {b} done in store {self.path!r}",
                "its data is written but it will be recomputed by the next run",
            ) from e

    def mark_not_done(self, batches: Iterable[int]) -> None:
        """Clears the done flags of ``batches`` (before re-describing them: a run killed while
        rewriting one never leaves it flagged done over damaged or changed data)."""
        batches = [int(b) for b in batches]
        for b in batches:
            self.batch_samples(b)
        futures = [self._arrays["done"][b].write(np.uint8(0)) for b in batches]
        for future in futures:
            future.result()

    def discard_batches(self, batches: Iterable[int]) -> None:
        """Marks ``batches`` not done, then deletes every chunk they wrote, so that they are
        written again from scratch (a damaged chunk of a partial last batch would otherwise be
        read back to merge the new rows into it)."""
        batches = sorted({int(b) for b in batches})
        self.mark_not_done(batches)
        kv = ts.KvStore.open(self._kvspec).result()
        futures = [
            kv.delete_range(ts.KvStore.KeyRange(key, key + "\0"))
            for b in batches
            for name, key in self.batch_chunk_keys(b).items()
            if name != "done"
        ]
        for future in futures:
            future.result()

    def read_source_digests(self) -> np.ndarray | None:
        """``uint8 [num_batches, 16]`` digests of the described source batches (rows of zeros:
        unknown), or None for stores written before they were recorded."""
        array = self._arrays.get("source_digest")
        if array is None:
            return None
        return self._result(array.read(), "source_digest")

    # ------------------------------------------------------------------ integrity
    def _keys(self) -> set[str]:
        kv = ts.KvStore.open(self._kvspec).result()
        return {k.decode() for k in kv.list().result()}

    def _corrupt(self, e: BaseException, name: str) -> StoreCorruptError:
        where = _chunk_of_error(e)
        text = _short(e)
        if where is None:
            return StoreCorruptError(
                f"store {self.path!r} is damaged: reading {name!r} failed ({text}); {_REPAIR}"
            )
        array, b = where
        return StoreCorruptError(
            f"store {self.path!r} is damaged: the {array!r} chunk of batch {b} cannot be read "
            f"({text}); {_REPAIR}",
            batches=[b],
        )

    def _result(self, future, name: str):
        try:
            return future.result()
        except ValueError as e:
            raise self._corrupt(e, name) from e

    def _check_present(self, names: Iterable[str]) -> None:
        """Raises :class:`StoreCorruptError` when a done batch lacks a chunk of ``names``
        (checksummed stores only: older ones did not store chunks equal to the fill value)."""
        if not self.has_checksums or self.num_batches == 0:
            return
        keys = self._keys()
        done = np.flatnonzero(self.done_batches())
        names = [*names, "batch_digest"]  # the record the reads check the chunks against
        missing = {}
        for b in done:
            chunk_keys = self.batch_chunk_keys(int(b))
            for name in names:
                if name in chunk_keys and chunk_keys[name] not in keys:
                    missing.setdefault(int(b), chunk_keys[name])
        if missing:
            first = min(missing)
            raise StoreCorruptError(
                f"store {self.path!r} is damaged: {len(missing)} done batches have missing "
                f"chunks (first: batch {first}, {missing[first]!r}); {_REPAIR}",
                batches=missing,
            )

    def _check_sample_idx(self, sample_idx: np.ndarray, start: int) -> None:
        """Rows of done batches must name their own sample (catches chunks swapped or copied
        between batches, which their checksums cannot)."""
        expected = (np.arange(start, start + sample_idx.size) // self.rows_per_sample).astype(
            np.int64
        )
        bad = np.flatnonzero(sample_idx != expected)
        if bad.size:
            rows_per_batch = self.batch_size * self.rows_per_sample
            batches = np.unique((start + bad) // rows_per_batch).tolist()
            raise StoreCorruptError(
                f"store {self.path!r} is damaged: row {start + int(bad[0])} (batch {batches[0]}) "
                f"is recorded for sample {int(sample_idx[bad[0]])}, expected "
                f"{int(expected[bad[0]])} ({len(batches)} batches affected); {_REPAIR}",
                batches=batches,
            )

    def _check_tied(self, values: Mapping[str, np.ndarray], done: np.ndarray) -> None:
        """Raises :class:`StoreCorruptError` when the chunk of a done batch in ``values`` (whole
        arrays, just read) is not the one that batch wrote: its checksum is intact but its bytes
        are another batch's (copied or swapped). Hashes the bytes already read: no extra read
        but the small ``batch_digest`` array. Stores without batch digests are not checked."""
        tied = self._tied
        names = [name for name in values if name in tied]
        batches = np.flatnonzero(done)
        if not names or not batches.size:
            return
        record = self._result(self._arrays["batch_digest"].read(), "batch_digest")
        items = [
            (int(b), name, values[name][self._batch_index(name, int(b))])
            for b in batches
            for name in names
        ]
        bad: dict[int, list[str]] = {}
        for (b, name, _), digest in zip(items, _digests(items), strict=True):
            if digest != record[b, tied.index(name)].tobytes():
                bad.setdefault(b, []).append(name)
        if bad:
            first = min(bad)
            what = (
                f"its {'batch_digest'!r} record matches none of its chunks"
                if len(bad[first]) == len(names) > 1
                else f"the {bad[first][0]!r} chunk is not the one batch {first} wrote"
            )
            raise StoreCorruptError(
                f"store {self.path!r} is damaged: in batch {first}, {what} (checksums intact: "
                f"copied or swapped in from another batch?; {len(bad)} batches affected); "
                f"{_REPAIR}",
                batches=bad,
            )

    def verify(self, batches: Iterable[int] | None = None, *, window: int = 32) -> IntegrityReport:
        """Reads every chunk of every done batch and reports the damaged ones.

        A chunk is damaged when it is missing, truncated or fails its ``crc32c`` checksum, or
        when its bytes are not the ones its batch wrote (``batch_digest``: a chunk copied or
        swapped in from another batch; in stores written before batch digests, only
        ``sample_idx`` chunks naming other samples than their batch's). Batches not done are
        not checked (``describe`` computes them anyway).

        Args:
          batches: Batches to check (default: all).
          window: Batches read concurrently (bounds memory to ``window`` batches of chunks).

        Returns:
          An :class:`IntegrityReport` (``report.ok``, ``report.damaged``, ``report.summary()``);
          ``checked=False`` for stores written before checksums, ``limits`` set for stores
          written before batch digests.
        """
        if not self.has_checksums:
            return IntegrityReport(
                False,
                f"store {self.path!r} was written before goldener-jax stored chunk checksums; "
                "describe it again with overwrite=True to add them",
                0,
                {},
            )
        candidates = range(self.num_batches) if batches is None else [int(b) for b in batches]
        done = self.done_batches()
        todo = [b for b in candidates if done[b]]
        damaged: dict[int, list[str]] = {}
        # A done flag that cannot be read counts as "not done" (re-described), not as damage.
        keys = self._keys()
        reads = []
        for b in todo:
            for name, key in self.batch_chunk_keys(b).items():
                if key not in keys:
                    damaged.setdefault(b, []).append(f"chunk {key!r} is missing")
                elif name != "done":
                    reads.append((b, name, key))
        tied = self._tied
        computed: dict[int, dict[str, bytes]] = {}  # batch -> {array: digest of its chunk}
        recorded: dict[int, np.ndarray] = {}  # batch -> its batch_digest record [K, 16]
        step = max(int(window), 1) * len(_ARRAY_NAMES)
        for i in range(0, len(reads), step):
            part = reads[i : i + step]
            futures = [self._arrays[name][self._batch_index(name, b)].read() for b, name, _ in part]
            hashed = []
            for (b, name, key), future in zip(part, futures, strict=True):
                try:
                    value = future.result()
                except ValueError as e:
                    reason = str(e).split("[tensorstore_spec=")[0].rsplit(": ", 1)[-1].strip()
                    damaged.setdefault(b, []).append(f"chunk {key!r} is unreadable ({reason})")
                    continue
                if name == "batch_digest":
                    recorded[b] = value[0]
                elif name in tied:
                    hashed.append((b, name, value))
                if name == "sample_idx":
                    r0, r1 = self.batch_rows(b)
                    if not np.array_equal(value, np.arange(r0, r1) // self.rows_per_sample):
                        damaged.setdefault(b, []).append(
                            f"chunk {key!r} names other samples than batch {b}'s"
                        )
            for (b, name, _), digest in zip(hashed, _digests(hashed), strict=True):
                computed.setdefault(b, {})[name] = digest
        for b, record in recorded.items():
            chunk_keys = self.batch_chunk_keys(b)
            moved = [
                name
                for name, digest in computed.get(b, {}).items()
                if digest != record[tied.index(name)].tobytes()
            ]
            if moved and len(moved) == len(tied) > 1:
                # Every chunk disagrees with the record: the record is the odd one out.
                damaged.setdefault(b, []).append(
                    f"chunk {chunk_keys['batch_digest']!r} records other contents than batch "
                    f"{b}'s chunks (copied or swapped in from another batch?)"
                )
                continue
            for name in moved:
                damaged.setdefault(b, []).append(
                    f"chunk {chunk_keys[name]!r} is not the one batch {b} wrote (its checksum is "
                    "intact: copied or swapped in from another batch?)"
                )
        not_done = sum(1 for b in candidates if not done[b])
        return IntegrityReport(
            True,
            "",
            len(todo),
            dict(sorted(damaged.items())),
            not_done,
            "" if self.has_batch_digests else _UNTIED,
        )

    # ------------------------------------------------------------------ reading
    def read_rows(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Rows ``[start, stop)``: ``{"vectors", "sample_idx", "valid"}`` as NumPy arrays.
        Raises :class:`StoreCorruptError` (naming the batch) when a chunk fails its checksum."""
        if not (0 <= start <= stop <= self.num_rows):
            raise IndexError(f"row range [{start}, {stop}) out of [0, {self.num_rows}]")
        futures = {
            name: self._arrays[name][start:stop].read()
            for name in ("vectors", "sample_idx", "valid")
        }
        return {name: self._result(f, name) for name, f in futures.items()}

    def read_vectors(self, *, valid_only: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """All vectors and their sample indices: ``(vectors [Nv', D], sample_idx [Nv'])``, padding
        rows dropped when ``valid_only``. Raises ``ValueError`` if the store is incomplete and
        :class:`StoreCorruptError` if a chunk is damaged (missing, truncated, checksum)."""
        missing = np.flatnonzero(~self.done_batches())
        if missing.size:
            raise ValueError(
                f"store {self.path!r} is incomplete: {missing.size} of {self.num_batches} "
                f"batches not done (first: {int(missing[0])}); run describe again to finish it"
            )
        self._check_present(("vectors", "sample_idx", "valid"))
        rows = self.read_rows(0, self.num_rows)
        self._check_sample_idx(rows["sample_idx"], 0)
        self._check_tied(rows, np.ones(self.num_batches, bool))  # every batch is done (above)
        if not valid_only:
            return rows["vectors"], rows["sample_idx"]
        keep = rows["valid"]
        return rows["vectors"][keep], rows["sample_idx"][keep]

    def read_labels(self) -> np.ndarray | None:
        """Per-sample labels (None without). Raises :class:`StoreCorruptError` when a done
        batch's chunk is damaged: missing, checksum, or not the one its batch wrote."""
        return self._read_per_sample("labels")

    def read_groups(self) -> np.ndarray | None:
        """Per-sample group ids (None without); damaged chunks raise as in :meth:`read_labels`."""
        return self._read_per_sample("groups")

    def _read_per_sample(self, name: str) -> np.ndarray | None:
        array = self._arrays[name]
        if array is None:
            return None
        self._check_present((name,))
        values = self._result(array.read(), name)
        if self.has_batch_digests:
            self._check_tied({name: values}, self.done_batches())
        return values
