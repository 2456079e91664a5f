"""Incremental data: describe appends to a store, split and selection extend to a grown pool.

Appending is checked against a one-shot description of the grown source, file for file (every
array chunk with its crc32c, every zarr.json, the manifest), and by counting the samples that go
through the extractor (a host callback inside the jitted step records every batch it sees).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorstore as ts
from jax.experimental import io_callback

from goldener_jax import Selection, select, split
from goldener_jax.describe import SourceChangedError, describe
from goldener_jax.extend import extend_selection, extend_split
from goldener_jax.sources import ArraySource
from goldener_jax.store import FeatureStore, StoreCorruptError, StoreMismatchError

DIM_IN, DIM_OUT = 6, 5


class CountingExtractor:
    """``tanh(x @ w)`` (plus per-sample noise when given keys); records the sample ids (column 0
    of ``x``) of every batch the jitted step computes."""

    def __init__(self, seed: int = 0, log: list | None = None, fingerprint: str | None = None):
        self.w = np.random.RandomState(seed).randn(DIM_IN - 1, DIM_OUT).astype(np.float32)
        self.fingerprint = fingerprint or f"counting-{seed}"
        self.log = log

    def config(self):
        return {"kind": "counting", "seed": self.fingerprint}

    def _record(self, ids):
        self.log.append(np.asarray(ids).astype(np.int64))

    def __call__(self, x, *, mask=None, key=None):
        if self.log is not None:
            io_callback(self._record, None, x[:, 0], ordered=True)
        out = jnp.tanh(x[:, 1:] @ self.w)  # not the id column
        if key is not None:
            out = out + 0.1 * jax.vmap(lambda k: jax.random.normal(k, (DIM_OUT,)))(key)
        return out, x[:, 1] > -1.5  # some samples invalid: their rows are zero padding


def _data(n: int, seed: int = 1):
    rng = np.random.RandomState(seed)
    x = rng.randn(n, DIM_IN).astype(np.float32)
    x[:, 0] = np.arange(n)  # the sample id, exact in float32
    return x, rng.randint(0, 3, n), rng.randint(0, n // 4, n)


def _files(path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file of a store (its lock file excepted)."""
    out = {}
    for root, _, names in os.walk(path):
        for name in names:
            full = os.path.join(root, name)
            rel = os.path.relpath(full, path)
            if rel != ".goldener-jax.lock":
                with open(full, "rb") as f:
                    out[rel] = hashlib.sha256(f.read()).hexdigest()
    return out


def _arrays(store: FeatureStore) -> dict[str, np.ndarray]:
    out = store.read_rows(0, store.num_rows)
    out["labels"] = store.read_labels()
    out["groups"] = store.read_groups()
    out["done"] = store.done_batches()
    out["source_digest"] = store.read_source_digests()
    return out


def _assert_same_store(a_path, b_path):
    a, b = FeatureStore.open(a_path), FeatureStore.open(b_path)
    assert a.manifest == b.manifest
    arrays_a, arrays_b = _arrays(a), _arrays(b)
    for name in arrays_a:
        if arrays_a[name] is None:
            assert arrays_b[name] is None, name
            continue
        assert arrays_a[name].dtype == arrays_b[name].dtype, name
        assert arrays_a[name].tobytes() == arrays_b[name].tobytes(), f"{name} differs"
    files_a, files_b = _files(a_path), _files(b_path)
    assert sorted(files_a) == sorted(files_b)
    differ = [k for k in files_a if files_a[k] != files_b[k]]
    assert not differ, f"files differ: {differ[:5]}"
    assert a.verify().ok and b.verify().ok


def _source(x, y, g, n, *, name="arrays"):
    return ArraySource({"image": x[:n], "label": y[:n], "group": g[:n]},
                       label_key="label", group_key="group", name=name)  # fmt: skip


# ---------------------------------------------------------------- describe(append=True)


