"""The selection plan: a deterministic sequence of tasks over one pool of candidates.

A *task* is one selector run on one chunk of candidate vectors (e.g. a k-center run of ``k``
steps). Which tasks run depends only on the request, the key and the results of earlier tasks:
the count is met label by label (goldener's allocation rounds), each label's need in random
chunks drawn from the key with proportional quotas, earlier picks acting as anchors. Because of
that a rerun can replay finished tasks from the log (:class:`~.progress.TaskLog`) and resume the
task in flight from its checkpointed selector state, bit for bit.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from fractions import Fraction

import jax
import numpy as np

from goldener_jax import kernels as gk
from goldener_jax._allocation import (
    assign_groups_to_sets,
    chunk_quotas,
    count_from_size,
    exact_ratio,
    first_round_label_counts,
    later_round_label_counts,
    random_chunks,
)
from goldener_jax.kernels._checks import as_float_matrix
from goldener_jax.pipeline.data import Data, full_hash, key_data, release_freed_memory
from goldener_jax.pipeline.methods import METHODS, check_options, resolve_method
from goldener_jax.pipeline.progress import Progress, TaskLog

__all__ = [
    "Engine",
    "Outcome",
    "Plan",
    "Pool",
    "Settings",
    "coverage_radius",
    "pack_groups",
    "run_selection",
    "unit_order",
]


@dataclasses.dataclass(frozen=True)
class Settings:
    """What ``select`` / ``split`` ask of every selection run (the arguments they share)."""

    method: object  # a name, "auto", a rule (n, count) -> name, or a SelectionMethod
    key: jax.Array
    metric: str = "euclidean"
    method_options: dict | None = None
    chunk_size: int | None = None
    max_anchors: int | None = 4096
    checkpoint_every: int = 100
    mesh: object = None


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One run's result: compact sample ids in selection order, the count asked, the run's
    config (fingerprint of the checkpoint) and what a resumed run reused."""

    chosen: np.ndarray
    count: int
    config: dict
    resumed: dict
    groups: dict | None = None  # with groups: requested / achieved counts, exact, optimal


class Pool:
    """The candidates of one run and what a chosen sample brings along (its group)."""

    def __init__(self, data: Data, alive: np.ndarray, anchor_vectors: np.ndarray):
        self.data = data
        self.alive = alive  # [S] bool: candidates (not anchors, not excluded, not taken)
        self.anchor_vectors = anchor_vectors  # int indices of anchor vectors
        self.unit_members = None
        if data.unit is not None:
            order = np.argsort(data.unit, kind="stable")
            bounds = np.searchsorted(data.unit[order], np.arange(data.unit.max() + 2))
            self.unit_members = [order[bounds[u] : bounds[u + 1]] for u in range(len(bounds) - 1)]

    def new_samples(self, vecs: np.ndarray, selected: np.ndarray, remaining: int) -> np.ndarray:
        """Samples the picked vectors ``vecs`` bring (whole groups, in order), within
        ``remaining``; a group that does not fit is skipped."""
        seen = selected.copy()
        out: list[int] = []
        for v in vecs:
            s = int(self.data.vec_sample[v])
            if seen[s]:
                continue
            members = [s] if self.unit_members is None else self.unit_members[self.data.unit[s]]
            members = [int(m) for m in members if self.alive[m] and not seen[m]]
            if len(out) + len(members) > remaining:
                continue  # this group does not fit in what is left to select
            for m in members:
                seen[m] = True
                out.append(m)
        return np.asarray(out, np.int64)


@dataclasses.dataclass(frozen=True)
class Plan:
    """How one run chooses: the selector, the key of chunks and tasks, the chunking, the
    anchor bound and the label ratio of the allocation rounds."""

    selector: object  # kernels.selectors.Selector
    key: jax.Array
    chunk_size: int | None
    max_anchors: int | None
    ratio: Fraction


