"""Sources: one batch protocol over arrays, random-access sources, iterables and TFDS on disk."""

from __future__ import annotations

import numpy as np
import pytest

from goldener_jax.describe import describe
from goldener_jax.sources import (
    ArraySource,
    IterableSource,
    RandomAccessSource,
    TFDSSource,
    as_source,
)
from goldener_jax.store import FeatureStore


def _collect(source, batch_size, indices=None):
    indices = range(source.num_batches(batch_size)) if indices is None else indices
    return list(source.iter_batches(batch_size, indices))


def test_array_source_batches_and_fingerprint():
    x = np.arange(10 * 2).reshape(10, 2)
    src = ArraySource({"image": x, "y": np.arange(10)}, label_key="y", name="toy", split="val")
    assert len(src) == 10 and src.keys == ("image", "y")
    got = _collect(src, 4, [0, 2])
    assert [b for b, _ in got] == [0, 2]
    np.testing.assert_array_equal(got[1][1]["image"], x[8:10])
    np.testing.assert_array_equal(got[1][1]["y"], [8, 9])
    assert src.fingerprint() == {
        "name": "toy",
        "split": "val",
        "length": 10,
        "data_key": "image",
        "mask_key": None,
        "label_key": "y",
        "group_key": None,
    }


def test_array_source_errors():
    x = np.zeros((5, 3))
    with pytest.raises(
        ValueError, match=r"different lengths: 'image' has 5 samples, 'label' has 4"
    ):
        ArraySource(x, labels=np.zeros(4, int))
    with pytest.raises(KeyError, match="no key 'image'"):
        ArraySource({"pixels": x})
    with pytest.raises(TypeError, match="data must be an array"):
        ArraySource(object())
    with pytest.raises(TypeError, match="data_key must be a non-empty str"):
        ArraySource(x, data_key="")


def test_random_access_source_uses_getitems():
    class Seq:
        def __init__(self):
            self.calls = []

        def __len__(self):
            return 7

        def __getitem__(self, i):
            return {"image": np.full((2,), i), "label": i % 2}

        def __getitems__(self, indices):
            self.calls.append(list(indices))
            return [self[i] for i in indices]

    seq = Seq()
    src = as_source(seq, label_key="label")
    assert isinstance(src, RandomAccessSource) and src.random_access
    got = _collect(src, 3, [2])
    assert seq.calls == [[6]]
    np.testing.assert_array_equal(got[0][1]["image"], [[6, 6]])
    with pytest.raises(KeyError, match="sample 0 of source 'sequence' has no key 'mask'"):
        _collect(as_source(seq, mask_key="mask"), 3, [0])


def test_iterable_source_rebatches_uneven_batches():
    x = np.arange(11)
    batches = [{"image": x[0:3]}, {"image": x[3:4]}, {"image": x[4:11]}]
    src = IterableSource(batches)
    assert len(src) == 11 and not src.random_access
    got = _collect(src, 4)
    assert [b for b, _ in got] == [0, 1, 2]
    np.testing.assert_array_equal(got[2][1]["image"], [8, 9, 10])
    only = _collect(src, 4, [1])
    np.testing.assert_array_equal(only[0][1]["image"], [4, 5, 6, 7])
    # A generator function is re-iterable too.
    gen = IterableSource(lambda: iter(batches), length=11)
    np.testing.assert_array_equal(_collect(gen, 5, [2])[0][1]["image"], [10])


def test_iterable_source_errors():
    with pytest.raises(TypeError, match="one-shot iterator"):
        IterableSource(iter([{"image": np.zeros(2)}]))
    src = IterableSource([{"image": np.zeros(2)}], length=5)
    with pytest.raises(ValueError, match="ended after 2 samples but length=5"):
        _collect(src, 2)
    with pytest.raises(ValueError, match="different lengths"):
        IterableSource([{"image": np.zeros(2), "label": np.zeros(3)}], label_key="label")


