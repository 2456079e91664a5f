"""Kernel herding: greedy points whose empirical kernel mean tracks the data's, one kernel row per
step (the scalable member of goldener's kernel-points family; coreax's ``KernelHerding``).

Step ``t`` (``t`` points chosen so far) takes, among the points not chosen yet,

    argmax_i  mean_j k(x_i, x_j)  -  sum_{s chosen} k(x_i, x_s) / (t + 1)

(lowest index on ties). Kernels: ``"linear"`` ``k(a, b) = a . b`` (the mean term is one mat-vec
with the mean row) and ``"rbf"`` ``k(a, b) = exp(-|a - b|^2 / (2 length_scale^2))`` (the mean term
is a blocked pass over all pairs: ``O(n^2 d)`` time once, ``O(block x n)`` memory; never an
``n x n`` matrix). Each step then reads ``x`` once (one kernel row).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._checks import as_float_matrix, check_block_size, check_k, check_run_args
from .distance import auto_block, block_rank_distances, first_argmax, fold_row_blocks, row_aux

__all__ = [
    "HERDING_KERNELS",
    "HerdingState",
    "herding_init",
    "herding_run",
    "herding_step",
    "kernel_herding",
    "median_length_scale",
]

HERDING_KERNELS = ("linear", "rbf")
_HIGHEST = jax.lax.Precision.HIGHEST


class HerdingState(NamedTuple):
    """State of a kernel herding run.

    Attributes:
      mean_kernel: float32 ``[n]`` ``mean_j k(x_i, x_j)``.
      penalty: float32 ``[n]`` ``sum_{s chosen} k(x_i, x_s)``.
      taken: bool ``[n]`` True for chosen points.
      selected: int32 ``[k]`` chosen indices in order; ``-1`` where not chosen yet.
      count: int32 scalar.
    """

    mean_kernel: jax.Array
    penalty: jax.Array
    taken: jax.Array
    selected: jax.Array
    count: jax.Array


def _check_kernel(kernel: str, length_scale) -> float:
    if kernel not in HERDING_KERNELS:
        raise ValueError(f"kernel must be one of {HERDING_KERNELS}, got {kernel!r}")
    if kernel == "rbf":
        if isinstance(length_scale, bool) or not isinstance(length_scale, (int, float)):
            raise TypeError(f"length_scale must be a positive float, got {length_scale!r}")
        if not length_scale > 0:
            raise ValueError(f"length_scale must be > 0, got {length_scale}")
    return float(length_scale)


def _kernel_row(x, x_sq, point, kernel, length_scale):
    p = point.astype(jnp.float32)
    dots = jnp.dot(x, point.astype(x.dtype), precision=_HIGHEST, preferred_element_type=jnp.float32)
    if kernel == "linear":
        return dots
    sq = jnp.maximum(x_sq - 2.0 * dots + jnp.dot(p, p), 0.0)
    return jnp.exp(-sq / (2.0 * length_scale**2))


@partial(jax.jit, static_argnames=("k", "kernel", "length_scale", "block_size"))
def _init(x, *, k, kernel, length_scale, block_size):
    n = x.shape[0]
    if kernel == "linear":
        mean = jnp.sum(x.astype(jnp.float32), axis=0) / n
        mean_kernel = jnp.dot(x.astype(jnp.float32), mean, precision=_HIGHEST)
    else:
        block = auto_block(n, n, block_size)
        aux = row_aux(x, "euclidean")

        def fold(rows, start, fresh_from, out):
            raux = jax.lax.dynamic_slice_in_dim(aux, start, block)
            sq = block_rank_distances(rows, raux, x, aux, "euclidean")  # [block, n]
            row_means = jnp.mean(jnp.exp(-sq / (2.0 * length_scale**2)), axis=1)
            return jax.lax.dynamic_update_slice_in_dim(out, row_means, start, axis=0)

        mean_kernel = fold_row_blocks(fold, x, block, jnp.zeros((n,), jnp.float32))
    return HerdingState(
        mean_kernel,
        jnp.zeros((n,), jnp.float32),
        jnp.zeros((n,), bool),
        jnp.full((k,), -1, jnp.int32),
        jnp.zeros((), jnp.int32),
    )


def herding_init(
    x,
    k: int,
    *,
    kernel: str = "rbf",
    length_scale: float = 1.0,
    block_size: int | None = None,
    mesh=None,
) -> HerdingState:
    """Initial state (the kernel mean of every point).

    Args:
      x: Array of shape ``[n, d]``, floating.
      k: points to choose, ``0 <= k <= n`` (static).
      kernel: ``"linear"`` or ``"rbf"``.
      length_scale: RBF bandwidth (see :func:`median_length_scale`).
      block_size: rows per block of the RBF kernel mean (``[block, n]`` temporaries; with
        ``mesh``, ``[block, n / P]``).
      mesh: optional 1-D ``jax.sharding.Mesh``: rows of ``x`` are sharded over its devices
        (``kernels.sharding``); the state's vectors still have length ``n``.

    Returns:
      A ``HerdingState``.
    """
    length_scale = _check_kernel(kernel, length_scale)
    block_size = check_block_size(block_size)
    x = as_float_matrix(x, "x")
    k = check_k(k, x.shape[0])
    if mesh is not None:
        from .sharding import sharded_herding_init

        return sharded_herding_init(
            x, k, mesh=mesh, kernel=kernel, length_scale=length_scale, block_size=block_size
        )[0]
    return _init(x, k=k, kernel=kernel, length_scale=length_scale, block_size=block_size)


def _take(state, x, x_sq, kernel, length_scale):
    score = state.mean_kernel - state.penalty / (state.count + 1).astype(jnp.float32)
    index = first_argmax(jnp.where(state.taken, -jnp.inf, score))
    row = _kernel_row(x, x_sq, x[index], kernel, length_scale)
    return HerdingState(
        state.mean_kernel,
        state.penalty + row,
        state.taken.at[index].set(True),
        state.selected.at[state.count].set(index.astype(jnp.int32)),
        state.count + 1,
    )


@partial(jax.jit, static_argnames=("kernel", "length_scale"))
def _run(state, x, max_steps, *, kernel, length_scale):
    stop = jnp.minimum(state.selected.shape[0], state.count + max_steps)
    x_sq = jnp.sum(jnp.square(x.astype(jnp.float32)), axis=1)
    return jax.lax.while_loop(
        lambda s: s.count < stop, lambda s: _take(s, x, x_sq, kernel, length_scale), state
    )


def herding_run(
    state: HerdingState,
    x,
    *,
    kernel: str = "rbf",
    length_scale: float = 1.0,
    max_steps: int | None = None,
    mesh=None,
) -> HerdingState:
    """Continues ``state`` until it holds ``k`` points, or for at most ``max_steps`` more
    (traced: chunked runs do not recompile and equal one run exactly). With ``mesh`` (a 1-D
    ``jax.sharding.Mesh``) the rows are sharded over its devices; a state from any device count
    (or none) continues."""
    length_scale = _check_kernel(kernel, length_scale)
    x, max_steps = check_run_args(x, state.mean_kernel.shape[0], state.selected.shape[0], max_steps)
    if state.selected.shape[0] == 0:
        return state
    if mesh is not None:
        from .sharding import sharded_herding_run

        return sharded_herding_run(
            state, x, max_steps, mesh=mesh, kernel=kernel, length_scale=length_scale
        )
    return _run(state, x, max_steps, kernel=kernel, length_scale=length_scale)


def herding_step(
    state: HerdingState, x, *, kernel: str = "rbf", length_scale: float = 1.0
) -> HerdingState:
    """Chooses one more point (unchanged once ``k`` are chosen)."""
    return herding_run(state, x, kernel=kernel, length_scale=length_scale, max_steps=1)


def kernel_herding(
    x,
    k: int,
    *,
    kernel: str = "rbf",
    length_scale: float = 1.0,
    block_size: int | None = None,
    mesh=None,
) -> jax.Array:
    """Kernel herding selection: int32 ``[k]`` indices into ``x`` in selection order.

    Args:
      x: Array of shape ``[n, d]``, floating.
      k: points to choose, ``0 <= k <= n``.
      kernel: ``"linear"`` or ``"rbf"``.
      length_scale: RBF bandwidth (see :func:`median_length_scale`).
      block_size: rows per block of the RBF kernel mean.
      mesh: optional 1-D ``jax.sharding.Mesh`` (e.g. ``kernels.make_mesh()``): rows of ``x``
        are sharded over its devices, each step exchanges ``O(P + d)`` values
        (``kernels.sharding``); the indices equal the single-device ones.

    Returns:
      int32 ``[k]`` indices into ``x`` in selection order.
    """
    if mesh is not None:
        from .sharding import sharded_herding_init, sharded_herding_run

        length_scale = _check_kernel(kernel, length_scale)
        block_size = check_block_size(block_size)
        x = as_float_matrix(x, "x")
        k = check_k(k, x.shape[0])
        state, xs = sharded_herding_init(
            x, k, mesh=mesh, kernel=kernel, length_scale=length_scale, block_size=block_size
        )
        if k == 0:
            return state.selected
        return sharded_herding_run(
            state, x, k, mesh=mesh, kernel=kernel, length_scale=length_scale, xs=xs
        ).selected
    state = herding_init(x, k, kernel=kernel, length_scale=length_scale, block_size=block_size)
    return herding_run(state, x, kernel=kernel, length_scale=length_scale).selected


def median_length_scale(x, *, max_points: int = 2048) -> float:
    """Median heuristic bandwidth: the median pairwise Euclidean distance among the first
    ``max_points`` rows spread evenly over ``x`` (deterministic; O(max_points^2) memory)."""
    x = as_float_matrix(x, "x")
    n = x.shape[0]
    if n < 2:
        return 1.0
    step = max(1, n // max_points)
    sub = x[::step][:max_points].astype(jnp.float32)
    aux = row_aux(sub, "euclidean")
    sq = block_rank_distances(sub, aux, sub, aux, "euclidean")
    iu = jnp.triu_indices(sub.shape[0], 1)
    med = float(jnp.sqrt(jnp.median(sq[iu])))
    return med if med > 0 else 1.0
