"""The methods ``select`` / ``split`` know by name: typed options, selector factories, ``auto``.

Each method has one frozen dataclass of options: ``method_options={...}`` is checked against it
(an unknown key or a value of the wrong type is a clear error naming the method), and the
checkpoint fingerprint is built from the validated dataclass, so equal options give equal
fingerprints. ``method="auto"`` resolves through a rule object (:class:`SuiteRule`).

Anchors (samples already chosen or labelled) steer every method a rule of this module can choose
(k-center, typical k-center, ProbCover, k-means medoids; herding and TypiClust too): with
anchors a rule keeps its own choice. ``farthest``, ``closest``, ``zcore`` and ``random`` cannot
use anchors: named explicitly with anchors they are refused (a ``ValueError`` naming the
anchor-aware methods), and a custom rule that chooses one gets its ``anchored`` method instead.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping

import numpy as np

from goldener_jax.kernels import selectors

__all__ = [
    "AUTO",
    "METHODS",
    "BudgetRule",
    "HerdingOptions",
    "KMeansMedoidsOptions",
    "NoOptions",
    "ProbCoverOptions",
    "SelectionMethod",
    "TypicalKCenterOptions",
    "TypiclustOptions",
    "ZCoreOptions",
    "check_options",
    "register_method",
    "resolve_method",
]


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """A method without options (``metric`` comes from ``select(metric=)``)."""


@dataclasses.dataclass(frozen=True)
class HerdingOptions:
    """Kernel herding: ``kernel`` ``"rbf"`` / ``"linear"``; ``length_scale`` None = median
    heuristic of the task's rows."""

    kernel: str = "rbf"
    length_scale: float | None = None


@dataclasses.dataclass(frozen=True)
class ZCoreOptions:
    """ZCore: ``num_samples`` subspace samples, ``chunk`` per step (one checkpoint step), the
    rest as ``kernels.zcore_run`` (``zcore_metric`` is its ``metric``; ``impl`` picks the
    compiled CPU walk or the XLA kernel)."""

    num_samples: int = 100_000
    chunk: int = 256
    variant: str = "paper"
    num_dims: int = 2
    num_redundancy: int = 1000
    zcore_metric: str | None = None
    exponent: float | None = None
    impl: str = "auto"


@dataclasses.dataclass(frozen=True)
class KMeansMedoidsOptions:
    """k-means medoids: ``num_iters`` Lloyd iterations, clusters below ``min_cluster_size``
    picked last; with ``m`` anchors ``min(k + m, max(k, max_clusters))`` clusters, those without
    an anchor served first (``kernels.selectors.anchored_clusters``)."""

    num_iters: int = 100
    min_cluster_size: int = 5
    max_clusters: int = 500


@dataclasses.dataclass(frozen=True)
class TypiclustOptions:
    """TypiClust: as k-means medoids (anchors included), typicality over ``num_neighbors``
    neighbours."""

    num_iters: int = 100
    num_neighbors: int = 20
    min_cluster_size: int = 5
    max_clusters: int = 500


@dataclasses.dataclass(frozen=True)
class ProbCoverOptions:
    """ProbCover: ball ``radius`` (None: the ``quantile`` of the ``num_neighbors``-th neighbour
    distances, default ``ceil(n / k)`` neighbours)."""

    radius: float | None = None
    num_neighbors: int | None = None
    quantile: float = 0.5


@dataclasses.dataclass(frozen=True)
class TypicalKCenterOptions:
    """Typicality-weighted k-center: typicality over ``num_neighbors``, weight power ``power``."""

    num_neighbors: int = 20
    power: float = 1.0


@dataclasses.dataclass(frozen=True)
class SelectionMethod:
    """A method as ``select`` / ``split`` drive it.

    Attributes:
      name: the registry name (``method=name``).
      make: ``(options, *, metric, mesh) -> kernels.selectors.Selector``: the selector with the
        validated options, the ``select`` metric and mesh captured.
      options: the frozen dataclass of the method's options (``method_options`` keys).
    """

    name: str
    make: Callable[..., selectors.Selector]
    options: type = NoOptions


METHODS: dict[str, SelectionMethod] = {}


def register_method(method: SelectionMethod, *, replace: bool = False) -> None:
    """Adds a method to ``select`` / ``split`` (``method=name``)."""
    if not isinstance(method, SelectionMethod):
        raise TypeError(f"method must be a SelectionMethod, got {method!r}")
    if method.name in METHODS and not replace:
        raise ValueError(f"method {method.name!r} is already registered (pass replace=True)")
    METHODS[method.name] = method