@pytest.mark.parametrize(
    "n_old, n_new, batch_size, with_key, dtype",
    [
        (1000, 500, 64, False, "float32"),  # the old last batch is partial (40 of 64): completed
        (1024, 476, 64, False, "float32"),  # the old store ends on a batch boundary
        (1000, 500, 48, True, "float32"),  # per-sample keys: the new samples keep their own keys
        (100, 57, 16, False, "bfloat16"),
    ],
)
def test_append_computes_only_new_samples_and_equals_one_shot(
    tmp_path, n_old, n_new, batch_size, with_key, dtype
):
    n = n_old + n_new
    x, y, g = _data(n)
    key = jax.random.key(7) if with_key else None
    log: list = []
    ex = CountingExtractor(log=log)
    kw = dict(batch_size=batch_size, key=key, dtype=dtype, progress=False)
    describe(_source(x, y, g, n_old), ex, tmp_path / "inc", **kw)
    seen_first = np.unique(np.concatenate(log))
    np.testing.assert_array_equal(seen_first, np.arange(n_old))
    log.clear()

    store = describe(_source(x, y, g, n), ex, tmp_path / "inc", append=True, **kw)
    assert store.num_samples == n and store.is_complete()
    # Only the new samples went through the extractor, each once, in the batches holding them.
    first_batch, last_batch = n_old // batch_size, -(-n // batch_size) - 1
    assert len(log) == last_batch - first_batch + 1
    per_call = [np.unique(ids) for ids in log]
    np.testing.assert_array_equal(np.concatenate(per_call), np.arange(n_old, n))

    describe(_source(x, y, g, n), CountingExtractor(), tmp_path / "one", **kw)
    _assert_same_store(tmp_path / "inc", tmp_path / "one")


def test_append_with_another_extractor_is_refused_naming_the_difference(tmp_path):
    x, y, g = _data(300)
    path = tmp_path / "s"
    describe(_source(x, y, g, 200), CountingExtractor(seed=0), path, batch_size=32, progress=False)
    before = _files(path)
    with pytest.raises(StoreMismatchError) as info:
        describe(
            _source(x, y, g, 300), CountingExtractor(seed=1), path, batch_size=32,
            progress=False, append=True,
        )  # fmt: skip
    message = str(info.value)
    assert "another extractor" in message
    assert "'counting-0' in store, 'counting-1' requested" in message  # the fingerprints
    assert "seed" in message  # the config key that differs
    assert _files(path) == before  # nothing written
    assert FeatureStore.open(path).num_samples == 200


@pytest.mark.parametrize(
    "case, error, pattern",
    [
        ("longer_without_append", StoreMismatchError, r"describes 200 samples.*append=True"),
        ("shorter_with_append", StoreMismatchError, r"holds 200 samples, the source only 150"),
        ("other_source_name", StoreMismatchError, r"another source: name: 'arrays' in store"),
        ("other_batch_size", StoreMismatchError, r"another layout: batch_size: 32 in store"),
        ("other_dtype", StoreMismatchError, r"another layout: dtype: 'float32' in store"),
        ("append_and_overwrite", ValueError, r"append=True and overwrite=True"),
        ("changed_old_sample", SourceChangedError, r"1 described batches changed.*batch 6"),
    ],
)
def test_append_refusals(tmp_path, case, error, pattern):
    x, y, g = _data(300)
    path = tmp_path / "s"
    describe(_source(x, y, g, 200), CountingExtractor(), path, batch_size=32, progress=False)
    before = _files(path)
    src, kw = _source(x, y, g, 300), dict(batch_size=32, append=True)
    if case == "longer_without_append":
        kw["append"] = False
    elif case == "shorter_with_append":
        src = _source(x, y, g, 150)
    elif case == "other_source_name":
        src = _source(x, y, g, 300, name="other")
    elif case == "other_batch_size":
        kw["batch_size"] = 16
    elif case == "other_dtype":
        kw["dtype"] = "bfloat16"
    elif case == "append_and_overwrite":
        kw["overwrite"] = True
    elif case == "changed_old_sample":
        x = x.copy()
        x[199, 3] += 1.0  # in the old partial last batch (samples 192..199 of batch 6)
        src = _source(x, y, g, 300)
    with pytest.raises(error, match=pattern):
        describe(src, CountingExtractor(), path, progress=False, **kw)
    assert _files(path) == before


