"""Every pair of rows within a distance threshold, blocked: never an ``n x m`` matrix.

``pairs_within(x, threshold)`` finds the pairs ``(i, j)``, ``i < j``, of rows of ``x`` at distance
``<= threshold``; with ``y=`` every pair ``(i, j)`` of a row of ``x`` and a row of ``y``. It is
the one "pairs under a threshold" search of the library: near-duplicate groups
(``goldener_jax.curate.near_duplicates``) and the leakage check of a split
(``goldener_jax.curate.leakage_pairs``) both use it, so they share one edge rule.

**Edge rule**: a pair exactly at the threshold is included (``distance <= threshold``), where the
distance is computed in float64 from the input values (below). Only the pairs come back, closest
first, equal distances ordered by ``(i, j)``.

How: tiles of ``block`` rows of ``x`` by 2048 columns of ``y`` (``[block, 2048]`` rank distances
through one matrix product on the device, ``distance.block_rank_distances``), keeping the
candidates within the threshold plus a slack larger than that form's float32 rounding. Without
``y``, the tiles below the diagonal (every column ``<=`` every row) are not computed: half the
products. The candidate mask is packed to 32 bits a word in the distance epilogue and the host
finds its few set bits (``np.flatnonzero`` on the words, then the bits of those words): the
extraction costs no more than the tile's distances, where ``jnp.nonzero(mask, size=cap)`` per
block cost 4-11x them on CPU (``goldener-jax bench pairs`` measures each variant). Each candidate
is then recomputed in float64, elementwise from the original rows, and kept if that distance is
``<= threshold``. The float32 rounding of the search can therefore only cost a few extra
rechecks, never move a pair across the threshold.

**Threshold 0** (Euclidean and squared Euclidean): exact duplicates, in ``O(n)``: for finite
rows, the float64 distance is 0 exactly when the rows are equal (``-0.0`` equals ``+0.0``), so
the rows are hashed on the host (a prefix of each row, then the whole rows whose prefixes
collide), and rows sharing a hash are compared byte for byte (``np.unique`` on the rows as
``np.void``, ``-0.0`` read as ``+0.0``): 1,000,000 x 256 float32 in a few seconds on 2 cores.
The pairs found are then rechecked in float64 like any other. One difference from the blocked
search, float64 inputs only: two float64 rows whose every difference is below ~1e-154 have a
float64 squared distance that underflows to 0; the hash path does not pair them (they are not
equal).

**Cosine at threshold 0**: not a hash of normalised rows, since the edge rule (float64 cosine
rounding to ``>= 1``) also accepts directions up to ~3e-7 apart (d = 256) whose unit vectors
differ in their last bits. Each row's float64 unit vector is projected on 3 fixed random
directions; pairs whose projections all differ by at most a bound on that gap plus the
roundings (``_same_direction_pairs``) are the candidates (a sort on the first projection, then
a window), rechecked in float64 like any other: exactly the blocked search's pairs, in
``O(n log n)`` (1,000,000 x 256 in ~7 s on 2 cores). Zero rows never pair (distance 1).

The float64 distances: Euclidean ``sqrt(sum((u - v)^2))``, squared Euclidean ``sum((u - v)^2)``,
cosine ``1 - clip(u.v / sqrt(|u|^2 |v|^2), -1, 1)`` (a zero row is at cosine distance 1 from every
row). For integer-valued rows whose squared norms stay below ``2^26``, every sum (and the
product ``|u|^2 |v|^2``) is exact in float64: a Euclidean distance is then the correctly rounded
square root of the exact squared distance, and a cosine distance is exact whenever the cosine is a
float64 number (``0``, ``1/2``, ``1``, ...). So rows ``(0, 0)`` and ``(3, 4)`` are at Euclidean
distance exactly ``5`` and rows ``(1, 1, 0)`` and ``(1, 0, 1)`` at cosine distance exactly
``0.5``: each pair counts at that threshold.

Not jit-able: the number of pairs decides the output's size, so the tiles are driven from the host
(one compiled tile kernel per padded input shape, reused for every tile).
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


# Columns of ``y`` per tile, and default rows of ``x`` per block: a [2048, 2048] float32 block is
# 16 MiB, large enough for the matrix product to run near the machine's GEMM rate, small enough that
# the triangle of tiles wastes little of the x-alone search (only the diagonal tiles compute pairs
# twice).
_TILE = 2048
_BITS = 32  # columns per packed word of the candidate mask
_IN_FLIGHT = 16  # tiles dispatched before the first is read back


@partial(jax.jit, static_argnames=("block", "tile", "metric", "upper"))
def _candidate_bits(x, x_aux, y, y_aux, row0, col0, n, m, limit, slack, *, block, tile, metric,
                    upper):  # fmt: skip
    """Candidate mask of the tile ``rows [row0, row0 + block) x cols [col0, col0 + tile)``, packed
    as ``uint32 [block, tile / 32]`` (bit ``b`` of word ``w`` of row ``r``: column
    ``col0 + 32 w + b``).

    Why packed: pulling candidates out on the device (``jnp.nonzero(mask, size=cap)``, a
    sort-like pass) cost 4-11x the tile's distances on CPU, and a boolean mask is a byte per
    pair; the packed mask fuses into the distance epilogue, is 1 bit per pair, and the host finds
    its few non-zero words with one ``np.flatnonzero`` (sort-free). Rows ``>= n`` and columns
    ``>= m`` are the zero padding of the inputs and are masked; ``upper`` keeps ``col > row``.
    """
    rows = jax.lax.dynamic_slice_in_dim(x, row0, block)
    rows_aux = jax.lax.dynamic_slice_in_dim(x_aux, row0, block)
    cols = jax.lax.dynamic_slice_in_dim(y, col0, tile)
    cols_aux = jax.lax.dynamic_slice_in_dim(y_aux, col0, tile)
    d = block_rank_distances(rows, rows_aux, cols, cols_aux, metric)
    if metric == "cosine":
        tol = slack
    else:  # the squared form's rounding scales with the squared norms
        tol = slack * (rows_aux[:, None] + cols_aux[None, :])
    row_ids = row0 + jnp.arange(block)
    col_ids = col0 + jnp.arange(tile)
    mask = (d <= limit + tol) & (row_ids < n)[:, None] & (col_ids < m)[None, :]
    if upper:
        mask &= col_ids[None, :] > row_ids[:, None]
    bits = mask.reshape(block, tile // _BITS, _BITS).astype(jnp.uint32)
    weights = jnp.left_shift(jnp.uint32(1), jnp.arange(_BITS, dtype=jnp.uint32))
    # Distinct powers of two: the sum is the bitwise OR.
    return jnp.sum(bits * weights, axis=-1, dtype=jnp.uint32)


def _unpack(words: np.ndarray, row0: int, col0: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, cols)`` of the set bits of a packed tile, row-major (so ``(i, j)`` ascending)."""
    flat = words.reshape(-1)
    hit = np.flatnonzero(flat)
    if hit.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    per_row = words.shape[1]
    bits = np.unpackbits(flat[hit].astype("<u4").view(np.uint8).reshape(-1, 4), axis=1,
                         bitorder="little")  # fmt: skip
    k, b = np.nonzero(bits)
    word = hit[k]
    return row0 + word // per_row, col0 + (word % per_row) * _BITS + b