def _type_ok(value, hint) -> tuple[bool, object]:
    """Whether ``value`` fits the option type ``hint``, and the value normalised to it (ints for
    int options, floats for float options), so equal options print equal."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        return type(None) in allowed, None
    if isinstance(value, (bool, np.bool_)):
        return False, value
    if int in allowed and isinstance(value, (int, np.integer)):
        return True, int(value)
    if float in allowed and isinstance(value, (int, float, np.integer, np.floating)):
        return True, float(value)
    if str in allowed and isinstance(value, str):
        return True, value
    return False, value


def _type_name(hint) -> str:
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return " or ".join("None" if t is type(None) else t.__name__ for t in allowed)


def check_options(method: str, options: type, given: Mapping | None):
    """``method_options`` as ``options`` (method ``method``'s options dataclass): unknown keys
    and values of the wrong type raise, naming the method, the option and the valid ones."""
    if given is None:
        given = {}
    if not isinstance(given, Mapping):
        raise TypeError(f"method_options must be a dict or None, got {given!r}")
    hints = typing.get_type_hints(options)
    valid = [f.name for f in dataclasses.fields(options)]
    unknown = sorted(str(k) for k in given if k not in hints)
    if unknown:
        raise ValueError(
            f"method_options {unknown} are not options of method {method!r}; its options "
            f"are {valid if valid else 'none'}"
        )
    values = {}
    for name, value in given.items():
        ok, values[name] = _type_ok(value, hints[name])
        if not ok:
            raise TypeError(
                f"method_options {name!r} of method {method!r} must be "
                f"{_type_name(hints[name])}, got {value!r}"
            )
    checked = options(**values)
    if options.__module__ == __name__:  # the built-in methods' options: their ranges too
        for name, (ok, what) in _RANGES.items():
            value = getattr(checked, name, None)
            if value is not None and not ok(value):
                raise ValueError(
                    f"method_options {name!r} of method {method!r} must be {what}, got {value!r}"
                )
    return checked


# Value ranges of the built-in options (by field name; None = the method's default). A value out
# of range was once changed or ignored without a word (herding's length_scale 0 ran as 1.0, a
# negative zcore num_samples as 0).
def _positive(v) -> bool:
    return 0 < v < np.inf


_RANGES: dict[str, tuple[Callable[[object], bool], str]] = {
    "length_scale": (_positive, "a finite float > 0"),
    "radius": (_positive, "a finite float > 0"),
    "power": (lambda v: 0 <= v < np.inf, "a finite float >= 0"),
    "exponent": (lambda v: bool(np.isfinite(v)), "a finite float"),
    "quantile": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "num_iters": (lambda v: v >= 0, "an int >= 0"),
    **{
        name: (lambda v: v >= 1, "an int >= 1")
        for name in (
            "num_samples",
            "chunk",
            "num_dims",
            "num_redundancy",
            "min_cluster_size",
            "max_clusters",
            "num_neighbors",
        )
    },
}


@dataclasses.dataclass(frozen=True)
class BudgetRule:
    """The budget-aware ``method="auto"`` rule: ``small`` when ``count < threshold x n``
    (small budgets: representative points), else ``large`` (coverage).

    The default (k-means medoids below 15 % of the vectors, k-center from there) is measured by
    ``goldener-jax bench quality`` (scikit-learn digits, 10 seeds, logistic regression,
    docs/benchmarks.md): at or above random's mean accuracy at every budget of 2/5/10/20 %, on
    average +7.1 points on raw pixels and +7.0 on the demo CNN's features; the switch lies
    between the measured 10 % and 20 %. The hybrid ``"typical_kcenter"`` did not beat plain
    k-center at the large budgets (20 %: +1.7 vs +1.6 points raw, +0.8 vs +1.7 raw per class,
    +1.2 vs +1.7 CNN); ``"probcover"`` is slightly better than the medoids at 5-10 % (+0.4 to
    +1.1 points plain, equal per class) but worse at 2 %: neither is part of the rule.

    Attributes:
      threshold: the budget, as a fraction of the vectors, where the rule switches.
      small: the method below it.
      large: the method from it on.
      anchored: the method when anchors are given (samples already chosen or labelled) and the
        rule's choice cannot use them: an anchor-aware method. ``small`` and ``large`` of the
        default rule both use anchors, so it keeps its own choice; this matters only when they
        are set to a method without anchors (``zcore``, ``random``, ``farthest``, ``closest``).
    """

    threshold: float = 0.15
    small: str = "kmeans_medoids"
    large: str = "kcenter"
    anchored: str = "typical_kcenter"

    def __call__(self, n: int, count: int) -> str:
        """The method name for ``count`` picks among ``n`` vectors."""
        return self.small if count < self.threshold * n else self.large


@dataclasses.dataclass(frozen=True)
class SuiteRule:
    """``method="auto"`` (the default of ``select``): chosen by evidence across ten real datasets,
    checked on three larger pools that played no part in the choice.

    ``small`` (typical k-center) for fewer than ``count_threshold`` picks, ``large`` (ProbCover)
    from there, whatever the pool size. ``goldener-jax bench quality --suite`` (docs/benchmarks.md:
    10 datasets shipped inside packages, pools of 105 to 2,100 vectors, budgets 1-20 %, 10 seeds,
    a linear and a 1-NN probe, gain over the mean of 10 random subsets) ranks 343 candidate rules
    by mean rank over (dataset, budget) cells; this switch at 40 picks was chosen in every
    leave-one-dataset-out fold, held out +6.38 points over random on average, against +6.28 for
    the best single method (typical k-center), +6.27 for the best budget-fraction switch
    (typical k-center below 7.1 % of the pool), +5.66 for ``BudgetRule()`` and -1.20 for plain
    k-center. On a large pool every budget is past 40 picks, so the rule means ProbCover there;
    ``--suite --large`` checked that on pools of 4,456 and 14,133 vectors (statsmodels
    ``randhie`` twice, ``fair`` uncapped; budgets 0.5-20 %, 10 seeds): +0.59 points against
    +0.26 for the 7.1 % switch, +0.18 for typical k-center and +0.23 for ProbCover alone (3 of
    18 cells below random, against 6). Both methods are anchor-aware (labelled samples steer
    them).

    Pools larger than ``max_pool`` vectors were not measured, and typical k-center and ProbCover
    compare every point with every point (blocked, O(N^2 d) work); there the rule falls back to
    ``BudgetRule()``'s scalable choice (k-means medoids below 15 %, k-center above), for cost.

    Attributes:
      count_threshold: the number of picks from which ``large`` replaces ``small``.
      small: the method for fewer picks (typical k-center).
      large: the method from ``count_threshold`` picks on (ProbCover).
      max_pool: the largest pool the measured rule is used for.
      anchored: the method when anchors are given and the choice cannot use them. Every
        method this rule chooses by default (its own and ``BudgetRule()``'s) uses anchors, so it
        keeps its choice; ``anchored`` is for ``small`` / ``large`` set to one that does not.
    """

    count_threshold: int = 40
    small: str = "typical_kcenter"
    large: str = "probcover"
    max_pool: int = 50_000
    anchored: str = "typical_kcenter"

    def __call__(self, n: int, count: int) -> str:
        """The method name for ``count`` picks among ``n`` vectors."""
        if n > self.max_pool:
            return BudgetRule()(n, count)
        return self.small if count < self.count_threshold else self.large


AUTO = SuiteRule()  # what method="auto" (select's default) means


def resolve_method(method, n: int, count: int) -> tuple[SelectionMethod, object | None]:
    """``(method, rule)``: a name, ``"auto"`` (= :data:`AUTO`), a rule ``(n, count) -> name``
    or a :class:`SelectionMethod`; ``rule`` is the rule that chose, or None."""
    rule = None
    if isinstance(method, str) and method == "auto":
        method = AUTO
    if callable(method) and not isinstance(method, SelectionMethod):
        rule, method = method, method(n, count)
    if isinstance(method, SelectionMethod):
        return method, rule
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS) + ['auto']}, got {method!r}")
    return METHODS[method], rule


def _zcore(o: ZCoreOptions, *, metric, mesh):
    kw = dataclasses.asdict(o)
    kw["metric"] = kw.pop("zcore_metric")  # ZCore's own subspace metric, not select's
    return selectors.zcore(**kw, mesh=mesh)


def _metric_only(factory):
    return lambda o, *, metric, mesh: factory(metric=metric, mesh=mesh)


def _with_options(factory, uses_metric: bool = True):
    def make(o, *, metric, mesh):
        extra = {"metric": metric} if uses_metric else {}
        return factory(**extra, **dataclasses.asdict(o), mesh=mesh)

    return make


for _method in (
    SelectionMethod("kcenter", _metric_only(selectors.kcenter)),
    SelectionMethod("farthest", _metric_only(selectors.farthest)),
    SelectionMethod("closest", _metric_only(selectors.closest)),
    SelectionMethod("herding", _with_options(selectors.herding, False), HerdingOptions),
    SelectionMethod("zcore", _zcore, ZCoreOptions),
    SelectionMethod("random", lambda o, *, metric, mesh: selectors.random(mesh=mesh)),
    SelectionMethod(
        "kmeans_medoids", _with_options(selectors.kmeans_medoids), KMeansMedoidsOptions
    ),
    SelectionMethod("typiclust", _with_options(selectors.typiclust), TypiclustOptions),
    SelectionMethod("probcover", _with_options(selectors.probcover), ProbCoverOptions),
    SelectionMethod(
        "typical_kcenter", _with_options(selectors.typical_kcenter), TypicalKCenterOptions
    ),
):
    register_method(_method)
del _method
