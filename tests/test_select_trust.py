"""Trust at the public boundary of ``select`` / ``split``: a checkpoint is never reused for
changed data (every row is fingerprinted), the checkpoint directory is locked for the run, legacy
``PRNGKey`` keys draw what typed keys draw, bad ``reduce`` strings say what is expected, and
progress bars can be turned off (the CLI's ``--quiet``)."""

import inspect

import jax
import numpy as np
import pytest

import goldener_jax as gj
from goldener_jax import checkpoint
from goldener_jax._locks import DirectoryLock, LockedError
from goldener_jax.checkpoint import CheckpointMismatchError

KEY = jax.random.key(0)


def _x(n=3000, d=4, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


class _Killed(Exception):
    pass


def _kill_after_saves(monkeypatch, n):
    real = checkpoint.Checkpointer.save
    done = []

    def save(self, step, state):
        if len(done) == n:
            raise _Killed
        real(self, step, state)
        done.append(step)

    monkeypatch.setattr(checkpoint.Checkpointer, "save", save)


def _changed(what, x, labels, groups):
    x, labels, groups = x.copy(), labels.copy(), groups.copy()
    if what == "vector row 1":
        x[1, 0] += 1e-3  # one element of one row of 3,000 (the old hash skipped row 1)
    elif what == "label 1":
        labels[1] = (labels[1] + 1) % 3
    else:
        groups[1], groups[2] = groups[2], groups[1]
    return x, labels, groups


@pytest.mark.parametrize("killed", [False, True], ids=["finished", "killed"])
@pytest.mark.parametrize("what", ["vector row 1", "label 1", "group 1"])
def test_checkpoint_is_refused_for_changed_data(tmp_path, monkeypatch, killed, what):
    x = _x()
    labels = np.arange(3000) % 3
    groups = np.arange(3000) // 2
    kw = dict(key=KEY, chunk_size=500, checkpoint_every=2, progress=False)
    ckpt = tmp_path / "ck"
    if killed:
        _kill_after_saves(monkeypatch, 2)
        with pytest.raises(_Killed):
            gj.select(x, 12, labels=labels, groups=groups, checkpoint_dir=ckpt, **kw)
        monkeypatch.undo()
    else:
        first = gj.select(x, 12, labels=labels, groups=groups, checkpoint_dir=ckpt, **kw)
        again = gj.select(x, 12, labels=labels, groups=groups, checkpoint_dir=ckpt, **kw)
        np.testing.assert_array_equal(again.indices, first.indices)  # same data: reused
    x2, labels2, groups2 = _changed(what, x, labels, groups)
    with pytest.raises(CheckpointMismatchError):
        gj.select(x2, 12, labels=labels2, groups=groups2, checkpoint_dir=ckpt, **kw)


def test_split_checkpoint_is_refused_for_changed_row(tmp_path):
    x = _x(600)
    kw = dict(key=KEY, checkpoint_dir=tmp_path / "ck", progress=False, manifest_path=False)
    kw["method"] = "kcenter"  # sets filled in order, checkpointed ("auto" has no steps)
    gj.split(x, {"a": 0.5, "b": 0.5}, **kw)
    x[1, 2] = 7.0
    with pytest.raises(CheckpointMismatchError):
        gj.split(x, {"a": 0.5, "b": 0.5}, **kw)


@pytest.mark.parametrize("seed", [0, 3])
def test_legacy_prng_key_is_the_typed_key(seed):
    x = _x(200)
    typed = gj.select(x, 15, key=jax.random.key(seed), progress=False)
    legacy = gj.select(x, 15, key=jax.random.PRNGKey(seed), progress=False)
    np.testing.assert_array_equal(legacy.indices, typed.indices)
    assert legacy.config["key"] == typed.config["key"]
    for method in ("auto", "random"):
        a = gj.split(
            x, {"a": 0.5, "b": 0.5}, key=jax.random.key(seed), method=method, progress=False
        )
        b = gj.split(
            x, {"a": 0.5, "b": 0.5}, key=jax.random.PRNGKey(seed), method=method, progress=False
        )
        for name in ("a", "b"):
            np.testing.assert_array_equal(a[name], b[name])
        assert a.manifest["key"] == b.manifest["key"]


@pytest.mark.parametrize(
    "key, match",
    [
        (0, "key must be a PRNG key, got int 0; pass key=jax.random.key\\(0\\)"),
        (np.zeros(3, np.uint32), "key must be a PRNG key, got an array of shape \\(3,\\)"),
        (np.zeros(2, np.float32), "dtype float32"),
        (jax.random.split(jax.random.key(0), 2), "single PRNG key"),
    ],
    ids=["int", "wrong-shape", "float", "batch"],
)
def test_bad_keys_are_refused_clearly(key, match):
    x = _x(20)
    with pytest.raises(TypeError, match=match):
        gj.select(x, 3, key=key, progress=False)
    with pytest.raises(TypeError, match=match):
        gj.split(x, {"a": 0.5, "b": 0.5}, key=key, progress=False)


@pytest.mark.parametrize("reduce", ["pca:abc", "pca:", "pca", "svd:3", "random:-2", "pca:1.5"])
def test_bad_reduce_string_names_the_expected_form(reduce):
    x = _x(20)
    with pytest.raises(ValueError, match="reduce must be 'pca:N' or 'random:N' with N a positive"):
        gj.select(x, 3, key=KEY, reduce=reduce, progress=False)
    with pytest.raises(ValueError, match="reduce must be 'pca:N'"):
        gj.split(x, {"a": 0.5, "b": 0.5}, key=KEY, reduce=reduce, progress=False)


def test_good_reduce_strings_still_work():
    sel = gj.select(_x(60), 5, key=KEY, reduce="pca:2", progress=False)
    assert sel.config["reduce"] == {"method": "pca", "n_components": 2}


@pytest.mark.parametrize("fn", ["select", "split"])
def test_checkpoint_dir_is_locked_for_the_run(tmp_path, fn):
    x = _x(60)
    ckpt = tmp_path / "ck"

    def run():
        if fn == "select":
            return gj.select(x, 5, key=KEY, checkpoint_dir=ckpt, progress=False)
        return gj.split(x, {"a": 0.5, "b": 0.5}, key=KEY, checkpoint_dir=ckpt, progress=False)

    holder = DirectoryLock(ckpt, "checkpoint directory").acquire()
    try:
        with pytest.raises(LockedError, match="checkpoint directory .* another run"):
            run()
    finally:
        holder.release()
    first = run()
    second = run()  # the first run released the lock
    if fn == "select":
        np.testing.assert_array_equal(first.indices, second.indices)
        holder = DirectoryLock(ckpt, "checkpoint directory").acquire()  # free after the run
        holder.release()


def test_checkpoint_dir_on_a_file_is_a_clear_error(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(ValueError, match="cannot be a directory"):
        gj.select(_x(20), 3, key=KEY, checkpoint_dir=path, progress=False)


@pytest.mark.parametrize("fn", ["select", "split"])
def test_progress_bar_on_and_off(capsys, fn):
    x = _x(200)

    def run(progress):
        if fn == "select":
            gj.select(x, 30, key=KEY, progress=progress)
        else:
            gj.split(x, {"a": 0.5, "b": 0.5}, key=KEY, progress=progress)

    run(True)
    err = capsys.readouterr().err
    want = ("select", "30/30") if fn == "select" else ("split (auto)", "4/4")
    assert all(w in err for w in want), err
    run(False)
    assert capsys.readouterr().err == ""
    assert "progress" in inspect.signature(getattr(gj, fn)).parameters  # what the CLI detects


def test_auto_split_progress_shows_its_stages(capsys):
    gj.split(_x(200), {"a": 0.5, "b": 0.5}, key=KEY, method="auto", progress=True)
    assert "split (auto)" in capsys.readouterr().err
    gj.split(_x(200), {"a": 0.5, "b": 0.5}, key=KEY, method="auto", progress=False)
    assert capsys.readouterr().err == ""


def test_anchors_are_never_silently_ignored():
    """Anchors (e.g. labelled samples) must steer the choice: ``auto`` picks its anchor-aware
    method when its rule's choice would ignore them; an explicit method that would ignore them
    is refused, naming the anchor-aware ones."""
    x = np.random.default_rng(3).normal(size=(200, 4)).astype(np.float32)
    anchors = np.arange(10)
    rule = gj.BudgetRule(small="random")  # 5 % of the pool: random, which ignores anchors
    plain = gj.select(x, 10, method=rule, key=jax.random.key(0))
    assert plain.config["method"] == "random"
    sel = gj.select(x, 10, method=rule, key=jax.random.key(0), anchors=anchors)
    assert sel.config["method"] == "typical_kcenter"
    assert sel.config["auto"]["anchored"] == "typical_kcenter"
    want = gj.select(x, 10, method="typical_kcenter", key=jax.random.key(0), anchors=anchors)
    np.testing.assert_array_equal(sel.indices, want.indices)
    assert not set(sel.indices.tolist()) & set(anchors.tolist())
    for method in ("farthest", "random", "zcore"):
        with pytest.raises(ValueError, match=f"method '{method}' cannot use anchors.*kcenter"):
            gj.select(x, 10, method=method, key=jax.random.key(0), anchors=anchors)


def test_labels_false_ignores_a_stores_labels(tmp_path):
    """A store described with labels stratifies by them by default; ``labels=False`` selects as
    if there were none (same indices as the unlabelled array), and the config says so."""
    from goldener_jax.describe import describe

    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 4)).astype(np.float32)
    labels = np.repeat(np.arange(3), 32)

    class OneRow:
        fingerprint = "one-row"

        def __call__(self, batch, *, mask=None, key=None):
            return batch[:, None, :], batch[:, :1] > -1e9

    store = describe(x, OneRow(), tmp_path / "s", labels=labels, batch_size=32, progress=False)
    key = jax.random.key(0)
    by_label = gj.select(store, 9, key=key, progress=False)
    assert by_label.label_counts is not None and sorted(by_label.label_counts.values()) == [3] * 3
    blind = gj.select(store, 9, key=key, labels=False, progress=False)
    assert blind.label_counts is None
    plain = gj.select(x, 9, key=key, progress=False)
    np.testing.assert_array_equal(blind.indices, plain.indices)
