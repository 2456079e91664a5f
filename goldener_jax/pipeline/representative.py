"""``split(method="auto")``: representative sets, a stratified sample of the whole at the
resolution of k-means cells (see :func:`representative_assignment`)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from goldener_jax import kernels as gk
from goldener_jax._allocation import assign_groups_to_sets
from goldener_jax.pipeline.data import Data, key_data

__all__ = ["AutoSplitOptions", "deal", "representative_assignment"]


@dataclasses.dataclass(frozen=True)
class AutoSplitOptions:
    """``split(method="auto")``'s ``method_options``: k-means cells of about ``cell_size``
    units (None: ``max(4, ceil(N / smallest set))``), at most ``max_cells`` cells,
    ``num_iters`` Lloyd iterations."""

    cell_size: int | None = None
    max_cells: int = 4096
    num_iters: int = 20


def _unit_vectors(data) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unit of each sample [S], vectors of the units [U, d] (mean of their vectors), samples per
    unit [U])."""
    num_samples = data.sample_ids.shape[0]
    unit = np.arange(num_samples) if data.unit is None else np.asarray(data.unit)
    num_units = int(unit.max()) + 1
    vec_unit = unit[data.vec_sample]
    size = np.bincount(unit, minlength=num_units)
    if data.x.shape[0] == num_units and np.array_equal(vec_unit, np.arange(num_units)):
        return unit, np.asarray(data.x, np.float32), size
    order = np.argsort(vec_unit, kind="stable")
    starts = np.searchsorted(vec_unit[order], np.arange(num_units))
    sums = np.add.reduceat(np.asarray(data.x[order], np.float64), starts, axis=0)
    per = np.bincount(vec_unit, minlength=num_units)
    return unit, (sums / per[:, None]).astype(np.float32), size


def _unit_strata(data, unit: np.ndarray, num_units: int) -> np.ndarray:
    """Stratum of each unit: its label (for a group or multi-hot labels, the rarest label among
    its samples); -1 without labels."""
    if data.label_matrix is None:
        return np.zeros(num_units, np.int64)
    lm = np.asarray(data.label_matrix, bool)
    freq = lm.sum(axis=0)
    # rarest label of each sample (ties to the lower column), samples without a label: -1
    rank = np.argsort(np.argsort(freq, kind="stable"), kind="stable")
    masked = np.where(lm, rank[None, :], lm.shape[1])
    best = masked.min(axis=1)
    per_unit = np.full(num_units, lm.shape[1], np.int64)
    np.minimum.at(per_unit, unit, best)
    order_to_col = np.argsort(rank)
    return np.where(per_unit < lm.shape[1], order_to_col[np.minimum(per_unit, lm.shape[1] - 1)], -1)


def deal(order: np.ndarray, size: np.ndarray, counts: list[int]) -> np.ndarray:
    """Set of each unit, dealing ``order`` in proportion to ``counts``.

    Unit ``t`` goes to the set furthest behind its share ``counts[i] x samples dealt / total``
    that still has room (lowest index on ties), so every run of consecutive units is shared
    between the sets in proportion to their sizes, up to about one unit per set. Units of one
    sample: the same sequence in closed form (slot ``j`` of set ``i`` at ``(j + 1/2) / c_i``).

    The totals are exactly ``counts`` whenever whole units can meet them: when the greedy deal
    does not, the units are packed (:func:`~goldener_jax._allocation.assign_groups_to_sets`),
    each set preferring the units the deal gave it (in ``order``), so only the units of the
    packing window change set; unreachable counts give the nearest reachable totals (the
    caller compares them with ``counts``).
    """
    counts_arr = np.asarray(counts, np.int64)
    total = int(counts_arr.sum())
    out = np.full(size.shape[0], -1, np.int64)
    if np.all(size[order] == 1):
        slots = np.concatenate([(np.arange(c) + 0.5) / c for c in counts_arr])
        owner = np.repeat(np.arange(len(counts_arr)), counts_arr)
        out[order] = owner[np.argsort(slots, kind="stable")]
        return out
    assigned = np.zeros_like(counts_arr)
    dealt = 0
    pending = []
    for u in order.tolist():
        s = int(size[u])
        dealt += s
        room = assigned + s <= counts_arr
        if not room.any():
            pending.append(u)
            continue
        deficit = counts_arr * (dealt / total) - assigned
        i = int(np.argmax(np.where(room, deficit, -np.inf)))
        out[u] = i
        assigned[i] += s
    placed = True
    for u in sorted(pending, key=lambda u: -int(size[u])):
        room = counts_arr - assigned
        i = int(np.argmax(room))
        if room[i] < size[u]:
            placed = False  # a group fits in no set: pack instead
            break
        out[u] = i
        assigned[i] += int(size[u])
    if placed and np.array_equal(assigned, counts_arr):
        return out
    mine = out[order][None, :] == np.arange(counts_arr.size)[:, None]
    prefs = np.stack([np.r_[order[m], order[~m]] for m in mine])
    return assign_groups_to_sets(size, counts_arr, order=prefs).set_of_group.astype(np.int64)