def test_append_given_only_the_new_samples_asks_for_the_grown_source(tmp_path):
    """The new samples alone (more of them than the store holds) differ from every described
    batch: the refusal says append needs the grown source and does not offer
    redescribe_changed, which would replace every old description."""
    x, y, g = _data(450)
    path = tmp_path / "s"
    describe(_source(x, y, g, 200), CountingExtractor(), path, batch_size=32, progress=False)
    before = _files(path)
    new_only = ArraySource({"image": x[200:], "label": y[200:], "group": g[200:]},
                           label_key="label", group_key="group", name="arrays")  # fmt: skip
    with pytest.raises(SourceChangedError) as info:
        describe(new_only, CountingExtractor(), path, batch_size=32, progress=False, append=True)
    message = str(info.value)
    assert "7 of its 7 described batches differ from the source's first samples" in message
    assert "append=True needs the grown source (the described samples first" in message
    assert "redescribe_changed" not in message
    assert _files(path) == before


def test_append_to_a_missing_store_describes_everything_and_same_length_is_a_no_op(tmp_path):
    x, y, g = _data(100)
    log: list = []
    store = describe(
        _source(x, y, g, 100), CountingExtractor(log=log), tmp_path / "s", batch_size=32,
        progress=False, append=True,
    )  # fmt: skip
    assert store.num_samples == 100 and store.is_complete()
    before, calls = _files(tmp_path / "s"), len(log)
    describe(
        _source(x, y, g, 100), CountingExtractor(log=log), tmp_path / "s", batch_size=32,
        progress=False, append=True,
    )  # fmt: skip
    assert len(log) == calls and _files(tmp_path / "s") == before


def test_append_twice_equals_one_shot(tmp_path):
    x, y, g = _data(260)
    for n in (100, 170, 260):
        describe(
            _source(x, y, g, n), CountingExtractor(), tmp_path / "inc", batch_size=24,
            progress=False, append=True,
        )  # fmt: skip
    describe(_source(x, y, g, 260), CountingExtractor(), tmp_path / "one", batch_size=24,
             progress=False)  # fmt: skip
    _assert_same_store(tmp_path / "inc", tmp_path / "one")


@pytest.mark.parametrize("resized_before_kill", [0, 3])
def test_append_killed_between_manifest_and_resize_is_finished(
    tmp_path, monkeypatch, resized_before_kill
):
    """The grown manifest is the commit point: a run killed after writing it, with none or only
    some arrays resized, leaves a store that readers refuse (naming the fix) and that the next
    append finishes, equal to a one-shot description."""
    x, y, g = _data(300)
    path = str(tmp_path / "inc")
    describe(_source(x, y, g, 200), CountingExtractor(), path, batch_size=32, progress=False)

    original = FeatureStore._open_arrays

    def killed(kvspec, manifest, where, *, create):
        if manifest["layout"]["num_samples"] == 300:
            raise KeyboardInterrupt("killed after writing the grown manifest")
        return original(kvspec, manifest, where, create=create)

    monkeypatch.setattr(FeatureStore, "_open_arrays", staticmethod(killed))
    with pytest.raises(KeyboardInterrupt):
        describe(
            _source(x, y, g, 300), CountingExtractor(), path, batch_size=32, progress=False,
            append=True,
        )  # fmt: skip
    monkeypatch.setattr(FeatureStore, "_open_arrays", original)
    manifest = FeatureStore.peek_manifest(path)
    assert manifest["layout"]["num_samples"] == 300
    for name in ["vectors", "sample_idx", "valid", "labels", "done"][:resized_before_kill]:
        meta = manifest["arrays"][name]
        array = ts.open(
            {"driver": "zarr3", "kvstore": f"file://{path}/{name}/"}, open=True
        ).result()
        array.resize(exclusive_max=meta["shape"], expand_only=True).result()
    with pytest.raises(StoreCorruptError, match=r"append to the store was interrupted"):
        FeatureStore.open(path)

    log: list = []
    describe(
        _source(x, y, g, 300), CountingExtractor(log=log), path, batch_size=32, progress=False,
        append=True,
    )  # fmt: skip
    # The old partial last batch lost its done flag before the manifest grew: described again
    # whole (its old samples too), the batches after it once.
    np.testing.assert_array_equal(np.unique(np.concatenate(log)), np.arange(192, 300))
    describe(_source(x, y, g, 300), CountingExtractor(), tmp_path / "one", batch_size=32,
             progress=False)  # fmt: skip
    _assert_same_store(path, tmp_path / "one")


