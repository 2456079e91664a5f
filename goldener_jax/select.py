"""``select``: stratified, multi-vector, chunked, resumable selection over a store or an array.

Orchestration only: ``kernels.selectors`` compute, ``pipeline`` loads the inputs, plans the tasks
and keeps the progress. The selection is a deterministic sequence of *tasks* (one selector run on
one chunk of candidate vectors, e.g. a k-center run of ``k`` steps); which tasks run depends only
on the config, the key and the results of earlier tasks. With ``checkpoint_dir``:

* after each task its new samples are saved (``progress``, an Orbax checkpoint of O(N) arrays);
* inside a long task the selector state is saved every ``checkpoint_every`` steps (``inflight``);

and a rerun replays the finished tasks from the log, restores the selector state of the task in
flight and continues it. Selectors continue a restored state bit for bit, chunks are drawn from the
key: a run killed at any point and rerun returns exactly the selection of an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from goldener_jax import pipeline
from goldener_jax._allocation import count_from_size, exact_ratio
from goldener_jax.pipeline import METHODS, BudgetRule, SelectionMethod, SuiteRule, register_method
from goldener_jax.pipeline.engine import coverage_radius

__all__ = [
    "METHODS",
    "BudgetRule",
    "SuiteRule",
    "Selection",
    "SelectionMethod",
    "register_method",
    "select",
]

_COVERAGE_PAIRS = 10**10


@dataclasses.dataclass(frozen=True)
class Selection:
    """The result of :func:`select`.

    Attributes:
      indices: int64 ``[count]`` chosen sample indices, in selection order.
      label_counts: ``{label: selected samples with that label}`` (``None`` without labels).
      coverage_radius: largest distance from a candidate vector to its nearest selected (or
        anchor) vector; ``None`` when not computed (``coverage=False``).
      config: the request (method, and the rule that chose it for ``"auto"``; options, size,
        count, key, ...), JSON-able.
      resumed: what this call reused from ``checkpoint_dir``: ``tasks_replayed`` (tasks taken
        from the log) and ``steps_restored`` (selector steps restored from the in-flight
        checkpoint); zeros for a fresh run.
      group_counts: with ``groups``: ``{"requested", "achieved", "exact", "optimal"}``, the
        count asked and the count whole groups met (the nearest reachable one when the request
        is not; ``optimal``: proven nearest); ``None`` without groups.
    """

    indices: np.ndarray
    label_counts: dict | None
    coverage_radius: float | None
    config: dict
    resumed: dict = dataclasses.field(
        default_factory=lambda: {"tasks_replayed": 0, "steps_restored": 0}
    )
    group_counts: dict | None = None

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def to_json(self) -> dict:
        return {
            "indices": [int(i) for i in self.indices],
            "label_counts": None
            if self.label_counts is None
            else {str(k): int(v) for k, v in self.label_counts.items()},
            "coverage_radius": self.coverage_radius,
            "config": self.config,
            "group_counts": self.group_counts,
        }


def select(
    store_or_array,
    size,
    *,
    method="auto",
    key,
    labels=None,
    groups=None,
    anchors=None,
    size_of: str = "remaining",
    exclude_labels: Sequence | None = None,
    sample_idx=None,
    metric: str = "euclidean",
    chunk_size: int | None = None,
    max_anchors: int | None = 4096,
    reduce=None,
    checkpoint_dir=None,
    checkpoint_every: int = 100,
    method_options: Mapping | None = None,
    coverage: bool | None = None,
    mesh=None,
    progress: bool = True,
) -> Selection:
    """Chooses ``size`` samples to label / keep, from the vectors describing them.

    Args:
      store_or_array: a :class:`~goldener_jax.FeatureStore` (or its path), or an array
        ``[Nv, d]`` of vectors (one per sample unless ``sample_idx`` says otherwise).
      size: a float in (0, 1] (``ceil(size x candidate samples)``) or an int in [1, N].
      method: ``"auto"`` (default: :class:`SuiteRule`, chosen by evidence across ten real
        datasets: typical k-center below 40 picks, ProbCover from 40 picks on; the scalable
        :class:`BudgetRule` beyond 50,000 vectors), a registered method (``"kcenter"``,
        ``"farthest"``, ``"closest"``, ``"herding"``, ``"zcore"``, ``"kmeans_medoids"``,
        ``"typiclust"``, ``"probcover"``, ``"typical_kcenter"``, ``"random"``), a
        :class:`SelectionMethod` or a rule ``(vectors, count) -> method name`` such as
        ``BudgetRule(threshold=0.1)``; ``Selection.config["method"]`` records what ran and
        ``config["auto"]`` the rule that chose it. Plain k-center (coverage) favours outliers
        and trails random at small budgets on most real data (docs/benchmarks.md).
      key: a ``jax.random.key`` (a legacy ``jax.random.PRNGKey`` is accepted and draws the same):
        chunks, method randomness, projections. Same key, same result.
      labels: per-sample labels ``[N]`` (ints / strings) or multi-hot ``[N, L]``; the selection
        is stratified by label (goldener's allocation rules, see the guide). A store's labels
        are used when this is None; ``False`` uses no labels at all (e.g. an active-learning
        round that must not see the store's ground truth).
      groups: per-sample group ids ``[N]`` (NaN ids are refused): a chosen sample brings its
        whole group. When no set of whole groups has exactly the requested count, the nearest
        reachable count is selected, with a warning (``Selection.group_counts``).
      anchors: sample indices already chosen (e.g. labelled): they count as chosen for the
        kernel (k-center starts from them) and are never returned.
      size_of: what ``size`` counts (``P``: the pool after ``exclude_labels``, ``m`` anchors in
        it). ``"remaining"`` (default): new picks, a float a share of the ``P - m`` candidates.
        ``"pool"``: new picks, a float a share of ``P`` (``0.05``: ``ceil(0.05 P)`` each round).
        ``"total"``: anchors plus new picks (an int, or ``ceil(size P)``), so at least ``m + 1``.
        Outside ``"remaining"`` the count is spread over labels as an int is.
      exclude_labels: labels whose samples are dropped (needs labels).
      sample_idx: for an array, the sample of each vector ``[Nv]``.
      metric: distance of the kernels (``"euclidean"``, ``"sqeuclidean"``, ``"cosine"``).
      chunk_size: vectors per random chunk (None: one chunk). Quotas are proportional to chunk
        sizes; earlier picks act as anchors, at most ``max_anchors`` of them.
      max_anchors: bound on the anchor vectors of one task (evenly spaced subset beyond it).
      reduce: ``"pca:C"``, ``"random:C"`` (``C`` a positive int) or a dict: dimension reduction
        before selection.
      checkpoint_dir: where to save progress; a rerun resumes it (see the module docstring).
        Asking again for the same size is a no-op, for more extends the saved selection. The
        directory is locked for the run (a second run on it gets ``LockedError``), and its
        data fingerprint covers every row of the vectors, labels and groups: a rerun on changed
        data raises ``CheckpointMismatchError``.
      checkpoint_every: selector steps between in-flight checkpoints.
      method_options: the method's options, checked against its options dataclass
        (``goldener_jax.pipeline.methods``): e.g. ``{"num_samples": 100000}`` for zcore (``"impl"``
        chooses its compiled CPU walk or XLA kernel as in ``kernels.zcore_run``),
        ``{"kernel": "rbf", "length_scale": 1.0}`` for herding. An unknown key or a value of
        the wrong type raises, naming the method and the valid options.
      coverage: compute the coverage radius (a blocked pass over candidates x selected vectors);
        ``None`` (default): only when that is at most 1e10 pairs.
      mesh: optional 1-D ``jax.sharding.Mesh`` (``goldener_jax.kernels.make_mesh()``): each
        task's rows are sharded over its devices, with the same result as without (every
        method).
      progress: a tqdm bar over the selected samples.

    Returns:
      A :class:`Selection`.
    """
    key = pipeline.check_common(key, metric, chunk_size, max_anchors, checkpoint_every)
    if isinstance(size, bool) or not isinstance(size, (int, float, np.integer, np.floating)):
        raise TypeError(f"size must be a float in (0, 1] or an int >= 1, got {size!r}")
    # JSON-able in the config; a NumPy float as the decimal it prints (np.float32(0.1): 0.1).
    if isinstance(size, np.floating):
        size = float(exact_ratio(size))
    size = size.item() if isinstance(size, np.generic) else size
    if size_of not in ("remaining", "pool", "total"):
        raise ValueError(f"size_of must be 'remaining', 'pool' or 'total', got {size_of!r}")
    red = pipeline.parse_reduce(reduce)
    with pipeline.checkpoint_lock(checkpoint_dir):  # one run per checkpoint directory
        return _select(
            store_or_array,
            size,
            method=method,
            key=key,
            labels=labels,
            groups=groups,
            anchors=anchors,
            size_of=size_of,
            exclude_labels=exclude_labels,
            sample_idx=sample_idx,
            metric=metric,
            chunk_size=chunk_size,
            max_anchors=max_anchors,
            red=red,
            checkpoint_dir=checkpoint_dir,
            checkpoint_every=checkpoint_every,
            method_options=method_options,
            coverage=coverage,
            mesh=mesh,
            progress=progress,
        )


def _select(
    store_or_array,
    size,
    *,
    method,
    key,
    labels,
    groups,
    anchors,
    size_of,
    exclude_labels,
    sample_idx,
    metric,
    chunk_size,
    max_anchors,
    red,
    checkpoint_dir,
    checkpoint_every,
    method_options,
    coverage,
    mesh,
    progress,
) -> Selection:
    data = pipeline.load_data(store_or_array, labels, groups, sample_idx, exclude_labels, mesh=mesh)
    anchor_samples = pipeline.anchor_samples(anchors, data)
    pipeline.apply_reduce(data, red, key)
    alive = np.ones(data.sample_ids.shape[0], bool)
    alive[anchor_samples] = False
    settings = pipeline.Settings(
        method=method,
        key=key,
        metric=metric,
        method_options=method_options,
        chunk_size=chunk_size,
        max_anchors=max_anchors,
        checkpoint_every=checkpoint_every,
        mesh=mesh,
    )
    out = pipeline.run_selection(
        data,
        _new_picks(size, size_of, alive.size, anchor_samples.size),
        settings,
        alive=alive,
        anchor_samples=anchor_samples,
        checkpoint_dir=checkpoint_dir,
        base_config={"reduce": red, "kind": "select"},
        progress=progress,
    )
    chosen = out.chosen
    if out.groups is not None and not out.groups["exact"]:
        warnings.warn(
            f"select: whole groups cannot meet the requested {out.groups['requested']} samples; "
            f"selected the nearest reachable count, {out.groups['achieved']} "
            "(Selection.group_counts)",
            stacklevel=3,
        )
    label_counts = None
    if data.label_matrix is not None:
        label_counts = {
            name: int(np.count_nonzero(data.label_matrix[chosen, j]))
            for j, name in enumerate(data.label_names)
        }
    taken = alive.copy()
    taken[chosen] = True
    candidates = np.flatnonzero(taken[data.vec_sample])
    if coverage is None:
        coverage = candidates.size * max(1, len(chosen)) <= _COVERAGE_PAIRS
    radius = None
    if coverage:
        picked = np.flatnonzero(np.isin(data.vec_sample, np.concatenate([chosen, anchor_samples])))
        radius = coverage_radius(data, picked, candidates, metric, mesh)
    return Selection(
        indices=data.sample_ids[chosen].astype(np.int64),
        label_counts=label_counts,
        coverage_radius=radius,
        config={**out.config, "count": out.count, "size": size, "size_of": size_of},
        resumed=out.resumed,
        group_counts=out.groups,
    )


def _new_picks(size, size_of: str, pool: int, m: int):
    """``size`` for ``run_selection``: as given for ``"remaining"``, else the new picks' count."""
    if size_of == "remaining":
        return size
    count = count_from_size(size, pool) - (m if size_of == "total" else 0)
    if not 1 <= count <= pool - m:
        msg = f"size={size!r}, size_of={size_of!r} asks for {count} new samples with {m} anchors"
        raise ValueError(f"{msg} in a pool of {pool}: need 1 to {pool - m}")
    return count
