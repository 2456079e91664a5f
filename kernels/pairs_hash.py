"""The host paths of ``pairs_within`` at threshold 0 (see ``pairs.py``): exact duplicates by
hashing rows, and same-direction pairs (cosine) by sorting projections. NumPy only."""

from __future__ import annotations

import numpy as np

__all__ = ["RECHECK_BUDGET", "equal_row_pairs", "same_direction_pairs"]

# Elements of the float64 recheck's temporary rows (per side) at once.
RECHECK_BUDGET = 1 << 22


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
    step = max(1, RECHECK_BUDGET // max(1, lanes))
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


def equal_row_pairs(
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
    step = max(1, RECHECK_BUDGET // max(1, a.shape[1]))
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
    while q0 < len(queries):  # bounded memory: about RECHECK_BUDGET candidates at a time
        base = ends[q0 - 1] if q0 else 0
        q1 = max(q0 + 1, int(np.searchsorted(ends, base + RECHECK_BUDGET, "right")))
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


def same_direction_pairs(a: np.ndarray, b: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
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