def _pad_rows(a: jax.Array, rows: int) -> jax.Array:
    return (
        a
        if a.shape[0] == rows
        else jnp.pad(a, ((0, rows - a.shape[0]),) + ((0, 0),) * (a.ndim - 1))
    )


# Bytes of each row the first hash reads: rows that differ usually differ early, and reading a
# prefix touches a fraction of the memory; only rows whose prefixes collide are hashed whole.
_PREFIX_BYTES = 128


def _row_hashes(a: np.ndarray, width: int | None = None) -> np.ndarray:
    """A ``uint64`` hash of the bytes of each row's first ``width`` values (all by default),
    ``-0.0`` read as ``+0.0`` (equal values, equal hashes). Only a grouping key: equal hashes are
    confirmed on the bytes themselves."""
    zero = np.zeros((), a.dtype)
    cols = a.shape[1] if width is None else min(width, a.shape[1])
    nbytes = cols * a.dtype.itemsize
    lane = next(np.dtype(f"u{b}") for b in (8, 4, 2, 1) if nbytes % b == 0)
    lanes = nbytes // lane.itemsize
    keys = np.random.default_rng(0x9A125).integers(0, 2**63, size=lanes, dtype=np.uint64)
    keys = keys * np.uint64(2) + np.uint64(1)  # odd: each lane's multiply is a bijection
    out = np.empty(a.shape[0], np.uint64)
    step = max(1, _RECHECK_BUDGET // max(1, lanes))
    for s in range(0, a.shape[0], step):
        w = np.ascontiguousarray(a[s : s + step, :cols] + zero).view(lane).astype(np.uint64)
        w ^= w >> np.uint64(29)  # the high bits reach the low ones before the multiply
        w *= keys
        out[s : s + step] = w.sum(axis=1, dtype=np.uint64)
    return out


def _sharing(ha: np.ndarray, hb: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Rows whose hash another row has (``hb`` None), else rows of each side whose hash the
    other side has."""
    if hb is None:
        hs = np.sort(ha)
        return np.flatnonzero(np.isin(ha, hs[1:][hs[1:] == hs[:-1]])), None
    both = np.intersect1d(ha, hb)
    return np.flatnonzero(np.isin(ha, both)), np.flatnonzero(np.isin(hb, both))


def _void_rows(a: np.ndarray) -> np.ndarray:
    """Each row's bytes (``-0.0`` as ``+0.0``) as one ``np.void`` scalar: equal iff equal rows."""
    a = np.ascontiguousarray(a + np.zeros((), a.dtype))
    return a.view(np.dtype((np.void, a.shape[1] * a.dtype.itemsize))).reshape(-1)


def _group_pairs(lab_a, idx_a, lab_b, idx_b, upper: bool, keep: int | None = None):
    """Every ``(idx_a[p], idx_b[q])`` with ``lab_a[p] == lab_b[q]`` (``upper``: ``a`` is ``b`` and
    only ``p < q``, each sorted by ``(label, idx)``). ``keep``: only the pairs of the rows
    ``idx_a`` with the smallest indices that hold the first ``keep`` pairs by ``(i, j)``
    (every pair of those rows), so a large group costs ``O(keep + its size)``, not its pairs."""
    order = np.lexsort((idx_b, lab_b))
    lab_b, idx_b = lab_b[order], idx_b[order]
    if upper:
        lab_a, idx_a = lab_b, idx_b
        lo = np.arange(1, len(lab_b) + 1)
    else:
        lo = np.searchsorted(lab_b, lab_a, "left")
    counts = np.searchsorted(lab_b, lab_a, "right") - lo
    if keep is not None:
        by_row = np.argsort(idx_a, kind="stable")
        cut = int(np.searchsorted(np.cumsum(counts[by_row]), keep, "left")) + 1
        chosen = np.sort(by_row[:cut])
        idx_a, lo, counts = idx_a[chosen], lo[chosen], counts[chosen]
    total = int(counts.sum())
    first = np.repeat(np.cumsum(counts) - counts, counts)
    pos = np.repeat(lo, counts) + np.arange(total) - first
    return np.repeat(idx_a, counts).astype(np.int64), idx_b[pos].astype(np.int64)


def _equal_row_pairs(
    a: np.ndarray, b: np.ndarray | None, keep: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The pairs of equal rows (``i < j`` of ``a`` alone, else ``a[i] == b[j]``): ``O(n)``
    hashing of a prefix of each row, then of the whole rows whose prefixes collide, then a byte
    comparison (``np.unique`` of the rows as ``np.void``) of the rows whose whole hashes collide.
    Equal rows have equal hashes, so no pair is lost; a collision only costs comparisons."""

    def prefix_hashes(rows):
        return None if rows is None else _row_hashes(rows, _PREFIX_BYTES // rows.dtype.itemsize)

    ca, cb = _sharing(prefix_hashes(a), prefix_hashes(b))
    fa, fb = _sharing(_row_hashes(a[ca]), None if b is None else _row_hashes(b[cb]))
    ca = ca[fa]
    if b is None:
        _, labels = np.unique(_void_rows(a[ca]), return_inverse=True)
        labels = labels.reshape(-1)
        return _group_pairs(labels, ca, labels, ca, upper=True, keep=keep)
    cb = cb[fb]
    _, labels = np.unique(np.concatenate([_void_rows(a[ca]), _void_rows(b[cb])]),
                          return_inverse=True)  # fmt: skip
    labels = labels.reshape(-1)
    return _group_pairs(labels[: len(ca)], ca, labels[len(ca) :], cb, upper=False, keep=keep)


_PROJECTIONS = 3  # random directions the cosine threshold-0 search sorts and filters on


def _directions(a: np.ndarray, proj: np.ndarray) -> np.ndarray:
    """``[n, k]`` projections of each row's float64 unit vector on ``proj``; NaN for a zero row
    (at cosine distance 1 from every row: never a pair at threshold 0)."""
    out = np.empty((a.shape[0], proj.shape[1]))
    step = max(1, _RECHECK_BUDGET // max(1, a.shape[1]))
    for s in range(0, a.shape[0], step):
        u = a[s : s + step].astype(np.float64)
        norm = np.sqrt(np.einsum("ij,ij->i", u, u))
        # Project, then divide: the same value as projecting the unit vector, up to roundings
        # the window allows for, without an [n, d] division. (proj.T @ u.T is BLAS's fast
        # layout for a 3-column product; u @ proj is ~15x slower.)
        out[s : s + step] = (proj.T @ u.T).T / np.where(norm > 0, norm, np.nan)[:, None]
    return out


def _window_pairs(pa: np.ndarray, pb: np.ndarray | None, width: float):
    """Candidate pairs whose projections all differ by ``<= width``: sorted on the first
    projection, each row meets the rows within ``width`` of it there (a window, sort-free after
    the sort), the others filter. ``pb`` None: pairs ``i < j`` of ``pa`` alone."""
    va = np.flatnonzero(~np.isnan(pa[:, 0]))
    vb = va if pb is None else np.flatnonzero(~np.isnan(pb[:, 0]))
    pb_ = pa if pb is None else pb
    order = vb[np.argsort(pb_[vb, 0], kind="stable")]
    key = pb_[order, 0]
    if pb is None:
        queries = order
        lo = np.arange(1, len(order) + 1)
    else:
        queries = va
        lo = np.searchsorted(key, pa[va, 0] - width, "left")
    hi = np.searchsorted(key, pa[queries, 0] + width, "right")
    counts = np.maximum(hi - lo, 0)
    rows, cols = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    ends = np.cumsum(counts)
    q0 = 0
    while q0 < len(queries):  # bounded memory: about _RECHECK_BUDGET candidates at a time
        base = ends[q0 - 1] if q0 else 0
        q1 = max(q0 + 1, int(np.searchsorted(ends, base + _RECHECK_BUDGET, "right")))
        c = counts[q0:q1]
        total = int(c.sum())
        first = np.repeat(np.cumsum(c) - c, c)
        r = np.repeat(queries[q0:q1], c)
        o = order[np.repeat(lo[q0:q1], c) + np.arange(total) - first]
        near = np.all(np.abs(pa[r] - pb_[o]) <= width, axis=1)
        r, o = r[near], o[near]
        if pb is None:
            r, o = np.minimum(r, o), np.maximum(r, o)
        rows.append(r.astype(np.int64))
        cols.append(o.astype(np.int64))
        q0 = q1
    return np.concatenate(rows), np.concatenate(cols)


def _same_direction_pairs(a: np.ndarray, b: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Candidates for cosine distance 0 under the edge rule, none missed: a superset of the pairs
    whose float64 cosine (module docstring) rounds to ``>= 1``.

    Why a window, not a hash: that rounding also accepts directions a little apart. With
    ``g = (d + 4) 2^-53 / (1 - (d + 4) 2^-53)`` bounding each float64 sum's relative error, a
    computed cosine ``>= 1`` means a true cosine ``>= 1 - (2 g + 8 2^-53)``, so unit vectors at
    most ``sqrt(2 (2 g + 8 2^-53))`` apart (3.4e-7 at d = 256); their computed projections on a
    unit direction differ by at most that plus ``4 g + 8 2^-53`` of rounding. The window is twice
    that bound; candidates are rechecked in float64 anyway, so the margin only costs rechecks.
    """
    d = a.shape[1]
    unit = 2.0**-53
    g = (d + 4) * unit / (1 - (d + 4) * unit)
    width = 2 * (np.sqrt(2 * (2 * g + 8 * unit)) + 4 * g + 8 * unit)
    proj = np.random.default_rng(0xC05).normal(size=(d, _PROJECTIONS))
    proj /= np.linalg.norm(proj, axis=0)
    return _window_pairs(_directions(a, proj), None if b is None else _directions(b, proj), width)


def _host_float_matrix(a, name: str) -> np.ndarray:
    """``as_float_matrix``'s checks and messages, on the host for a NumPy array (no device copy)."""
    if not isinstance(a, np.ndarray) or a.ndim != 2 or not np.issubdtype(a.dtype, np.floating):
        return np.asarray(as_float_matrix(a, name))  # its checks (and errors) as they are
    step = max(1, _RECHECK_BUDGET // max(1, a.shape[1]))
    for s in range(0, a.shape[0], step):
        bad = np.argwhere(~np.isfinite(a[s : s + step]))
        if bad.size:
            raise ValueError(
                f"{name} contains NaN or Inf (first at row {s + int(bad[0, 0])}, column "
                f"{int(bad[0, 1])}); selection over non-finite vectors is undefined"
            )
    return a


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
        duplicates, found by hashing rows; for the cosine metric, rows of the same direction,
        found by sorting projections: both ``O(n)`` / ``O(n log n)``, see the module docstring).
      y: optional ``[m, d]`` array. ``None``: pairs ``(i, j)`` of rows of ``x`` with ``i < j``;
        given: every pair ``(i, j)`` of row ``i`` of ``x`` and row ``j`` of ``y``.
      metric: ``"euclidean"``, ``"sqeuclidean"`` or ``"cosine"``.
      block_size: rows of ``x`` per block (``on_block`` is called after each), compared with
        2048 columns of ``y`` at a time (``block_size x 2048`` temporary distances); ``None``:
        2048 rows.
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
    hashed = threshold == 0
    # The hash path runs on the host: checking a NumPy input there spares a device copy of it.
    check = _host_float_matrix if hashed else as_float_matrix
    x = check(x, "x")
    upper = y is None
    if not upper:
        y = check(y, "y")
        check_same_width(x, y, "x", "y")
    n = x.shape[0]
    m = n if upper else y.shape[0]
    found_i, found_j, found_d = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0)]
    if n == 0 or m == 0 or (upper and n < 2) or max_pairs == 0:
        return found_i[0], found_j[0], found_d[0]

    host_x = np.asarray(x)
    host_y = host_x if upper else np.asarray(y)
    if hashed:
        # Exact duplicates: at distance 0 exactly when equal (finite inputs), so hash the rows.
        if metric == "cosine":
            rows, cols = _same_direction_pairs(host_x, None if upper else host_y)
        else:  # every pair found is at distance 0: the first max_pairs by (i, j) are kept
            rows, cols = _equal_row_pairs(host_x, None if upper else host_y, max_pairs)
        dist = _exact_distances(host_x[rows], host_y[cols], metric)
        within = dist <= threshold
        i, j, d = _closest_first(rows[within], cols[within], dist[within], max_pairs)
        if on_block is not None:
            on_block(n, len(i))
        return i, j, d
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
    block = auto_block(m, n, block_size) if block_size is not None else min(n, _TILE)
    tile = -(-min(m, _TILE) // _BITS) * _BITS
    col_tiles = -(-m // tile)
    # Zero rows pad both sides to whole blocks / tiles (masked in the kernel): every call has the
    # same shapes, so one compiled tile kernel serves the whole search.
    if upper:
        xs = ys = _pad_rows(xs, max(-(-n // block) * block, col_tiles * tile))
        x_aux = y_aux = _pad_rows(x_aux, xs.shape[0])
    else:
        xs, x_aux = _pad_rows(xs, -(-n // block) * block), _pad_rows(x_aux, -(-n // block) * block)
        ys, y_aux = _pad_rows(ys, col_tiles * tile), _pad_rows(y_aux, col_tiles * tile)
    kept = 0
    for row0 in range(0, n, block):
        # x alone: a tile whose every column is <= every row of the block holds no pair (i < j).
        first = (row0 + 1) // tile if upper else 0
        starts = range(first * tile, m, tile)
        found = []
        for w0 in range(0, len(starts), _IN_FLIGHT):
            # Dispatch a window of tiles before reading any back: the device runs ahead of the
            # host's unpacking, with a bounded number of results outstanding.
            words = [
                (
                    col0,
                    _candidate_bits(
                        xs,
                        x_aux,
                        ys,
                        y_aux,
                        row0,
                        col0,
                        n,
                        m,
                        limit,
                        slack,
                        block=block,
                        tile=tile,
                        metric=rank_metric,
                        upper=upper,
                    ),
                )  # fmt: skip
                for col0 in starts[w0 : w0 + _IN_FLIGHT]
            ]
            found += [_unpack(np.asarray(w), row0, col0) for col0, w in words]
        rows = np.concatenate([f[0] for f in found])
        cols = np.concatenate([f[1] for f in found])
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
            on_block(min(n, row0 + block) - row0, kept)
    i, j, d = (np.concatenate(f) for f in (found_i, found_j, found_d))
    return _closest_first(i, j, d, max_pairs)
