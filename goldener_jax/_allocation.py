"""Allocation rules of selection and splits (pure Python integers, exact arithmetic).

The rules are goldener 7.0.0's (see docs/guides/select_and_split.md), computed with exact
fractions: a ratio such as ``0.07`` means 7/100, so ``ceil(0.07 * 100)`` is 7 (goldener's float
product gives 8) and ``floor(0.29 * 100)`` is 29 (goldener's gives 28).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fractions import Fraction

import numpy as np

__all__ = [
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
    """The decimal a float was written as: ``0.07`` -> 7/100 (not its binary rounding)."""
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
