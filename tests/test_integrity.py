"""Store integrity: verify, describe re-doing damaged batches, source digests on resume, stores
from before checksums, input shapes, and the every-row data digest."""

from __future__ import annotations

import errno
import json
import os
import shutil

import jax
import numpy as np
import pytest
import tensorstore as ts
from _stores import BATCH_SIZE, arrays, chunk_file, copy, damage, data, make

from goldener_jax._digest import rows_digest
from goldener_jax.describe import SourceChangedError, describe
from goldener_jax.sources import IterableSource
from goldener_jax.store import FeatureStore, StoreCorruptError, StoreIncompleteError

REPAIR = "run describe again: it re-does damaged batches"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return str(make(tmp_path_factory.mktemp("pristine") / "s").path)


def _logging_writes(monkeypatch) -> list[int]:
    written = []
    original = FeatureStore.write_batch_data

    def logged(self, b, *args, **kwargs):
        written.append(b)
        return original(self, b, *args, **kwargs)

    monkeypatch.setattr(FeatureStore, "write_batch_data", logged)
    return written


def _assert_same(a: dict, b: dict) -> None:
    for name in a:
        assert a[name].tobytes() == b[name].tobytes(), name


def test_describe_redoes_exactly_the_damaged_batches(pristine, tmp_path, monkeypatch):
    path = copy(pristine, tmp_path / "s")
    damage(path, "vectors", 1, "flip")
    damage(path, "valid", 4, "delete")
    damage(path, "labels", 5, "truncate")
    damage(path, "done", 3, "flip")  # an unreadable flag: the batch counts as not done
    assert list(FeatureStore.open(path).verify().damaged) == [1, 4, 5]
    written = _logging_writes(monkeypatch)
    with pytest.warns(RuntimeWarning, match=r"re-describing 3 damaged batches"):
        store = make(path)
    assert sorted(written) == [1, 3, 4, 5]
    assert store.verify().ok
    _assert_same(arrays(store), arrays(FeatureStore.open(pristine)))


# ---------------------------------------------------------------- chunks moved between batches


def _move(path, array: str, how: str) -> None:
    """Swaps the chunks of batches 1 and 3 of ``array``, or copies batch 1's over batch 3's:
    every chunk keeps a valid checksum."""
    one, three = chunk_file(path, array, 1), chunk_file(path, array, 3)
    with open(one, "rb") as f1, open(three, "rb") as f3:
        assert f1.read() != f3.read(), "the two chunks must differ for the move to matter"
    if how == "copy":
        shutil.copyfile(one, three)
    else:
        os.rename(one, one + ".tmp")
        os.rename(three, one)
        os.rename(one + ".tmp", three)


@pytest.mark.parametrize(
    "array, how, damaged, problem, read_fails",
    [
        ("vectors", "swap", [1, 3], "chunk 'vectors/c/1/0' is not the one batch 1 wrote", True),
        ("vectors", "copy", [3], "chunk 'vectors/c/3/0' is not the one batch 3 wrote", True),
        ("valid", "swap", [1, 3], "chunk 'valid/c/1' is not the one batch 1 wrote", True),
        ("labels", "copy", [3], "chunk 'labels/c/3' is not the one batch 3 wrote", True),
        ("groups", "swap", [1, 3], "chunk 'groups/c/1' is not the one batch 1 wrote", True),
        ("source_digest", "copy", [3], "chunk 'source_digest/c/3/0' is not the one", False),
        ("batch_digest", "swap", [1, 3], "records other contents than batch 1's chunks", True),
    ],
)
def test_chunks_moved_between_batches_are_damage(
    pristine, tmp_path, monkeypatch, array, how, damaged, problem, read_fails
):
    """A chunk swapped or copied in from another batch keeps a valid crc32c; the batch digest
    recorded with the batch catches it in verify and in the reads select makes (which used to
    select from the wrong vectors, labels or groups), and describe re-does those batches."""
    from goldener_jax import select

    path = copy(pristine, tmp_path / "s")
    _move(path, array, how)
    report = FeatureStore.open(path).verify()
    assert list(report.damaged) == damaged, report.damaged
    assert problem in report.damaged[damaged[0]][0]
    assert report.summary().startswith(f"damaged: {len(damaged)} of 6 done batches")
    if read_fails:
        moved = rf"in batch {damaged[0]}, .*copied or swapped in from another batch.*{REPAIR}"
        with pytest.raises(StoreCorruptError, match=moved) as info:
            select(path, 5, method="kcenter", key=jax.random.key(0))
        assert info.value.batches == damaged
    written = _logging_writes(monkeypatch)
    with pytest.warns(RuntimeWarning, match=rf"re-describing {len(damaged)} damaged batches"):
        store = make(path)
    assert sorted(written) == damaged
    assert store.verify().ok
    _assert_same(arrays(store), arrays(FeatureStore.open(pristine)))
    assert np.array_equal(
        store.read_source_digests(), FeatureStore.open(pristine).read_source_digests()
    )


