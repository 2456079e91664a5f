"""A resumable-loop helper on Orbax ``CheckpointManager``.

Long loops (selection kernels stepping over a store) save their state pytree (a ``NamedTuple``
of arrays, or any pytree of arrays) every ``every_steps`` steps and/or every ``every_seconds``
seconds, keep the last ``keep`` checkpoints, and resume from the latest one. Each checkpoint
holds the state and the loop's ``config`` (JSON); reopening a directory whose checkpoints were
written with another config raises :class:`CheckpointMismatchError` naming what differs, unless
``overwrite=True``. Orbax writes each checkpoint to a temporary directory and renames it when
complete, so a process killed mid-save leaves the previous checkpoint as the latest.

Example::

    with Checkpointer(path, config={"k": k, "metric": "euclidean"}, every_steps=100) as ckpt:
        state, start = ckpt.restore(init_state)
        for step in range(start, num_steps):
            state = step_fn(state, step)
            ckpt.maybe_save(step + 1, state)   # `step + 1` steps are done in `state`
        ckpt.save(num_steps, state)

or simply ``resumable_loop(step_fn, init_state, num_steps, path, config=..., every_steps=100)``.
PRNG keys in the state should be raw ``jax.random.key_data`` arrays (uint32), not typed keys.

One writer per directory: a :class:`Checkpointer` holds an OS file lock on the directory (local
paths) from its creation to :meth:`Checkpointer.close`; a second one on the same directory raises
``goldener_jax._locks.LockedError`` naming the holder. A killed process's lock goes with it.
A checkpoint that cannot be read raises :class:`CheckpointCorruptError` saying which one and what
to do; a save that fails for a full disk raises an ``OSError`` saying so.
"""

from __future__ import annotations

import errno
import json
import os
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from goldener_jax import _locks
from goldener_jax._locks import LockedError as LockedError
from goldener_jax.store import config_differences

__all__ = [
    "CheckpointCorruptError",
    "CheckpointMismatchError",
    "Checkpointer",
    "LockedError",
    "resumable_loop",
]


class CheckpointMismatchError(ValueError):
    """The checkpoints at a path were written with another loop config.

    Attributes:
        path: The checkpoint directory.
        differences: What differs, one line per key (``"k: 5 in the checkpoint, 6 requested"``),
            for callers that word the refusal for their own arguments (``select`` /
            ``split`` take no ``overwrite``).
    """

    def __init__(self, message: str, path: str | None = None, differences=()):
        super().__init__(message)
        self.path = path
        self.differences = list(differences)


class CheckpointCorruptError(ValueError):
    """A checkpoint's files are damaged (changed, truncated or missing) and cannot be restored."""


# TensorStore status codes and parse errors that mean damaged files, not a structure mismatch.
_DAMAGE_TOKENS = (
    "DATA_LOSS",
    "OUT_OF_RANGE",
    "NOT_FOUND",
    "FAILED_PRECONDITION",
    "Error reading",
    "Error opening",
    "JSON",
    "decode",
)


