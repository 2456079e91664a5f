"""Mini-batch k-means: each step equals a NumPy float64 reference of the running-mean update,
the result is reproducible from its key, the step traced under jit equals the eager one, and on
clustered data the centroids reach Lloyd's inertia within a few percent."""

import jax
import numpy as np
import pytest

from goldener_jax import kernels as gk

mbk = gk  # the mini-batch names are exported by goldener_jax.kernels


def _reference_step(c, counts, batch):
    """NumPy float64: nearest centroid (first minimum), running mean of all rows assigned."""
    c, counts, batch = (np.asarray(a, np.float64) for a in (c, counts, batch))
    d = ((batch[:, None, :] - c[None]) ** 2).sum(-1)
    a = d.argmin(1)
    out, new_counts = c.copy(), counts.copy()
    for j in range(len(c)):
        rows = batch[a == j]
        if len(rows):
            new_counts[j] = counts[j] + len(rows)
            out[j] = (counts[j] * c[j] + rows.sum(0)) / new_counts[j]
    return out, new_counts


def _mixture(n, d, k, seed):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=6.0, size=(k, d))
    lab = rng.integers(0, k, n)
    return (centres[lab] + rng.normal(size=(n, d))).astype(np.float32)


@pytest.mark.parametrize("n,d,k,b", [(200, 3, 4, 17), (500, 8, 10, 64), (90, 5, 1, 30)])
def test_steps_equal_numpy_reference(n, d, k, b):
    x = _mixture(n, d, k, 0)
    state = mbk.minibatch_kmeans_init(x[:50], k, jax.random.key(1))
    c, counts = np.asarray(state.centroids, np.float64), np.zeros(k)
    for start in range(0, n, b):
        batch = x[start : start + b]
        state = mbk.minibatch_kmeans_step(state, batch)
        c, counts = _reference_step(c, counts, batch)
        np.testing.assert_allclose(np.asarray(state.centroids), c, rtol=1e-5, atol=1e-4)
        np.testing.assert_array_equal(np.asarray(state.counts), counts)
    assert int(state.batches) == -(-n // b)


def test_jit_equals_eager_and_key_reproducible():
    x = _mixture(300, 6, 5, 2)
    state = mbk.minibatch_kmeans_init(x, 5, jax.random.key(0))
    with jax.disable_jit():
        eager = mbk.minibatch_kmeans_step(state, x[:100])
    jitted = mbk.minibatch_kmeans_step(state, x[:100])
    np.testing.assert_allclose(eager.centroids, jitted.centroids, rtol=1e-6, atol=1e-5)
    a, _ = gk.minibatch_kmeans(x, 5, jax.random.key(3), batch_size=64, num_epochs=2)
    b, _ = gk.minibatch_kmeans(x, 5, jax.random.key(3), batch_size=64, num_epochs=2)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _inertia(x, c):
    d = ((x[:, None, :].astype(np.float64) - np.asarray(c, np.float64)[None]) ** 2).sum(-1)
    return float(d.min(1).sum())


def test_close_to_lloyd_on_clustered_data():
    x = _mixture(20_000, 16, 20, 4)
    lloyd, _ = gk.kmeans(x, 20, jax.random.key(0))
    mini, state = gk.minibatch_kmeans(x, 20, jax.random.key(0), batch_size=1024, num_epochs=3)
    assert float(state.counts.sum()) == 3 * 20_000
    assert _inertia(x, mini) <= 1.05 * _inertia(x, lloyd)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"num_epochs": 1.5}, "num_epochs"),
        ({"init_size": -2}, "init_size"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, match):
    x = _mixture(100, 3, 2, 0)
    with pytest.raises(ValueError, match=match):
        gk.minibatch_kmeans(x, 2, jax.random.key(0), **kwargs)


def test_bad_batch_width_and_cluster_count():
    x = _mixture(100, 3, 2, 0)
    state = mbk.minibatch_kmeans_init(x, 2, jax.random.key(0))
    with pytest.raises(ValueError, match="3 columns"):
        mbk.minibatch_kmeans_step(state, x[:, :2])
    with pytest.raises(ValueError, match="n_clusters"):
        mbk.minibatch_kmeans_init(x, 0, jax.random.key(0))
