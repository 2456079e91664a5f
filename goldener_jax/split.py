"""``split``: assign every sample to one of several named sets, set by set, with ``select``.

Sets are filled in the order given; each set is a :func:`~goldener_jax.select` over the samples
no earlier set took (stratified by label, groups kept whole); the last set takes what remains.
Set sizes are exact: ratios by largest remainder (no set short-changed), or counts summing to N;
with groups, exact whenever whole groups can meet them, else the nearest reachable counts (a
warning, recorded in the manifest; ``strict_sizes=True`` raises).
``method="auto"`` (the default) builds representative sets instead (each set a stratified
sample of the whole at the resolution of k-means cells; with labels, the hard held-out samples
as matched pairs, see ``split``'s ``method``); the objectives it serves are a small per-set MMD
to the whole and validation accuracy that predicts test accuracy, with exact sizes and whole
groups.
A manifest (JSON) records the request, the counts and the per-set label counts; an optional
leakage check reports near-duplicate pairs that straddle two sets.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Mapping, Sequence

import jax
import numpy as np

from goldener_jax import pipeline
from goldener_jax._allocation import set_counts
from goldener_jax.pipeline.leakage import split_leakage_pairs

__all__ = ["Split", "split"]


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


def split(
    store_or_array,
    sets,
    *,
    method="auto",
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
    strict_sizes: bool = False,
    progress: bool = True,
) -> Split:
    """Splits the samples into named sets.

    Args:
      store_or_array: a :class:`~goldener_jax.FeatureStore`, its path, or vectors ``[Nv, d]``.
      sets: ``{"train": 0.7, "val": 0.15, "test": 0.15}`` (ratios in (0, 1) summing to 1) or
        counts summing to the number of samples; at least 2 sets, unique names. Filled in order.
      method: ``"auto"`` (default): representative sets. The units (groups, or samples; a
        unit's vector is the mean of its vectors) are clustered into k-means cells of about
        ``cell_size`` units (default ``max(4, ceil(N / smallest set))``, at most ``max_cells``
        = 256 cells, ``num_iters`` = 20 Lloyd iterations; ``method_options``), ordered by
        (label, cell, a nearest-neighbour chain inside the cell) and dealt to the sets in
        proportion to their sizes, so every set gets its share of every label and cell. With
        labels, the hard units (closer to wrong than right under a ridge one-vs-rest linear fit
        of the labels) are paired inside each label by difficulty before the deal, a pair to
        train whole or split between the two held-out sets (equal sizes, no groups; else the
        hard held-out units are re-dealt between them as matched pairs), oriented to balance
        their expected errors: validation accuracy predicts test accuracy (ten datasets, 90
        seeds: ``goldener-jax bench split-quality --suite``, docs/benchmarks.md).
        Blocked (no N x N matrix), deterministic for ``key``. Or a selection method filling
        the sets in order (as :func:`~goldener_jax.select`, e.g. ``"kcenter"``: validation and
        test that cover the data).
      key: as :func:`~goldener_jax.select`.
      labels: as :func:`~goldener_jax.select`.
      groups: as :func:`~goldener_jax.select`; a group never spans two sets (with ``"auto"`` a
        group is stratified by its rarest label). The set counts are met exactly whenever whole
        groups can meet them (an exact packing of the group sizes, preferring each set's picks);
        otherwise the nearest reachable counts are used, with a warning, and recorded in the
        manifest (``"group_counts"``: requested, achieved, exact).
      exclude_labels: as :func:`~goldener_jax.select`.
      sample_idx: as :func:`~goldener_jax.select`.
      metric: as :func:`~goldener_jax.select`.
      chunk_size: as :func:`~goldener_jax.select`.
      max_anchors: as :func:`~goldener_jax.select`.
      reduce: as :func:`~goldener_jax.select`.
      method_options: as :func:`~goldener_jax.select` (for ``"auto"``: ``cell_size``,
        ``max_cells``, ``num_iters``).
      checkpoint_dir: resumable progress of a selection method, one sub-directory per set;
        locked for the run, data fingerprinted row by row (as :func:`~goldener_jax.select`).
        ``"auto"`` has no steps to resume (one k-means and a deal: seconds at 50,000 samples).
      manifest_path: where to write the manifest; default ``<store path>.split.json`` next to a
        store, none for an array. ``False`` writes nothing.
      leakage_threshold: report vector pairs in different sets closer than this (O(N^2 d)).
      mesh: optional 1-D ``jax.sharding.Mesh``: the rows are sharded over its devices, as
        :func:`~goldener_jax.select` does, with the same sets as without (``"auto"`` too).
      strict_sizes: with groups, raise ``ValueError`` when whole groups cannot meet the set
        counts exactly, instead of using the nearest reachable counts.
      progress: tqdm bars (one per set filled in order; the stages of ``"auto"``).

    Returns:
      A :class:`Split` (``dict`` of set name -> sample indices).
    """
    key = pipeline.check_common(key, metric, chunk_size, max_anchors, checkpoint_every)
    wanted = _normalise_sets(sets)
    red = pipeline.parse_reduce(reduce)
    with pipeline.checkpoint_lock(checkpoint_dir):  # one run per checkpoint directory
        return _split(
            store_or_array,
            wanted,
            method=method,
            key=key,
            labels=labels,
            groups=groups,
            exclude_labels=exclude_labels,
            sample_idx=sample_idx,
            metric=metric,
            chunk_size=chunk_size,
            max_anchors=max_anchors,
            red=red,
            checkpoint_dir=checkpoint_dir,
            checkpoint_every=checkpoint_every,
            method_options=method_options,
            manifest_path=manifest_path,
            leakage_threshold=leakage_threshold,
            mesh=mesh,
            strict_sizes=strict_sizes,
            progress=progress,
        )


def _split(
    store_or_array,
    wanted,
    *,
    method,
    key,
    labels,
    groups,
    exclude_labels,
    sample_idx,
    metric,
    chunk_size,
    max_anchors,
    red,
    checkpoint_dir,
    checkpoint_every,
    method_options,
    manifest_path,
    leakage_threshold,
    mesh,
    strict_sizes,
    progress,
) -> Split:
    data = pipeline.load_data(store_or_array, labels, groups, sample_idx, exclude_labels, mesh=mesh)
    counts = set_counts(wanted, data.sample_ids.shape[0])
    names = list(wanted)
    targets = counts
    feasible = None
    if data.unit is not None:
        feasible = pipeline.feasible_set_counts(data, names, counts, strict_sizes)
        targets = dict(zip(names, (int(v) for v in feasible.achieved), strict=True))
    pipeline.apply_reduce(data, red, key)
    settings = pipeline.Settings(
        method=method,
        key=key,
        metric=metric,
        method_options=method_options,
        chunk_size=chunk_size,
        max_anchors=max_anchors,
        checkpoint_every=checkpoint_every,
        mesh=mesh,
    )
    construction = None
    if isinstance(method, str) and method == "auto":
        options = pipeline.check_options("auto", pipeline.AutoSplitOptions, method_options)
        assignment, construction = pipeline.representative_assignment(
            data,
            [targets[n] for n in names],
            key,
            options,
            metric=metric,
            mesh=mesh,
            progress=progress,
        )
        members = [np.flatnonzero(assignment == i) for i in range(len(names))]
    else:
        pipeline.resolve_method(method, 1, 1)  # an unknown method fails before any work
        members = _fill_in_order(data, names, targets, settings, checkpoint_dir, red, progress)
        if data.unit is not None:
            members = pipeline.pack_sets(
                data, names, counts, feasible.achieved.tolist(), members, key
            )
        assignment = np.full(data.sample_ids.shape[0], -1, np.int32)
        for i, chosen in enumerate(members):
            assignment[chosen] = i
    group_counts = None
    if feasible is not None:
        achieved = {n: int(len(m)) for n, m in zip(names, members, strict=True)}
        group_counts = {
            "requested": dict(counts),
            "achieved": achieved,
            "exact": achieved == counts,
            "optimal": bool(feasible.optimal) and achieved == targets,
        }
        if achieved != counts:
            warnings.warn(
                f"split: whole groups cannot meet the set counts {counts}; used the nearest "
                f"reachable counts {achieved} (manifest 'group_counts'; strict_sizes=True "
                "raises instead)",
                stacklevel=3,
            )
    result = Split()
    for name, chosen in zip(names, members, strict=True):
        result[name] = data.sample_ids[chosen].astype(np.int64)
    _check_groups_whole(data, assignment)
    leaks = None
    if leakage_threshold is not None:
        leaks = _leaks(data, names, assignment, leakage_threshold, metric)
    manifest = {
        "format": "goldener-jax.split",
        "sets": {
            n: {"requested": _jsonable(wanted[n]), "count": int(len(result[n]))} for n in names
        },
        "counts_planned": counts,
        "method": method if isinstance(method, str) else repr(method),
        "construction": construction,
        "metric": metric,
        "key": [int(v) for v in np.ravel(pipeline.key_data(key))],
        "chunk_size": chunk_size,
        "reduce": red,
        "data": data.fingerprint,
        "label_counts": _label_counts(data, names, assignment),
        "groups": data.unit is not None,
        "group_counts": group_counts,
        "leakage": None
        if leaks is None
        else {"threshold": leakage_threshold, "pairs": len(leaks), "examples": leaks[:20]},
        "indices": {n: [int(v) for v in result[n]] for n in names},
    }
    result.manifest = manifest
    result.manifest_path = _write_manifest(manifest, manifest_path, store_or_array)
    result.leaks = leaks
    return result


def _fill_in_order(
    data, names, counts, settings, checkpoint_dir, red, progress
) -> list[np.ndarray]:
    """The samples of each set, in selection order: each set but the last a selection over what
    earlier sets left (the key folded with the set's index), the last set the rest."""
    num_samples = data.sample_ids.shape[0]
    alive = np.ones(num_samples, bool)
    members = []
    for i, name in enumerate(names):
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
            out = pipeline.run_selection(
                data,
                counts[name],
                dataclasses.replace(settings, key=jax.random.fold_in(settings.key, i)),
                alive=alive,
                anchor_samples=np.zeros((0,), np.int64),
                checkpoint_dir=None
                if checkpoint_dir is None
                else os.path.join(os.fspath(checkpoint_dir), f"set-{i}"),
                progress=progress,
                desc=f"split: {name}",
                pack=False,  # short greedy picks are packed with all sets (_pack_sets)
                base_config={
                    "reduce": red,
                    "kind": "split",
                    "set": name,
                    "sets": counts,
                    "taken_before": int(num_samples - np.count_nonzero(alive)),
                },
            )
            chosen = out.chosen
        members.append(chosen)
        alive[chosen] = False
    return members


def _check_groups_whole(data, assignment: np.ndarray) -> None:
    if data.unit is None:
        return
    per_unit = {}
    for s, u in enumerate(data.unit.tolist()):
        per_unit.setdefault(u, set()).add(int(assignment[s]))
    if any(len(v) != 1 for v in per_unit.values()):  # pragma: no cover - an invariant
        raise RuntimeError("internal error: a group straddles two sets")


def _label_counts(data, names, assignment: np.ndarray) -> dict | None:
    if data.label_matrix is None:
        return None
    return {
        name: {
            str(lab): int(np.count_nonzero(data.label_matrix[assignment == i, j]))
            for j, lab in enumerate(data.label_names)
        }
        for i, name in enumerate(names)
    }


def _leaks(data, names, assignment, threshold, metric) -> list:
    if not isinstance(threshold, (int, float)) or threshold <= 0:
        raise ValueError(f"leakage_threshold must be > 0, got {threshold!r}")
    vec_set = np.asarray(names, dtype=object)[assignment[data.vec_sample]]
    sample_of_vec = data.sample_ids[data.vec_sample]
    return split_leakage_pairs(data, vec_set, sample_of_vec, float(threshold), metric)


def _write_manifest(manifest: dict, manifest_path, store_or_array) -> str | None:
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
    return manifest_path


def _jsonable(v):
    return v.item() if isinstance(v, np.generic) else v


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
