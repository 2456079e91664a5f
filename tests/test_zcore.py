import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _reference import tie_heavy
from _reference import zcore as zcore_reference

from goldener_jax import kernels as gk


def _reference_scores(x, key, num_samples, variant, num_redundancy, num_dims=2):
    spec = gk.ZCORE_VARIANTS[variant]
    state = gk.zcore_init(x, key, variant=variant)
    dims, anchors = gk.zcore_draws(state, 0, num_samples, num_dims)
    return zcore_reference(
        x,
        np.asarray(dims),
        np.asarray(anchors),
        np.asarray(state.scores),
        spec["metric"],
        spec["exponent"],
        num_redundancy,
    )


@pytest.mark.parametrize("impl", ["xla", "native"])
@pytest.mark.parametrize(
    ("variant", "num_redundancy"), [("paper", 100), ("paper", 0), ("goldener", 5)]
)
def test_matches_numpy_reference(variant, num_redundancy, impl):
    x = np.random.default_rng(3).normal(size=(60, 5)).astype(np.float32)
    key = jax.random.key(11)
    got = gk.zcore_scores(
        x,
        key,
        num_samples=300,
        variant=variant,
        num_redundancy=num_redundancy,
        chunk=64,
        impl=impl,
    )
    want = _reference_scores(x, key, 300, variant, num_redundancy)
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-4)
    np.testing.assert_array_equal(
        np.asarray(gk.zcore_select(got, 10)), np.argsort(-want, kind="stable")[:10]
    )


def test_draws_and_anchors_follow_the_triangular_ranges():
    x = np.random.default_rng(0).normal(size=(200, 6)).astype(np.float32)
    x[:, 2] = 3.0  # a constant dimension: anchors sit on its value (numpy's triangular raises)
    state = gk.zcore_init(x, jax.random.key(0))
    dims, anchors = map(np.asarray, gk.zcore_draws(state, 0, 4000, 3))
    assert dims.shape == (4000, 3) and anchors.shape == (4000, 3)
    assert all(len(set(row)) == 3 for row in dims.tolist())  # distinct dimensions per sample
    assert set(np.unique(dims)) == set(range(6))
    lo, hi = x.min(0)[dims], x.max(0)[dims]
    assert np.all(anchors >= lo - 1e-6) and np.all(anchors <= hi + 1e-6)
    assert np.all(anchors[dims == 2] == 3.0)
    scores = gk.zcore_scores(x, jax.random.key(0), num_samples=500, num_redundancy=20)
    assert np.isfinite(np.asarray(scores)).all()


def test_same_key_same_scores_and_chunking_keeps_the_draws():
    x = np.random.default_rng(1).normal(size=(80, 4)).astype(np.float32)
    a = gk.zcore_scores(x, jax.random.key(5), num_samples=256, num_redundancy=10, chunk=64)
    b = gk.zcore_scores(x, jax.random.key(5), num_samples=256, num_redundancy=10, chunk=64)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    c = gk.zcore_scores(x, jax.random.key(6), num_samples=256, num_redundancy=10, chunk=64)
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    # Chunk size changes only the float summation order, never the draws.
    d = gk.zcore_scores(x, jax.random.key(5), num_samples=256, num_redundancy=10, chunk=100)
    np.testing.assert_allclose(np.asarray(a), np.asarray(d), atol=1e-5)


def _split_run(x, parts, impl):
    opts = dict(num_redundancy=8, chunk=16, variant="goldener", impl=impl)
    state = gk.zcore_init(x, jax.random.key(1), variant="goldener")
    for size in parts:
        state = gk.zcore_run(state, x, size, **opts)
    return state


def test_resumed_state_equals_one_run():
    """XLA: float32 sums per chunk, so a run resumed at chunk boundaries is the same run."""
    x = np.random.default_rng(2).normal(size=(50, 3)).astype(np.float32)
    one = _split_run(x, [96], "xla")
    state = _split_run(x, [16] * 6, "xla")
    assert int(state.done) == 96
    np.testing.assert_array_equal(np.asarray(one.scores), np.asarray(state.scores))