class Engine:
    """Runs the plan over one pool, task by task, replaying logged tasks."""

    def __init__(self, pool: Pool, plan: Plan, log: TaskLog):
        self.pool = pool
        self.d = pool.data
        self.selector = plan.selector
        self.key = plan.key
        self.chunk_size = plan.chunk_size
        self.max_anchors = plan.max_anchors
        self.ratio = plan.ratio
        self.log = log
        self.count = log.count
        self.chunkings = 0
        # With groups the greedy fill can get stuck short of the count (every group left is too
        # big for what remains, or a label ran out): it stops, and run_selection packs whole
        # groups to the count (or the nearest reachable one) from the picks.
        self.stuck = False

    # -- bookkeeping
    def pool_samples(self, label_col: int | None) -> np.ndarray:
        ok = self.pool.alive & ~self.log.selected_mask()
        if label_col is not None:
            ok &= self.d.label_matrix[:, label_col]
        return ok

    def label_selected(self, label_col: int) -> int:
        return int(np.count_nonzero(self.log.selected_mask() & self.d.label_matrix[:, label_col]))

    def _label_text(self, label_col) -> str:
        return "" if label_col is None else f" for label {self.d.label_names[label_col]!r}"

    # -- one task
    def _anchors(self, label_col) -> np.ndarray | None:
        if not self.selector.uses_anchors:
            return None
        sel = self.log.selected_mask()
        if label_col is not None:
            sel &= self.d.label_matrix[:, label_col]
        sel_vecs = np.flatnonzero(sel[self.d.vec_sample])
        if sel_vecs.size:
            order = self.log.rank[self.d.vec_sample[sel_vecs]]
            sel_vecs = sel_vecs[np.argsort(order, kind="stable")]
        vecs = np.concatenate([self.pool.anchor_vectors, sel_vecs]).astype(np.int64)
        if vecs.size == 0:
            return None
        if self.max_anchors is not None and vecs.size > self.max_anchors:
            # Bounded, deterministic: evenly spaced over (given anchors, then picks in order).
            vecs = vecs[np.linspace(0, vecs.size - 1, self.max_anchors).round().astype(np.int64)]
        return vecs

    def _picks(self, cand_vecs, k, label_col, t) -> np.ndarray:
        """The selector's picks (rows of ``cand_vecs``) for task ``t``, resuming its state."""
        sel = self.selector
        x, n, real = self._task_rows(cand_vecs)
        anchor_vecs = self._anchors(label_col)
        anchors = None if anchor_vecs is None else self.d.anchor_rows(anchor_vecs)
        tkey = jax.random.fold_in(self.key, t)
        progress = self.log.progress
        ckpt = progress.inflight({"task": t, "n": n, "k": int(k), "method": sel.name})
        try:
            state = sel.init(x, k, key=tkey, anchors=anchors, **real)
            if ckpt is None:
                return sel.picks(sel.run(state, x))
            return self._resume(sel, state, x, ckpt, progress)
        finally:
            if self.d.source is not None:
                # Rows read per process for this task: freed now, not at the next garbage
                # collection (the arrays sit in reference cycles until then, and a few tasks'
                # rows would otherwise pile up).
                for a in (x, anchors):
                    if isinstance(a, jax.Array) and not a.is_deleted():
                        a.delete()
                del x, anchors
                release_freed_memory()

    def _resume(self, sel, state, x, ckpt, progress) -> np.ndarray:
        """Continues ``state`` from its in-flight checkpoint, saving every ``progress.every``."""
        try:
            # The initial state is the template of the restore (its shapes and dtypes).
            state, step = ckpt.restore(state)
            self.log.restored_steps += int(step or 0)
            while not sel.finished(state):
                state = sel.run(state, x, progress.every)
                step += progress.every
                ckpt.save(step, state)
            return sel.picks(state)
        finally:
            ckpt.close()

    def _task_rows(self, vecs: np.ndarray) -> tuple:
        """``(x, n, extra init arguments)`` of a task over rows ``vecs``. Rows read per process
        (a store, a mesh spanning processes) come padded to the mesh; the selector is told the
        real count (``n=``) when it takes one, else it gets the rows as a host array (each
        process then holds all of the task's rows: the methods without ``n=`` pay that)."""
        x, n = self.d.task_rows(vecs)
        if x.shape[0] == n:
            return x, n, {}
        if "n" in inspect.signature(self.selector.init).parameters:
            return x, n, {"n": n}
        del x
        return np.asarray(as_float_matrix(self.d.source.host_rows(vecs))), n, {}

    def _task(self, vecs: np.ndarray, k: int, label_col) -> np.ndarray:
        remaining = self.count - self.log.n_selected
        selected = self.log.selected_mask()
        if k == vecs.size:  # every remaining vector is taken: no selector run, a task all the same
            return self.log.task(lambda t: self.pool.new_samples(vecs, selected, remaining))
        return self.log.task(
            lambda t: self.pool.new_samples(
                vecs[self._picks(vecs, k, label_col, t)], selected, remaining
            )
        )

    # -- plan
    def fill(self, label_col: int | None, need: int) -> int:
        """Selects ``need`` new samples from the pool (of ``label_col``): vector rounds until the
        distinct-sample target is met, each round chunked."""
        added = 0
        while added < need:
            pool = self.pool_samples(label_col)
            available = int(np.count_nonzero(pool))
            still = need - added
            if available == 0:
                if self.pool.unit_members is not None:
                    self.stuck = True
                    return added
                raise ValueError(
                    f"no sample left to select{self._label_text(label_col)}: {still} more needed"
                )
            cand = np.flatnonzero(pool[self.d.vec_sample])
            if still >= available and self.pool.unit_members is None:
                if still > available:
                    raise ValueError(
                        f"cannot select {still} more samples{self._label_text(label_col)}: only "
                        f"{available} left"
                    )
            chunk_key = jax.random.fold_in(jax.random.fold_in(self.key, 0xC4C4), self.chunkings)
            self.chunkings += 1
            chunks = random_chunks(chunk_key, cand.shape[0], self.chunk_size)
            quotas = chunk_quotas(still, [len(c) for c in chunks])
            before = added
            for chunk, quota in zip(chunks, quotas, strict=True):
                if quota == 0:
                    continue
                vecs = cand[chunk]
                taken = self.log.selected_mask()[self.d.vec_sample[vecs]]
                vecs = vecs[pool[self.d.vec_sample[vecs]] & ~taken]
                if vecs.size == 0:
                    continue
                new = self._task(vecs, min(quota, vecs.size), label_col)
                # A label's need counts that label's samples (a group may bring others too).
                added += (
                    len(new)
                    if label_col is None
                    else int(np.count_nonzero(self.d.label_matrix[new, label_col]))
                )
                if self.log.n_selected >= self.count:
                    return added
            if added == before:
                if self.pool.unit_members is not None:
                    self.stuck = True
                    return added
                raise ValueError(f"no progress selecting{self._label_text(label_col)}")
        return added

    def run(self) -> None:
        n_selected = self.log.n_selected
        if (n_selected == self.count or self.log.finished) and not self.log.log:
            return  # already done: a no-op
        if n_selected > self.count:
            raise ValueError(
                f"{n_selected} samples are already selected in this checkpoint, more than "
                f"the {self.count} requested; ask for at least {n_selected} or use another "
                "checkpoint_dir"
            )
        if self.d.label_matrix is None:
            self.fill(None, self.count - n_selected)
        else:
            self._stratified()
        self.log.finish()

    def _stratified(self) -> None:
        lm = self.d.label_matrix
        num_labels = lm.shape[1]
        # Round 1: targets from the ratio over each label's population (available + selected).
        population = {
            j: int(np.count_nonzero((self.pool.alive | self.log.selected_mask()) & lm[:, j]))
            for j in range(num_labels)
        }
        targets = first_round_label_counts(population, self.ratio)
        for j, target in targets.items():
            if self.log.n_selected >= self.count:
                break
            status = self.label_selected(j)
            if status >= target:
                continue
            self.fill(j, min(target - status, self.count - self.log.n_selected))
        # Later rounds: the shortfall over labels, in proportion to their unselected samples.
        while self.log.n_selected < self.count:
            missing = self.count - self.log.n_selected
            unselected = {j: int(np.count_nonzero(self.pool_samples(j))) for j in range(num_labels)}
            counts = later_round_label_counts(unselected, missing)
            init = {j: self.label_selected(j) for j in range(num_labels)}
            before = self.log.n_selected
            for j, c in counts.items():
                if c == 0 or self.log.n_selected >= self.count:
                    continue
                status = self.label_selected(j) - init[j]
                if status >= c:
                    continue
                self.fill(j, min(c - status, self.count - self.log.n_selected))
            if self.log.n_selected == before:
                if self.pool.unit_members is not None:
                    self.stuck = True
                    break
                raise ValueError(f"no progress selecting: {missing} more samples needed")


