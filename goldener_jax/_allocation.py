"""Allocation rules of selection and splits (pure Python integers, exact arithmetic).

The rules are goldener 7.0.0's (see docs/guides/select_and_split.md), computed with exact
fractions: a ratio such as ``0.07`` means 7/100, so ``ceil(0.07 * 100)`` is 7 (goldener's float
product gives 8) and ``floor(0.29 * 100)`` is 29 (goldener's gives 28).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import NamedTuple

import numpy as np

__all__ = [
    "GroupAssignment",
    "assign_groups_to_sets",
    "check_group_ids",
    "chunk_quotas",
    "count_from_size",
    "exact_ratio",
    "first_round_label_counts",
    "later_round_label_counts",
    "proportional_counts",
    "random_chunks",
    "set_counts",
]


def exact_ratio(ratio: float) -> Fraction:
    """The decimal a float was written as: ``0.07`` -> 7/100 (not its binary rounding). A NumPy
    float is read at its own precision (``np.float32(0.1)`` -> 1/10: widened to a Python float
    first it was 0.10000000149..., and ``ceil(0.1 x 30)`` became 4)."""
    if isinstance(ratio, np.floating):
        return Fraction(str(ratio))
    return Fraction(repr(float(ratio)))


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_float(v) -> bool:
    return isinstance(v, (float, np.floating))


def count_from_size(size, total: int, name: str = "size") -> int:
    """``size`` as a float in (0, 1] -> ``ceil(size * total)``; an int in [1, total] -> itself."""
    if _is_float(size):
        if not (0.0 < float(size) <= 1.0):
            raise ValueError(f"{name} as a float must be in (0, 1], got {size!r}")
        return max(1, math.ceil(exact_ratio(size) * total))
    if _is_int(size):
        if not (1 <= int(size) <= total):
            raise ValueError(
                f"{name} as an int must be in [1, {total}] (the number of samples), got {size!r}"
            )
        return int(size)
    raise TypeError(
        f"{name} must be a float in (0, 1] or an int in [1, {total}], got {size!r} "
        f"of type {type(size).__name__}"
    )


def proportional_counts(weights: Mapping, total: int) -> dict:
    """Splits ``total`` over keys in proportion to ``weights`` (non-negative ints): floors, then
    the remainder one by one to the keys with the largest floors (ties: the order given),
    cycling. goldener's ``get_sampling_count_from_ratios``."""
    keys = list(weights)
    if not keys:
        raise ValueError("nothing to split over (no keys)")
    wsum = sum(int(w) for w in weights.values())
    if wsum <= 0:
        raise ValueError("weights sum to 0; cannot split proportionally")
    counts = {k: (total * int(weights[k])) // wsum for k in keys}
    left = total - sum(counts.values())
    order = sorted(keys, key=lambda k: -counts[k])  # stable: ties keep the given order
    while left > 0:
        for k in order:
            if left == 0:
                break
            counts[k] += 1
            left -= 1
    return counts


def _force_non_zero(counts: dict) -> dict:
    """Every zero raised to one, each taken from the currently largest count (goldener's
    ``force_non_zero_count``, including its tie order); ascending order."""
    counts = dict(counts)
    added = 0
    for k, c in counts.items():
        if c == 0:
            counts[k] = 1
            added += 1
    for _ in range(added):
        counts = dict(sorted(counts.items(), key=lambda kv: kv[1], reverse=True))
        largest = next(iter(counts))
        counts[largest] -= 1
        if counts[largest] == 0:
            raise ValueError(
                f"cannot give each of the {len(counts)} labels at least one sample with this "
                "size; select more samples or exclude labels"
            )
    return dict(sorted(counts.items(), key=lambda kv: kv[1]))


def first_round_label_counts(label_sizes: Mapping, ratio: Fraction) -> dict:
    """Round 1 targets: ``floor(n_label * ratio)``, every zero raised to one (taken from the
    largest). Returned in processing order: ascending target, ties in label order."""
    for label, n in label_sizes.items():
        if n <= 0:
            raise ValueError(f"label {label!r} has no samples; exclude it or fix the labels")
    counts = {k: math.floor(int(n) * ratio) for k, n in label_sizes.items()}
    return _force_non_zero(counts)


def later_round_label_counts(unselected: Mapping, missing: int) -> dict:
    """Later rounds: ``missing`` spread over labels with unselected samples, in proportion to
    those counts; ascending target order."""
    alive = {k: int(v) for k, v in unselected.items() if v > 0}
    if not alive:
        raise ValueError(
            f"no unselected sample left in any label, {missing} more needed; "
            "the labels cannot satisfy the requested size"
        )
    counts = proportional_counts(alive, missing)
    return dict(sorted(counts.items(), key=lambda kv: kv[1]))


def chunk_quotas(count: int, chunk_sizes: Sequence[int]) -> list[int]:
    """``count`` split over chunks in proportion to their sizes (remainder to the largest)."""
    if len(chunk_sizes) == 1:
        return [min(count, int(chunk_sizes[0]))]
    counts = proportional_counts(dict(enumerate(int(s) for s in chunk_sizes)), count)
    return [counts[i] for i in range(len(chunk_sizes))]


def random_chunks(rng_key, n: int, chunk_size: int | None) -> list[np.ndarray]:
    """Near-equal random chunks of ``range(n)``: position ``i`` of a permutation drawn from
    ``rng_key`` goes to chunk ``i mod num_chunks``; each chunk sorted."""
    if chunk_size is None or chunk_size >= n:
        return [np.arange(n)]
    import jax

    num = -(-n // int(chunk_size))
    perm = np.asarray(jax.random.permutation(rng_key, n))
    return [np.sort(perm[c::num]) for c in range(num)]


def set_counts(sizes: Mapping[str, float | int], total: int) -> dict[str, int]:
    """Sample counts of split sets. Ratios in (0, 1) summing to 1 -> largest remainder (floors,
    then one more to the largest fractional parts, ties to the earlier set); ints > 0 summing
    to ``total`` -> themselves. Every set must get at least one sample."""
    names = list(sizes)
    if len(names) < 2:
        raise ValueError(f"a split needs at least 2 sets, got {len(names)}: {names}")
    values = list(sizes.values())
    if all(_is_float(v) for v in values):
        bad = [(k, v) for k, v in sizes.items() if not 0.0 < float(v) < 1.0]
        if bad:
            raise ValueError(f"set ratios must be in (0, 1), got {bad}")
        exact = {k: exact_ratio(v) for k, v in sizes.items()}
        if sum(exact.values()) != 1 and not math.isclose(sum(map(float, values)), 1.0):
            raise ValueError(
                f"set ratios must sum to 1, got {float(sum(exact.values())):g} ({dict(sizes)})"
            )
        # Renormalise (ratios like 1/3 written as 0.333.. sum to 1 only up to rounding).
        scale = sum(exact.values())
        shares = {k: r * total / scale for k, r in exact.items()}
        counts = {k: math.floor(s) for k, s in shares.items()}
        left = total - sum(counts.values())
        order = sorted(names, key=lambda k: -(shares[k] - counts[k]))
        for k in order[:left]:
            counts[k] += 1
    elif all(_is_int(v) for v in values):
        bad = [(k, v) for k, v in sizes.items() if v <= 0]
        if bad:
            raise ValueError(f"set counts must be > 0, got {bad}")
        if sum(int(v) for v in values) != total:
            raise ValueError(
                f"set counts must sum to the number of samples ({total}), "
                f"got {sum(int(v) for v in values)} ({dict(sizes)})"
            )
        counts = {k: int(v) for k, v in sizes.items()}
    else:
        raise TypeError(
            "set sizes must be all floats (ratios summing to 1) or all ints (counts summing to "
            f"the number of samples), got {dict(sizes)}"
        )
    empty = [k for k, c in counts.items() if c == 0]
    if empty:
        raise ValueError(
            f"not enough samples ({total}) to split over {len(names)} sets: {empty} would be empty"
        )
    return counts


# --------------------------------------------------------------------------- whole groups


class GroupAssignment(NamedTuple):
    """Result of :func:`assign_groups_to_sets`.

    ``set_of_group[g]`` is the set of group ``g``. ``requested`` / ``achieved`` are the per-set
    sample counts asked for and met (``[K]``; ``[S, K]`` per stratum with ``strata``).
    ``exact``: achieved == requested. ``optimal``: the achieved counts are proven the nearest
    reachable ones (always True when exact; see :func:`assign_groups_to_sets`).
    """

    set_of_group: np.ndarray
    requested: np.ndarray
    achieved: np.ndarray
    exact: bool
    optimal: bool

    @property
    def deviation(self) -> int:
        """Total absolute difference between achieved and requested counts."""
        return int(np.abs(self.achieved - self.requested).sum())


# Work limit of the joint (K-1)-dimensional reachability table: cells x items (numpy passes over
# bool arrays run at roughly 1e9 cells/s, so this is about a second) and cells alone (memory:
# one int32 per cell).
_JOINT_WORK = 6 * 10**8
_JOINT_CELLS = 1 << 22
_ONE_D_WORK = 5 * 10**7


def check_group_ids(groups) -> np.ndarray:
    """``groups`` as a 1-D array; a NaN id is refused (NaN != NaN, so NaN ids would otherwise
    be one group, or each its own group, depending on the grouping code)."""
    arr = np.asarray(groups)
    if arr.ndim != 1:
        raise ValueError(f"groups must be 1-D [N], got shape {arr.shape}")
    if arr.dtype.kind in "fc":
        bad = np.flatnonzero(np.isnan(arr))
    elif arr.dtype == object:
        bad = np.flatnonzero([isinstance(v, (float, np.floating)) and v != v for v in arr])
    else:
        bad = np.zeros(0, np.int64)
    if bad.size:
        raise ValueError(
            f"groups must not contain NaN: group id at position {int(bad[0])} is NaN "
            f"({bad.size} NaN ids in all); give those samples a real group id (or their own)"
        )
    return arr


def _as_int_vector(values, name: str, minimum: int) -> np.ndarray:
    arr = np.asarray(list(values.values()) if isinstance(values, Mapping) else values)
    if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must be a non-empty 1-D sequence of ints, got {values!r}")
    arr = arr.astype(np.int64)
    if (arr < minimum).any():
        i = int(np.flatnonzero(arr < minimum)[0])
        raise ValueError(f"{name} must be >= {minimum}, got {int(arr[i])} at position {i}")
    return arr


def _orders(order, num_sets: int, num_groups: int) -> np.ndarray:
    """Preference order of each set: ``[K, G]`` permutations of the groups."""
    if order is None:
        return np.broadcast_to(np.arange(num_groups), (num_sets, num_groups))
    arr = np.asarray(order)
    if arr.dtype.kind not in "iu" or arr.ndim not in (1, 2):
        raise ValueError(
            f"order must be a permutation of the {num_groups} groups ([G]) or one per set "
            f"([{num_sets}, G]) of ints, got dtype {arr.dtype} and shape {arr.shape}"
        )
    if arr.ndim == 1:
        arr = np.broadcast_to(arr, (num_sets, arr.shape[0]))
    if arr.shape != (num_sets, num_groups):
        raise ValueError(
            f"order must have shape [{num_groups}] or [{num_sets}, {num_groups}], got {arr.shape}"
        )
    ref = np.arange(num_groups)
    for k in range(num_sets):
        if not np.array_equal(np.sort(arr[k]), ref):
            raise ValueError(f"order[{k}] must be a permutation of range({num_groups})")
    return arr.astype(np.int64)


def _reach(weights: np.ndarray, maxima: tuple[int, ...]) -> np.ndarray:
    """Which sum vectors items can make, each item going whole to one dimension or to none.

    Returns ``first`` of shape ``maxima + 1``: the 1-based index of the item after which the
    cell first became reachable (0 for the origin), ``len(weights) + 1`` where never."""
    shape = tuple(m + 1 for m in maxima)
    never = len(weights) + 1
    first = np.full(shape, never, np.int32)
    reach = np.zeros(shape, bool)
    reach[(0,) * len(shape)] = True
    first[(0,) * len(shape)] = 0
    for j, w in enumerate(weights.tolist(), start=1):
        new = reach.copy()
        for d, m in enumerate(maxima):
            if w > m:
                continue
            dst = [slice(None)] * len(shape)
            src = [slice(None)] * len(shape)
            dst[d] = slice(w, None)
            src[d] = slice(0, m + 1 - w)
            new[tuple(dst)] |= reach[tuple(src)]
        first[new & ~reach] = j
        reach = new
    return first


def _trace(first: np.ndarray, weights: np.ndarray, cell: tuple[int, ...]) -> np.ndarray:
    """Dimension of each item (-1: unused) in one way of making ``cell`` (see :func:`_reach`)."""
    where = np.full(len(weights), -1, np.int64)
    cell = list(cell)
    j = int(first[tuple(cell)])
    while j > 0:
        w = int(weights[j - 1])
        for d in range(len(cell)):
            if cell[d] >= w:
                prev = cell.copy()
                prev[d] -= w
                if first[tuple(prev)] < j:
                    break
        else:  # pragma: no cover - an invariant of _reach
            raise RuntimeError("internal error: unreachable cell in group packing")
        where[j - 1] = d
        cell = prev
        j = int(first[tuple(cell)])
    return where


def _nearest_key(achieved: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Rows of sort keys (smallest first): total |deviation|, then |deviation| set by set (earlier
    sets kept closest), then the achieved counts themselves (fewer first: deterministic)."""
    dev = np.abs(achieved - counts)
    return np.concatenate([dev.sum(axis=-1, keepdims=True), dev, achieved], axis=-1)


def _lexmin(keys: np.ndarray) -> int:
    return int(np.lexsort(keys.T[::-1])[0])


def _subset_sums(sizes: np.ndarray, total: int) -> np.ndarray:
    """Bool ``[total + 1]``: which totals some subset of ``sizes`` makes (copies of one size
    bundled in powers of two: O(distinct sizes x log(copies)) passes)."""
    reach = np.zeros(total + 1, bool)
    reach[0] = True
    vals, mult = np.unique(sizes, return_counts=True)
    for v, m in zip(vals.tolist(), mult.tolist(), strict=True):
        q = 1
        while m > 0:
            w = v * min(q, m)
            m -= min(q, m)
            q *= 2
            if w <= total:
                reach[w:] |= reach[: total + 1 - w].copy()
    return reach


def _lower_bound(sizes: np.ndarray, counts: np.ndarray) -> int:
    """A set's total is a subset sum of all groups, so each set is at least as far from its
    count as the nearest subset sum: the sum of those distances bounds the deviation below."""
    reach = np.flatnonzero(_subset_sums(sizes, int(sizes.sum())))
    pos = np.searchsorted(reach, counts)
    below = reach[np.maximum(pos - 1, 0)]
    above = reach[np.minimum(pos, reach.size - 1)]
    return int(np.minimum(np.abs(counts - below), np.abs(above - counts)).sum())


def _take_by_preference(
    out: np.ndarray, pool: np.ndarray, sizes: np.ndarray, need: dict, k: int, pos: np.ndarray
) -> np.ndarray:
    """Gives set ``k`` ``need[v]`` groups of each size ``v`` from ``pool`` (earliest in its
    preference order, ``pos`` = rank in it); returns the pool left."""
    if not need or pool.size == 0:
        return pool
    by_pref = pool[np.argsort(pos[pool], kind="stable")]
    by_size = by_pref[np.argsort(sizes[by_pref], kind="stable")]
    s = sizes[by_size]
    starts = np.searchsorted(s, s, side="left")
    within = np.arange(s.size) - starts
    want = np.zeros(s.size, np.int64)
    for v, x in need.items():
        want[s == v] = x
    take = within < want
    if int(take.sum()) != sum(need.values()):  # pragma: no cover - an invariant
        raise RuntimeError("internal error: group packing needs groups the pool lacks")
    out[by_size[take]] = k
    return by_size[~take]


def _pool_items(pool_pref: np.ndarray, sizes: np.ndarray, limit: int, bundle: bool | None):
    """Items of a reachability table over the groups ``pool_pref`` (in preference order) whose
    sums go up to ``limit``: (weights, group size of each item). At most ``limit // v`` groups
    of size ``v`` can be used, so only that many are items. Without ``bundle`` the items are the
    most preferred such groups, in preference order (a cell is first reached by the earliest
    items, so the traced packing uses preferred groups); with ``bundle`` (one dimension only)
    copies of a size come in powers of two: O(distinct sizes x log(copies)) items."""
    psz = sizes[pool_pref]
    if bundle is not True:
        by_size = np.argsort(psz, kind="stable")
        s = psz[by_size]
        within = np.empty_like(by_size)
        within[by_size] = np.arange(s.size) - np.searchsorted(s, s, side="left")
        keep = within < limit // psz
        if bundle is False or int(keep.sum()) * (limit + 1) <= _ONE_D_WORK:
            return psz[keep], psz[keep]
    vals, mult = np.unique(psz, return_counts=True)
    weights, unit = [], []
    for v, m in zip(vals.tolist(), np.minimum(mult, limit // vals).tolist(), strict=True):
        q = 1
        while m > 0:
            weights.append(v * min(q, m))
            unit.append(v)
            m -= min(q, m)
            q *= 2
    return np.asarray(weights, np.int64), np.asarray(unit, np.int64)


def _needs(where: np.ndarray, weights: np.ndarray, unit: np.ndarray, k: int) -> dict:
    """Groups of each size that the traced items of dimension ``k`` stand for."""
    need: dict = {}
    used = where == k
    for w, v in zip(weights[used].tolist(), unit[used].tolist(), strict=True):
        need[v] = need.get(v, 0) + w // v
    return need


def _solve_joint(sizes, counts, orders, pos, window: int):
    """Sets 0..K-2 first take the longest prefix of their preference order (among the groups
    still free) that stays ``window`` below their count; the rest (the pool) is packed exactly
    by one joint table over the K-1 leftover amounts (the last set takes what remains).

    Returns (assignment, achieved, full) or None when over the work limit; ``full``: nothing was
    locked, so the table covered every assignment (the result is the true nearest)."""
    num_sets = counts.size
    total = int(sizes.sum())
    out = np.full(sizes.size, -1, np.int64)
    free = np.ones(sizes.size, bool)
    locked = np.zeros(num_sets, np.int64)
    for k in range(num_sets - 1):
        ord_k = orders[k][free[orders[k]]]
        cs = np.cumsum(sizes[ord_k])
        n = int(np.searchsorted(cs, counts[k] - window, side="right"))
        out[ord_k[:n]] = k
        free[ord_k[:n]] = False
        locked[k] = cs[n - 1] if n else 0
    full = not locked.any()
    pool = np.flatnonzero(free)
    pool_total = int(sizes[pool].sum())
    resid = counts[:-1] - locked[:-1]
    maxima = tuple(pool_total if full else int(min(pool_total, r + window)) for r in resid.tolist())
    weights, unit = _pool_items(orders[0][free[orders[0]]], sizes, sum(maxima), bundle=False)
    cells = int(np.prod([m + 1 for m in maxima], dtype=np.float64))
    if cells > _JOINT_CELLS or cells * max(1, weights.size) > _JOINT_WORK:
        return None
    first = _reach(weights, maxima)
    grid = np.argwhere(first <= weights.size)
    achieved = np.empty((grid.shape[0], num_sets), np.int64)
    achieved[:, :-1] = grid + locked[:-1]
    achieved[:, -1] = total - achieved[:, :-1].sum(axis=1)
    best = _lexmin(_nearest_key(achieved, counts))
    where = _trace(first, weights, tuple(grid[best].tolist()))
    for k in range(num_sets - 1):
        pool = _take_by_preference(out, pool, sizes, _needs(where, weights, unit, k), k, pos[k])
    out[pool] = num_sets - 1
    return out, achieved[best], full


def _solve_two(sizes, counts, orders, pos):
    """Two sets, exactly: set 0 keeps the longest prefix of its order that stays a window below
    its count and the rest is packed by a 1-D table, the window widening (x4) until the count is
    met or nothing is locked (then the table covers every subset). The items are the preferred
    groups themselves, or copies of a size bundled in powers of two where that table would be
    too large, so this is always affordable. (assignment, achieved)."""
    total = int(sizes.sum())
    window = max(32, 4 * int(sizes.max()))
    while True:
        full = window >= counts[0]
        if full:
            window = int(counts[0])  # nothing locked
        out = np.full(sizes.size, -1, np.int64)
        ord0 = orders[0]
        cs = np.cumsum(sizes[ord0])
        n = int(np.searchsorted(cs, counts[0] - window, side="right"))
        out[ord0[:n]] = 0
        locked = int(cs[n - 1]) if n else 0
        pool = ord0[n:]
        pool_total = total - locked
        hi = pool_total if full else min(pool_total, counts[0] - locked + window)
        weights, unit = _pool_items(pool, sizes, hi, bundle=None)
        first = _reach(weights, (hi,))
        got = np.flatnonzero(first <= weights.size) + locked
        achieved = np.stack([got, total - got], axis=1)
        best = _lexmin(_nearest_key(achieved, counts))
        if achieved[best, 0] == counts[0] or full:
            where = _trace(first, weights, (int(got[best] - locked),))
            need = _needs(where, weights, unit, 0)
            pool = _take_by_preference(out, pool, sizes, need, 0, pos[0])
            out[pool] = 1
            return out, achieved[best]
        window *= 4


def _solve_sequential(sizes, counts, orders, pos):
    """Sets one at a time, each exact (or nearest) against all the groups still free: always
    affordable, not joint (an early set's choice can cost a later set)."""
    num_sets = counts.size
    out = np.full(sizes.size, -1, np.int64)
    free = np.ones(sizes.size, bool)
    for k in range(num_sets - 1):
        idx = np.flatnonzero(free)
        if idx.size == 0:
            break
        sub_total = int(sizes[idx].sum())
        want = min(int(counts[k]), sub_total)
        local_pos = np.argsort(np.argsort(pos[k][idx], kind="stable"), kind="stable")
        sub_order = np.argsort(local_pos, kind="stable")[None, :].repeat(2, axis=0)
        sub, _ = _solve_two(
            sizes[idx], np.asarray([want, sub_total - want]), sub_order, local_pos[None, :]
        )
        out[idx[sub == 0]] = k
        free[idx[sub == 0]] = False
    out[free] = num_sets - 1
    achieved = np.bincount(out, weights=sizes, minlength=num_sets).astype(np.int64)
    return out, achieved


def _assign(sizes: np.ndarray, counts: np.ndarray, orders: np.ndarray):
    """(assignment [G], achieved [K], optimal) for one stratum."""
    num_sets = counts.size
    pos = np.empty_like(orders)
    for k in range(num_sets):
        pos[k, orders[k]] = np.arange(sizes.size)
    if num_sets == 1:
        return np.zeros(sizes.size, np.int64), counts.copy(), True
    if num_sets == 2:
        out, achieved = _solve_two(sizes, counts, orders, pos)
        return out, achieved, True
    best = None
    window = max(32, 4 * int(sizes.max()))
    while True:
        got = _solve_joint(sizes, counts, orders, pos, window)
        if got is None:
            break
        out, achieved, full = got
        if best is None or tuple(_nearest_key(achieved, counts)) < tuple(
            _nearest_key(best[1], counts)
        ):
            best = (out, achieved)
        if np.array_equal(achieved, counts):
            return out, achieved, True
        if full:
            return best[0], best[1], True
        window *= 4
    seq = _solve_sequential(sizes, counts, orders, pos)
    if best is None or tuple(_nearest_key(seq[1], counts)) < tuple(_nearest_key(best[1], counts)):
        best = seq
    exact = np.array_equal(best[1], counts)
    dev = int(np.abs(best[1] - counts).sum())
    return best[0], best[1], exact or dev == _lower_bound(sizes, counts)


def _proportional_row(n: int, counts: np.ndarray) -> np.ndarray:
    """``n`` samples over the sets in proportion to ``counts``, exactly: floors, then one more
    to the largest remainders (ties to the earlier set)."""
    total = int(counts.sum())
    shares = [Fraction(n * int(c), total) for c in counts.tolist()]
    row = [math.floor(v) for v in shares]
    left = n - sum(row)
    for k in sorted(range(len(row)), key=lambda k: -(shares[k] - row[k]))[:left]:
        row[k] += 1
    return np.asarray(row, np.int64)


def _assign_strata(sizes, lab, req, orders):
    """Each stratum packed on its own to its row of ``req``: (assignment, achieved [S, K],
    optimal)."""
    out = np.full(sizes.size, -1, np.int64)
    achieved = np.zeros_like(req)
    optimal = True
    # One pass for all strata: each order stably sorted by stratum (so every stratum's part
    # keeps its order), and each group's index within its stratum.
    by_stratum = np.take_along_axis(orders, np.argsort(lab[orders], axis=1, kind="stable"), 1)
    members_all = np.argsort(lab, kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(lab, minlength=req.shape[0]))]
    local = np.empty(sizes.size, np.int64)
    local[members_all] = np.arange(sizes.size) - bounds[lab[members_all]]
    for s in range(req.shape[0]):
        members = members_all[bounds[s] : bounds[s + 1]]
        if members.size == 0:
            continue
        sub_orders = local[by_stratum[:, bounds[s] : bounds[s + 1]]]
        sub, achieved[s], ok = _assign(sizes[members], req[s], sub_orders)
        out[members] = sub
        optimal &= ok
    return out, achieved, bool(optimal)


def assign_groups_to_sets(
    group_sizes, counts, *, order=None, strata=None, strict: bool = False
) -> GroupAssignment:
    """Assigns whole groups to K sets so that each set's number of samples is its count.

    Args:
      group_sizes: ``[G]`` ints >= 1, the number of samples of each group.
      counts: the requested samples per set, ``[K]`` ints >= 0 summing to ``sum(group_sizes)``
        (e.g. ``list(set_counts(sets, n).values())``; a mapping is taken in its order). With
        ``strata``: ``[S, K]``, row ``s`` for the groups of stratum ``s``, summing to them.
      order: preference of each set for the groups: ``None`` (the given order), one permutation
        ``[G]`` shared by all sets, or ``[K, G]``, one per set (e.g. a selection's ranking).
        Sets 0..K-2 are filled in turn, each first with the longest prefix of its order among
        the groups still free, the last few samples then packed exactly (groups of one size
        picked in that set's order); the last set takes the groups left.
      strata: optional ``[G]`` ints in ``[0, S)``: the stratum (label) of each group. With
        ``counts`` ``[S, K]`` each stratum is packed on its own to its row (groups of one
        stratum never stand in for another's; ``achieved`` is ``[S, K]``). With ``counts``
        ``[K]`` (set totals, the combined rule): each stratum is first packed to its
        proportional share of the totals (largest remainder, ties to the earlier set); if the
        summed totals miss ``counts``, all groups are packed jointly to ``counts`` with each
        set preferring the groups that first pass gave it, so the totals are exact whenever
        reachable and only the groups of the packing window change set (``achieved``:
        ``[K]``).
      strict: raise ``ValueError`` when the counts cannot be met exactly, instead of returning
        the nearest.

    Returns:
      :class:`GroupAssignment`. When the counts can be met with whole groups they are (exact).
      Otherwise ``achieved`` is the nearest reachable counts: the smallest total absolute
      deviation, ties to the counts that keep earlier sets closest, then to fewer samples in
      earlier sets. Exactness and nearness are proven (a complete search) for two sets and
      whenever the joint table of the K-1 first sets' totals fits the work limit (about
      ``(N + 1) ** (K - 1)`` cells for the final, complete pass); beyond it (K >= 3, large N,
      counts not met within the widened windows) the best found is returned and ``optimal``
      says whether it matches a lower bound (each set's distance to the nearest subset sum).

    Raises:
      ValueError: bad sizes, counts, order or strata; with ``strict``, counts not reachable.
    """
    sizes = _as_int_vector(group_sizes, "group_sizes", 1)
    orders_in = order
    if strata is None:
        req = _as_int_vector(counts, "counts", 0)
        if int(req.sum()) != int(sizes.sum()):
            raise ValueError(
                f"counts must sum to the number of samples in the groups ({int(sizes.sum())}), "
                f"got {int(req.sum())} ({req.tolist()})"
            )
        orders = _orders(orders_in, req.size, sizes.size)
        out, achieved, optimal = _assign(sizes, req, orders)
        exact = bool(np.array_equal(achieved, req))
    else:
        lab = np.asarray(strata)
        if lab.shape != sizes.shape or lab.dtype.kind not in "iu" or (lab < 0).any():
            raise ValueError(
                f"strata must be [G] = [{sizes.size}] ints >= 0, got dtype {lab.dtype} and "
                f"shape {lab.shape}"
            )
        num_strata = int(lab.max()) + 1
        per_stratum = np.bincount(lab, weights=sizes, minlength=num_strata).astype(np.int64)
        req = np.asarray(list(counts.values()) if isinstance(counts, Mapping) else counts)
        if req.ndim == 2:
            if req.shape[0] != num_strata or req.dtype.kind not in "iu":
                raise ValueError(
                    f"with strata, counts must be [K] set totals or [S, K] ints with S = "
                    f"{num_strata} strata, got dtype {req.dtype} and shape {req.shape}"
                )
            req = req.astype(np.int64)
            if (req < 0).any():
                raise ValueError(f"counts must be >= 0, got {req.tolist()}")
            bad = np.flatnonzero(req.sum(axis=1) != per_stratum)
            if bad.size:
                s0 = int(bad[0])
                raise ValueError(
                    f"counts[{s0}] must sum to the samples of stratum {s0}'s groups "
                    f"({int(per_stratum[s0])}), got {int(req[s0].sum())} ({req[s0].tolist()})"
                )
            orders = _orders(orders_in, req.shape[1], sizes.size)
            out, achieved, optimal = _assign_strata(sizes, lab, req, orders)
        else:
            req = _as_int_vector(counts, "counts", 0)
            if int(req.sum()) != int(sizes.sum()):
                raise ValueError(
                    f"counts must sum to the number of samples in the groups "
                    f"({int(sizes.sum())}), got {int(req.sum())} ({req.tolist()})"
                )
            orders = _orders(orders_in, req.size, sizes.size)
            targets = np.stack([_proportional_row(int(n), req) for n in per_stratum])
            first_pass, _, _ = _assign_strata(sizes, lab, targets, orders)
            achieved = np.bincount(first_pass, weights=sizes, minlength=req.size).astype(np.int64)
            out, optimal = first_pass, True
            if not np.array_equal(achieved, req):
                # Repair the totals jointly: each set prefers the groups the per-stratum pass
                # gave it (in its order), so only the few groups of the packing window move.
                mine = first_pass[orders] == np.arange(req.size)[:, None]
                repaired = np.stack(
                    [np.r_[orders[k][mine[k]], orders[k][~mine[k]]] for k in range(req.size)]
                )
                out, achieved, optimal = _assign(sizes, req, repaired)
        exact = bool(np.array_equal(achieved, req))
    if strict and not exact:
        what = "the nearest reachable counts are" if optimal else "the nearest counts found are"
        raise ValueError(
            f"whole groups cannot meet the set counts {req.tolist()} exactly; {what} "
            f"{achieved.tolist()} (pass strict=False to accept them, or change the set sizes)"
        )
    return GroupAssignment(out, req, achieved, exact, bool(optimal))