def _state_digest(state) -> str:
    """BLAKE2b of every leaf of ``state`` (dtype, shape, bytes) in tree order."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for leaf in jax.tree.leaves(state):
        if isinstance(leaf, jax.Array) and jax.numpy.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        value = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{value.dtype.str}|{value.shape}|".encode())
        h.update(value.tobytes())
    return h.hexdigest()


def _is_disk_full(e: BaseException) -> bool:
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(e) or "RESOURCE_EXHAUSTED" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def _json_config(config: Any) -> Any:
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a JSON-able dict, got {type(config).__name__}")
    try:
        return json.loads(json.dumps(config, sort_keys=True))
    except (TypeError, ValueError) as e:
        raise TypeError(f"config must be a JSON-able dict: {e}") from e


def _positive(value, name: str, kind=(int, np.integer)):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
        raise ValueError(f"{name} must be a positive number or None, got {value!r}")
    return value


class Checkpointer:
    """Saves and restores a loop's state pytree with Orbax.

    Args:
        path: Checkpoint directory (local path or an ``etils.epath`` URL such as ``gs://``).
        config: JSON-able dict describing what the loop computes (data fingerprint, k, metric,
            ...). Checkpoints written with another config are refused.
        every_steps: Save when this many steps passed since the last save.
        every_seconds: Save when this many seconds passed since the last save.
        keep: Number of most recent checkpoints kept.
        overwrite: Delete checkpoints written with another config instead of refusing them.
        async_save: Let Orbax write in the background (the next save or :meth:`close` waits).
        clock: Time source for ``every_seconds`` (tests inject a fake one).
    """

    def __init__(
        self,
        path,
        config: Mapping,
        *,
        every_steps: int | None = None,
        every_seconds: float | None = None,
        keep: int = 3,
        overwrite: bool = False,
        async_save: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ):
        if isinstance(path, os.PathLike):
            path = os.fspath(path)
        if not isinstance(path, str) or not path:
            raise TypeError(f"path must be a directory path or URL (str), got {path!r}")
        if "://" not in path:
            if os.path.exists(path) and not os.path.isdir(path):
                raise ValueError(
                    f"checkpoint directory {path!r} is an existing file; checkpoints need a "
                    "directory (give a new or existing directory path)"
                )
            path = os.path.abspath(path)
        self.path = path
        self.config = _json_config(config)
        self.every_steps = _positive(every_steps, "every_steps")
        self.every_seconds = _positive(every_seconds, "every_seconds", (int, float, np.floating))
        if self.every_steps is None and self.every_seconds is None:
            raise ValueError("give every_steps and/or every_seconds (how often to save)")
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep must be an int >= 1, got {keep!r}")
        self._clock = clock
        self._manager = None
        # One writer per directory (process 0 of a multi-process run holds it for all).
        self._lock = (
            _locks.lock_directory(path, "checkpoint directory")
            if jax.process_index() == 0
            else None
        )
        try:
            options = ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True, enable_async_checkpointing=async_save
            )
            self._manager = ocp.CheckpointManager(
                path, options=options, item_names=("state", "config", "integrity")
            )
            self._check_config(overwrite)
        except BaseException:
            self._release()
            raise
        self._last_step = self._manager.latest_step()
        self._last_time = clock()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _check_config(self, overwrite: bool) -> None:
        for step in self._manager.all_steps():
            try:
                saved = self._manager.restore(
                    step, args=ocp.args.Composite(config=ocp.args.JsonRestore())
                ).config
            except Exception as e:  # Orbax raises several types for unreadable items
                # Debris of a process killed mid-way, most often while Orbax was deleting an
                # old step past `keep` (it removes files one by one): not a checkpoint to resume
                # from. Dropping it costs at most the steps since the previous checkpoint.
                warnings.warn(
                    f"checkpoint {step} in {self.path!r} is incomplete or corrupt ({e}); removing "
                    "it, resuming from the previous checkpoint",
                    RuntimeWarning,
                    stacklevel=3,
                )
                self._manager.delete(step)
                continue
            if saved != self.config:
                if overwrite:
                    self._manager.delete(step)
                    continue
                details = config_differences(
                    saved, self.config, held="in the checkpoint", request="the request"
                )
                raise CheckpointMismatchError(
                    f"checkpoints in {self.path!r} were written with another config "
                    f"({'; '.join(details[:5])}); use another directory or pass overwrite=True",
                    path=str(self.path),
                    differences=details,
                )

    @property
    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def restore(self, like, step: int | None = None) -> tuple[Any, int]:
        """Returns ``(state, step)`` from checkpoint ``step`` (default the latest), shaped like
        ``like`` (a pytree of arrays or ``jax.ShapeDtypeStruct``); ``(like, 0)`` when there is
        no checkpoint yet."""
        step = self._manager.latest_step() if step is None else step
        if step is None:
            return like, 0
        abstract = jax.tree.map(
            lambda a: a if isinstance(a, jax.ShapeDtypeStruct) else np.asarray(a), like
        )
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
            ).state
        except Exception as e:  # Orbax / TensorStore raise many types for damaged files
            text = str(e).split("[tensorstore_spec=")[0].strip().splitlines()
            text = (text[0] if text else "")[:300]
            damaged = not isinstance(e, ValueError) or isinstance(
                e, (UnicodeDecodeError, json.JSONDecodeError)
            )
            damaged = damaged or any(token in str(e) for token in _DAMAGE_TOKENS)
            if not damaged:
                raise ValueError(
                    f"checkpoint {step} in {self.path!r} does not match the structure of "
                    f"`like`: {text}"
                ) from e
            raise self._corrupt(
                step, f"its files cannot be read ({type(e).__name__}: {text})"
            ) from e
        expected = self._saved_digest(step)
        if expected == "":
            raise self._corrupt(step, "its integrity record (the saved state's digest) is damaged")
        if expected is not None and _state_digest(restored) != expected:
            raise self._corrupt(step, "its arrays differ from what was saved (digest mismatch)")
        treedef = jax.tree.structure(like)
        for r, lk in zip(jax.tree.leaves(restored), jax.tree.leaves(like), strict=True):
            if tuple(np.shape(r)) != tuple(np.shape(lk)):
                raise ValueError(
                    f"checkpoint {step} in {self.path!r} does not match the structure of `like`: "
                    f"an array of shape {tuple(np.shape(r))} was saved where `like` has "
                    f"{tuple(np.shape(lk))}; use the same config (put shapes in it) or another "
                    "directory"
                )
        leaves = [
            jax.numpy.asarray(r) if isinstance(lk, jax.Array) else r
            for r, lk in zip(jax.tree.leaves(restored), jax.tree.leaves(like), strict=True)
        ]
        return jax.tree.unflatten(treedef, leaves), int(step)

    def _corrupt(self, step: int, what: str) -> CheckpointCorruptError:
        older = [s for s in self._manager.all_steps() if s < step]
        fix = (
            f"delete {os.path.join(str(self.path), str(step))!r} to resume from checkpoint "
            f"{max(older)}, or pass overwrite=True / use another directory to start over"
            if older
            else "delete the directory (or pass overwrite=True) to start over"
        )
        return CheckpointCorruptError(
            f"checkpoint {step} in {self.path!r} is corrupt: {what}; {fix}"
        )

    def _saved_digest(self, step: int) -> str | None:
        """The state digest saved with checkpoint ``step`` (None for checkpoints saved before
        digests were recorded: they restore unchecked)."""
        try:
            saved = self._manager.restore(
                step, args=ocp.args.Composite(integrity=ocp.args.JsonRestore())
            ).integrity
        except Exception:  # noqa: BLE001 - no integrity item (older checkpoint) or unreadable
            return None if not self._has_item(step, "integrity") else ""
        if not isinstance(saved, dict) or not isinstance(saved.get("state_digest"), str):
            return ""  # present but damaged: never equal to a digest
        return saved["state_digest"]

    def _has_item(self, step: int, item: str) -> bool:
        if "://" in str(self.path):
            return True
        return os.path.exists(os.path.join(str(self.path), str(step), item))

    def should_save(self, step: int) -> bool:
        last = self._last_step if self._last_step is not None else 0
        if self.every_steps is not None and step - last >= self.every_steps:
            return True
        return self.every_seconds is not None and (
            self._clock() - self._last_time >= self.every_seconds
        )

    def maybe_save(self, step: int, state) -> bool:
        """Saves ``state`` as checkpoint ``step`` when due; returns whether it saved."""
        if step == self._last_step or not self.should_save(step):
            return False
        self.save(step, state)
        return True

    def save(self, step: int, state) -> None:
        """Saves ``state`` as checkpoint ``step`` now (a no-op if ``step`` is already saved)."""
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"step must be an int >= 0, got {step!r}")
        step = int(step)
        if step in self._manager.all_steps():
            self._last_step, self._last_time = step, self._clock()
            return
        with self._saving(step):
            self._manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state),
                    config=ocp.args.JsonSave(self.config),
                    # Orbax stores arrays without checksums: a flipped byte would restore as a
                    # silently different state. The digest makes restore() refuse it.
                    integrity=ocp.args.JsonSave(
                        {"format": 1, "state_digest": _state_digest(state)}
                    ),
                ),
                force=True,
            )
        self._last_step, self._last_time = step, self._clock()

    def _saving(self, step):
        """Turns a full disk, however Orbax / TensorStore report it, into one clear OSError."""
        import contextlib

        @contextlib.contextmanager
        def guard():
            try:
                yield
            except Exception as e:
                if not _is_disk_full(e):
                    raise
                latest = self._last_step
                resume = (
                    f"a rerun resumes from checkpoint {latest}"
                    if latest is not None
                    else "a rerun starts over"
                )
                which = f"checkpoint {step}" if step is not None else "a checkpoint"
                raise OSError(
                    errno.ENOSPC,
                    f"goldener-jax: no space left on device while saving {which} to "
                    f"{self.path!r}; free space or give another checkpoint directory, then run "
                    f"the same call again ({resume})",
                ) from e

        return guard()

    def wait(self) -> None:
        with self._saving(None):
            self._manager.wait_until_finished()

    def close(self) -> None:
        try:
            if self._manager is not None:
                with self._saving(None):
                    self._manager.wait_until_finished()
                self._manager.close()
        finally:
            self._release()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def resumable_loop(
    step_fn: Callable[[Any, int], Any],
    init_state,
    num_steps: int,
    path,
    *,
    config: Mapping,
    every_steps: int | None = None,
    every_seconds: float | None = None,
    keep: int = 3,
    overwrite: bool = False,
):
    """Runs ``state = step_fn(state, step)`` for ``step`` in ``[0, num_steps)``, resuming from the
    latest checkpoint in ``path``; returns the final state (also saved as checkpoint
    ``num_steps``). The result is identical to an uninterrupted run when ``step_fn`` is
    deterministic."""
    with Checkpointer(
        path,
        config,
        every_steps=every_steps,
        every_seconds=every_seconds,
        keep=keep,
        overwrite=overwrite,
    ) as ckpt:
        state, start = ckpt.restore(init_state)
        if start > num_steps:
            raise ValueError(
                f"checkpoint step {start} in {ckpt.path!r} is past num_steps={num_steps}; "
                "use the same num_steps (put it in config) or another directory"
            )
        for step in range(start, num_steps):
            state = step_fn(state, step)
            ckpt.maybe_save(step + 1, state)
        ckpt.save(num_steps, state)
    return state
