"""``split``: assign every sample to one of several named sets, set by set, with ``select``.

Sets are filled in the order given; each set is a :func:`~goldener_jax.select` over the samples
no earlier set took (stratified by label, groups kept whole); the last set takes what remains.
Set sizes are exact: ratios by largest remainder (no set short-changed), or counts summing to N.
``method="auto"`` builds representative sets instead (each set a stratified sample of the whole,
at the resolution of k-means cells, see ``split``'s ``method``); the objective it
serves is a small per-set MMD to the whole data, with the same exact sizes and whole groups.
A manifest (JSON) records the request, the counts and the per-set label counts; an optional
leakage check reports near-duplicate pairs that straddle two sets.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from goldener_jax import kernels as gk
from goldener_jax._allocation import set_counts
from goldener_jax.select import (
    METHODS,
    Selection,
    SelectionMethod,
    _as_key_data,
    _check_chunk,
    _parse_reduce,
    _prepare,
    _select,
    register_method,
    select,
)

__all__ = ["Split", "leakage_pairs", "split"]
# Re-exported for the package namespace (one import line there).
_REEXPORTS = (METHODS, Selection, SelectionMethod, register_method, select)


class Split(dict):
    """``{set_name: int64 sample indices}`` (in selection order) plus what was recorded.

    Attributes:
      manifest: the manifest dict (also written to ``manifest_path`` when there is one).
      manifest_path: where it was written, or ``None``.
      leaks: near-duplicate pairs across sets (``None`` when the check did not run).
    """

    manifest: dict
    manifest_path: str | None
    leaks: list | None


def _normalise_sets(sets) -> dict:
    if isinstance(sets, Mapping):
        items = list(sets.items())
    elif isinstance(sets, Sequence) and not isinstance(sets, str):
        items = []
        for s in sets:
            if not (isinstance(s, (tuple, list)) and len(s) == 2):
                raise TypeError(f"sets must be a dict or (name, size) pairs, got item {s!r}")
            items.append((s[0], s[1]))
    else:
        raise TypeError(f"sets must be a dict {{name: size}} or (name, size) pairs, got {sets!r}")
    names = [n for n, _ in items]
    if any(not isinstance(n, str) or not n for n in names):
        raise TypeError(f"set names must be non-empty strings, got {names}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"set names must be unique, got {names} ({dupes} repeated)")
    if len(items) < 2:
        raise ValueError(f"a split needs at least 2 sets, got {len(items)}: {names}")
    return dict(items)


def leakage_pairs(
    x,
    vec_set: np.ndarray,
    vec_sample: np.ndarray,
    threshold: float,
    *,
    metric="euclidean",
    max_pairs: int = 1000,
    block_size: int = 1024,
) -> list[dict]:
    """Pairs of vectors in different sets closer than ``threshold`` (blocked, O(N^2 d) time,
    O(block x N) memory): ``[{"a": sample, "b": sample, "set_a", "set_b", "distance"}]``, each
    unordered pair once, closest first, at most ``max_pairs``."""
    x = jnp.asarray(x)
    n = x.shape[0]
    aux = _row_aux(x, metric)
    found = []
    limit = threshold**2 if metric == "euclidean" else threshold
    for start in range(0, n, block_size):
        stop = min(n, start + block_size)
        d = _block(x[start:stop], aux[start:stop], x, aux, metric)
        d = np.asarray(d)
        rows, cols = np.nonzero(d < limit)
        keep = (cols > rows + start) & (vec_set[rows + start] != vec_set[cols])
        rows, cols = rows[keep] + start, cols[keep]
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            found.append((float(d[r - start, c]), r, c))
    found.sort()
    out, seen = [], set()
    for dist, r, c in found:
        pair = (int(vec_sample[r]), int(vec_sample[c]))
        if pair in seen or pair[0] == pair[1]:
            continue
        seen.add(pair)
        value = float(np.sqrt(dist)) if metric == "euclidean" else dist
        out.append(
            {
                "a": pair[0],
                "b": pair[1],
                "set_a": str(vec_set[r]),
                "set_b": str(vec_set[c]),
                "distance": value,
            }
        )
        if len(out) >= max_pairs:
            break
    return out


def _row_aux(x, metric):
    from goldener_jax.kernels.distance import row_aux

    return row_aux(x, "cosine" if metric == "cosine" else "euclidean")


@jax.jit
def _block_euclid(a, a_aux, b, b_aux):
    from goldener_jax.kernels.distance import block_rank_distances

    return block_rank_distances(a, a_aux, b, b_aux, "euclidean")


@jax.jit
def _block_cosine(a, a_aux, b, b_aux):
    from goldener_jax.kernels.distance import block_rank_distances

    return block_rank_distances(a, a_aux, b, b_aux, "cosine")


def _block(a, a_aux, b, b_aux, metric):
    fn = _block_cosine if metric == "cosine" else _block_euclid
    return fn(a, a_aux, b, b_aux)


def _default_manifest_path(store_or_array) -> str | None:
    from goldener_jax.store import FeatureStore

    path = None
    if isinstance(store_or_array, (str, os.PathLike)):
        path = os.fspath(store_or_array)
    elif isinstance(store_or_array, FeatureStore):
        path = store_or_array.path
    if not isinstance(path, str) or "://" in path and not path.startswith("file://"):
        return None
    path = path.removeprefix("file://").rstrip("/")
    return path + ".split.json"


def split(
    store_or_array,
    sets,
    *,
    method: str = "kcenter",
    key,
    labels=None,
    groups=None,
    exclude_labels: Sequence | None = None,
    sample_idx=None,
    metric: str = "euclidean",
    chunk_size: int | None = None,
    max_anchors: int | None = 4096,
    reduce=None,
    checkpoint_dir=None,
    checkpoint_every: int = 100,
    method_options: Mapping | None = None,
    manifest_path=None,
    leakage_threshold: float | None = None,
    mesh=None,
) -> Split:
    """Splits the samples into named sets.

    Args:
      store_or_array: a :class:`~goldener_jax.FeatureStore`, its path, or vectors ``[Nv, d]``.
      sets: ``{"train": 0.7, "val": 0.15, "test": 0.15}`` (ratios in (0, 1) summing to 1) or
        counts summing to the number of samples; at least 2 sets, unique names. Filled in order.
      method: a selection method filling the sets in order (as :func:`~goldener_jax.select`),
        or ``"auto"``: representative sets. The units (groups, or samples; a unit's vector is
        the mean of its vectors) are clustered into k-means cells of about ``cell_size`` units
        (default ``max(4, ceil(N / smallest set))``, at most ``max_cells`` = 4096 cells,
        ``num_iters`` = 20 Lloyd iterations; ``method_options``), ordered by (label, cell, a
        nearest-neighbour chain inside the cell) and dealt to the sets in proportion to their
        sizes, so every set gets its share of every label and cell, and the validation and test
        units of a cell are near twins. Blocked (no N x N matrix), deterministic for ``key``.
        On digits it halves each set's MMD to the whole against stratified random splits
        (``goldener-jax bench split-quality``, docs/benchmarks.md).
      key: as :func:`~goldener_jax.select`.
      labels: as :func:`~goldener_jax.select`.
      groups: as :func:`~goldener_jax.select`; a group never spans two sets (with ``"auto"`` a
        group is stratified by its rarest label).
      exclude_labels: as :func:`~goldener_jax.select`.
      sample_idx: as :func:`~goldener_jax.select`.
      metric: as :func:`~goldener_jax.select`.
      chunk_size: as :func:`~goldener_jax.select`.
      max_anchors: as :func:`~goldener_jax.select`.
      reduce: as :func:`~goldener_jax.select`.
      method_options: as :func:`~goldener_jax.select`.
      checkpoint_dir: resumable progress, one sub-directory per set.
      manifest_path: where to write the manifest; default ``<store path>.split.json`` next to a
        store, none for an array. ``False`` writes nothing.
      leakage_threshold: report vector pairs in different sets closer than this (O(N^2 d)).
      mesh: optional 1-D ``jax.sharding.Mesh``: each set is selected with the rows sharded
        over its devices, as :func:`~goldener_jax.select` does (same sets as without);
        ``method="auto"`` has no sharded version.

    Returns:
      A :class:`Split` (``dict`` of set name -> sample indices).
    """
    if not (isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)):
        raise TypeError(f"key must be a jax.random.key(...), got {key!r}")
    if metric not in gk.METRICS:
        raise ValueError(f"metric must be one of {gk.METRICS}, got {metric!r}")
    _check_chunk(chunk_size, max_anchors, checkpoint_every)
    wanted = _normalise_sets(sets)
    red = _parse_reduce(reduce)
    data = _prepare(store_or_array, labels, groups, sample_idx, exclude_labels)
    num_samples = data.sample_ids.shape[0]
    counts = set_counts(wanted, num_samples)
    if red is not None:
        from goldener_jax.select import _apply_reduce

        _apply_reduce(data, red, key)
    options = {"metric": metric, **dict(method_options or {})}
    alive = np.ones(num_samples, bool)
    assignment = np.full(num_samples, -1, np.int32)
    result = Split()
    names = list(wanted)
    construction = None
    if mesh is not None and method == "auto":
        raise ValueError(
            "split(method='auto') has no sharded version: pass mesh=None, or a selection "
            "method with a sharded kernel (e.g. method='kcenter')"
        )
    if method == "auto":
        assignment, construction = _representative_assignment(
            data, [counts[n] for n in names], key, options
        )
        for i, name in enumerate(names):
            chosen = np.flatnonzero(assignment == i)
            result[name] = data.sample_ids[chosen].astype(np.int64)
    elif method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS) + ['auto']}, got {method!r}")
    for i, name in enumerate(names if method != "auto" else []):
        if i == len(names) - 1:
            chosen = np.flatnonzero(alive)
            if chosen.size == 0:
                raise ValueError(f"not enough samples for set {name!r}: none left")
        else:
            if int(np.count_nonzero(alive)) <= counts[name]:
                raise ValueError(
                    f"not enough samples left for set {name!r} ({counts[name]} wanted) and the "
                    "sets after it"
                )
            sel = _select(
                data,
                counts[name],
                method=method,
                key=jax.random.fold_in(key, i),
                alive=alive,
                anchor_samples=np.zeros((0,), np.int64),
                chunk_size=chunk_size,
                max_anchors=max_anchors,
                checkpoint_dir=None
                if checkpoint_dir is None
                else os.path.join(os.fspath(checkpoint_dir), f"set-{i}"),
                checkpoint_every=checkpoint_every,
                options=options,
                ratio_total=num_samples,
                base_config={
                    "reduce": red,
                    "kind": "split",
                    "set": name,
                    "sets": counts,
                    "taken_before": int(num_samples - np.count_nonzero(alive)),
                },
                coverage=False,
                mesh=mesh,
            )
            pos = np.searchsorted(data.sample_ids, sel.indices)
            chosen = pos
        assignment[chosen] = i
        alive[chosen] = False
        result[name] = data.sample_ids[chosen].astype(np.int64)
    actual = {n: int(len(v)) for n, v in result.items()}
    if data.unit is not None:
        per_unit = {}
        for s, u in enumerate(data.unit.tolist()):
            per_unit.setdefault(u, set()).add(int(assignment[s]))
        if any(len(v) != 1 for v in per_unit.values()):  # pragma: no cover - an invariant
            raise RuntimeError("internal error: a group straddles two sets")
    label_counts = None
    if data.label_matrix is not None:
        label_counts = {
            name: {
                str(lab): int(np.count_nonzero(data.label_matrix[assignment == i, j]))
                for j, lab in enumerate(data.label_names)
            }
            for i, name in enumerate(names)
        }
    leaks = None
    if leakage_threshold is not None:
        if not isinstance(leakage_threshold, (int, float)) or leakage_threshold <= 0:
            raise ValueError(f"leakage_threshold must be > 0, got {leakage_threshold!r}")
        vec_set = np.asarray(names, dtype=object)[assignment[data.vec_sample]]
        leaks = leakage_pairs(
            data.x,
            vec_set,
            data.sample_ids[data.vec_sample],
            float(leakage_threshold),
            metric=metric,
        )
    manifest = {
        "format": "goldener-jax.split",
        "sets": {n: {"requested": _jsonable(wanted[n]), "count": actual[n]} for n in names},
        "counts_planned": counts,
        "method": method,
        "construction": construction,
        "metric": metric,
        "key": [int(v) for v in np.ravel(_as_key_data(key))],
        "chunk_size": chunk_size,
        "reduce": red,
        "data": data.fingerprint,
        "label_counts": label_counts,
        "groups": data.unit is not None,
        "leakage": None
        if leaks is None
        else {"threshold": leakage_threshold, "pairs": len(leaks), "examples": leaks[:20]},
        "indices": {n: [int(v) for v in result[n]] for n in names},
    }
    if manifest_path is None:
        manifest_path = _default_manifest_path(store_or_array)
    elif manifest_path is False:
        manifest_path = None
    if manifest_path is not None:
        manifest_path = os.fspath(manifest_path)
        tmp = manifest_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(manifest, f, indent=1)
        os.replace(tmp, manifest_path)
    result.manifest = manifest
    result.manifest_path = manifest_path
    result.leaks = leaks
    return result


def _jsonable(v):
    return v.item() if isinstance(v, np.generic) else v


# --------------------------------------------------------------------------- method="auto"


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


def _deal(order: np.ndarray, size: np.ndarray, counts: list[int]) -> np.ndarray:
    """Set of each unit, dealing ``order`` in proportion to ``counts`` (exact totals).

    Unit ``t`` goes to the set furthest behind its share ``counts[i] x samples dealt / total``
    that still has room (lowest index on ties), so every run of consecutive units is shared
    between the sets in proportion to their sizes, up to about one unit per set. Units of one
    sample: the same sequence in closed form (slot ``j`` of set ``i`` at ``(j + 1/2) / c_i``).
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
    for u in sorted(pending, key=lambda u: -int(size[u])):
        room = counts_arr - assigned
        i = int(np.argmax(room))
        if room[i] < size[u]:
            raise ValueError(
                f"groups cannot satisfy the set counts {counts}: a group of {int(size[u])} "
                f"samples fits in no set (room left: {room.tolist()})"
            )
        out[u] = i
        assigned[i] += int(size[u])
    if not np.array_equal(assigned, counts_arr):
        raise ValueError(
            f"groups cannot satisfy the set counts {counts}: got {assigned.tolist()}; "
            "use ratios that whole groups can meet"
        )
    return out


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


