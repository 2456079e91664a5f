import jax
import numpy as np
import pytest

from goldener_jax import kernels as gk


def test_pca_matches_numpy_svd():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(300, 6)) * np.array([5, 3, 2, 1, 0.5, 0.1]) + 7).astype(np.float32)
    state = gk.pca_fit(x, 3, block_size=64)
    centred = x.astype(np.float64) - x.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(np.asarray(state.explained_variance), s[:3] ** 2 / 299, rtol=1e-3)
    for j in range(3):  # same axes up to sign; our sign: largest loading positive
        v = vt[j] * np.sign(vt[j][np.argmax(np.abs(vt[j]))])
        np.testing.assert_allclose(np.asarray(state.components[:, j]), v, atol=1e-3)
    z = np.asarray(gk.pca_transform(state, x))
    np.testing.assert_allclose(z, centred @ np.asarray(state.components), atol=1e-3)


def test_pca_on_a_sample_and_determinism():
    x = np.random.default_rng(1).normal(size=(500, 5)).astype(np.float32)
    a = gk.pca_fit(x, 2, key=jax.random.key(0), sample_size=200)
    b = gk.pca_fit(x, 2, key=jax.random.key(0), sample_size=200)
    np.testing.assert_array_equal(np.asarray(a.components), np.asarray(b.components))
    assert gk.pca_transform(a, x).shape == (500, 2)


def test_random_projection_is_deterministic_and_roughly_preserves_distances():
    x = np.random.default_rng(2).normal(size=(50, 400)).astype(np.float32)
    a = np.asarray(gk.random_projection(x, 200, jax.random.key(3)))
    b = np.asarray(gk.random_projection(x, 200, jax.random.key(3)))
    np.testing.assert_array_equal(a, b)
    d_in = np.linalg.norm(x[:25] - x[25:], axis=1)
    d_out = np.linalg.norm(a[:25] - a[25:], axis=1)
    assert np.all(np.abs(d_out / d_in - 1) < 0.35)


def test_bad_input():
    x = np.zeros((10, 4), np.float32)
    with pytest.raises(ValueError, match="n_components must be in \\[1, 4\\]"):
        gk.pca_fit(x, 5)
    with pytest.raises(ValueError, match="sample_size needs a key"):
        gk.pca_fit(x, 2, sample_size=3)
    with pytest.raises(ValueError, match="x has 3 columns but the PCA was fitted on 4"):
        gk.pca_transform(gk.pca_fit(x, 2), np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="n_components must be an int >= 1"):
        gk.random_projection(x, 0, jax.random.key(0))
