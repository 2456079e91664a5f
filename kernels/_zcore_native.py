"""ZCore's CPU path: the compiled grid walk of ``_zcore_cpu.cpp``, driven from Python threads.

XLA's CPU backend runs the window search of ``_zcore_window.py`` in fixed-shape batches, and
most of its time goes to gathering candidates that a sample never needed. The compiled walk
builds a grid per subspace (strips of ranks in one dimension, sorted by the other) and walks it
outward from each query until a distance bound proves the answer (see the ``.cpp``), so each
sample costs what its neighbourhood needs. The draws still come from ``zcore.draw_samples``
(JAX), so both paths score the same subspace samples and find the same points.

Here: the per-dimension tables (``Tables``), then per batch of samples the draws, the samples
grouped by subspace and split between threads (ctypes releases the GIL), each thread with its own
scratch and int64 fixed-point accumulator (2^-32). Integer sums are exact, so the scores depend
neither on the threads nor on batches or order; the float32 scores are rounded once per call.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
import types
from concurrent.futures import ThreadPoolExecutor

import numpy as np

_ABI_VERSION = 3  # gjz_abi_version() in the .cpp
_P = ctypes.c_void_p
_I64 = ctypes.c_int64


@functools.cache
def _library():
    """``(ctypes library or None, reason)``."""
    try:
        from . import _zcore_cpu
    except ImportError as e:  # not built: no C++ compiler at install time
        return None, f"the compiled extension goldener_jax.kernels._zcore_cpu is missing ({e})"
    try:
        lib = ctypes.CDLL(_zcore_cpu.__file__)
    except OSError as e:
        return None, f"the compiled extension could not be loaded ({e})"
    try:
        version = lib.gjz_abi_version()
    except AttributeError:
        version = None
    if version != _ABI_VERSION:
        return None, (
            f"the compiled extension is stale (calling convention {version}, this code needs "
            f"{_ABI_VERSION}): reinstall goldener-jax to rebuild it"
        )
    lib.gjz_zcore_samples.restype = _I64
    lib.gjz_zcore_samples.argtypes = [_P, _P, _P, _P, _I64, _P, _P, _P, _I64, ctypes.c_int,
                                      ctypes.c_float, _I64, ctypes.c_int, _P, _P, _P, _P,
                                      _P]  # fmt: skip
    lib.gjz_zcore_search.restype = _I64
    lib.gjz_zcore_search.argtypes = [_P, _P, _P, _P, _I64, _P, _P, _I64, ctypes.c_int, _I64,
                                     ctypes.c_int, _P, _P, _P, _P, _P]  # fmt: skip
    return lib, "built"


def status() -> tuple[bool, str]:
    """Whether the compiled CPU path is available, and why not."""
    lib, reason = _library()
    return lib is not None, reason


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _ptr(a: np.ndarray):
    return a.ctypes.data_as(_P)


_MAX_STRIPS = 64  # kMaxStrips in the .cpp


class Tables:
    """Per dimension: the points in value order, the sorted values, and each point's
    strip (its rank in that order ``>> shift``: at most 64 strips of ``2 ** shift`` ranks, the
    grid the walk searches). ``min_shift`` forces thinner strips' floor (tests use it to get many
    strips out of few points)."""

    def __init__(self, xt: np.ndarray, pool: ThreadPoolExecutor | None = None, min_shift: int = 0):
        self.xt = np.ascontiguousarray(xt, np.float32)
        d, n = self.xt.shape
        if n >= 2**31:
            raise ValueError(f"the CPU path indexes points with int32; n = {n} is too large")
        shift = max(0, int(min_shift))
        while ((n - 1) >> shift) + 1 > _MAX_STRIPS:
            shift += 1
        self.shift = shift
        self.order = np.empty((d, n), np.int32)
        self.sorted = np.empty((d, n), np.float32)
        self.strip = np.empty((d, n), np.uint8)
        strips = (np.arange(n, dtype=np.int64) >> shift).astype(np.uint8)

        def rows(lo, hi):  # numpy's sorts release the GIL
            # Any order among equal values will do: the walk orders ties by index itself.
            o = np.argsort(self.xt[lo:hi], axis=1)
            self.order[lo:hi] = o
            self.sorted[lo:hi] = np.take_along_axis(self.xt[lo:hi], o, axis=1)
            np.put_along_axis(self.strip[lo:hi], o, np.broadcast_to(strips, o.shape), axis=1)

        step = max(1, -(-d // 8))
        blocks = [(lo, min(d, lo + step)) for lo in range(0, d, step)]
        if pool is None:
            for b in blocks:
                rows(*b)
        else:
            list(pool.map(lambda b: rows(*b), blocks))

    @property
    def n(self) -> int:
        return self.xt.shape[1]


def _grid_buffers(n: int):
    """The grid of one subspace (the .cpp's Grid): (a, b) pairs and point indices."""
    return np.empty(2 * n, np.float32), np.empty(n, np.int32)


class _Scratch:
    """One thread's buffers, made on its first call (not in the thread that creates this, which
    only waits); ``accs`` collects every thread's fixed-point accumulator."""

    def __init__(self, n: int, r: int):
        self.n, self.r = n, r
        self.accs: list[np.ndarray] = []
        self._lock = threading.Lock()
        self._local = threading.local()

    def get(self):
        mine = getattr(self._local, "buffers", None)
        if mine is None:
            ab, ids = _grid_buffers(self.n)
            mine = types.SimpleNamespace(
                keys=np.empty(2 * self.n, np.uint64), weights=np.empty(max(self.r, 1), np.float32),
                ab=ab, id=ids, acc=np.zeros(self.n, np.int64),
            )  # fmt: skip
            with self._lock:
                self.accs.append(mine.acc)
            self._local.buffers = mine
        return mine


_ONE = 2.0**32  # fixed point: score changes in units of 2^-32


def run(
    scores: np.ndarray,
    tables: Tables,
    draw,
    start: int,
    num_samples: int,
    metric: str,
    exponent: float,
    r: int,
    threads: int | None = None,
    batch: int = 1 << 20,
) -> np.ndarray:
    """Adds samples ``start .. start + num_samples - 1`` to ``scores`` (float32 ``[n]``) and
    returns the new scores.

    ``draw(first, count)`` gives the ``(dims, anchors)`` of ``count`` consecutive samples (JAX
    arrays: the next batch's draw is dispatched before this batch is walked, so they overlap).
    Within a batch the samples are walked grouped by subspace (a pair's columns stay in cache),
    split between threads; every change is summed exactly in fixed point (int64, 2^-32), and the
    float32 scores are rounded once, at the end of the call. So the scores depend neither on
    the threads nor on ``batch``; splitting a run into several calls rounds once per call.
    """
    lib, reason = _library()
    if lib is None:
        raise RuntimeError(f"ZCore's CPU path is unavailable: {reason}")
    n, d = tables.n, tables.xt.shape[0]
    threads = default_threads() if threads is None else int(threads)
    scratch = _Scratch(n, r)
    metric_code = 0 if metric == "l1" else 1
    stop = start + num_samples
    firsts = list(range(start, stop, batch))

    def walk(dims, anchors, samples):
        s = scratch.get()
        code = lib.gjz_zcore_samples(
            _ptr(tables.xt), _ptr(tables.order), _ptr(tables.sorted), _ptr(tables.strip), n,
            _ptr(dims), _ptr(anchors), _ptr(samples), samples.shape[0], metric_code, exponent, r,
            tables.shift, _ptr(s.keys), _ptr(s.weights), _ptr(s.ab), _ptr(s.id), _ptr(s.acc),
        )  # fmt: skip
        if code < 0:
            raise ValueError("the CPU ZCore kernel rejected its arguments")

    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending = draw(firsts[0], min(batch, stop - firsts[0])) if firsts else None
        for b, first in enumerate(firsts):
            count = min(batch, stop - first)
            dims, anchors = pending
            if b + 1 < len(firsts):
                nxt = firsts[b + 1]
                pending = draw(nxt, min(batch, stop - nxt))
            dims = np.ascontiguousarray(np.asarray(dims)[:count], np.int32)
            anchors = np.ascontiguousarray(np.asarray(anchors)[:count], np.float32)
            # Grouped by subspace, those sharing their second dimension together: a grid's build
            # reads that dimension's column at random, and it stays in cache.
            pair = np.maximum(dims[:, 0], dims[:, 1]).astype(np.int64) * d + np.minimum(
                dims[:, 0], dims[:, 1]
            )
            by_pair = np.argsort(pair, kind="stable").astype(np.int64)
            parts = np.array_split(by_pair, max(1, min(count, 8 * threads)))
            list(pool.map(functools.partial(walk, dims, anchors), parts))
    total = np.zeros(n, np.int64)
    for acc in scratch.accs:
        total += acc
    return (scores.astype(np.float64) + total / _ONE).astype(np.float32)


def search(tables: Tables, dims, anchors, metric: str, r: int):
    """Each sample's nearest point and ``r`` nearest neighbours (nearest first, lowest index on
    ties), from the compiled walk: ``(int32 [s], int32 [s, r])``."""
    lib, reason = _library()
    if lib is None:
        raise RuntimeError(f"ZCore's CPU path is unavailable: {reason}")
    dims = np.ascontiguousarray(dims, np.int32)
    anchors = np.ascontiguousarray(anchors, np.float32)
    s = dims.shape[0]
    n = tables.n
    keys = np.empty(2 * n, np.uint64)
    ab, ids = _grid_buffers(n)
    nearest = np.empty(s, np.int32)
    neighbours = np.empty((s, r), np.int32)
    code = lib.gjz_zcore_search(
        _ptr(tables.xt), _ptr(tables.order), _ptr(tables.sorted), _ptr(tables.strip), n,
        _ptr(dims), _ptr(anchors), s, 0 if metric == "l1" else 1, r, tables.shift, _ptr(keys),
        _ptr(ab), _ptr(ids), _ptr(nearest), _ptr(neighbours),
    )  # fmt: skip
    if code < 0:
        raise ValueError("the CPU ZCore kernel rejected its arguments")
    return nearest, neighbours
