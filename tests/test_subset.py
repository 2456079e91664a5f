import jax
import numpy as np
import pytest

from goldener_jax import kernels as gk


def test_same_key_same_subset_distinct_in_range():
    a = np.asarray(gk.random_subset(jax.random.key(3), 100, 30))
    b = np.asarray(gk.random_subset(jax.random.key(3), 100, 30))
    c = np.asarray(gk.random_subset(jax.random.key(4), 100, 30))
    assert a.dtype == np.int32 and a.shape == (30,)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len(set(a.tolist())) == 30 and a.min() >= 0 and a.max() < 100


def test_edges():
    assert gk.random_subset(jax.random.key(0), 5, 0).shape == (0,)
    assert sorted(gk.random_subset(jax.random.key(0), 5, 5).tolist()) == [0, 1, 2, 3, 4]
    assert gk.random_subset(jax.random.key(0), 0, 0).shape == (0,)


def test_roughly_uniform():
    """Each index's inclusion frequency over 2,000 keys is within 5 sigma of k / n."""
    n, k, trials = 20, 5, 2000
    keys = jax.random.split(jax.random.key(0), trials)
    counts = np.zeros(n)
    for key in keys:
        counts[np.asarray(gk.random_subset(key, n, k))] += 1
    p = k / n
    sigma = np.sqrt(trials * p * (1 - p))
    assert np.all(np.abs(counts - trials * p) < 5 * sigma), counts


@pytest.mark.parametrize(
    ("n", "k", "error", "match"),
    [
        (10, 11, ValueError, "k=11 is larger than the number of points n=10"),
        (10, -1, ValueError, "k must be >= 0"),
        (-1, 0, ValueError, "n must be an int >= 0"),
        (10, 2.5, TypeError, "k must be an int"),
    ],
)
def test_bad_input(n, k, error, match):
    with pytest.raises(error, match=match):
        gk.random_subset(jax.random.key(0), n, k)
