"""Row-sharded selection kernels over a 1-D ``jax.sharding.Mesh``, with ``jax.shard_map``.

Each device holds ``N / P`` consecutive rows of ``x`` and the matching slice of a kernel's
running state; the kernels write one body for one device and a mesh (``on_mesh`` below, with the
collectives of ``kernels.collective``). When ``N`` is not a multiple of ``P``, ``shard_rows``
pads ``x`` and each kernel gives its padding rows a state that can never be chosen (for greedy
k-center, ``min_dist = -inf``); the padding is dropped from every state returned to the caller,
so a state (and its checkpoint) has ``N`` rows on any device count. How exact each kernel is on
a mesh is said in its own module (``kcenter``, ``greedy``, ...).

Public entry points are the ordinary kernels with ``mesh=``: ``greedy_k_center(x, k,
mesh=mesh)``, ``kcenter_init(..., mesh=mesh)``, ``kcenter_run(..., mesh=mesh)``,
``kcenter_step``, ``farthest_point`` / ``closest_point`` / ``greedy_init`` / ``greedy_run`` /
``greedy_step``, ``typical_kcenter`` (and its ``_init`` / ``_run``, ``typicality_weights``),
``probcover`` (and its ``_init`` / ``_run`` / ``_step``, ``probcover_radius``); kernel herding
(``kernel_herding``, ``herding_init`` / ``herding_run``), k-means (``kmeans``,
``kmeans_plusplus``, ``kmeans_init`` / ``kmeans_run``, ``kmeans_assign``, ``kmeans_medoids``,
``typicality``, ``typical_points``), exact kNN (``knn``) and ZCore (``zcore_init`` /
``zcore_run`` / ``zcore_scores``: one body for one device and a mesh, in ``_zcore_body.py``);
and ``select`` / ``split`` with ``mesh=``. Each section below says how exact its kernel is.
"""

from __future__ import annotations

from functools import lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = [
    "make_mesh",
    "mesh_axis",
    "padded_rows",
    "shard_rows",
]

AXIS = "data"


def make_mesh(devices=None, axis_name: str = AXIS) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all devices of all processes, ``jax.devices()``)."""
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("make_mesh needs at least one device")
    return Mesh(np.asarray(devices), (axis_name,))


def mesh_axis(mesh) -> tuple[str, int]:
    """``(axis name, number of devices)`` of a 1-D mesh; a clear error for anything else."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    if len(mesh.axis_names) != 1:
        raise ValueError(
            f"mesh must be 1-D (rows are sharded over one axis), got axes {mesh.axis_names}; "
            "build one with goldener_jax.kernels.make_mesh()"
        )
    return mesh.axis_names[0], int(mesh.devices.size)


