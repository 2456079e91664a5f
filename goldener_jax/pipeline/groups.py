"""Whole groups in split sets: the counts groups can meet, and the sets packed to them.

``split`` fills its sets in order with selections; with groups (samples that must stay together)
those counts may not be reachable exactly. ``feasible_set_counts`` says what is reachable (the
requested counts, or the nearest, via ``_allocation.assign_groups_to_sets``), and ``pack_sets``
moves the fewest units so that the sets meet them, each set preferring its own picks.
"""

from __future__ import annotations

import jax
import numpy as np

from goldener_jax._allocation import assign_groups_to_sets
from goldener_jax.pipeline.engine import unit_order

__all__ = ["feasible_set_counts", "pack_sets"]


def feasible_set_counts(data, names, counts: dict, strict: bool):
    """The set counts whole groups can meet: ``counts`` when reachable, else the nearest
    (``assign_groups_to_sets``); an error with ``strict`` or when a set would be empty."""
    sizes = np.bincount(data.unit)
    req = [counts[n] for n in names]
    feasible = assign_groups_to_sets(sizes, req)
    if strict and not feasible.exact:
        raise ValueError(
            f"groups cannot satisfy the counts {counts} exactly: the nearest counts whole "
            f"groups can meet are {dict(zip(names, feasible.achieved.tolist(), strict=True))} "
            "(strict_sizes=False accepts them; or change the set sizes)"
        )
    empty = [n for n, v in zip(names, feasible.achieved.tolist(), strict=True) if v == 0]
    if empty:
        raise ValueError(
            f"groups cannot satisfy the counts {counts}: with whole groups the nearest counts "
            f"are {dict(zip(names, feasible.achieved.tolist(), strict=True))}, leaving "
            f"{empty} empty; use larger sets or smaller groups"
        )
    return feasible


def pack_sets(data, names, counts: dict, nearest: list, members: list, key) -> list[np.ndarray]:
    """With groups: the sets filled in order, packed so that their counts are exact whenever
    whole groups can meet them (else the nearest), each set preferring its own picks in pick
    order (only the units of the packing window move). Kept as is when already at the
    ``nearest`` counts the groups allow."""
    sizes = np.bincount(data.unit)
    req = [counts[n] for n in names]
    if [int(len(m)) for m in members] == list(nearest):
        return members
    everyone = np.arange(data.unit.size)
    orders = np.stack(
        [unit_order(data, everyone, m, jax.random.fold_in(key, i)) for i, m in enumerate(members)]
    )
    packed = assign_groups_to_sets(sizes, req, order=orders)
    out = []
    for i, m in enumerate(members):
        in_set = packed.set_of_group[data.unit] == i
        kept = m[in_set[m]]
        pos = np.empty(sizes.size, np.int64)
        pos[orders[i]] = np.arange(sizes.size)
        seen = np.zeros(data.unit.size, bool)
        seen[kept] = True
        others = np.flatnonzero(in_set & ~seen)
        others = others[np.lexsort((others, pos[data.unit[others]]))]
        out.append(np.concatenate([kept, others]).astype(np.int64))
    return out