# ---------------------------------------------------------------- extend_split / extend_selection


def _kcenter_continuation(x: np.ndarray, anchors, candidates, k: int) -> list[int]:
    """NumPy brute force: farthest-first picks among ``candidates`` from ``anchors``
    (euclidean, ties to the lowest index)."""
    candidates = np.asarray(candidates)
    d = np.min(
        np.linalg.norm(x[candidates, None, :] - x[None, np.asarray(anchors), :], axis=-1), axis=1
    )
    picks = []
    for _ in range(k):
        j = int(np.argmax(d))  # first maximum: the lowest candidate index
        picks.append(int(candidates[j]))
        d = np.minimum(d, np.linalg.norm(x[candidates] - x[candidates[j]], axis=1))
        d[j] = -1.0
    return picks


def _points(n: int, seed: int = 3) -> np.ndarray:
    return np.random.RandomState(seed).randn(n, 4).astype(np.float32)


@pytest.mark.parametrize("form", ["selection", "json", "path", "indices"])
def test_extend_selection_keeps_its_prefix_and_continues_kcenter(tmp_path, form):
    x = _points(300)
    prev = select(x[:200], 20, method="kcenter", key=jax.random.key(0), progress=False)
    given = {
        "selection": prev,
        "json": prev.to_json(),
        "path": tmp_path / "prev.json",
        "indices": prev.indices.tolist(),
    }[form]
    (tmp_path / "prev.json").write_text(json.dumps(prev.to_json()))
    out = extend_selection(x, given, 12, key=jax.random.key(1), method="kcenter", progress=False)
    assert isinstance(out, Selection) and len(out) == 32
    np.testing.assert_array_equal(out.indices[:20], prev.indices)  # earlier picks first
    rest = np.setdiff1d(np.arange(300), prev.indices)
    assert out.indices[20:].tolist() == _kcenter_continuation(x, prev.indices, rest, 12)
    assert out.config["extends"] == {"previous_count": 20, "added": 12}
    # The coverage radius covers the grown pool from earlier and new picks together.
    d = np.linalg.norm(x[:, None] - x[out.indices][None], axis=-1).min(1).max()
    np.testing.assert_allclose(out.coverage_radius, d, rtol=1e-5)


def test_extend_selection_label_counts_and_refusals():
    x = _points(300)
    y = np.random.RandomState(4).randint(0, 3, 300)
    prev = select(
        x[:200], 30, method="kcenter", key=jax.random.key(0), labels=y[:200], progress=False
    )
    out = extend_selection(x, prev, 15, key=jax.random.key(1), labels=y, progress=False)
    np.testing.assert_array_equal(out.indices[:30], prev.indices)
    expected = {int(c): int(np.count_nonzero(y[out.indices] == c)) for c in range(3)}
    assert {int(k): v for k, v in out.label_counts.items()} == expected
    assert len(np.unique(out.indices)) == 45
    with pytest.raises(ValueError, match=r"anchors \[350\] are not sample indices"):
        extend_selection(x, [1, 350], 5, key=jax.random.key(1), progress=False)
    with pytest.raises(ValueError, match=r"count must be an int >= 1"):
        extend_selection(x, prev, 0, key=jax.random.key(1), progress=False)
    with pytest.raises(ValueError, match=r"repeated sample indices"):
        extend_selection(x, [3, 3], 5, key=jax.random.key(1), progress=False)


