"""One table over every registered selection method: each (method, property) its own item.

Properties: the requested number of distinct samples (and, where one exists, equal to an
independent NumPy reference); the same key gives the same picks; the selector run in chunks
(``max_steps``) equals one whole run; ``select`` killed mid-run and rerun on its
``checkpoint_dir`` equals the uninterrupted run and really reuses the saved progress; on 8 fake
devices (``n`` not divisible by 8) the same picks as on one; a mistyped option is refused.
"""

import os
import sys

import jax
import numpy as np
import pytest

import goldener_jax as gj
from goldener_jax import checkpoint
from goldener_jax import kernels as gk
from goldener_jax.pipeline import METHODS, check_options

sys.path.insert(0, os.path.dirname(__file__))
import _reference as ref  # noqa: E402

KEY = jax.random.key(3)
N, D, K = 101, 4, 6  # N not divisible by the 8 fake devices
# Small settings so that every method finishes in a few seconds; chosen so that the iterative
# methods take several steps (several chunks, several checkpoints).
OPTIONS = {
    "zcore": {"num_samples": 300, "chunk": 32, "num_redundancy": 10},
    "kmeans_medoids": {"num_iters": 20},
    "typiclust": {"num_iters": 20, "num_neighbors": 5},
    "probcover": {"quantile": 0.5},
    "typical_kcenter": {"num_neighbors": 5},
}
BUILTIN = sorted(METHODS)  # every method registered when the table is collected
ONE_SHOT = {"random"}  # methods that choose in one go (a single step, nothing to chunk)


