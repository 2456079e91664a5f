"""describe: run a feature extractor over a source and write the vectors to a FeatureStore,
resumably.

For each batch not yet done: a jitted step (model + capture + fuse + vectorize, all inside the
extractor) computes ``(vectors [B, R, C], valid [B, R])``; a writer thread writes the rows and then
marks the batch done. JAX dispatch is asynchronous, so the device computes batch ``i + 1`` while
the writer thread waits for and writes batch ``i`` (at most ``max_in_flight`` batches queued).

The extractor is duck-typed: any object with ``__call__(x, *, mask=None, key=None) -> (vectors,
valid)`` that is traceable by ``jax.jit`` and a ``fingerprint`` string (a stable digest of its
configuration: model, weights, layers, fusion, vectorizer) works;
:class:`goldener_jax.FeatureExtractor` is one. ``mask`` / ``key`` are passed only when the source
has a mask key / ``describe`` is given a key (then ``key`` is an array of ``B`` keys, one per
sample). An optional ``config()`` method returning a JSON-able
dict is recorded in the manifest and used to name what differs when a store is reopened with
another extractor.

Integrity on resume: the run holds the store's lock (one writer per store, see
``goldener_jax._locks``), re-does the done batches whose chunks are damaged
(:meth:`FeatureStore.verify`), and compares each done batch's source digest with the source it
is given now: changed samples are refused (:class:`SourceChangedError`) unless
``redescribe_changed=True``.

Appending (``append=True``): the source is the grown data set, whose first ``N`` samples are the
``N`` the store describes. The store is checked as on resume (same extractor fingerprint, same
source but for its length, same batch size and dtype; the described samples' chunks and source
digests), grown (:meth:`FeatureStore.grow`) and only the new samples go through the extractor: in
the old partial last batch the described samples' slots are filled with a copy of the first new
sample (same compiled shape, same positions, so same per-sample keys), and their stored rows are
kept. The result is file for file the store a one-shot ``describe`` of the grown source writes,
for extractors that describe each sample on its own (which ``describe`` assumes anyway: the last
batch is padded with copies of its last sample).
"""

from __future__ import annotations

import collections
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from goldener_jax import _digest, _locks
from goldener_jax.checkpoint import Checkpointer as Checkpointer
from goldener_jax.checkpoint import CheckpointMismatchError as CheckpointMismatchError
from goldener_jax.checkpoint import resumable_loop as resumable_loop
from goldener_jax.sources import ArraySource as ArraySource
from goldener_jax.sources import IterableSource as IterableSource
from goldener_jax.sources import RandomAccessSource as RandomAccessSource
from goldener_jax.sources import Source, as_source
from goldener_jax.sources import TFDSSource as TFDSSource
from goldener_jax.store import FeatureStore, config_differences
from goldener_jax.store import StoreCorruptError as StoreCorruptError
from goldener_jax.store import StoreMismatchError as StoreMismatchError


class SourceChangedError(StoreMismatchError):
    """Samples a store already describes differ from the source given to a resumed describe."""


# describe() is the entry point of this layer; the store, source and checkpoint names are
# re-exported here so that `goldener_jax/__init__.py` imports them in one statement.
__all__ = [
    "ArraySource",
    "CheckpointMismatchError",
    "Checkpointer",
    "FeatureStore",
    "IterableSource",
    "RandomAccessSource",
    "Source",
    "SourceChangedError",
    "StoreCorruptError",
    "StoreMismatchError",
    "TFDSSource",
    "as_source",
    "describe",
    "resumable_loop",
]

_DEFAULT_BATCH_SIZE = 64


def _check_extractor(extractor) -> tuple[str, dict]:
    if not callable(extractor):
        raise TypeError(
            "extractor must be callable as extractor(x) -> (vectors [B, R, C], valid [B, R]), "
            f"got {type(extractor).__name__}"
        )
    fingerprint = getattr(extractor, "fingerprint", None)
    if callable(fingerprint):
        fingerprint = fingerprint()
    if not isinstance(fingerprint, str) or not fingerprint:
        raise TypeError(
            "extractor must have a non-empty str `fingerprint` (a stable digest of model, weights, "
            f"layers, fusion, vectorizer) so a store can refuse to mix; got {fingerprint!r}"
        )
    config = getattr(extractor, "config", None)
    config = config() if callable(config) else (config if isinstance(config, dict) else {})
    return fingerprint, config


