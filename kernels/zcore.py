"""ZCore coverage / redundancy scores (Griffin et al., "Zero-Shot Coreset Selection via Iterative
Subspace Sampling", WACV 2026), vectorised over many subspace samples at once.

One *subspace sample* ``s``: choose ``num_dims`` distinct dimensions at random, draw an anchor from
the per-dimension triangular distribution ``(min, median, max)`` on them, give ``+1`` to the point
nearest the anchor in that subspace, and take a redundancy penalty (summing to 1) off that point's
``num_redundancy`` nearest neighbours in the same subspace, neighbour ``j`` weighted by
``(dist_j + eps) ** -exponent``. The highest scores are the selection.

Variants:

* ``"paper"``: L1 distance, exponent 4, initial scores ``U(0, 1)`` (the authors' code).
* ``"goldener"``: Euclidean distance, penalty ``1 / ((dist + eps) * scale)`` (the scale cancels in
  the normalisation, so exponent 1), initial scores 0 (goldener 7.0.0's ``GoldZCoreSelectionTool``).

Fixed with respect to goldener: the chosen point itself is excluded from its neighbours by index
(goldener drops the first of a full argsort, which may be an exact duplicate instead); a constant
dimension gives anchors at its value (numpy's triangular raises); all randomness comes from an
explicit key, sample ``s`` drawing from ``fold_in(split(key)[0], s)``, so the draws do not
depend on how samples are chunked; the nearest point and the neighbours come from ``top_k``
over a chunk of samples, never from a full argsort.

Memory: ``O(chunk x n)`` temporaries (one row of subspace distances per sample of a chunk).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import as_float_matrix, check_k

__all__ = [
    "ZCORE_VARIANTS",
    "ZCoreState",
    "zcore_draws",
    "zcore_init",
    "zcore_run",
    "zcore_scores",
    "zcore_select",
    "zcore_step",
]

ZCORE_VARIANTS = {
    "paper": {"metric": "l1", "exponent": 4.0, "random_init": True},
    "goldener": {"metric": "l2", "exponent": 1.0, "random_init": False},
}
_EPS = 1e-8


class ZCoreState(NamedTuple):
    """State of a ZCore scoring run.

    Attributes:
      scores: float32 ``[n]`` running scores.
      done: int32 scalar, subspace samples processed so far.
      key: uint32 raw key data (``jax.random.key_data``) the samples draw from.
      lo, med, hi: float32 ``[d]`` per-dimension min / median / max (the anchors' distribution).
    """

    scores: jax.Array
    done: jax.Array
    key: jax.Array
    lo: jax.Array
    med: jax.Array
    hi: jax.Array


def _check_variant(variant: str) -> dict:
    if variant not in ZCORE_VARIANTS:
        raise ValueError(f"variant must be one of {tuple(ZCORE_VARIANTS)}, got {variant!r}")
    return ZCORE_VARIANTS[variant]


def _key_data(key) -> jax.Array:
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    if isinstance(key, (jax.Array, np.ndarray)) and key.dtype == np.uint32:
        return jnp.asarray(key)
    raise TypeError(f"key must be a jax.random.key(...), got {type(key).__name__}")


def _triangular(u, lo, mode, hi):
    """Inverse CDF of triangular(lo, mode, hi); a constant dimension (lo == hi) gives lo."""
    width = hi - lo
    safe = jnp.where(width > 0, width, 1.0)
    split = (mode - lo) / safe
    left = lo + jnp.sqrt(u * width * (mode - lo))
    right = hi - jnp.sqrt((1.0 - u) * width * (hi - mode))
    return jnp.where(width > 0, jnp.where(u < split, left, right), lo)


def _draw(key_data, start, count: int, lo, med, hi, num_dims: int):
    """Dimensions ``int32 [count, num_dims]`` and anchors ``[count, num_dims]`` of samples
    ``start .. start + count - 1``."""
    key = jax.random.wrap_key_data(key_data)
    d = lo.shape[0]

    def one(s):
        k = jax.random.fold_in(key, s)
        k_dims, k_anchor = jax.random.split(k)
        # Gumbel-top-k: num_dims distinct dimensions in O(d), not a permutation of d.
        _, dims = jax.lax.top_k(jax.random.uniform(k_dims, (d,)), num_dims)
        u = jax.random.uniform(k_anchor, (num_dims,))
        return dims.astype(jnp.int32), _triangular(u, lo[dims], med[dims], hi[dims])

    return jax.vmap(one)(start + jnp.arange(count, dtype=jnp.int32))


def zcore_draws(state: ZCoreState, start: int, count: int, num_dims: int = 2):
    """The dimensions and anchors samples ``start .. start + count - 1`` of ``state`` use (for
    references and inspection)."""
    return _draw(state.key, jnp.int32(start), count, state.lo, state.med, state.hi, num_dims)


def _subspace_distance(xt, dims, point, metric: str):
    """``[chunk, n]`` distances from every point to ``point[c]`` in subspace ``dims[c]``."""
    total = None
    for j in range(dims.shape[1]):  # num_dims is small and static
        diff = xt[dims[:, j]] - point[:, j, None]
        term = jnp.abs(diff) if metric == "l1" else diff * diff
        total = term if total is None else total + term
    return total


@partial(jax.jit, static_argnames=("chunk", "num_dims", "num_redundancy", "metric", "exponent"))
def _chunk_update(
    scores,
    xt,
    key_data,
    start,
    count,
    lo,
    med,
    hi,
    *,
    chunk,
    num_dims,
    num_redundancy,
    metric,
    exponent,
):
    # Samples start .. start + count - 1 (count <= chunk is traced: a last, partial chunk is
    # masked rather than compiled again).
    n = xt.shape[1]
    dims, anchors = _draw(key_data, start, chunk, lo, med, hi, num_dims)
    live = (jnp.arange(chunk) < count).astype(jnp.float32)
    to_anchor = _subspace_distance(xt, dims, anchors, metric)
    nearest = jnp.argmin(to_anchor, axis=1).astype(jnp.int32)  # lowest index on ties
    scores = scores.at[nearest].add(live)
    r = min(num_redundancy, n - 1)
    if r <= 0:
        return scores
    centre = jnp.stack([xt[dims[:, j], nearest] for j in range(num_dims)], axis=1)
    dist = _subspace_distance(xt, dims, centre, metric)
    if metric == "l2":
        dist = jnp.sqrt(dist)
    dist = jnp.where(jnp.arange(n)[None, :] == nearest[:, None], jnp.inf, dist)  # not itself
    neg, idx = jax.lax.top_k(-dist, r)  # nearest first; ties to the lowest index
    near = -neg
    # (d0 + eps) / (d + eps) <= 1: the same normalised weights without overflow for duplicates.
    w = ((near[:, :1] + _EPS) / (near + _EPS)) ** exponent
    w = w / jnp.sum(w, axis=1, keepdims=True) * live[:, None]
    return scores.at[idx.reshape(-1)].add(-w.reshape(-1))


def _stats(x):
    xf = x.astype(jnp.float32)
    lo = jnp.min(xf, axis=0)
    hi = jnp.max(xf, axis=0)
    # Lower median, as torch.median (goldener) returns.
    med = jnp.sort(xf, axis=0)[(x.shape[0] - 1) // 2]
    return lo, med, hi


def zcore_init(x, key, *, variant: str = "paper") -> ZCoreState:
    """Initial state: per-dimension statistics and the variant's initial scores.

    Args:
      x: Array of shape ``[n, d]``, floating.
      key: a ``jax.random.key``; the same key gives the same scores.
      variant: ``"paper"`` (random ``U(0, 1)`` initial scores) or ``"goldener"`` (zeros).
    """
    spec = _check_variant(variant)
    x = as_float_matrix(x, "x")
    sample_key, init_key = jax.random.split(jax.random.wrap_key_data(_key_data(key)))
    key_data = jax.random.key_data(sample_key)
    lo, med, hi = jax.jit(_stats)(x)
    n = x.shape[0]
    if spec["random_init"]:
        scores = jax.random.uniform(init_key, (n,), jnp.float32)
    else:
        scores = jnp.zeros((n,), jnp.float32)
    return ZCoreState(scores, jnp.zeros((), jnp.int32), key_data, lo, med, hi)


def _options(x, variant, num_dims, num_redundancy, metric, exponent):
    spec = _check_variant(variant)
    metric = spec["metric"] if metric is None else metric
    if metric not in ("l1", "l2"):
        raise ValueError(f"metric must be 'l1' or 'l2', got {metric!r}")
    exponent = float(spec["exponent"] if exponent is None else exponent)
    if not exponent > 0:
        raise ValueError(f"exponent must be > 0, got {exponent}")
    if isinstance(num_dims, bool) or not isinstance(num_dims, int) or num_dims < 1:
        raise ValueError(f"num_dims must be an int >= 1, got {num_dims!r}")
    if num_dims > x.shape[1]:
        raise ValueError(f"num_dims={num_dims} is larger than the dimension of x ({x.shape[1]})")
    if isinstance(num_redundancy, bool) or not isinstance(num_redundancy, int):
        raise TypeError(f"num_redundancy must be an int >= 0, got {num_redundancy!r}")
    if num_redundancy < 0:
        raise ValueError(f"num_redundancy must be >= 0, got {num_redundancy}")
    return metric, exponent


def zcore_step(
    state: ZCoreState,
    x,
    *,
    chunk: int = 256,
    variant: str = "paper",
    num_dims: int = 2,
    num_redundancy: int = 1000,
    metric: str | None = None,
    exponent: float | None = None,
) -> ZCoreState:
    """Processes the next ``chunk`` subspace samples (``x`` as ``[n, d]``)."""
    x = as_float_matrix(x, "x")
    metric, exponent = _options(x, variant, num_dims, num_redundancy, metric, exponent)
    return _run(state, x.T, chunk, chunk, num_dims, num_redundancy, metric, exponent)


def _run(state, xt, num_samples, chunk, num_dims, num_redundancy, metric, exponent):
    scores, done = state.scores, int(state.done)
    stop = done + num_samples
    while done < stop:
        size = min(chunk, stop - done)
        scores = _chunk_update(
            scores,
            xt,
            state.key,
            jnp.int32(done),
            jnp.int32(size),
            state.lo,
            state.med,
            state.hi,
            chunk=chunk,
            num_dims=num_dims,
            num_redundancy=num_redundancy,
            metric=metric,
            exponent=exponent,
        )
        done += size
    return state._replace(scores=scores, done=jnp.asarray(done, jnp.int32))


def zcore_run(
    state: ZCoreState,
    x,
    num_samples: int,
    *,
    chunk: int = 256,
    variant: str = "paper",
    num_dims: int = 2,
    num_redundancy: int = 1000,
    metric: str | None = None,
    exponent: float | None = None,
) -> ZCoreState:
    """Processes ``num_samples`` more subspace samples, ``chunk`` at a time.

    Sample ``s`` always draws from the same key: resuming a saved state draws exactly the
    samples an uninterrupted run would. Scores are sums of float32 updates, so a different
    ``chunk`` may change their last bits (not the draws).
    """
    x = as_float_matrix(x, "x")
    metric, exponent = _options(x, variant, num_dims, num_redundancy, metric, exponent)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be an int >= 1, got {chunk!r}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 0:
        raise ValueError(f"num_samples must be an int >= 0, got {num_samples!r}")
    if state.scores.shape[0] != x.shape[0]:
        raise ValueError(
            f"state was made for {state.scores.shape[0]} points but x has shape {tuple(x.shape)}"
        )
    return _run(state, x.T, num_samples, chunk, num_dims, num_redundancy, metric, exponent)


def zcore_scores(
    x,
    key,
    *,
    num_samples: int = 1_000_000,
    variant: str = "paper",
    num_dims: int = 2,
    num_redundancy: int = 1000,
    metric: str | None = None,
    exponent: float | None = None,
    chunk: int = 256,
) -> jax.Array:
    """ZCore scores of every row of ``x`` (higher = keep first).

    Args:
      x: Array of shape ``[n, d]``, floating.
      key: a ``jax.random.key``.
      num_samples: subspace samples (the paper uses 1e6).
      variant: ``"paper"`` or ``"goldener"`` (see the module docstring).
      num_dims: dimensions per subspace (default 2).
      num_redundancy: neighbours penalised per sample (default 1000).
      metric / exponent: override the variant's ``"l1"`` / ``"l2"`` distance and exponent.
      chunk: samples processed at once (``[chunk, n]`` temporaries).

    Returns:
      float32 array of shape ``[n]``.
    """
    state = zcore_init(x, key, variant=variant)
    state = zcore_run(
        state,
        x,
        num_samples,
        chunk=chunk,
        variant=variant,
        num_dims=num_dims,
        num_redundancy=num_redundancy,
        metric=metric,
        exponent=exponent,
    )
    return state.scores


def zcore_select(scores, k: int) -> jax.Array:
    """Indices of the ``k`` highest scores, highest first, lowest index on ties (int32 ``[k]``)."""
    scores = jnp.asarray(scores)
    k = check_k(k, scores.shape[0])
    return jax.lax.top_k(scores, k)[1].astype(jnp.int32)
