"""Labelling rounds: what is labelled, what was selected when, how, and what each round asked for.

Active learning runs in rounds: choose samples to label, label them, choose more that add to what
is labelled, and so on. :class:`Rounds` keeps that history for one pool (a
:class:`~goldener_jax.FeatureStore` or an array of vectors) in a human-readable JSON file:

* ``select(size, key=...)`` runs :func:`goldener_jax.select` with every sample already labelled or
  picked by an earlier round as ``anchors`` (anchor-aware methods build on them and they are
  never picked again) and ``labels=False`` (the selection never sees ground truth, not even a
  store's labels), and records the round: what it asked for (size, method, options, key), what
  ran (the method ``"auto"`` resolved to, its options, the full ``Selection.config``), when, how
  long, and the picks in selection order;
* ``label(indices, labels)`` records the labels an annotator gave (only for picked samples,
  unless ``allow_unselected=True``);
* ``labelled``, ``pending``, ``history`` read it back, in this process or a later one.

The file is written atomically after every change (a temporary file, flushed, then
``os.replace``), so a crash leaves the previous or the new state, never half of one. It is
validated when it is opened: a malformed field raises :class:`RoundsError` naming it (e.g.
``rounds[1].indices[3]: expected a sample index in [0, 1257), got 5000``). There is no pickle:
labels are JSON ints or strings. A second process that changed the file after this one opened it
is detected when this one saves (:class:`RoundsConflictError`), rather than silently overwritten.
"""

from __future__ import annotations

import dataclasses
import datetime
import inspect
import json
import os
import re
import tempfile
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from goldener_jax._allocation import count_from_size, exact_ratio

__all__ = ["Labelled", "Round", "Rounds", "RoundsConflictError", "RoundsError"]

FORMAT = "goldener-jax rounds"
VERSION = 1
# select's arguments a round decides itself: the anchors are the labelled / picked samples, and
# the selection must not see labels (an active-learning round labels what it picked, after).
_OWNED_ARGS = ("anchors", "labels", "exclude_labels", "sample_idx", "size_of")


class RoundsError(ValueError):
    """A rounds file that is not valid (the message names the field), or a pool it does not fit."""


class RoundsConflictError(RuntimeError):
    """Another process changed the rounds file after this one read it."""


class Labelled(NamedTuple):
    """Labelled samples, in the order they were labelled.

    Attributes:
      indices: int64 ``[n]`` sample indices.
      labels: ``[n]`` their labels (ints or strings, as given).
    """

    indices: np.ndarray
    labels: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class Round:
    """One selection round, as recorded.

    Attributes:
      round: its position, 0 for the first.
      asked: what the caller asked for: ``size`` (as given), ``method`` (as given: ``"auto"``, a
        name, or the repr of a rule), ``method_options``.
      count: the number of samples picked.
      method: the method that ran (what ``"auto"`` resolved to).
      options: that method's full options.
      key: the key's data (``jax.random.key_data``), enough to rerun the round.
      anchors: how many samples were anchors (labelled or picked before this round).
      indices: int64 ``[count]`` the picks, in selection order.
      time: when the selection finished, ISO 8601 UTC.
      seconds: how long ``select`` took.
      config: ``Selection.config`` as ``select`` returned it.
    """

    round: int
    asked: dict
    count: int
    method: str
    options: dict
    key: list
    anchors: int
    indices: np.ndarray
    time: str
    seconds: float
    config: dict

    def to_json(self) -> dict:
        """The round as the file keeps it."""
        d = dataclasses.asdict(self)
        d["indices"] = [int(i) for i in self.indices]
        return d

    def __eq__(self, other) -> bool:  # field by field, the indices as values
        return isinstance(other, Round) and self.to_json() == other.to_json()

    __hash__ = None


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _pool_of(store_or_array) -> tuple[Any, dict, str | None]:
    """``(data for select, pool record, default file path or None)``."""
    from goldener_jax.store import FeatureStore

    if isinstance(store_or_array, (str, os.PathLike)):
        store_or_array = FeatureStore.open(store_or_array)
    if isinstance(store_or_array, FeatureStore):
        store = store_or_array
        pool = {
            "kind": "store",
            "num_samples": int(store.num_samples),
            "dim": int(store.dim),
            "extractor": str(store.extractor_fingerprint),
        }
        path = store.path
        if isinstance(path, str) and path.startswith("file://"):
            path = path[len("file://") :]
        default = None
        if isinstance(path, str) and "://" not in path:
            # Next to the store, not inside it: the store's directory is the store's own.
            default = os.path.abspath(path).rstrip(os.sep) + ".rounds.json"
        return store, pool, default
    x = store_or_array
    if not hasattr(x, "shape"):
        x = np.asarray(x)
    if len(x.shape) != 2:
        raise ValueError(
            f"store_or_array must be a FeatureStore, its path or a 2-D array [n, d] of vectors, "
            f"got shape {tuple(x.shape)}"
        )
    pool = {
        "kind": "array",
        "num_samples": int(x.shape[0]),
        "dim": int(x.shape[1]),
        "extractor": None,
    }
    return x, pool, None


