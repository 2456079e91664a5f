"""Selection kernels: pure ``array -> array`` functions with explicit state, no I/O.

Import as ``from goldener_jax import kernels as gk``.
"""

from ._checks import METRICS
from .distance import pairwise_distances, to_metric
from .greedy import (
    GreedyState,
    closest_point,
    farthest_point,
    greedy_init,
    greedy_run,
    greedy_step,
)
from .kcenter import (
    KCenterState,
    greedy_k_center,
    kcenter_coverage_radius,
    kcenter_init,
    kcenter_run,
    kcenter_step,
)
from .subset import random_subset

__all__ = [
    "METRICS",
    "GreedyState",
    "KCenterState",
    "closest_point",
    "farthest_point",
    "greedy_init",
    "greedy_k_center",
    "greedy_run",
    "greedy_step",
    "kcenter_coverage_radius",
    "kcenter_init",
    "kcenter_run",
    "kcenter_step",
    "pairwise_distances",
    "random_subset",
    "to_metric",
]
