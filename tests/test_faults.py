"""Fault injection: damaged store chunks and checkpoint files, full disks, legacy keys.

Every flipped, truncated, zeroed or deleted chunk of vectors, labels, sample_idx and valid is
reported by ``verify`` and by the reads ``select`` makes; a damaged checkpoint says it is corrupt
and what to do; a full disk gives a goldener-jax message.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import uuid

import jax
import numpy as np
import pytest
from _stores import ARRAYS, FAULTS, copy, damage, make

import goldener_jax as gj
from goldener_jax import kernels as gk
from goldener_jax._keys import as_key
from goldener_jax.checkpoint import CheckpointCorruptError, Checkpointer
from goldener_jax.store import FeatureStore, StoreCorruptError

REPAIR = "run describe again: it re-does damaged batches"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return str(make(tmp_path_factory.mktemp("pristine") / "s").path)


def _read(store: FeatureStore, array: str):
    return store.read_labels() if array == "labels" else store.read_vectors()


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("array", ARRAYS)
def test_damaged_chunk_is_reported_by_verify_and_reads(pristine, tmp_path, array, fault):
    path = copy(pristine, tmp_path / "s")
    key = FeatureStore.open(path).batch_chunk_keys(2)[array]
    damage(path, array, 2, fault)
    store = FeatureStore.open(path)
    report = store.verify()
    assert report.checked and not report.ok
    assert list(report.damaged) == [2], report.damaged
    assert key in report.damaged[2][0]
    expected = "is missing" if fault == "delete" else "is unreadable"
    assert expected in report.damaged[2][0]
    assert report.summary().startswith("damaged: 1 of 6 done batches (2;")
    with pytest.raises(StoreCorruptError, match=rf"batch 2.*{REPAIR}") as info:
        _read(store, array)
    assert info.value.batches == [2]


def test_intact_store_verifies(pristine):
    report = FeatureStore.open(pristine).verify()
    assert report.ok and report.batches_checked == 6 and report.damaged == {}
    assert report.summary().startswith("ok: 6 done batches")


def test_chunk_copied_from_another_batch_is_caught_by_sample_idx(pristine, tmp_path):
    """A chunk swapped in from another batch passes its checksum; the row -> sample record
    still catches it."""
    from _stores import chunk_file

    path = copy(pristine, tmp_path / "s")
    shutil.copyfile(chunk_file(path, "sample_idx", 1), chunk_file(path, "sample_idx", 3))
    store = FeatureStore.open(path)
    assert list(store.verify().damaged) == [3]
    with pytest.raises(StoreCorruptError, match=r"\(batch 3\).*recorded for sample 4") as info:
        store.read_vectors()
    assert info.value.batches == [3]


def test_twenty_random_faults_never_give_a_silent_selection(pristine, tmp_path):
    from goldener_jax import select

    rng = np.random.RandomState(1234)
    arrays = (*ARRAYS, "groups")
    for trial in range(20):
        array, fault = arrays[rng.randint(len(arrays))], FAULTS[rng.randint(len(FAULTS))]
        batch, position = int(rng.randint(6)), float(rng.uniform(0.05, 0.95))
        path = copy(pristine, tmp_path / f"t{trial}")
        damage(path, array, batch, fault, position)
        report = FeatureStore.open(path).verify()
        assert batch in report.damaged, (trial, array, fault, batch, position)
        with pytest.raises(StoreCorruptError, match=rf"batch {batch}\b.*{REPAIR}"):
            select(path, 5, method="kcenter", key=jax.random.key(trial))
        shutil.rmtree(path)


# ---------------------------------------------------------------- checkpoints


def _saved_states():
    one = {"x": np.arange(600, dtype=np.float32), "n": np.arange(5, dtype=np.int32)}
    two = {k: v * 3 + 1 for k, v in one.items()}
    return one, two


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("ck") / "ck"
    one, two = _saved_states()
    with Checkpointer(path, {"k": 1}, every_steps=1, async_save=False) as ckpt:
        ckpt.save(1, one)
        ckpt.save(2, two)
    return path


def _checkpoint_files(root) -> dict[str, str]:
    """One file of each kind in checkpoint 2."""
    step = os.path.join(root, "2")
    data = os.path.join(step, "state", "ocdbt.process_0", "d")
    largest = max(os.listdir(data), key=lambda f: os.path.getsize(os.path.join(data, f)))
    return {
        "array data": os.path.join(data, largest),
        "array manifest": os.path.join(step, "state", "manifest.ocdbt"),
        "tree metadata": os.path.join(step, "state", "_METADATA"),
        "integrity record": os.path.join(step, "integrity", "metadata"),
        "config": os.path.join(step, "config", "metadata"),
    }


def _break(path: str, fault: str) -> None:
    if fault == "delete":
        os.remove(path)
        return
    raw = bytearray(open(path, "rb").read())
    if fault == "flip":
        raw[len(raw) // 2] ^= 0x10
    else:
        raw = raw[: len(raw) // 2]
    with open(path, "wb") as f:
        f.write(bytes(raw))


@pytest.mark.parametrize("fault", ["flip", "truncate", "delete"])
@pytest.mark.parametrize(
    "kind", ["array data", "array manifest", "tree metadata", "integrity record", "config"]
)
def test_damaged_checkpoint_is_corrupt_never_silent(checkpoint_dir, tmp_path, kind, fault):
    root = str(tmp_path / "ck")
    shutil.copytree(checkpoint_dir, root)
    target = _checkpoint_files(root)[kind]
    _break(target, fault)
    one, two = _saved_states()
    like = {k: np.zeros_like(v) for k, v in one.items()}
    if kind == "config":
        # An unreadable config is the debris of a kill while Orbax deleted an old step: dropped
        # with a warning, and the previous checkpoint is resumed.
        with pytest.warns(RuntimeWarning, match="checkpoint 2 .* incomplete or corrupt"):
            ckpt = Checkpointer(root, {"k": 1}, every_steps=1)
        with ckpt:
            state, step = ckpt.restore(like)
        assert step == 1
        for k in one:
            np.testing.assert_array_equal(state[k], one[k])
        return
    with Checkpointer(root, {"k": 1}, every_steps=1) as ckpt:
        try:
            state, step = ckpt.restore(like)
        except CheckpointCorruptError as e:
            message = str(e)
            assert message.startswith(f"checkpoint 2 in {root!r} is corrupt: ")
            assert f"delete {os.path.join(root, '2')!r} to resume from checkpoint 1" in message
            assert "codec can't decode" not in message.split(";")[-1]
            return
    # Not refused: then it must be exactly what was saved (a file Orbax does not need).
    assert (kind, fault) in {("tree metadata", "delete")}, f"{kind} {fault} was not refused"
    assert step == 2
    for k in two:
        np.testing.assert_array_equal(state[k], two[k])


def test_flipped_array_byte_used_to_restore_silently(checkpoint_dir, tmp_path):
    """The case Orbax alone misses (no checksum on array bytes): the digest catches it."""
    root = str(tmp_path / "ck")
    shutil.copytree(checkpoint_dir, root)
    _break(_checkpoint_files(root)["array data"], "flip")
    with Checkpointer(root, {"k": 1}, every_steps=1) as ckpt:
        with pytest.raises(CheckpointCorruptError, match="digest mismatch|cannot be read"):
            ckpt.restore({k: np.zeros_like(v) for k, v in _saved_states()[0].items()})


# ---------------------------------------------------------------- full disks


def test_disk_full_during_checkpoint_save_is_one_clear_error(tmp_path, monkeypatch):
    import orbax.checkpoint as ocp

    def full(self, *args, **kwargs):
        raise ValueError(
            "Error writing local file: [OS error 28: No space left on device] (tensorstore)"
        )

    with Checkpointer(tmp_path / "ck", {"k": 1}, every_steps=1, async_save=False) as ckpt:
        ckpt.save(1, {"x": np.zeros(3)})
        monkeypatch.setattr(ocp.CheckpointManager, "save", full)
        with pytest.raises(OSError, match="goldener-jax: no space left on device") as info:
            ckpt.save(2, {"x": np.ones(3)})
    assert info.value.errno == errno.ENOSPC
    assert "resumes from checkpoint 1" in str(info.value)


@contextlib.contextmanager
def _tmpfs(tmp_path, size: str):
    mount = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    try:
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"cannot mount a tmpfs here ({e}); the ENOSPC path is covered by a mock")
    if result.returncode != 0:
        pytest.skip(
            "mounting a small tmpfs needs root (or CAP_SYS_ADMIN) and is not allowed here: "
            f"{result.stderr.strip()}; the ENOSPC path is covered by a mock"
        )
    try:
        yield str(mount)
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=20)


def test_disk_full_on_a_real_tmpfs(tmp_path):
    with _tmpfs(tmp_path, "256k") as mount:
        big = {"x": np.random.RandomState(0).rand(200_000).astype(np.float32)}  # 800 kB
        with pytest.raises(OSError, match="goldener-jax: no space left on device while saving"):
            with Checkpointer(os.path.join(mount, "ck"), {"k": 1}, every_steps=1) as ckpt:
                ckpt.save(1, big)
                ckpt.wait()
        # describe: the batch being written is not marked done; the message says what to do.
        from goldener_jax.describe import describe

        class Identity:
            fingerprint = "identity"

            def __call__(self, x, *, mask=None, key=None):
                return x[:, None, :], x[:, :1] > -1e9

        x = np.random.RandomState(0).rand(64, 4000).astype(np.float32)  # 1 MB of vectors
        with pytest.raises(OSError, match="is not marked done, run describe again to resume"):
            describe(x, Identity(), os.path.join(mount, "s"), batch_size=8, progress=False)


# ---------------------------------------------------------------- keys


@pytest.mark.parametrize("seed", [0, 7])
def test_legacy_prngkey_is_wrapped_to_the_same_draws(seed):
    legacy = jax.random.PRNGKey(seed)
    wrapped = as_key(legacy)
    np.testing.assert_array_equal(
        jax.random.uniform(wrapped, (4,)), jax.random.uniform(jax.random.key(seed), (4,))
    )
    typed = jax.random.key(seed)
    assert as_key(typed) is typed
    assert as_key(np.asarray(legacy)).dtype == typed.dtype


@pytest.mark.parametrize(
    "bad, message",
    [
        (0, r"key must be a PRNG key, got int 0; pass key=jax.random.key\(0\)"),
        (np.zeros(2, np.float32), r"shape \(2,\) and dtype float32"),
        (np.zeros(3, np.uint32), r"shape \(3,\) and dtype uint32"),
        (jax.random.split(jax.random.key(0), 2), r"single PRNG key, got a key array of shape"),
    ],
)
def test_bad_keys_are_refused_with_the_fix(bad, message):
    with pytest.raises(TypeError, match=message):
        as_key(bad)


_X16 = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
_KEYED = {
    "random_subset": lambda key: gk.random_subset(key, 16, 4),
    "kmeans": lambda key: gk.kmeans(_X16, 3, key, num_iters=2)[0],
    "minibatch_kmeans": lambda key: gk.minibatch_kmeans(_X16, 3, key, batch_size=8)[0],
    "random_projection": lambda key: gk.random_projection(_X16, 2, key),
    "pca_fit": lambda key: gk.pca_fit(_X16, 2, sample_size=8, key=key).mean,
    "drift": lambda key: gj.drift(_X16[:8], _X16[8:], key=key, num_permutations=5).p_value,
}


@pytest.mark.parametrize("name", sorted(_KEYED))
def test_every_keyed_function_takes_keys_by_one_rule(name):
    # An int seed once crashed deep in JAX for some (random_subset, pca_fit...), and a legacy
    # PRNGKey was refused by others (kmeans, drift): now as_key everywhere.
    call = _KEYED[name]
    with pytest.raises(TypeError, match="not a seed"):
        call(0)
    np.testing.assert_array_equal(
        np.asarray(call(jax.random.PRNGKey(3))), np.asarray(call(jax.random.key(3)))
    )