def _strip_batch_digests(path) -> None:
    """Turns a store into one written before batch digests (all else is the same layout)."""
    manifest_path = os.path.join(path, "manifest.json")
    with open(manifest_path) as f:
        manifest = json.load(f)
    del manifest["arrays"]["batch_digest"], manifest["integrity"]["batch_digest"]
    with open(manifest_path, "w") as f:
        f.write(json.dumps(manifest, indent=2, sort_keys=True))
    shutil.rmtree(os.path.join(path, "batch_digest"))


def test_store_written_before_batch_digests_opens_reads_appends_and_says_what_is_unchecked(
    pristine, tmp_path
):
    path = copy(pristine, tmp_path / "old")
    _strip_batch_digests(path)
    store = FeatureStore.open(path)
    assert store.has_checksums and not store.has_batch_digests
    _assert_same(arrays(store), arrays(FeatureStore.open(pristine)))
    report = store.verify()
    assert report.ok and report.checked
    assert "chunks are not tied to their batches" in report.limits
    assert report.summary() == (
        "ok: 6 done batches, every chunk present and intact; chunks are not tied to their "
        "batches (store written before goldener-jax recorded batch digests: a chunk copied or "
        "swapped between batches is caught only in sample_idx); describe it again with "
        "overwrite=True to add them"
    )
    # Reopened with today's manifest (what describe builds), it keeps its own format.
    assert not FeatureStore.create(path, FeatureStore.open(pristine).manifest).has_batch_digests
    # describe resumes it and appends to it (its format kept; the new batches are checksummed).
    x, labels, groups = data()
    x, labels, groups = (
        np.concatenate([x, x[:5] + 1]),
        labels[np.r_[:22, :5]],
        groups[np.r_[:22, :5]],
    )
    store = make(path, x=x, labels=labels, groups=groups, append=True)  # 5 new samples
    assert store.num_samples == 27 and not store.has_batch_digests
    assert store.verify().ok
    _, idx = store.read_vectors()
    assert idx.max() == 26 and np.array_equal(store.read_labels(), labels)
    # What it cannot tell, shown: a copied vectors chunk passes (a new store refuses it above).
    shutil.copyfile(chunk_file(path, "vectors", 1), chunk_file(path, "vectors", 3))
    assert FeatureStore.open(path).verify().ok


# ---------------------------------------------------------------- full disk while creating


class _Failed:
    """A TensorStore future that fails as a full disk makes it fail."""

    def __init__(self, where: str):
        self.where = where

    def result(self):
        raise ValueError(
            f'RESOURCE_EXHAUSTED: Error writing local file "{self.where}": Failed to write 283 '
            "bytes to file 3: No space left on device [os_error_code='28']"
        )


class _FullForManifest:
    """A kvstore whose manifest write fails (everything else passes through)."""

    def __init__(self, kv):
        self._kv = kv

    def __getattr__(self, name):
        return getattr(self._kv, name)

    def write(self, key, value):
        if key == "manifest.json":
            return _Failed(key)
        return self._kv.write(key, value)


def _full_disk(monkeypatch, stage: str) -> None:
    if stage == "manifest":
        kv_open = ts.KvStore.open

        class _Opened:
            def __init__(self, spec):
                self.spec = spec

            def result(self):
                return _FullForManifest(kv_open(self.spec).result())

        monkeypatch.setattr(ts.KvStore, "open", staticmethod(lambda spec: _Opened(spec)))
    else:
        ts_open = ts.open

        def full(spec, **kwargs):
            if kwargs.get("create") and spec["kvstore"]["path"].endswith("/valid/"):
                return _Failed("valid/zarr.json")
            return ts_open(spec, **kwargs)

        monkeypatch.setattr(ts, "open", full)


