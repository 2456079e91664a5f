import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _reference import distances

from goldener_jax import kernels as gk

METRICS = ["euclidean", "sqeuclidean", "cosine"]


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("block_size", [None, 1, 7, 64])
def test_pairwise_matches_numpy(metric, block_size):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(37, 6)).astype(np.float32)
    y = rng.normal(size=(23, 6)).astype(np.float32)
    got = np.asarray(gk.pairwise_distances(x, y, metric=metric, block_size=block_size))
    np.testing.assert_allclose(got, distances(x, y, metric), rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean"])
def test_self_distances_have_exact_zero_diagonal(metric):
    x = np.random.default_rng(1).normal(loc=100.0, size=(20, 5)).astype(np.float32)
    d = np.asarray(gk.pairwise_distances(x, metric=metric))
    assert np.all(np.diag(d) == 0.0)
    np.testing.assert_allclose(d, d.T, rtol=1e-3, atol=1e-2)


def test_cosine_zero_vector_is_at_distance_one():
    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]], np.float32)
    d = np.asarray(gk.pairwise_distances(x, metric="cosine"))
    np.testing.assert_allclose(d[0], 1.0)
    np.testing.assert_allclose(d[:, 0], 1.0)
    np.testing.assert_allclose(d[1], [1.0, 0.0, 1.0, 2.0], atol=1e-6)


def test_bf16_inputs_accumulate_in_float32():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(16, 300)).astype(np.float32)
    xb = jnp.asarray(x, jnp.bfloat16)
    got = gk.pairwise_distances(xb, metric="sqeuclidean")
    assert got.dtype == jnp.float32
    ref = distances(
        np.asarray(xb.astype(jnp.float32)), np.asarray(xb.astype(jnp.float32)), "sqeuclidean"
    )
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-3)


def test_jit_equals_no_jit():
    x = np.random.default_rng(3).normal(size=(12, 4)).astype(np.float32)
    jitted = jax.jit(lambda a: gk.pairwise_distances(a, metric="cosine", block_size=5))(x)
    with jax.disable_jit():
        plain = gk.pairwise_distances(x, metric="cosine", block_size=5)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(plain), rtol=1e-6, atol=1e-6)


def test_empty_inputs():
    assert gk.pairwise_distances(np.zeros((0, 3), np.float32)).shape == (0, 0)
    assert gk.pairwise_distances(
        np.zeros((2, 3), np.float32), np.zeros((0, 3), np.float32)
    ).shape == (2, 0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"x": np.zeros((3,), np.float32)}, ValueError, r"x must be 2-D.*\(3,\)"),
        ({"x": np.zeros((3, 2), np.int32)}, TypeError, "floating dtype.*int32"),
        ({"x": np.array([[0.0, np.nan]], np.float32)}, ValueError, "NaN or Inf.*row 0, column 1"),
        ({"x": np.array([[np.inf, 0.0]], np.float32)}, ValueError, "NaN or Inf"),
        (
            {"x": np.zeros((3, 2), np.float32), "y": np.zeros((3, 4), np.float32)},
            ValueError,
            "same width",
        ),
        (
            {"x": np.zeros((3, 2), np.float32), "metric": "manhattan"},
            ValueError,
            "metric.*manhattan",
        ),
        ({"x": np.zeros((3, 2), np.float32), "block_size": 0}, ValueError, "block_size"),
    ],
)
def test_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        gk.pairwise_distances(**kwargs)


# Rows wider than WIDE_ROWS are column-summed and norm-summed a few rows at a time.
WIDE = gk.distance.WIDE_ROWS + 3


