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
roundings (``pairs_hash.same_direction_pairs``) are the candidates (a sort on the first
projection, then a window), rechecked in float64 like any other: exactly the blocked search's
pairs, in ``O(n log n)`` (1,000,000 x 256 in ~7 s on 2 cores). Zero rows never pair (distance 1).

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

from . import collective
from ._checks import as_float_matrix, check_block_size, check_metric, check_same_width
from .distance import auto_block, block_rank_distances, column_sums, row_aux
from .pairs_hash import RECHECK_BUDGET, equal_row_pairs, same_direction_pairs
from .sharding import ALL, ROWS, mesh_axis, on_mesh, shard_rows

__all__ = ["pairs_within"]

# Relative slack of the device-side candidate filter. The block form's error is at most about
# 2 d 2^-24 (|a|^2 + |b|^2): the squared norms and the dot product each accumulate d float32
# roundings. The slack is twice that bound and at least 2^-14. Every candidate is rechecked in
# float64, so slack only costs rechecks, while too little slack could lose a pair.
_MIN_SLACK = 2.0**-14
_UNIT_ROUNDOFF = 2.0**-24


# Columns of ``y`` per tile, and default rows of ``x`` per block: a [2048, 2048] float32 block is
# 16 MiB, large enough for the matrix product to run near the machine's GEMM rate, small enough that
# the triangle of tiles wastes little of the x-alone search (only the diagonal tiles compute pairs
# twice).
_TILE = 2048
_SLICE_VALUES = 1 << 23  # at most this many values in a block or tile slice (32 MB of float32)
_BITS = 32  # columns per packed word of the candidate mask
_IN_FLIGHT = 16  # tiles dispatched before the first is read back


