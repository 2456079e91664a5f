"""Store integrity: verify, describe re-doing damaged batches, source digests on resume, stores
from before checksums, input shapes, and the every-row data digest."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _stores import BATCH_SIZE, arrays, copy, damage, data, make

from goldener_jax._digest import rows_digest
from goldener_jax.describe import SourceChangedError, describe
from goldener_jax.sources import IterableSource
from goldener_jax.store import FeatureStore


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
        "ok: 1 done batches, every chunk present and intact; 2 batches not done yet (run "
        "describe to finish)"
    )
    assert sorted(store.batch_chunk_keys(1).values()) == [
        "done/c/1", "sample_idx/c/1", "source_digest/c/1/0", "valid/c/1", "vectors/c/1/0",
    ]  # fmt: skip
    for key in store.batch_chunk_keys(1).values():
        assert (tmp_path / "p" / key).is_file(), key


def test_new_store_has_checksums_on_every_array(pristine):
    store = FeatureStore.open(pristine)
    assert store.has_checksums
    for name in ("vectors", "sample_idx", "valid", "labels", "groups", "done", "source_digest"):
        meta = json.loads(open(f"{pristine}/{name}/zarr.json").read())
        assert [c["name"] for c in meta["codecs"]] == ["bytes", "crc32c"], name
    assert store.read_source_digests().any(axis=1).all()


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
