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


PADDED_CASES = [
    # (kernel, n, d, k, devices, anchors)
    ("rbf", 37, 5, 9, 8, False),
    ("linear", 45, 4, 7, 4, True),
    ("rbf", 13, 3, 13, 8, True),  # every real row chosen; padding rows never
]


@pytest.mark.parametrize("case", PADDED_CASES, ids=lambda c: "-".join(map(str, c)))
def test_padded_rows_with_n_equal_the_unpadded_call(case):
    """``herding_init(..., n=)`` on rows padded for the mesh (filled with 1e3: far away, never in
    the mean nor chosen), run in chunks, and the herding selector given ``n=`` (its median
    bandwidth from the real rows) equal the unpadded calls on the same mesh; a run refuses rows
    that are neither its state's nor their padding."""
    import jax

    kernel, n, d, k, devices, with_anchors = case
    x = np.random.default_rng(n).normal(size=(n, d)).astype(np.float32)
    anchors = x[:2] + np.float32(0.5) if with_anchors else None
    mesh = gk.make_mesh(jax.devices()[:devices])
    junk = gk.shard_rows(x, mesh, fill=1e3)
    assert junk.shape[0] > n
    want = gk.kernel_herding(x, k, kernel=kernel, length_scale=1.3, anchors=anchors, mesh=mesh)
    state = gk.herding_init(
        junk, k, kernel=kernel, length_scale=1.3, anchors=anchors, mesh=mesh, n=n
    )
    assert state.mean_kernel.shape == (n,)
    while int(state.count) < k:
        state = gk.herding_run(state, junk, kernel=kernel, length_scale=1.3, max_steps=4, mesh=mesh)
    np.testing.assert_array_equal(np.asarray(state.selected), np.asarray(want))

    assert gk.median_length_scale(junk, mesh=mesh, n=n) == gk.median_length_scale(x)
    sel = gk.selectors.herding(kernel=kernel, mesh=mesh)
    plain = sel.picks(sel.run(sel.init(x, k, anchors=anchors), x))
    padded = sel.picks(sel.run(sel.init(junk, k, anchors=anchors, n=n), junk))
    np.testing.assert_array_equal(padded, plain)
    with pytest.raises(ValueError, match="state was made for"):  # 9 rows short: not its padding
        gk.herding_run(gk.herding_init(x[: n - 9], 2, mesh=mesh), junk, mesh=mesh)