def _representative_assignment(data, counts: list[int], key, options) -> tuple[np.ndarray, dict]:
    """``split(method="auto")``: set of each sample [S] and a description of the construction.

    The units (groups, or samples) are clustered into k-means *cells* of about ``cell_size``
    units (one blocked k-means over all of them, k-means++ seeds from ``key``, ``num_iters``
    Lloyd iterations, at most ``max_cells`` cells); the units are ordered by (stratum = label,
    cell, a key-drawn rank) and dealt to the sets in proportion to their sizes along that order
    (:func:`_deal`). Each set thus receives its share of every label and of every cell within
    it, up to about one unit: a stratified sample at the resolution of the cells, whose kernel
    mean (MMD to the whole) is closer to the data's than a stratified random split's.
    """
    unit, ux, size = _unit_vectors(data)
    num_units = ux.shape[0]
    strata = _unit_strata(data, unit, num_units)
    total = int(sum(counts))
    default_cell = max(4, int(np.ceil(total / max(1, min(counts)))))
    cell_size = options.get("cell_size", default_cell)
    max_cells = options.get("max_cells", 4096)
    num_iters = options.get("num_iters", 20)
    for name, v in (("cell_size", cell_size), ("max_cells", max_cells), ("num_iters", num_iters)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"method_options {name} must be an int >= 1, got {v!r}")
    if options.get("metric", "euclidean") == "cosine":
        norm = np.linalg.norm(ux, axis=1, keepdims=True)
        ux = ux / np.where(norm > 0, norm, 1.0)
    rng = np.random.default_rng(np.ravel(_as_key_data(key)).tolist())
    tiebreak = rng.permutation(num_units)
    k = int(min(max_cells, max(1, round(num_units / cell_size))))
    if k > 1:
        _, cell = gk.kmeans(
            jnp.asarray(ux), k, jax.random.fold_in(key, 0x5E7), num_iters=int(num_iters)
        )
        cell = np.asarray(cell)
    else:
        cell = np.zeros(num_units, np.int64)
    order = np.lexsort((tiebreak, cell, strata))
    order = _chain_runs(order, ux, strata * (int(cell.max()) + 1) + cell)
    unit_set = _deal(order, size, counts)
    construction = {
        "name": "kmeans-cells-deal",
        "cells": int(np.unique(cell).size),
        "cell_size": int(cell_size),
        "strata": int(np.unique(strata).size),
        "num_iters": int(num_iters),
    }
    return unit_set[unit].astype(np.int32), construction