def _label_spec(batch: dict, key: str | None, name: str) -> tuple[tuple[int, ...], str] | None:
    if key is None:
        return None
    value = batch[key]
    if value.dtype == bool or np.issubdtype(value.dtype, np.integer):
        if name == "groups" and value.ndim != 1:
            raise ValueError(
                f"groups ({key!r}) must be [N] integers, got per-sample shape {value.shape[1:]}"
            )
        if value.ndim > 2:
            raise ValueError(
                f"{name} ({key!r}) must be [N] ints or [N, L] multi-hot, got shape {value.shape}"
            )
        return tuple(value.shape[1:]), str(value.dtype)
    raise TypeError(
        f"{name} ({key!r}) must be integers (or bool multi-hot), got dtype {value.dtype}; "
        "encode them first, e.g. np.unique(values, return_inverse=True)[1]"
    )


def _apply(ex, x, mask, key, start, dtype: str):
    kwargs = {}
    if mask is not None:
        kwargs["mask"] = mask
    if key is not None:
        # One key per sample, from its index in the source: draws do not depend on the batch
        # size or on where a run was resumed.
        index = start + jnp.arange(x.shape[0])
        kwargs["key"] = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, index)
    vectors, valid = ex(x, **kwargs)
    if vectors.ndim == 2:  # one row per sample
        vectors, valid = vectors[:, None, :], jnp.reshape(valid, (-1, 1))
    return vectors.astype(dtype), valid.astype(bool)


# Module-level jitted steps: a second describe call with the same extractor reuses the compiled
# step (jit caches on the function object). A pytree extractor (FeatureExtractor: its leaves are
# the variables) is an argument, so the weights are inputs, not constants baked into the program;
# another hashable callable is a static argument; anything else is closed over (compiled per call).
_jit_pytree = jax.jit(_apply, static_argnames=("dtype",))
_jit_static = jax.jit(_apply, static_argnames=("ex", "dtype"))


def _jitted_step(extractor, dtype: str):
    leaves = jax.tree.leaves(extractor)
    if leaves and not (len(leaves) == 1 and leaves[0] is extractor):
        return lambda x, m, k, s: _jit_pytree(extractor, x, m, k, s, dtype=dtype)
    try:
        hash(extractor)
    except TypeError:
        return jax.jit(lambda x, m, k, s: _apply(extractor, x, m, k, s, dtype))
    return lambda x, m, k, s: _jit_static(extractor, x, m, k, s, dtype=dtype)


def _pad(x: np.ndarray, size: int) -> np.ndarray:
    """Pads the batch axis to ``size`` by repeating the last sample (one compiled shape)."""
    if x.shape[0] == size:
        return x
    return np.concatenate([x, np.repeat(x[-1:], size - x.shape[0], axis=0)])


def _check_batch_keys(batch, src: Source, b: int) -> None:
    if not isinstance(batch, dict):
        raise TypeError(f"batch {b} of source {src.name!r} is {type(batch).__name__}, not a dict")
    for key in src.keys:
        if key not in batch:
            raise KeyError(
                f"batch {b} of source {src.name!r} has no key {key!r} (keys present: "
                f"{sorted(batch)}); set data_key / label_key / group_key / mask_key"
            )


def _input_spec(batch: dict, key: str) -> tuple[tuple[int, ...], str]:
    value = np.asarray(batch[key])
    return tuple(int(s) for s in value.shape[1:]), str(value.dtype)


def _check_input(batch: dict, key: str, expected, b: int, where: str) -> None:
    """Refuses a batch whose model input has another per-sample shape than ``expected`` before
    it reaches the model (a Flax shape error deep in a trace names neither)."""
    if expected is None:
        return
    got = tuple(np.shape(batch[key])[1:])
    if got != tuple(expected):
        raise ValueError(
            f"batch {b}: {key!r} has per-sample shape {got}, expected {tuple(expected)} "
            f"({where}); give inputs of one shape (resize or pad them in the source)"
        )


def _run_first(jstep, args, key: str, x) -> tuple:
    try:
        return jstep(*args)
    except Exception as e:
        # goldener-jax's own errors (unknown layer, bad mask, the input-shape error of
        # features.py) are already clear: only a foreign error gets the input named.
        tb, origin = e.__traceback__, ""
        while tb is not None:
            origin, tb = tb.tb_frame.f_code.co_filename, tb.tb_next
        if f"{os.sep}goldener_jax{os.sep}" in origin:
            raise
        raise ValueError(
            f"the extractor failed on batch 0, {key!r} of shape {tuple(np.shape(x))} and dtype "
            f"{np.asarray(x).dtype}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            "; check that the inputs have the shape and dtype the model was built for"
        ) from e


