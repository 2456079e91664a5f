"""ZCore's compiled CPU path (kernels/_zcore_cpu.cpp): the same points as brute force, exactly,
and scores that do not depend on threads, batches or sample order."""

import shutil

import jax
import numpy as np
import pytest
from _reference import tie_heavy
from _reference import zcore as zcore_reference
from goldener_jax.kernels import _zcore_native as native
from goldener_jax.kernels import zcore as zc

from goldener_jax import kernels as gk


def test_the_extension_is_built():
    ok, reason = gk.zcore_native_status()
    if not ok and not any(shutil.which(c) for c in ("c++", "g++", "clang++", "cl")):
        pytest.skip(f"no C++ compiler on this machine, so no compiled path: {reason}")
    assert ok, reason


def _brute(x, dims, anchors, metric, r):
    """Nearest point and r nearest neighbours (by distance, then index), NumPy, float32 ops."""
    nearest, nbrs = [], []
    for s in range(len(dims)):
        sub = x[:, dims[s]]
        diff = sub - anchors[s]
        if metric == "l1":
            d = np.abs(diff[:, 0]) + np.abs(diff[:, 1])
        else:
            d = diff[:, 0] * diff[:, 0] + diff[:, 1] * diff[:, 1]
        p = int(np.argmin(d))  # lowest index on ties
        nearest.append(p)
        diff = sub - sub[p]
        if metric == "l1":
            e = np.abs(diff[:, 0]) + np.abs(diff[:, 1])
        else:
            e = np.sqrt(diff[:, 0] * diff[:, 0] + diff[:, 1] * diff[:, 1])
        e[p] = np.inf
        nbrs.append(np.argsort(e, kind="stable")[:r])
    return np.array(nearest), np.array(nbrs).reshape(len(dims), r)


@pytest.mark.parametrize("metric", ["l1", "l2"])
@pytest.mark.parametrize("kind", ["normal", "relu", "duplicates", "heavy"])
@pytest.mark.parametrize("min_shift", [4, 9])  # 38 strips of 16 ranks; 2 strips of 512
def test_search_finds_the_brute_force_points(metric, kind, min_shift):
    x = tie_heavy(kind, 600, 4)
    state = gk.zcore_init(x, jax.random.key(2))
    dims, anchors = map(np.asarray, gk.zcore_draws(state, 0, 150, 2))
    tables = native.Tables(x.T, min_shift=min_shift)
    for r in (1, 2, 3, 25, 599):  # 599: every other point
        nearest, nbrs = native.search(tables, dims, anchors, metric, r)
        want_nearest, want_nbrs = _brute(x, dims, anchors, metric, r)
        np.testing.assert_array_equal(nearest, want_nearest)
        np.testing.assert_array_equal(nbrs, want_nbrs)


def test_search_on_more_points_than_strips_can_hold():
    """n large enough for the automatic strip width (64 strips) and the bucket rescaling."""
    x = tie_heavy("heavy", 20_000, 3, seed=1)
    state = gk.zcore_init(x, jax.random.key(3))
    dims, anchors = map(np.asarray, gk.zcore_draws(state, 0, 40, 2))
    tables = native.Tables(x.T)
    assert ((x.shape[0] - 1) >> tables.shift) + 1 <= 64
    nearest, nbrs = native.search(tables, dims, anchors, "l1", 300)
    want_nearest, want_nbrs = _brute(x, dims, anchors, "l1", 300)
    np.testing.assert_array_equal(nearest, want_nearest)
    np.testing.assert_array_equal(nbrs, want_nbrs)


@pytest.mark.parametrize("variant", ["paper", "goldener"])
def test_scores_match_the_numpy_reference_on_tie_heavy_data(variant):
    spec = gk.ZCORE_VARIANTS[variant]
    x = tie_heavy("relu", 300, 4)
    key = jax.random.key(4)
    got = gk.zcore_scores(x, key, num_samples=400, variant=variant, num_redundancy=15,
                          impl="native")  # fmt: skip
    state = gk.zcore_init(x, key, variant=variant)
    dims, anchors = gk.zcore_draws(state, 0, 400, 2)
    want = zcore_reference(
        x, np.asarray(dims), np.asarray(anchors), np.asarray(state.scores), spec["metric"],
        spec["exponent"], 15,
    )  # fmt: skip
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-4)


def test_threads_batches_and_sample_order_do_not_change_the_scores():
    x = tie_heavy("normal", 3000, 6)
    state = gk.zcore_init(x, jax.random.key(5))
    tables = native.Tables(np.asarray(x.T))
    draw_jit = jax.jit(zc.draw_samples, static_argnames=("count", "num_dims"))

    def draw(first, count):
        return draw_jit(state.key, jax.numpy.int32(first), count, state.lo, state.med,
                        state.hi, 2)  # fmt: skip

    def run(**kw):
        scores = np.asarray(state.scores, np.float32)
        return native.run(scores, tables, draw, 0, 700, "l1", 4.0, 50, **kw)

    base = run(threads=1)
    np.testing.assert_array_equal(run(threads=2), base)
    np.testing.assert_array_equal(run(threads=3, batch=64), base)
    np.testing.assert_array_equal(run(threads=2, batch=100), base)


def test_auto_falls_back_to_xla_when_the_extension_is_missing(monkeypatch):
    x = tie_heavy("normal", 80, 3)
    key = jax.random.key(6)
    want = gk.zcore_scores(x, key, num_samples=64, num_redundancy=5, impl="xla")
    monkeypatch.setattr(native, "status", lambda: (False, "not built (test)"))
    got = gk.zcore_scores(x, key, num_samples=64, num_redundancy=5)  # auto
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    with pytest.raises(RuntimeError, match="unavailable: not built"):
        gk.zcore_scores(x, key, num_samples=64, num_redundancy=5, impl="native")
