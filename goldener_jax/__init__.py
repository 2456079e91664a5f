"""goldener-jax: decide which data to label, train on, validate on and watch.

Describe samples with embeddings from a Flax model, then run exact, jit-compiled selection
kernels over them (``goldener_jax.kernels``).
"""

from goldener_jax import kernels

__version__ = "0.1.0"

__all__ = ["__version__", "kernels"]