def _changed_batches(src: Source, store: FeatureStore, batches: list[int], batch_size: int, where):
    """Done batches whose source content differs from the digest recorded when they were
    described (batches recorded without a digest are not checked). Only the samples the store
    holds are compared: appending, the source's batch may be longer than the store's last."""
    stored = store.read_source_digests()
    if stored is None or not batches:
        return []
    known = [b for b in batches if stored[b].any()]
    changed = []
    for b, batch in src.iter_batches(batch_size, known):
        _check_batch_keys(batch, src, b)
        _check_input(batch, src.data_key, store.layout.get("input_shape"), b, where)
        s0, s1 = store.batch_samples(b)
        if len(batch[src.data_key]) > s1 - s0:
            batch = {k: np.asarray(batch[k])[: s1 - s0] for k in src.keys}
        if _digest.batch_digest(batch, src.keys) != stored[b].tobytes():
            changed.append(b)
    return changed


class _Head(NamedTuple):
    """Appending: the old partial last batch ``batch``, whose first ``count`` samples the store
    already describes (their rows ``[count, R, D]`` and valid flags ``[count, R]``, kept)."""

    batch: int
    count: int
    vectors: np.ndarray
    valid: np.ndarray


def _check_append(existing: dict, source_fp: dict, n: int, append: bool, path) -> None:
    """Names the fix when the source only differs from the store's by being longer, and refuses
    an append from a shorter source, before the generic comparison does."""
    n_old = existing["layout"]["num_samples"]
    if n == n_old:
        return
    others = config_differences(
        {k: v for k, v in existing["source"].items() if k != "length"},
        {k: v for k, v in source_fp.items() if k != "length"},
    )
    if others:
        return  # FeatureStore._check_same names them
    if n > n_old and not append:
        raise StoreMismatchError(
            f"store {path!r} describes {n_old} samples, the source has {n}: pass append=True to "
            f"describe the {n - n_old} new samples and append them, or overwrite=True to start "
            "over"
        )
    if n < n_old and append:
        raise StoreMismatchError(
            f"cannot append to store {path!r}: it holds {n_old} samples, the source only {n}; "
            "append=True needs the grown source (the described samples first, then the new ones)"
        )


def _grow(store: FeatureStore, n: int, source_fp: dict, proc: int, nproc: int, path):
    """Grows ``store`` to ``n`` samples; returns it and the kept rows of its old partial last
    batch (``None`` when there is none, it is not done, or several processes write: then that
    batch's owner describes it again whole)."""
    head = None
    b = store.num_batches - 1
    k = store.num_samples - b * store.batch_size
    if nproc == 1 and b >= 0 and k < store.batch_size and store.done_batches()[b]:
        # Checked above (verify: checksums, sample ids; the source digest when check_source).
        rows = store.read_rows(*store.batch_rows(b))
        r, d = store.rows_per_sample, store.dim
        head = _Head(b, k, rows["vectors"].reshape(k, r, d), rows["valid"].reshape(k, r))
    if nproc == 1:
        return store.grow(n, source_fp), head
    from jax.experimental import multihost_utils

    # Every process has checked its batches of the old store before process 0 grows it, and
    # reopens it grown after.
    multihost_utils.sync_global_devices("goldener_jax.describe:append-checked")
    if proc == 0:
        store.grow(n, source_fp)
    multihost_utils.sync_global_devices("goldener_jax.describe:append-grown")
    return FeatureStore.resume(path, FeatureStore.peek_manifest(path)), head


def _fill_head(args: tuple, count: int) -> tuple:
    """The inputs of the old partial last batch with its first ``count`` (already described)
    samples replaced by copies of the first new one: the extractor only sees new samples, each
    at its own position (same compiled shape, same per-sample key)."""
    x, mask, key, start = args
    x = np.array(x)
    x[:count] = x[count]
    if mask is not None:
        mask = np.array(mask)
        mask[:count] = mask[count]
    return x, mask, key, start


