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

Layout: this module holds the public API, the state, the draws and the statistics, and drives
the chunks. The XLA kernel has two chunk updates: the brute-force body of ``_zcore_body.py``,
written once for one device and for a mesh (``axis``), and, on one device when ``num_dims == 2``
and ``n`` is large, the window search of ``_zcore_window.py``. The compiled CPU walk is
``_zcore_native.py``.

Memory: ``O(chunk x n)`` temporaries (one row of subspace distances per sample of a chunk).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _zcore_window, collective
from ._checks import as_float_matrix, check_k, is_concrete
from ._zcore_body import chunk_body, stats_body
from .sharding import (
    ALL,
    ROWS,
    on_mesh,
    on_rows,
    real_rows,
    replicate,
    run_rows,
    unpad,
)

__all__ = [
    "IMPLS",
    "ZCORE_VARIANTS",
    "ZCoreState",
    "default_widths",
    "draw_samples",
    "native_status",
    "window_tables",
    "zcore_draws",
    "zcore_init",
    "zcore_run",
    "zcore_run_with_stats",
    "zcore_scores",
    "zcore_select",
    "zcore_step",
]


ZCORE_VARIANTS = {
    "paper": {"metric": "l1", "exponent": 4.0, "random_init": True},
    "goldener": {"metric": "l2", "exponent": 1.0, "random_init": False},
}


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


def _distinct_dims(key, d: int, k: int):
    """``k`` distinct dimensions of ``d``, uniformly at random and in draw order (the first
    uniform over all ``d``, the next over the rest, ...): one ``randint`` each, O(k^2), instead of
    ranking ``d`` random numbers. Draw ``t`` picks a slot among the ``d - t`` dimensions still
    free and moves past the taken ones in increasing order."""
    keys = jax.random.split(key, k)
    taken = []
    for t in range(k):  # k (num_dims) is small and static
        v = jax.random.randint(keys[t], (), 0, d - t, dtype=jnp.int32)
        if taken:
            for c in jnp.sort(jnp.stack(taken)):
                v = v + (v >= c).astype(jnp.int32)
        taken.append(v)
    return jnp.stack(taken)


def draw_samples(key_data, start, count: int, lo, med, hi, num_dims: int):
    """Dimensions ``int32 [count, num_dims]`` and anchors ``[count, num_dims]`` of samples
    ``start .. start + count - 1``."""
    key = jax.random.wrap_key_data(key_data)
    d = lo.shape[0]

    def one(s):
        k = jax.random.fold_in(key, s)
        k_dims, k_anchor = jax.random.split(k)
        dims = _distinct_dims(k_dims, d, num_dims)
        u = jax.random.uniform(k_anchor, (num_dims,))
        return dims.astype(jnp.int32), _triangular(u, lo[dims], med[dims], hi[dims])

    return jax.vmap(one)(start + jnp.arange(count, dtype=jnp.int32))


def zcore_draws(state: ZCoreState, start: int, count: int, num_dims: int = 2):
    """The dimensions and anchors samples ``start .. start + count - 1`` of ``state`` use (for
    references and inspection)."""
    return draw_samples(state.key, jnp.int32(start), count, state.lo, state.med, state.hi, num_dims)


# --- XLA chunk drivers -------------------------------------------------------------------------


