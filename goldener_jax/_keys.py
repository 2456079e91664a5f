"""PRNG keys at the public boundary: typed ``jax.random.key`` keys, and legacy ``PRNGKey`` ones.

Most JAX code still writes ``jax.random.PRNGKey(0)`` (a raw ``uint32[2]`` array). ``as_key``
accepts it and wraps it into the typed key it stands for (``jax.random.wrap_key_data``), so it
draws exactly what ``jax.random.key(0)`` draws; anything else is refused with the one-line fix.
It lives with the kernels' argument checks (``kernels/_checks.py``), so the kernels and the
pipeline take keys by one rule.
"""

from __future__ import annotations

from goldener_jax.kernels._checks import as_key

__all__ = ["as_key"]
