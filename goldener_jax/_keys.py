"""PRNG keys at the public boundary: typed ``jax.random.key`` keys, and legacy ``PRNGKey`` ones.

Most JAX code still writes ``jax.random.PRNGKey(0)`` (a raw ``uint32[2]`` array). ``as_key``
accepts it and wraps it into the typed key it stands for (``jax.random.wrap_key_data``), so it
draws exactly what ``jax.random.key(0)`` draws; anything else is refused with the one-line fix.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["as_key"]


def as_key(key, name: str = "key") -> jax.Array:
    """A typed scalar PRNG key from ``key``.

    Args:
      key: a typed key (``jax.random.key(seed)``) or a legacy raw key
        (``jax.random.PRNGKey(seed)``: ``uint32[2]`` for threefry), wrapped with the default
        implementation.
      name: the argument's name, for the error message.

    Raises:
      TypeError: ``key`` is not a PRNG key (an int seed, a float array, a batch of keys...).
    """
    fix = f"pass {name}=jax.random.key(0) (or jax.random.PRNGKey(0)), not a seed"
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise TypeError(
                f"{name} must be a single PRNG key, got a key array of shape {key.shape}"
            )
        return key
    if isinstance(key, (jax.Array, np.ndarray)):
        raw_shape = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0))).shape
        if key.shape == raw_shape and key.dtype == np.uint32:  # (2,) for the default threefry
            return jax.random.wrap_key_data(jnp.asarray(key))
        raise TypeError(
            f"{name} must be a PRNG key, got an array of shape {tuple(key.shape)} and dtype "
            f"{key.dtype}; {fix}"
        )
    raise TypeError(f"{name} must be a PRNG key, got {type(key).__name__} {key!r}; {fix}")
