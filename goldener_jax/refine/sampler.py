"""Cluster-balanced batches: every batch holds one sample from each of ``batch_size`` distinct
clusters, clusters not drawn yet in the current cycle first.

Rules (the whole behaviour; ``tests/test_sampler.py`` checks them against a separate loop):

* Clusters are the distinct ids ``>= 0`` of the assignment, numbered ``0..C-1`` in increasing
  id order; rows with a negative id are never drawn. Each cluster is a queue of its rows in a
  random order; pass ``e`` of cluster ``c`` uses its own order.
* A *cycle* visits the active clusters in a random order (cycle ``t`` has its own order). A batch
  takes the next ``batch_size`` clusters of the cycle that are active and not drawn in this
  cycle. When the cycle runs out mid-batch, a new cycle starts (every cluster undrawn again) and
  the batch goes on with its clusters, skipping those already in the batch. So no cluster is in a
  batch twice and every cluster is drawn once before any is drawn twice (within a cycle).
* Each chosen cluster gives the next row of its queue. When that was its last row (the
  cluster's end), ``on_end`` decides:

  - ``"restart"``: the cluster starts a new pass (a fresh random order of its rows); the sampler
    stops after the batch in which the last cluster finishes its first pass (every cluster used
    up at least once; small clusters repeat meanwhile).
  - ``"stop"``: the sampler stops after this batch (no row is ever drawn twice).
  - ``"exclude"``: the cluster leaves (no longer drawn); the sampler goes on with the others
    and stops when fewer than ``batch_size`` remain (``drop_last=True``) or when none remains
    (``drop_last=False``: the last batches hold one row of each remaining cluster).

Randomness: cycle ``t``'s order and pass ``e`` of cluster ``c``'s order come from NumPy
generators seeded with the words of ``key`` and ``(0, t)`` / ``(1, c, e)``. Batch ``s`` is thus
a function of ``(key, assignment, batch_size, on_end, drop_last, s)`` alone, reached by replaying
the ``s`` batches before it from a compact :class:`SamplerState` (``O(C)`` numbers, which is
also what a checkpoint needs).

Several hosts (``process_index`` / ``process_count``): every process computes the same global
batch and keeps its slice (``batch_size / process_count`` consecutive entries); the slices of a
step are disjoint and together are the global batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from goldener_jax.refine.data import check_int, key_words

__all__ = ["ON_END", "ClusterBatchSampler", "SamplerState"]

ON_END = ("restart", "stop", "exclude")


class SamplerState(NamedTuple):
    """Where a sampler is: all it needs to produce the next batch (plus the key and clusters).

    Attributes:
      step: batches produced so far.
      cycle: index of the current cycle.
      drawn: bool ``[C]`` clusters drawn in the current cycle.
      position: int64 ``[C]`` rows of the current pass already drawn, per cluster.
      passes: int64 ``[C]`` finished passes per cluster (``"restart"``).
      active: bool ``[C]`` clusters still drawn (``"exclude"`` removes them).
      used_up: bool ``[C]`` clusters whose end was reached at least once.
      done: whether the sampler has stopped.
    """

    step: int
    cycle: int
    drawn: np.ndarray
    position: np.ndarray
    passes: np.ndarray
    active: np.ndarray
    used_up: np.ndarray
    done: bool

    def to_json(self) -> dict:
        """JSON-able dict (for a training checkpoint); :meth:`from_json` reads it back."""
        return {
            "step": int(self.step),
            "cycle": int(self.cycle),
            "drawn": np.flatnonzero(self.drawn).tolist(),
            "position": self.position.tolist(),
            "passes": self.passes.tolist(),
            "active": self.active.astype(int).tolist(),
            "used_up": self.used_up.astype(int).tolist(),
            "done": bool(self.done),
        }

    @classmethod
    def from_json(cls, d: dict) -> SamplerState:
        c = len(d["position"])
        drawn = np.zeros(c, bool)
        drawn[np.asarray(d["drawn"], np.int64)] = True
        return cls(
            int(d["step"]),
            int(d["cycle"]),
            drawn,
            np.asarray(d["position"], np.int64),
            np.asarray(d["passes"], np.int64),
            np.asarray(d["active"], bool),
            np.asarray(d["used_up"], bool),
            bool(d["done"]),
        )


def _copy(state: SamplerState) -> SamplerState:
    return state._replace(
        drawn=state.drawn.copy(),
        position=state.position.copy(),
        passes=state.passes.copy(),
        active=state.active.copy(),
        used_up=state.used_up.copy(),
    )


class ClusterBatchSampler:
    """Iterator of index batches, one row per cluster per batch (see the module doc for rules).

    Usable with any random-access source (``grain`` / TFDS ``data_source``, NumPy arrays)::

        sampler = ClusterBatchSampler(assignment, jax.random.key(0), batch_size=32)
        for idx in sampler:                 # int64 [32] sample indices, distinct clusters
            batch = source[idx]             # or [data_source[i] for i in idx]

    Resume a killed run from its step count: ``ClusterBatchSampler(..., start_step=s)`` (or
    ``start_state=`` a saved :class:`SamplerState`) yields batch ``s`` onwards, the very batches
    an uninterrupted run would have.

    Args:
      assignment: int ``[N]`` cluster id of each row (negative: never drawn), or an object with
        ``.assignment`` (and optionally ``.sample_ids``) such as a ``Clusters`` result.
      key: a ``jax.random.key``; same key, same batches.
      batch_size: clusters per global batch, ``1 <= batch_size <= C`` (default ``C``: every
        cluster in every batch).
      on_end: ``"restart"``, ``"stop"`` or ``"exclude"`` (what a cluster's end does).
      drop_last: with ``"exclude"``, stop when fewer than ``batch_size`` clusters remain
        (``True``) or go on with smaller batches until none remains (``False``).
      sample_ids: int ``[N]``: yield these ids instead of row numbers (e.g. a store's).
      process_index: this host's slice of each global batch.
      process_count: the number of hosts; ``batch_size`` must be a multiple of it.
      start_step: first batch to yield (replays the ones before it).
      start_state: a :class:`SamplerState` to continue from instead (no replay).
    """

    def __init__(
        self,
        assignment,
        key,
        *,
        batch_size: int | None = None,
        on_end: str = "restart",
        drop_last: bool = True,
        sample_ids=None,
        process_index: int = 0,
        process_count: int = 1,
        start_step: int = 0,
        start_state: SamplerState | None = None,
    ):
        if hasattr(assignment, "assignment"):
            if sample_ids is None:
                sample_ids = getattr(assignment, "sample_ids", None)
            assignment = assignment.assignment
        a = np.asarray(assignment)
        if a.ndim != 1:
            raise ValueError(f"assignment must be 1-D [N] cluster ids, got shape {a.shape}")
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"assignment must hold integer cluster ids, got dtype {a.dtype}")
        a = a.astype(np.int64)
        self._words = key_words(key)
        if on_end not in ON_END:
            raise ValueError(f"on_end must be one of {ON_END}, got {on_end!r}")
        self.on_end = on_end
        self.drop_last = bool(drop_last)
        rows = np.flatnonzero(a >= 0)
        if rows.size == 0:
            raise ValueError("assignment has no row with a cluster id >= 0: nothing to draw")
        self.cluster_ids, inverse = np.unique(a[rows], return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        sizes = np.bincount(inverse, minlength=len(self.cluster_ids))
        self._members = np.split(rows[order], np.cumsum(sizes)[:-1])
        self.sizes = sizes.astype(np.int64)
        c = self.num_clusters
        self.batch_size = c if batch_size is None else check_int(batch_size, "batch_size", 1, c)
        if sample_ids is not None:
            sample_ids = np.asarray(sample_ids)
            if sample_ids.shape != a.shape:
                raise ValueError(
                    f"sample_ids must have shape {a.shape} (one per row), got {sample_ids.shape}"
                )
        self.sample_ids = sample_ids
        self.process_count = check_int(process_count, "process_count", 1)
        self.process_index = check_int(process_index, "process_index", 0, self.process_count - 1)
        if self.batch_size % self.process_count:
            raise ValueError(
                f"batch_size={self.batch_size} must be a multiple of "
                f"process_count={self.process_count} (equal slices per host)"
            )
        self._order_cache: tuple[int, np.ndarray] | None = None
        self._perm_cache: dict[int, tuple[int, np.ndarray]] = {}
        if start_state is not None:
            if len(start_state.position) != c:
                raise ValueError(
                    f"start_state is for {len(start_state.position)} clusters, "
                    f"this assignment has {c}"
                )
            self._start = _copy(start_state)
        else:
            self._start = self.state_at(check_int(start_step, "start_step", 0))

    @property
    def num_clusters(self) -> int:
        return len(self.cluster_ids)

    # ------------------------------------------------------------------ randomness

    def _rng(self, *tag: int) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence([*self._words, *tag])))

    def _cycle_order(self, t: int) -> np.ndarray:
        if self._order_cache is None or self._order_cache[0] != t:
            self._order_cache = (t, self._rng(0, t).permutation(self.num_clusters))
        return self._order_cache[1]

    def _queue(self, c: int, e: int) -> np.ndarray:
        hit = self._perm_cache.get(c)
        if hit is None or hit[0] != e:
            hit = (e, self._members[c][self._rng(1, c, e).permutation(len(self._members[c]))])
            self._perm_cache[c] = hit
        return hit[1]

    # ------------------------------------------------------------------ the walk

    def initial_state(self) -> SamplerState:
        c = self.num_clusters
        return SamplerState(
            0,
            0,
            np.zeros(c, bool),
            np.zeros(c, np.int64),
            np.zeros(c, np.int64),
            np.ones(c, bool),
            np.zeros(c, bool),
            False,
        )

    def _advance(self, s: SamplerState) -> tuple[np.ndarray | None, SamplerState]:
        """The next global batch (rows) and the state after it; mutates ``s``'s arrays."""
        if s.done:
            return None, s
        n_active = int(s.active.sum())
        want = self.batch_size if n_active >= self.batch_size else 0
        if want == 0 and not self.drop_last:
            want = n_active
        if want == 0:
            return None, s._replace(done=True)
        cycle = s.cycle
        chosen: list[int] = []
        in_batch = np.zeros(self.num_clusters, bool)
        while len(chosen) < want:
            order = self._cycle_order(cycle)
            ok = s.active[order] & ~s.drawn[order] & ~in_batch[order]
            take = order[np.flatnonzero(ok)[: want - len(chosen)]]
            chosen.extend(take.tolist())
            in_batch[take] = True
            s.drawn[take] = True
            if len(chosen) < want:  # the cycle ran out: all undrawn again, batch goes on
                cycle += 1
                s.drawn[:] = False
        rows = np.empty(want, np.int64)
        done = False
        for j, c in enumerate(chosen):
            queue = self._queue(c, int(s.passes[c]))
            rows[j] = queue[s.position[c]]
            s.position[c] += 1
            if s.position[c] == self.sizes[c]:  # the cluster's end
                s.used_up[c] = True
                if self.on_end == "stop":
                    done = True
                elif self.on_end == "restart":
                    s.passes[c] += 1
                    s.position[c] = 0
                else:
                    s.active[c] = False
        if self.on_end == "restart" and s.used_up.all():
            done = True
        if self.on_end == "exclude" and not s.active.any():
            done = True
        return rows, s._replace(step=s.step + 1, cycle=cycle, done=done)

    def state_at(self, step: int) -> SamplerState:
        """The state before batch ``step`` (replays ``step`` batches; a stopped sampler stays
        stopped, so a step past the end gives a ``done`` state)."""
        step = check_int(step, "step", 0)
        s = self.initial_state()
        while s.step < step and not s.done:
            _, s = self._advance(s)
        if s.step < step:  # stopped early: remember the step asked for
            s = s._replace(step=step)
        return s

    def global_batches(self, state: SamplerState | None = None) -> Iterator[np.ndarray]:
        """Every host's batches together (ids), from ``state`` (default: the start)."""
        s = _copy(self._start if state is None else state)
        while True:
            rows, s = self._advance(s)
            if rows is None:
                return
            yield rows if self.sample_ids is None else self.sample_ids[rows]

    def _host_slice(self, batch: np.ndarray) -> np.ndarray:
        if self.process_count == 1:
            return batch
        if len(batch) == self.batch_size:
            per = self.batch_size // self.process_count
            return batch[self.process_index * per : (self.process_index + 1) * per]
        return np.array_split(batch, self.process_count)[self.process_index]

    def iter_with_state(self, state: SamplerState | None = None):
        """Yields ``(this host's batch, state after it)``: save the state to resume exactly."""
        s = _copy(self._start if state is None else state)
        while True:
            rows, s = self._advance(s)
            if rows is None:
                return
            ids = rows if self.sample_ids is None else self.sample_ids[rows]
            yield self._host_slice(ids), _copy(s)

    def __iter__(self) -> Iterator[np.ndarray]:
        for batch in self.global_batches():
            yield self._host_slice(batch)

    def num_batches(self) -> int:
        """Batches from the start state to the end (walks them; nothing is kept)."""
        s = _copy(self._start)
        count = 0
        while True:
            rows, s = self._advance(s)
            if rows is None:
                return count
            count += 1
