"""Blocked exact kNN against NumPy brute force (float64, full matrices)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _reference import distances
from goldener_jax.kernels.knn import _knn, knn_block, merge_knn, row_aux

from goldener_jax import kernels as gk


def knn_ref(x, k, queries=None, metric="euclidean", exclude_self=True):
    """Sort each row of the full distance matrix by (distance, index)."""
    q = x if queries is None else queries
    d = distances(q, x, metric)
    if queries is None:
        if exclude_self:
            np.fill_diagonal(d, np.inf)
        elif metric != "cosine":
            np.fill_diagonal(d, 0.0)
    order = np.array([np.lexsort((np.arange(d.shape[1]), row))[:k] for row in d])
    return np.take_along_axis(d, order, 1), order


def assert_knn_close(x, k, got_d, got_i, queries=None, metric="euclidean", exclude_self=True):
    """Float data: distances match; indices match except between neighbours whose reference
    distances are equal within float32 rounding (then the returned one must be at that distance)."""
    ref_d, ref_i = knn_ref(x, k, queries, metric, exclude_self)
    got_d, got_i = np.asarray(got_d), np.asarray(got_i)
    tol = 1e-4 * max(1.0, float(np.abs(ref_d).max()))
    np.testing.assert_allclose(got_d, ref_d, atol=tol)
    full = distances(x if queries is None else queries, x, metric)
    for r in range(len(ref_i)):
        assert len(set(got_i[r].tolist())) == k
        if exclude_self and queries is None:
            assert r not in got_i[r]
        np.testing.assert_allclose(full[r, got_i[r]], ref_d[r], atol=tol)
        gaps = np.diff(np.concatenate([ref_d[r], [np.inf]]))
        clear = (gaps > tol) & np.concatenate([[True], np.diff(ref_d[r]) > tol])
        np.testing.assert_array_equal(got_i[r][clear], ref_i[r][clear])


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
@pytest.mark.parametrize("exclude_self", [True, False])
@pytest.mark.parametrize("block_size", [1, 7, None])
def test_integer_grid_with_ties_and_duplicates_is_exact(metric, exclude_self, block_size):
    # Small integer coordinates: many exact ties and duplicate rows, products exact in float32.
    rng = np.random.default_rng(0)
    x = rng.integers(-2, 3, size=(41, 3)).astype(np.float32)
    k = 6
    d, i = gk.knn(x, k, metric=metric, block_size=block_size, exclude_self=exclude_self)
    ref_d, ref_i = knn_ref(x, k, metric=metric, exclude_self=exclude_self)
    if metric == "cosine":  # 1 - cos is not exact in float32; the order of equal values is
        np.testing.assert_allclose(np.asarray(d), ref_d, atol=1e-6)
        for r in range(len(x)):
            got = np.asarray(i[r])
            assert len(set(got.tolist())) == k and (not exclude_self or r not in got)
            np.testing.assert_allclose(distances(x[r : r + 1], x[got], metric)[0], ref_d[r],
                                       atol=1e-6)  # fmt: skip
    else:
        np.testing.assert_array_equal(np.asarray(i), ref_i)
        np.testing.assert_array_equal(np.asarray(d), ref_d.astype(np.float32))
    assert d.shape == (41, k) and i.dtype == jnp.int32


def test_exact_ties_go_to_the_lowest_index():
    # Points on a line: 0 at the origin, then pairs at equal distance from row 0.
    x = np.array([[0.0], [2.0], [-1.0], [1.0], [-2.0], [1.0]], np.float32)
    d, i = gk.knn(x, 5)
    np.testing.assert_array_equal(np.asarray(i[0]), [2, 3, 5, 1, 4])
    np.testing.assert_array_equal(np.asarray(d[0]), [1, 1, 1, 2, 2])
    # row 3 and row 5 are duplicates: each other's first neighbour, at distance 0
    assert int(i[3, 0]) == 5 and int(i[5, 0]) == 3 and float(d[3, 0]) == 0.0
    # without exclusion a row is at distance 0 from itself; its lower duplicate comes first
    d, i = gk.knn(x, 2, exclude_self=False)
    np.testing.assert_array_equal(np.asarray(i[3]), [3, 5])
    np.testing.assert_array_equal(np.asarray(i[5]), [3, 5])
    np.testing.assert_array_equal(np.asarray(d[5]), [0, 0])


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
def test_gaussian_data_matches_brute_force(metric):
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(300, 16)) + 3.0).astype(np.float32)
    d, i = gk.knn(x, 10, metric=metric, block_size=37)
    assert_knn_close(x, 10, d, i, metric=metric)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_separate_queries(metric):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    q = rng.normal(size=(33, 8)).astype(np.float32)
    d, i = gk.knn(x, 200, queries=q, metric=metric, block_size=10)  # k = n: a full sort
    assert d.shape == (33, 200)
    assert_knn_close(x, 200, d, i, queries=q, metric=metric, exclude_self=False)
    # a query equal to a row of x finds it at distance 0, whatever exclude_self says
    d, i = gk.knn(x, 1, queries=x[5:6], exclude_self=True)
    assert int(i[0, 0]) == 5 and float(d[0, 0]) < 1e-3


def test_cosine_zero_vector_is_at_distance_one():
    x = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [0.0, 1.0]], np.float32)
    d, i = gk.knn(x, 3, metric="cosine")
    np.testing.assert_allclose(np.asarray(d[0]), [1.0, 1.0, 1.0], atol=1e-6)
    np.testing.assert_array_equal(np.asarray(i[0]), [1, 2, 3])
    assert int(i[1, 0]) == 2 and float(d[1, 0]) < 1e-6  # same direction, other length


def test_bfloat16_input():
    rng = np.random.default_rng(3)
    x = rng.integers(-3, 4, size=(60, 4)).astype(np.float32)
    d, i = gk.knn(jnp.asarray(x, jnp.bfloat16), 4)
    ref_d, ref_i = knn_ref(x, 4)
    np.testing.assert_array_equal(np.asarray(i), ref_i)  # small integers are exact in bf16
    assert d.dtype == jnp.float32


def test_shards_merged_equal_the_whole():
    """knn_block over two slices of x (global offsets) merged with merge_knn == knn over x."""
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.integers(0, 4, size=(90, 2)).astype(np.float32))  # many exact ties
    k, cut = 8, 37
    aux = row_aux(x, "sqeuclidean")
    ids = jnp.arange(90, dtype=jnp.int32)
    parts = [
        knn_block(
            x,
            aux,
            x[a:b],
            aux[a:b],
            k=min(k, b - a),
            metric="sqeuclidean",
            query_ids=ids,
            x_offset=a,
            exclude_self=True,
        )  # fmt: skip
        for a, b in [(0, cut), (cut, 90)]
    ]
    d, i = merge_knn(*parts[0], *parts[1], k)
    ref_d, ref_i = knn_ref(np.asarray(x), k, metric="sqeuclidean")
    np.testing.assert_array_equal(np.asarray(i), ref_i)
    np.testing.assert_array_equal(np.asarray(d), ref_d)
    # a shard with fewer eligible rows than k pads with (inf, -1), which sort last
    d1, i1 = knn_block(x[:2], aux[:2], x[:2], aux[:2], k=2, metric="sqeuclidean",
                               query_ids=ids[:2], exclude_self=True)  # fmt: skip
    assert np.isinf(np.asarray(d1)[:, 1]).all() and (np.asarray(i1)[:, 1] == -1).all()


def test_inside_a_user_jit():
    x = jnp.asarray(np.random.default_rng(5).normal(size=(50, 3)), jnp.float32)
    d, i = jax.jit(lambda a: gk.knn(a, 3, block_size=8))(x)
    d2, i2 = gk.knn(x, 3, block_size=8)
    np.testing.assert_array_equal(np.asarray(i), np.asarray(i2))


def test_compiled_temporaries_are_one_block():
    """XLA's memory analysis at n = 200k (an n x n float32 matrix would be 160 GB)."""
    n, d, k, block = 200_000, 32, 10, 64
    x = jax.ShapeDtypeStruct((n, d), jnp.float32)
    lowered = _knn.lower(x, x, k=k, metric="euclidean", block_size=block,
                                 self_query="exclude")  # fmt: skip
    analysis = lowered.compile().memory_analysis()
    if analysis is None:
        pytest.skip("this backend reports no compiled memory analysis")
    # a few [block, n] blocks (distances, top_k scratch) and a few n-vectors
    assert analysis.temp_size_in_bytes < 6 * block * n * 4 + 8 * n * 4


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"k": 0}, ValueError, r"k must be in \[1, n - 1 .*\] = \[1, 9\] for n=10 rows, got k=0"),
        ({"k": 10}, ValueError, r"got k=10"),
        ({"k": 2.0}, TypeError, r"k must be an int"),
        ({"k": 2, "metric": "manhattan"}, ValueError, r"metric must be one of"),
        ({"k": 2, "block_size": 0}, ValueError, r"block_size must be >= 1"),
        ({"k": 2, "queries": np.zeros((3, 4), np.float32)}, ValueError, r"same width"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    x = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    with pytest.raises(error, match=match):
        gk.knn(x, **kwargs)


def test_bad_inputs():
    x = np.zeros((10, 3), np.float32)
    x[4, 1] = np.nan
    with pytest.raises(ValueError, match=r"x contains NaN or Inf \(first at row 4, column 1\)"):
        gk.knn(x, 2)
    with pytest.raises(TypeError, match=r"floating dtype"):
        gk.knn(np.zeros((10, 3), np.int32), 2)
    # k = n is allowed when rows are not excluded from their own neighbours
    d, i = gk.knn(np.eye(4, dtype=np.float32), 4, exclude_self=False)
    assert i.shape == (4, 4)
