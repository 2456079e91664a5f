"""One interface for every selection method, optax-style.

A factory per method captures the method's settings (metric, kernel, iterations, mesh, ...) once
and returns a :class:`Selector`: pure functions over a ``NamedTuple`` state of arrays (exactly
what a checkpoint saves), so nothing has to be passed again to continue a run::

    sel = selectors.kcenter(metric="cosine", mesh=gk.make_mesh())
    state = sel.init(x, 10, key=jax.random.key(0))
    while not sel.finished(state):
        state = sel.run(state, x, max_steps=4)   # cut anywhere: equal to one whole run
    idx = sel.picks(state)                       # int32 [k], selection order

``run(state, x)`` with ``max_steps=None`` runs to the end. A run cut into chunks with ``max_steps``
gives the same picks as one run; that is what resuming from a checkpoint relies on. Every factory
takes ``mesh=`` (rows sharded over a 1-D mesh, the same picks as one device). No I/O here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .greedy import greedy_init, greedy_run
from .herding import herding_init, herding_run, median_length_scale
from .kcenter import kcenter_init, kcenter_run
from .kmeans import kmeans_assign, kmeans_init, kmeans_run, typical_points
from .kmeans import kmeans_medoids as _medoid_points
from .probcover import clear_graph_cache, probcover_init, probcover_radius, probcover_run
from .typical_kcenter import typical_kcenter_init, typical_kcenter_run
from .zcore import zcore_init, zcore_run, zcore_select

__all__ = [
    "Selector",
    "anchored_clusters",
    "closest",
    "farthest",
    "herding",
    "kcenter",
    "kmeans_medoids",
    "one_shot",
    "probcover",
    "random",
    "typical_kcenter",
    "typiclust",
    "zcore",
]


class Selector(NamedTuple):
    """A selection method with its settings captured (see the module docstring).

    Attributes:
      name: the method's name.
      options: the captured settings (JSON-able values, for records), without the mesh.
      init: ``(x, k, *, key, anchors=None) -> state``; ``anchors`` (rows ``[m, d]`` already
        chosen) are ignored by methods with ``uses_anchors=False``.
      step: ``(state, x) -> state``, one step.
      run: ``(state, x, max_steps=None) -> state``, at most ``max_steps`` steps (None: to the end).
      picks: ``state -> int32 [k]`` row indices of ``x`` in selection order.
      finished: ``state -> bool``.
      uses_anchors: whether ``anchors`` influence the choice.
    """

    name: str
    options: dict
    init: Callable[..., Any]
    step: Callable[..., Any]
    run: Callable[..., Any]
    picks: Callable[[Any], np.ndarray]
    finished: Callable[[Any], bool]
    uses_anchors: bool


def _on(mesh) -> dict:
    # Only a mesh is passed on: one-device calls stay the kernels' plain calls.
    return {} if mesh is None else {"mesh": mesh}


def _make(name, options, init, run, picks, finished, uses_anchors) -> Selector:
    return Selector(
        name=name,
        options=dict(options),
        init=init,
        step=lambda state, x: run(state, x, 1),
        run=run,
        picks=picks,
        finished=finished,
        uses_anchors=uses_anchors,
    )


# Kernels whose state has ``selected [k]`` (``-1`` until chosen) and ``count``.
def _selected(state) -> np.ndarray:
    return np.asarray(state.selected)


def _all_selected(state) -> bool:
    return int(state.count) >= state.selected.shape[0]


def _unit_rows(x, metric: str):
    """Rows as the clustering / ball methods see them: unit rows for the cosine metric
    (spherical k-means), the rows themselves otherwise."""
    if metric == "cosine":
        xf = jnp.asarray(x, jnp.float32)
        norm = jnp.sqrt(jnp.sum(xf * xf, axis=1, keepdims=True))
        return xf / jnp.where(norm > 0, norm, 1.0)
    return x


def kcenter(*, metric: str = "euclidean", mesh=None) -> Selector:
    """Exact greedy k-center (coverage); starts from ``anchors`` when given."""

    def init(x, k, *, key=None, anchors=None, n=None):
        # n: real rows of an x already padded for the mesh (rows read per process).
        return kcenter_init(x, k, metric=metric, anchors=anchors, n=n, **_on(mesh))

    def run(state, x, max_steps=None):
        return kcenter_run(state, x, metric=metric, max_steps=max_steps, **_on(mesh))

    return _make("kcenter", {"metric": metric}, init, run, _selected, _all_selected, True)


def _greedy(mode: str, metric: str, mesh) -> Selector:
    def init(x, k, *, key=None, anchors=None, n=None):
        # n: real rows of an x already padded for the mesh (rows read per process).
        return greedy_init(x, k, metric=metric, n=n, **_on(mesh))

    def run(state, x, max_steps=None):
        return greedy_run(state, x, mode=mode, metric=metric, max_steps=max_steps, **_on(mesh))

    return _make(mode, {"metric": metric}, init, run, _selected, _all_selected, False)


def farthest(*, metric: str = "euclidean", mesh=None) -> Selector:
    """Farthest point: each pick the remaining point farthest from its nearest remaining one."""
    return _greedy("farthest", metric, mesh)


def closest(*, metric: str = "euclidean", mesh=None) -> Selector:
    """Closest point: each pick the remaining point closest to its nearest remaining one."""
    return _greedy("closest", metric, mesh)


class HerdingSelection(NamedTuple):
    """Kernel herding's state plus the bandwidth it runs with (median heuristic when the
    settings leave it open; kept in the state so a resumed run does not recompute it)."""

    herding: Any  # HerdingState
    length_scale: jax.Array  # float32 scalar


def herding(*, kernel: str = "rbf", length_scale: float | None = None, mesh=None) -> Selector:
    """Kernel herding (MMD); ``length_scale=None``: the median heuristic of the rows (rbf).
    ``anchors`` are herding's first points: in the running mean from the start, so each pick
    balances the attraction of the data's mean against anchors and picks alike."""

    def scale(state) -> float:
        # The median heuristic's value is a float32 number, so the state holds it exactly.
        return float(state.length_scale) if length_scale is None else float(length_scale)

    def init(x, k, *, key=None, anchors=None, n=None):
        # n: real rows of an x already padded for the mesh (rows read per process).
        padded = {} if n is None else {"n": n, "mesh": mesh}
        median = length_scale is None and kernel == "rbf"
        ls = median_length_scale(x, **padded) if median else 1.0
        state = HerdingSelection(None, jnp.asarray(ls, jnp.float32))
        h = herding_init(
            x, k, kernel=kernel, length_scale=scale(state), anchors=anchors, n=n, **_on(mesh)
        )
        return state._replace(herding=h)

    def run(state, x, max_steps=None):
        h = herding_run(
            state.herding,
            x,
            kernel=kernel,
            length_scale=scale(state),
            max_steps=max_steps,
            **_on(mesh),
        )
        return state._replace(herding=h)

    return _make(
        "herding",
        {"kernel": kernel, "length_scale": length_scale},
        init,
        run,
        lambda s: _selected(s.herding),
        lambda s: _all_selected(s.herding),
        True,
    )


