"""Kernel herding: greedy points whose empirical kernel mean tracks the data's, one kernel row per
step (the scalable member of goldener's kernel-points family; coreax's ``KernelHerding``).

Step ``t`` (``t`` points chosen so far) takes, among the points not chosen yet,

    argmax_i  mean_j k(x_i, x_j)  -  sum_{s chosen} k(x_i, x_s) / (t + 1)

(lowest index on ties). With anchors (``m`` points already chosen, e.g. labelled) the run is
the herding of ``m + k`` points whose first ``m`` are the anchors: they are in the penalty from
the start and step ``t`` divides by ``m + t + 1``. The anchors' kernel rows are added one by one
in their order, as ``m`` steps would add them, so with anchors equal to the first ``m`` picks of
a run the state is that run's after ``m`` steps bit for bit, and the next picks are its next
picks (``O(m n d)``, ``m`` reads of ``x``, once at init). A row of ``x`` equal to an anchor (bit
for bit, e.g. the anchor itself) counts as chosen, as a pick does: it is never picked.

Kernels: ``"linear"`` ``k(a, b) = a . b`` (the mean term is one mat-vec with the mean row) and
``"rbf"`` ``k(a, b) = exp(-|a - b|^2 / (2 length_scale^2))`` (the mean term is a blocked pass over
all pairs: ``O(n^2 d)`` time once, ``O(block x n)`` memory; never an ``n x n`` matrix). Each step
then reads ``x`` once (one kernel row).

One body per phase runs on one device and, with ``mesh=``, row-sharded over a 1-D mesh
(``sharding.on_mesh``): the state's N-vectors are sharded like ``x`` and padding rows are
``taken`` from the start, so they are never chosen. A step is a global first argmax (ties to the
lowest global index) and one fetched row, ``O(P + d)`` values exchanged. The linear kernel mean
``psum``s the column sums; the RBF kernel mean visits every device's rows in the order
``0, 1, ..., P - 1`` on every device (``collective.fold_all_rows(ordered=True)``), so two equal
rows on different devices get bit-equal kernel means and their tie still goes to the lowest
index. Exactness on a mesh: each kernel value is computed as on one device; only the order of the
additions of the global sums (mean row, RBF kernel mean) differs, so the indices differ from one
device's only where two different candidates' scores are within rounding of each other.
"""

from __future__ import annotations