@partial(
    jax.jit,
    static_argnames=("mesh", "n", "chunk", "num_dims", "num_redundancy", "metric", "exponent"),
)
def _run_chunks(
    scores, x, key_data, start, num_samples, lo, med, hi, *, mesh, n, chunk, num_dims,
    num_redundancy, metric, exponent,
):  # fmt: skip
    """Samples ``start .. start + num_samples - 1`` by the brute-force body, ``chunk`` at a time,
    in one program (``num_samples`` traced: no recompilation per call). On a mesh every device
    runs the same number of chunks (``num_samples`` is replicated), so each collective of every
    chunk is met by all devices."""
    r = min(num_redundancy, n - 1)

    def body(scores, x, key_data, start, num_samples, lo, med, hi, *, axis):
        xt = x.T
        ids = collective.row_ids(x.shape[0], axis)

        def one(c, scores):
            first = start + c * chunk
            dims, anchors = draw_samples(key_data, first, chunk, lo, med, hi, num_dims)
            live = (jnp.arange(chunk) < num_samples - c * chunk).astype(jnp.float32)
            opts = dict(n=n, r=r, metric=metric, exponent=exponent, axis=axis)
            return chunk_body(scores, xt, ids, dims, anchors, live, **opts)

        return jax.lax.fori_loop(0, (num_samples + chunk - 1) // chunk, one, scores)

    specs = (ROWS, ROWS, ALL, ALL, ALL, ALL, ALL, ALL)
    return on_mesh(body, mesh, specs, ROWS)(scores, x, key_data, start, num_samples, lo, med, hi)


@partial(
    jax.jit,
    static_argnames=(
        "chunk", "num_redundancy", "metric", "exponent", "width_anchor", "width_redundancy",
        "pad", "fallback",
    ),
)  # fmt: skip
def _window_chunk(
    scores, xt, tables, key_data, start, count, lo, med, hi, *, chunk, num_redundancy, metric,
    exponent, width_anchor, width_redundancy, pad, fallback,
):  # fmt: skip
    """One chunk of samples by window search (one device, ``num_dims == 2``)."""
    dims, anchors = draw_samples(key_data, start, chunk, lo, med, hi, 2)
    live = jnp.arange(chunk) < count
    return _zcore_window.chunk_update(
        scores, xt, tables, dims, anchors, live, num_redundancy=num_redundancy, metric=metric,
        exponent=exponent, width_anchor=width_anchor, width_redundancy=width_redundancy, pad=pad,
        fallback=fallback,
    )  # fmt: skip


@partial(jax.jit, static_argnames=("mesh", "n"))
def _stats(x, *, mesh, n):
    return on_mesh(partial(stats_body, n=n), mesh, (ROWS,), (ALL, ALL, ALL))(x)


def _stats_host(x: np.ndarray):
    """``_stats`` on the host: the same values (min, max and the lower median is an order
    statistic), from a partition instead of XLA's CPU sort (0.2 s instead of 7 s at 50k x 256)."""
    k = (x.shape[0] - 1) // 2
    med = np.partition(x.T, k, axis=1)[:, k]
    return jnp.asarray(x.min(0)), jnp.asarray(med), jnp.asarray(x.max(0))


def zcore_init(x, key, *, variant: str = "paper", mesh=None, n: int | None = None) -> ZCoreState:
    """Initial state: per-dimension statistics and the variant's initial scores.

    Args:
      x: Array of shape ``[n, d]``, floating.
      key: a ``jax.random.key``; the same key gives the same scores.
      variant: ``"paper"`` (random ``U(0, 1)`` initial scores) or ``"goldener"`` (zeros).
      mesh: optional 1-D ``jax.sharding.Mesh``: the statistics are reduced over rows sharded
        on its devices (the same values; the lower median by an exact bisection).
      n: with ``mesh``, the real rows of an ``x`` already padded by ``shard_rows`` (e.g. each
        process its own rows of a store): padding rows are in no statistic, never scored;
        ``zcore_run`` then takes the same padded ``x`` (the state knows ``n``).

    Returns:
      A ``ZCoreState``.
    """
    spec = _check_variant(variant)
    x = as_float_matrix(x, "x")
    sample_key, init_key = jax.random.split(jax.random.wrap_key_data(_key_data(key)))
    key_data = jax.random.key_data(sample_key)
    n = real_rows(x, n, mesh)
    if mesh is not None:
        lo, med, hi = _stats(on_rows(x, mesh, 0), mesh=mesh, n=n)
        lo, med, hi = jax.block_until_ready((lo, med, hi))  # see _wait
    elif all(dev.platform == "cpu" for dev in x.devices()):
        lo, med, hi = _stats_host(np.asarray(x, np.float32))
    else:
        lo, med, hi = _stats(x, mesh=None, n=n)
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


def default_widths(n: int, num_dims: int, num_redundancy: int) -> tuple[int, int] | None:
    """Window widths ``(anchor, redundancy)`` the XLA kernel's window search uses for ``n``
    points, or None where it runs brute force (``num_dims != 2``, or ``n`` so small that brute
    force is as cheap as the windows)."""
    r = min(num_redundancy, n - 1)
    widths = (512, max(1024, 10 * r))
    if num_dims != 2 or 2 * max(widths) > n:
        return None
    return widths


def window_tables(x, widths: tuple[int, int]) -> tuple[jax.Array, jax.Array]:
    """The per-dimension sorted tables ``(order, sorted values)`` the window search builds once
    per ``zcore_run`` call (padded by ``max(widths)``; for timing and inspection)."""
    x = as_float_matrix(x, "x")
    tables = _zcore_window.build_tables(x.T.astype(jnp.float32), max(widths))
    return tables.order, tables.svals


def _check_widths(widths, n: int, num_dims: int, num_redundancy: int, mesh):
    """``widths`` resolved: ``(anchor, redundancy)`` or None (brute force)."""
    if isinstance(widths, str):
        if widths != "auto":
            raise ValueError(f"widths must be 'auto', None or (anchor, redundancy), got {widths!r}")
        # The window search runs on one device; a mesh runs the brute-force body.
        return None if mesh is not None else default_widths(n, num_dims, num_redundancy)
    if widths is None:
        return None
    ok = (
        isinstance(widths, (tuple, list))
        and len(widths) == 2
        and all(isinstance(w, int) and not isinstance(w, bool) for w in widths)
    )
    if not ok:
        raise ValueError(f"widths must be 'auto', None or (anchor, redundancy), got {widths!r}")
    if mesh is not None:
        raise ValueError("widths: the window search runs on one device; use 'auto' with a mesh")
    if num_dims != 2 or max(widths) > n or min(widths) < 1:
        raise ValueError(f"widths {tuple(widths)} need num_dims == 2 and 1 <= width <= n = {n}")
    return tuple(widths)


def _run_xla(state, x, num_samples, chunk, num_dims, num_redundancy, metric, exponent, widths,
             mesh, fallback: int = 8):  # fmt: skip
    """The XLA kernel; returns the state and how many samples the windows could not prove."""
    done = int(state.done)
    n = state.scores.shape[0]  # x may come padded for the mesh (zcore_init's n=)
    opts = dict(chunk=chunk, num_redundancy=num_redundancy, metric=metric, exponent=exponent)
    if widths is None or num_samples == 0:
        scores = _run_chunks(
            on_rows(state.scores, mesh, 0.0) if mesh is not None else state.scores,
            on_rows(x, mesh, 0) if mesh is not None else x,
            *(replicate(a, mesh) for a in (state.key, np.int32(done), np.int32(num_samples))),
            *(replicate(a, mesh) for a in (state.lo, state.med, state.hi)),
            mesh=mesh, n=n, num_dims=num_dims, **opts,
        )  # fmt: skip
        if mesh is not None:
            # XLA's CPU client launches each device's part of a program on a pool of as many
            # threads as devices, and a launch blocks while its device has too many programs in
            # flight: a queue of mesh programs can hold every thread while a program's
            # collective waits for a device not yet launched. One program per call, waited for,
            # keeps that queue empty.
            scores = jax.block_until_ready(unpad(scores, n))
        state = state._replace(scores=scores, done=jnp.asarray(done + num_samples, jnp.int32))
        return state, (0, 0)
    xt = x.T.astype(jnp.float32)
    pad = max(widths)
    tables = _zcore_window.build_tables(xt, pad)
    scores, stop, misses = state.scores, done + num_samples, [0, 0]
    wopts = dict(width_anchor=widths[0], width_redundancy=widths[1], pad=pad, fallback=fallback)
    while done < stop:
        size = min(chunk, stop - done)
        args = (state.key, jnp.int32(done), jnp.int32(size), state.lo, state.med, state.hi)
        scores, miss_a, miss_r = _window_chunk(scores, xt, tables, *args, **opts, **wopts)
        misses = [misses[0] + miss_a, misses[1] + miss_r]
        done += size
    state = state._replace(scores=scores, done=jnp.asarray(done, jnp.int32))
    return state, (int(misses[0]), int(misses[1]))


def _run_checked(state, x, num_samples, *, chunk, variant, num_dims, num_redundancy, metric,
                 exponent, mesh, impl, widths):  # fmt: skip
    x = as_float_matrix(x, "x")
    metric, exponent = _options(x, variant, num_dims, num_redundancy, metric, exponent)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be an int >= 1, got {chunk!r}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 0:
        raise ValueError(f"num_samples must be an int >= 0, got {num_samples!r}")
    n = state.scores.shape[0]
    if x.shape[0] != run_rows(x, n, mesh):
        raise ValueError(f"state was made for {n} points but x has shape {tuple(x.shape)}")
    if int(state.done) + num_samples >= 2**31:
        raise ValueError(f"num_samples: samples are numbered in int32, got {num_samples}")
    impl = _resolve_impl(impl, num_dims, x, mesh)
    widths = _check_widths(widths, n, num_dims, num_redundancy, mesh)
    if impl == "native":
        return _run_native(state, x.T, num_samples, num_redundancy, metric, exponent), (0, 0)
    return _run_xla(
        state, x, num_samples, chunk, num_dims, num_redundancy, metric, exponent, widths, mesh
    )


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
    mesh=None,
    impl: str = "auto",
    widths="auto",
) -> ZCoreState:
    """Processes ``num_samples`` more subspace samples, ``chunk`` at a time.

    Sample ``s`` always draws from the same key: resuming a saved state draws exactly the
    samples an uninterrupted run would. Scores are sums of float32 updates, so a different
    ``chunk`` may change their last bits (not the draws). With ``mesh`` (a 1-D
    ``jax.sharding.Mesh``) the rows and scores are sharded over its devices: each sample's
    nearest point is a global first argmin and its neighbours the merge of every device's top
    ``num_redundancy``: the same points as on one device, the scores equal up to float32
    rounding; a state from any device count (or none) continues. A mesh call returns once its
    program has run (see ``_run_xla``).

    ``impl``: ``"auto"`` (default) takes the compiled CPU walk (``native_status()``) when
    ``num_dims == 2``, there is no ``mesh`` and ``x`` lives on the CPU, and the XLA kernel
    otherwise; ``"native"`` or ``"xla"`` force one (``"native"`` raises if it cannot run). Both
    score the same draws and find the same points (exact, ties to the lowest index); the scores
    differ by float rounding only (the CPU walk sums each chunk's changes in float64), so
    continue a run with the ``impl`` it started with when the last bits matter.

    ``widths`` (XLA kernel on one device): ``"auto"`` (``default_widths``), ``None`` (brute force
    over all rows for every sample) or ``(anchor, redundancy)`` window widths. Every choice
    gives the same points; on a mesh only ``"auto"`` or ``None`` (both brute force).
    """
    return _run_checked(
        state, x, num_samples, chunk=chunk, variant=variant, num_dims=num_dims,
        num_redundancy=num_redundancy, metric=metric, exponent=exponent, mesh=mesh, impl=impl,
        widths=widths,
    )[0]  # fmt: skip