class ZCoreSelection(NamedTuple):
    """ZCore scores so far plus the number of picks ``k``."""

    zcore: Any  # ZCoreState
    k: jax.Array  # int32 scalar


def zcore(
    *,
    num_samples: int = 100_000,
    chunk: int = 256,
    variant: str = "paper",
    num_dims: int = 2,
    num_redundancy: int = 1000,
    metric: str | None = None,
    exponent: float | None = None,
    impl: str = "auto",
    mesh=None,
) -> Selector:
    """ZCore: ``num_samples`` subspace samples, ``chunk`` per step; picks the ``k`` best scores."""
    kw = dict(
        chunk=chunk,
        variant=variant,
        num_dims=num_dims,
        num_redundancy=num_redundancy,
        metric=metric,
        exponent=exponent,
        impl=impl,
    )

    def init(x, k, *, key, anchors=None, n=None):
        # n: real rows of an x already padded for the mesh (rows read per process).
        state = zcore_init(x, key, variant=variant, n=n, **_on(mesh))
        return ZCoreSelection(state, jnp.asarray(k, jnp.int32))

    def run(state, x, max_steps=None):
        left = num_samples - int(state.zcore.done)
        todo = left if max_steps is None else min(left, int(max_steps) * chunk)
        z = zcore_run(state.zcore, x, max(todo, 0), **kw, **_on(mesh))
        return state._replace(zcore=z)

    return _make(
        "zcore",
        {"num_samples": num_samples, **kw},
        init,
        run,
        lambda s: np.asarray(zcore_select(s.zcore.scores, int(s.k))),
        lambda s: int(s.zcore.done) >= num_samples,
        False,
    )


class ClusterSelection(NamedTuple):
    """k-means and the picks (``-1`` until the clustering is done), with the anchors as the
    clustering sees them: the first ``num_anchors`` rows of ``anchors`` (one row of zeros
    without anchors: a checkpoint cannot hold an empty array)."""

    kmeans: Any  # KMeansState
    picks: jax.Array  # int32 [k]
    anchors: jax.Array  # float32 [max(m, 1), d]
    num_anchors: jax.Array  # int32 scalar


