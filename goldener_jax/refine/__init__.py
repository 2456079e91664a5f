"""Refining: clusters with stable ids, cluster-balanced batches, label proposals, outliers and
click-to-mask labelling assistance, all over the stored embeddings."""

from goldener_jax.refine.click import (
    ClickMasks,
    click_masks,
    masks_from_features,
    otsu_threshold,
)
from goldener_jax.refine.clustering import Clusters, cluster
from goldener_jax.refine.labels import (
    LabelProposals,
    Outliers,
    expected_calibration_error,
    outliers,
    propose_labels,
    reliability_plot,
)
from goldener_jax.refine.sampler import ON_END, ClusterBatchSampler, SamplerState

__all__ = [
    "ClickMasks",
    "click_masks",
    "masks_from_features",
    "otsu_threshold",
    "ON_END",
    "ClusterBatchSampler",
    "Clusters",
    "cluster",
    "LabelProposals",
    "Outliers",
    "SamplerState",
    "expected_calibration_error",
    "outliers",
    "propose_labels",
    "reliability_plot",
]