def padded_rows(n: int, mesh) -> int:
    """Rows after padding ``n`` to a multiple of the mesh size."""
    _, p = mesh_axis(mesh)
    return -(-max(n, 1) // p) * p


def shard_rows(x, mesh, fill=0):
    """``x`` (rows first) padded with ``fill`` to a multiple of the mesh size and row-sharded.

    An array already row-sharded on ``mesh`` with the padded length is returned as it is (no
    copy). On one process, anything else is padded where it lives and placed with
    ``jax.device_put``. When the mesh spans several processes, or ``x`` is not an array but
    anything sliceable by rows (a ``FeatureStore``'s TensorStore ``vectors``, a NumPy memmap),
    each process reads only the rows of its own devices (``jax.make_array_from_callback``): every
    process passes the same ``x`` (e.g. the same store path), and none holds all of it.

    The padding rows are ordinary rows to anyone who does not know ``n``: give the result to a
    kernel that takes the real row count (``kcenter_init(xs, k, mesh=mesh, n=n)``, then
    ``kcenter_run(state, xs, mesh=mesh)``: they never select a padding row), and give the other
    ``mesh=`` entry points (``greedy_k_center(x, k, mesh=...)``, ``select(..., mesh=...)``) the
    unpadded ``x``: they pad it themselves. When ``n`` is a multiple of the mesh size, nothing is
    padded and both uses are the same.
    """
    axis, _ = mesh_axis(mesh)
    ndim = len(x.shape)
    sharding = NamedSharding(mesh, P(axis, *([None] * (ndim - 1))))
    n = x.shape[0]
    rows = padded_rows(n, mesh)
    if isinstance(x, jax.core.Tracer):  # inside a caller's jit: pad, and say where rows go
        if rows != n:
            widths = [(0, rows - n)] + [(0, 0)] * (ndim - 1)
            x = jnp.pad(x, widths, constant_values=fill)
        return jax.lax.with_sharding_constraint(x, sharding)
    if isinstance(x, jax.Array) and rows == n and x.sharding.is_equivalent_to(sharding, ndim):
        return x
    is_array = isinstance(x, (np.ndarray, jax.Array))
    if is_array and sharding.is_fully_addressable:
        if rows != n:
            widths = [(0, rows - n)] + [(0, 0)] * (ndim - 1)
            pad = np.pad if isinstance(x, np.ndarray) else jnp.pad
            x = pad(x, widths, constant_values=fill)
        return jax.device_put(x, sharding)

    def local_rows(index):
        start, stop, _ = index[0].indices(rows)
        real = x[start : min(stop, n)]
        real = np.asarray(real.read().result() if hasattr(real, "read") else real)
        if stop > n:
            extra = np.full((stop - max(start, n), *real.shape[1:]), fill, real.dtype)
            real = np.concatenate([real, extra])
        return real

    dtype = x.dtype.numpy_dtype if hasattr(x.dtype, "numpy_dtype") else x.dtype
    return jax.make_array_from_callback((rows, *x.shape[1:]), sharding, local_rows, dtype=dtype)


def _replicate(a, mesh):
    """``a`` on every device of ``mesh`` (every process passes the same value)."""
    sharding = NamedSharding(mesh, P())
    if isinstance(a, jax.core.Tracer):  # inside a caller's jit
        return jax.lax.with_sharding_constraint(a, sharding)
    if isinstance(a, jax.Array) and a.sharding.is_equivalent_to(sharding, a.ndim):
        return a
    if sharding.is_fully_addressable:
        return jax.device_put(a, sharding)
    host = np.asarray(a)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


ROWS = "rows"
"""Spec marker for ``on_mesh``: the argument / result is row-sharded over the mesh axis."""
ALL = "all"
"""Spec marker for ``on_mesh``: the argument / result is the same on every device."""


def _spec(marker, axis):
    if marker == ROWS:
        return P(axis)
    if marker == ALL:
        return P()
    raise ValueError(f"on_mesh specs are ROWS or ALL, got {marker!r}")


def on_mesh(body, mesh, in_specs, out_specs):
    """``body(*args, axis=...)`` as a function of ``args``: one body, one device or a mesh.

    Without a mesh, ``body`` runs on the arrays as they are with ``axis=None`` (the collectives
    of ``kernels.collective`` are then plain array operations). With a 1-D mesh it runs under
    ``jax.shard_map`` with ``axis`` the mesh axis name: arguments and results marked ``ROWS`` are
    row-sharded (pad them first, ``shard_rows``), those marked ``ALL`` replicated. ``in_specs``
    and ``out_specs`` are pytrees of markers matching the arguments (a tuple) and the results.
    Call it inside the caller's ``jax.jit`` (with ``mesh`` static).
    """
    if mesh is None:
        return lambda *args: body(*args, axis=None)
    axis, _ = mesh_axis(mesh)
    to_spec = lambda tree: jax.tree.map(lambda m: _spec(m, axis), tree)  # noqa: E731
    return jax.shard_map(
        partial(body, axis=axis),
        mesh=mesh,
        in_specs=to_spec(tuple(in_specs)),
        out_specs=to_spec(out_specs),
        check_vma=False,
    )


def replicate(a, mesh):
    """``a`` on every device of ``mesh`` (every process passes the same value); ``a`` as it is
    without a mesh."""
    if mesh is None:
        return a
    return _replicate(a, mesh)


def unpad(a, n: int):
    """The first ``n`` rows of ``a`` (drops the padding ``shard_rows`` added)."""
    return a if a.shape[0] == n else a[:n]


def on_rows(a, mesh, fill):
    """``a`` row-sharded (padded with ``fill``) on ``mesh``; as it is without a mesh. A global
    array of ``n < padded`` rows that this process cannot read whole (an assignment returned
    with ``n=`` on a mesh spanning processes) is padded by a program instead."""
    if mesh is None:
        return a
    traced = isinstance(a, jax.core.Tracer)  # inside a caller's jit: shard_rows pads it
    if isinstance(a, jax.Array) and not traced and not a.is_fully_addressable:
        rows = padded_rows(a.shape[0], mesh)
        if rows != a.shape[0]:
            return pad_program(mesh, rows, a.ndim, fill)(a)
    return shard_rows(a, mesh, fill=fill)


@lru_cache(maxsize=32)
def pad_program(mesh, rows: int, ndim: int, fill):
    """A jitted pad of the rows to ``rows``, row-sharded on ``mesh`` (one program per shape)."""
    axis, _ = mesh_axis(mesh)
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axis))

    def pad(a):
        widths = [(0, rows - a.shape[0])] + [(0, 0)] * (ndim - 1)
        return jnp.pad(a, widths, constant_values=fill)

    return jax.jit(pad, out_shardings=sharding)


def real_rows(x, n, mesh) -> int:
    """The real row count of ``x``: ``n`` for rows padded by ``shard_rows`` for ``mesh`` (checked),
    every row when ``n`` is ``None``."""
    if n is None:
        return x.shape[0]
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be an int or None, got {n!r} of type {type(n).__name__}")
    n = int(n)
    if n < 1 or mesh is None or x.shape[0] not in (n, padded_rows(n, mesh)):
        expected = "a mesh" if mesh is None else f"{n} or {padded_rows(max(n, 1), mesh)} rows"
        raise ValueError(
            f"x has {x.shape[0]} rows but n={n}: n (>= 1) is the real rows of an x padded for "
            f"mesh by shard_rows; expected {expected}"
        )
    return n


def run_rows(x, n: int, mesh) -> int:
    """Rows a run over a state of ``n`` points accepts: ``x``'s own count when ``x`` is those
    ``n`` rows padded for ``mesh`` (the init took ``n=``), else ``n``."""
    rows = x.shape[0]
    return rows if mesh is not None and rows != n and rows == padded_rows(n, mesh) else n
