"""Grow a split or a selection with a grown pool, keeping every earlier decision.

When new samples are described into a store (``describe(..., append=True)``), the sets and
selections made on the old samples stay valid and stay as they are:

* :func:`extend_split` places only the samples the earlier split did not assign. A new sample
  whose group already has a set joins that set (groups stay whole); the others fill the sets in
  order as :func:`~goldener_jax.split` does (a stratified :func:`~goldener_jax.select` per set
  over what earlier sets left, the key folded with the set's index, the last set takes the
  rest), each set's earlier members acting as anchors, so its new members complement them.
* :func:`extend_selection` continues a selection: the earlier picks are anchors of a
  :func:`~goldener_jax.select` over the grown pool and come first in the result, unchanged.

Both use only ``select`` and the pipeline's input loading: same methods, metrics, labels,
groups, reduction and meshes as the functions they extend.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from fractions import Fraction

import jax
import numpy as np

from goldener_jax import pipeline
from goldener_jax._digest import rows_digest
from goldener_jax.kernels._checks import as_float_matrix
from goldener_jax.select import Selection, select
from goldener_jax.split import Split

__all__ = ["extend_selection", "extend_split"]

_SPLIT_FORMAT = "goldener-jax.split"


# ---------------------------------------------------------------- reading what came before


def _read_json(path, what: str) -> dict:
    path = os.fspath(path)
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"previous {what} manifest {path!r} does not exist") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"previous {what} manifest {path!r} is not valid JSON: {e}") from e


def _indices(value, where: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.size == 0:
        arr = arr.astype(np.int64).reshape(0)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(
            f"{where} must be a 1-D list of sample indices, got {arr.dtype} {arr.shape}"
        )
    if arr.size and arr.min() < 0:
        raise ValueError(f"{where} holds negative sample indices: {arr[arr < 0][:5].tolist()}")
    if np.unique(arr).size != arr.size:
        raise ValueError(f"{where} holds repeated sample indices")
    return arr.astype(np.int64)


def _previous_split(previous) -> tuple[dict[str, np.ndarray], dict, object]:
    """``({set: indices}, {set: requested size or None}, the data it recorded or None)`` of a
    Split, its manifest dict, or the path of that manifest."""
    if isinstance(previous, (str, os.PathLike)):
        previous = _read_json(previous, "split")
    if not isinstance(previous, Mapping):
        raise TypeError(
            "previous must be a Split, its manifest (dict) or the manifest's path, got "
            f"{type(previous).__name__}"
        )
    manifest = getattr(previous, "manifest", None)
    if previous.get("format") == _SPLIT_FORMAT:
        manifest, sets = previous, previous.get("indices")
        if not isinstance(sets, Mapping):
            raise ValueError("previous split manifest has no 'indices' {set: [sample indices]}")
    else:
        sets = previous
    if len(sets) < 2:
        raise ValueError(f"previous split must have at least 2 sets, got {list(sets)}")
    out = {}
    for name, value in sets.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"set names must be non-empty strings, got {name!r}")
        out[name] = _indices(value, f"previous set {name!r}")
    requested = {n: None for n in out}
    if isinstance(manifest, Mapping) and isinstance(manifest.get("sets"), Mapping):
        for n in out:
            entry = manifest["sets"].get(n)
            if isinstance(entry, Mapping):
                requested[n] = entry.get("requested")
    every = np.concatenate(list(out.values()))
    if np.unique(every).size != every.size:
        values, counts = np.unique(every, return_counts=True)
        shared = values[counts > 1]
        raise ValueError(f"previous split assigns samples to two sets (e.g. {shared[:5].tolist()})")
    return out, requested, manifest.get("data") if isinstance(manifest, Mapping) else None


def _check_same_pool(recorded, store_or_array, what: str) -> None:
    """The earlier split / selection was made on this pool before it grew: for a store, the same
    extractor; for vectors, its rows (recorded by digest) are the first rows here. Unchecked
    when nothing was recorded (plain indices) or the rows were given with ``sample_idx``. Made
    on another pool, it was once extended without a word."""
    if not isinstance(recorded, Mapping):
        return
    from goldener_jax.store import FeatureStore

    pool = store_or_array
    if isinstance(pool, (str, os.PathLike)):
        pool = FeatureStore.open(pool)
    if isinstance(pool, FeatureStore):
        made_by = recorded.get("extractor")
        if made_by is not None and made_by != pool.extractor_fingerprint:
            raise ValueError(
                f"previous {what} was made on a store described by another extractor "
                f"({made_by[:12]}..., this store: {pool.extractor_fingerprint[:12]}...): extend "
                "it on the store it was made on, grown with describe(..., append=True)"
            )
        return
    shape, digest = recorded.get("array_shape"), recorded.get("vectors")
    if shape is None or digest is None or "sample_idx" in recorded or len(shape) != 2:
        return
    x = np.asarray(as_float_matrix(pool, "x"))
    n_old = int(shape[0])
    if x.shape[0] < n_old:
        return  # a pool that lost samples: the indices' own check names them
    if x.shape[1] != shape[1] or rows_digest(x[:n_old]) != digest:
        raise ValueError(
            f"previous {what} was made on other vectors: the {n_old} x {shape[1]} rows it "
            "recorded are not the first rows of this pool (extend the pool it was made on: its "
            "rows first, the new ones after)"
        )


def _previous_selection(previous) -> tuple[np.ndarray, dict]:
    """``(indices, config)`` of a Selection, its ``to_json()`` dict, the path of that JSON, or
    plain sample indices."""
    if isinstance(previous, (str, os.PathLike)):
        previous = _read_json(previous, "selection")
    if isinstance(previous, Selection):
        return _indices(previous.indices, "previous.indices"), dict(previous.config)
    if isinstance(previous, Mapping):
        if "indices" not in previous:
            raise ValueError("previous selection (dict) has no 'indices'")
        config = previous.get("config")
        return _indices(previous["indices"], "previous['indices']"), dict(config or {})
    if isinstance(previous, (Sequence, np.ndarray)) and not isinstance(previous, str):
        return _indices(previous, "previous"), {}
    raise TypeError(
        "previous must be a Selection, its to_json() dict, that JSON's path or sample indices, "
        f"got {type(previous).__name__}"
    )


# ---------------------------------------------------------------- set sizes


def _largest_remainder(shares: dict[str, Fraction], total: int) -> dict[str, int]:
    """Counts proportional to ``shares`` summing to ``total``: floors, then one more to the
    largest fractional parts (ties to the earlier set), as ``split`` does."""
    scale = sum(shares.values())
    exact = {k: s * total / scale for k, s in shares.items()}
    counts = {k: math.floor(v) for k, v in exact.items()}
    left = total - sum(counts.values())
    for k in sorted(exact, key=lambda k: -(exact[k] - counts[k]))[:left]:
        counts[k] += 1
    return counts


def _is_ratio(v) -> bool:
    return isinstance(v, (float, np.floating))


def _is_count(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _targets(sets, names: list[str], requested: dict, previous_counts: dict, total: int):
    """``({set: target total}, {set: what was asked})`` over the grown pool of ``total``."""
    if sets is None:
        asked = [requested[n] for n in names]
        if all(_is_ratio(v) for v in asked):
            sets = {n: float(v) for n, v in zip(names, asked, strict=True)}
        else:  # counts (or unknown): keep the earlier proportions
            prev_total = sum(previous_counts.values())
            shares = {n: Fraction(previous_counts[n], prev_total) for n in names}
            return _largest_remainder(shares, total), {
                n: f"{previous_counts[n]}/{prev_total} of the pool" for n in names
            }
    if not isinstance(sets, Mapping):
        raise TypeError(f"sets must be a dict {{name: ratio or target count}}, got {sets!r}")
    if sorted(sets) != sorted(names):
        raise ValueError(
            f"sets must name the previous split's sets {names}, got {list(sets)}; a set cannot "
            "be added or dropped when extending"
        )
    values = [sets[n] for n in names]
    if all(_is_ratio(v) for v in values):
        bad = [(n, v) for n, v in zip(names, values, strict=True) if not 0.0 < float(v) < 1.0]
        if bad:
            raise ValueError(f"set ratios must be in (0, 1), got {bad}")
        if not math.isclose(sum(map(float, values)), 1.0, rel_tol=1e-9):
            raise ValueError(f"set ratios must sum to 1, got {sum(map(float, values)):g}")
        shares = {n: Fraction(float(sets[n])) for n in names}
        return _largest_remainder(shares, total), {n: float(sets[n]) for n in names}
    if all(_is_count(v) for v in values):
        if sum(int(v) for v in values) != total:
            raise ValueError(
                f"set target counts must sum to the grown pool's {total} samples, got "
                f"{sum(int(v) for v in values)} ({dict(sets)})"
            )
        return {n: int(sets[n]) for n in names}, {n: int(sets[n]) for n in names}
    raise TypeError(
        "set sizes must be all floats (ratios of the grown pool summing to 1) or all ints (target "
        f"totals summing to its number of samples), got {dict(sets)}"
    )


def _needs(targets: dict, have: dict, free: int, names: list[str]) -> tuple[dict, bool]:
    """New samples each set still needs to reach its target, summing to ``free``; a set already
    over its target (earlier members are kept) gets none, the others share its excess."""
    need = {n: targets[n] - have[n] for n in names}
    if all(v >= 0 for v in need.values()):
        return need, True
    positive = {n: Fraction(max(v, 0)) for n, v in need.items()}
    if sum(positive.values()) == 0:
        positive = {n: Fraction(1) for n in names}
    return _largest_remainder(positive, free), False


# ---------------------------------------------------------------- extend_split


def _labels_for_select(data, ids: np.ndarray):
    """Per-sample labels of the compact samples ``ids`` (sorted), in the form ``select`` takes:
    class indices when each sample has one label, else the multi-hot matrix."""
    if data.label_matrix is None:
        return False  # no labels at all (not even a store's): the array carries none anyway
    m = data.label_matrix[ids]
    if m.size and (m.sum(axis=1) == 1).all():
        return np.argmax(m, axis=1).astype(np.int64)
    return m.astype(np.int8)


def extend_split(
    store_or_array,
    previous,
    sets=None,
    *,
    key,
    method="kcenter",
    labels=None,
    groups=None,
    exclude_labels: Sequence | None = None,
    sample_idx=None,
    metric: str = "euclidean",
    chunk_size: int | None = None,
    max_anchors: int | None = 4096,
    method_options: Mapping | None = None,
    manifest_path=None,
    mesh=None,
    progress: bool = True,
) -> Split:
    """Extends a split to the samples it did not assign, keeping every earlier assignment.

    Each set first gets the new samples whose group already has a member in it (groups stay
    whole). The remaining new samples fill the sets in order, as :func:`~goldener_jax.split`
    fills them: set ``i`` (but the last) is a :func:`~goldener_jax.select` of the count it
    still needs over the new samples no earlier set took (stratified by label, groups whole,
    the key folded with ``i``), with the set's earlier members as anchors; the last set takes
    the rest. A set that already holds more than its target keeps its members and gets no new
    ones (a warning; the others share the difference).

    Args:
      store_or_array: the grown pool: a :class:`~goldener_jax.FeatureStore`, its path, or
        vectors ``[Nv, d]`` (as :func:`~goldener_jax.split`).
      previous: the earlier :class:`~goldener_jax.Split`, its manifest (dict) or the path of its
        manifest JSON; its sample indices must all be samples of the grown pool.
      sets: the sizes of the extended sets over the whole grown pool: ratios in (0, 1) summing
        to 1, or target totals (earlier members included) summing to the number of samples;
        the same set names as ``previous``. Default: the ratios ``previous`` was asked for, or,
        when it was asked for counts, its sets' proportions.
      key: a ``jax.random.key``; same key, same extension.
      method: the selection method filling each set (as :func:`~goldener_jax.select`; it must
        use anchors). ``"auto"`` is refused: ``split``'s representative sets are not built
        incrementally.
      labels: as :func:`~goldener_jax.split` (per sample of the grown pool).
      groups: as :func:`~goldener_jax.split` (per sample of the grown pool).
      exclude_labels: as :func:`~goldener_jax.split`.
      sample_idx: as :func:`~goldener_jax.split`.
      metric: as :func:`~goldener_jax.split`.
      chunk_size: as :func:`~goldener_jax.split`.
      max_anchors: as :func:`~goldener_jax.split`.
      method_options: as :func:`~goldener_jax.split`.
      manifest_path: where to write the extended split's manifest (JSON, usable as the
        ``previous`` of a later extension); None (default) writes nothing.
      mesh: as :func:`~goldener_jax.split`.
      progress: tqdm bars (one per set selected).

    Returns:
      A :class:`~goldener_jax.Split`: each set's earlier members first (in their order), then
      its group-mates among the new samples (ascending), then its selected new samples (in
      selection order). ``manifest["extends"]`` records the earlier counts and what was added.

    Raises:
      ValueError: ``previous`` names samples outside the pool or straddles a group over two
        sets; sizes that are not ratios / totals of the grown pool; ``method="auto"``.
    """
    key = pipeline.check_common(key, metric, chunk_size, max_anchors, 100)
    if isinstance(method, str) and method == "auto":
        raise ValueError(
            'method="auto" (split\'s representative sets) cannot extend a split; give a '
            'selection method such as "kcenter"'
        )
    before, requested, recorded = _previous_split(previous)
    _check_same_pool(recorded, store_or_array, "split")
    names = list(before)
    data = pipeline.load_data(store_or_array, labels, groups, sample_idx, exclude_labels)
    num = int(data.sample_ids.shape[0])
    assignment = np.full(num, -1, np.int64)
    compact_before = {}
    for i, name in enumerate(names):
        pos = np.searchsorted(data.sample_ids, before[name])
        pos_c = np.minimum(pos, num - 1)
        bad = (pos >= num) | (data.sample_ids[pos_c] != before[name])
        if bad.any():
            raise ValueError(
                f"previous set {name!r} holds samples that are not in the pool: "
                f"{before[name][bad][:5].tolist()} (the grown pool must keep every earlier sample)"
            )
        compact_before[name] = pos
        assignment[pos] = i
    prev_counts = {n: int(before[n].size) for n in names}

    # New members of groups that already have a set go to that set.
    forced = {n: np.zeros(0, np.int64) for n in names}
    if data.unit is not None:
        set_of_unit = np.full(int(data.unit.max()) + 1, -1, np.int64)
        for i, name in enumerate(names):
            units = np.unique(data.unit[compact_before[name]])
            clash = units[(set_of_unit[units] >= 0) & (set_of_unit[units] != i)]
            if clash.size:
                other = names[int(set_of_unit[clash[0]])]
                raise ValueError(
                    f"previous split puts samples of one group in sets {other!r} and {name!r}: "
                    "it cannot be extended with these groups"
                )
            set_of_unit[units] = i
        new = np.flatnonzero(assignment < 0)
        joins = set_of_unit[data.unit[new]]
        for i, name in enumerate(names):
            forced[name] = new[joins == i]
            assignment[forced[name]] = i

    free = np.flatnonzero(assignment < 0)
    targets, asked = _targets(sets, names, requested, prev_counts, num)
    have = {n: prev_counts[n] + int(forced[n].size) for n in names}
    need, met = _needs(targets, have, int(free.size), names)
    if not met and free.size:
        warnings.warn(
            f"extend_split: the earlier sets and their groups already exceed the targets "
            f"{targets} (they hold {have}); kept them, the new samples fill the other sets",
            stacklevel=2,
        )

    selected = {n: np.zeros(0, np.int64) for n in names}
    alive = np.zeros(num, bool)
    alive[free] = True
    for i, name in enumerate(names):
        if i == len(names) - 1:
            selected[name] = np.flatnonzero(alive)
            break
        if need[name] == 0 or not alive.any():
            continue
        anchors = np.flatnonzero(assignment == i)
        ids = np.flatnonzero(alive | (assignment == i))  # sorted compact ids
        if need[name] >= int(np.count_nonzero(alive)):
            chosen = np.flatnonzero(alive)
        else:
            lab = _labels_for_select(data, ids)
            if isinstance(lab, np.ndarray) and lab.ndim == 1:
                # A label whose every sample is already placed has no candidates left: drop it
                # (with its anchors) from this set's selection instead of asking for it.
                gone = np.setdiff1d(lab, lab[alive[ids]])
                if gone.size:
                    keep = ~np.isin(lab, gone)
                    ids, lab = ids[keep], lab[keep]
                    anchors = anchors[np.isin(anchors, ids)]
                if int(need[name]) < 2 * np.unique(lab[alive[ids]]).size:
                    # Stratified rounds give each label floor(share) >= 1 only when the picks
                    # are at least twice the labels; a handful of picks is taken freely.
                    lab = False
            vecs = np.flatnonzero(np.isin(data.vec_sample, ids))
            sel = select(
                data.x[vecs],
                int(need[name]),
                method=method,
                key=jax.random.fold_in(key, i),
                labels=lab,
                groups=None if data.unit is None else data.unit[ids],
                anchors=anchors if anchors.size else None,
                sample_idx=data.vec_sample[vecs],
                metric=metric,
                chunk_size=chunk_size,
                max_anchors=max_anchors,
                method_options=method_options,
                coverage=False,
                mesh=mesh,
                progress=progress,
            )
            chosen = np.asarray(sel.indices, np.int64)  # compact ids (sample_idx above)
        selected[name] = chosen
        assignment[chosen] = i
        alive[chosen] = False
    if alive.any() and selected[names[-1]].size == 0:  # pragma: no cover - an invariant
        raise RuntimeError("internal error: new samples left unassigned")
    assignment[selected[names[-1]]] = len(names) - 1

    result = Split()
    for name in names:
        members = np.concatenate([compact_before[name], np.sort(forced[name]), selected[name]])
        result[name] = data.sample_ids[members].astype(np.int64)
    if data.unit is not None:
        per_unit = np.full(int(data.unit.max()) + 1, -1, np.int64)
        for i in range(len(names)):
            units = np.unique(data.unit[assignment == i])
            if ((per_unit[units] >= 0) & (per_unit[units] != i)).any():  # pragma: no cover
                raise RuntimeError("internal error: a group straddles two sets")
            per_unit[units] = i
    achieved = {n: int(result[n].size) for n in names}
    if data.unit is not None and achieved != targets and met and free.size:
        warnings.warn(
            f"extend_split: whole groups cannot meet the targets {targets}; reached {achieved}",
            stacklevel=2,
        )
    label_counts = None
    if data.label_matrix is not None:
        label_counts = {
            name: {
                str(lab): int(np.count_nonzero(data.label_matrix[assignment == i, j]))
                for j, lab in enumerate(data.label_names)
            }
            for i, name in enumerate(names)
        }
    manifest = {
        "format": _SPLIT_FORMAT,
        "sets": {n: {"requested": asked[n], "count": achieved[n]} for n in names},
        "counts_planned": targets,
        "method": method if isinstance(method, str) else repr(method),
        "construction": "extend_split",
        "metric": metric,
        "key": [int(v) for v in np.ravel(pipeline.key_data(key))],
        "chunk_size": chunk_size,
        "reduce": None,
        "data": data.fingerprint,
        "label_counts": label_counts,
        "groups": data.unit is not None,
        "group_counts": None
        if data.unit is None
        else {"requested": targets, "achieved": achieved, "exact": achieved == targets},
        "leakage": None,
        "extends": {
            "previous_counts": prev_counts,
            "joined_their_group": {n: int(forced[n].size) for n in names},
            "selected": {n: int(selected[n].size) for n in names},
        },
        "indices": {n: [int(v) for v in result[n]] for n in names},
    }
    result.manifest = manifest
    result.manifest_path = None
    if manifest_path is not None:
        path = os.fspath(manifest_path)
        with open(path + ".tmp", "w") as f:
            json.dump(manifest, f, indent=1)
        os.replace(path + ".tmp", path)
        result.manifest_path = path
    result.leaks = None
    return result


# ---------------------------------------------------------------- extend_selection


def extend_selection(
    store_or_array,
    previous,
    count: int,
    *,
    key,
    method=None,
    labels=None,
    groups=None,
    exclude_labels: Sequence | None = None,
    sample_idx=None,
    metric: str = "euclidean",
    chunk_size: int | None = None,
    max_anchors: int | None = 4096,
    reduce=None,
    method_options: Mapping | None = None,
    coverage: bool | None = None,
    mesh=None,
    progress: bool = True,
) -> Selection:
    """Continues a selection on a grown pool: ``count`` more samples, the earlier picks acting
    as anchors (as :func:`~goldener_jax.select`'s ``anchors``).

    Args:
      store_or_array: the grown pool (as :func:`~goldener_jax.select`).
      previous: the earlier :class:`~goldener_jax.Selection`, its ``to_json()`` dict, the path
        of that JSON, or its sample indices; every index must be a sample of the grown pool.
      count: how many new samples to add (an int >= 1; with groups, the nearest count whole
        groups can meet, as ``select``).
      key: a ``jax.random.key``; same key, same extension.
      method: as :func:`~goldener_jax.select`; default: the method ``previous`` recorded
        (``config["method"]``), else ``"auto"`` (which picks an anchor-aware method).
      labels: as :func:`~goldener_jax.select`.
      groups: as :func:`~goldener_jax.select`.
      exclude_labels: as :func:`~goldener_jax.select`.
      sample_idx: as :func:`~goldener_jax.select`.
      metric: as :func:`~goldener_jax.select`.
      chunk_size: as :func:`~goldener_jax.select`.
      max_anchors: as :func:`~goldener_jax.select`.
      reduce: as :func:`~goldener_jax.select`.
      method_options: as :func:`~goldener_jax.select`.
      coverage: as :func:`~goldener_jax.select` (the radius covers earlier and new picks).
      mesh: as :func:`~goldener_jax.select`.
      progress: as :func:`~goldener_jax.select`.

    Returns:
      A :class:`~goldener_jax.Selection` whose ``indices`` are the earlier picks, unchanged and
      in their order, then the new ones in selection order; ``label_counts`` count both (None
      when ``previous`` carries none); ``config["extends"]`` records the earlier count.
    """
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"count must be an int >= 1 (the samples to add), got {count!r}")
    earlier, config = _previous_selection(previous)
    _check_same_pool(config.get("data"), store_or_array, "selection")
    if method is None:
        method = config.get("method", "auto")
    new = select(
        store_or_array,
        int(count),
        method=method,
        key=key,
        labels=labels,
        groups=groups,
        anchors=earlier if earlier.size else None,
        exclude_labels=exclude_labels,
        sample_idx=sample_idx,
        metric=metric,
        chunk_size=chunk_size,
        max_anchors=max_anchors,
        reduce=reduce,
        method_options=method_options,
        coverage=coverage,
        mesh=mesh,
        progress=progress,
    )
    label_counts = None
    before_counts = (
        previous.label_counts
        if isinstance(previous, Selection)
        else (previous.get("label_counts") if isinstance(previous, Mapping) else None)
    )
    if new.label_counts is not None and before_counts is not None:
        keyed = (lambda k: str(k)) if not isinstance(previous, Selection) else (lambda k: k)
        label_counts = {keyed(k): int(v) for k, v in new.label_counts.items()}
        for k, v in before_counts.items():
            label_counts[k] = label_counts.get(k, 0) + int(v)
    return Selection(
        indices=np.concatenate([earlier, new.indices]).astype(np.int64),
        label_counts=label_counts,
        coverage_radius=new.coverage_radius,
        config={
            **new.config,
            "count": int(earlier.size + len(new)),
            "extends": {"previous_count": int(earlier.size), "added": len(new)},
        },
        resumed=new.resumed,
        group_counts=new.group_counts,
    )
