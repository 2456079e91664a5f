"""Uniform random subsets from an explicit key."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from ._checks import as_key, check_k

__all__ = ["random_subset"]


@partial(jax.jit, static_argnames=("n", "k"))
def _random_subset(key, *, n, k):
    return jax.random.permutation(key, n)[:k].astype(jnp.int32)


def random_subset(key: jax.Array, n: int, k: int) -> jax.Array:
    """``k`` distinct indices drawn uniformly from ``range(n)``.

    Args:
      key: a ``jax.random.key``; the same key always gives the same subset.
      n: population size (static).
      k: subset size, ``0 <= k <= n`` (static).

    Returns:
      int32 array of shape ``[k]``, in random order.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    k = check_k(k, n)
    return _random_subset(as_key(key), n=n, k=k)
