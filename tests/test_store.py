"""FeatureStore: layout, zarr v3 compatibility, data-then-flag writes, refusal to mix."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorstore as ts

from goldener_jax.store import FeatureStore, StoreCorruptError, StoreMismatchError


def _manifest(**overrides):
    kwargs = dict(
        extractor_fingerprint="fp-1",
        extractor_config={"layers": ["a"], "fusion": "concat"},
        source={"name": "toy", "split": "train", "length": 10},
        num_samples=10,
        rows_per_sample=2,
        dim=3,
        dtype="float32",
        batch_size=4,
        labels=((), "int64"),
    )
    kwargs.update(overrides)
    return FeatureStore.build_manifest(**kwargs)


def _fill(store: FeatureStore, batches=None):
    for b in range(store.num_batches) if batches is None else batches:
        s0, s1 = store.batch_samples(b)
        n = s1 - s0
        vectors = np.arange(s0 * 2 * 3, s1 * 2 * 3, dtype=np.float32).reshape(n * 2, 3)
        store.write_batch(b, vectors, np.ones(n * 2, bool), labels=np.arange(s0, s1))


def test_layout_chunks_and_round_trip(tmp_path):
    store = FeatureStore.create(tmp_path / "s", _manifest())
    assert (store.num_samples, store.num_rows, store.num_batches) == (10, 20, 3)
    assert store.batch_samples(2) == (8, 10) and store.batch_rows(2) == (16, 20)
    assert not store.done_batches().any()
    _fill(store, [0, 2])
    assert store.done_batches().tolist() == [True, False, True]
    rows = store.read_rows(16, 20)
    np.testing.assert_array_equal(rows["sample_idx"], [8, 8, 9, 9])
    np.testing.assert_array_equal(rows["vectors"].ravel(), np.arange(48, 60))
    # Unwritten rows keep the fill values.
    assert (store.read_rows(8, 16)["sample_idx"] == -1).all()
    # One chunk per batch along the rows, one flag file per done batch.
    files = sorted(p.relative_to(tmp_path / "s").as_posix() for p in (tmp_path / "s").rglob("*"))
    assert "vectors/c/0/0" in files and "vectors/c/2/0" in files and "vectors/c/1/0" not in files
    assert "done/c/0" in files and "done/c/1" not in files
    with pytest.raises(ValueError, match="incomplete: 1 of 3 batches"):
        store.read_vectors()
    _fill(store, [1])
    vectors, idx = store.read_vectors()
    assert vectors.shape == (20, 3) and idx.tolist() == np.repeat(np.arange(10), 2).tolist()
    np.testing.assert_array_equal(FeatureStore.open(tmp_path / "s").read_labels(), np.arange(10))


def test_readable_by_plain_zarr3_tensorstore(tmp_path):
    store = FeatureStore.create(tmp_path / "s", _manifest())
    _fill(store)
    # No goldener-jax, no metadata given: a plain zarr v3 open.
    plain = ts.open({"driver": "zarr3", "kvstore": f"file://{tmp_path}/s/vectors/"}).result()
    np.testing.assert_array_equal(plain.read().result(), store.vectors.read().result())
    meta = json.loads((tmp_path / "s" / "sample_idx" / "zarr.json").read_text())
    assert meta["zarr_format"] == 3 and meta["node_type"] == "array"
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["schema_version"] == 1
    assert manifest["extractor"]["fingerprint"] == "fp-1"
    assert manifest["source"] == {"name": "toy", "split": "train", "length": 10}
    assert manifest["layout"]["dim"] == 3 and manifest["layout"]["dtype"] == "float32"


def test_kvstore_url(tmp_path):
    store = FeatureStore.create(f"file://{tmp_path}/u", _manifest())
    _fill(store)
    assert FeatureStore.open(str(tmp_path / "u")).is_complete()
    mem = FeatureStore.create("memory://store/", _manifest())
    _fill(mem)
    assert mem.is_complete()


def test_reopen_same_config_keeps_data(tmp_path):
    store = FeatureStore.create(tmp_path / "s", _manifest())
    _fill(store, [1])
    again = FeatureStore.create(tmp_path / "s", _manifest())
    assert again.done_batches().tolist() == [False, True, False]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            dict(
                extractor_fingerprint="fp-2", extractor_config={"layers": ["b"], "fusion": "concat"}
            ),
            r"another extractor: fingerprint 'fp-1' in store, 'fp-2' requested \(config differs: "
            r"layers",
        ),
        (
            dict(source={"name": "toy", "split": "test", "length": 10}),
            r"another source: split: 'train' in store, 'test' requested",
        ),
        (dict(dtype="bfloat16"), r"another layout: dtype: 'float32' in store, 'bfloat16'"),
        (dict(dim=4), r"another layout: dim: 3 in store, 4 requested"),
        (dict(labels=((3,), "bool")), r"other arrays than requested: labels"),
    ],
)
def test_refuses_to_mix(tmp_path, overrides, message):
    FeatureStore.create(tmp_path / "s", _manifest())
    with pytest.raises(StoreMismatchError, match=message):
        FeatureStore.create(tmp_path / "s", _manifest(**overrides))
    store = FeatureStore.create(tmp_path / "s", _manifest(**overrides), overwrite=True)
    assert not store.done_batches().any()


def test_corrupt_and_foreign(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "manifest.json").write_text("[1, 2")
    with pytest.raises(StoreCorruptError, match="not valid JSON"):
        FeatureStore.open(tmp_path / "s")
    (tmp_path / "s" / "manifest.json").write_text(json.dumps({**_manifest(), "schema_version": 9}))
    with pytest.raises(StoreCorruptError, match="schema_version is 9"):
        FeatureStore.create(tmp_path / "s", _manifest())
    with pytest.raises(FileNotFoundError, match="no feature store"):
        FeatureStore.open(tmp_path / "empty")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not empty and holds no feature store"):
        FeatureStore.create(tmp_path / "mine", _manifest())
    # overwrite deletes only the store's own files
    FeatureStore.create(tmp_path / "mine", _manifest(), overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="is an existing file"):
        FeatureStore.open(f)
    with pytest.raises(TypeError, match="path must be"):
        FeatureStore.open(3)


def test_array_not_matching_manifest_is_corrupt(tmp_path):
    FeatureStore.create(tmp_path / "s", _manifest())
    meta_path = tmp_path / "s" / "vectors" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["shape"] = [7, 3]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(StoreCorruptError, match="array 'vectors' .* does not match"):
        FeatureStore.open(tmp_path / "s")


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            ("layout", "num_rows", 16),
            r"layout.num_rows is 16, but num_samples x rows_per_sample is 10 x 2 = 20",
        ),
        (
            ("layout", "num_samples", 8),
            r"layout.num_rows is 20, but num_samples x rows_per_sample is 8 x 2 = 16; "
            r"layout.num_batches is 3, but ceil\(num_samples / batch_size\) is ceil\(8 / 4\) = 2",
        ),
        (
            ("layout", "batch_size", 8),
            r"layout.num_batches is 3, but ceil\(num_samples / batch_size\) is ceil\(10 / 8\) = 2",
        ),
        (
            ("layout", "num_batches", 4),
            r"layout.num_batches is 4, but ceil\(num_samples / batch_size\) is ceil\(10 / 4\) = 3",
        ),
        (
            ("layout", "rows_per_sample", 3),
            r"layout.num_rows is 20, but num_samples x rows_per_sample is 10 x 3 = 30; "
            r"arrays.vectors.chunk_shape is \[8, 3\], the layout says \[12, 3\]",
        ),
        (("layout", "dim", 4), r"arrays.vectors.shape is \[20, 3\], the layout says \[20, 4\]"),
        (("layout", "num_rows", "20"), r"layout.num_rows is '20', expected an int >= 0"),
        (
            ("arrays", "labels", "shape", [9]),
            r"arrays.labels.shape is \[9\], the layout says \[10\]",
        ),
        (("arrays", "done", "shape", [2]), r"arrays.done.shape is \[2\], the layout says \[3\]"),
        (
            ("integrity", "batch_digest", "arrays", ["vectors"]),
            r"integrity.batch_digest.arrays is \['vectors'\], the store's arrays are \['vectors', "
            r"'sample_idx', 'valid', 'labels', 'source_digest'\]",
        ),
    ],
)
def test_manifest_layout_disagreeing_with_itself_or_its_arrays_is_corrupt(tmp_path, edit, message):
    """Every read indexes the arrays with the layout's counts: a layout that disagrees with its
    arrays used to read fewer rows than the store holds, silently, or fail with an IndexError."""
    store = FeatureStore.create(tmp_path / "s", _manifest())
    _fill(store)
    manifest_path = tmp_path / "s" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    *keys, value = edit
    target = manifest
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = value
    manifest_path.write_text(json.dumps(manifest))
    expected = rf"manifest.json of store .* is inconsistent \(it was edited or damaged\): {message}"
    for opening in (FeatureStore.open, FeatureStore.peek_manifest):
        with pytest.raises(StoreCorruptError, match=expected + ".*pass overwrite=True to start"):
            opening(tmp_path / "s")
    # The same manifest given to create is refused before anything is written.
    with pytest.raises(ValueError, match=rf"manifest for store .* is inconsistent: {message}"):
        FeatureStore.create(tmp_path / "new", manifest)
    assert not (tmp_path / "new").exists()


def test_write_batch_validation(tmp_path):
    store = FeatureStore.create(tmp_path / "s", _manifest())
    with pytest.raises(ValueError, match=r"vectors must have shape \[8, 3\]"):
        store.write_batch(0, np.zeros((8, 4), np.float32), np.ones(8, bool), labels=np.zeros(4))
    with pytest.raises(ValueError, match="has labels but none were given"):
        store.write_batch(0, np.zeros((8, 3), np.float32), np.ones(8, bool))
    with pytest.raises(IndexError, match="batch index 3 out of range"):
        store.write_batch(3, np.zeros((8, 3), np.float32), np.ones(8, bool))
    assert not store.done_batches().any()


def test_build_manifest_validation():
    with pytest.raises(ValueError, match="dtype must be one of"):
        _manifest(dtype="float16")
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        _manifest(batch_size=0)
    with pytest.raises(TypeError, match="JSON-able"):
        _manifest(extractor_config={"f": object()})


def test_readable_by_zarr_python(tmp_path):
    """Another zarr v3 implementation (zarr-python) reads every float32 / int / bool array."""
    zarr = pytest.importorskip("zarr", reason="zarr-python is not installed (test extra)")
    # The chunks carry zarr v3's crc32c codec, which zarr-python computes with google-crc32c.
    pytest.importorskip("google_crc32c", reason="google-crc32c is not installed (test extra)")
    store = FeatureStore.create(tmp_path / "s", _manifest())
    _fill(store)
    for name in ("vectors", "sample_idx", "valid", "labels", "done"):
        array = zarr.open_array(str(tmp_path / "s" / name), mode="r")
        np.testing.assert_array_equal(array[:], store._arrays[name].read().result())
