"""Dimension reduction before selection: PCA and Gaussian random projection, in JAX.

PCA is fitted on a streamed covariance (one pass for the mean, one for ``X^T X`` of the centred
rows, ``[block, d]`` at a time: ``O(d^2)`` extra memory), optionally on a random sample of rows
drawn from an explicit key. Component signs are fixed (largest-magnitude loading positive) so the
same data always gives the same projection.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._checks import as_float_matrix, as_key, check_block_size
from .distance import ROW_BLOCK_BUDGET, auto_block, fold_row_blocks

__all__ = [
    "PCAState",
    "gaussian_projection_matrix",
    "pca_fit",
    "pca_transform",
    "random_projection",
]

_HIGHEST = jax.lax.Precision.HIGHEST


class PCAState(NamedTuple):
    """A fitted PCA.

    Attributes:
      mean: float32 ``[d]``.
      components: float32 ``[d, c]`` orthonormal columns, by decreasing variance.
      explained_variance: float32 ``[c]``.
    """

    mean: jax.Array
    components: jax.Array
    explained_variance: jax.Array


def _check_components(c, d: int) -> int:
    if isinstance(c, bool) or not isinstance(c, int):
        raise TypeError(f"n_components must be an int, got {c!r}")
    if not 1 <= c <= d:
        raise ValueError(f"n_components must be in [1, {d}] (the dimension of x), got {c}")
    return c


@partial(jax.jit, static_argnames=("n_components", "block"))
def _fit(x, *, n_components, block):
    n, d = x.shape

    def sum_rows(rows, start, fresh_from, acc):
        fresh = (start + jnp.arange(block)) >= fresh_from
        return acc + jnp.sum(jnp.where(fresh[:, None], rows.astype(jnp.float32), 0.0), axis=0)

    mean = fold_row_blocks(sum_rows, x, block, jnp.zeros((d,), jnp.float32)) / n

    def gram(rows, start, fresh_from, acc):
        fresh = (start + jnp.arange(block)) >= fresh_from
        c = jnp.where(fresh[:, None], rows.astype(jnp.float32) - mean, 0.0)
        return acc + jnp.dot(c.T, c, precision=_HIGHEST)

    cov = fold_row_blocks(gram, x, block, jnp.zeros((d, d), jnp.float32)) / max(n - 1, 1)
    values, vectors = jnp.linalg.eigh(cov)
    order = jnp.argsort(-values)[:n_components]
    comps = vectors[:, order]
    pivot = jnp.argmax(jnp.abs(comps), axis=0)
    signs = jnp.sign(comps[pivot, jnp.arange(n_components)])
    comps = comps * jnp.where(signs == 0, 1.0, signs)[None, :]
    return PCAState(mean, comps, jnp.maximum(values[order], 0.0))


def pca_fit(
    x,
    n_components: int,
    *,
    key=None,
    sample_size: int | None = None,
    block_size: int | None = None,
) -> PCAState:
    """Fits a PCA on ``x`` (or on ``sample_size`` rows drawn with ``key``).

    Args:
      x: Array of shape ``[n, d]``, floating.
      n_components: output dimension ``c``, ``1 <= c <= d``.
      key: a ``jax.random.key`` for the row sample (required with ``sample_size``).
      sample_size: fit on this many random rows instead of all of them.
      block_size: rows per block of the streamed covariance.
    """
    x = as_float_matrix(x, "x")
    n, d = x.shape
    n_components = _check_components(n_components, d)
    block_size = check_block_size(block_size)
    if n == 0:
        raise ValueError("x has no rows; PCA needs at least one")
    if sample_size is not None:
        if isinstance(sample_size, bool) or not isinstance(sample_size, int) or sample_size < 1:
            raise ValueError(f"sample_size must be an int >= 1, got {sample_size!r}")
        if key is None:
            raise ValueError("sample_size needs a key (jax.random.key) to draw the rows")
        if sample_size < n:
            rows = jnp.sort(jax.random.permutation(as_key(key), n)[:sample_size])
            x = x[rows]
    block = auto_block(d, x.shape[0], block_size, budget=ROW_BLOCK_BUDGET)
    return _fit(x, n_components=n_components, block=block)


@jax.jit
def _transform(state, x):
    return jnp.dot(x.astype(jnp.float32) - state.mean, state.components, precision=_HIGHEST)


def pca_transform(state: PCAState, x) -> jax.Array:
    """Projects ``x [n, d]`` on the fitted components: float32 ``[n, c]``."""
    x = as_float_matrix(x, "x")
    if x.shape[1] != state.mean.shape[0]:
        raise ValueError(
            f"x has {x.shape[1]} columns but the PCA was fitted on {state.mean.shape[0]}"
        )
    return _transform(state, x)


def gaussian_projection_matrix(key, d: int, n_components: int) -> jax.Array:
    """``[d, c]`` entries ``N(0, 1 / c)`` (as scikit-learn's GaussianRandomProjection)."""
    n_components = _check_components(n_components, max(d, n_components))
    return jax.random.normal(as_key(key), (d, n_components), jnp.float32) / jnp.sqrt(n_components)


def random_projection(x, n_components: int, key) -> jax.Array:
    """Gaussian random projection of ``x [n, d]`` to ``[n, c]`` (float32); the same key gives
    the same projection. Distances are preserved up to ``1 +- eps`` w.h.p. (Johnson-Lindenstrauss).
    """
    x = as_float_matrix(x, "x")
    if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 1:
        raise ValueError(f"n_components must be an int >= 1, got {n_components!r}")
    matrix = gaussian_projection_matrix(key, x.shape[1], n_components)
    return jnp.dot(x.astype(jnp.float32), matrix, precision=_HIGHEST)