def anchored_clusters(n: int, k: int, num_anchors: int, max_clusters: int) -> int:
    """Clusters of an anchored k-means selection: TypiClust's ``k + m`` (``m`` anchors), at most
    ``max(k, max_clusters)`` (TypiClust caps at 500: the cost is that of ``k + m`` picks) and
    ``n``; ``k`` without anchors."""
    if num_anchors == 0:
        return k
    return min(n, k + num_anchors, max(k, max_clusters))


def _clustered(name, options, metric, num_iters, max_clusters, mesh, pick) -> Selector:
    """k-means (k-means++ seeds from the key), then the picks by ``pick(rows, centroids,
    assignment, existing, num_picks, n)`` (``n``: the real rows of rows padded to the mesh, or
    ``None``). Without anchors: one cluster per pick. With ``m`` anchors (TypiClust's anchored
    form): ``anchored_clusters`` clusters of the rows, and
    ``existing`` counts the anchors per cluster of their nearest centroid, so clusters holding an
    anchor are covered: picks go to the uncovered ones first, largest first, then round robin by
    fewest (anchors + picks) as without anchors. Steps are Lloyd iterations."""

    def done(km) -> bool:
        return int(km.iteration) >= num_iters or not bool(km.changed)

    def padded(km, x):
        """``n=`` for the kernels: the real rows when ``x`` came padded to the mesh (rows read
        per process; the state's assignment has the real count), else ``None``."""
        n = km.assignment.shape[0]
        return None if x.shape[0] == n else n

    def init(x, k, *, key, anchors=None, n=None):
        # n: real rows of an x already padded for the mesh (rows read per process).
        xk = _unit_rows(x, metric)
        rows, d = xk.shape
        rows = rows if n is None else n
        m = 0 if anchors is None else int(anchors.shape[0])
        a = jnp.zeros((1, d), jnp.float32) if m == 0 else _unit_rows(anchors, metric)
        clusters = anchored_clusters(rows, k, m, max_clusters)
        km = kmeans_init(xk, clusters, key, n=n, **_on(mesh))
        picks = jnp.full((k,), -1, jnp.int32)
        return ClusterSelection(km, picks, jnp.asarray(a, jnp.float32), jnp.asarray(m, jnp.int32))

    def run(state, x, max_steps=None):
        xk = _unit_rows(x, metric)
        km, picks, anchors, m = state
        n = padded(km, x)
        if not done(km):
            steps = None if max_steps is None else int(max_steps)
            km = kmeans_run(km, xk, num_iters=num_iters, max_steps=steps, n=n, **_on(mesh))
        if done(km) and int(picks[0]) < 0:
            assignment = kmeans_assign(xk, km.centroids, n=n, **_on(mesh))
            existing = None
            if int(m):  # a few replicated rows: assigned on the default device
                near = kmeans_assign(anchors[: int(m)], km.centroids)
                existing = jnp.bincount(near, length=km.centroids.shape[0]).astype(jnp.int32)
            picks = pick(xk, km.centroids, assignment, existing, picks.shape[0], n)
        return ClusterSelection(km, picks, anchors, m)

    return _make(
        name,
        {"metric": metric, "num_iters": num_iters, "max_clusters": max_clusters, **options},
        init,
        run,
        lambda s: np.asarray(s.picks),
        lambda s: int(s.picks[0]) >= 0,
        True,
    )


def kmeans_medoids(
    *,
    metric: str = "euclidean",
    num_iters: int = 100,
    min_cluster_size: int = 5,
    max_clusters: int = 500,
    mesh=None,
) -> Selector:
    """k-means medoids (representative points: one per cluster, large clusters first); with
    anchors, ``anchored_clusters`` clusters and the clusters without an anchor first."""

    def pick(x, centroids, assignment, existing, num_picks, n):
        return _medoid_points(
            x,
            centroids,
            assignment,
            num_picks=num_picks,
            min_cluster_size=min_cluster_size,
            existing=existing,
            n=n,
            **_on(mesh),
        )

    options = {"min_cluster_size": min_cluster_size}
    return _clustered("kmeans_medoids", options, metric, num_iters, max_clusters, mesh, pick)


def typiclust(
    *,
    metric: str = "euclidean",
    num_iters: int = 100,
    num_neighbors: int = 20,
    min_cluster_size: int = 5,
    max_clusters: int = 500,
    mesh=None,
) -> Selector:
    """TypiClust: k-means, then the most typical point of each cluster; with anchors,
    ``anchored_clusters`` clusters and the clusters without an anchor first (the paper's
    anchored form)."""

    def pick(x, centroids, assignment, existing, num_picks, n):
        return typical_points(
            x,
            centroids,
            assignment,
            num_neighbors=num_neighbors,
            num_picks=num_picks,
            min_cluster_size=min_cluster_size,
            existing=existing,
            n=n,
            **_on(mesh),
        )

    options = {"num_neighbors": num_neighbors, "min_cluster_size": min_cluster_size}
    return _clustered("typiclust", options, metric, num_iters, max_clusters, mesh, pick)


