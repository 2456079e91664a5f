"""What survives a kill: the chosen samples in order, the per-task log, the in-flight kernel state.

With a ``checkpoint_dir``, after each task its new samples are saved (``progress``, an Orbax
checkpoint of O(N) arrays) and inside a long task the selector state every ``every`` steps
(``inflight``). A rerun of the same request replays the logged tasks and continues the one in
flight; a request for more extends a finished selection; asking again for the same is a no-op.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

import jax
import numpy as np

from goldener_jax._locks import lock_directory

__all__ = ["checkpoint_lock", "Progress", "TaskLog"]


@contextlib.contextmanager
def checkpoint_lock(checkpoint_dir):
    """Holds the lock of ``checkpoint_dir`` for a ``select`` / ``split`` run: one run per
    checkpoint directory (process 0 holds it, as ``Checkpointer`` does); nothing without one.

    It also words a checkpoint made for another request for the caller: the
    :class:`~goldener_jax.checkpoint.CheckpointMismatchError` of the ``Checkpointer`` inside
    names an internal sub-directory and ``overwrite=True``, which ``select`` and ``split`` do not
    take; the user is told about their own ``checkpoint_dir`` instead."""
    from goldener_jax.checkpoint import CheckpointMismatchError

    lock = None
    if checkpoint_dir is not None and jax.process_index() == 0:
        lock = lock_directory(checkpoint_dir, "checkpoint directory")
    try:
        yield
    except CheckpointMismatchError as e:
        if checkpoint_dir is None:
            raise
        where = os.fspath(checkpoint_dir)
        where = where if "://" in where else os.path.abspath(where)
        details = "; ".join(e.differences[:5]) or "another config"
        raise CheckpointMismatchError(
            f"checkpoint_dir {where!r} holds the progress of another request ({details}); use "
            f"another checkpoint_dir or delete {where!r}",
            path=where,
            differences=e.differences,
        ) from e
    finally:
        if lock is not None:
            lock.release()


def _progress_like(num_samples: int) -> dict:
    return {
        "rank": np.full((num_samples,), -1, np.int32),
        "task_ends": np.zeros((num_samples + 1,), np.int32),
        "tasks_done": np.zeros((), np.int32),
        "base_count": np.zeros((), np.int32),
        "target": np.zeros((), np.int32),
        "complete": np.zeros((), np.int32),
        "serial": np.zeros((), np.int32),
    }


class Progress:
    """What survives a kill: sample ranks, the per-task log, the in-flight kernel state."""

    def __init__(self, checkpoint_dir, config: dict, num_samples: int, every: int):
        self.dir = None if checkpoint_dir is None else os.path.abspath(os.fspath(checkpoint_dir))
        self.config = config
        self.every = every
        self.state = _progress_like(num_samples)
        self._ckpt = None
        if self.dir is not None:
            from goldener_jax.checkpoint import Checkpointer

            self._ckpt = Checkpointer(
                os.path.join(self.dir, "progress"), config, every_steps=1, async_save=False
            )
            restored, step = self._ckpt.restore(self.state)
            if step:
                self.state = {k: np.asarray(v) for k, v in restored.items()}

    def save(self) -> None:
        if self._ckpt is None:
            return
        self.state["serial"] = np.asarray(int(self.state["serial"]) + 1, np.int32)
        self._ckpt.save(int(self.state["serial"]), self.state)

    def close(self) -> None:
        if self._ckpt is not None:
            self._ckpt.close()

    def inflight(self, task_config: dict):
        if self.dir is None:
            return None
        from goldener_jax.checkpoint import Checkpointer

        return Checkpointer(
            os.path.join(self.dir, "inflight"),
            {**task_config, "run": self.config},
            every_steps=self.every,
            overwrite=True,
            async_save=False,
            keep=1,
        )


class TaskLog:
    """The chosen samples (``rank``: order of each sample, -1 if not chosen) and the tasks.

    Task ``t`` of a rerun of a killed request is replayed from the log; a new task is computed,
    recorded and saved. Every task, replayed or not, goes through :meth:`task`.
    """

    def __init__(self, progress: Progress, count: int):
        self.progress = progress
        st = progress.state
        # Replay: the base (earlier calls) stays; the tasks of this call are re-applied from the
        # log, in order, as the plan reaches them.
        self.log: list[np.ndarray] = []
        # The same request already finished: a no-op (its selection may be short of the count
        # when whole groups could not meet it; the packing after the run is deterministic).
        self.finished = bool(int(st["complete"])) and int(st["target"]) == count
        if int(st["complete"]):
            # A finished selection: a no-op, or extended from (what it selected: the count, or
            # fewer when whole groups stopped it short).
            base = int(np.count_nonzero((st["rank"] >= 0) & (st["rank"] < int(st["target"]))))
        else:
            base = int(st["base_count"])
            if int(st["target"]) == count:  # the same request, killed: replay its tasks
                ends = st["task_ends"][: int(st["tasks_done"]) + 1]
                order = np.argsort(np.where(st["rank"] < 0, np.iinfo(np.int32).max, st["rank"]))
                self.log = [order[ends[t] : ends[t + 1]] for t in range(len(ends) - 1)]
        rank = np.where((st["rank"] >= 0) & (st["rank"] < base), st["rank"], -1)
        self.rank = rank.astype(np.int32)
        self.n_selected = base
        self.count = count
        st["rank"] = self.rank.copy()
        st["base_count"] = np.asarray(base, np.int32)
        st["target"] = np.asarray(count, np.int32)
        st["complete"] = np.asarray(0, np.int32)
        st["tasks_done"] = np.asarray(0, np.int32)
        st["task_ends"] = np.zeros_like(st["task_ends"])
        st["task_ends"][0] = base
        self.num_tasks = 0
        self.replayed = 0  # tasks of this call taken from the log
        self.restored_steps = 0  # kernel steps taken from in-flight checkpoints
        self.bar = None  # a tqdm bar over the selected samples (``run_selection(progress=True)``)

    def selected_mask(self) -> np.ndarray:
        return self.rank >= 0

    def task(self, compute: Callable[[int], np.ndarray]) -> np.ndarray:
        """Runs the next task: its new samples from the log, or ``compute(task index)``."""
        t = self.num_tasks
        self.num_tasks += 1
        replay = t < len(self.log)
        new = self.log[t] if replay else compute(t)
        self.replayed += replay
        for s in new:
            self.rank[s] = self.n_selected
            self.n_selected += 1
        if self.bar is not None:
            self.bar.update(len(new))
        st = self.progress.state
        st["rank"] = self.rank.copy()
        st["tasks_done"] = np.asarray(t + 1, np.int32)
        st["task_ends"][t + 1] = self.n_selected
        if not replay:
            self.progress.save()
        return new

    def finish(self) -> None:
        self.progress.state["complete"] = np.asarray(1, np.int32)
        self.progress.save()