@pytest.mark.parametrize(
    "stage, message, then",
    [
        (
            "manifest",
            r"writing manifest.json of new store .* failed: no space left on device \(.*\); no "
            r"store was created: run describe again \(free disk space first\)",
            (FileNotFoundError, r"no feature store at .* \(no manifest.json\)"),
        ),
        (
            "arrays",
            r"creating array 'valid' of store .* failed: no space left on device \(.*\); the "
            r"store's creation is not finished: run describe again to finish it \(free disk",
            (StoreIncompleteError, r"is incomplete: its creation was interrupted before array "
             r"'valid' was created .*; run describe again to finish creating it$"),
        ),
    ],
)  # fmt: skip
def test_full_disk_while_creating_a_store(pristine, tmp_path, monkeypatch, stage, message, then):
    """A write that fails while a store is created is an OSError naming the full disk (not a
    raw TensorStore ValueError, nor "corrupt, overwrite"); the store left behind says a rerun
    finishes it, and the rerun equals an uninterrupted run."""
    path = str(tmp_path / "s")
    with monkeypatch.context() as patched:
        _full_disk(patched, stage)
        with pytest.raises(OSError, match=message) as info:
            make(path)
    assert info.value.errno == errno.ENOSPC
    error, text = then
    with pytest.raises(error, match=text) as opened:
        FeatureStore.open(path)
    assert "overwrite" not in str(opened.value)
    store = make(path)  # the plain rerun once space is freed
    assert store.verify().ok
    _assert_same(arrays(store), arrays(FeatureStore.open(pristine)))


@pytest.mark.parametrize("what", ["image", "label"])
def test_resume_refuses_changed_described_samples(pristine, tmp_path, monkeypatch, what):
    path = copy(pristine, tmp_path / "s")
    x, labels, groups = data()
    if what == "image":
        x[5, 0] += 1.0  # batch 1 (samples 4..7)
    else:
        labels[9] = (labels[9] + 1) % 3  # batch 2 (samples 8..11)
    batch = 1 if what == "image" else 2
    s0 = batch * BATCH_SIZE
    with pytest.raises(
        SourceChangedError,
        match=rf"1 described batches changed \(first: batch {batch}, samples {s0}\.\.{s0 + 3}\)"
        r".*pass redescribe_changed=True",
    ):
        make(path, x=x, labels=labels)
    written = _logging_writes(monkeypatch)
    store = make(path, x=x, labels=labels, redescribe_changed=True)
    assert written == [batch]
    fresh = make(tmp_path / "fresh", x=x, labels=labels)
    _assert_same(arrays(store), arrays(fresh))
    # check_source=False trusts the source: nothing read, nothing rewritten.
    written.clear()
    make(path, check_source=False)
    assert written == []


def test_store_written_before_checksums_opens_but_cannot_be_verified(tmp_path):
    from goldener_jax import cli

    manifest = FeatureStore.build_manifest(
        extractor_fingerprint="fp",
        extractor_config={},
        source={"name": "old"},
        num_samples=6,
        rows_per_sample=1,
        dim=2,
        dtype="float32",
        batch_size=3,
    )
    del manifest["integrity"], manifest["arrays"]["source_digest"]  # the old layout
    del manifest["arrays"]["batch_digest"]
    store = FeatureStore.create(tmp_path / "old", manifest)
    for b in range(2):
        store.write_batch(b, np.full((3, 2), b, np.float32), np.ones(3, bool))
    meta = json.loads((tmp_path / "old" / "vectors" / "zarr.json").read_text())
    assert [c["name"] for c in meta["codecs"]] == ["bytes"]
    reopened = FeatureStore.open(tmp_path / "old")
    vectors, idx = reopened.read_vectors()
    assert idx.tolist() == list(range(6)) and vectors[3:].tolist() == [[1.0, 1.0]] * 3
    report = reopened.verify()
    assert not report.checked and not report.ok
    assert "written before goldener-jax stored chunk checksums" in report.summary()
    assert cli.main(["verify", str(tmp_path / "old")]) == 1


def test_verify_counts_batches_not_done_apart_from_damage(tmp_path):
    manifest = FeatureStore.build_manifest(
        extractor_fingerprint="fp",
        extractor_config={},
        source={"name": "partial"},
        num_samples=9,
        rows_per_sample=1,
        dim=2,
        dtype="float32",
        batch_size=3,
    )
    store = FeatureStore.create(tmp_path / "p", manifest)
    store.write_batch(1, np.zeros((3, 2), np.float32), np.ones(3, bool))  # all zeros: stored
    report = store.verify()
    assert report.ok and report.batches_checked == 1 and report.batches_not_done == 2
    assert report.summary() == (
        "incomplete: 1 done batches, every chunk present and intact; 2 batches not done yet (run "
        "describe to finish)"
    )
    assert sorted(store.batch_chunk_keys(1).values()) == [
        "batch_digest/c/1/0/0", "done/c/1", "sample_idx/c/1", "source_digest/c/1/0", "valid/c/1",
        "vectors/c/1/0",
    ]  # fmt: skip
    for key in store.batch_chunk_keys(1).values():
        assert (tmp_path / "p" / key).is_file(), key