def test_as_source_dispatch():
    x = np.zeros((4, 2))
    assert isinstance(as_source(x), ArraySource)
    assert isinstance(as_source({"image": x}), ArraySource)
    assert isinstance(as_source([{"image": x}]), IterableSource)
    src = ArraySource(x)
    assert as_source(src) is src
    with pytest.raises(TypeError, match="TFDSSource"):
        as_source("mnist")
    with pytest.raises(ValueError, match="labels= / groups="):
        as_source([{"image": x}], labels=np.zeros(4))
    # Keys given with a Source must be the Source's own: a label_key it does not use was once
    # dropped silently (a store without labels). The same keys are accepted.
    arrays = {"image": x, "label": np.arange(4)}
    for kw in (dict(label_key="label"), dict(group_key="label"), dict(data_key="label")):
        with pytest.raises(ValueError, match=f"{next(iter(kw))}='label' does not match"):
            as_source(ArraySource(arrays), **kw)
    labelled = ArraySource(arrays, label_key="label")
    assert as_source(labelled, label_key="label", data_key="image") is labelled


class _MeanExtractor:
    fingerprint = "mean-of-pixels"

    def __call__(self, x, *, mask=None, key=None):
        import jax.numpy as jnp

        v = x.astype(jnp.float32).reshape(x.shape[0], -1, 3).mean(1)
        return v[:, None, :], jnp.ones((x.shape[0], 1), bool)


def test_tfds_on_disk_dataset(tmp_path):
    """A dataset written in TFDS's on-disk format (array_record) by this test, read back through
    tfds.data_source, described, and resumed reading only the missing batches."""
    # Writing the dataset needs TensorFlow (the `tfds` / `test` extras); reading does not.
    tf = pytest.importorskip(
        "tensorflow", reason="tensorflow is not importable: pip install 'goldener-jax[tfds]'"
    )
    import tensorflow_datasets as tfds

    rng = np.random.RandomState(0)
    images = rng.randint(0, 255, (14, 4, 4, 3), dtype=np.uint8)
    labels = rng.randint(0, 3, 14)
    features = tfds.features.FeaturesDict(
        {
            "image": tfds.features.Tensor(shape=(4, 4, 3), dtype=np.uint8),
            "label": tfds.features.ClassLabel(num_classes=3),
        }
    )
    tfds.dataset_builders.store_as_tfds_dataset(
        name="goldener_tiny",
        version="1.0.0",
        features=features,
        split_datasets={
            "train": tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})
        },
        config=None,
        data_dir=str(tmp_path / "tfds"),
        file_format="array_record",
        disable_shuffling=True,
    )
    src = TFDSSource("goldener_tiny", split="train", data_dir=str(tmp_path / "tfds"))
    assert len(src) == 14 and src.fingerprint()["name"] == "tfds:goldener_tiny"
    ((b, batch),) = _collect(src, 4, [1])
    np.testing.assert_array_equal(batch["image"], images[4:8])
    np.testing.assert_array_equal(batch["label"], labels[4:8])

    store = describe(src, _MeanExtractor(), tmp_path / "store", batch_size=4, progress=False)
    np.testing.assert_array_equal(store.read_labels(), labels)
    vectors, idx = store.read_vectors()
    np.testing.assert_allclose(vectors, images.reshape(14, -1, 3).mean(1), rtol=1e-6)

    # Resume after losing two batches' flags: only those are read again (random access).
    store._arrays["done"][1].write(np.uint8(0)).result()
    store._arrays["done"][3].write(np.uint8(0)).result()

    class Spy(TFDSSource):
        read = []

        def _read(self, start, stop):
            Spy.read.append((start, stop))
            return super()._read(start, stop)

    again = describe(
        Spy("goldener_tiny", split="train", data_dir=str(tmp_path / "tfds")),
        _MeanExtractor(),
        tmp_path / "store",
        progress=False,
    )
    # Done batches 0 and 2 are read once to check their source digests (not computed), then
    # only the two missing batches are read to be described.
    assert Spy.read == [(0, 4), (8, 12), (4, 8), (12, 14)]
    assert again.is_complete()
    np.testing.assert_array_equal(FeatureStore.open(tmp_path / "store").read_vectors()[0], vectors)

    with pytest.raises(ValueError, match="could not open TFDS dataset 'nope'"):
        TFDSSource("nope", data_dir=str(tmp_path / "tfds"))