def _x(n=N, d=D, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    x[7] = x[n // 2]  # a duplicate: ties must still go the same way everywhere
    return x


def _select(method, x, size=K, **kw):
    return gj.select(
        x, size, method=method, key=KEY, method_options=OPTIONS.get(method), coverage=False, **kw
    )


def _selector(method, mesh=None):
    m = METHODS[method]
    return m.make(check_options(method, m.options, OPTIONS.get(method)), metric="euclidean",
                  mesh=mesh)  # fmt: skip


@pytest.mark.parametrize("method", BUILTIN)
def test_requested_size_distinct_and_reference(method):
    x = _x()
    sel = _select(method, x)
    got = sel.indices.tolist()
    assert len(got) == K and len(set(got)) == K and set(got) <= set(range(N))
    assert sel.config["method"] == method and sel.config["count"] == K
    # Independent references where the method has a closed-form NumPy one.
    if method == "kcenter":
        ref.assert_valid_k_center(x, got)
    elif method in ("farthest", "closest"):
        assert got == ref.greedy_point(x, K, method)
    elif method == "random":
        task_key = jax.random.fold_in(KEY, 0)  # the first task's key
        rng = np.random.default_rng(np.asarray(jax.random.key_data(task_key)).tolist())
        assert got == rng.permutation(N)[:K].tolist()


@pytest.mark.parametrize("method", BUILTIN)
def test_deterministic_for_a_key(method):
    x = _x()
    labels = np.arange(N) % 3
    a = _select(method, x, 12, labels=labels, chunk_size=40)
    b = _select(method, x, 12, labels=labels, chunk_size=40)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert a.label_counts == b.label_counts and sum(a.label_counts.values()) == 12


@pytest.mark.parametrize("method", BUILTIN)
def test_selector_chunked_run_equals_whole_run(method):
    x = jax.numpy.asarray(_x())
    sel = _selector(method)
    whole = sel.picks(sel.run(sel.init(x, K, key=KEY), x))
    state = sel.step(sel.init(x, K, key=KEY), x)
    chunks = 1
    while not sel.finished(state):
        state = sel.run(state, x, max_steps=2)
        chunks += 1
    np.testing.assert_array_equal(sel.picks(state), whole)
    assert len(set(np.asarray(whole).tolist())) == K
    if method not in ONE_SHOT:
        assert chunks > 1, "the chunked run finished in one chunk: the test proves nothing"


class _Killed(Exception):
    pass


def _counting_saves(monkeypatch, kill_at=None):
    """Patches ``Checkpointer.save``: records ``(kind, step)`` of every completed save and
    raises ``_Killed`` instead of save number ``kill_at`` (1-based)."""
    events = []
    real = checkpoint.Checkpointer.save

    def save(self, step, state):
        if kill_at is not None and len(events) + 1 == kill_at:
            raise _Killed
        real(self, step, state)
        events.append(("inflight" if "inflight" in str(self.path) else "progress", int(step)))

    monkeypatch.setattr(checkpoint.Checkpointer, "save", save)
    return events


@pytest.mark.parametrize("method", BUILTIN)
def test_select_resumed_after_a_kill_equals_uninterrupted(method, tmp_path, monkeypatch):
    x = _x()
    kw = dict(labels=np.arange(N) % 3, chunk_size=40, checkpoint_every=1)
    want = _select(method, x, 15, **kw)
    events = _counting_saves(monkeypatch)
    full = _select(method, x, 15, checkpoint_dir=tmp_path / "full", **kw)
    np.testing.assert_array_equal(full.indices, want.indices)
    assert full.resumed == {"tasks_replayed": 0, "steps_restored": 0}
    kill_at = len(events) // 2 + 1
    monkeypatch.undo()
    events = _counting_saves(monkeypatch, kill_at)
    with pytest.raises(_Killed):
        _select(method, x, 15, checkpoint_dir=tmp_path / "run", **kw)
    done = list(events)
    monkeypatch.undo()
    again = _select(method, x, 15, checkpoint_dir=tmp_path / "run", **kw)
    np.testing.assert_array_equal(again.indices, want.indices)
    # What the rerun reused: every task saved before the kill, and the steps the task in flight
    # had saved (none when the kill came right after a task's progress save).
    tasks = sum(kind == "progress" for kind, _ in done)
    steps = done[-1][1] if done and done[-1][0] == "inflight" else 0
    assert again.resumed == {"tasks_replayed": tasks, "steps_restored": steps}
    assert tasks + steps > 0


@pytest.mark.parametrize("method", BUILTIN)
def test_mesh_of_8_devices_equals_one_device(method):
    x = _x()
    kw = dict(labels=np.arange(N) % 2)  # two tasks, of 51 and 50 rows
    want = _select(method, x, 10, **kw)
    got = _select(method, x, 10, mesh=gk.make_mesh(), **kw)
    assert got.indices.tolist() == want.indices.tolist()
    assert got.config == want.config


@pytest.mark.parametrize("method", BUILTIN)
def test_mistyped_option_is_refused(method):
    x = _x(20)
    with pytest.raises(ValueError, match=f"'num_iter'.* method '{method}'.*options are"):
        gj.select(x, 3, method=method, key=KEY, method_options={"num_iter": 5})


def test_options_are_typed_and_fingerprinted_by_value():
    x = _x(40)
    with pytest.raises(TypeError, match="'num_iters' of method 'kmeans_medoids' must be int"):
        gj.select(x, 3, method="kmeans_medoids", key=KEY, method_options={"num_iters": "5"})
    a = gj.select(x, 3, method="probcover", key=KEY, method_options={"quantile": 1})
    b = gj.select(x, 3, method="probcover", key=KEY, method_options={"quantile": 1.0})
    assert a.config == b.config and a.config["options"]["quantile"] == 1.0
    c = gj.select(x, 3, method="probcover", key=KEY)
    assert c.config["options"] == {"num_neighbors": None, "quantile": 0.5, "radius": None}
    # Spelling out a default is the same request (the same checkpoint fingerprint).
    d = gj.select(x, 3, method="probcover", key=KEY, method_options={"quantile": 0.5})
    assert d.config == c.config and d.indices.tolist() == c.indices.tolist()


@pytest.mark.parametrize(
    "method, option, value",
    [
        ("herding", "length_scale", 0.0),  # once ran as 1.0
        ("herding", "length_scale", float("nan")),
        ("zcore", "num_samples", -5),  # once ran as 0
        ("zcore", "chunk", 0),
        ("kmeans_medoids", "num_iters", -1),
        ("typiclust", "min_cluster_size", 0),
        ("probcover", "num_neighbors", 0),  # once fell back to the default
        ("probcover", "radius", -1.0),
        ("probcover", "quantile", 1.5),
        ("typical_kcenter", "power", float("nan")),  # once gave meaningless picks
        ("typical_kcenter", "power", float("inf")),
    ],
)
def test_option_out_of_range_is_refused(method, option, value):
    with pytest.raises(ValueError, match=f"'{option}' of method '{method}' must be"):
        gj.select(_x(20), 3, method=method, key=KEY, method_options={option: value})


def test_auto_is_a_rule_object():
    x = _x()
    n = x.shape[0]
    small, large = 39, 40  # either side of the 40-pick switch
    assert n > large
    assert gj.select(x, small, method="auto", key=KEY).config["method"] == "typical_kcenter"
    assert gj.select(x, large, method="auto", key=KEY).config["method"] == "probcover"
    rule = gj.BudgetRule(threshold=0.01)
    sel = gj.select(x, 5, method=rule, key=KEY)
    assert sel.config["method"] == "kcenter"
    assert sel.config["auto"] == {
        "rule": "BudgetRule",
        "threshold": 0.01,
        "small": "kmeans_medoids",
        "large": "kcenter",
        "anchored": "typical_kcenter",
    }
    big = gj.SuiteRule()
    assert big(50_001, 100) == "kmeans_medoids" and big(50_001, 10_000) == "kcenter"  # scalable
    assert (
        gj.BudgetRule()(1000, 149) == "kmeans_medoids" and gj.BudgetRule()(1000, 150) == "kcenter"
    )
