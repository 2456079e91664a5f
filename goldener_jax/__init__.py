"""goldener-jax: decide which data to label, train on, validate on and watch.

Describe samples with embeddings from a Flax model, then run exact, jit-compiled selection
kernels over them (``goldener_jax.kernels``).
"""

import os as _os

# Installed, the kernels are goldener_jax/kernels/. In a source checkout they are kernels/ beside
# this package (pyproject maps that folder to goldener_jax.kernels); let the checkout import the
# same way, so running from the repository root (python -c, PYTHONPATH=.) cannot break them.
_here = _os.path.dirname(__file__)
if not _os.path.isdir(_os.path.join(_here, "kernels")) and _os.path.isfile(
    _os.path.join(_here, _os.pardir, "kernels", "__init__.py")
):
    __path__.append(_os.path.join(_here, _os.pardir))  # noqa: F821 (package __path__)

from goldener_jax import kernels
from goldener_jax.curate import (
    LabelIssues,
    NearDuplicates,
    label_issues,
    leakage_pairs,
    near_duplicates,
)
from goldener_jax.describe import (  # describe, FeatureStore, sources, Checkpointer
    ArraySource,
    Checkpointer,
    CheckpointMismatchError,
    FeatureStore,
    IterableSource,
    RandomAccessSource,
    Source,
    SourceChangedError,
    StoreCorruptError,
    StoreMismatchError,
    TFDSSource,
    as_source,
    describe,
    resumable_loop,
)
from goldener_jax.drift import DriftCluster, DriftReport, drift, monitoring_selection
from goldener_jax.evaluate import compare_to_random
from goldener_jax.extend import extend_selection, extend_split
from goldener_jax.features import FeatureExtractor, Layer, Vectorizer, capture, flatten_vectors
from goldener_jax.refine import (  # clusters, balanced batches, label proposals, outliers, clicks
    ClickMasks,
    ClusterBatchSampler,
    Clusters,
    LabelProposals,
    Outliers,
    SamplerState,
    click_masks,
    cluster,
    expected_calibration_error,
    masks_from_features,
    outliers,
    propose_labels,
    reliability_plot,
)
from goldener_jax.rounds import Labelled, Round, Rounds, RoundsConflictError, RoundsError
from goldener_jax.select import (  # select and the selection method registry
    METHODS,
    BudgetRule,
    Selection,
    SelectionMethod,
    SuiteRule,
    register_method,
    select,
)
from goldener_jax.split import Split, split
from goldener_jax.workflow import Pipeline, RunSummary, SpecError, save_variables

__version__ = "0.1.0"

__all__ = [
    "extend_selection",
    "extend_split",
    "SourceChangedError",
    "Labelled",
    "Round",
    "Rounds",
    "RoundsConflictError",
    "RoundsError",
    "DriftCluster",
    "DriftReport",
    "drift",
    "monitoring_selection",
    "Pipeline",
    "RunSummary",
    "SpecError",
    "save_variables",
    "ClickMasks",
    "ClusterBatchSampler",
    "Clusters",
    "LabelProposals",
    "Outliers",
    "SamplerState",
    "click_masks",
    "cluster",
    "expected_calibration_error",
    "masks_from_features",
    "outliers",
    "propose_labels",
    "reliability_plot",
    "ArraySource",
    "CheckpointMismatchError",
    "Checkpointer",
    "FeatureStore",
    "IterableSource",
    "RandomAccessSource",
    "Source",
    "StoreCorruptError",
    "StoreMismatchError",
    "TFDSSource",
    "as_source",
    "describe",
    "resumable_loop",
    "FeatureExtractor",
    "Layer",
    "Vectorizer",
    "__version__",
    "capture",
    "compare_to_random",
    "flatten_vectors",
    "kernels",
    "LabelIssues",
    "NearDuplicates",
    "label_issues",
    "near_duplicates",
    "METHODS",
    "BudgetRule",
    "SuiteRule",
    "Selection",
    "SelectionMethod",
    "Split",
    "leakage_pairs",
    "register_method",
    "select",
    "split",
]