def _label_array(values: list) -> np.ndarray:
    """The labels as one array: ints, strings, or (both kinds in one file) objects, each label
    as recorded (one NumPy array of both once turned the ints into strings)."""
    if len({type(v) for v in values}) > 1:
        out = np.empty(len(values), object)
        out[:] = values
        return out
    return np.asarray(values)


def _check_label_value(v, where: str):
    """A label as JSON keeps it: a Python int or str (NumPy scalars converted)."""
    if isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{where}: labels must be ints or strings, got the bool {v!r}")
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (str, np.str_)):
        return str(v)
    raise TypeError(f"{where}: labels must be ints or strings, got {type(v).__name__} {v!r}")


class _Checker:
    """Field-by-field validation of a loaded rounds file; every error names the field."""

    def __init__(self, path):
        self.path = path

    def fail(self, where: str, msg: str):
        raise RoundsError(f"rounds file {self.path!r}: {where}: {msg}")

    def typed(self, value, types, where: str, what: str):
        if isinstance(value, bool) and bool not in (
            types if isinstance(types, tuple) else (types,)
        ):
            self.fail(where, f"expected {what}, got {value!r}")
        if not isinstance(value, types):
            self.fail(where, f"expected {what}, got {type(value).__name__} {value!r:.80}")
        return value

    def keys(self, d, expected, where: str):
        self.typed(d, dict, where or "top level", "a JSON object")
        missing = [k for k in expected if k not in d]
        extra = [k for k in d if k not in expected]
        if missing:
            self.fail(where or "top level", f"missing field(s) {missing}")
        if extra:
            self.fail(where or "top level", f"unknown field(s) {extra} (expected {list(expected)})")

    def index(self, v, n: int, where: str) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < n:
            self.fail(where, f"expected a sample index in [0, {n}), got {v!r}")
        return v


_TOP = ("format", "version", "revision", "pool", "rounds", "labels")
_POOL = ("kind", "num_samples", "dim", "extractor")
_ROUND = tuple(f.name for f in dataclasses.fields(Round))
_ASKED = ("size", "method", "method_options")
_LABEL = ("index", "label", "round", "time")


