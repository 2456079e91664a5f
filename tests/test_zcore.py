import jax
import jax.numpy as jnp
import numpy as np
import pytest
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


@pytest.mark.parametrize(
    ("variant", "num_redundancy"), [("paper", 100), ("paper", 0), ("goldener", 5)]
)
def test_matches_numpy_reference(variant, num_redundancy):
    x = np.random.default_rng(3).normal(size=(60, 5)).astype(np.float32)
    key = jax.random.key(11)
    got = gk.zcore_scores(
        x, key, num_samples=300, variant=variant, num_redundancy=num_redundancy, chunk=64
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


def test_resumed_state_equals_one_run():
    x = np.random.default_rng(2).normal(size=(50, 3)).astype(np.float32)
    opts = dict(num_redundancy=8, chunk=16, variant="goldener")
    one = gk.zcore_run(gk.zcore_init(x, jax.random.key(1), variant="goldener"), x, 96, **opts)
    state = gk.zcore_init(x, jax.random.key(1), variant="goldener")
    for _ in range(6):
        state = gk.zcore_run(state, x, 16, **opts)
    assert int(state.done) == 96
    np.testing.assert_array_equal(np.asarray(one.scores), np.asarray(state.scores))


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