def test_per_process_reads_refuse_a_store_with_a_missing_chunk(pristine, tmp_path):
    # A mesh spanning processes reads each process's rows, never whole chunks (whose checksum
    # and batch digest catch damage): a deleted vectors chunk once read as zeros there.
    from goldener_jax import kernels as gk
    from goldener_jax.pipeline.data import open_store_rows

    store = FeatureStore.open(copy(pristine, tmp_path / "s"))
    assert store.missing_chunks() == {}
    rows, _ = open_store_rows(store, gk.make_mesh())
    assert rows.num_vectors > 0
    os.remove(chunk_file(store.path, "vectors", 1))
    assert store.missing_chunks() == {1: store.batch_chunk_keys(1)["vectors"]}
    with pytest.raises(StoreCorruptError, match="chunk 'vectors/c/1/0' of done batch 1 is missing"):
        open_store_rows(store, gk.make_mesh())


def test_new_store_has_checksums_on_every_array(pristine):
    store = FeatureStore.open(pristine)
    assert store.has_checksums
    for name in (
        "vectors", "sample_idx", "valid", "labels", "groups", "done", "source_digest",
        "batch_digest",
    ):  # fmt: skip
        meta = json.loads(open(f"{pristine}/{name}/zarr.json").read())
        assert [c["name"] for c in meta["codecs"]] == ["bytes", "crc32c"], name
    assert store.read_source_digests().any(axis=1).all()
    assert store.has_batch_digests
    assert store.manifest["integrity"]["batch_digest"]["arrays"] == [
        "vectors", "sample_idx", "valid", "labels", "groups", "source_digest",
    ]  # fmt: skip


def test_inputs_of_another_shape_are_refused_before_the_model(pristine, tmp_path):
    x, labels, groups = data()
    path = copy(pristine, tmp_path / "s")
    wider = np.concatenate([x, x[:, :2]], axis=1)
    expected = r"has per-sample shape \(8,\), expected \(6,\) \(the shape store"
    with pytest.raises(ValueError, match=expected):  # found by the resume-time source check
        make(path, x=wider)
    damage(path, "vectors", 2, "delete")  # batch 2 is computed again: its input is checked
    with (
        pytest.warns(RuntimeWarning),
        pytest.raises(ValueError, match="batch 2: 'image' " + expected),
    ):
        make(path, x=wider, check_source=False)
    batches = [{"image": x[:8], "label": labels[:8]}, {"image": wider[8:], "label": labels[8:]}]
    with pytest.raises(ValueError, match=r"batch 2: 'image' has per-sample shape \(8,\), expected"):
        describe(
            IterableSource(batches, label_key="label"),
            _two_rows(),
            tmp_path / "it",
            batch_size=BATCH_SIZE,
            progress=False,
        )


def _two_rows():
    from _stores import TwoRows

    return TwoRows()


def test_flax_model_on_images_of_another_shape_is_a_clear_error(tmp_path):
    from _describe_worker import build

    x, labels, extractor = build()  # a Linen CNN built for [8, 8, 3] images
    with pytest.raises(ValueError, match=r"model cannot run on input x of shape \(4, 8, 8, 1\)"):
        describe(x[..., :1], extractor, tmp_path / "s", batch_size=4, progress=False)


# ---------------------------------------------------------------- rows_digest


def test_rows_digest_covers_every_row_and_not_the_block_size():
    x = np.random.RandomState(0).randn(37, 5).astype(np.float32)
    base = rows_digest(x)
    assert all(rows_digest(x, block_rows=b) == base for b in (1, 4, 36, 37, 1000))
    seen = {base}
    for row in range(x.shape[0]):
        changed = x.copy()
        changed[row, 3] = np.nextafter(changed[row, 3], np.float32(np.inf))
        seen.add(rows_digest(changed, block_rows=8))
    assert len(seen) == x.shape[0] + 1  # each single-row change gives its own digest
    assert rows_digest(x.astype(np.float64)) != base
    assert rows_digest(x.reshape(5, 37)) != base
    with pytest.raises(ValueError, match="block_rows must be an int >= 1"):
        rows_digest(x, block_rows=0)


def test_rows_digest_of_store_vectors_equals_numpy(pristine):
    store = FeatureStore.open(pristine)
    full = store.vectors.read().result()
    assert rows_digest(store.vectors, block_rows=5) == rows_digest(full)
