"""Exact k nearest neighbours over many rows, in query chunks with a progress bar.

Shared by curation (``label_issues``) and refining (``propose_labels``, ``outliers``): the kernel
``gk.knn`` does the blocked search; this module only cuts the queries into chunks so that a bar
can follow a long search, and returns float64 distances with int64 indices.
"""

from __future__ import annotations

import numpy as np

from goldener_jax import kernels as gk

__all__ = ["nearest_others", "nearest_to"]


def nearest_to(x, k, queries, *, metric, block_size=None, mesh=None, progress=True, desc="kNN",
               chunk=1 << 14):  # fmt: skip
    """The ``k`` nearest rows of ``x`` to each query: float64 ``[m, k]``, int64 ``[m, k]``."""
    from tqdm.auto import tqdm

    m = queries.shape[0]
    dist, idx = np.empty((m, k)), np.empty((m, k), np.int64)
    with tqdm(total=m, desc=desc, unit="row", disable=not progress or m <= chunk) as bar:
        for start in range(0, m, chunk):
            stop = min(m, start + chunk)
            d, i = gk.knn(
                x, k, queries=queries[start:stop], metric=metric, block_size=block_size, mesh=mesh
            )
            dist[start:stop], idx[start:stop] = np.asarray(d, np.float64), np.asarray(i)
            bar.update(stop - start)
    return dist, idx


def nearest_others(x, k, *, metric, block_size=None, mesh=None, progress=True, desc="kNN",
                   chunk=1 << 14):  # fmt: skip
    """Each row's ``k`` nearest *other* rows (a duplicate still counts): float64, int64.

    Up to ``chunk`` rows, one ``knn`` call. Above, chunks of queries, each asking for ``k + 1``
    neighbours and dropping the row's own entry (or, when ``k + 1`` of its duplicates at lower
    indices fill the list, the last one): the ``k`` nearest others, in the same order.
    """
    n = x.shape[0]
    if n <= chunk:
        d, i = gk.knn(x, k, metric=metric, block_size=block_size, mesh=mesh)
        return np.asarray(d, np.float64), np.asarray(i, np.int64)
    from tqdm.auto import tqdm

    dist, idx = np.empty((n, k)), np.empty((n, k), np.int64)
    with tqdm(total=n, desc=desc, unit="row", disable=not progress) as bar:
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            d, i = gk.knn(
                x, k + 1, queries=x[start:stop], metric=metric, block_size=block_size, mesh=mesh
            )
            d, i = np.asarray(d, np.float64), np.asarray(i)
            own = i == np.arange(start, stop)[:, None]
            own[~own.any(axis=1), -1] = True
            dist[start:stop] = d[~own].reshape(stop - start, k)
            idx[start:stop] = i[~own].reshape(stop - start, k)
            bar.update(stop - start)
    return dist, idx
