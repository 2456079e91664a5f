"""Selection kernels: pure ``array -> array`` functions with explicit state, no I/O.

Import as ``from goldener_jax import kernels as gk``.
"""

from . import selectors
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
from .herding import (
    HERDING_KERNELS,
    HerdingState,
    herding_init,
    herding_run,
    herding_step,
    kernel_herding,
    median_length_scale,
)
from .kcenter import (
    KCenterState,
    greedy_k_center,
    kcenter_coverage_radius,
    kcenter_init,
    kcenter_run,
    kcenter_step,
)
from .kmeans import (
    KMeansState,
    kmeans,
    kmeans_assign,
    kmeans_compile,
    kmeans_init,
    kmeans_plusplus,
    kmeans_run,
)
from .knn import knn, knn_block, merge_knn
from .minibatch_kmeans import (
    MiniBatchKMeansState,
    minibatch_kmeans,
    minibatch_kmeans_init,
    minibatch_kmeans_step,
)
from .pairs import pairs_within
from .probcover import (
    ProbCoverState,
    probcover,
    probcover_init,
    probcover_radius,
    probcover_run,
    probcover_step,
)
from .reduce import (
    PCAState,
    gaussian_projection_matrix,
    pca_fit,
    pca_transform,
    random_projection,
)
from .sharding import make_mesh, shard_rows
from .subset import random_subset
from .typical_kcenter import (
    TypicalKCenterState,
    typical_kcenter,
    typical_kcenter_init,
    typical_kcenter_run,
    typicality_weights,
)
from .typiclust import kmeans_medoids, typical_points, typicality
from .zcore import (
    ZCORE_VARIANTS,
    ZCoreState,
    zcore_draws,
    zcore_init,
    zcore_run,
    zcore_scores,
    zcore_select,
    zcore_step,
)
from .zcore import native_status as zcore_native_status

__all__ = [
    "selectors",
    "MiniBatchKMeansState",
    "minibatch_kmeans",
    "minibatch_kmeans_init",
    "minibatch_kmeans_step",
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
    "make_mesh",
    "pairwise_distances",
    "random_subset",
    "shard_rows",
    "to_metric",
    "HERDING_KERNELS",
    "HerdingState",
    "herding_init",
    "herding_run",
    "herding_step",
    "kernel_herding",
    "median_length_scale",
    "KMeansState",
    "kmeans",
    "kmeans_assign",
    "kmeans_compile",
    "kmeans_init",
    "kmeans_medoids",
    "kmeans_plusplus",
    "kmeans_run",
    "typical_points",
    "typicality",
    "knn",
    "knn_block",
    "merge_knn",
    "pairs_within",
    "ProbCoverState",
    "probcover",
    "probcover_init",
    "probcover_radius",
    "probcover_run",
    "probcover_step",
    "TypicalKCenterState",
    "typical_kcenter",
    "typical_kcenter_init",
    "typical_kcenter_run",
    "typicality_weights",
    "PCAState",
    "gaussian_projection_matrix",
    "pca_fit",
    "pca_transform",
    "random_projection",
    "ZCORE_VARIANTS",
    "ZCoreState",
    "zcore_draws",
    "zcore_init",
    "zcore_run",
    "zcore_scores",
    "zcore_select",
    "zcore_step",
    "zcore_native_status",
]
