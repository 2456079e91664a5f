import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _reference import assert_valid_k_center, k_center
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from goldener_jax import kernels as gk

METRICS = ["euclidean", "sqeuclidean", "cosine"]


def _ints(n, d, lo=-4, hi=4):
    """Small-integer points: every distance below is exact in float32, so ties are real ties."""
    return arrays(np.float32, (n, d), elements=st.integers(lo, hi).map(float))


@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    n=st.sampled_from([4, 8, 16, 32]),  # powers of two: the mean row is exact too
    d=st.integers(1, 5),
)
def test_matches_reference_exactly_on_exact_arithmetic(data, n, d):
    x = data.draw(_ints(n, d))
    k = data.draw(st.integers(0, n))
    got = [int(i) for i in gk.greedy_k_center(x, k)]
    assert got == k_center(x, k)


@settings(max_examples=25, deadline=None)
@given(data=st.data(), n=st.sampled_from([2, 4, 8, 16, 32]), d=st.integers(1, 6))
def test_anchors_match_reference_exactly_on_exact_arithmetic(data, n, d):
    x = data.draw(_ints(n, d))
    anchors = data.draw(_ints(data.draw(st.integers(1, 5)), d))
    k = data.draw(st.integers(0, n))
    got = [int(i) for i in gk.greedy_k_center(x, k, anchors=anchors, block_size=2)]
    assert got == k_center(x, k, anchors=anchors)


@settings(max_examples=25, deadline=None)
@given(data=st.data(), n=st.integers(1, 40), d=st.integers(1, 6), metric=st.sampled_from(METRICS))
def test_is_a_valid_greedy_sequence(data, n, d, metric):
    """Any size, any metric, duplicates and zero rows included: each pick is a greedy argmax."""
    x = data.draw(_ints(n, d, -3, 3))
    k = data.draw(st.integers(0, n))
    got = np.asarray(gk.greedy_k_center(x, k, metric=metric))
    assert got.shape == (k,) and got.dtype == np.int32
    assert len(set(got.tolist())) == k
    ref_metric = "euclidean" if metric == "sqeuclidean" else metric
    assert_valid_k_center(x, got, ref_metric)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("with_anchors", [False, True])
def test_matches_reference_on_random_floats(metric, with_anchors):
    rng = np.random.default_rng(7)
    for trial in range(5):
        x = rng.normal(loc=3.0, size=(150, 12)).astype(np.float32)
        anchors = rng.normal(size=(6, 12)).astype(np.float32) if with_anchors else None
        got = [int(i) for i in gk.greedy_k_center(x, 40, metric=metric, anchors=anchors)]
        assert got == k_center(x, 40, metric, anchors), f"trial {trial}"


def test_ties_go_to_lowest_index():
    # Four corners of a square around the origin: all at the same distance from the mean.
    x = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], np.float32)
    assert gk.greedy_k_center(x, 4).tolist() == [0, 1, 2, 3]  # k == n: range(n), as reference
    assert gk.greedy_k_center(x, 3).tolist() == [0, 2, 1]


def test_duplicates_are_never_reselected():
    base = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    x = np.concatenate([base, base, base])  # every point three times
    got = gk.greedy_k_center(x, 14).tolist()
    assert len(set(got)) == 14
    # The first 5 picks cover the 5 distinct points; then only zero-distance duplicates remain.
    assert sorted(np.asarray(got[:5]) % 5) == [0, 1, 2, 3, 4]


def test_k_zero_and_k_equals_n():
    x = np.random.default_rng(0).normal(size=(9, 2)).astype(np.float32)
    assert gk.greedy_k_center(x, 0).shape == (0,)
    assert gk.greedy_k_center(x, 0, anchors=x[:2]).shape == (0,)
    assert gk.greedy_k_center(x, 9).tolist() == list(range(9))


def test_coverage_radius_matches_definition():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    state = gk.kcenter_run(gk.kcenter_init(x, 10), x)
    centers = np.asarray(state.selected)
    d = np.sqrt(((x[:, None, :] - x[None, centers, :]) ** 2).sum(-1)).min(axis=1)
    np.testing.assert_allclose(float(gk.kcenter_coverage_radius(state)), d.max(), rtol=1e-4)


@pytest.mark.parametrize("metric", METRICS)
def test_jit_equals_no_jit(metric):
    x = np.random.default_rng(5).normal(size=(30, 5)).astype(np.float32)
    anchors = x[:3] + 0.5
    jitted = jax.jit(lambda a, b: gk.greedy_k_center(a, 8, metric=metric, anchors=b))(x, anchors)
    with jax.disable_jit():
        plain = gk.greedy_k_center(x, 8, metric=metric, anchors=anchors)
    assert np.asarray(jitted).tolist() == np.asarray(plain).tolist()


def test_chunked_runs_equal_one_run_bit_for_bit():
    """Resuming is restore-and-continue: a run cut into chunks gives the identical state."""
    x = np.random.default_rng(6).normal(size=(64, 3)).astype(np.float32)
    full = gk.kcenter_run(gk.kcenter_init(x, 20), x)
    state = gk.kcenter_init(x, 20)
    for chunk in (3, 0, 5, 1):
        state = gk.kcenter_run(state, x, max_steps=chunk)
    assert int(state.count) == 10
    state = gk.kcenter_run(state, x)
    chex.assert_trees_all_equal(state, full)