def _is_float(v) -> bool:
    return isinstance(v, (float, np.floating))


def _rule_record(rule):
    if rule is None:
        return None
    fields = dataclasses.asdict(rule) if dataclasses.is_dataclass(rule) else {}
    return {"rule": type(rule).__name__, **fields}


def _anchor_aware(method, rule, settings: Settings, has_anchors: bool):
    """``(method, selector, options)``; given anchors (e.g. labelled samples) must steer the
    choice. A rule (``"auto"``) that chose a method which ignores anchors chooses its
    ``anchored`` method instead (``typical_kcenter`` by default: anchor-aware, the best single
    method on the held-out suite of issue 16); a method named explicitly that ignores anchors is
    refused rather than silently ignoring them."""
    options = check_options(method.name, method.options, settings.method_options)
    selector = method.make(options, metric=settings.metric, mesh=settings.mesh)
    if not has_anchors or selector.uses_anchors:
        return method, selector, options
    if rule is None:
        aware = sorted(
            name
            for name, m in METHODS.items()
            if m.make(
                check_options(name, m.options, None), metric=settings.metric, mesh=None
            ).uses_anchors
        )
        raise ValueError(
            f"method {method.name!r} cannot use anchors (samples already chosen or labelled): it "
            f"would ignore them. Use an anchor-aware method ({', '.join(aware)}) or "
            'method="auto", or drop anchors'
        )
    method, _ = resolve_method(getattr(rule, "anchored", "typical_kcenter"), 0, 0)
    options = check_options(method.name, method.options, settings.method_options)
    return method, method.make(options, metric=settings.metric, mesh=settings.mesh), options


