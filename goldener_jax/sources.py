"""Data sources for :func:`goldener_jax.describe`: one batch protocol over many kinds of data.

Every source is a :class:`Source`: it knows its length ``N`` (number of samples), has a
``fingerprint()`` (name, split, length and the keys it reads) that a feature store records, and
yields batches as ``dict[str, np.ndarray]`` for *batch indices* of a fixed ``batch_size``: batch
``b`` holds samples ``[b * batch_size, min((b + 1) * batch_size, N))``. The sample index of a
row is therefore its position in the source, whatever the batch size.

Kinds of source:

* :class:`ArraySource` -- a NumPy array or a dict of arrays (random access).
* :class:`RandomAccessSource` -- anything with ``__len__`` and ``__getitem__(i) -> dict`` (one
  sample), e.g. ``tfds.data_source(...)`` or a grain ``MapDataset``. Random access means a resumed
  run computes only the batches still missing (it reads the done ones once more, without
  computing them, to check their source digests unless ``describe(check_source=False)``).
* :class:`TFDSSource` -- a TFDS dataset by name / split / data_dir through ``tfds.data_source``.
* :class:`IterableSource` -- any *re-iterable* of batches (``dict[str, np.ndarray]`` of any batch
  sizes). Iterating twice must give the same samples in the same order; the source re-batches
  them to ``batch_size`` and a resumed run reads through (but does not compute) the done part.

:func:`as_source` turns any of the above (or a ready :class:`Source`) into a :class:`Source`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "ArraySource",
    "IterableSource",
    "RandomAccessSource",
    "Source",
    "TFDSSource",
    "as_source",
]


def _check_key(key, name: str, *, optional: bool) -> str | None:
    if key is None and optional:
        return None
    if not isinstance(key, str) or not key:
        expected = "a non-empty str or None" if optional else "a non-empty str"
        raise TypeError(f"{name} must be {expected}, got {key!r}")
    return key


def _check_batch(batch: Any, keys: Sequence[str], where: str) -> dict[str, np.ndarray]:
    if not isinstance(batch, Mapping):
        raise TypeError(
            f"{where} must be a dict of arrays (dict[str, np.ndarray]), got {type(batch).__name__}"
        )
    out = {}
    n = None
    for key in keys:
        if key not in batch:
            raise KeyError(
                f"{where} has no key {key!r} (keys present: {sorted(map(str, batch))}); "
                f"set data_key / label_key / group_key to the names your data uses"
            )
        value = np.asarray(batch[key])
        if value.ndim == 0:
            raise ValueError(f"{where}[{key!r}] must have a leading batch axis, got a scalar")
        if n is None:
            n = value.shape[0]
        elif value.shape[0] != n:
            raise ValueError(
                f"{where} has arrays of different lengths: {keys[0]!r} has {n} rows, "
                f"{key!r} has {value.shape[0]}"
            )
        out[key] = value
    return out


class Source:
    """Base class of the batch protocol used by :func:`goldener_jax.describe`.

    Subclasses implement ``__len__``, :meth:`iter_batches` and set ``name``, ``split``,
    ``data_key``, ``label_key``, ``group_key``, ``mask_key``.
    """

    name: str = "source"
    split: str | None = None
    data_key: str = "image"
    label_key: str | None = None
    group_key: str | None = None
    mask_key: str | None = None

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def keys(self) -> tuple[str, ...]:
        """The keys every batch carries: data first, then mask, labels, groups when set."""
        keys = [self.data_key]
        keys += [k for k in (self.mask_key, self.label_key, self.group_key) if k is not None]
        return tuple(keys)

    @property
    def random_access(self) -> bool:
        """True when batches can be read in any order (a resumed run computes only what is
        missing)."""
        return True

    def fingerprint(self) -> dict:
        """What a feature store records and compares on reopen (JSON-able)."""
        return {
            "name": self.name,
            "split": self.split,
            "length": len(self),
            "data_key": self.data_key,
            "mask_key": self.mask_key,
            "label_key": self.label_key,
            "group_key": self.group_key,
        }

    def num_batches(self, batch_size: int) -> int:
        return math.ceil(len(self) / batch_size)

    def batch_bounds(self, b: int, batch_size: int) -> tuple[int, int]:
        start = b * batch_size
        return start, min(start + batch_size, len(self))

    def iter_batches(
        self, batch_size: int, batch_indices: Iterable[int]
    ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """Yields ``(b, batch)`` for the requested batch indices (increasing), each batch a
        ``dict[str, np.ndarray]`` holding :attr:`keys` for samples :meth:`batch_bounds`."""
        raise NotImplementedError  # pragma: no cover - abstract


class ArraySource(Source):
    """Samples held in memory: one array (the data) or a dict of arrays of equal length.

    Args:
        data: Array of shape ``[N, ...]`` or a mapping holding ``data_key`` (and the label / group
            / mask keys when given).
        data_key: Name of the model input in ``data`` (and in the batches).
        label_key: Optional key of integer labels ``[N]`` or multi-hot labels ``[N, L]``.
        group_key: Optional key of integer group ids ``[N]``.
        mask_key: Optional key of a validity mask passed to the extractor as ``mask=``.
        labels: Labels given separately from ``data`` (stored under ``label_key`` or ``"label"``).
        groups: Group ids given separately from ``data`` (under ``group_key`` or ``"group"``).
        name: Recorded in the store's source fingerprint (default ``"arrays"``).
        split: Recorded too (default ``None``).
    """

    def __init__(
        self,
        data,
        *,
        data_key: str = "image",
        label_key: str | None = None,
        group_key: str | None = None,
        mask_key: str | None = None,
        labels=None,
        groups=None,
        name: str = "arrays",
        split: str | None = None,
    ):
        self.data_key = _check_key(data_key, "data_key", optional=False)
        self.label_key = _check_key(label_key, "label_key", optional=True)
        self.group_key = _check_key(group_key, "group_key", optional=True)
        self.mask_key = _check_key(mask_key, "mask_key", optional=True)
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty str, got {name!r}")
        self.name, self.split = name, split
        if isinstance(data, Mapping):
            arrays = dict(data)
        elif hasattr(data, "shape") and hasattr(data, "dtype"):
            arrays = {self.data_key: data}
        else:
            raise TypeError(
                "data must be an array of shape [N, ...] or a dict of arrays, "
                f"got {type(data).__name__}"
            )
        if labels is not None:
            self.label_key = self.label_key or "label"
            arrays[self.label_key] = labels
        if groups is not None:
            self.group_key = self.group_key or "group"
            arrays[self.group_key] = groups
        where = "data" if not isinstance(data, Mapping) else "data (dict of arrays)"
        for key in self.keys:
            if key not in arrays:
                raise KeyError(
                    f"{where} has no key {key!r} (keys present: {sorted(map(str, arrays))})"
                )
        # Array-likes with a shape (NumPy, memmaps, zarr) are sliced lazily per batch.
        self._arrays = {
            k: arrays[k] if hasattr(arrays[k], "shape") else np.asarray(arrays[k])
            for k in self.keys
        }
        n = self._arrays[self.data_key].shape[0] if self._arrays[self.data_key].ndim else None
        if n is None:
            raise ValueError(f"{self.data_key!r} must have a leading sample axis, got a scalar")
        for key in self.keys[1:]:
            m = self._arrays[key].shape[0] if self._arrays[key].ndim else None
            if m != n:
                raise ValueError(
                    f"source and {key!r} have different lengths: {self.data_key!r} has {n} "
                    f"samples, {key!r} has {m if m is not None else 'a scalar'}; "
                    "expected one entry per sample"
                )
        self._n = int(n)

    def __len__(self) -> int:
        return self._n

    def iter_batches(self, batch_size, batch_indices):
        for b in batch_indices:
            start, stop = self.batch_bounds(b, batch_size)
            yield b, {k: np.asarray(v[start:stop]) for k, v in self._arrays.items()}


class RandomAccessSource(Source):
    """A random-access sequence of samples: ``len(seq)`` and ``seq[i] -> dict`` of per-sample
    arrays (``tfds.data_source``, a grain ``MapDataset``, a list of dicts...). Uses
    ``seq.__getitems__(indices)`` when present (one call per batch)."""

    def __init__(
        self,
        sequence,
        *,
        data_key: str = "image",
        label_key: str | None = None,
        group_key: str | None = None,
        mask_key: str | None = None,
        name: str = "sequence",
        split: str | None = None,
    ):
        if not (hasattr(sequence, "__len__") and hasattr(sequence, "__getitem__")):
            raise TypeError(
                "sequence must support len() and [i] (a random-access data source), "
                f"got {type(sequence).__name__}"
            )
        self.data_key = _check_key(data_key, "data_key", optional=False)
        self.label_key = _check_key(label_key, "label_key", optional=True)
        self.group_key = _check_key(group_key, "group_key", optional=True)
        self.mask_key = _check_key(mask_key, "mask_key", optional=True)
        self.name, self.split = name, split
        self._seq = sequence
        self._n = len(sequence)

    def __len__(self) -> int:
        return self._n

    def _read(self, start: int, stop: int) -> list:
        if hasattr(self._seq, "__getitems__"):
            return list(self._seq.__getitems__(list(range(start, stop))))
        return [self._seq[i] for i in range(start, stop)]

    def iter_batches(self, batch_size, batch_indices):
        for b in batch_indices:
            start, stop = self.batch_bounds(b, batch_size)
            samples = self._read(start, stop)
            for i, sample in enumerate(samples):
                if not isinstance(sample, Mapping):
                    raise TypeError(
                        f"sample {start + i} of source {self.name!r} must be a dict of arrays, "
                        f"got {type(sample).__name__}"
                    )
                missing = [k for k in self.keys if k not in sample]
                if missing:
                    raise KeyError(
                        f"sample {start + i} of source {self.name!r} has no key {missing[0]!r} "
                        f"(keys present: {sorted(map(str, sample))})"
                    )
            yield b, {k: np.stack([np.asarray(s[k]) for s in samples]) for k in self.keys}


class TFDSSource(RandomAccessSource):
    """A TFDS dataset in TFDS's on-disk format (``array_record``), read through
    ``tfds.data_source(name, split=..., data_dir=...)`` with random access.

    Reading needs only ``tensorflow-datasets`` (no TensorFlow); image features stored as encoded
    images need ``pillow`` to decode.
    """

    def __init__(
        self,
        name: str,
        *,
        split: str = "train",
        data_dir: str | None = None,
        data_key: str = "image",
        label_key: str | None = "label",
        group_key: str | None = None,
        mask_key: str | None = None,
    ):
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a TFDS dataset name (str), got {name!r}")
        import tensorflow_datasets as tfds

        try:
            data_source = tfds.data_source(name, split=split, data_dir=data_dir)
        except Exception as e:  # TFDS raises many kinds here (DatasetNotFoundError, ValueError)
            raise ValueError(
                f"could not open TFDS dataset {name!r} split {split!r} in data_dir={data_dir!r} "
                f"with tfds.data_source: {e}"
            ) from e
        super().__init__(
            data_source,
            data_key=data_key,
            label_key=label_key,
            group_key=group_key,
            mask_key=mask_key,
            name=f"tfds:{name}",
            split=split,
        )


class IterableSource(Source):
    """A re-iterable of batches (``dict[str, np.ndarray]``, any batch sizes), re-batched to the
    requested ``batch_size``.

    Iterating must be deterministic: every pass yields the same samples in the same order
    (sample ``i`` is the ``i``-th sample of the stream). A resumed run iterates from the start
    again and skips the computation, not the reading, of done batches.

    Args:
        batches: The re-iterable (a list of dicts, a generator *function*, an object whose
            ``__iter__`` starts over). A one-shot iterator is refused.
        length: Number of samples. When ``None`` it is counted with one extra pass over the data.
    """

    def __init__(
        self,
        batches,
        *,
        length: int | None = None,
        data_key: str = "image",
        label_key: str | None = None,
        group_key: str | None = None,
        mask_key: str | None = None,
        name: str = "iterable",
        split: str | None = None,
    ):
        if callable(batches) and not hasattr(batches, "__iter__"):
            factory = batches
        elif isinstance(batches, Iterator):
            raise TypeError(
                "batches is a one-shot iterator; describe needs a re-iterable (a list, or a "
                "function returning a fresh iterator) so that a resumed run sees the same order"
            )
        elif hasattr(batches, "__iter__"):
            factory = lambda: iter(batches)
        else:
            raise TypeError(f"batches must be a re-iterable of dicts, got {type(batches).__name__}")
        self._factory = factory
        self.data_key = _check_key(data_key, "data_key", optional=False)
        self.label_key = _check_key(label_key, "label_key", optional=True)
        self.group_key = _check_key(group_key, "group_key", optional=True)
        self.mask_key = _check_key(mask_key, "mask_key", optional=True)
        self.name, self.split = name, split
        if length is None:
            length = sum(
                len(_check_batch(batch, self.keys, f"batch {i}")[self.data_key])
                for i, batch in enumerate(self._factory())
            )
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 0:
            raise ValueError(f"length must be an int >= 0, got {length!r}")
        self._n = int(length)

    def __len__(self) -> int:
        return self._n

    @property
    def random_access(self) -> bool:
        return False

    def iter_batches(self, batch_size, batch_indices):
        wanted = iter(sorted(set(batch_indices)))
        target = next(wanted, None)
        if target is None:
            return
        pending: list[dict[str, np.ndarray]] = []
        have = 0  # samples in `pending`
        b = 0  # index of the batch being assembled
        seen = 0
        for i, raw in enumerate(self._factory()):
            batch = _check_batch(raw, self.keys, f"batch {i} of source {self.name!r}")
            pending.append(batch)
            n = len(batch[self.data_key])
            have += n
            seen += n
            while target is not None and have >= min(batch_size, len(self) - b * batch_size) > 0:
                size = min(batch_size, len(self) - b * batch_size)
                joined = {k: np.concatenate([p[k] for p in pending]) for k in self.keys}
                out = {k: v[:size] for k, v in joined.items()}
                rest = {k: v[size:] for k, v in joined.items()}
                pending, have = ([rest], have - size) if have > size else ([], 0)
                if b == target:
                    yield b, out
                    target = next(wanted, None)
                b += 1
            if target is None:
                return
        if target is not None:
            raise ValueError(
                f"source {self.name!r} ended after {seen} samples but length={len(self)}; "
                "the iterable must yield the same samples on every pass"
            )


def as_source(
    source,
    *,
    data_key: str = "image",
    label_key: str | None = None,
    group_key: str | None = None,
    mask_key: str | None = None,
    labels=None,
    groups=None,
) -> Source:
    """Wraps ``source`` in the :class:`Source` it fits.

    A :class:`Source` as is; an array or dict of arrays -> :class:`ArraySource`; a random-access
    sequence of per-sample dicts (not a list) -> :class:`RandomAccessSource`; a list or any other
    re-iterable of batches -> :class:`IterableSource`.
    """
    if isinstance(source, Source):
        if labels is not None or groups is not None:
            raise ValueError("labels= / groups= apply to array data; set them on the Source itself")
        # A key given here that the Source does not use would be dropped without a word (a store
        # without labels, found out only when curation asks for them).
        given = dict(label_key=label_key, group_key=group_key, mask_key=mask_key)
        if data_key != "image":
            given["data_key"] = data_key
        for name, value in given.items():
            if value is not None and value != getattr(source, name, None):
                raise ValueError(
                    f"{name}={value!r} does not match the Source's {name} "
                    f"({getattr(source, name, None)!r}); give the keys to the Source itself, "
                    f"e.g. ArraySource(arrays, {name}={value!r})"
                )
        return source
    keys = dict(data_key=data_key, label_key=label_key, group_key=group_key, mask_key=mask_key)
    if isinstance(source, Mapping) or (hasattr(source, "shape") and hasattr(source, "dtype")):
        return ArraySource(source, labels=labels, groups=groups, **keys)
    if labels is not None or groups is not None:
        raise ValueError(
            "labels= / groups= can only be given with array data; put them under label_key / "
            "group_key in the samples or batches instead"
        )
    if isinstance(source, (str, bytes)):
        raise TypeError(
            f"source must be arrays, a data source or an iterable of batches, got {source!r}; "
            "for a TFDS dataset by name use TFDSSource(name, split=..., data_dir=...)"
        )
    # A list is the documented "re-iterable of batches"; other sequences are per-sample sources.
    if (
        hasattr(source, "__len__")
        and hasattr(source, "__getitem__")
        and not isinstance(source, (list, tuple))
    ):
        return RandomAccessSource(source, **keys)
    if isinstance(source, Iterable) or callable(source):
        return IterableSource(source, **keys)
    raise TypeError(
        "source must be an array, a dict of arrays, a random-access data source, or a "
        f"re-iterable of batches, got {type(source).__name__}"
    )