def test_single_steps_follow_the_run():
    x = np.random.default_rng(6).normal(size=(64, 3)).astype(np.float32)
    full = gk.kcenter_run(gk.kcenter_init(x, 20), x)
    state = gk.kcenter_init(x, 20)
    for _ in range(25):  # five more than k: a finished state is left unchanged
        state = gk.kcenter_step(state, x)
    assert state.selected.tolist() == full.selected.tolist()
    assert int(state.count) == 20
    np.testing.assert_allclose(state.min_dist, full.min_dist, rtol=1e-5, atol=1e-6)


def test_bounded_retracing():
    x = np.random.default_rng(8).normal(size=(50, 4)).astype(np.float32)
    step = jax.jit(chex.assert_max_traces(lambda s, a: gk.kcenter_step(s, a), n=1))
    state = gk.kcenter_init(x, 10)
    for _ in range(9):
        state = step(state, x)
    # The public entry points compile once per (shape, k, metric): new data or chunk sizes don't.
    from goldener_jax.kernels import kcenter as kc

    gk.greedy_k_center(x, 10)
    before = kc._run._cache_size()
    for seed in range(3):
        y = np.random.default_rng(seed).normal(size=(50, 4)).astype(np.float32)
        s = gk.kcenter_init(y, 10)
        gk.kcenter_run(gk.kcenter_run(s, y, max_steps=seed + 1), y)
    assert kc._run._cache_size() == before


def test_bf16_storage_gives_valid_selection():
    x = np.random.default_rng(9).normal(size=(300, 16)).astype(np.float32)
    xb = jnp.asarray(x, jnp.bfloat16)
    got = gk.greedy_k_center(xb, 25)
    assert_valid_k_center(np.asarray(xb.astype(jnp.float32)), np.asarray(got), rtol=1e-3)


def test_state_fields():
    x = np.random.default_rng(0).normal(size=(10, 2)).astype(np.float32)
    state = gk.kcenter_init(x, 4)
    assert int(state.count) == 1
    assert state.selected.tolist()[1:] == [-1, -1, -1]
    assert float(state.min_dist[state.selected[0]]) == -np.inf


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((np.zeros((4,), np.float32), 1), {}, ValueError, r"x must be 2-D.*\(4,\)"),
        ((np.zeros((2, 2, 2), np.float32), 1), {}, ValueError, "x must be 2-D"),
        ((np.array([[1.0, np.nan]], np.float32), 1), {}, ValueError, "x contains NaN or Inf"),
        ((np.array([[1.0], [np.inf]], np.float32), 1), {}, ValueError, "row 1"),
        ((np.zeros((4, 2), np.float32), -1), {}, ValueError, "k must be >= 0, got -1"),
        ((np.zeros((4, 2), np.float32), 5), {}, ValueError, "k=5 is larger than .* n=4"),
        ((np.zeros((4, 2), np.float32), 2.0), {}, TypeError, "k must be an int"),
        ((np.zeros((4, 2), np.int64), 2), {}, TypeError, "floating dtype.*int64"),
        (
            (np.zeros((4, 2), np.float32), 2),
            {"anchors": np.zeros((3, 5), np.float32)},
            ValueError,
            r"anchors must have the same width as x.*\(3, 5\)",
        ),
        (
            (np.zeros((4, 2), np.float32), 2),
            {"anchors": np.array([[np.nan, 0.0]], np.float32)},
            ValueError,
            "anchors contains NaN",
        ),
        ((np.zeros((4, 2), np.float32), 2), {"metric": "l1"}, ValueError, "metric must be one of"),
    ],
)
def test_bad_input(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        gk.greedy_k_center(*args, **kwargs)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_run_rejects_bad_max_steps(bad):
    x = np.random.default_rng(0).normal(size=(10, 2)).astype(np.float32)
    with pytest.raises(ValueError, match="max_steps must be an int >= 0 or None"):
        gk.kcenter_run(gk.kcenter_init(x, 3), x, max_steps=bad)
    with pytest.raises(ValueError, match="max_steps must be an int >= 0 or None"):
        gk.greedy_run(gk.greedy_init(x, 3), x, max_steps=bad)


def test_run_rejects_a_state_of_another_size():
    x = np.zeros((10, 2), np.float32)
    with pytest.raises(ValueError, match="state was made for 10 points but x has shape \\(9, 2\\)"):
        gk.kcenter_run(gk.kcenter_init(x, 3), x[:9])


@pytest.mark.parametrize("offset", [0.0, 1e3, 1e4, 1e5])
def test_anchors_far_from_the_origin_are_measured_through_the_shift(offset):
    # The anchors' distances once took |x|^2 + |a|^2 - 2 x.a unshifted: 10,000 from the origin
    # every distance cancelled to 0 and the picks were rows 0, 1, 2, ... The float64 reference
    # runs on the same float32 rows.
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(303, 4)) + offset).astype(np.float32)
    anchors = x[:5]
    want = k_center(x[5:].astype(np.float64), 10, anchors=anchors.astype(np.float64))
    got = gk.greedy_k_center(x[5:], 10, anchors=anchors)
    assert [int(i) for i in got] == want
    # 8 devices (n = 298: padded) give the same picks.
    on_mesh = gk.greedy_k_center(x[5:], 10, anchors=anchors, mesh=gk.make_mesh())
    np.testing.assert_array_equal(on_mesh, got)