def run_selection(
    data: Data,
    count_or_size,
    settings: Settings,
    *,
    alive: np.ndarray,
    anchor_samples: np.ndarray,
    checkpoint_dir,
    base_config: dict,
    progress: bool = False,
    desc: str = "select",
    pack: bool = True,
) -> Outcome:
    """Chooses ``count_or_size`` of the ``alive`` samples of ``data`` (see the module
    docstring); a count's label ratio is taken over the alive samples (a set of a split: over what
    the earlier sets left). ``progress``: a tqdm bar (``desc``) over the selected samples.

    With groups, when the greedy fill (a picked group that no longer fits is skipped) ends short
    of the count, whole groups are packed to it from the picks (:func:`pack_groups`): the count
    when reachable, else the nearest reachable one (``Outcome.groups`` records both).
    ``pack=False`` returns the greedy picks as they are (``split`` packs all its sets jointly)."""
    num_alive = int(np.count_nonzero(alive))
    if num_alive == 0:
        raise ValueError("there are no candidate samples to select from")
    count = count_from_size(count_or_size, num_alive)
    ratio = exact_ratio(count_or_size) if _is_float(count_or_size) else Fraction(count, num_alive)
    method, rule = resolve_method(settings.method, data.num_vectors, count)
    mesh = settings.mesh
    if mesh is not None:
        gk.sharding.mesh_axis(mesh)  # a clear error for anything but a 1-D Mesh
    method, selector, options = _anchor_aware(method, rule, settings, anchor_samples.size > 0)
    config = {
        **base_config,
        "method": method.name,
        "auto": _rule_record(rule),
        "metric": settings.metric,
        "options": dataclasses.asdict(options),
        "key": [int(v) for v in np.ravel(key_data(settings.key))],
        "chunk_size": settings.chunk_size,
        "max_anchors": settings.max_anchors,
        "anchors": full_hash(np.sort(anchor_samples)),
        "data": data.fingerprint,
    }
    config = json.loads(json.dumps(config, sort_keys=True, default=str))
    num_samples = data.sample_ids.shape[0]
    saved = Progress(checkpoint_dir, config, num_samples, settings.checkpoint_every)
    bar = None
    try:
        log = TaskLog(saved, count)
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=count, initial=log.n_selected, desc=desc, unit="sample")
            log.bar = bar
        pool = Pool(data, alive, np.flatnonzero(np.isin(data.vec_sample, anchor_samples)))
        plan = Plan(selector, settings.key, settings.chunk_size, settings.max_anchors, ratio)
        Engine(pool, plan, log).run()
    finally:
        saved.close()
        if bar is not None:
            bar.close()
    rank = log.rank
    chosen = np.flatnonzero(rank >= 0)
    chosen = chosen[np.argsort(rank[chosen])]
    groups = None
    if data.unit is not None and pack:
        chosen, groups = pack_groups(data, alive | (rank >= 0), chosen, count, settings.key)
    resumed = {"tasks_replayed": int(log.replayed), "steps_restored": int(log.restored_steps)}
    return Outcome(chosen=chosen, count=count, config=config, resumed=resumed, groups=groups)


def unit_order(data: Data, samples: np.ndarray, preferred: np.ndarray, key) -> np.ndarray:
    """The units (groups) of ``samples``, ``preferred``'s first (in its order, each at its first
    sample), then the others in a key-drawn order."""
    first = data.unit[preferred]
    _, at = np.unique(first, return_index=True)
    head = first[np.sort(at)]
    rest = np.setdiff1d(np.unique(data.unit[samples]), head)
    rng = np.random.default_rng(np.ravel(key_data(jax.random.fold_in(key, 0x6A0F))).tolist())
    return np.concatenate([head, rest[rng.permutation(rest.size)]]).astype(np.int64)


