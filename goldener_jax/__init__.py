"""goldener-jax: decide which data to label, train on, validate on and watch.

Describe samples with embeddings from a Flax model, then run exact, jit-compiled selection
kernels over them (``goldener_jax.kernels``).
"""

from goldener_jax import kernels
from goldener_jax.describe import (  # describe, FeatureStore, sources, Checkpointer
    ArraySource,
    Checkpointer,
    CheckpointMismatchError,
    FeatureStore,
    IterableSource,
    RandomAccessSource,
    Source,
    StoreCorruptError,
    StoreMismatchError,
    TFDSSource,
    as_source,
    describe,
    resumable_loop,
)
from goldener_jax.features import FeatureExtractor, Layer, Vectorizer, capture, flatten_vectors
from goldener_jax.split import (  # select, split and the selection method registry
    METHODS,
    Selection,
    SelectionMethod,
    Split,
    leakage_pairs,
    register_method,
    select,
    split,
)

__version__ = "0.1.0"

__all__ = [
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
    "flatten_vectors",
    "kernels",
    "METHODS",
    "Selection",
    "SelectionMethod",
    "Split",
    "leakage_pairs",
    "register_method",
    "select",
    "split",
]
