"""The leakage check of ``split`` (``leakage_threshold``) on a store read per process.

With a mesh spanning processes no process holds every vector (:class:`~.data.StoreRows`), and
the check must not read them all into memory either. Each process holds the rows of its own
devices (the pool's row-sharded layout) and compares those of each set ``s`` with the rows of
every later set ``t > s``, streamed from the store in pieces of a fixed number of rows (at most
``_PIECE_BYTES`` each). Every pair of vectors in different sets is so searched exactly once, by
the process that owns its row of the earlier set. Each search keeps its closest ``budget`` pairs
(``kernels.pairs_within``: candidates on the device, rechecked in float64 on the host), the
processes exchange what they found (a few arrays of pairs, not vectors), and
``curate.closest_leaks`` merges them as ``leakage_pairs`` does on one process: the same pairs,
distances and order, bit for bit (the float64 distances depend only on the two rows).

Memory per process: its own rows, one piece of another set, and the pairs kept. Reads per
process: its own rows once, and every later set's rows once per search (a second search, with a
larger budget, only when samples with several vectors repeat a pair of samples).
"""

from __future__ import annotations

import numpy as np

from goldener_jax import kernels as gk
from goldener_jax.curate import closest_leaks, leakage_pairs
from goldener_jax.kernels._checks import check_metric
from goldener_jax.kernels.pairs import check_threshold

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
    own_x = source.read_rows(own)
    own_of = [own[set_of[own] == s] for s in range(len(names))]
    own_rows = [own_x[set_of[own] == s] for s in range(len(own_of))]
    del own_x
    piece = max(1, _PIECE_BYTES // max(1, source.dim * source.dtype.itemsize))

    def search(budget: int):
        for t in range(1, len(own_of)):
            later = np.flatnonzero(set_of == t)
            if not any(len(own_of[s]) for s in range(t)):
                continue
            for a in range(0, later.size, piece):
                cols = later[a : a + piece]
                y = source.read_rows(cols)
                for s in range(t):
                    if len(own_of[s]) == 0:
                        continue
                    i, j, d = gk.pairs_within(
                        own_rows[s], threshold, y=y, metric=metric, max_pairs=budget
                    )
                    yield own_of[s][i], cols[j], d
                del y

    return closest_leaks(search, vec_set, vec_sample, max_pairs, gather=gather or _gather_pairs)


def _gather_pairs(ra, rb, d, cut):
    """Every process's ``(rows_a, rows_b, distances, cut_at)``, concatenated in process order
    (the same arrays on every process). Sent as int32 words: without ``jax_enable_x64`` a
    gather would round float64 distances to float32."""
    from jax.experimental import multihost_utils

    sizes = np.asarray(
        multihost_utils.process_allgather(np.asarray([d.size, cut.size], np.int32))
    ).reshape(-1, 2)
    width, cuts = int(sizes[:, 0].max()), int(sizes[:, 1].max())

    def words(a, size, dtype):
        full = np.zeros(size, dtype)
        full[: a.size] = a
        return full.view(np.int32)

    mine = np.concatenate(
        [
            words(ra, width, np.int64),
            words(rb, width, np.int64),
            words(d, width, np.float64),
            words(cut, cuts, np.float64),
        ]
    )
    every = np.asarray(multihost_utils.process_allgather(mine)).reshape(sizes.shape[0], -1)
    parts = np.split(every, np.cumsum([2 * width, 2 * width, 2 * width]), axis=1)
    out = [[], [], [], []]
    for p, (size, ncut) in enumerate(sizes.tolist()):
        out[0].append(parts[0][p].copy().view(np.int64)[:size])
        out[1].append(parts[1][p].copy().view(np.int64)[:size])
        out[2].append(parts[2][p].copy().view(np.float64)[:size])
        out[3].append(parts[3][p].copy().view(np.float64)[:ncut])
    return tuple(np.concatenate(v) for v in out)