def test_native_resume_rounds_once_per_call():
    """The CPU path sums a call's changes exactly (fixed point) and rounds to float32 once per
    call: the same calls give the same scores, a different split differs by float32 rounding."""
    x = np.random.default_rng(2).normal(size=(50, 3)).astype(np.float32)
    split = _split_run(x, [16, 32, 48], "native")
    again = _split_run(x, [16, 32, 48], "native")
    assert int(split.done) == 96
    np.testing.assert_array_equal(np.asarray(split.scores), np.asarray(again.scores))
    one = _split_run(x, [96], "native")
    np.testing.assert_allclose(np.asarray(one.scores), np.asarray(split.scores), atol=2e-6)
    xla = _split_run(x, [96], "xla")
    np.testing.assert_allclose(np.asarray(one.scores), np.asarray(xla.scores), atol=2e-6)


def test_duplicates_take_the_penalty():
    """An exact duplicate of the chosen point takes (almost) the whole penalty."""
    x = np.array([[0.0, 0.0], [0.0, 0.0], [5.0, 5.0], [9.0, 1.0]], np.float32)
    state = gk.zcore_init(x, jax.random.key(0), variant="goldener")
    dims, anchors = gk.zcore_draws(state, 0, 50, 2)
    want = zcore_reference(x, np.asarray(dims), np.asarray(anchors), np.zeros(4), "l2", 1.0, 3)
    got = gk.zcore_run(state, x, 50, variant="goldener", num_redundancy=3, num_dims=2)
    np.testing.assert_allclose(np.asarray(got.scores), want, atol=1e-4)


def test_bad_input():
    x = np.zeros((10, 3), np.float32)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="variant must be one of"):
        gk.zcore_scores(x, key, variant="nope")
    with pytest.raises(ValueError, match="num_dims=4 is larger than the dimension"):
        gk.zcore_scores(x, key, num_dims=4)
    with pytest.raises(ValueError, match="num_redundancy must be >= 0"):
        gk.zcore_scores(x, key, num_redundancy=-1)
    with pytest.raises(TypeError, match="key must be"):
        gk.zcore_scores(x, 0)
    with pytest.raises(ValueError, match="NaN or Inf"):
        gk.zcore_scores(np.full((4, 2), np.nan, np.float32), key)
    with pytest.raises(ValueError, match="k=11 is larger"):
        gk.zcore_select(jnp.zeros(10), 11)
    with pytest.raises(ValueError, match="impl must be one of"):
        gk.zcore_scores(x, key, impl="cuda")
    with pytest.raises(ValueError, match="impl='native' needs num_dims == 2"):
        gk.zcore_scores(x, key, num_dims=3, impl="native")


# --- Window search (num_dims == 2): exact against brute force -------------------------------


def _numpy_distance(sub, point, metric):
    diff = sub - point  # float32, the kernel's operations
    if metric == "l1":
        return np.abs(diff[:, 0]) + np.abs(diff[:, 1])
    return diff[:, 0] * diff[:, 0] + diff[:, 1] * diff[:, 1]


@pytest.mark.parametrize("metric", ["l1", "l2"])
@pytest.mark.parametrize("kind", ["normal", "relu", "duplicates"])
def test_window_search_finds_the_brute_force_points(metric, kind):
    from goldener_jax.kernels import _zcore_window as zw

    x = tie_heavy(kind, 400, 5)
    r, samples = 20, 300
    state = gk.zcore_init(x, jax.random.key(2))
    dims, anchors = gk.zcore_draws(state, 0, samples, 2)
    xt = jnp.asarray(x).T
    tables = zw.build_tables(xt, 64)
    np_dims = np.asarray(dims)

    want_nearest = np.array(
        [
            np.argmin(_numpy_distance(x[:, np_dims[s]], np.asarray(anchors)[s], metric))
            for s in range(samples)
        ]
    )
    nearest, proven = zw._window_nearest(xt, tables, dims, anchors, 16, 64, metric)
    nearest, proven = np.asarray(nearest), np.asarray(proven)
    assert 0 < proven.sum() < samples  # a 16-point window proves some samples, not all
    np.testing.assert_array_equal(nearest[proven], want_nearest[proven])

    chosen = jnp.asarray(want_nearest, jnp.int32)
    idx, _, selected, proven = map(
        np.asarray, zw._window_neighbours(xt, tables, dims, chosen, r, 64, 64, metric)
    )
    _, brute_selected = zw._brute_neighbours(xt, dims, chosen, r, metric)
    brute_selected = np.asarray(brute_selected)
    assert 0 < proven.sum() < samples
    for s in range(samples):
        sub = x[:, np_dims[s]]
        dist = _numpy_distance(sub, sub[want_nearest[s]], metric)
        if metric == "l2":
            dist = np.sqrt(dist)
        dist[want_nearest[s]] = np.inf
        want = set(np.argsort(dist, kind="stable")[:r].tolist())
        assert set(np.flatnonzero(brute_selected[s]).tolist()) == want
        if proven[s]:
            got = idx[s][selected[s]]
            assert len(got) == r and set(got.tolist()) == want