def _validate(doc, path) -> None:
    c = _Checker(path)
    c.keys(doc, _TOP, "")
    if doc["format"] != FORMAT:
        c.fail("format", f"expected {FORMAT!r}, got {doc['format']!r}")
    if doc["version"] != VERSION:
        c.fail("version", f"this goldener-jax reads version {VERSION}, got {doc['version']!r}")
    c.typed(doc["revision"], int, "revision", "an int")
    pool = doc["pool"]
    c.keys(pool, _POOL, "pool")
    if pool["kind"] not in ("store", "array"):
        c.fail("pool.kind", f"expected 'store' or 'array', got {pool['kind']!r}")
    for name in ("num_samples", "dim"):
        c.typed(pool[name], int, f"pool.{name}", "an int")
        if pool[name] < 1:
            c.fail(f"pool.{name}", f"expected an int >= 1, got {pool[name]}")
    if pool["extractor"] is not None:
        c.typed(pool["extractor"], str, "pool.extractor", "a string or null")
    n = pool["num_samples"]
    c.typed(doc["rounds"], list, "rounds", "a list")
    seen = set()
    for r, rnd in enumerate(doc["rounds"]):
        w = f"rounds[{r}]"
        c.keys(rnd, _ROUND, w)
        if rnd["round"] != r:
            c.fail(f"{w}.round", f"expected {r} (rounds are kept in order), got {rnd['round']!r}")
        c.keys(rnd["asked"], _ASKED, f"{w}.asked")
        size = rnd["asked"]["size"]
        if isinstance(size, bool) or not isinstance(size, (int, float)):
            c.fail(f"{w}.asked.size", f"expected a number, got {size!r}")
        c.typed(rnd["asked"]["method"], str, f"{w}.asked.method", "a string")
        if rnd["asked"]["method_options"] is not None:
            c.typed(rnd["asked"]["method_options"], dict, f"{w}.asked.method_options", "an object")
        c.typed(rnd["count"], int, f"{w}.count", "an int")
        c.typed(rnd["method"], str, f"{w}.method", "a string")
        c.typed(rnd["options"], dict, f"{w}.options", "an object")
        c.typed(rnd["key"], list, f"{w}.key", "a list of ints")
        for j, v in enumerate(rnd["key"]):
            c.typed(v, int, f"{w}.key[{j}]", "an int")
        c.typed(rnd["anchors"], int, f"{w}.anchors", "an int")
        c.typed(rnd["indices"], list, f"{w}.indices", "a list of sample indices")
        if len(rnd["indices"]) != rnd["count"]:
            c.fail(
                f"{w}.indices",
                f"expected {rnd['count']} indices (count), got {len(rnd['indices'])}",
            )
        for j, v in enumerate(rnd["indices"]):
            c.index(v, n, f"{w}.indices[{j}]")
            if v in seen:
                c.fail(f"{w}.indices[{j}]", f"sample {v} was already picked by an earlier pick")
            seen.add(v)
        c.typed(rnd["time"], str, f"{w}.time", "an ISO 8601 time string")
        try:
            datetime.datetime.fromisoformat(rnd["time"])
        except ValueError:
            c.fail(f"{w}.time", f"expected an ISO 8601 time string, got {rnd['time']!r}")
        c.typed(rnd["seconds"], (int, float), f"{w}.seconds", "a number")
        c.typed(rnd["config"], dict, f"{w}.config", "an object")
    c.typed(doc["labels"], list, "labels", "a list")
    picks = [set(r["indices"]) for r in doc["rounds"]]
    labelled = set()
    for j, entry in enumerate(doc["labels"]):
        w = f"labels[{j}]"
        c.keys(entry, _LABEL, w)
        i = c.index(entry["index"], n, f"{w}.index")
        if i in labelled:
            c.fail(f"{w}.index", f"sample {i} is listed twice")
        labelled.add(i)
        lab = entry["label"]
        if isinstance(lab, bool) or not isinstance(lab, (int, str)):
            c.fail(f"{w}.label", f"expected an int or a string, got {lab!r}")
        rr = entry["round"]
        if rr is not None and (
            isinstance(rr, bool) or not isinstance(rr, int) or not 0 <= rr < len(doc["rounds"])
        ):
            c.fail(
                f"{w}.round", f"expected null or a round in [0, {len(doc['rounds'])}), got {rr!r}"
            )
        if rr is not None and i not in picks[rr]:
            c.fail(f"{w}.round", f"sample {i} is not a pick of round {rr}")
        c.typed(entry["time"], str, f"{w}.time", "an ISO 8601 time string")


_NUMBER_LIST = re.compile(r"\[\s*(-?\d[-\d.eE+]*(?:,\s*-?\d[-\d.eE+]*)*)\s*\]")


