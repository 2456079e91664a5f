"""Every pair of rows within a distance threshold, blocked: never an ``n x m`` matrix.

``pairs_within(x, threshold)`` finds the pairs ``(i, j)``, ``i < j``, of rows of ``x`` at distance
``<= threshold``; with ``y=`` every pair ``(i, j)`` of a row of ``x`` and a row of ``y``. It is
the one "pairs under a threshold" search of the library: near-duplicate groups
(``goldener_jax.curate.near_duplicates``) and the leakage check of a split
(``goldener_jax.curate.leakage_pairs``) both use it, so they share one edge rule.

**Edge rule**: a pair exactly at the threshold is included (``distance <= threshold``), where the
distance is computed in float64 from the input values (below). Only the pairs come back, closest
first, equal distances ordered by ``(i, j)``.

How: a block of rows of ``x`` against every row of ``y`` at a time (``[block, m]`` rank distances
through one matrix product on the device, ``distance.block_rank_distances``), keeping the
candidates within the threshold plus a slack larger than that form's float32 rounding; only the
candidates' indices go to the host. Each candidate is then recomputed in float64, elementwise from
the original rows, and kept if that distance is ``<= threshold``. The float32 rounding of the
search can therefore only cost a few extra rechecks, never move a pair across the threshold.

The float64 distances: Euclidean ``sqrt(sum((u - v)^2))``, squared Euclidean ``sum((u - v)^2)``,
cosine ``1 - clip(u.v / sqrt(|u|^2 |v|^2), -1, 1)`` (a zero row is at cosine distance 1 from every
row). For integer-valued rows whose squared norms stay below ``2^26``, every sum (and the
product ``|u|^2 |v|^2``) is exact in float64: a Euclidean distance is then the correctly rounded
square root of the exact squared distance, and a cosine distance is exact whenever the cosine is a
float64 number (``0``, ``1/2``, ``1``, ...). So rows ``(0, 0)`` and ``(3, 4)`` are at Euclidean
distance exactly ``5`` and rows ``(1, 1, 0)`` and ``(1, 0, 1)`` at cosine distance exactly
``0.5``: each pair counts at that threshold.

Not jit-able: the number of pairs decides the output's size, so the blocks are driven from the host
(one compiled block kernel, reused for every block).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import as_float_matrix, check_block_size, check_metric, check_same_width
from .distance import auto_block, block_rank_distances, row_aux

__all__ = ["pairs_within"]

# Relative slack of the device-side candidate filter. The block form's error is at most about
# 2 d 2^-24 (|a|^2 + |b|^2): the squared norms and the dot product each accumulate d float32
# roundings. The slack is twice that bound and at least 2^-14. Every candidate is rechecked in
# float64, so slack only costs rechecks, while too little slack could lose a pair.
_MIN_SLACK = 2.0**-14
_UNIT_ROUNDOFF = 2.0**-24
# Elements of the float64 recheck's temporary rows (per side) at once.
_RECHECK_BUDGET = 1 << 22


@partial(jax.jit, static_argnames=("block", "cap", "metric", "upper"))
def _candidates(x, x_aux, y, y_aux, start, fresh_from, limit, slack, *, block, cap, metric, upper):
    """``(count, rows [cap], cols [cap])`` of the block's candidate pairs, padded with -1.

    Rows ``start + r`` below ``fresh_from`` were seen by the previous block (the last block is
    shifted back to end at row ``n``) and are masked; ``upper`` keeps only ``col > row``.
    """
    rows = jax.lax.dynamic_slice_in_dim(x, start, block)
    rows_aux = jax.lax.dynamic_slice_in_dim(x_aux, start, block)
    d = block_rank_distances(rows, rows_aux, y, y_aux, metric)
    if metric == "cosine":
        tol = slack
    else:  # the squared form's rounding scales with the squared norms
        tol = slack * (rows_aux[:, None] + y_aux[None, :])
    row_ids = start + jnp.arange(block)
    mask = (d <= limit + tol) & (row_ids >= fresh_from)[:, None]
    if upper:
        mask &= jnp.arange(y.shape[0])[None, :] > row_ids[:, None]
    count = jnp.sum(mask, dtype=jnp.int32)
    r, c = jnp.nonzero(mask, size=cap, fill_value=-1)
    return count, jnp.where(r >= 0, r + start, -1), c


def _exact_distances(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """float64 distances between the rows ``a[p]`` and ``b[p]`` (see the module docstring)."""
    out = np.empty(a.shape[0])
    step = max(1, _RECHECK_BUDGET // max(1, a.shape[1]))
    for s in range(0, a.shape[0], step):
        u = a[s : s + step].astype(np.float64)
        v = b[s : s + step].astype(np.float64)
        if metric == "cosine":
            dot = np.einsum("ij,ij->i", u, v)
            norms = np.einsum("ij,ij->i", u, u) * np.einsum("ij,ij->i", v, v)
            # sqrt of the product, not a product of square roots: one rounding, so an exact
            # cosine (0.5 for (1, 1, 0) and (1, 0, 1)) stays exact, and sqrt(fl(|u|^2 |u|^2))
            # is |u|^2 exactly, so a row and its copy are at distance exactly 0.
            cos = np.clip(dot / np.sqrt(np.where(norms > 0, norms, 1.0)), -1.0, 1.0)
            out[s : s + step] = np.where(norms > 0, 1.0 - cos, 1.0)
        else:
            sq = np.einsum("ij,ij->i", u - v, u - v)
            out[s : s + step] = np.sqrt(sq) if metric == "euclidean" else sq
    return out


def check_threshold(threshold) -> float:
    """``threshold`` as a float; ``TypeError`` / ``ValueError`` unless a finite number ``>= 0``."""
    if isinstance(threshold, bool) or not isinstance(
        threshold, (int, float, np.integer, np.floating)
    ):
        raise TypeError(f"threshold must be a number, got {threshold!r}")
    threshold = float(threshold)
    if not (np.isfinite(threshold) and threshold >= 0):
        raise ValueError(f"threshold must be a finite distance >= 0, got {threshold}")
    return threshold


def _check_max_pairs(max_pairs) -> int | None:
    if max_pairs is None:
        return None
    if isinstance(max_pairs, bool) or not isinstance(max_pairs, (int, np.integer)):
        raise TypeError(f"max_pairs must be an int >= 0 or None, got {max_pairs!r}")
    if max_pairs < 0:
        raise ValueError(f"max_pairs must be >= 0 or None, got {max_pairs}")
    return int(max_pairs)


def _closest_first(i, j, d, keep: int | None):
    order = np.lexsort((j, i, d))
    if keep is not None:
        order = order[:keep]
    return i[order], j[order], d[order]


def pairs_within(
    x,
    threshold: float,
    *,
    y=None,
    metric: str = "euclidean",
    block_size: int | None = None,
    max_pairs: int | None = None,
    on_block: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of rows at distance ``<= threshold`` (a pair exactly at it is included).

    Args:
      x: ``[n, d]`` floating array.
      threshold: largest distance of a pair, in the metric's units, ``>= 0`` (``0``: exact
        duplicates; for the cosine metric, rows of the same direction).
      y: optional ``[m, d]`` array. ``None``: pairs ``(i, j)`` of rows of ``x`` with ``i < j``;
        given: every pair ``(i, j)`` of row ``i`` of ``x`` and row ``j`` of ``y``.
      metric: ``"euclidean"``, ``"sqeuclidean"`` or ``"cosine"``.
      block_size: rows of ``x`` compared with all rows of ``y`` at once (``block_size x m``
        temporary distances); ``None`` picks a block of at most 16M values.
      max_pairs: keep only the ``max_pairs`` closest pairs (ties by ``(i, j)``); memory then stays
        ``O(max_pairs + block)``. ``None``: every pair (``n^2 / 2`` of them if the threshold
        exceeds every distance).
      on_block: called on the host after each block of ``x`` with ``(rows, pairs)``: the number
        of rows of ``x`` that block finished, and the pairs kept so far (e.g. a progress bar's
        ``update``; raising from it stops the search).

    Returns:
      ``(i, j, distance)``: NumPy arrays ``int64 [p]``, ``int64 [p]``, ``float64 [p]``, closest
      first, equal distances by ``(i, j)``. The distances are the float64 values the edge rule
      was applied to.
    """
    check_metric(metric)
    block_size = check_block_size(block_size)
    threshold = check_threshold(threshold)
    max_pairs = _check_max_pairs(max_pairs)
    x = as_float_matrix(x, "x")
    upper = y is None
    if not upper:
        y = as_float_matrix(y, "y")
        check_same_width(x, y, "x", "y")
    n = x.shape[0]
    m = n if upper else y.shape[0]
    found_i, found_j, found_d = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0)]
    if n == 0 or m == 0 or (upper and n < 2) or max_pairs == 0:
        return found_i[0], found_j[0], found_d[0]

    host_x = np.asarray(x)
    host_y = host_x if upper else np.asarray(y)
    dtype = x.dtype if upper else jnp.promote_types(x.dtype, y.dtype)
    if jnp.dtype(dtype).itemsize < 4:
        dtype = jnp.float32  # 16-bit rounding would be far above the slack
    xs = x.astype(dtype)
    ys = xs if upper else y.astype(dtype)
    if metric != "cosine":
        # Distances do not move with the origin; centring keeps the norms, and so the block
        # form's rounding, at the scale of the data's spread.
        centre = jnp.mean(xs.astype(jnp.float32), axis=0).astype(dtype)
        xs = xs - centre
        ys = xs if upper else ys - centre
    aux_metric = "cosine" if metric == "cosine" else "euclidean"
    x_aux = row_aux(xs, aux_metric)
    y_aux = x_aux if upper else row_aux(ys, aux_metric)
    rank_metric = "cosine" if metric == "cosine" else "sqeuclidean"

    def to_rank(distance: float) -> float:
        return distance**2 if metric == "euclidean" else distance

    limit = to_rank(threshold)
    slack = max(_MIN_SLACK, (4 * x.shape[1] + 16) * _UNIT_ROUNDOFF)
    block = auto_block(m, n, block_size)
    cap = 1024
    kept = 0
    for fresh_from in range(0, n, block):
        start = min(fresh_from, n - block)
        while True:
            count, rows, cols = _candidates(
                xs, x_aux, ys, y_aux, start, fresh_from, limit, slack,
                block=block, cap=cap, metric=rank_metric, upper=upper,
            )  # fmt: skip
            count = int(count)
            if count <= cap:
                break
            cap = 1 << int(np.ceil(np.log2(count)))
        rows = np.asarray(rows)[:count].astype(np.int64)
        cols = np.asarray(cols)[:count].astype(np.int64)
        dist = _exact_distances(host_x[rows], host_y[cols], metric)
        within = dist <= threshold
        found_i.append(rows[within])
        found_j.append(cols[within])
        found_d.append(dist[within])
        kept += int(np.count_nonzero(within))
        if max_pairs is not None and kept > 2 * max_pairs:
            # Keep the closest; a later pair must now beat the worst kept one, so tighten the
            # device filter to it (ties at it lose to the kept pairs: they have smaller i).
            i, j, d = _closest_first(*(np.concatenate(f) for f in (found_i, found_j, found_d)),
                                     max_pairs)  # fmt: skip
            found_i, found_j, found_d, kept = [i], [j], [d], len(i)
            limit = min(limit, to_rank(float(d[-1])))
        if on_block is not None:
            on_block(min(n, fresh_from + block) - fresh_from, kept)
    i, j, d = (np.concatenate(f) for f in (found_i, found_j, found_d))
    return _closest_first(i, j, d, max_pairs)
