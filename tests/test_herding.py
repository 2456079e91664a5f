import numpy as np
import pytest
from _reference import herding as herding_reference

from goldener_jax import kernels as gk


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_matches_brute_force(kernel):
    x = np.random.default_rng(4).normal(size=(70, 5)).astype(np.float32)
    scale = 1.7
    got = gk.kernel_herding(x, 25, kernel=kernel, length_scale=scale, block_size=16)
    assert [int(i) for i in got] == herding_reference(x, 25, kernel, scale)


def test_chunked_run_equals_one_run_and_all_points_are_distinct():
    x = np.random.default_rng(5).normal(size=(40, 3)).astype(np.float32)
    one = gk.kernel_herding(x, 40, length_scale=1.0)
    assert sorted(int(i) for i in one) == list(range(40))
    state = gk.herding_init(x, 40, length_scale=1.0)
    while int(state.count) < 40:
        state = gk.herding_run(state, x, length_scale=1.0, max_steps=7)
    np.testing.assert_array_equal(np.asarray(state.selected), np.asarray(one))
    state = gk.herding_step(gk.herding_init(x, 2, length_scale=1.0), x, length_scale=1.0)
    assert int(state.count) == 1 and int(state.selected[0]) == int(one[0])


def test_median_length_scale_is_the_median_distance():
    x = np.random.default_rng(6).normal(size=(30, 4)).astype(np.float32)
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    want = np.median(d[np.triu_indices(30, 1)])
    assert gk.median_length_scale(x) == pytest.approx(want, rel=1e-4)


def test_bad_input():
    x = np.zeros((5, 2), np.float32)
    with pytest.raises(ValueError, match="kernel must be one of"):
        gk.kernel_herding(x, 2, kernel="poly")
    with pytest.raises(ValueError, match="length_scale must be > 0"):
        gk.kernel_herding(x, 2, length_scale=0.0)
    with pytest.raises(ValueError, match="k=6 is larger"):
        gk.kernel_herding(x, 6)
    with pytest.raises(ValueError, match="state was made for 5 points"):
        gk.herding_run(gk.herding_init(x, 2), np.zeros((4, 2), np.float32))