SETS = {"train": 0.7, "val": 0.15, "test": 0.15}


def _check_extension(out, prev, pool, unit=None):
    """Every earlier assignment kept (as a prefix), every sample of ``pool`` in exactly one set,
    groups whole, new members of earlier groups in their group's set."""
    pool = np.asarray(pool)
    for name in prev:
        np.testing.assert_array_equal(out[name][: len(prev[name])], prev[name])
    every = np.concatenate(list(out.values()))
    assert np.array_equal(np.sort(every), pool)
    set_of = np.full(int(pool.max()) + 1, -1, np.int64)
    for i, name in enumerate(out):
        set_of[out[name]] = i
    if unit is not None:
        unit = np.asarray(unit)[: set_of.size]
        in_pool = set_of >= 0
        for u in np.unique(unit[in_pool]):
            sets_of_u = np.unique(set_of[in_pool & (unit == u)])
            assert sets_of_u.size == 1, f"group {u} straddles sets {sets_of_u}"
        for i, name in enumerate(prev):
            old_units = np.unique(unit[prev[name]])
            assert (set_of[in_pool & np.isin(unit, old_units)] == i).all()
    return set_of


def test_extend_split_without_groups_hits_targets_and_continues_each_set():
    x = _points(400)
    prev = split(x[:250], SETS, key=jax.random.key(0), labels=False, progress=False,
                 manifest_path=False)  # fmt: skip
    out = extend_split(x, prev, key=jax.random.key(5), labels=False, progress=False)
    _check_extension(out, prev, np.arange(400))
    # Largest remainder of 0.7 / 0.15 / 0.15 over the whole grown pool.
    assert {k: len(v) for k, v in out.items()} == {"train": 280, "val": 60, "test": 60}
    # The first set's new members continue its k-center cover over the new samples.
    new = np.arange(250, 400)
    n_train, n_val = len(prev["train"]), len(prev["val"])
    assert (n_train, n_val, len(prev["test"])) == (175, 38, 37)  # largest remainder over 250
    assert out["train"][n_train:].tolist() == _kcenter_continuation(x, prev["train"], new, 105)
    # The second set: over what the first left, anchored at its own earlier members.
    left = np.setdiff1d(new, out["train"])
    assert out["val"][n_val:].tolist() == _kcenter_continuation(x, prev["val"], left, 22)
    assert out.manifest["extends"]["selected"] == {"train": 105, "val": 22, "test": 23}


def test_extend_split_stratifies_new_members_by_label():
    """Each set's new members are a stratified selection of what it draws from: label counts
    at the proportional share (as split's sets)."""
    rng = np.random.RandomState(8)
    x = rng.randn(400, 4).astype(np.float32)
    y = rng.choice(3, 400, p=[0.6, 0.3, 0.1])
    prev = split(x[:250], SETS, key=jax.random.key(0), labels=y[:250], progress=False,
                 manifest_path=False)  # fmt: skip
    out = extend_split(x, prev, key=jax.random.key(5), labels=y, progress=False)
    _check_extension(out, prev, np.arange(400))
    drawn_from = np.arange(250, 400)
    for name in ("train", "val"):  # the last set takes the rest
        added = out[name][len(prev[name]) :]
        for c in range(3):
            # goldener's allocation: floor of each label's share first, the few left over
            # spread in proportion to the labels' unselected samples.
            share = added.size * np.count_nonzero(y[drawn_from] == c) / drawn_from.size
            got = np.count_nonzero(y[added] == c)
            assert np.floor(share) <= got <= np.ceil(share) + 1, (name, c, got, share)
        drawn_from = np.setdiff1d(drawn_from, added)


