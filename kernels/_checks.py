"""Validation at the public boundary of the kernels.

Shape and dtype checks always run (shapes are static under ``jit``). Value checks (NaN / Inf) run
only on concrete arrays: inside a user's ``jit`` the values are not known, and the caller is
responsible for them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

METRICS = ("euclidean", "sqeuclidean", "cosine")


def is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


@jax.jit
def _all_finite(x: jax.Array) -> jax.Array:
    # On the device, in one fused pass: copying a large array to the host just to check it would
    # cost more than the selection. max(|x|) propagates NaN and is inf for an inf; it fuses into
    # one reduction, whereas all(isfinite(x)) materialises an [n, d] boolean temporary.
    return jnp.isfinite(jnp.max(jnp.abs(x)))


def check_metric(metric: str) -> str:
    if not isinstance(metric, str) or metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    return metric


def as_float_matrix(x, name: str = "x") -> jax.Array:
    """``x`` as a floating 2-D ``jax.Array``; rejects other ranks, integer dtypes and NaN/Inf."""
    if isinstance(x, (list, tuple)):
        x = np.asarray(x)
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name} must be an array of shape [n, d], got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D of shape [n, d], got shape {tuple(x.shape)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{name} must have a floating dtype (float32, bfloat16, float16, float64), "
            f"got {x.dtype}; cast it explicitly, e.g. {name}.astype('float32')"
        )
    x = jnp.asarray(x)
    if is_concrete(x) and x.size and not bool(_all_finite(x)):
        # Slow path, only on error: locate the first offending entry on the host.
        bad = np.argwhere(~np.isfinite(np.asarray(x, dtype=np.float32)))[0]
        raise ValueError(
            f"{name} contains NaN or Inf (first at row {int(bad[0])}, column {int(bad[1])}); "
            "selection over non-finite vectors is undefined"
        )
    return x


def check_k(k, n: int, name: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {k!r} of type {type(k).__name__}")
    k = int(k)
    if k < 0:
        raise ValueError(f"{name} must be >= 0, got {k}")
    if k > n:
        raise ValueError(f"{name}={k} is larger than the number of points n={n}")
    return k


def empty_selection(x, k):
    """int32 ``[0]`` when ``x`` is an array without rows (``k`` must then be 0), else None: the
    greedy loops start from a first row, so a pool of none is answered before they run."""
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) != 2 or shape[0] != 0:
        return None
    check_k(k, 0)
    return jnp.zeros((0,), jnp.int32)


def check_same_width(a, b, name_a: str, name_b: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{name_b} must have the same width as {name_a}: {name_a} has shape "
            f"{tuple(a.shape)}, {name_b} has shape {tuple(b.shape)}"
        )


def check_block_size(block_size) -> int | None:
    if block_size is None:
        return None
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)):
        raise TypeError(f"block_size must be a positive int or None, got {block_size!r}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    return int(block_size)


def check_run_args(x, state_points: int, k: int, max_steps) -> tuple[jax.Array, jax.Array]:
    """Validates the arguments of a ``*_run(state, x, max_steps=...)``: ``x`` fits the state,
    ``max_steps`` is ``None`` (run to ``k``) or an int >= 0. Returns ``(x, max_steps)``, the
    latter as an int32 array, so that changing it never recompiles."""
    x = as_float_matrix(x, "x")
    if state_points != x.shape[0]:
        raise ValueError(
            f"state was made for {state_points} points but x has shape {tuple(x.shape)}"
        )
    if max_steps is None:
        max_steps = k
    elif is_concrete(max_steps) and (
        isinstance(max_steps, bool)
        or not isinstance(max_steps, (int, np.integer, np.ndarray, jax.Array))
        or np.ndim(max_steps) != 0
        or int(max_steps) < 0
    ):
        raise ValueError(f"max_steps must be an int >= 0 or None, got {max_steps!r}")
    return x, jnp.asarray(max_steps, jnp.int32)


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