def zcore_run_with_stats(state: ZCoreState, x, num_samples: int, **options):
    """``zcore_run`` (same arguments) that also says how the XLA window search did: returns
    ``(state, {"anchor_fallbacks": a, "redundancy_fallbacks": b})``, the numbers of samples
    whose nearest point / neighbours the windows could not prove and brute force redid (0 for
    the brute-force body and the CPU walk)."""
    defaults = dict(
        chunk=256, variant="paper", num_dims=2, num_redundancy=1000, metric=None, exponent=None,
        mesh=None, impl="auto", widths="auto",
    )  # fmt: skip
    unknown = set(options) - set(defaults)
    if unknown:
        raise TypeError(f"zcore_run_with_stats got unexpected options {sorted(unknown)}")
    state, (a, b) = _run_checked(state, x, num_samples, **{**defaults, **options})
    return state, {"anchor_fallbacks": a, "redundancy_fallbacks": b}


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
    mesh=None,
    impl: str = "auto",
) -> ZCoreState:
    """Processes the next ``chunk`` subspace samples (``x`` as ``[n, d]``)."""
    return zcore_run(
        state, x, chunk, chunk=chunk, variant=variant, num_dims=num_dims,
        num_redundancy=num_redundancy, metric=metric, exponent=exponent, mesh=mesh, impl=impl,
    )  # fmt: skip