from functools import lru_cache, partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import collective
from ._checks import (
    as_float_matrix,
    check_block_size,
    check_k,
    check_run_args,
    check_same_width,
    empty_selection,
)
from .distance import auto_block, block_rank_distances, column_sums, row_aux
from .sharding import (
    ALL,
    ROWS,
    mesh_axis,
    on_mesh,
    on_rows,
    real_rows,
    replicate,
    run_rows,
    unpad,
)

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
      taken: bool ``[n]`` True for chosen points (and rows equal to an anchor).
      selected: int32 ``[k]`` chosen indices in order; ``-1`` where not chosen yet.
      count: int32 scalar.
      num_anchors: int32 scalar, the anchors in ``penalty`` (chosen before the ``k`` picks).
    """

    mean_kernel: jax.Array
    penalty: jax.Array
    taken: jax.Array
    selected: jax.Array
    count: jax.Array
    num_anchors: jax.Array


_STATE_SPECS = HerdingState(ROWS, ROWS, ROWS, ALL, ALL, ALL)


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


def _anchor_penalty(x, anchors, kernel, length_scale):
    """(``sum_a k(x_i, a)`` over the anchors, whether row ``i`` equals an anchor): the kernel
    rows are added one at a time in the anchors' order, exactly what ``m`` steps choosing those
    points add (the same ops, the same order)."""
    x_sq = jnp.sum(jnp.square(x.astype(jnp.float32)), axis=1)
    a = anchors.astype(x.dtype)

    def add(j, carry):
        penalty, same = carry
        penalty = penalty + _kernel_row(x, x_sq, a[j], kernel, length_scale)
        return penalty, same | jnp.all(x == a[j], axis=1)

    init = (jnp.zeros((x.shape[0],), jnp.float32), jnp.zeros((x.shape[0],), bool))
    return jax.lax.fori_loop(0, a.shape[0], add, init)


def _init_body(x, anchors, *, n, k, kernel, length_scale, block_size, axis):
    m = x.shape[0]
    valid = collective.row_ids(m, axis) < n
    # Padding rows exist only on a mesh whose size does not divide n (static).
    padded = collective.axis_size(axis) * m != n
    if kernel == "linear":
        # padding rows (any value: rows read per process come padded) are not in the mean
        mean = collective.psum(column_sums(x, jnp.float32, valid if padded else None), axis) / n
        mean_kernel = jnp.dot(x.astype(jnp.float32), mean, precision=_HIGHEST)
    else:
        block = auto_block(m, m, block_size)
        aux = row_aux(x, "euclidean")
        one_visit = collective.axis_size(axis) == 1  # then the visiting rows are x itself

        def fold(rows, start, fresh_from, other, other_ids, other_ok, sums):
            raux = jax.lax.dynamic_slice_in_dim(aux, start, block)
            other_aux = aux if one_visit else row_aux(other, "euclidean")
            sq = block_rank_distances(rows, raux, other, other_aux, "euclidean")
            kv = jnp.exp(-sq / (2.0 * length_scale**2))
            if padded:
                kv = jnp.where(other_ok[None, :], kv, 0.0)
            old = jax.lax.dynamic_slice_in_dim(sums, start, block)
            # The last block may overlap the previous one: its repeated rows are rewritten
            # with the same value, not added twice.
            fresh = (start + jnp.arange(block)) >= fresh_from
            new = jnp.where(fresh, old + jnp.sum(kv, axis=1), old)
            return jax.lax.dynamic_update_slice_in_dim(sums, new, start, axis=0)

        zeros = jnp.zeros((m,), jnp.float32)
        sums = collective.fold_all_rows(fold, x, n, axis, block, zeros, ordered=True)
        mean_kernel = sums / n
    if padded:
        mean_kernel = jnp.where(valid, mean_kernel, 0.0)
    num_anchors = 0 if anchors is None else anchors.shape[0]
    taken = ~valid
    if num_anchors:
        penalty, same = _anchor_penalty(x, anchors, kernel, length_scale)
        taken = taken | same
    else:
        penalty = jnp.zeros((m,), jnp.float32)
    return HerdingState(
        mean_kernel.astype(jnp.float32),
        penalty,
        taken,
        jnp.full((k,), -1, jnp.int32),
        jnp.zeros((), jnp.int32),
        jnp.asarray(num_anchors, jnp.int32),
    )


@partial(jax.jit, static_argnames=("mesh", "n", "k", "kernel", "length_scale", "block_size"))
def _init(x, anchors, *, mesh, n, k, kernel, length_scale, block_size):
    body = partial(
        _init_body, n=n, k=k, kernel=kernel, length_scale=length_scale, block_size=block_size
    )
    return on_mesh(body, mesh, (ROWS, ALL), _STATE_SPECS)(x, anchors)


def _run_body(state, x, max_steps, *, kernel, length_scale, axis):
    ids = collective.row_ids(x.shape[0], axis)
    stop = jnp.minimum(state.selected.shape[0], state.count + max_steps)
    x_sq = jnp.sum(jnp.square(x.astype(jnp.float32)), axis=1)
    mean_kernel = state.mean_kernel
    before = state.num_anchors + 1  # the anchors count as the first picks

    # `x` and the kernel mean are closed over, not carried.
    def step(carry):
        penalty, taken, selected, count = carry
        score = mean_kernel - penalty / (count + before).astype(jnp.float32)
        index = collective.first_argmax(jnp.where(taken, -jnp.inf, score), ids, axis)
        point = collective.fetch_row(x, ids, index, axis)
        return (
            penalty + _kernel_row(x, x_sq, point, kernel, length_scale),
            collective.set_row(taken, ids, index, True),
            selected.at[count].set(index.astype(jnp.int32)),
            count + 1,
        )

    carry = (state.penalty, state.taken, state.selected, state.count)
    carry = jax.lax.while_loop(lambda c: c[3] < stop, step, carry)
    return HerdingState(mean_kernel, *carry, state.num_anchors)


@partial(jax.jit, static_argnames=("mesh", "kernel", "length_scale"))
def _run(state, x, max_steps, *, mesh, kernel, length_scale):
    body = partial(_run_body, kernel=kernel, length_scale=length_scale)
    return on_mesh(body, mesh, (_STATE_SPECS, ROWS, ALL), _STATE_SPECS)(state, x, max_steps)


def _place_state(state: HerdingState, mesh) -> HerdingState:
    """``state`` on ``mesh``: N-vectors padded (padding rows taken) and row-sharded."""
    count = state.count if isinstance(state.count, jax.Array) else np.int32(state.count)
    return HerdingState(
        on_rows(state.mean_kernel, mesh, 0.0),
        on_rows(state.penalty, mesh, 0.0),
        on_rows(state.taken, mesh, True),
        replicate(state.selected, mesh),
        replicate(count, mesh),
        replicate(jnp.asarray(state.num_anchors, jnp.int32), mesh),
    )


def _unpad_state(state: HerdingState, n: int) -> HerdingState:
    return state._replace(
        mean_kernel=unpad(state.mean_kernel, n),
        penalty=unpad(state.penalty, n),
        taken=unpad(state.taken, n),
    )


def _checked_init(x, k, kernel, length_scale, block_size, mesh, anchors=None, n=None):
    """(state, x as placed for the run): validation, then the init on one device or ``mesh``
    (``n``: the real rows of an ``x`` already padded for it)."""
    length_scale = _check_kernel(kernel, length_scale)
    block_size = check_block_size(block_size)
    x = as_float_matrix(x, "x")
    n = real_rows(x, n, mesh)
    k = check_k(k, n)
    if anchors is not None:
        anchors = as_float_matrix(anchors, "anchors")
        check_same_width(x, anchors, "x", "anchors")
        anchors = replicate(anchors, mesh)
    xs = x if mesh is None else on_rows(x, mesh, 0)
    kw = dict(kernel=kernel, length_scale=length_scale, block_size=block_size)
    return _unpad_state(_init(xs, anchors, mesh=mesh, n=n, k=k, **kw), n), xs


def herding_init(
    x,
    k: int,
    *,
    kernel: str = "rbf",
    length_scale: float = 1.0,
    block_size: int | None = None,
    anchors=None,
    mesh=None,
    n: int | None = None,
) -> HerdingState:
    """Initial state (the kernel mean of every point, the anchors' kernel rows).

    Args:
      x: Array of shape ``[n, d]``, floating.
      k: points to choose, ``0 <= k <= n`` (static).
      kernel: ``"linear"`` or ``"rbf"``.
      length_scale: RBF bandwidth (see :func:`median_length_scale`).
      block_size: rows per block of the RBF kernel mean (``[block, n]`` temporaries; with
        ``mesh``, ``[block, n / P]``).
      anchors: optional ``[m, d]`` points already chosen (e.g. labelled): the run continues a
        herding whose first ``m`` points they are (see the module docstring); never returned.
      mesh: optional 1-D ``jax.sharding.Mesh``: rows of ``x`` are sharded over its devices
        (``kernels.sharding``); the state's vectors still have length ``n``.
      n: with ``mesh``, the real rows of an ``x`` already padded by ``shard_rows`` (e.g. each
        process its own rows of a store): padding rows are never in the mean or chosen.
        ``herding_run`` then takes the same padded ``x`` (the state knows ``n``).

    Returns:
      A ``HerdingState``.
    """
    return _checked_init(x, k, kernel, length_scale, block_size, mesh, anchors, n)[0]


def _checked_run(state, x, kernel, length_scale, max_steps, mesh, xs=None):
    length_scale = _check_kernel(kernel, length_scale)
    n = state.mean_kernel.shape[0]
    x, max_steps = check_run_args(x, run_rows(x, n, mesh), state.selected.shape[0], max_steps)
    if state.selected.shape[0] == 0:
        return state
    kw = dict(kernel=kernel, length_scale=length_scale)
    if mesh is None:
        return _run(state, x, max_steps, mesh=None, **kw)
    xs = on_rows(x, mesh, 0) if xs is None else xs
    out = _run(_place_state(state, mesh), xs, replicate(max_steps, mesh), mesh=mesh, **kw)
    return _unpad_state(out, n)


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
    return _checked_run(state, x, kernel, length_scale, max_steps, mesh)


def herding_step(
    state: HerdingState, x, *, kernel: str = "rbf", length_scale: float = 1.0, mesh=None
) -> HerdingState:
    """Chooses one more point (unchanged once ``k`` are chosen); ``mesh`` as in
    :func:`herding_run`."""
    return herding_run(state, x, kernel=kernel, length_scale=length_scale, max_steps=1, mesh=mesh)


def kernel_herding(
    x,
    k: int,
    *,
    kernel: str = "rbf",
    length_scale: float = 1.0,
    block_size: int | None = None,
    anchors=None,
    mesh=None,
) -> jax.Array:
    """Kernel herding selection: int32 ``[k]`` indices into ``x`` in selection order.

    Args:
      x: Array of shape ``[n, d]``, floating.
      k: points to choose, ``0 <= k <= n``.
      kernel: ``"linear"`` or ``"rbf"``.
      length_scale: RBF bandwidth (see :func:`median_length_scale`).
      block_size: rows per block of the RBF kernel mean.
      anchors: optional ``[m, d]`` points already chosen: herding continues from them as its
        first ``m`` points (see the module docstring); never returned.
      mesh: optional 1-D ``jax.sharding.Mesh`` (e.g. ``kernels.make_mesh()``): rows of ``x``
        are sharded over its devices, each step exchanges ``O(P + d)`` values; the indices
        equal the single-device ones (up to ties within rounding, see the module docstring).

    Returns:
      int32 ``[k]`` indices into ``x`` in selection order.
    """
    if (empty := empty_selection(x, k)) is not None:
        return empty
    state, xs = _checked_init(x, k, kernel, length_scale, block_size, mesh, anchors)
    return _checked_run(state, x, kernel, length_scale, None, mesh, xs=xs).selected


@lru_cache(maxsize=16)
def _spread_rows_program(mesh, n: int, step: int, count: int):
    """Rows ``0, step, ...`` (``count`` of them) of a row-sharded ``x``, replicated on ``mesh``:
    one program every process runs, so none needs the whole ``x``."""
    mesh_axis(mesh)  # a 1-D mesh, or a clear error
    every = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return jax.jit(lambda a: a[jnp.arange(0, n, step)[:count]], out_shardings=every)


def median_length_scale(x, *, max_points: int = 2048, mesh=None, n: int | None = None) -> float:
    """Median heuristic bandwidth: the median pairwise Euclidean distance among the first
    ``max_points`` rows spread evenly over ``x`` (deterministic; O(max_points^2) memory).
    ``n``: with ``mesh``, the real rows of an ``x`` already padded by ``shard_rows`` (the rows are
    gathered by one program on the mesh: no process reads ``x`` whole)."""
    x = as_float_matrix(x, "x")
    n = real_rows(x, n, mesh)
    if n < 2:
        return 1.0
    step = max(1, n // max_points)
    if mesh is None:
        sub = x[::step][:max_points]
    else:
        sub = _spread_rows_program(mesh, n, step, min(max_points, -(-n // step)))(x)
    sub = jnp.asarray(sub, jnp.float32)
    aux = row_aux(sub, "euclidean")
    sq = block_rank_distances(sub, aux, sub, aux, "euclidean")
    iu = jnp.triu_indices(sub.shape[0], 1)
    med = float(jnp.sqrt(jnp.median(sq[iu])))
    return med if med > 0 else 1.0