def _chain_runs(order: np.ndarray, ux: np.ndarray, run_id: np.ndarray, max_run: int = 512):
    """Reorders each run of equal ``run_id`` along ``order`` as a nearest-neighbour chain (from
    its first unit, each next unit the nearest one not yet in the chain; pieces of at most
    ``max_run`` units), so that units dealt side by side (e.g. one to validation, one to test)
    are near twins."""
    rid = run_id[order]
    bounds = np.flatnonzero(np.diff(rid)) + 1
    out = order.copy()
    for start, stop in zip(np.r_[0, bounds], np.r_[bounds, order.size], strict=True):
        for a in range(int(start), int(stop), max_run):
            b = min(int(stop), a + max_run)
            if b - a < 3:
                continue
            idx = order[a:b]
            v = ux[idx].astype(np.float64)
            sq = np.sum(v * v, axis=1)
            dist = sq[:, None] + sq[None, :] - 2.0 * v @ v.T
            chain = [0]
            used = np.zeros(b - a, bool)
            used[0] = True
            for _ in range(b - a - 1):
                row = np.where(used, np.inf, dist[chain[-1]])
                nxt = int(np.argmin(row))
                chain.append(nxt)
                used[nxt] = True
            out[a:b] = idx[np.asarray(chain)]
    return out


def representative_assignment(
    data: Data,
    counts: list[int],
    key,
    options: AutoSplitOptions,
    *,
    metric: str,
    mesh=None,
    progress: bool = False,
) -> tuple[np.ndarray, dict]:
    """``split(method="auto")``: set of each sample [S] and a description of the construction.

    The units (groups, or samples) are clustered into k-means *cells* of about ``cell_size``
    units (one blocked k-means over all of them, k-means++ seeds from ``key``, ``num_iters``
    Lloyd iterations, at most ``max_cells`` cells); the units are ordered by (stratum = label,
    cell, a key-drawn rank) and dealt to the sets in proportion to their sizes along that order
    (:func:`deal`). Each set thus receives its share of every label and of every cell within
    it, up to about one unit: a stratified sample at the resolution of the cells, whose kernel
    mean (MMD to the whole) is closer to the data's than a stratified random split's.
    ``progress``: a tqdm bar over the stages (units, k-means cells, order, deal).
    """
    from tqdm.auto import tqdm

    bar = tqdm(total=4, desc="split (auto)", unit="stage", disable=not progress)
    try:
        return _representative(data, counts, key, options, metric, mesh, bar)
    finally:
        bar.close()


def _representative(data, counts, key, options, metric, mesh, bar) -> tuple[np.ndarray, dict]:
    bar.set_postfix_str("unit vectors")
    unit, ux, size = _unit_vectors(data)
    num_units = ux.shape[0]
    strata = _unit_strata(data, unit, num_units)
    total = int(sum(counts))
    default_cell = max(4, int(np.ceil(total / max(1, min(counts)))))
    cell_size = default_cell if options.cell_size is None else options.cell_size
    max_cells, num_iters = options.max_cells, options.num_iters
    for name, v in (("cell_size", cell_size), ("max_cells", max_cells), ("num_iters", num_iters)):
        if v < 1:
            raise ValueError(f"method_options {name} must be an int >= 1, got {v!r}")
    if metric == "cosine":
        norm = np.linalg.norm(ux, axis=1, keepdims=True)
        ux = ux / np.where(norm > 0, norm, 1.0)
    rng = np.random.default_rng(np.ravel(key_data(key)).tolist())
    tiebreak = rng.permutation(num_units)
    k = int(min(max_cells, max(1, round(num_units / cell_size))))
    bar.update(1)
    bar.set_postfix_str(f"k-means ({k} cells)")
    if k > 1:
        kw = {} if mesh is None else {"mesh": mesh}
        _, cell = gk.kmeans(
            jnp.asarray(ux), k, jax.random.fold_in(key, 0x5E7), num_iters=int(num_iters), **kw
        )
        cell = np.asarray(cell)
    else:
        cell = np.zeros(num_units, np.int64)
    bar.update(1)
    bar.set_postfix_str("order")
    order = np.lexsort((tiebreak, cell, strata))
    order = _chain_runs(order, ux, strata * (int(cell.max()) + 1) + cell)
    bar.update(1)
    bar.set_postfix_str("deal")
    unit_set = deal(order, size, counts)
    bar.update(1)
    construction = {
        "name": "kmeans-cells-deal",
        "cells": int(np.unique(cell).size),
        "cell_size": int(cell_size),
        "strata": int(np.unique(strata).size),
        "num_iters": int(num_iters),
    }
    return unit_set[unit].astype(np.int32), construction