_draw_jit = jax.jit(draw_samples, static_argnames=("count", "num_dims"))
_DRAW_BLOCK = 16384  # samples per draw call of the CPU path

IMPLS = ("auto", "native", "xla")


def native_status() -> tuple[bool, str]:
    """Whether ZCore's compiled CPU path (``_zcore_cpu.cpp``) is available, and if not, why."""
    from . import _zcore_native

    return _zcore_native.status()


def _resolve_impl(impl: str, num_dims: int, x, mesh) -> str:
    """``"native"`` (the compiled CPU walk) or ``"xla"`` for ``impl`` in ``IMPLS``."""
    if not isinstance(impl, str) or impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "xla":
        return "xla"
    on_cpu = all(dev.platform == "cpu" for dev in x.devices())
    ok, reason = native_status()
    if impl == "native":
        if num_dims != 2:
            raise ValueError(f"impl='native' needs num_dims == 2, got {num_dims}")
        if mesh is not None:
            raise ValueError("impl='native' runs on this host's CPU; it does not take a mesh")
        if not ok:
            raise RuntimeError(f"impl='native' is unavailable: {reason}")
        if x.shape[0] >= 2**31:
            raise ValueError(f"impl='native' indexes points with int32; n = {x.shape[0]}")
        return "native"
    if num_dims == 2 and mesh is None and on_cpu and ok and x.shape[0] < 2**31:
        return "native"
    return "xla"