def describe(
    source,
    extractor,
    path,
    *,
    batch_size: int | None = None,
    dtype: str = "float32",
    data_key: str = "image",
    label_key: str | None = None,
    group_key: str | None = None,
    mask_key: str | None = None,
    labels=None,
    groups=None,
    key: jax.Array | None = None,
    overwrite: bool = False,
    progress: bool = True,
    max_in_flight: int = 2,
    check_source: bool = True,
    redescribe_changed: bool = False,
    append: bool = False,
) -> FeatureStore:
    """Describes every sample of ``source`` with ``extractor`` into the store at ``path``.

    Resumable: run the same call again after a crash (even ``kill -9``) and only the batches not
    marked done are computed; the final arrays are bit-identical to an uninterrupted run.

    Args:
        source: Arrays, a dict of arrays, a random-access data source (``tfds.data_source``,
            grain), a re-iterable of batches, or a :class:`goldener_jax.sources.Source`.
        extractor: See the module docstring (a :class:`goldener_jax.FeatureExtractor`).
        path: Store directory or TensorStore kvstore URL (``gs://...``).
        batch_size: Samples per batch; fixed for the life of the store (it is the chunk size and
            decides which samples share a compiled call). Default: the store's, else 64.
        dtype: ``"float32"`` or ``"bfloat16"`` for the stored vectors.
        data_key: Key of the model input in the batches.
        label_key: Key of integer (or multi-hot) labels in the batches.
        group_key: Key of integer group ids in the batches.
        mask_key: Key of an optional mask in the batches (passed to the extractor as ``mask=``).
        labels: Per-sample labels given next to array data.
        groups: Per-sample group ids given next to array data.
        key: Optional ``jax.random.key`` for extractors that draw (``Vectorizer(random=n)``):
            the extractor gets one key per sample, ``fold_in(key, sample_index)``, so draws do
            not depend on the batch size or on resume points.
        overwrite: Start over when ``path`` holds a store written with another configuration.
        progress: Show a tqdm bar (done / total batches, rows/s, skipped batches).
        max_in_flight: Batches computed but not yet written that may be queued (bounds memory).
        check_source: On resume, read the source's already-described batches again and compare
            them with the digests recorded when they were described (costs one read of those
            batches, no model call). False trusts the source.
        redescribe_changed: Re-describe the batches whose source changed instead of raising
            :class:`SourceChangedError`.
        append: ``source`` is the grown data set: its first samples are those the store at
            ``path`` describes, the rest are described and appended (only they go through the
            extractor; see the module docstring). Refused (:class:`StoreMismatchError` naming
            what differs) when the store was written with another extractor fingerprint, batch
            size or dtype, or from another source (name, keys). Resumable like any run; with
            no store at ``path`` it describes the whole source.

    Returns:
        The :class:`FeatureStore`.

    Raises:
        StoreMismatchError: ``path`` holds a store from another extractor / source / layout
            (a longer source without ``append=True`` included).
        StoreCorruptError: The manifest at ``path`` is unreadable.
        SourceChangedError: Resuming, already-described samples differ from ``source``.
        goldener_jax._locks.LockedError: Another run is writing to ``path``.
        OSError: A write failed (the batch in question is not marked done).
    """
    src = as_source(
        source,
        data_key=data_key,
        label_key=label_key,
        group_key=group_key,
        mask_key=mask_key,
        labels=labels,
        groups=groups,
    )
    fingerprint, config = _check_extractor(extractor)
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or max_in_flight < 1:
        raise ValueError(f"max_in_flight must be an int >= 1, got {max_in_flight!r}")
    if not isinstance(append, bool):
        raise TypeError(f"append must be a bool, got {append!r}")
    if append and overwrite:
        raise ValueError(
            "append=True and overwrite=True contradict each other: append keeps the store's "
            "samples, overwrite starts it over"
        )
    n = len(src)
    if n == 0:
        raise ValueError(f"source {src.name!r} is empty; nothing to describe")
    proc, nproc = jax.process_index(), jax.process_count()
    existing = None if overwrite else FeatureStore.peek_manifest(path)
    # One writer per store: process 0 of a run holds the lock until describe returns (the other
    # processes of the same run write their own batches under it).
    lock = _locks.lock_directory(path, "feature store") if proc == 0 else None
    try:
        return _describe(
            src, extractor, path, fingerprint, config, existing,
            batch_size=batch_size, dtype=dtype, key=key, overwrite=overwrite,
            progress=progress, max_in_flight=max_in_flight, check_source=check_source,
            redescribe_changed=redescribe_changed, append=append, proc=proc, nproc=nproc,
        )  # fmt: skip
    finally:
        if lock is not None:
            lock.release()


