import chex
import jax
import numpy as np
import pytest
from _reference import greedy_point
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from goldener_jax import kernels as gk

SELECT = {"farthest": gk.farthest_point, "closest": gk.closest_point}


def _ints(n, d):
    return arrays(np.float32, (n, d), elements=st.integers(-4, 4).map(float))


@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    n=st.integers(1, 40),
    d=st.integers(1, 4),
    mode=st.sampled_from(["farthest", "closest"]),
)
def test_matches_reference_exactly_on_exact_arithmetic(data, n, d, mode):
    """Small integers: exact distances, so duplicates and ties are real and must go the same way."""
    x = data.draw(_ints(n, d))
    k = data.draw(st.integers(0, n))
    got = [int(i) for i in SELECT[mode](x, k, block_size=data.draw(st.sampled_from([None, 3])))]
    assert got == greedy_point(x, k, mode)


@pytest.mark.parametrize("mode", ["farthest", "closest"])
@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
def test_matches_reference_on_random_floats(mode, metric):
    rng = np.random.default_rng(11)
    x = rng.normal(size=(120, 8)).astype(np.float32)
    ref_metric = "euclidean" if metric == "sqeuclidean" else metric
    got = [int(i) for i in SELECT[mode](x, 60, metric=metric)]
    assert got == greedy_point(x, 60, mode, ref_metric)


def test_hub_point_with_many_stale_neighbours():
    """The origin is the nearest neighbour of 80 points (+-r_i e_i in 40-D): choosing it first
    leaves 80 stale entries, more than one batch of recomputations."""
    d = 40
    radii = 1.0 + 0.01 * np.arange(2 * d)
    sats = np.concatenate([np.eye(d), -np.eye(d)]) * radii[:, None]
    x = np.concatenate([np.zeros((1, d)), sats]).astype(np.float32)
    got = [int(i) for i in gk.closest_point(x, 50)]
    assert got[0] == 0
    assert got == greedy_point(x, 50, "closest")


def test_k_zero_and_k_equals_n():
    x = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
    for fn in SELECT.values():
        assert fn(x, 0).shape == (0,)
        assert fn(x, 7).tolist() == list(range(7))


@pytest.mark.parametrize("mode", ["farthest", "closest"])
def test_jit_equals_no_jit_and_chunked_runs(mode):
    x = np.random.default_rng(1).normal(size=(40, 3)).astype(np.float32)
    jitted = jax.jit(lambda a: SELECT[mode](a, 15))(x)
    with jax.disable_jit():
        plain = SELECT[mode](x, 15)
    assert np.asarray(jitted).tolist() == np.asarray(plain).tolist()
    full = gk.greedy_run(gk.greedy_init(x, 15), x, mode=mode)
    state = gk.greedy_init(x, 15)
    for chunk in (4, 0, 6):
        state = gk.greedy_run(state, x, mode=mode, max_steps=chunk)
    chex.assert_trees_all_equal(gk.greedy_run(state, x, mode=mode), full)


def test_bad_input():
    with pytest.raises(ValueError, match="k=9 is larger"):
        gk.farthest_point(np.zeros((3, 2), np.float32), 9)
    with pytest.raises(TypeError, match="floating dtype"):
        gk.closest_point(np.zeros((3, 2), np.int8), 1)
    with pytest.raises(ValueError, match="NaN or Inf"):
        gk.closest_point(np.array([[np.nan]], np.float32), 1)
    with pytest.raises(ValueError, match="mode must be one of"):
        gk.greedy_run(
            gk.greedy_init(np.zeros((3, 2), np.float32), 1),
            np.zeros((3, 2), np.float32),
            mode="middle",
        )


@pytest.mark.parametrize(
    ("mode", "metric", "n", "devices"),
    [
        ("farthest", "euclidean", 37, 8),
        ("closest", "cosine", 45, 4),
        ("closest", "euclidean", 13, 8),
    ],
)
def test_padded_rows_with_n_equal_the_unpadded_call(mode, metric, n, devices):
    """``greedy_init(..., n=)`` on rows padded for the mesh (filled with 1e3: never a neighbour,
    never chosen), run in chunks, and the selector given ``n=``, equal the unpadded calls on the
    same mesh (integer rows: exact distances, so the mesh cannot round differently)."""
    x = np.random.default_rng(n).integers(-4, 5, (n, 3)).astype(np.float32)
    k = min(n, 9)
    mesh = gk.make_mesh(jax.devices()[:devices])
    junk = gk.shard_rows(x, mesh, fill=1e3)
    assert junk.shape[0] > n
    want = np.asarray(SELECT[mode](x, k, metric=metric, mesh=mesh))
    state = gk.greedy_init(junk, k, metric=metric, mesh=mesh, n=n)
    assert state.nn_dist.shape == (n,)
    while int(state.count) < k:
        state = gk.greedy_run(state, junk, mode=mode, metric=metric, max_steps=4, mesh=mesh)
    np.testing.assert_array_equal(np.asarray(state.selected), want)
    sel = getattr(gk.selectors, mode)(metric=metric, mesh=mesh)
    got = sel.picks(sel.run(sel.init(junk, k, n=n), junk))
    np.testing.assert_array_equal(got, want)