@pytest.mark.parametrize("sets", [None, {"train": 0.6, "val": 0.2, "test": 0.2}, "counts"])
def test_extend_split_with_labels_and_groups(tmp_path, sets):
    rng = np.random.RandomState(6)
    n_old, n = 600, 900
    x = rng.randn(n, 4).astype(np.float32)
    y = rng.randint(0, 3, n)
    g = rng.randint(0, 300, n)  # about 3 samples a group; new samples join old groups too
    prev = split(x[:n_old], SETS, key=jax.random.key(0), labels=y[:n_old], groups=g[:n_old],
                 progress=False, manifest_path=tmp_path / "prev.json")  # fmt: skip
    if sets == "counts":
        sets = {"train": 620, "val": 140, "test": 140}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # groups: nearest reachable counts
        out = extend_split(
            x, tmp_path / "prev.json", sets, key=jax.random.key(1), labels=y, groups=g,
            progress=False, manifest_path=tmp_path / "ext.json",
        )  # fmt: skip
    set_of = _check_extension(out, prev, np.arange(n), unit=g)
    joined = out.manifest["extends"]["joined_their_group"]
    old_units = {name: np.unique(g[prev[name]]) for name in prev}
    for i, name in enumerate(prev):
        mates = np.flatnonzero(np.isin(g[n_old:], old_units[name])) + n_old
        assert joined[name] == mates.size and (set_of[mates] == i).all()
    # The saved manifest is the returned one and extends again (nothing new: a no-op).
    saved = json.loads((tmp_path / "ext.json").read_text())
    assert saved["indices"] == {k: v.tolist() for k, v in out.items()}
    again = extend_split(x, saved, key=jax.random.key(2), labels=y, groups=g, progress=False)
    assert {k: v.tolist() for k, v in again.items()} == saved["indices"]
    # Label counts recorded per set match the sets.
    for name in out:
        counts = {str(c): int(np.count_nonzero(y[out[name]] == c)) for c in range(3)}
        assert out.manifest["label_counts"][name] == counts


def test_extend_split_refusals():
    x = _points(120)
    prev = split(x[:80], SETS, key=jax.random.key(0), labels=False, progress=False,
                 manifest_path=False)  # fmt: skip
    key = jax.random.key(1)
    with pytest.raises(ValueError, match=r"must name the previous split's sets"):
        extend_split(x, prev, {"train": 0.5, "val": 0.5}, key=key, labels=False, progress=False)
    with pytest.raises(ValueError, match=r"sum to the grown pool's 120 samples"):
        extend_split(x, prev, {"train": 80, "val": 20, "test": 10}, key=key, labels=False,
                     progress=False)  # fmt: skip
    with pytest.raises(ValueError, match=r"not in the pool"):
        extend_split(x[:60], prev, key=key, labels=False, progress=False)
    with pytest.raises(ValueError, match=r'method="auto"'):
        extend_split(x, prev, key=key, method="auto", labels=False, progress=False)
    # Made on other vectors (its rows are not the first rows here): once extended silently.
    other = x[::-1].copy()
    with pytest.raises(ValueError, match=r"previous split was made on other vectors"):
        extend_split(other, prev, key=key, labels=False, progress=False)
    sel = select(x[:80], 5, key=key, method="kcenter", progress=False)
    with pytest.raises(ValueError, match=r"previous selection was made on other vectors"):
        extend_selection(other, sel, 5, key=key, method="kcenter", progress=False)
    bad = {"train": [0, 1], "val": [1, 2]}
    with pytest.raises(ValueError, match=r"two sets"):
        extend_split(x, bad, key=key, labels=False, progress=False)