def _dumps(doc: dict) -> str:
    """Indented JSON with lists of numbers (indices, keys) on one line: readable and diffable."""
    text = json.dumps(doc, indent=1)
    return (
        _NUMBER_LIST.sub(
            lambda m: "[" + ", ".join(m.group(1).replace(",", " ").split()) + "]", text
        )
        + "\n"
    )


def _write_atomic(path: str, doc: dict) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(_dumps(doc))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # the old file or the new one, never half of one
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _read(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise RoundsError(f"rounds file {path!r} is not valid JSON: {e}") from e


class Rounds:
    """The labelling rounds of one pool, kept in a JSON file (see the module docstring).

    Open with :meth:`Rounds.open`; it creates the file on the first change.
    """

    def __init__(self, data, pool: dict, path: str, doc: dict, on_disk: bool):
        self._data = data
        self._pool = pool
        self.path = path
        self._doc = doc
        self._on_disk = on_disk

    @classmethod
    def open(cls, store_or_array, path=None) -> Rounds:
        """Opens (or starts) the rounds of a pool.

        Args:
          store_or_array: a :class:`~goldener_jax.FeatureStore`, its path, or an array ``[n, d]``
            of vectors (one per sample) to select from.
          path: the JSON file. Default for a local store: ``<store directory>.rounds.json`` next
            to it; required for an array or a store behind a URL.

        Returns:
          The :class:`Rounds`; its history is empty when the file does not exist yet.

        Raises:
          RoundsError: the file is malformed (the message names the field), or it was written
            for another pool (different sample count, vector width or store extractor).
        """
        data, pool, default = _pool_of(store_or_array)
        if path is None:
            if default is None:
                raise ValueError(
                    "path is required for an array or a store behind a URL (where to keep the "
                    "rounds JSON file)"
                )
            path = default
        path = os.path.abspath(os.fspath(path))
        if not os.path.exists(path):
            doc = {
                "format": FORMAT,
                "version": VERSION,
                "revision": 0,
                "pool": pool,
                "rounds": [],
                "labels": [],
            }
            return cls(data, pool, path, doc, on_disk=False)
        doc = _read(path)
        _validate(doc, path)
        for name in _POOL:
            if doc["pool"][name] != pool[name]:
                raise RoundsError(
                    f"rounds file {path!r}: pool.{name}: the file was written for "
                    f"{doc['pool'][name]!r}, the pool given has {pool[name]!r} (another pool? use "
                    "another path)"
                )
        return cls(data, pool, path, doc, on_disk=True)

    # ------------------------------------------------------------------ reading
    @property
    def num_samples(self) -> int:
        """Samples in the pool."""
        return self._pool["num_samples"]

    @property
    def history(self) -> tuple[Round, ...]:
        """Every round, first to last."""
        return tuple(
            Round(**{**r, "indices": np.asarray(r["indices"], np.int64)})
            for r in self._doc["rounds"]
        )

    @property
    def labelled(self) -> Labelled:
        """The labelled samples and their labels, in labelling order."""
        entries = self._doc["labels"]
        return Labelled(
            np.asarray([e["index"] for e in entries], np.int64),
            _label_array([e["label"] for e in entries]),
        )

    @property
    def selected(self) -> np.ndarray:
        """int64: every sample picked by a round, round after round, in selection order."""
        return np.asarray([i for r in self._doc["rounds"] for i in r["indices"]], np.int64)

    @property
    def pending(self) -> np.ndarray:
        """int64: picked samples without a label yet, in selection order."""
        done = {e["index"] for e in self._doc["labels"]}
        return np.asarray([i for i in self.selected.tolist() if i not in done], np.int64)

    def to_json(self) -> dict:
        """The whole record, as in the file."""
        return json.loads(json.dumps(self._doc))

    def __repr__(self) -> str:
        return (
            f"Rounds({self.path!r}, rounds={len(self._doc['rounds'])}, "
            f"labelled={len(self._doc['labels'])}, pending={self.pending.size})"
        )

    # ------------------------------------------------------------------ changing
    def _save(self) -> None:
        # Optimistic check: the file must still be the revision this object read (or absent,
        # when this object started it); another writer in between would otherwise be lost.
        expected = self._doc["revision"] if self._on_disk else None
        found = None
        if os.path.exists(self.path):
            on_disk = _read(self.path)
            found = on_disk.get("revision") if isinstance(on_disk, dict) else None
        if found != expected:
            raise RoundsConflictError(
                f"rounds file {self.path!r} was changed by someone else since it was read "
                f"(revision {found!r} on disk, expected {expected!r}); open it again"
            )
        doc = {**self._doc, "revision": self._doc["revision"] + (1 if self._on_disk else 0)}
        _write_atomic(self.path, doc)
        self._doc = doc
        self._on_disk = True

    def _count(self, size) -> int:
        n = self.num_samples
        if isinstance(size, bool) or not isinstance(size, (int, float, np.integer, np.floating)):
            raise TypeError(f"size must be an int >= 1 or a float in (0, 1], got {size!r}")
        if isinstance(size, (int, np.integer)):
            if size < 1:
                raise ValueError(f"size must be an int >= 1 or a float in (0, 1], got {size!r}")
            return int(size)
        if not 0.0 < float(size) <= 1.0:
            raise ValueError(f"size must be an int >= 1 or a float in (0, 1], got {size!r}")
        # A fraction of the whole pool (every round of 2% adds 2% of the pool), not of the
        # samples still unpicked as select's own float size would; select's exact rounding.
        return count_from_size(size, n)

    def select(self, size, *, key, method="auto", method_options: Mapping | None = None, **kwargs):
        """Selects the next round's samples and records the round.

        Runs ``goldener_jax.select(pool, size, size_of="pool", anchors=<labelled and picked
        samples>, labels=False, method=method, key=key, ...)``: labels are never seen by the
        selection, and no sample is picked twice.

        Args:
          size: an int (samples to pick) or a float in (0, 1]: that fraction of the *whole*
            pool (``ceil(size x num_samples)``), so three rounds of ``0.02`` pick 6% in all.
          key: a ``jax.random.key`` (recorded: the round can be rerun).
          method: as ``select``'s ``method`` (default ``"auto"``: with anchors it resolves to an
            anchor-aware method).
          method_options: as ``select``'s ``method_options``.
          **kwargs: other ``select`` arguments (``metric``, ``chunk_size``, ``reduce``, ``mesh``,
            ``checkpoint_dir``, ``progress``, ...); ``anchors``, ``labels``, ``exclude_labels``,
            ``sample_idx`` and ``size_of`` are the round's own and are refused.

        Returns:
          The :class:`~goldener_jax.select.Selection` of this round.

        Raises:
          RoundsError: the pool's vectors differ from those of the earlier rounds.
        """
        from goldener_jax.select import select

        owned = sorted(set(kwargs) & set(_OWNED_ARGS))
        if owned:
            raise TypeError(
                f"Rounds.select sets {owned} itself (anchors: the labelled and picked samples; "
                "labels: never seen by a round's selection); do not pass them"
            )
        count = self._count(size)
        # The decimal asked for (np.float32(0.1) recorded as 0.1, not 0.10000000149...).
        asked_size = (
            float(exact_ratio(size)) if isinstance(size, (float, np.floating)) else int(size)
        )
        anchors = np.union1d(self.selected, self.labelled.indices).astype(np.int64)
        if "size_of" in inspect.signature(select).parameters:
            # select sizes a float against the whole pool itself, and records size and size_of.
            kwargs["size_of"] = "pool"
        else:
            size = count
        t0 = time.perf_counter()
        sel = select(
            self._data,
            size,
            key=key,
            method=method,
            method_options=method_options,
            anchors=anchors if anchors.size else None,
            labels=False,
            **kwargs,
        )
        seconds = time.perf_counter() - t0
        config = json.loads(json.dumps(sel.config, default=str))
        previous = self._doc["rounds"][-1]["config"].get("data") if self._doc["rounds"] else None
        if previous is not None and previous != config.get("data"):
            raise RoundsError(
                f"rounds file {self.path!r}: the pool's vectors changed since round "
                f"{len(self._doc['rounds']) - 1} (data fingerprint {config.get('data')!r}, "
                f"recorded {previous!r}); this round was not recorded"
            )
        rnd = Round(
            round=len(self._doc["rounds"]),
            asked={
                "size": asked_size,
                "method": method if isinstance(method, str) else repr(method),
                "method_options": None if method_options is None else dict(method_options),
            },
            count=int(sel.indices.shape[0]),
            method=str(config["method"]),
            options=dict(config.get("options") or {}),
            key=[int(v) for v in config.get("key", [])],
            anchors=int(anchors.size),
            indices=np.asarray(sel.indices, np.int64),
            time=_now(),
            seconds=round(seconds, 3),
            config=config,
        )
        doc = json.loads(json.dumps(rnd.to_json(), default=str))
        self._doc = {**self._doc, "rounds": [*self._doc["rounds"], doc]}
        try:
            self._save()
        except BaseException:
            self._doc = {**self._doc, "rounds": self._doc["rounds"][:-1]}
            raise
        return sel

    def label(
        self, indices, labels, *, allow_unselected: bool = False, relabel: bool = False
    ) -> Labelled:
        """Records labels given to samples.

        Args:
          indices: sample indices ``[n]`` (distinct).
          labels: their labels ``[n]``, ints or strings.
          allow_unselected: accept samples no round picked (e.g. labelled before the first round);
            they are recorded with ``round: null`` and are anchors of the next rounds.
          relabel: accept a label that differs from the one already recorded (a fixed label
            issue); otherwise that raises. Recording the same label again is a no-op.

        Returns:
          :attr:`labelled` after the change.
        """
        idx = np.asarray(indices)
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise TypeError(
                f"indices must be a 1-D array of sample indices, got {idx.dtype} of shape "
                f"{idx.shape}"
            )
        idx = idx.astype(np.int64)
        labels = list(labels.tolist() if isinstance(labels, np.ndarray) else labels)
        if len(labels) != idx.size:
            raise ValueError(
                f"labels must have one label per index ({idx.size}), got {len(labels)}"
            )
        n = self.num_samples
        bad = idx[(idx < 0) | (idx >= n)]
        if bad.size:
            raise ValueError(f"indices must be sample indices in [0, {n}), got {bad[:5].tolist()}")
        uniq, counts = np.unique(idx, return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"indices must be distinct, got {uniq[counts > 1][:5].tolist()} twice")
        values = [_check_label_value(v, f"labels[{j}]") for j, v in enumerate(labels)]
        picked_in = {i: r["round"] for r in self._doc["rounds"] for i in r["indices"]}
        if not allow_unselected:
            missing = [int(i) for i in idx if int(i) not in picked_in]
            if missing:
                raise ValueError(
                    f"samples {missing[:5]} were not picked by any round; pass "
                    "allow_unselected=True to record labels of samples chosen otherwise"
                )
        entries = [dict(e) for e in self._doc["labels"]]
        where = {e["index"]: j for j, e in enumerate(entries)}
        now = _now()
        changed = False
        for i, v in zip(idx.tolist(), values, strict=True):
            if i in where:
                old = entries[where[i]]["label"]
                if old == v:
                    continue
                if not relabel:
                    raise ValueError(
                        f"sample {i} is already labelled {old!r}, got {v!r}; pass relabel=True "
                        "to replace a label"
                    )
                entries[where[i]].update(label=v, time=now)
            else:
                where[i] = len(entries)
                entries.append({"index": i, "label": v, "round": picked_in.get(i), "time": now})
            changed = True
        if changed:
            old_doc = self._doc
            self._doc = {**self._doc, "labels": entries}
            try:
                self._save()
            except BaseException:
                self._doc = old_doc
                raise
        return self.labelled
