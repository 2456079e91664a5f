"""ProbCover's ball graph (one device, concrete ``x``): the radius graph as CSR rows, and the
greedy maximum coverage over it on the host (``kernels.probcover`` keeps the state and the cache).

The graph is built once from ``tile x tile`` blocks of the upper triangle of the pair matrix
only (half the ``O(n^2 d)`` products; a pair's mask serves both rows), packed 32 pairs a word on
the device and read into per-row neighbour lists (CSR) on the host, in row-major order (no sort).
The greedy keeps degrees by incremental updates: after a pick ``c``, each neighbour of each point
``c`` newly covers loses one (each edge touched at most once a run).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from .distance import block_rank_distances, row_aux

__all__ = ["MAX_EDGES", "ball_graph", "graph_greedy", "neighbours_of"]

# A tile of the pair matrix, [2048, 2048] float32, ran fastest on CPU. Default most ball entries
# (directed, self included) of the graph: 512 MiB of int32 columns.
_TILE, MAX_EDGES = 2048, 1 << 27


def _tile_size(n: int) -> int:
    # A multiple of 32: the graph packs 32 columns a word.
    return min(_TILE, -(-n // 32) * 32)


def _tile_mask(xp, aux, radius, i0, j0, *, n, tile):
    """Ball mask of the tile (rows ``i0 + [0, tile)``, columns ``j0 + ...``), upper triangle
    (column >= row) of real rows only, and its strictly upper part (mirrored to the columns)."""
    a = jax.lax.dynamic_slice_in_dim(xp, i0, tile)
    b = jax.lax.dynamic_slice_in_dim(xp, j0, tile)
    sq = block_rank_distances(
        a, jax.lax.dynamic_slice_in_dim(aux, i0, tile), b,
        jax.lax.dynamic_slice_in_dim(aux, j0, tile), "euclidean",
    )  # fmt: skip
    gi = (i0 + jnp.arange(tile, dtype=jnp.int32))[:, None]
    gj = (j0 + jnp.arange(tile, dtype=jnp.int32))[None, :]
    upper = (sq <= radius**2) & (gj >= gi) & (gj < n)
    return upper, upper & (gj > gi)


def _pack(mask, axis):
    """bool ``[r, c]`` -> uint32 words of 32 entries along ``axis`` (entry ``32 w + b`` at bit
    ``b`` of word ``w``): ``[r, c / 32]`` along the columns, ``[r / 32, c]`` along the rows."""
    r, c = mask.shape
    shape, shift = ((r, c // 32, 32), (1, 1, 32)) if axis == 1 else ((r // 32, 32, c), (1, 32, 1))
    bits = mask.reshape(shape).astype(jnp.uint32) << jnp.arange(32, dtype=jnp.uint32).reshape(shift)
    return jnp.sum(bits, axis=axis + 1, dtype=jnp.uint32)  # distinct bits: the sum is their OR


@partial(jax.jit, static_argnames=("n", "tile"))
def _tile_words(xp, aux, radius, i0, j0, *, n, tile):
    # The mirrored part packed down the rows, not transposed first: a transpose on the device
    # cost 3x the packing; the host transposes the small word array instead.
    upper, strict = _tile_mask(xp, aux, radius, i0, j0, n=n, tile=tile)
    return _pack(upper, 1), _pack(strict, 0)


def _tiles(x, radius, n: int):
    """Per row block ``i``: ``(tile, nb, [(j, w, wt) for j >= i])``, ``w`` the row-packed upper
    mask of tile ``(i, j)`` ``[tile, tile / 32]``, ``wt`` its strictly upper part packed down the
    rows ``[tile / 32, tile]`` (the mirrored pairs); a block's tiles are dispatched at once."""
    nb = -(-n // (tile := _tile_size(n)))
    xp = jnp.pad(x, ((0, nb * tile - n), (0, 0)))
    aux, r = row_aux(xp, "euclidean"), jnp.asarray(radius, jnp.float32)
    for i in range(nb):
        outs = [_tile_words(xp, aux, r, i * tile, j * tile, n=n, tile=tile) for j in range(i, nb)]
        yield tile, nb, [(j, np.asarray(w), np.asarray(wt)) for j, (w, wt) in enumerate(outs, i)]


def ball_graph(x, radius, n: int, max_edges: int):
    """The radius graph as CSR ``(indptr int64 [n + 1], cols int32 [E])`` (rows ascending, self
    included), ``None`` past ``max_edges`` entries. Block ``i``'s full packed rows (its tiles'
    rows, then the mirrored parts of tiles ``(i' <= i, i)``, kept sparse until then) read in
    row-major order are its CSR rows: no sort needed."""
    pending: dict[int, list] = {}
    counts, cols, total = [], [], 0
    for tile, nb, outs in _tiles(x, radius, n):
        i, tw, width = outs[0][0], tile // 32, nb * tile // 32
        full = np.zeros((tile, width), np.uint32)
        for i2, idx, vals in pending.pop(i, []):
            full[idx // tw, i2 * tw + idx % tw] = vals
        for j, w, wt in outs:
            full[:, j * tw : (j + 1) * tw] |= w
            wt = np.ascontiguousarray(wt.T)
            if j == i:
                full[:, i * tw : (i + 1) * tw] |= wt
            else:
                idx = np.flatnonzero(wt)
                pending.setdefault(j, []).append((i, idx, wt.ravel()[idx]))
        rows = min(tile, n - i * tile)
        nz = np.flatnonzero(full[:rows])
        packed = full[:rows].ravel()[nz].view(np.uint8)
        bits = np.flatnonzero(np.unpackbits(packed, bitorder="little"))
        word = nz[bits >> 5]
        counts.append(np.bincount(word // width, minlength=rows))
        cols.append(((word % width) * 32 + (bits & 31)).astype(np.int32))
        total += cols[-1].size
        if total > max_edges:
            return None
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.concatenate(counts), out=indptr[1:])
    return indptr, np.concatenate(cols)


def neighbours_of(graph, rows):
    """All neighbours of ``rows`` (with repeats), one flat array."""
    indptr, cols = graph
    starts, lens = indptr[rows], indptr[rows + 1] - indptr[rows]
    ends = np.cumsum(lens)
    return cols[np.repeat(starts - ends + lens, lens) + np.arange(ends[-1] if ends.size else 0)]


def graph_greedy(graph, state, stop: int):
    """``state`` (a ``ProbCoverState``) continued to ``stop`` picks on the host, the same rule
    as the graph-free step of ``kernels.probcover``: most newly covered points, then the larger
    ball, then the lowest index."""
    indptr, cols = graph
    n = indptr.size - 1
    degree = np.asarray(state.degree).astype(np.int64)
    covered = np.array(state.covered, dtype=bool)
    taken = np.array(state.taken, dtype=bool)
    selected = np.array(state.selected, dtype=np.int32)
    # (degree, ball size) as one key: ball sizes are < n + 1; argmax keeps the lowest index.
    key = degree * (n + 1) + np.asarray(state.ball_size, np.int64)
    key[taken] = -1
    for t in range(int(state.count), stop):
        c = int(np.argmax(key))
        ball = cols[indptr[c] : indptr[c + 1]]
        newly = ball[~covered[ball]]
        covered[ball] = True
        if newly.size:
            drop = np.bincount(neighbours_of(graph, newly), minlength=n)
            degree -= drop
            key -= drop * (n + 1)  # taken keys only go further below every free key
        taken[c], key[c], selected[t] = True, -1, c
    out = state._replace(degree=jnp.asarray(degree, jnp.int32), covered=jnp.asarray(covered))
    out = out._replace(taken=jnp.asarray(taken), selected=jnp.asarray(selected))
    return out._replace(count=jnp.asarray(stop, jnp.int32))