def _tile_words(rows, rows_aux, row_ids, cols, cols_aux, col_ids, n, m, limit, slack, *, metric,
                upper):  # fmt: skip
    """Candidate mask of rows ``row_ids`` x columns ``col_ids``, packed as ``uint32 [block,
    tile / 32]`` (bit ``b`` of word ``w`` of row ``r``: column ``col_ids[32 w + b]``).

    Why packed: pulling candidates out on the device (``jnp.nonzero(mask, size=cap)``, a
    sort-like pass) cost 4-11x the tile's distances on CPU, and a boolean mask is a byte per
    pair; the packed mask fuses into the distance epilogue, is 1 bit per pair, and the host finds
    its few non-zero words with one ``np.flatnonzero`` (sort-free). Rows ``>= n`` and columns
    ``>= m`` are the zero padding of the inputs and are masked; ``upper`` keeps ``col > row``.
    The one body of the tile, for one device and for a mesh.
    """
    d = block_rank_distances(rows, rows_aux, cols, cols_aux, metric)
    if metric == "cosine":
        tol = slack
    else:  # the squared form's rounding scales with the squared norms
        tol = slack * (rows_aux[:, None] + cols_aux[None, :])
    mask = (d <= limit + tol) & (row_ids < n)[:, None] & (col_ids < m)[None, :]
    if upper:
        mask &= col_ids[None, :] > row_ids[:, None]
    block, tile = mask.shape
    bits = mask.reshape(block, tile // _BITS, _BITS).astype(jnp.uint32)
    weights = jnp.left_shift(jnp.uint32(1), jnp.arange(_BITS, dtype=jnp.uint32))
    # Distinct powers of two: the sum is the bitwise OR.
    return jnp.sum(bits * weights, axis=-1, dtype=jnp.uint32)


@partial(jax.jit, static_argnames=("block", "tile", "metric", "upper"))
def _candidate_bits(x, x_aux, y, y_aux, row0, col0, n, m, limit, slack, *, block, tile, metric,
                    upper):  # fmt: skip
    """:func:`_tile_words` of rows ``[row0, row0 + block)`` x columns ``[col0, col0 + tile)``."""
    rows = jax.lax.dynamic_slice_in_dim(x, row0, block)
    rows_aux = jax.lax.dynamic_slice_in_dim(x_aux, row0, block)
    cols = jax.lax.dynamic_slice_in_dim(y, col0, tile)
    cols_aux = jax.lax.dynamic_slice_in_dim(y_aux, col0, tile)
    row_ids, col_ids = row0 + jnp.arange(block), col0 + jnp.arange(tile)
    return _tile_words(rows, rows_aux, row_ids, cols, cols_aux, col_ids, n, m, limit, slack,
                       metric=metric, upper=upper)  # fmt: skip


def _mesh_tile_body(x, x_aux, cols, cols_aux, row0, col0, n, m, limit, slack, *, block, metric,
                    upper, axis):  # fmt: skip
    """On every device, its rows ``[row0, row0 + block)`` of its own shard against one column
    tile (the same on every device): the rows of a step are spread over the devices."""
    local = x.shape[0]
    rows = jax.lax.dynamic_slice_in_dim(x, row0, block)
    rows_aux = jax.lax.dynamic_slice_in_dim(x_aux, row0, block)
    row_ids = collective.axis_index(axis) * local + row0 + jnp.arange(block)
    col_ids = col0 + jnp.arange(cols.shape[0])
    return _tile_words(rows, rows_aux, row_ids, cols, cols_aux, col_ids, n, m, limit, slack,
                       metric=metric, upper=upper)  # fmt: skip


@partial(jax.jit, static_argnames=("mesh", "block", "metric", "upper"))
def _mesh_candidate_bits(x, x_aux, cols, cols_aux, row0, col0, n, m, limit, slack, *, mesh, block,
                         metric, upper):  # fmt: skip
    body = partial(_mesh_tile_body, block=block, metric=metric, upper=upper)
    specs = (ROWS, ROWS, ALL, ALL, ALL, ALL, ALL, ALL, ALL, ALL)
    return on_mesh(body, mesh, specs, ROWS)(x, x_aux, cols, cols_aux, row0, col0, n, m, limit,
                                            slack)  # fmt: skip


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


@partial(jax.jit, static_argnames=("rows", "dtype"))
def _shifted(a, centre, *, rows: int, dtype):
    """``a`` cast to ``dtype``, less ``centre`` (``None``: as it is), with zero rows up to
    ``rows``: one program, one new array."""
    a = a.astype(dtype)
    if centre is not None:
        a = a - centre
    return jnp.pad(a, ((0, rows - a.shape[0]), (0, 0)))


def _pad_rows(a: jax.Array, rows: int) -> jax.Array:
    return (
        a
        if a.shape[0] == rows
        else jnp.pad(a, ((0, rows - a.shape[0]),) + ((0, 0),) * (a.ndim - 1))
    )


def _host_float_matrix(a, name: str) -> np.ndarray:
    """``as_float_matrix``'s checks and messages, on the host for a NumPy array (no device copy)."""
    if not isinstance(a, np.ndarray) or a.ndim != 2 or not np.issubdtype(a.dtype, np.floating):
        return np.asarray(as_float_matrix(a, name))  # its checks (and errors) as they are
    step = max(1, RECHECK_BUDGET // max(1, a.shape[1]))
    for s in range(0, a.shape[0], step):
        bad = np.argwhere(~np.isfinite(a[s : s + step]))
        if bad.size:
            raise ValueError(
                f"{name} contains NaN or Inf (first at row {s + int(bad[0, 0])}, column "
                f"{int(bad[0, 1])}); selection over non-finite vectors is undefined"
            )
    return a


def _exact_distances(a: np.ndarray, rows, b: np.ndarray, cols, metric: str) -> np.ndarray:
    """float64 distances between the rows ``a[rows[p]]`` and ``b[cols[p]]`` (see the module
    docstring), gathered ``RECHECK_BUDGET`` values at a time: all candidates' rows at once were
    gigabytes for rows of 131,072 values."""
    out = np.empty(len(rows))
    step = max(1, RECHECK_BUDGET // max(1, a.shape[1]))
    for s in range(0, len(rows), step):
        u = a[rows[s : s + step]].astype(np.float64)
        v = b[cols[s : s + step]].astype(np.float64)
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


def _gather_words(calls, unpack):
    """Dispatches a window of tile calls before reading any back (the device runs ahead of the
    host's unpacking, with a bounded number of results outstanding); ``(rows, cols)``."""
    found = []
    for w0 in range(0, len(calls), _IN_FLIGHT):
        words = [(key, call()) for key, call in calls[w0 : w0 + _IN_FLIGHT]]
        found += [unpack(np.asarray(w), key) for key, w in words]
    if not found:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found])


def _device_steps(xs, x_aux, ys, y_aux, n, m, block, tile, col_tiles, slack, state, metric,
                  upper):  # fmt: skip
    """One device: per block of rows, ``(rows done, candidate rows, candidate cols)``."""
    # Zero rows pad both sides to whole blocks / tiles (masked in the kernel): every call has the
    # same shapes, so one compiled tile kernel serves the whole search.
    if upper:
        xs = ys = _pad_rows(xs, max(-(-n // block) * block, col_tiles * tile))
        x_aux = y_aux = _pad_rows(x_aux, xs.shape[0])
    else:
        xs, x_aux = _pad_rows(xs, -(-n // block) * block), _pad_rows(x_aux, -(-n // block) * block)
        ys, y_aux = _pad_rows(ys, col_tiles * tile), _pad_rows(y_aux, col_tiles * tile)
    for row0 in range(0, n, block):
        # x alone: a tile whose every column is <= every row of the block holds no pair (i < j).
        first = (row0 + 1) // tile if upper else 0
        calls = [
            (
                col0,
                partial(
                    _candidate_bits,
                    xs,
                    x_aux,
                    ys,
                    y_aux,
                    row0,
                    col0,
                    n,
                    m,
                    state["limit"],
                    slack,
                    block=block,
                    tile=tile,
                    metric=metric,
                    upper=upper,
                ),
            )  # fmt: skip
            for col0 in range(first * tile, m, tile)
        ]
        rows, cols = _gather_words(calls, lambda w, col0, r=row0: _unpack(w, r, col0))
        yield min(n, row0 + block) - row0, rows, cols


def _mesh_steps(xs, x_aux, ys, y_aux, n, m, block_size, tile, col_tiles, slack, state, metric,
                upper, mesh):  # fmt: skip
    """A mesh: each device holds ``local`` consecutive rows; a step is one block of every
    device's rows against every column tile (the tile replicated, the rows never moved)."""
    _, p = mesh_axis(mesh)
    if not all(d.process_index == jax.process_index() for d in mesh.devices.flat):
        raise ValueError(
            "pairs_within(mesh=) needs a mesh of this process's devices: the float64 recheck "
            "reads both rows of a candidate on the host"
        )
    local = -(-n // p)
    block = auto_block(m, local, block_size)
    local = -(-local // block) * block
    xs_sharded = shard_rows(_pad_rows(xs, p * local), mesh)
    aux_sharded = shard_rows(_pad_rows(x_aux, p * local), mesh)
    ys, y_aux = _pad_rows(ys, col_tiles * tile), _pad_rows(y_aux, col_tiles * tile)
    tiles = [(ys[c : c + tile], y_aux[c : c + tile]) for c in range(0, m, tile)]
    for row0 in range(0, local, block):
        starts = [q * local + row0 for q in range(p)]
        real = sum(max(0, min(n, s + block) - s) for s in starts if s < n)
        # x alone: a column tile at or below every row of the step holds no pair (i < j).
        first = (row0 + 1) // tile if upper else 0
        calls = [
            (
                t * tile,
                partial(
                    _mesh_candidate_bits,
                    xs_sharded,
                    aux_sharded,
                    *tiles[t],
                    row0,
                    t * tile,
                    n,
                    m,
                    state["limit"],
                    slack,
                    mesh=mesh,
                    block=block,
                    metric=metric,
                    upper=upper,
                ),
            )  # fmt: skip
            for t in range(first, col_tiles)
        ]

        def unpack(words, col0, starts=starts):
            parts = [_unpack(words[q * block :][:block], s0, col0) for q, s0 in enumerate(starts)]
            return np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts])

        rows, cols = _gather_words(calls, unpack)
        yield real, rows, cols


def pairs_within(
    x,
    threshold: float,
    *,
    y=None,
    metric: str = "euclidean",
    block_size: int | None = None,
    max_pairs: int | None = None,
    on_block: Callable[[int, int], None] | None = None,
    mesh=None,
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
      mesh: a 1-D mesh of this process's devices: the rows of ``x`` are sharded over them and
        each step compares one block of every device's rows with a column tile sent to all;
        the same pairs as one device (the candidates of the float32 filter are rechecked in
        float64 on the host either way). Threshold 0 ignores it (the host hash path).

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
            rows, cols = same_direction_pairs(host_x, None if upper else host_y)
        else:  # every pair found is at distance 0: the first max_pairs by (i, j) are kept
            rows, cols = equal_row_pairs(host_x, None if upper else host_y, max_pairs)
        dist = _exact_distances(host_x, rows, host_y, cols, metric)
        within = dist <= threshold
        i, j, d = _closest_first(rows[within], cols[within], dist[within], max_pairs)
        if on_block is not None:
            on_block(n, len(i))
        return i, j, d
    dtype = x.dtype if upper else jnp.promote_types(x.dtype, y.dtype)
    if jnp.dtype(dtype).itemsize < 4:
        dtype = jnp.float32  # 16-bit rounding would be far above the slack
    centre = None
    if metric != "cosine":
        # Distances do not move with the origin; centring keeps the norms, and so the block
        # form's rounding, at the scale of the data's spread.
        centre = (column_sums(x, jnp.float32) / n).astype(dtype)
    aux_metric = "cosine" if metric == "cosine" else "euclidean"
    rank_metric = "cosine" if metric == "cosine" else "sqeuclidean"

    def to_rank(distance: float) -> float:
        return distance**2 if metric == "euclidean" else distance

    limit = to_rank(threshold)
    slack = max(_MIN_SLACK, (4 * x.shape[1] + 16) * _UNIT_ROUNDOFF)
    # A block of rows and a tile of columns are sliced (copied) in the tile program: at most
    # _SLICE_VALUES values each (2048 rows of 131,072 floats were a 1 GB slice).
    wide = max(1, _SLICE_VALUES // x.shape[1])
    tile = -(-min(m, _TILE, max(_BITS, wide)) // _BITS) * _BITS
    col_tiles = -(-m // tile)
    state = {"limit": limit}
    block = min(_TILE, wide) if block_size is None else block_size
    rows_x, rows_y = n, m  # a mesh pads to its own layout
    if mesh is None:
        block = auto_block(m, n, block)
        rows_x, rows_y = -(-n // block) * block, col_tiles * tile  # whole blocks and tiles
        rows_x = max(rows_x, rows_y) if upper else rows_x
    # cast, centred and padded in one program: one copy of each input
    xs = _shifted(x, centre, rows=rows_x, dtype=dtype)
    ys = xs if upper else _shifted(y, centre, rows=rows_y, dtype=dtype)
    x_aux = row_aux(xs, aux_metric, blocked=True)
    y_aux = x_aux if upper else row_aux(ys, aux_metric, blocked=True)
    if mesh is None:
        steps = _device_steps(xs, x_aux, ys, y_aux, n, m, block, tile, col_tiles, slack, state,
                              rank_metric, upper)  # fmt: skip
    else:
        steps = _mesh_steps(xs, x_aux, ys, y_aux, n, m, block, tile, col_tiles, slack, state,
                            rank_metric, upper, mesh)  # fmt: skip
    kept = 0
    for done, rows, cols in steps:
        dist = _exact_distances(host_x, rows, host_y, cols, metric)
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
            state["limit"] = min(state["limit"], to_rank(float(d[-1])))
        if on_block is not None:
            on_block(done, kept)
    i, j, d = (np.concatenate(f) for f in (found_i, found_j, found_d))
    return _closest_first(i, j, d, max_pairs)