def pack_groups(data: Data, candidates: np.ndarray, chosen: np.ndarray, count: int, key):
    """Whole groups of the ``candidates`` (mask [S]) meeting ``count``, preferring the groups of
    ``chosen`` in their order: (samples in selection order, the record of the counts).

    The greedy fill is kept when it met the count; otherwise
    :func:`~goldener_jax._allocation.assign_groups_to_sets` keeps the longest prefix of the picks
    and packs the last samples exactly, or returns the nearest reachable count."""
    total = int(np.count_nonzero(candidates))
    if chosen.size == count:
        return chosen, {"requested": count, "achieved": count, "exact": True, "optimal": True}
    order = unit_order(data, np.flatnonzero(candidates), chosen, key)
    sizes = np.bincount(data.unit[candidates], minlength=int(data.unit.max()) + 1)
    packed = assign_groups_to_sets(sizes[order], [count, total - count])
    achieved = int(packed.achieved[0])
    if achieved == 0:
        raise ValueError(
            f"groups cannot satisfy the counts: {count} samples requested, but the nearest count "
            f"whole groups can meet is 0 (groups of {int(sizes[sizes > 0].min())} samples or "
            "more); ask for more samples or use smaller groups"
        )
    keep = np.zeros(sizes.size, bool)
    keep[order[packed.set_of_group == 0]] = True
    in_set = candidates & keep[data.unit]
    picked = chosen[in_set[chosen]]
    rank = np.full(data.unit.size, -1, np.int64)
    rank[picked] = np.arange(picked.size)
    unit_pos = np.empty(sizes.size, np.int64)
    unit_pos[order] = np.arange(order.size)
    others = np.flatnonzero(in_set & (rank < 0))
    others = others[np.lexsort((others, unit_pos[data.unit[others]]))]
    out = np.concatenate([picked, others]).astype(np.int64)
    record = {
        "requested": count,
        "achieved": achieved,
        "exact": bool(packed.exact),
        "optimal": bool(packed.optimal),
    }
    return out, record


# Candidate rows per piece of the multi-process coverage radius, per device: bounds what a process
# holds to its share of a piece (not of the whole pool) next to the picks.
_RADIUS_PIECE_BYTES = 32 << 20


def coverage_radius(data: Data, selected_vecs, candidate_vecs, metric: str, mesh) -> float | None:
    """Largest distance from a candidate vector to its nearest selected vector (``None`` when
    either is empty).

    With rows read per process (``data.source``) the candidates go in pieces of a fixed padded
    size (one compiled program): each process reads only its own devices' rows of a piece, the
    piece's maximum is global (over the mesh), and the radius is the maximum over the pieces. A
    short last piece is filled with copies of its last row (its distance counted twice: the
    maximum is unchanged). Otherwise the candidates are one array, as before.

    Args:
      data: the run's inputs.
      selected_vecs: int vector indices of the centers (picks and anchors).
      candidate_vecs: int vector indices whose distance to the nearest center counts.
      metric: the selection metric (the radius is in its units).
      mesh: the run's mesh, or ``None``.

    Returns:
      The radius as a float, or ``None``.
    """
    if selected_vecs.size == 0 or candidate_vecs.size == 0:
        return None
    anchors = data.anchor_rows(selected_vecs)
    if data.source is None or data.x_host is not None:
        x, n = data.task_rows(candidate_vecs)
        state = gk.kcenter_init(x, 0, metric=metric, anchors=anchors, mesh=mesh, n=n)
        return float(gk.kcenter_coverage_radius(state, metric=metric))
    source = data.source
    _, p = gk.sharding.mesh_axis(mesh)
    per_device = max(1, _RADIUS_PIECE_BYTES // max(1, source.dim * source.dtype.itemsize))
    piece = min(per_device * p, gk.sharding.padded_rows(int(candidate_vecs.size), mesh))
    radius = 0.0
    try:
        for a in range(0, candidate_vecs.size, piece):
            vecs = candidate_vecs[a : a + piece]
            vecs = np.concatenate([vecs, np.full(piece - vecs.size, vecs[-1], vecs.dtype)])
            x = source.sharded(vecs)
            state = gk.kcenter_init(x, 0, metric=metric, anchors=anchors, mesh=mesh, n=piece)
            radius = max(radius, float(gk.kcenter_coverage_radius(state, metric=metric)))
            x.delete()
            del x, state
    finally:
        anchors.delete()
        del anchors
        release_freed_memory()
    return radius
