import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import goldener_jax as gj
from goldener_jax import kernels as gk

HERE = os.path.dirname(__file__)
KEY = jax.random.key(0)


def _x(n=120, d=6, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def test_plain_kcenter_equals_the_kernel():
    x = _x()
    sel = gj.select(x, 15, key=KEY, method="kcenter")
    np.testing.assert_array_equal(sel.indices, np.asarray(gk.greedy_k_center(x, 15)))
    assert sel.label_counts is None and sel.config["count"] == 15
    d = np.sqrt(((x[:, None] - x[sel.indices][None]) ** 2).sum(-1)).min(1)
    assert sel.coverage_radius == pytest.approx(d.max(), rel=1e-4)


def test_size_as_ratio_is_ceil():
    assert len(gj.select(_x(95), 0.1, key=KEY, method="random")) == 10
    assert len(gj.select(_x(95), 1.0, key=KEY, method="random")) == 95


def test_stratified_counts_follow_the_reference_rules():
    x = _x(100)
    labels = np.array([0] * 50 + [1] * 30 + [2] * 18 + [3] * 2)
    sel = gj.select(x, 0.1, key=KEY, labels=labels)
    # Round 1: floor(n * 0.1) = 5, 3, 1, 0 -> the 0 raised to 1, taken from label 0: 4, 3, 1, 1
    # (9 samples); round 2: the missing one goes to the largest unselected label (0).
    assert sel.label_counts == {0: 5, 1: 3, 2: 1, 3: 1}
    assert len(sel) == 10 and len(set(sel.indices.tolist())) == 10
    # Within a label, the picks are k-center over that label's vectors.
    first = sel.indices[np.isin(sel.indices, np.flatnonzero(labels == 3))]
    assert first.tolist() == [int(np.flatnonzero(labels == 3)[gk.greedy_k_center(x[98:], 1)[0]])]


def test_multi_vector_samples_count_distinct_samples():
    x = _x(90)
    sample_idx = np.repeat(np.arange(30), 3)  # 3 vectors per sample
    sel = gj.select(x, 12, key=KEY, method="kcenter", sample_idx=sample_idx)
    assert len(sel) == 12 and len(set(sel.indices.tolist())) == 12
    assert set(sel.indices.tolist()) <= set(range(30))
    # The first picks are those of k-center over the vectors, mapped to their samples.
    order = [int(i) // 3 for i in np.asarray(gk.greedy_k_center(x, 12))]
    firsts = list(dict.fromkeys(order))
    assert sel.indices[: len(firsts)].tolist() == firsts


def test_multi_label_samples_count_for_every_label():
    x = _x(60)
    rng = np.random.default_rng(1)
    multi = rng.random((60, 3)) < 0.4
    multi[np.arange(60), np.arange(60) % 3] = True  # every sample has a label
    sel = gj.select(x, 12, key=KEY, labels=multi)
    assert len(sel) == 12
    for j in range(3):
        assert sel.label_counts[j] == int(multi[sel.indices, j].sum())
        assert sel.label_counts[j] >= 1


def test_anchors_are_never_returned_and_steer_the_choice():
    x = _x()
    anchors = np.array([3, 7, 50])
    sel = gj.select(x, 10, key=KEY, method="kcenter", anchors=anchors)
    assert not set(sel.indices.tolist()) & set(anchors.tolist())
    want = gk.greedy_k_center(np.delete(x, anchors, 0), 10, anchors=x[anchors])
    np.testing.assert_array_equal(sel.indices, np.delete(np.arange(120), anchors)[want])
    # An empty list is no anchors (NumPy makes it float64: once refused as a wrong dtype).
    none = gj.select(x, 10, key=KEY, method="kcenter", anchors=[])
    np.testing.assert_array_equal(none.indices, gj.select(x, 10, key=KEY, method="kcenter").indices)


def test_exclude_labels():
    labels = np.arange(120) % 4
    sel = gj.select(_x(), 0.25, key=KEY, labels=labels, exclude_labels=[2])
    assert not np.isin(sel.indices, np.flatnonzero(labels == 2)).any()
    assert 2 not in sel.label_counts and len(sel) == 23  # ceil(0.25 * 90)


def test_groups_are_taken_whole():
    groups = np.arange(120) // 4
    sel = gj.select(_x(), 20, key=KEY, groups=groups)
    assert len(sel) == 20
    chosen = set(sel.indices.tolist())
    for g in set(groups[sel.indices].tolist()):
        assert set(np.flatnonzero(groups == g).tolist()) <= chosen


@pytest.mark.parametrize("method", ["kcenter", "herding", "zcore", "random"])
def test_every_method_is_deterministic_for_a_key(method):
    x = _x()
    opts = {"num_samples": 512, "num_redundancy": 10} if method == "zcore" else None
    kw = dict(method=method, labels=np.arange(120) % 3, chunk_size=50, method_options=opts)
    a = gj.select(x, 17, key=KEY, **kw)
    b = gj.select(x, 17, key=KEY, **kw)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert len(set(a.indices.tolist())) == 17
    if method in ("zcore", "random"):  # k-center and herding are deterministic algorithms
        c = gj.select(x, 17, key=jax.random.key(1), **kw)
        assert not np.array_equal(a.indices, c.indices)


def test_chunks_bound_anchors_and_reduce():
    x = _x(200, 16)
    sel = gj.select(x, 30, key=KEY, chunk_size=60, max_anchors=5, reduce="pca:4")
    assert len(set(sel.indices.tolist())) == 30
    sel = gj.select(x, 30, key=KEY, reduce=("random", 8))
    assert len(sel) == 30


def test_resume_same_size_is_a_no_op_and_more_extends(tmp_path):
    x = _x()
    labels = np.arange(120) % 3
    first = gj.select(x, 20, key=KEY, labels=labels, checkpoint_dir=tmp_path, checkpoint_every=3)
    steps = sorted(os.listdir(tmp_path / "progress"))
    again = gj.select(x, 20, key=KEY, labels=labels, checkpoint_dir=tmp_path, checkpoint_every=3)
    np.testing.assert_array_equal(first.indices, again.indices)
    assert sorted(os.listdir(tmp_path / "progress")) == steps  # nothing recomputed or saved
    more = gj.select(x, 30, key=KEY, labels=labels, checkpoint_dir=tmp_path, checkpoint_every=3)
    np.testing.assert_array_equal(more.indices[:20], first.indices)
    assert len(set(more.indices.tolist())) == 30
    with pytest.raises(ValueError, match="30 samples are already selected"):
        gj.select(x, 25, key=KEY, labels=labels, checkpoint_dir=tmp_path)
    with pytest.raises(gj.CheckpointMismatchError):
        gj.select(x, 30, key=jax.random.key(9), labels=labels, checkpoint_dir=tmp_path)


def test_select_over_a_store(tmp_path):
    from goldener_jax.store import FeatureStore

    x = _x(40, 4)
    manifest = FeatureStore.build_manifest(
        extractor_fingerprint="f",
        extractor_config={},
        source={"n": 20},
        num_samples=20,
        rows_per_sample=2,
        dim=4,
        dtype="float32",
        batch_size=10,
        labels=((), "int64"),
    )
    store = FeatureStore.create(tmp_path / "store", manifest)
    for b in range(2):
        rows = slice(20 * b, 20 * b + 20)
        store.write_batch(
            b,
            x[rows].reshape(10, 2, 4),
            np.ones((10, 2), bool),
            labels=np.arange(10 * b, 10 * b + 10) % 2,
        )
    sel = gj.select(str(tmp_path / "store"), 6, key=KEY)
    assert sel.label_counts == {0: 3, 1: 3} and set(sel.indices.tolist()) <= set(range(20))


def test_bad_input():
    x = _x(20)
    for size in (0, 21, 0.0, 1.5, -3):
        with pytest.raises(ValueError, match="size as (an int|a float) must be in"):
            gj.select(x, size, key=KEY)
    with pytest.raises(TypeError, match="size must be"):
        gj.select(x, "3", key=KEY)
    with pytest.raises(TypeError, match="key must be a PRNG key"):
        gj.select(x, 3, key=0)
    with pytest.raises(ValueError, match="method must be one of"):
        gj.select(x, 3, key=KEY, method="magic")
    with pytest.raises(ValueError, match="labels must have one entry per sample \\(20\\)"):
        gj.select(x, 3, key=KEY, labels=np.zeros(19, int))
    multi = np.zeros((20, 3), bool)
    multi[:, 0] = True
    with pytest.raises(ValueError, match="label\\(s\\) \\[1, 2\\] have no samples"):
        gj.select(x, 3, key=KEY, labels=multi)
    with pytest.raises(ValueError, match="at least one sample"):
        gj.select(x, 2, key=KEY, labels=np.arange(20) % 3)
    with pytest.raises(ValueError, match="exclude_labels needs labels"):
        gj.select(x, 2, key=KEY, exclude_labels=[1])
    with pytest.raises(ValueError, match="anchors \\[99\\] are not sample indices"):
        gj.select(x, 2, key=KEY, anchors=np.array([99]))
    with pytest.raises(ValueError, match="NaN or Inf"):
        gj.select(np.full((4, 2), np.inf, np.float32), 2, key=KEY)
    with pytest.raises(ValueError, match="chunk_size must be an int >= 1"):
        gj.select(x, 2, key=KEY, chunk_size=0)
    with pytest.raises(ValueError, match="groups cannot satisfy the counts"):
        gj.select(x, 3, key=KEY, groups=np.arange(20) // 10)


def _steps(path):
    try:
        return [int(s) for s in os.listdir(path) if s.isdigit()]
    except FileNotFoundError:
        return []


def test_sigkill_at_several_points_then_rerun_gives_the_uninterrupted_selection(tmp_path):
    sys.path.insert(0, HERE)
    import _select_worker

    want = _select_worker.run().indices
    ckpt, out = str(tmp_path / "ckpt"), str(tmp_path / "out.npy")
    paths = [HERE, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    kill_when = [
        lambda: _steps(os.path.join(ckpt, "inflight")),  # inside the first k-center task
        lambda: max(_steps(os.path.join(ckpt, "progress")), default=0) >= 3,  # a later task
        lambda: max(_steps(os.path.join(ckpt, "progress")), default=0) >= 4,
    ]
    killed = 0
    for condition in kill_when:
        proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "_select_worker.py"), ckpt, out], env=env
        )
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline and not condition():
            time.sleep(0.01)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait()
    assert killed >= 2
    if os.path.exists(out):  # a kill that landed after the result was written
        os.remove(out)
    subprocess.run(
        [sys.executable, os.path.join(HERE, "_select_worker.py"), ckpt, out], env=env, check=True
    )
    np.testing.assert_array_equal(np.load(out), want)


def test_string_labels_exclusion_and_groups_together():
    labels = np.array(["cat", "dog", "eel"] * 40, dtype=object)
    groups = np.arange(120) // 2
    sel = gj.select(_x(), 10, key=KEY, labels=labels, groups=groups, exclude_labels=["eel"])
    assert set(sel.label_counts) == {"cat", "dog"} and len(sel) == 10
    assert not np.isin(sel.indices, np.flatnonzero(labels == "eel")).any()
    chosen = set(sel.indices.tolist())
    for g in groups[sel.indices]:  # whole groups, minus their excluded members
        members = [int(i) for i in np.flatnonzero(groups == g) if labels[i] != "eel"]
        assert set(members) <= chosen


def test_registered_methods_plug_in_and_auto_resolves():
    from goldener_jax.kernels import selectors

    from goldener_jax.select import METHODS

    first_k = gj.SelectionMethod(
        name="first_k",
        make=lambda options, *, metric, mesh: selectors.one_shot(
            "first_k", lambda x, k, key: np.arange(k, dtype=np.int32)
        ),
    )
    gj.register_method(first_k)
    try:
        with pytest.raises(ValueError, match="already registered"):
            gj.register_method(first_k)
        labels = np.arange(120) % 2
        sel = gj.select(_x(), 6, key=KEY, method="first_k", labels=labels)
        # Per label (ascending target, ties in label order): label 0 rows, then label 1 rows.
        assert sel.indices.tolist() == [0, 2, 4, 1, 3, 5] and sel.config["method"] == "first_k"
    finally:
        METHODS.pop("first_k")
    auto = gj.select(_x(), 5, key=KEY, method="auto")  # 5 picks: below the 40-pick switch
    assert auto.config["method"] == "typical_kcenter"
    assert gj.select(_x(), 40, key=KEY).config["method"] == "probcover"  # the default is auto
