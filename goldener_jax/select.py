"""``select``: stratified, multi-vector, chunked, resumable selection over a store or an array.

Orchestration only: the kernels (``goldener_jax.kernels``) do the compute. The selection is a
deterministic sequence of *tasks* (one kernel call on one chunk of candidate vectors, e.g. a
k-center run of ``k`` steps); which tasks run depends only on the config, the key and the results
of earlier tasks. With ``checkpoint_dir``:

* after each task its new samples are saved (``progress``, an Orbax checkpoint of O(N) arrays);
* inside a long task the kernel state is saved every ``checkpoint_every`` steps (``inflight``);

and a rerun replays the finished tasks from the log, restores the kernel state of the task in
flight and continues it. Kernels continue a restored state bit for bit, chunks are drawn from the
key, so a run killed at any point and rerun returns exactly the selection of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np

from goldener_jax import kernels as gk
from goldener_jax._allocation import (
    _is_float,
    chunk_quotas,
    count_from_size,
    exact_ratio,
    first_round_label_counts,
    later_round_label_counts,
    random_chunks,
)
from goldener_jax.kernels._checks import as_float_matrix

__all__ = [
    "METHODS",
    "Selection",
    "SelectionMethod",
    "register_method",
    "select",
]

# --------------------------------------------------------------------------- method registry


@dataclasses.dataclass(frozen=True)
class SelectionMethod:
    """A selection kernel as ``select`` drives it (one *task* = one call on a chunk).

    Attributes:
      name: registry name.
      init: ``(x, k, anchors, key, options) -> state`` (``anchors`` may be ``None``).
      run: ``(state, x, max_steps, options) -> state``; advancing by at most ``max_steps``.
      finished: ``state -> bool``.
      picks: ``state -> int array [k]`` of row indices into ``x``, in selection order.
      num_steps: ``(n, k, options) -> int`` steps of a full run (checkpoint granularity).
      uses_anchors: whether ``anchors`` influence the choice.
      prepare: optional ``(x, options) -> options`` run once per task before ``init`` (e.g. a
        data-dependent bandwidth), so that ``init`` can be traced abstractly.
      shardable: whether ``init`` / ``run`` pass ``options["mesh"]`` (set by ``select(...,
        mesh=)``, ``None`` otherwise) to sharded kernels; ``select`` refuses a mesh otherwise.
    """

    name: str
    init: Callable
    run: Callable
    finished: Callable
    picks: Callable
    num_steps: Callable
    uses_anchors: bool = True
    prepare: Callable | None = None
    shardable: bool = False


METHODS: dict[str, SelectionMethod] = {}


# Hooks shared by the kernels whose state has `selected [k]` and `count` (k-center, herding).
def _all_selected(state) -> bool:
    return int(state.count) >= state.selected.shape[0]


def _selected(state) -> np.ndarray:
    return np.asarray(state.selected)


def _k_steps(n: int, k: int, options) -> int:
    return k


def _stepwise_method(name: str, init, run, **flags) -> SelectionMethod:
    """A method whose state has ``selected`` / ``count`` and takes one pick per step."""
    return SelectionMethod(
        name=name,
        init=init,
        run=run,
        finished=_all_selected,
        picks=_selected,
        num_steps=_k_steps,
        **flags,
    )


_COVERAGE_PAIRS = 10**10


# Budget-aware rule for method="auto", measured by `goldener-jax bench quality` (digits, 10 seeds,
# budgets 2/5/10/20%; raw pixels and the demo CNN's features; docs/benchmarks.md): below this
# fraction of the vectors, k-means medoids (representative: +18 / +6 / +3 points over random at
# 2 / 5 / 10% on raw pixels, +16 / +8 / +2.5 on CNN features, where k-center gives +3 / +4 / +2);
# from it on, greedy k-center (coverage: +1.6 raw, +1.7 CNN at 20%, where the medoids fall to
# -0.6 / -0.1). Typicality-weighted k-center does not beat plain k-center at 20% (+1.7 vs +1.6 raw,
# +0.8 vs +1.7 raw per class, +1.2 vs +1.7 CNN), so it is not part of the rule.
_AUTO_SMALL_BUDGET = 0.15


def budget_auto(n: int, count: int, options: Mapping) -> str:
    """The budget-aware ``method="auto"`` rule: ``(vectors, count, options) -> method name``.

    ``"kmeans_medoids"`` when ``count < 0.15 n`` (small budgets: representative points), else
    ``"kcenter"`` (large budgets: coverage). The switch lies between the measured 10% and 20%.

    Evidence (``goldener-jax bench quality``, scikit-learn digits, 10 seeds, logistic regression,
    docs/benchmarks.md): at or above random's mean accuracy at every budget of 2/5/10/20%, on
    average +7.1 points on raw pixels and +7.0 on the demo CNN's features. The hybrid
    ``"typical_kcenter"`` was measured for the large budgets and did not beat plain k-center
    there (20%: +1.7 vs +1.6 points raw, +0.8 vs +1.7 raw per class, +1.2 vs +1.7 CNN), so the
    rule keeps k-center. ``"probcover"`` is slightly better than the medoids at 5-10% (+0.4 to
    +1.1 points plain, equal per class) but worse at 2%; not adopted on two measurements.

    Args:
      n: number of candidate vectors.
      count: samples to select.
      options: the method options (unused by this rule).

    Returns:
      The method name.
    """
    return "kmeans_medoids" if count < _AUTO_SMALL_BUDGET * n else "kcenter"


# method="auto" resolves through the last rule of this hook:
# (num_candidates, count, options) -> method name. The default is the budget-aware rule.
_AUTO: list[Callable[..., str]] = [budget_auto]


@contextlib.contextmanager
def with_budget_auto():
    """Within the block, ``method="auto"`` resolves through :func:`budget_auto`."""
    _AUTO.append(budget_auto)
    try:
        yield
    finally:
        _AUTO.remove(budget_auto)


def register_method(method: SelectionMethod, *, replace: bool = False) -> None:
    """Adds a method to ``select`` / ``split`` (``method=name``)."""
    if method.name in METHODS and not replace:
        raise ValueError(f"method {method.name!r} is already registered (pass replace=True)")
    METHODS[method.name] = method


def _kcenter_method() -> SelectionMethod:
    def init(x, k, anchors, key, options):
        metric, mesh = options.get("metric", "euclidean"), options.get("mesh")
        return gk.kcenter_init(x, k, metric=metric, anchors=anchors, mesh=mesh)

    def run(state, x, max_steps, options):
        return gk.kcenter_run(
            state,
            x,
            metric=options.get("metric", "euclidean"),
            max_steps=max_steps,
            mesh=options.get("mesh"),
        )

    return _stepwise_method("kcenter", init, run, shardable=True)


def _herding_method() -> SelectionMethod:
    def prepare(x, options):
        if options.get("length_scale") is None and options.get("kernel", "rbf") == "rbf":
            return {**options, "length_scale": gk.median_length_scale(x)}
        return options

    def _opts(options):
        return options.get("kernel", "rbf"), float(options.get("length_scale") or 1.0)

    def init(x, k, anchors, key, options):
        kernel, scale = _opts(options)
        return gk.herding_init(x, k, kernel=kernel, length_scale=scale, mesh=options.get("mesh"))

    def run(state, x, max_steps, options):
        kernel, scale = _opts(options)
        return gk.herding_run(
            state,
            x,
            kernel=kernel,
            length_scale=scale,
            max_steps=max_steps,
            mesh=options.get("mesh"),
        )

    return _stepwise_method(
        "herding", init, run, uses_anchors=False, prepare=prepare, shardable=True
    )


def _zcore_method() -> SelectionMethod:
    keys = ("variant", "num_dims", "num_redundancy", "exponent", "impl")

    def _kw(options):
        kw = {k: options[k] for k in keys if k in options}
        if "zcore_metric" in options:
            kw["metric"] = options["zcore_metric"]
        return kw

    def _chunk(options):
        return int(options.get("chunk", 256))

    def _total(options):
        return int(options.get("num_samples", 100_000))

    def init(x, k, anchors, key, options):
        variant = options.get("variant", "paper")
        state = gk.zcore_init(x, key, variant=variant, mesh=options.get("mesh"))
        return {
            "zcore": state,
            "k": jnp.asarray(k, jnp.int32),
            "total": jnp.asarray(_total(options), jnp.int32),
        }

    def run(state, x, max_steps, options):
        z = state["zcore"]
        todo = min(_total(options) - int(z.done), int(max_steps) * _chunk(options))
        z = gk.zcore_run(
            z, x, max(todo, 0), chunk=_chunk(options), mesh=options.get("mesh"), **_kw(options)
        )
        return {**state, "zcore": z}

    def picks(state):
        return np.asarray(gk.zcore_select(state["zcore"].scores, int(state["k"])))

    return SelectionMethod(
        name="zcore",
        init=init,
        run=run,
        finished=lambda s: int(s["zcore"].done) >= int(s["total"]),
        picks=picks,
        num_steps=lambda n, k, options: -(-_total(options) // _chunk(options)),
        uses_anchors=False,
        shardable=True,
    )


def _random_method() -> SelectionMethod:
    def init(x, k, anchors, key, options):
        # Host-side draw seeded by the task's key: no compile per (n, k) chunk shape.
        rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).tolist())
        return {"picks": jnp.asarray(rng.permutation(x.shape[0])[:k].astype(np.int32))}

    return SelectionMethod(
        name="random",
        init=init,
        run=lambda state, x, max_steps, options: state,
        finished=lambda s: True,
        picks=lambda s: np.asarray(s["picks"]),
        num_steps=lambda n, k, options: 1,
        uses_anchors=False,
        shardable=True,  # a host-side draw: nothing to shard
    )


def _kmeans_x(x, options):
    """Rows as k-means sees them: unit rows for the cosine metric (spherical k-means)."""
    if options.get("metric", "euclidean") == "cosine":
        xf = jnp.asarray(x, jnp.float32)
        norm = jnp.sqrt(jnp.sum(xf * xf, axis=1, keepdims=True))
        return xf / jnp.where(norm > 0, norm, 1.0)
    return x


def _representative_method(name: str, pick) -> SelectionMethod:
    """k-means with k = the task's quota (k-means++ seeds from the task key), then one point per
    cluster chosen by ``pick(x, centroids, assignment, options)``. Steps are Lloyd iterations
    (``num_iters``, default 100) plus one for the pick."""

    def _iters(options):
        return int(options.get("num_iters", 100))

    def init(x, k, anchors, key, options):
        km = gk.kmeans_init(_kmeans_x(x, options), k, key, mesh=options.get("mesh"))
        return {"km": km, "picks": jnp.full((k,), -1, jnp.int32)}

    def run(state, x, max_steps, options):
        xk = _kmeans_x(x, options)
        km = state["km"]
        if not _km_done(km, options):
            km = gk.kmeans_run(
                km,
                xk,
                num_iters=_iters(options),
                max_steps=int(max_steps),
                mesh=options.get("mesh"),
            )
        picks = state["picks"]
        if _km_done(km, options) and int(picks[0]) < 0:
            assignment = gk.kmeans_assign(xk, km.centroids, mesh=options.get("mesh"))
            picks = pick(xk, km.centroids, assignment, options)
        return {"km": km, "picks": picks}

    def _km_done(km, options):
        return int(km.iteration) >= _iters(options) or not bool(km.changed)

    return SelectionMethod(
        name=name,
        init=init,
        run=run,
        finished=lambda s: int(s["picks"][0]) >= 0,
        picks=lambda s: np.asarray(s["picks"]),
        num_steps=lambda n, k, options: _iters(options) + 1,
        uses_anchors=False,
        shardable=True,
    )


def _kmeans_medoids_method() -> SelectionMethod:
    return _representative_method(
        "kmeans_medoids",
        lambda x, c, a, options: gk.kmeans_medoids(
            x,
            c,
            a,
            min_cluster_size=int(options.get("min_cluster_size", 5)),
            mesh=options.get("mesh"),
        ),
    )


def _typiclust_method() -> SelectionMethod:
    def pick(x, c, a, options):
        return gk.typical_points(
            x,
            c,
            a,
            num_neighbors=int(options.get("num_neighbors", 20)),
            min_cluster_size=int(options.get("min_cluster_size", 5)),
            mesh=options.get("mesh"),
        )

    return _representative_method("typiclust", pick)


def _probcover_method() -> SelectionMethod:
    """ProbCover over the task's rows. ``radius`` (``delta``) from the options, else
    :func:`~goldener_jax.kernels.probcover_radius` with ``num_neighbors`` (default
    ``ceil(n / k)``: a median ball holds about as many points as one pick must stand for) and
    ``quantile`` (0.5). The radius lives in the state, so a resumed run keeps it."""

    def init(x, k, anchors, key, options):
        xk = _kmeans_x(x, options)
        radius = options.get("radius")
        if radius is None:
            n = xk.shape[0]
            m = int(options.get("num_neighbors") or -(-n // max(1, k)))
            m = max(1, min(m, n - 1))
            quantile = float(options.get("quantile", 0.5))
            radius = gk.probcover_radius(xk, m, quantile=quantile) if n > 1 else 1.0
        if anchors is not None:
            anchors = _kmeans_x(anchors, options)
        return gk.probcover_init(xk, k, float(radius), anchors=anchors)

    def run(state, x, max_steps, options):
        return gk.probcover_run(state, _kmeans_x(x, options), max_steps=max_steps)

    return _stepwise_method("probcover", init, run)


def _typical_kcenter_method() -> SelectionMethod:
    """Typicality-weighted k-center (options ``num_neighbors`` 20, ``power`` 1.0)."""

    def init(x, k, anchors, key, options):
        xk = _kmeans_x(x, options)
        if anchors is not None:
            anchors = _kmeans_x(anchors, options)
        return gk.typical_kcenter_init(
            xk,
            k,
            anchors=anchors,
            num_neighbors=min(int(options.get("num_neighbors", 20)), max(1, xk.shape[0] - 1)),
            power=float(options.get("power", 1.0)),
        )

    def run(state, x, max_steps, options):
        return gk.typical_kcenter_run(state, _kmeans_x(x, options), max_steps=max_steps)

    return _stepwise_method("typical_kcenter", init, run)


for _factory in (
    _kcenter_method,
    _herding_method,
    _zcore_method,
    _random_method,
    _kmeans_medoids_method,
    _typiclust_method,
    _probcover_method,
    _typical_kcenter_method,
):
    register_method(_factory())


# --------------------------------------------------------------------------- result


@dataclasses.dataclass(frozen=True)
class Selection:
    """The result of :func:`select`.

    Attributes:
      indices: int64 ``[count]`` chosen sample indices, in selection order.
      label_counts: ``{label: selected samples with that label}`` (``None`` without labels).
      coverage_radius: largest distance from a candidate vector to its nearest selected (or
        anchor) vector; ``None`` when not computed (``coverage=False``).
      config: the request (method, size, count, key, ...), JSON-able.
    """

    indices: np.ndarray
    label_counts: dict | None
    coverage_radius: float | None
    config: dict

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
        }


# --------------------------------------------------------------------------- inputs


@dataclasses.dataclass
class _Data:
    """Vectors and per-sample metadata, samples renumbered 0..S-1."""

    x: np.ndarray  # [Nv, d] on the host
    vec_sample: np.ndarray  # [Nv] compact sample id of each vector
    sample_ids: np.ndarray  # [S] original sample index of each compact id
    label_matrix: np.ndarray | None  # [S, L] bool
    label_names: list | None
    unit: np.ndarray | None  # [S] compact group id, or None (each sample its own unit)
    fingerprint: dict
    x_dev: jax.Array | None = None  # the same rows on the device, when they are unchanged

    def rows(self, vecs: np.ndarray) -> jax.Array:
        """Rows ``vecs`` on the device; all of them without a copy when ``vecs`` is every row."""
        every = vecs.shape[0] == self.x.shape[0] and np.array_equal(vecs, np.arange(vecs.shape[0]))
        if every and self.x_dev is not None:
            return self.x_dev
        return jnp.asarray(self.x[vecs])


def _as_key_data(key) -> np.ndarray:
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(key))
    raise TypeError(f"key must be a jax.random.key(...), got {key!r}")


def _array_hash(a: np.ndarray, max_rows: int = 1024) -> str:
    a = np.asarray(a)
    if a.ndim >= 1 and a.shape[0] > max_rows:
        a = a[:: -(-a.shape[0] // max_rows)]
    h = hashlib.sha256(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def _full_hash(a) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.asarray(a)).tobytes()).hexdigest()[:16]


def _load(store_or_array, labels, groups, sample_idx) -> tuple:
    """(x, sample_idx, labels, groups, source fingerprint)."""
    from goldener_jax.store import FeatureStore

    if isinstance(store_or_array, (str, os.PathLike)):
        store_or_array = FeatureStore.open(store_or_array)
    if isinstance(store_or_array, FeatureStore):
        store = store_or_array
        if sample_idx is not None:
            raise ValueError("sample_idx is only for arrays; a store has its own")
        x, sidx = store.read_vectors()
        if labels is None:
            labels = store.read_labels()
        if groups is None:
            groups = store.read_groups()
        fp = {"store": str(store.path), "extractor": store.extractor_fingerprint}
        return x, sidx, labels, groups, fp
    x = store_or_array
    if not hasattr(x, "shape"):
        x = np.asarray(x)
    fp = {"array_shape": list(x.shape), "array_hash": _array_hash(np.asarray(x))}
    return x, sample_idx, labels, groups, fp


def _prepare(store_or_array, labels, groups, sample_idx, exclude_labels) -> _Data:
    x, sidx, labels, groups, fp = _load(store_or_array, labels, groups, sample_idx)
    if hasattr(x, "ndim") and x.ndim != 2:
        raise ValueError(f"vectors must be 2-D [n, d], got shape {tuple(x.shape)}")
    # Validated on the device, kept on the host: each task gathers its rows with NumPy (a jnp
    # gather would compile once per chunk shape).
    x_dev = as_float_matrix(x, "x")
    x = np.asarray(x_dev)
    nv = x.shape[0]
    if nv == 0:
        raise ValueError("there are no vectors to select from")
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
        fp["labels"] = _full_hash(labels)
    # Groups per compact sample (before any exclusion, so both are trimmed together).
    group_ids = None
    if groups is not None:
        groups = np.asarray(groups)
        if groups.ndim != 1:
            raise ValueError(f"groups must be 1-D [N], got shape {groups.shape}")
        if groups.dtype == object:
            groups = groups.astype(str)
        n_expected = int(sample_ids.max()) + 1 if sample_idx is None else num_samples
        if groups.shape[0] not in (n_expected, num_samples):
            raise ValueError(
                f"groups must have one entry per sample ({num_samples}), got shape {groups.shape}"
            )
        fp["groups"] = _full_hash(groups)
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
        x = x[np.flatnonzero(keep_vec)]
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
    return _Data(x, vec_sample, sample_ids, label_matrix, label_names, unit, fp, x_dev)


def _parse_reduce(reduce) -> dict | None:
    if reduce is None:
        return None
    if isinstance(reduce, str):
        name, _, comps = reduce.partition(":")
        reduce = {"method": name, "n_components": int(comps) if comps else None}
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


def _apply_reduce(data: _Data, reduce: dict | None, key) -> None:
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


# --------------------------------------------------------------------------- progress


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


class _Progress:
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


# --------------------------------------------------------------------------- engine


class _Engine:
    """Runs the selection plan over one pool, task by task, replaying logged tasks."""

    def __init__(
        self,
        data: _Data,
        method: SelectionMethod,
        options: dict,
        key,
        *,
        alive,
        chunk_size,
        max_anchors,
        anchor_vectors,
        progress: _Progress,
        count: int,
        ratio: Fraction,
        on_task: Callable | None = None,
        mesh=None,
    ):
        self.d = data
        self.mesh = mesh
        self.method = method
        self.options = options
        self.key = key
        self.alive = alive  # [S] bool: candidates (not anchors, not excluded, not taken)
        self.chunk_size = chunk_size
        self.max_anchors = max_anchors
        self.anchor_vectors = anchor_vectors  # int indices of anchor vectors
        self.progress = progress
        self.count = count
        self.ratio = ratio
        self.on_task = on_task
        num_samples = data.sample_ids.shape[0]
        self.unit_members = None
        if data.unit is not None:
            order = np.argsort(data.unit, kind="stable")
            bounds = np.searchsorted(data.unit[order], np.arange(data.unit.max() + 2))
            self.unit_members = [order[bounds[u] : bounds[u + 1]] for u in range(len(bounds) - 1)]
        st = progress.state
        # Replay: the base (earlier calls) stays; the tasks of this call are re-applied from the
        # log, in order, as the plan reaches them.
        self.log = []
        if int(st["complete"]):
            base = int(st["target"])  # a finished selection: a no-op, or extended from
        else:
            base = int(st["base_count"])
            if int(st["target"]) == count:  # the same request, killed: replay its tasks
                ends = st["task_ends"][: int(st["tasks_done"]) + 1]
                order = np.argsort(np.where(st["rank"] < 0, np.iinfo(np.int32).max, st["rank"]))
                self.log = [order[ends[t] : ends[t + 1]] for t in range(len(ends) - 1)]
        rank = np.where((st["rank"] >= 0) & (st["rank"] < base), st["rank"], -1)
        self.rank = rank.astype(np.int32)
        self.n_selected = base
        st["rank"] = self.rank.copy()
        st["base_count"] = np.asarray(base, np.int32)
        st["target"] = np.asarray(count, np.int32)
        st["complete"] = np.asarray(0, np.int32)
        st["tasks_done"] = np.asarray(0, np.int32)
        st["task_ends"] = np.zeros_like(st["task_ends"])
        st["task_ends"][0] = base
        self.task = 0
        self.chunkings = 0
        self.num_samples = num_samples

    # -- bookkeeping
    def selected_mask(self) -> np.ndarray:
        return self.rank >= 0

    def pool_samples(self, label_col: int | None) -> np.ndarray:
        ok = self.alive & ~self.selected_mask()
        if label_col is not None:
            ok &= self.d.label_matrix[:, label_col]
        return ok

    def label_selected(self, label_col: int) -> int:
        return int(np.count_nonzero(self.selected_mask() & self.d.label_matrix[:, label_col]))

    def _mark(self, samples: np.ndarray) -> None:
        for s in samples:
            self.rank[s] = self.n_selected
            self.n_selected += 1

    # -- one task
    def _run_task(self, cand_vecs: np.ndarray, k: int, label_col, remaining: int) -> np.ndarray:
        t = self.task
        self.task += 1
        if t < len(self.log):
            new = self.log[t]
        else:
            picks = self._compute(cand_vecs, k, label_col, t)
            new = self._new_samples(cand_vecs[picks], remaining)
        self._mark(new)
        st = self.progress.state
        st["rank"] = self.rank.copy()
        st["tasks_done"] = np.asarray(t + 1, np.int32)
        st["task_ends"][t + 1] = self.n_selected
        if t >= len(self.log):
            self.progress.save()
        if self.on_task is not None:
            self.on_task(t, new)
        return new

    def _new_samples(self, vecs: np.ndarray, remaining: int) -> np.ndarray:
        seen = self.selected_mask().copy()
        out: list[int] = []
        for v in vecs:
            s = int(self.d.vec_sample[v])
            if seen[s]:
                continue
            members = [s] if self.unit_members is None else self.unit_members[self.d.unit[s]]
            members = [int(m) for m in members if self.alive[m] and not seen[m]]
            if len(out) + len(members) > remaining:
                continue  # this group does not fit in what is left to select
            for m in members:
                seen[m] = True
                out.append(m)
        return np.asarray(out, np.int64)

    def _anchors(self, label_col) -> np.ndarray | None:
        if not self.method.uses_anchors:
            return None
        sel = self.selected_mask()
        if label_col is not None:
            sel &= self.d.label_matrix[:, label_col]
        sel_vecs = np.flatnonzero(sel[self.d.vec_sample])
        if sel_vecs.size:
            sel_vecs = sel_vecs[np.argsort(self.rank[self.d.vec_sample[sel_vecs]], kind="stable")]
        vecs = np.concatenate([self.anchor_vectors, sel_vecs]).astype(np.int64)
        if vecs.size == 0:
            return None
        if self.max_anchors is not None and vecs.size > self.max_anchors:
            # Bounded, deterministic: evenly spaced over (given anchors, then picks in order).
            vecs = vecs[np.linspace(0, vecs.size - 1, self.max_anchors).round().astype(np.int64)]
        return vecs

    def _compute(self, cand_vecs, k, label_col, t) -> np.ndarray:
        x = self.d.rows(cand_vecs)
        anchor_vecs = self._anchors(label_col)
        anchors = None if anchor_vecs is None else jnp.asarray(self.d.x[anchor_vecs])
        tkey = jax.random.fold_in(self.key, t)
        options = self.options
        if self.method.prepare is not None:
            options = self.method.prepare(x, options)
        if self.mesh is not None:  # not part of the config: a checkpoint moves across meshes
            options = {**options, "mesh": self.mesh}
        ckpt = self.progress.inflight(
            {"task": t, "n": int(x.shape[0]), "k": int(k), "method": self.method.name}
        )

        def init():
            return self.method.init(x, k, anchors, tkey, options)

        if ckpt is None:
            steps = self.method.num_steps(x.shape[0], k, options)
            return self.method.picks(self.method.run(init(), x, steps, options))
        try:
            # The initial state is the template of the restore (its shapes and dtypes).
            state, step = ckpt.restore(init())
            every = self.progress.every
            while not self.method.finished(state):
                state = self.method.run(state, x, every, options)
                step += every
                ckpt.save(step, state)
            return self.method.picks(state)
        finally:
            ckpt.close()

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
                raise ValueError(
                    f"no sample left to select{self._label_text(label_col)}: {still} more needed"
                )
            cand = np.flatnonzero(pool[self.d.vec_sample])
            if still >= available and self.unit_members is None:
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
                vecs = vecs[
                    pool[self.d.vec_sample[vecs]] & ~self.selected_mask()[self.d.vec_sample[vecs]]
                ]
                if vecs.size == 0:
                    continue
                k = min(quota, vecs.size)
                if k == vecs.size:
                    new = self._run_task_all(vecs, self.count - self.n_selected)
                else:
                    new = self._run_task(vecs, k, label_col, self.count - self.n_selected)
                # A label's need counts that label's samples (a group may bring others too).
                added += (
                    len(new)
                    if label_col is None
                    else int(np.count_nonzero(self.d.label_matrix[new, label_col]))
                )
                if self.n_selected >= self.count:
                    return added
            if added == before:
                raise ValueError(
                    f"groups cannot satisfy the counts{self._label_text(label_col)}: "
                    f"{need - added} more samples needed but every remaining group is larger"
                    if self.unit_members is not None
                    else f"no progress selecting{self._label_text(label_col)}"
                )
        return added

    def _run_task_all(self, vecs, remaining):
        # Every remaining vector is taken: no kernel call, but a task all the same (logged).
        t = self.task
        self.task += 1
        new = self.log[t] if t < len(self.log) else self._new_samples(vecs, remaining)
        self._mark(new)
        st = self.progress.state
        st["rank"] = self.rank.copy()
        st["tasks_done"] = np.asarray(t + 1, np.int32)
        st["task_ends"][t + 1] = self.n_selected
        if t >= len(self.log):
            self.progress.save()
        return new

    def _label_text(self, label_col) -> str:
        return "" if label_col is None else f" for label {self.d.label_names[label_col]!r}"

    def run(self) -> None:
        if self.n_selected == self.count and not self.log:
            return  # already done: a no-op
        if self.n_selected > self.count:
            raise ValueError(
                f"{self.n_selected} samples are already selected in this checkpoint, more than "
                f"the {self.count} requested; ask for at least {self.n_selected} or use another "
                "checkpoint_dir"
            )
        if self.d.label_matrix is None:
            self.fill(None, self.count - self.n_selected)
        else:
            self._stratified()
        st = self.progress.state
        st["complete"] = np.asarray(1, np.int32)
        self.progress.save()

    def _stratified(self) -> None:
        lm = self.d.label_matrix
        num_labels = lm.shape[1]
        # Round 1: targets from the ratio over each label's population (available + selected).
        population = {
            j: int(np.count_nonzero((self.alive | self.selected_mask()) & lm[:, j]))
            for j in range(num_labels)
        }
        targets = first_round_label_counts(population, self.ratio)
        for j, target in targets.items():
            if self.n_selected >= self.count:
                break
            status = self.label_selected(j)
            if status >= target:
                continue
            self.fill(j, min(target - status, self.count - self.n_selected))
        # Later rounds: the shortfall over labels, in proportion to their unselected samples.
        while self.n_selected < self.count:
            missing = self.count - self.n_selected
            unselected = {j: int(np.count_nonzero(self.pool_samples(j))) for j in range(num_labels)}
            counts = later_round_label_counts(unselected, missing)
            init = {j: self.label_selected(j) for j in range(num_labels)}
            before = self.n_selected
            for j, c in counts.items():
                if c == 0 or self.n_selected >= self.count:
                    continue
                status = self.label_selected(j) - init[j]
                if status >= c:
                    continue
                self.fill(j, min(c - status, self.count - self.n_selected))
            if self.n_selected == before:
                raise ValueError(f"groups cannot satisfy the counts: {missing} more samples needed")


# --------------------------------------------------------------------------- public


def _coverage(data: _Data, selected_vecs, candidate_vecs, metric, mesh=None) -> float | None:
    if selected_vecs.size == 0 or candidate_vecs.size == 0:
        return None
    state = gk.kcenter_init(
        data.rows(candidate_vecs), 0, metric=metric, anchors=data.rows(selected_vecs), mesh=mesh
    )
    return float(gk.kcenter_coverage_radius(state, metric=metric))


def _resolve_method(method, n, count, options) -> SelectionMethod:
    if method == "auto":
        method = _AUTO[-1](n, count, options)
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS) + ['auto']}, got {method!r}")
    return METHODS[method]


def _select(
    data: _Data,
    count_or_size,
    *,
    method,
    key,
    alive: np.ndarray,
    anchor_samples: np.ndarray,
    chunk_size,
    max_anchors,
    checkpoint_dir,
    checkpoint_every,
    options,
    ratio_total: int | None = None,
    base_config: dict,
    coverage: bool | None,
    on_task=None,
    mesh=None,
) -> Selection:
    num_alive = int(np.count_nonzero(alive))
    if num_alive == 0:
        raise ValueError("there are no candidate samples to select from")
    count = count_from_size(count_or_size, num_alive)
    total = num_alive if ratio_total is None else ratio_total
    ratio = exact_ratio(count_or_size) if _is_float(count_or_size) else Fraction(count, total)
    m = _resolve_method(method, data.x.shape[0], count, options)
    if mesh is not None:
        gk.sharding.mesh_axis(mesh)  # a clear error for anything but a 1-D Mesh
        if not m.shardable:
            sharded = sorted(name for name, meth in METHODS.items() if meth.shardable)
            raise ValueError(
                f"method {m.name!r} has no sharded kernel, so it cannot run with mesh=; "
                f"use one of {sharded} or mesh=None"
            )
    anchor_vectors = np.flatnonzero(np.isin(data.vec_sample, anchor_samples))
    config = {
        **base_config,
        "method": m.name,
        "options": {k: v for k, v in options.items()},
        "key": [int(v) for v in np.ravel(_as_key_data(key))],
        "chunk_size": chunk_size,
        "max_anchors": max_anchors,
        "anchors": _full_hash(np.sort(anchor_samples)),
        "data": data.fingerprint,
    }
    config = json.loads(json.dumps(config, sort_keys=True, default=str))
    progress = _Progress(checkpoint_dir, config, data.sample_ids.shape[0], checkpoint_every)
    try:
        engine = _Engine(
            data,
            m,
            options,
            key,
            alive=alive,
            chunk_size=chunk_size,
            max_anchors=max_anchors,
            anchor_vectors=anchor_vectors,
            progress=progress,
            count=count,
            ratio=ratio,
            on_task=on_task,
            mesh=mesh,
        )
        engine.run()
    finally:
        progress.close()
    rank = engine.rank
    chosen = np.flatnonzero(rank >= 0)
    chosen = chosen[np.argsort(rank[chosen])]
    label_counts = None
    if data.label_matrix is not None:
        label_counts = {
            name: int(np.count_nonzero(data.label_matrix[chosen, j]))
            for j, name in enumerate(data.label_names)
        }
    radius = None
    if coverage is None:
        pairs = int(np.count_nonzero((alive | (rank >= 0))[data.vec_sample])) * max(1, len(chosen))
        coverage = pairs <= _COVERAGE_PAIRS
    if coverage:
        sel_vecs = np.flatnonzero(
            np.isin(data.vec_sample, np.concatenate([chosen, anchor_samples]))
        )
        cand_vecs = np.flatnonzero((alive | (rank >= 0))[data.vec_sample])
        radius = _coverage(data, sel_vecs, cand_vecs, options.get("metric", "euclidean"), mesh)
    return Selection(
        indices=data.sample_ids[chosen].astype(np.int64),
        label_counts=label_counts,
        coverage_radius=radius,
        config={
            **config,
            "count": count,
            "size": count_or_size
            if not isinstance(count_or_size, np.generic)
            else count_or_size.item(),
        },
    )


def _anchor_samples(anchors, data: _Data) -> np.ndarray:
    if anchors is None:
        return np.zeros((0,), np.int64)
    anchors = np.asarray(anchors)
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


def select(
    store_or_array,
    size,
    *,
    method: str = "kcenter",
    key,
    labels=None,
    groups=None,
    anchors=None,
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
) -> Selection:
    """Chooses ``size`` samples to label / keep, from the vectors describing them.

    Args:
      store_or_array: a :class:`~goldener_jax.FeatureStore` (or its path), or an array
        ``[Nv, d]`` of vectors (one per sample unless ``sample_idx`` says otherwise).
      size: a float in (0, 1] (``ceil(size x candidate samples)``) or an int in [1, N].
      method: a registered method: ``"kcenter"`` (default), ``"herding"``, ``"zcore"``,
        ``"random"``, or ``"auto"``.
      key: a ``jax.random.key``: chunks, method randomness, projections. Same key, same result.
      labels: per-sample labels ``[N]`` (ints / strings) or multi-hot ``[N, L]``; the selection
        is stratified by label (goldener's allocation rules, see the guide). A store's labels
        are used when this is None.
      groups: per-sample group ids ``[N]``: a chosen sample brings its whole group.
      anchors: sample indices already chosen (e.g. labelled): they count as chosen for the
        kernel (k-center starts from them) and are never returned.
      exclude_labels: labels whose samples are dropped (needs labels).
      sample_idx: for an array, the sample of each vector ``[Nv]``.
      metric: distance of the kernels (``"euclidean"``, ``"sqeuclidean"``, ``"cosine"``).
      chunk_size: vectors per random chunk (None: one chunk). Quotas are proportional to chunk
        sizes; earlier picks act as anchors, at most ``max_anchors`` of them.
      max_anchors: bound on the anchor vectors of one task (evenly spaced subset beyond it).
      reduce: ``"pca:C"``, ``"random:C"`` or a dict: dimension reduction before selection.
      checkpoint_dir: where to save progress; a rerun resumes it (see the module docstring).
        Asking again for the same size is a no-op, for more extends the saved selection.
      checkpoint_every: kernel steps between in-flight checkpoints.
      method_options: options of the method (e.g. ``{"num_samples": 100000}`` for zcore, with
        ``"impl"`` choosing its compiled CPU walk or XLA kernel as in ``kernels.zcore_run``;
        ``{"kernel": "rbf", "length_scale": 1.0}`` for herding).
      coverage: compute the coverage radius (a blocked pass over candidates x selected vectors);
        ``None`` (default): only when that is at most 1e10 pairs.
      mesh: optional 1-D ``jax.sharding.Mesh`` (``goldener_jax.kernels.make_mesh()``): each
        task's rows are sharded over its devices (``kernels.sharding``), with the same result
        as without. Methods with a sharded kernel: ``kcenter``, ``herding``, ``zcore``,
        ``kmeans_medoids``, ``typiclust``, ``random`` (others raise ``ValueError``).

    Returns:
      A :class:`Selection`.
    """
    if not (isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)):
        raise TypeError(f"key must be a jax.random.key(...), got {key!r}")
    if metric not in gk.METRICS:
        raise ValueError(f"metric must be one of {gk.METRICS}, got {metric!r}")
    _check_chunk(chunk_size, max_anchors, checkpoint_every)
    if isinstance(size, bool) or not isinstance(size, (int, float, np.integer, np.floating)):
        raise TypeError(f"size must be a float in (0, 1] or an int >= 1, got {size!r}")
    red = _parse_reduce(reduce)
    data = _prepare(store_or_array, labels, groups, sample_idx, exclude_labels)
    anchor_samples = _anchor_samples(anchors, data)
    _apply_reduce(data, red, key)
    alive = np.ones(data.sample_ids.shape[0], bool)
    alive[anchor_samples] = False
    options = {"metric": metric, **dict(method_options or {})}
    return _select(
        data,
        size,
        method=method,
        key=key,
        alive=alive,
        anchor_samples=anchor_samples,
        chunk_size=chunk_size,
        max_anchors=max_anchors,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every,
        options=options,
        base_config={"reduce": red, "kind": "select"},
        coverage=coverage,
        mesh=mesh,
    )


def _check_chunk(chunk_size, max_anchors, checkpoint_every) -> None:
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
