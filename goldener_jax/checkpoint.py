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
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

__all__ = ["CheckpointMismatchError", "Checkpointer", "resumable_loop"]


class CheckpointMismatchError(ValueError):
    """The checkpoints at a path were written with another loop config."""


def _json_config(config: Any) -> Any:
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a JSON-able dict, got {type(config).__name__}")
    try:
        return json.loads(json.dumps(config, sort_keys=True))
    except (TypeError, ValueError) as e:
        raise TypeError(f"config must be a JSON-able dict: {e}") from e


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    from goldener_jax.store import _diff as diff

    return diff(a, b, prefix)


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
                raise ValueError(f"path {path!r} is an existing file; checkpoints need a directory")
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
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save
        )
        self._manager = ocp.CheckpointManager(path, options=options, item_names=("state", "config"))
        self._check_config(overwrite)
        self._last_step = self._manager.latest_step()
        self._last_time = clock()

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
                    f"checkpoint {step} in {self.path!r} is incomplete ({e}); removing it",
                    RuntimeWarning,
                    stacklevel=3,
                )
                self._manager.delete(step)
                continue
            if saved != self.config:
                if overwrite:
                    self._manager.delete(step)
                    continue
                details = _diff(saved, self.config)
                raise CheckpointMismatchError(
                    f"checkpoints in {self.path!r} were written with another config "
                    f"({'; '.join(details[:5])}); use another directory or pass overwrite=True"
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
        except ValueError as e:
            raise ValueError(
                f"checkpoint {step} in {self.path!r} does not match the structure of `like`: {e}"
            ) from e
        treedef = jax.tree.structure(like)
        leaves = [
            jax.numpy.asarray(r) if isinstance(lk, jax.Array) else r
            for r, lk in zip(jax.tree.leaves(restored), jax.tree.leaves(like), strict=True)
        ]
        return jax.tree.unflatten(treedef, leaves), int(step)

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
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(self.config)
            ),
            force=True,
        )
        self._last_step, self._last_time = step, self._clock()

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

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
