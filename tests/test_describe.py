"""describe: resumable, bit-identical after SIGKILL, refuses to mix, clear errors."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _describe_worker import BATCH_SIZE, NUM_SAMPLES, build

import goldener_jax as gj
from goldener_jax.describe import describe
from goldener_jax.sources import ArraySource, IterableSource
from goldener_jax.store import FeatureStore, StoreCorruptError, StoreMismatchError
from goldener_jax.vectorize import flatten_vectors

TESTS = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(TESTS, "_describe_worker.py")


class RowsExtractor:
    """Duck-typed extractor: 3 rows per sample, a row is valid where its mean is positive."""

    def __init__(self, dim: int = 5, seed: int = 0, fingerprint: str | None = None):
        self.w = np.random.RandomState(seed).randn(4, dim).astype(np.float32)
        self.fingerprint = fingerprint or f"rows-extractor-{dim}-{seed}"

    def config(self):
        return {"kind": "rows", "seed": self.fingerprint}

    def __call__(self, x, *, mask=None, key=None):
        rows = x.reshape(x.shape[0], 3, 4)
        return rows @ self.w, rows.mean(-1) > 0


def _data(n=23, seed=1):
    rng = np.random.RandomState(seed)
    return rng.randn(n, 12).astype(np.float32), rng.randint(0, 4, n)


def _arrays(store: FeatureStore) -> dict[str, np.ndarray]:
    out = store.read_rows(0, store.num_rows)
    out["labels"] = store.read_labels()
    out["groups"] = store.read_groups()
    out["done"] = store.done_batches()
    return out


def _assert_bit_identical(a: dict, b: dict):
    assert a.keys() == b.keys()
    for name in a:
        if a[name] is None:
            assert b[name] is None, name
            continue
        assert a[name].dtype == b[name].dtype, name
        assert a[name].shape == b[name].shape, name
        assert a[name].tobytes() == b[name].tobytes(), f"{name} differs"


# ---------------------------------------------------------------- layout and round trip


def test_rows_layout_padding_and_flatten(tmp_path):
    x, y = _data()
    ex = RowsExtractor()
    store = describe(x, ex, tmp_path / "s", batch_size=4, labels=y, progress=False)
    assert store.is_complete()
    assert (store.num_samples, store.rows_per_sample, store.num_rows, store.dim) == (23, 3, 69, 5)
    vectors, valid = (np.asarray(a) for a in ex(jnp.asarray(x)))
    rows = store.read_rows(0, store.num_rows)
    np.testing.assert_array_equal(rows["sample_idx"], np.repeat(np.arange(23), 3))
    np.testing.assert_array_equal(rows["valid"], valid.reshape(-1))
    # Padding rows are stored as zeros; valid rows equal the extractor's output.
    assert not rows["vectors"][~rows["valid"]].any()
    got_v, got_idx = store.read_vectors()
    want_v, want_idx = flatten_vectors(vectors, valid)
    np.testing.assert_allclose(got_v, want_v, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got_idx, want_idx)
    np.testing.assert_array_equal(store.read_labels(), y)
    # A row range is read without reading the rest.
    part = store.read_rows(10, 20)
    np.testing.assert_array_equal(part["sample_idx"], rows["sample_idx"][10:20])


def test_layout_does_not_depend_on_batch_size(tmp_path):
    x, y = _data()
    a = describe(x, RowsExtractor(), tmp_path / "a", batch_size=4, progress=False)
    b = describe(x, RowsExtractor(), tmp_path / "b", batch_size=7, progress=False)
    ra, rb = a.read_rows(0, a.num_rows), b.read_rows(0, b.num_rows)
    np.testing.assert_array_equal(ra["sample_idx"], rb["sample_idx"])
    np.testing.assert_array_equal(ra["valid"], rb["valid"])
    np.testing.assert_allclose(ra["vectors"], rb["vectors"], rtol=1e-6, atol=1e-6)


def test_bfloat16_and_groups(tmp_path):
    x, y = _data()
    groups = np.arange(23) % 2
    store = describe(
        x,
        RowsExtractor(),
        tmp_path / "s",
        batch_size=5,
        dtype="bfloat16",
        labels=y,
        groups=groups,
        progress=False,
    )
    assert store.vectors.dtype.name == "bfloat16"
    np.testing.assert_array_equal(store.read_groups(), groups)
    meta = json.loads((tmp_path / "s" / "vectors" / "zarr.json").read_text())
    assert meta["zarr_format"] == 3 and meta["data_type"] == "bfloat16"


def test_bfloat16_store_feeds_select_split_and_drift(tmp_path):
    # The bf16 store the multi-device guide recommends: select / split hash its rows (the digest
    # once refused bf16 buffers) and drift reads it, each as on the same rows given as an array.
    x, _ = _data()
    store = describe(
        x, RowsExtractor(), tmp_path / "s", batch_size=5, dtype="bfloat16", progress=False
    )
    got = store.read_rows(0, store.num_rows)
    rows, sidx = got["vectors"][got["valid"]], got["sample_idx"][got["valid"]]
    assert rows.dtype == jnp.bfloat16
    kw = dict(method="kcenter", key=jax.random.key(0), coverage=False, progress=False)
    sel = gj.select(store, 5, **kw)
    np.testing.assert_array_equal(sel.indices, gj.select(rows, 5, sample_idx=sidx, **kw).indices)
    sets = gj.split(store, {"a": 0.5, "b": 0.5}, key=jax.random.key(0), progress=False)
    assert sorted(np.concatenate(list(sets.values())).tolist()) == np.unique(sidx).tolist()
    report = gj.drift(rows, rows.astype(np.float32), key=jax.random.key(0), num_permutations=20)
    assert report.p_value > 0.5  # the same rows


def test_multi_hot_labels(tmp_path):
    x, _ = _data()
    hot = np.random.RandomState(3).rand(23, 4) > 0.5
    store = describe(
        {"image": x, "tags": hot},
        RowsExtractor(),
        tmp_path / "s",
        batch_size=4,
        label_key="tags",
        progress=False,
    )
    np.testing.assert_array_equal(store.read_labels(), hot)


def test_real_feature_extractor_end_to_end(tmp_path):
    x, labels, ex = build()
    store = describe(x, ex, tmp_path / "s", batch_size=BATCH_SIZE, labels=labels, progress=False)
    vectors, idx = store.read_vectors()
    assert vectors.shape == (NUM_SAMPLES, 16)
    np.testing.assert_array_equal(idx, np.arange(NUM_SAMPLES))
    want = np.asarray(jax.jit(lambda e, x: e(x))(ex, x)[0])[:, 0]
    np.testing.assert_allclose(vectors, want, rtol=1e-5, atol=1e-6)
    assert store.manifest["extractor"]["fingerprint"] == ex.fingerprint
    # Same call again: nothing recomputed, same store.
    again = describe(x, ex, tmp_path / "s", labels=labels, progress=False)
    assert again.is_complete()


# ---------------------------------------------------------------- resuming


class FailingSource(ArraySource):
    """Raises after yielding ``fail_after`` batches (a crash in the middle of a run)."""

    def __init__(self, x, y, fail_after=None, log=None):
        super().__init__(x, labels=y)
        self.fail_after, self.log = fail_after, log if log is not None else []

    def iter_batches(self, batch_size, batch_indices):
        for i, (b, batch) in enumerate(super().iter_batches(batch_size, batch_indices)):
            if self.fail_after is not None and i == self.fail_after:
                raise RuntimeError("simulated crash")
            self.log.append(b)
            yield b, batch


def test_resume_after_exception_reads_only_missing(tmp_path, monkeypatch):
    x, y = _data()
    ref = describe(
        FailingSource(x, y), RowsExtractor(), tmp_path / "ref", batch_size=4, progress=False
    )
    with pytest.raises(RuntimeError, match="simulated crash"):
        describe(
            FailingSource(x, y, fail_after=3),
            RowsExtractor(),
            tmp_path / "s",
            batch_size=4,
            progress=False,
        )
    # Batch 0 was read first to size the store, then 1, 2, 3 before the crash: all written.
    partial = FeatureStore.open(tmp_path / "s")
    assert partial.done_batches().tolist() == [1, 1, 1, 1, 0, 0]
    log, written = [], []
    original = FeatureStore.write_batch_data

    def logged_write(self, b, *args, **kwargs):
        written.append(b)
        return original(self, b, *args, **kwargs)

    monkeypatch.setattr(FeatureStore, "write_batch_data", logged_write)
    store = describe(FailingSource(x, y, log=log), RowsExtractor(), tmp_path / "s", progress=False)
    # Done batches 0..3 are read once more to check their source digests, never recomputed.
    assert log == [0, 1, 2, 3, 4, 5] and written == [4, 5]
    _assert_bit_identical(_arrays(store), _arrays(ref))
    log.clear(), written.clear()
    describe(
        FailingSource(x, y, log=log), RowsExtractor(), tmp_path / "s", progress=False,
        check_source=False,
    )  # fmt: skip
    assert log == [] and written == []


def test_resume_after_kill_between_manifest_and_arrays(tmp_path):
    """The manifest is written first; a run killed before the arrays exist is resumed."""
    import shutil

    x, y = _data()
    ref = describe(x, RowsExtractor(), tmp_path / "ref", batch_size=4, labels=y, progress=False)
    describe(x, RowsExtractor(), tmp_path / "s", batch_size=4, labels=y, progress=False)
    for name in ("vectors", "labels", "done"):
        shutil.rmtree(tmp_path / "s" / name)
    store = describe(x, RowsExtractor(), tmp_path / "s", labels=y, progress=False)
    _assert_bit_identical(_arrays(store), _arrays(ref))


def test_iterable_source_rebatched_and_resumed(tmp_path):
    x, y = _data()
    batches = [{"image": x[i : i + 5], "label": y[i : i + 5]} for i in range(0, 23, 5)]
    ref = describe(
        ArraySource(x, labels=y, name="it"),
        RowsExtractor(),
        tmp_path / "ref",
        batch_size=4,
        progress=False,
    )
    src = IterableSource(batches, label_key="label", name="it")
    store = describe(src, RowsExtractor(), tmp_path / "s", batch_size=4, progress=False)
    _assert_bit_identical(_arrays(store), _arrays(ref))


def test_write_of_batch_i_overlaps_compute_of_batch_i_plus_1(tmp_path, monkeypatch):
    """The write of batch i blocks until batch i + 1 has been read and dispatched: this only
    finishes if the writer thread and the compute loop run concurrently."""
    import threading

    x, y = _data()
    dispatched = {b: threading.Event() for b in range(7)}
    waited = []

    class Signalling(ArraySource):
        def iter_batches(self, batch_size, batch_indices):
            for b, batch in super().iter_batches(batch_size, batch_indices):
                yield b, batch
                dispatched[b].set()  # runs when the loop asks for the next batch

    original = FeatureStore.write_batch_data

    def slow_write(self, b, *args, **kwargs):
        if b + 1 < self.num_batches:
            waited.append(dispatched[b + 1].wait(timeout=20))
        return original(self, b, *args, **kwargs)

    monkeypatch.setattr(FeatureStore, "write_batch_data", slow_write)
    store = describe(
        Signalling(x, labels=y), RowsExtractor(), tmp_path / "s", batch_size=4, progress=False
    )
    assert store.is_complete()
    assert waited == [True] * 5


def test_progress_bar_reports_skipped(tmp_path, capsys):
    x, y = _data()
    describe(x, RowsExtractor(), tmp_path / "s", batch_size=4, progress=False)
    describe(x, RowsExtractor(), tmp_path / "s", progress=True)
    err = capsys.readouterr().err
    assert "6/6" in err and "skipped=6" in err


def _wait_lines(path, count, proc, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return
        try:
            with open(path) as f:
                if sum(1 for _ in f) >= count:
                    return
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    raise AssertionError("worker made no progress")


def _lines(path) -> list[int]:
    try:
        with open(path) as f:
            return [int(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def _done(path) -> int:
    """Batches marked done (0 before the store exists: a kill can come before its creation)."""
    if not os.path.exists(os.path.join(path, "manifest.json")):
        return 0
    return int(FeatureStore.open(path).done_batches().sum())


def test_sigkill_crash_resume_bit_identical(tmp_path):
    """A describe subprocess is SIGKILLed at several points; reruns finish the store, the arrays
    equal an uninterrupted run bit for bit, and the batches computed across the crashes exceed the
    total only by the batches in flight at each kill."""
    # No empty PYTHONPATH entry: it would mean the working directory, whose goldener_jax/ (without
    # kernels/ inside it) would shadow the installed package.
    python_path = [TESTS, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(python_path)}
    num_batches = -(-NUM_SAMPLES // BATCH_SIZE)

    ref_counter = tmp_path / "ref.count"
    subprocess.run(
        [sys.executable, WORKER, str(tmp_path / "ref"), str(ref_counter)],
        env=env,
        check=True,
        timeout=120,
    )
    assert sorted(_lines(ref_counter)) == list(range(num_batches))

    store_path = str(tmp_path / "crash")
    total_reads, in_flight_sum, kills = 0, 0, 0
    max_in_flight = 2 + 1  # describe's queue + the batch being dispatched
    for run, kill_after in enumerate((1, 3, 2, 4)):
        counter = tmp_path / f"run{run}.count"
        done_before = _done(store_path)
        proc = subprocess.Popen([sys.executable, WORKER, store_path, str(counter), "0.03"], env=env)
        _wait_lines(counter, kill_after, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        reads = _lines(counter)
        total_reads += len(reads)
        done_after = _done(store_path)
        in_flight = len(reads) - (done_after - done_before)
        assert 0 <= in_flight <= max_in_flight, (reads, done_before, done_after)
        in_flight_sum += in_flight
        kills += proc.returncode == -signal.SIGKILL
    assert kills >= 3, "the worker finished before it could be killed"

    counter = tmp_path / "final.count"
    subprocess.run(
        [sys.executable, WORKER, store_path, str(counter)], env=env, check=True, timeout=120
    )
    final_reads = _lines(counter)
    done_before_final = num_batches - len(final_reads)
    assert len(set(final_reads)) == len(final_reads)
    total_reads += len(final_reads)
    assert total_reads - num_batches <= in_flight_sum
    assert done_before_final < num_batches  # something was left for the final run

    crashed, ref = FeatureStore.open(store_path), FeatureStore.open(tmp_path / "ref")
    assert crashed.is_complete()
    _assert_bit_identical(_arrays(crashed), _arrays(ref))


# ---------------------------------------------------------------- refusing to mix, bad input


def test_refuses_other_extractor_and_names_difference(tmp_path):
    x, _ = _data()
    describe(x, RowsExtractor(seed=0), tmp_path / "s", batch_size=4, progress=False)
    with pytest.raises(StoreMismatchError, match=r"another extractor.*seed"):
        describe(x, RowsExtractor(seed=1), tmp_path / "s", batch_size=4, progress=False)
    store = describe(
        x, RowsExtractor(seed=1), tmp_path / "s", batch_size=4, overwrite=True, progress=False
    )
    assert store.extractor_fingerprint == "rows-extractor-5-1"


def test_refuses_other_feature_extractor_layers(tmp_path):
    from goldener_jax.features import FeatureExtractor

    x, labels, ex = build()
    x = x[:8]
    describe(x, ex, tmp_path / "s", batch_size=4, progress=False)
    other = FeatureExtractor(model=ex.model, variables=ex.variables, layers=["conv_2"])
    with pytest.raises(StoreMismatchError, match="layers"):
        describe(x, other, tmp_path / "s", batch_size=4, progress=False)


def test_refuses_other_source_and_batch_size(tmp_path):
    x, _ = _data()
    describe(x, RowsExtractor(), tmp_path / "s", batch_size=4, progress=False)
    with pytest.raises(StoreMismatchError, match=r"source.*length: 23 in store, 20 requested"):
        describe(x[:20], RowsExtractor(), tmp_path / "s", batch_size=4, progress=False)
    with pytest.raises(StoreMismatchError, match=r"batch_size: 4 in store, 8 requested"):
        describe(x, RowsExtractor(), tmp_path / "s", batch_size=8, progress=False)
    with pytest.raises(StoreMismatchError, match="dtype"):
        describe(x, RowsExtractor(), tmp_path / "s", dtype="bfloat16", progress=False)


def test_corrupt_manifest(tmp_path):
    x, _ = _data()
    describe(x, RowsExtractor(), tmp_path / "s", batch_size=4, progress=False)
    (tmp_path / "s" / "manifest.json").write_text('{"format": "goldener-jax.feat')
    with pytest.raises(StoreCorruptError, match="manifest.json .* is corrupt"):
        describe(x, RowsExtractor(), tmp_path / "s", batch_size=4, progress=False)
    with pytest.raises(StoreCorruptError):
        FeatureStore.open(tmp_path / "s")
    (tmp_path / "s" / "manifest.json").write_text('{"format": "something-else"}')
    with pytest.raises(StoreCorruptError, match="missing key 'extractor'"):
        FeatureStore.open(tmp_path / "s")
    store = describe(
        x, RowsExtractor(), tmp_path / "s", batch_size=4, overwrite=True, progress=False
    )
    assert store.is_complete()


def test_path_is_a_file(tmp_path):
    x, _ = _data()
    f = tmp_path / "file.bin"
    f.write_bytes(b"x")
    with pytest.raises(ValueError, match="is an existing file"):
        describe(x, RowsExtractor(), f, progress=False)


def test_labels_of_other_length(tmp_path):
    x, y = _data()
    with pytest.raises(ValueError, match=r"different lengths.*23 samples.*22"):
        describe(x, RowsExtractor(), tmp_path / "s", labels=y[:-1], progress=False)


def test_batches_missing_the_data_key(tmp_path):
    x, _ = _data()
    with pytest.raises(KeyError, match="no key 'image'"):
        describe({"pixels": x}, RowsExtractor(), tmp_path / "a", progress=False)
    batches = [{"image": x[:10]}, {"pixels": x[10:]}]
    src = IterableSource(batches, length=23)
    with pytest.raises(KeyError, match=r"batch 1 .* no key 'image'"):
        describe(src, RowsExtractor(), tmp_path / "b", batch_size=4, progress=False)
    # Batches written before the bad one are done; nothing after it is.
    assert FeatureStore.open(tmp_path / "b").done_batches().tolist() == [1, 1, 0, 0, 0, 0]


def test_bad_extractor_and_arguments(tmp_path):
    x, _ = _data()
    with pytest.raises(TypeError, match="fingerprint"):
        describe(x, lambda x: (x, x), tmp_path / "s", progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        describe(x, RowsExtractor(), tmp_path / "s", batch_size=0, progress=False)
    with pytest.raises(ValueError, match="dtype"):
        describe(x, RowsExtractor(), tmp_path / "s", dtype="float16", progress=False)
    with pytest.raises(TypeError, match="labels .* integers"):
        describe(x, RowsExtractor(), tmp_path / "s", labels=np.zeros(23), progress=False)


def test_nan_vectors_are_refused(tmp_path):
    x, _ = _data()
    x[9, 4:8] = np.inf  # a valid row (positive mean) whose vector is not finite
    with pytest.raises(ValueError, match="NaN or Inf vectors .* sample 9"):
        describe(x, RowsExtractor(), tmp_path / "s", batch_size=4, progress=False)
    # The batch in question is not marked done (batches already queued after it may be).
    done = FeatureStore.open(tmp_path / "s").done_batches()
    assert done[:2].all() and not done[2]


def test_write_error_full_disk(tmp_path):
    """A real OS write error (file size limit: EFBIG, as a full disk would give ENOSPC) while a
    batch is written: clear error, the batch is not marked done, a rerun completes identically."""
    x, y = _data(n=40)
    ex = RowsExtractor(dim=64)
    ref = describe(x, ex, tmp_path / "ref", batch_size=4, labels=y, progress=False)
    with pytest.raises(RuntimeError):
        describe(
            FailingSource(x, y, fail_after=2), ex, tmp_path / "s", batch_size=4, progress=False
        )
    # Vector chunks are 4 samples x 3 rows x 64 dims x 4 bytes = 3 KiB: over the limit.
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, old_limit[1]))
    try:
        with pytest.raises(OSError, match=r"writing batch 3 .* failed.*not marked done"):
            describe(x, ex, tmp_path / "s", labels=y, progress=False)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    store = FeatureStore.open(tmp_path / "s")
    assert store.done_batches().tolist() == [1, 1, 1] + [0] * 7
    store = describe(x, ex, tmp_path / "s", labels=y, progress=False)
    _assert_bit_identical(_arrays(store), _arrays(ref))


def test_processes_write_disjoint_batches_of_one_store(tmp_path, monkeypatch):
    """Two processes (simulated in turn) each describe their own batches of the same store; the
    result equals a single-process run. The real 2-process run lives with the distributed tests."""
    from jax.experimental import multihost_utils

    x, y = _data()
    ref = describe(x, RowsExtractor(), tmp_path / "ref", batch_size=4, labels=y, progress=False)
    barriers = []
    monkeypatch.setattr(multihost_utils, "sync_global_devices", barriers.append)
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    for proc in (0, 1):
        monkeypatch.setattr(jax, "process_index", lambda proc=proc: proc)
        store = describe(x, RowsExtractor(), tmp_path / "s", batch_size=4, labels=y, progress=False)
        done = store.done_batches()
        assert done[proc::2].all()
        if proc == 0:
            assert not done[1::2].any()
    assert barriers == ["goldener_jax.describe:create", "goldener_jax.describe:done"] * 2
    _assert_bit_identical(_arrays(store), _arrays(ref))


def test_masked_random_rows_with_real_extractor(tmp_path):
    """Vectorizer(random=...) with a mask: per-sample keys from the sample index make the rows
    drawn independent of the batch size; a resumed run is bit-identical to an uninterrupted one;
    rows per sample stay at fixed offsets with `valid` marking the masked-out draws."""
    from goldener_jax.features import FeatureExtractor
    from goldener_jax.vectorize import Vectorizer

    x, labels, base = build()
    x = x[:13]
    mask = np.zeros((13, 8, 8), bool)
    mask[:, :4, :4] = True  # the top-left quarter of every image
    mask[5] = False  # an empty mask keeps all rows
    ex = FeatureExtractor(
        model=base.model,
        variables=base.variables,
        layers=["conv_0"],  # 8x8 map: 64 rows per sample
        vectorizer=Vectorizer(random=20),
    )
    data = {"image": x, "mask": mask}
    key = jax.random.key(7)
    a = describe(data, ex, tmp_path / "a", batch_size=4, mask_key="mask", key=key, progress=False)
    b = describe(data, ex, tmp_path / "b", batch_size=5, mask_key="mask", key=key, progress=False)
    ra, rb = a.read_rows(0, a.num_rows), b.read_rows(0, b.num_rows)
    assert a.rows_per_sample == 20 and a.num_rows == 13 * 20
    np.testing.assert_array_equal(ra["valid"], rb["valid"])
    np.testing.assert_allclose(ra["vectors"], rb["vectors"], rtol=1e-5, atol=1e-6)
    valid = ra["valid"].reshape(13, 20)
    assert valid[5].all() and (valid.sum(1) <= 16).sum() == 12  # 16 rows in the quarter

    class Failing(ArraySource):
        def iter_batches(self, batch_size, batch_indices):
            for i, item in enumerate(super().iter_batches(batch_size, batch_indices)):
                if i == 1:
                    raise RuntimeError("crash")
                yield item

    with pytest.raises(RuntimeError):
        describe(
            Failing(data, mask_key="mask"),
            ex,
            tmp_path / "c",
            batch_size=4,
            mask_key="mask",
            key=key,
            progress=False,
        )
    c = describe(data, ex, tmp_path / "c", mask_key="mask", key=key, progress=False)
    _assert_bit_identical(_arrays(c), _arrays(a))