def test_store_story_describe_split_select_append_extend(tmp_path):
    """describe 300 samples, split and select; append 150; extend both on the store."""
    x, y, g = _data(450)
    path = tmp_path / "store"
    describe(_source(x, y, g, 300), CountingExtractor(), path, batch_size=64, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prev_split = split(path, SETS, key=jax.random.key(0), progress=False)
    # Plain k-center, checked below: no labels, one group per sample (the store's labels and
    # groups would stratify it and bring whole groups).
    prev_sel = select(path, 25, method="kcenter", key=jax.random.key(0), labels=False,
                      groups=np.arange(300), progress=False)  # fmt: skip
    describe(_source(x, y, g, 450), CountingExtractor(), path, batch_size=64, progress=False,
             append=True)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = extend_split(path, prev_split.manifest_path, key=jax.random.key(1), progress=False)
    vectors, sample_idx = FeatureStore.open(path).read_vectors()
    # Samples whose rows are all invalid have no vectors: not in the pool.
    _check_extension(out, prev_split, np.unique(sample_idx), unit=g)
    sel = extend_selection(path, prev_sel, 10, key=jax.random.key(1), labels=False,
                           groups=np.arange(450), progress=False)  # fmt: skip
    np.testing.assert_array_equal(sel.indices[:25], prev_sel.indices)
    pool = np.full((450, vectors.shape[1]), np.inf, np.float32)
    pool[sample_idx] = vectors
    has_rows = np.isfinite(pool).all(1)
    rest = np.setdiff1d(np.flatnonzero(has_rows), prev_sel.indices)
    assert sel.indices[25:].tolist() == _kcenter_continuation(pool, prev_sel.indices, rest, 10)


# The SIGKILL test runs this file as a script: one append, a pause per batch read.
KILL_OLD, KILL_NEW, KILL_BATCH = 45, 90, 4


class _SlowSource(ArraySource):
    def __init__(self, data, counter, sleep_s, **kw):
        super().__init__(data, **kw)
        self._counter, self._sleep_s = counter, sleep_s

    def iter_batches(self, batch_size, batch_indices):
        for b, batch in super().iter_batches(batch_size, batch_indices):
            if self._counter:
                with open(self._counter, "a") as f:
                    f.write(f"{b}\n")
            time.sleep(self._sleep_s)
            yield b, batch


def _kill_worker(store: str, n: int, counter: str = "", sleep_s: str = "0") -> None:
    x, y, g = _data(KILL_NEW)
    src = _SlowSource({"image": x[:n], "label": y[:n], "group": g[:n]}, counter, float(sleep_s),
                      label_key="label", group_key="group")  # fmt: skip
    describe(src, CountingExtractor(), store, batch_size=KILL_BATCH, progress=False, append=True,
             check_source=False)  # fmt: skip


def _lines(path) -> list[int]:
    return [int(v) for v in open(path).read().split()] if os.path.exists(path) else []


def test_append_sigkilled_then_rerun_equals_one_shot(tmp_path):
    # No empty PYTHONPATH entry: it would put the working directory first (see test_describe).
    python_path = [
        os.path.dirname(__file__),
        *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)),
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(python_path)}
    script = os.path.abspath(__file__)
    store = str(tmp_path / "inc")
    subprocess.run([sys.executable, script, store, str(KILL_OLD)], env=env, check=True, timeout=120)
    kills = 0
    for run, kill_after in enumerate((3, 2)):
        counter = str(tmp_path / f"run{run}.count")
        proc = subprocess.Popen(
            [sys.executable, script, store, str(KILL_NEW), counter, "0.1"], env=env
        )
        deadline = time.monotonic() + 120
        while len(_lines(counter)) < kill_after and proc.poll() is None:
            assert time.monotonic() < deadline, "the worker never read its batches"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        kills += proc.returncode == -signal.SIGKILL
    assert kills == 2, "the worker finished before it could be killed"
    manifest = FeatureStore.peek_manifest(store)
    assert manifest["layout"]["num_samples"] == KILL_NEW  # the append had committed
    assert not FeatureStore.open(store).is_complete()
    subprocess.run([sys.executable, script, store, str(KILL_NEW)], env=env, check=True, timeout=120)
    x, y, g = _data(KILL_NEW)
    describe(_source(x, y, g, KILL_NEW), CountingExtractor(), tmp_path / "one",
             batch_size=KILL_BATCH, progress=False)  # fmt: skip
    _assert_same_store(store, tmp_path / "one")


if __name__ == "__main__":
    _kill_worker(sys.argv[1], int(sys.argv[2]), *sys.argv[3:])