def _describe(
    src, extractor, path, fingerprint, config, existing, *, batch_size, dtype, key, overwrite,
    progress, max_in_flight, check_source, redescribe_changed, append, proc, nproc,
) -> FeatureStore:  # fmt: skip
    n = len(src)
    if batch_size is None:
        batch_size = existing["layout"]["batch_size"] if existing else _DEFAULT_BATCH_SIZE
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or (batch_size < 1)
    ):
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    batch_size = int(batch_size)
    num_batches = src.num_batches(batch_size)
    source_fp = src.fingerprint()

    jstep = _jitted_step(extractor, dtype)

    def inputs(b: int, batch: dict):
        x = _pad(np.asarray(batch[src.data_key]), batch_size)
        mask = None if src.mask_key is None else _pad(np.asarray(batch[src.mask_key]), batch_size)
        return x, mask, key, np.int32(b * batch_size)

    probe = None
    head = None  # appending: the rows of the old partial last batch, kept
    if existing is None:
        # A new store: its layout (R, D, label shapes) comes from the first batch.
        b0, first = next(iter(src.iter_batches(batch_size, [0])))
        _check_batch_keys(first, src, b0)
        # Computing batch 0 gives the output shape (dispatch is asynchronous) and is not
        # wasted: a new store needs it.
        out = _run_first(jstep, inputs(b0, first), src.data_key, first[src.data_key])
        _, rows_per_sample, dim = out[0].shape
        manifest = FeatureStore.build_manifest(
            extractor_fingerprint=fingerprint,
            extractor_config=config,
            source=source_fp,
            num_samples=n,
            rows_per_sample=rows_per_sample,
            dim=dim,
            dtype=dtype,
            batch_size=batch_size,
            labels=_label_spec(first, src.label_key, "labels"),
            groups=_label_spec(first, src.group_key, "groups"),
            input_spec=_input_spec(first, src.data_key),
        )
        probe = (b0, first, out)
    store = None
    if nproc > 1:
        # Process 0 creates the store, the others open it after the barrier, which every process
        # passes exactly once whatever it found at `path`.
        from jax.experimental import multihost_utils

        if proc == 0 and existing is None:
            store = FeatureStore.create(path, manifest, overwrite=overwrite)
        multihost_utils.sync_global_devices("goldener_jax.describe:create")
    if store is None and existing is None:
        store = FeatureStore.create(path, manifest, overwrite=overwrite and nproc == 1)
    elif store is None:
        n_old = existing["layout"]["num_samples"]
        _check_append(existing, source_fp, n, append, path)
        requested = {
            "extractor": {"fingerprint": fingerprint, "config": config},
            # Appending, the store holds the source's first n_old samples.
            "source": {**source_fp, "length": n_old} if append else source_fp,
            "layout": {"batch_size": batch_size, "dtype": dtype},
        }
        FeatureStore._check_same(existing, requested, path)
        store = FeatureStore.resume(path, existing)

    done = store.done_batches()
    mine = [b for b in range(num_batches) if b % nproc == proc]
    redo: list[int] = []
    if existing is not None:
        import warnings

        # Appending, the store holds only the first batches of the grown source.
        done_mine = [b for b in mine if b < done.size and done[b]]
        report = store.verify(done_mine)
        if report.damaged:
            warnings.warn(
                f"store {path!r}: re-describing {len(report.damaged)} damaged batches "
                f"({report.summary()})",
                RuntimeWarning,
                stacklevel=3,
            )
            redo += list(report.damaged)
        if check_source:
            intact = [b for b in done_mine if b not in report.damaged]
            where = f"the shape store {path!r} was described from"
            changed = _changed_batches(src, store, intact, batch_size, where)
            if changed and not redescribe_changed:
                s0, s1 = store.batch_samples(changed[0])
                if append and 2 * len(changed) > len(intact):
                    # Most described samples differ: not an edit of a few samples but a source
                    # that does not start with them (only the new samples, most often).
                    # Re-describing them would replace the store's descriptions.
                    raise SourceChangedError(
                        f"cannot append to store {path!r}: {len(changed)} of its "
                        f"{len(intact)} described batches differ from the source's first "
                        f"samples (first: batch {changed[0]}, samples {s0}..{s1 - 1}); "
                        "append=True needs the grown source (the described samples first, then "
                        "the new ones), not the new samples alone"
                    )
                raise SourceChangedError(
                    f"the source differs from the one store {path!r} was described from: "
                    f"{len(changed)} described batches changed (first: batch {changed[0]}, "
                    f"samples {s0}..{s1 - 1}); pass redescribe_changed=True to describe them "
                    "again, overwrite=True to start over, or give the original data"
                )
            redo += changed
        if redo:
            # Flags first: a run killed while rewriting never leaves these batches done.
            store.discard_batches(redo)
            done = store.done_batches()
        if store.num_samples < n:
            store, head = _grow(store, n, source_fp, proc, nproc, path)
            done = store.done_batches()
    pending = [b for b in mine if not done[b]]
    skipped = len(mine) - len(pending)
    layout_input = store.layout.get("input_shape")
    where = (
        f"the shape store {path!r} was described from"
        if existing is not None
        else "the shape of batch 0"
    )
    r = store.rows_per_sample

    bar = None
    if progress and proc == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(mine), initial=skipped, desc="describe", unit="batch")
        bar.set_postfix(rows_s="-", skipped=skipped)
    stats_lock = threading.Lock()
    stats = {"rows": 0, "t0": time.perf_counter()}

    def write(b: int, out, n_b: int, lab, grp, digest) -> None:
        vectors, valid = (np.asarray(a) for a in out)  # waits for the device
        vectors, valid = vectors[:n_b], valid[:n_b]
        if vectors.shape[1:] != (r, store.dim):
            raise ValueError(
                f"batch {b}: extractor returned vectors of per-sample shape {vectors.shape[1:]}, "
                f"the store at {path!r} holds ({r}, {store.dim}); pass overwrite=True to start over"
            )
        if head is not None and b == head.batch:
            # The samples described before the append keep their stored rows.
            k = head.count
            vectors = np.concatenate([head.vectors.astype(vectors.dtype), vectors[k:]])
            valid = np.concatenate([head.valid, valid[k:]])
        finite = np.isfinite(vectors).all(-1)
        if not (finite | ~valid).all():
            bad = int(np.argwhere(~finite & valid)[0, 0])
            raise ValueError(
                f"batch {b}: the extractor produced NaN or Inf vectors (first at sample "
                f"{b * batch_size + bad}); check the input data and preprocessing"
            )
        store.write_batch(
            b,
            vectors.reshape(n_b * r, -1),
            valid.reshape(-1),
            labels=lab,
            groups=grp,
            source_digest=digest,
        )
        with stats_lock:
            stats["rows"] += n_b * r
            if bar is not None:
                rate = stats["rows"] / max(time.perf_counter() - stats["t0"], 1e-9)
                bar.set_postfix(rows_s=f"{rate:,.0f}", skipped=skipped, refresh=False)
                bar.update(1)

    def batches():
        rest = pending
        if probe is not None and pending and pending[0] == probe[0]:
            yield probe
            rest = pending[1:]
        for b, batch in src.iter_batches(batch_size, rest):
            yield b, batch, None

    inflight: collections.deque = collections.deque()
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="goldener-describe-writer")
    try:
        for b, batch, out in batches():
            _check_batch_keys(batch, src, b)
            s0, s1 = store.batch_samples(b)
            n_b = len(batch[src.data_key])
            if n_b != s1 - s0:
                raise ValueError(
                    f"batch {b} of source {src.name!r} has {n_b} samples, expected {s1 - s0}"
                )
            lab = None if src.label_key is None else batch[src.label_key]
            grp = None if src.group_key is None else batch[src.group_key]
            _check_input(batch, src.data_key, layout_input, b, where)
            digest = _digest.batch_digest(batch, src.keys)
            if out is None:
                args = inputs(b, batch)
                if head is not None and b == head.batch:
                    args = _fill_head(args, head.count)
                out = jstep(*args)  # asynchronous dispatch
            inflight.append(writer.submit(write, b, out, n_b, lab, grp, digest))
            while len(inflight) > max_in_flight:
                inflight.popleft().result()
        while inflight:
            inflight.popleft().result()
    except BaseException:
        # Batches already computed are still written (each is independent and flagged only after
        # its own data), so a failing source or a Ctrl-C loses no finished work.
        for future in inflight:
            try:
                future.result()
            except Exception:  # noqa: BLE001 - the first error is the one raised
                pass
        raise
    finally:
        writer.shutdown(wait=True)
        if bar is not None:
            bar.close()
    if nproc > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("goldener_jax.describe:done")
    return store