@pytest.mark.parametrize("variant", ["paper", "goldener"])
def test_forced_fallbacks_give_the_reference_scores(variant):
    """Windows too small to prove most samples: the brute-force redo gives the same scores."""
    from goldener_jax.kernels import zcore as zc

    x = tie_heavy("relu", 300, 4)
    key = jax.random.key(4)
    state = gk.zcore_init(x, key, variant=variant)
    opts = dict(chunk=64, num_redundancy=15, variant=variant, impl="xla")
    fast, stats = zc.zcore_run_with_stats(state, x, 200, widths=(8, 40), **opts)
    assert stats["anchor_fallbacks"] > 0 and stats["redundancy_fallbacks"] > 0
    brute, none = zc.zcore_run_with_stats(state, x, 200, widths=None, **opts)
    assert none == {"anchor_fallbacks": 0, "redundancy_fallbacks": 0}
    assert int(fast.done) == int(brute.done) == 200
    np.testing.assert_allclose(np.asarray(fast.scores), np.asarray(brute.scores), atol=1e-5)
    want = _reference_scores(x, key, 200, variant, 15)
    np.testing.assert_allclose(np.asarray(fast.scores), want, atol=2e-4)


def test_default_window_search_matches_the_reference_and_resumes():
    from goldener_jax.kernels import zcore as zc

    x = np.random.default_rng(5).normal(size=(2100, 4)).astype(np.float32)
    assert zc.default_widths(2100, 2, 20) is not None  # this size takes the window path
    assert zc.default_widths(2000, 2, 20) is None  # brute force below 2 x the widths
    assert zc.default_widths(2100, 3, 20) is None
    key = jax.random.key(9)
    got = gk.zcore_scores(x, key, num_samples=200, num_redundancy=20, chunk=64)
    want = _reference_scores(x, key, 200, "paper", 20)
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-4)
    state = gk.zcore_init(x, key)
    for _ in range(2):
        state = gk.zcore_run(state, x, 100, num_redundancy=20, chunk=64)
    np.testing.assert_allclose(np.asarray(state.scores), np.asarray(got), atol=1e-5)


def test_bad_widths():
    from goldener_jax.kernels import zcore as zc

    x = np.zeros((10, 3), np.float32)
    state = gk.zcore_init(x, jax.random.key(0))
    with pytest.raises(ValueError, match="widths must be 'auto', None or"):
        gk.zcore_run(state, x, 4, widths="fast", impl="xla")
    with pytest.raises(ValueError, match=r"need num_dims == 2 and 1 <= width <= n = 10"):
        gk.zcore_run(state, x, 4, widths=(4, 11), impl="xla")
    with pytest.raises(ValueError, match="runs on one device"):
        gk.zcore_run(state, x, 4, widths=(4, 8), mesh=gk.make_mesh(jax.devices()[:2]))
    with pytest.raises(TypeError, match="unexpected options"):
        zc.zcore_run_with_stats(state, x, 4, fallback=3)


def test_window_tables_are_the_sorted_columns():
    from goldener_jax.kernels import zcore as zc

    x = tie_heavy("duplicates", 50, 3)
    order, svals = map(np.asarray, zc.window_tables(x, (4, 6)))
    order, svals = order.reshape(3, -1), svals.reshape(3, -1)
    for j in range(3):
        want = np.argsort(x[:, j], kind="stable")
        np.testing.assert_array_equal(order[j, 6:-6], want)
        np.testing.assert_array_equal(svals[j, 6:-6], x[want, j])
        assert np.all(np.isneginf(svals[j, :6])) and np.all(np.isposinf(svals[j, -6:]))
