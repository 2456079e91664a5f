"""Lloyd with distance bounds (kernels/kmeans_lloyd.py): the same run as the unbounded iteration,
bit for bit at every iteration, on one device and on a mesh; the halving first/second minimum
against NumPy."""

import importlib
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from goldener_jax import kernels as gk

kl = importlib.import_module("goldener_jax.kernels.kmeans_lloyd")
KEY = jax.random.key(5)


def _blobs(n, d, k, seed, scale=6.0, offset=0.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=scale, size=(k, d))
    x = centres[rng.integers(0, k, n)] + rng.normal(size=(n, d)) + offset
    return x.astype(np.float32)


def _quarter(n, d, seed):
    """Quarter-integer rows: exact sums, many points exactly equidistant from two centroids."""
    return (np.random.default_rng(seed).integers(-8, 9, size=(n, d)) / 4).astype(np.float32)


DATA = {
    "blobs": lambda: _blobs(600, 5, 6, 0),
    "normal": lambda: np.random.default_rng(1).normal(size=(700, 8)).astype(np.float32),
    "offset 1e3": lambda: _blobs(500, 4, 5, 2, offset=1e3),
    "quarter ties": lambda: _quarter(400, 3, 3),
    "duplicates": lambda: np.repeat(_blobs(50, 3, 4, 4), 6, axis=0),
}


@pytest.fixture(scope="module")
def loops():
    """dense_fraction -> jitted lloyd_loop on one device (-1: the unbounded iteration, 1: every
    pass gathered, the default in between)."""
    cache = {}

    def get(n, block_size, frac):
        key = (n, block_size, frac)
        if key not in cache:
            fn = partial(kl.lloyd_loop, n=n, block_size=block_size, axis=None, dense_fraction=frac)
            cache[key] = jax.jit(fn)
        return cache[key]

    return get


def _run(loops, x, k, iters, frac, block_size=None):
    state = gk.kmeans_init(x, k, KEY)
    it = jnp.int32(iters)
    return loops(x.shape[0], block_size, frac)(state, jnp.asarray(x), it, it)


def _assert_same(a, b):
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


@pytest.mark.parametrize(
    ("data", "k", "block_size"),
    [
        ("blobs", 7, None),
        ("blobs", 13, 64),
        ("normal", 13, 64),
        ("offset 1e3", 7, None),
        ("quarter ties", 7, 64),
        ("duplicates", 13, None),
    ],
)
def test_bounded_run_equals_the_unbounded_one_at_every_iteration(loops, data, k, block_size):
    x = DATA[data]()
    for iters in range(1, 13):
        want = _run(loops, x, k, iters, -1.0, block_size)
        for frac in (kl.DENSE_FRACTION, 1.0):
            _assert_same(_run(loops, x, k, iters, frac, block_size), want)


def test_bounds_skip_rows_and_the_run_converges_as_numpy_lloyd(loops):
    """Well separated blobs: a float64 Lloyd from the same seeds gives the same clusters."""
    x = _blobs(800, 4, 5, 7, scale=10.0)
    seeds = np.asarray(gk.kmeans_plusplus(x, 5, KEY))
    c = x[seeds].astype(np.float64)
    xd = x.astype(np.float64)
    for _ in range(50):
        a = ((xd[:, None] - c[None]) ** 2).sum(-1).argmin(1)
        c = np.stack([xd[a == j].mean(0) if (a == j).any() else c[j] for j in range(5)])
    got = _run(loops, x, 5, 50, 1.0)
    np.testing.assert_array_equal(np.asarray(got.assignment), a)
    np.testing.assert_allclose(np.asarray(got.centroids), c, atol=1e-4)


@pytest.mark.parametrize("k", [1, 2])
def test_one_and_two_clusters(loops, k):
    x = DATA["normal"]()
    for iters in (1, 2, 5):
        _assert_same(_run(loops, x, k, iters, 1.0), _run(loops, x, k, iters, -1.0))


@pytest.mark.parametrize(("data", "devices"), [("blobs", 8), ("quarter ties", 3)])
def test_bounded_run_on_a_mesh_equals_one_device(data, devices):
    x = DATA[data]()
    mesh = gk.make_mesh(jax.devices()[:devices])
    want = gk.kmeans_run(gk.kmeans_init(x, 9, KEY), x, num_iters=15)
    got = gk.kmeans_run(gk.kmeans_init(x, 9, KEY, mesh=mesh), x, num_iters=15, mesh=mesh)
    np.testing.assert_array_equal(np.asarray(got.assignment), np.asarray(want.assignment))
    assert int(got.iteration) == int(want.iteration)
    if data == "quarter ties":  # exact sums: bit for bit
        np.testing.assert_array_equal(np.asarray(got.centroids), np.asarray(want.centroids))
    else:
        np.testing.assert_allclose(np.asarray(got.centroids), np.asarray(want.centroids), rtol=1e-5)


def _two_min_ref(scores):
    s = np.asarray(scores, np.float64)
    idx = np.array([int(np.flatnonzero(col == col.min())[0]) for col in s.T])
    srt = np.sort(s, axis=0)
    second = srt[1] if s.shape[0] > 1 else np.full(s.shape[1], np.inf)
    return idx, srt[0], second


@pytest.mark.parametrize("k", [1, 2, 3, 5, 7, 8, 100])
def test_first_two_min_matches_numpy_with_ties(k):
    rng = np.random.default_rng(k)
    scores = rng.integers(0, 4, size=(k, 300)).astype(np.float32)  # many ties
    idx, v1, v2 = jax.jit(kl.first_two_min)(scores)
    ref = _two_min_ref(scores)
    np.testing.assert_array_equal(np.asarray(idx), ref[0])
    np.testing.assert_array_equal(np.asarray(v1), ref[1])
    np.testing.assert_array_equal(np.asarray(v2), ref[2])


def test_first_two_min_tie_whose_left_survivor_has_the_higher_index():
    # Rows 2 and 4 tie for the minimum, row 0 is larger: a halving that pairs j with j + k/2
    # would carry 4 (beating 0) against 2 and keep 4 on the tie; the lowest index is 2.
    col = np.array([5, 9, 1, 9, 1, 9, 9, 9], np.float32)[:, None]
    idx, v1, v2 = kl.first_two_min(jnp.asarray(col))
    assert int(idx[0]) == 2 and float(v1[0]) == 1 and float(v2[0]) == 1