def probcover(
    *,
    metric: str = "euclidean",
    radius: float | None = None,
    num_neighbors: int | None = None,
    quantile: float = 0.5,
    mesh=None,
) -> Selector:
    """ProbCover (greedy max coverage of radius balls). ``radius=None``: ``probcover_radius``
    with ``num_neighbors`` (default ``ceil(n / k)``: a median ball holds about as many points
    as one pick stands for) at ``quantile``. The radius lives in the state."""

    def init(x, k, *, key=None, anchors=None, n=None):
        # n: real rows of an x already padded for the mesh (rows read per process).
        xk = _unit_rows(x, metric)
        r = radius
        if r is None:
            rows = xk.shape[0] if n is None else n
            m = int(num_neighbors or -(-rows // max(1, k)))
            m = max(1, min(m, rows - 1))
            # A quantile over at most 2048 rows' neighbours: cheap enough on one device when x
            # is here whole; rows spread over processes (or padded) are searched on the mesh.
            spread = isinstance(xk, jax.Array) and not xk.is_fully_addressable
            where = {"mesh": mesh, "n": n} if n is not None or spread else {}
            r = probcover_radius(xk, m, quantile=float(quantile), **where) if rows > 1 else 1.0
        if anchors is not None:
            anchors = _unit_rows(anchors, metric)
        return probcover_init(xk, k, float(r), anchors=anchors, n=n, **_on(mesh))

    def run(state, x, max_steps=None):
        state = probcover_run(state, _unit_rows(x, metric), max_steps=max_steps, **_on(mesh))
        if not isinstance(state.count, jax.core.Tracer) and _all_selected(state):
            clear_graph_cache()  # the run is over: the ball graph kept for it is not needed
        return state

    options = {"metric": metric, "radius": radius, "num_neighbors": num_neighbors}
    return _make(
        "probcover", {**options, "quantile": quantile}, init, run, _selected, _all_selected, True
    )


def typical_kcenter(
    *, metric: str = "euclidean", num_neighbors: int = 20, power: float = 1.0, mesh=None
) -> Selector:
    """Greedy k-center with distances weighted by relative typicality."""

    def init(x, k, *, key=None, anchors=None, n=None):
        # n: real rows of an x already padded for the mesh (rows read per process).
        xk = _unit_rows(x, metric)
        if anchors is not None:
            anchors = _unit_rows(anchors, metric)
        return typical_kcenter_init(
            xk,
            k,
            anchors=anchors,
            n=n,
            num_neighbors=min(int(num_neighbors), max(1, (xk.shape[0] if n is None else n) - 1)),
            power=float(power),
            **_on(mesh),
        )

    def run(state, x, max_steps=None):
        return typical_kcenter_run(state, _unit_rows(x, metric), max_steps=max_steps, **_on(mesh))

    options = {"metric": metric, "num_neighbors": num_neighbors, "power": power}
    return _make("typical_kcenter", options, init, run, _selected, _all_selected, True)


class PicksState(NamedTuple):
    """The picks of a method that chooses in one go."""

    picks: jax.Array  # int32 [k]


def _in_one_go(name: str, options: dict, init) -> Selector:
    """A selector whose ``init`` already holds the picks (a ``PicksState``)."""
    return _make(
        name,
        options,
        init,
        lambda state, x, max_steps=None: state,
        lambda s: np.asarray(s.picks),
        lambda s: True,
        False,
    )


def one_shot(name: str, choose: Callable, options: dict | None = None) -> Selector:
    """A selector that chooses in one go: ``choose(x, k, key) -> int [k]`` row indices."""

    def init(x, k, *, key=None, anchors=None):
        return PicksState(jnp.asarray(np.asarray(choose(x, k, key)), jnp.int32))

    return _in_one_go(name, options or {}, init)


def random(*, mesh=None) -> Selector:
    """Uniform random picks, drawn on the host from the key (no compile per ``(n, k)`` shape;
    nothing to shard, so ``mesh`` changes nothing). Reads no row: ``n`` (the real rows of an
    ``x`` padded to a mesh) is all it needs, so a pipeline reading rows per process passes it
    rather than gathering every row on each process."""

    def init(x, k, *, key=None, anchors=None, n=None):
        rows = int(x.shape[0]) if n is None else int(n)
        rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).tolist())
        return PicksState(jnp.asarray(rng.permutation(rows)[:k].astype(np.int32)))

    return _in_one_go("random", {}, init)