def _run_native(state, xt, num_samples, num_redundancy, metric, exponent, threads=None):
    from concurrent.futures import ThreadPoolExecutor

    from . import _zcore_native

    done = int(state.done)
    if num_samples == 0:
        return state
    n = xt.shape[1]
    with ThreadPoolExecutor(_zcore_native.default_threads()) as pool:
        tables = _zcore_native.Tables(np.asarray(xt, np.float32), pool)

    def draw(first, count):
        # Fixed-size blocks: one compilation per process whatever the run's size.
        parts = [
            _draw_jit(
                state.key, jnp.int32(first + at), _DRAW_BLOCK, state.lo, state.med, state.hi, 2
            )  # fmt: skip
            for at in range(0, count, _DRAW_BLOCK)
        ]
        dims, anchors = (jnp.concatenate(p)[:count] for p in zip(*parts, strict=True))
        return dims, anchors

    scores = _zcore_native.run(
        np.asarray(state.scores, np.float32), tables, draw, done, num_samples, metric, exponent,
        min(num_redundancy, n - 1), threads=threads,
    )  # fmt: skip
    return state._replace(
        scores=jnp.asarray(scores), done=jnp.asarray(done + num_samples, jnp.int32)
    )


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
    mesh=None,
    impl: str = "auto",
) -> jax.Array:
    """ZCore scores of every row of ``x`` (higher = keep first).

    Args:
      x: Array of shape ``[n, d]``, floating.
      key: a ``jax.random.key``.
      num_samples: subspace samples (the paper uses 1e6).
      variant: ``"paper"`` or ``"goldener"`` (see the module docstring).
      num_dims: dimensions per subspace (default 2).
      num_redundancy: neighbours penalised per sample (default 1000).
      metric: override the variant's distance, ``"l1"`` or ``"l2"``.
      exponent: override the variant's exponent.
      chunk: samples processed at once (``[chunk, n]`` temporaries).
      mesh: optional 1-D ``jax.sharding.Mesh`` (e.g. ``kernels.make_mesh()``): rows are
        sharded over its devices (see :func:`zcore_run`).
      impl: ``"auto"``, ``"native"`` (the compiled CPU walk) or ``"xla"`` (see
        :func:`zcore_run`).

    Returns:
      float32 array of shape ``[n]``.
    """
    if len(getattr(x, "shape", ())) == 2 and x.shape[0] == 0:
        return jnp.zeros((0,), jnp.float32)  # no rows, no scores (the walk needs a first row)
    state = zcore_init(x, key, variant=variant, mesh=mesh)
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
        mesh=mesh,
        impl=impl,
    )
    return state.scores


def zcore_select(scores, k: int) -> jax.Array:
    """Indices of the ``k`` highest scores, highest first, lowest index on ties (int32 ``[k]``)."""
    scores = jnp.asarray(scores)
    if scores.ndim != 1 or not jnp.issubdtype(scores.dtype, jnp.number):
        raise ValueError(f"scores must be numbers [n], got {scores.dtype} {tuple(scores.shape)}")
    if is_concrete(scores) and not bool(jnp.isfinite(scores).all()):
        raise ValueError("scores contain NaN or Inf (top_k would rank NaN first)")
    k = check_k(k, scores.shape[0])
    return jax.lax.top_k(scores, k)[1].astype(jnp.int32)