@pytest.mark.parametrize("m", [1, 7, 8, 13, 33])
@pytest.mark.parametrize("masked", [False, True])
def test_wide_column_sums_and_shifted_norms_match_numpy(m, masked):
    rng = np.random.default_rng(m)
    x = rng.normal(loc=3.0, size=(m, WIDE)).astype(np.float32)
    valid = rng.random(m) < 0.6 if masked else None
    got = np.asarray(gk.distance.column_sums(jnp.asarray(x), jnp.float32, valid))
    keep = np.ones(m, bool) if valid is None else valid
    want = x.astype(np.float64)[keep].sum(axis=0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)
    shift = jnp.asarray(rng.normal(size=WIDE).astype(np.float32))
    sq = np.asarray(gk.distance.shifted_sq(jnp.asarray(x), shift))
    ref = ((x.astype(np.float64) - np.asarray(shift, np.float64)) ** 2).sum(axis=1)
    np.testing.assert_allclose(sq, ref, rtol=1e-5)


def test_narrow_column_sums_are_one_sum():
    # Up to WIDE_ROWS the sums are the single reduction every kernel used before: same bits.
    x = jnp.asarray(np.random.default_rng(3).normal(size=(57, gk.distance.WIDE_ROWS)), jnp.float32)
    np.testing.assert_array_equal(
        np.asarray(gk.distance.column_sums(x, jnp.float32)), np.asarray(jnp.sum(x, axis=0))
    )
    stats = gk.distance.point_stats(x, "euclidean")
    want = jnp.sum(jnp.square(x - stats.shift), axis=1)
    np.testing.assert_array_equal(np.asarray(stats.sq), np.asarray(want))


@pytest.mark.parametrize("devices", [3, 8])
def test_wide_rows_on_a_mesh_equal_one_device(devices):
    # Integer rows: every sum is exact, so the blocked sums on each device and their psum give
    # the single-device bits, and k-center and k-means pick the same rows.
    x = np.random.default_rng(4).integers(-3, 4, size=(29, WIDE)).astype(np.float32)
    mesh = gk.make_mesh(jax.devices()[:devices])
    one = gk.greedy_k_center(x, 6)
    np.testing.assert_array_equal(np.asarray(gk.greedy_k_center(x, 6, mesh=mesh)), one)
    c1, a1 = gk.kmeans(x, 3, jax.random.key(0), num_iters=4)
    c2, a2 = gk.kmeans(x, 3, jax.random.key(0), num_iters=4, mesh=mesh)
    np.testing.assert_array_equal(np.asarray(a2), np.asarray(a1))
    np.testing.assert_array_equal(np.asarray(c2), np.asarray(c1))


@pytest.mark.parametrize("d", [7, 64, 100])
def test_row_dots_give_a_row_the_same_bits_wherever_it_sits(d):
    """A plain mat-vec rounds the last ``m mod 8`` rows by another path (the control below shows
    it still does); ``row_dots`` gives every row the bits it gets inside a multiple-of-8 array, at
    every offset and length, ``m < 8`` included, and its values are the mat-vec's."""
    from goldener_jax.kernels.distance import row_dots

    rng = np.random.default_rng(d)
    x = rng.normal(size=(200, d)).astype(np.float32)
    v = jnp.asarray(rng.normal(size=(d,)).astype(np.float32))
    rows = jax.jit(row_dots, static_argnums=2)
    plain = jax.jit(lambda a, b: jnp.dot(a, b, precision="highest"))
    ref = np.asarray(plain(jnp.asarray(x[:192]), v))  # 192 rows: no remainder
    np.testing.assert_allclose(ref, x[:192] @ np.asarray(v), rtol=1e-5, atol=1e-4)
    plain_differ = 0
    for start in range(8):
        for m in (1, 3, 7, 8, 9, 15, 37, 150, 151, 184):
            a = jnp.asarray(x[start : start + m])
            got = np.asarray(rows(a, v, jnp.float32))
            np.testing.assert_array_equal(got, ref[start : start + m], err_msg=f"{start}:{m}")
            plain_differ += int(np.sum(np.asarray(plain(a, v)) != ref[start : start + m]))
    if d >= 64:
        assert plain_differ > 0  # the remainder path the fix avoids is still there
