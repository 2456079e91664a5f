"""The leakage check of ``split`` (``leakage_threshold``) on a store read per process.

With a mesh spanning processes no process holds every vector (:class:`~.data.StoreRows`), and
the check must not read them all into memory either. Each process owns the rows of its own
devices (the pool's row-sharded layout) and compares those of each set ``s`` in turn with the
rows of the later sets ``t > s``, streamed from the store in pieces of a fixed number of rows
(at most ``_PIECE_BYTES`` each). Every pair of vectors in different sets is so searched exactly
once, by the process that owns its row of the earlier set. Each search keeps its closest
``budget`` pairs (``kernels.pairs_within``: candidates on the device, rechecked in float64 on
the host), the processes exchange what they found (a few arrays of pairs, not vectors), and
``curate.closest_leaks`` merges them as ``leakage_pairs`` does on one process: the same pairs,
distances and order, bit for bit (the float64 distances depend only on the two rows).

Memory per process: its own rows of one set (read into a page-aligned buffer that the CPU client
uses as the device array without a copy), ``pairs_within``'s centred copy of them, one piece,
and the pairs kept. Reads per process: its own rows once and the later sets' rows once per set,
per search (a second search, with a larger budget, only when samples with several vectors
repeat a pair of samples).
"""

from __future__ import annotations

import jax
import numpy as np

from goldener_jax import kernels as gk
from goldener_jax.curate import closest_leaks, leakage_pairs
from goldener_jax.kernels._checks import check_metric
from goldener_jax.kernels.pairs import check_threshold
from goldener_jax.pipeline.representative import spread_processes

__all__ = ["split_leakage_pairs"]

_PIECE_BYTES = 32 << 20  # rows of a later set compared at once (a piece of the store)


def split_leakage_pairs(data, vec_set, vec_sample, threshold, metric, max_pairs=1000) -> list:
    """``leakage_pairs`` over ``data``'s vectors: in memory when it has them (``data.x_host``),
    else read per process from its store (``data.source``), never every vector on a process."""
    if data.source is None or data.x_host is not None:
        return leakage_pairs(data.x, vec_set, vec_sample, threshold, metric=metric,
                             max_pairs=max_pairs)  # fmt: skip
    return store_leakage_pairs(data.source, vec_set, vec_sample, threshold, metric, max_pairs)


def store_leakage_pairs(
    source, vec_set, vec_sample, threshold, metric, max_pairs=1000, *, gather=None
) -> list:
    """``leakage_pairs(x, vec_set, vec_sample, threshold, metric=metric, max_pairs=max_pairs)``
    where ``x`` is ``source``'s vectors (a :class:`~.data.StoreRows`); every process of the mesh
    calls it with the same arguments and gets the same list (module docstring). ``gather``:
    how the processes' pairs are combined (``_gather_pairs``; tests simulate processes)."""
    check_metric(metric)
    threshold = check_threshold(threshold)
    vec_set, vec_sample = np.asarray(vec_set), np.asarray(vec_sample)
    n = source.num_vectors
    for name, value in (("vec_set", vec_set), ("vec_sample", vec_sample)):
        if value.shape != (n,):
            raise ValueError(f"{name} must have shape [{n}] (one per vector), got {value.shape}")
    names, set_of = np.unique(vec_set, return_inverse=True)
    ranges = source.own_vector_ranges()
    own = np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in ranges] or [[]])
    own = own.astype(np.int64)
    own_of = [own[set_of[own] == s] for s in range(len(names))]
    piece = max(1, _PIECE_BYTES // max(1, source.dim * source.dtype.itemsize))

    def search(budget: int):
        for s in range(len(own_of) - 1):  # one set's own rows held at a time
            if len(own_of[s]) == 0:
                continue
            mine = jax.device_put(source.read_rows(own_of[s]))  # no copy on CPU
            later = np.flatnonzero(set_of > s)
            for a in range(0, later.size, piece):
                cols = later[a : a + piece]
                i, j, d = gk.pairs_within(
                    mine, threshold, y=source.read_rows(cols), metric=metric, max_pairs=budget
                )
                yield own_of[s][i], cols[j], d
            del mine

    return closest_leaks(search, vec_set, vec_sample, max_pairs, gather=gather or _gather_pairs)


def _gather_pairs(ra, rb, d, cut):
    """Every process's ``(rows_a, rows_b, distances, cut_at)``, concatenated in process order
    (the same arrays on every process), by ``representative.spread_processes``. Sent as int32
    words: without ``jax_enable_x64`` a gather would round float64 distances to float32."""
    kinds = (np.int64, np.int64, np.float64, np.float64)
    arrays = zip((ra, rb, d, cut), kinds, strict=True)
    words = np.concatenate(
        [np.asarray([d.size, cut.size], np.int32)]
        + [np.ascontiguousarray(a, t).view(np.int32) for a, t in arrays]
    )
    out: list = [[], [], [], []]
    for part in spread_processes(jax.process_count(), lambda _: words, np.int32):
        size, cuts = int(part[0]), int(part[1])
        ends = np.cumsum([2 * size, 2 * size, 2 * size])
        for i, (chunk, t) in enumerate(zip(np.split(part[2:], ends), kinds, strict=True)):
            out[i].append(chunk.copy().view(t))
        if out[3][-1].size != cuts:  # pragma: no cover - an invariant
            raise RuntimeError("internal error: a process's pairs came back cut")
    return tuple(np.concatenate(v) for v in out)
