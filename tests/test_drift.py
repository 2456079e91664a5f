"""drift / monitoring_selection against NumPy brute force and on sklearn digits."""

from __future__ import annotations

import json

import _stores
import jax
import numpy as np
import pytest
from sklearn.datasets import load_digits

from goldener_jax import kernels as gk
from goldener_jax.drift import drift, monitoring_selection


def _sq(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


def _unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _two_sample(x, y, scale):
    """V-statistic RBF MMD^2 and energy distance, float64, full matrices."""
    kxx = np.exp(-_sq(x, x) / (2 * scale**2)).mean()
    kyy = np.exp(-_sq(y, y) / (2 * scale**2)).mean()
    kxy = np.exp(-_sq(x, y) / (2 * scale**2)).mean()
    dxx, dyy, dxy = (np.sqrt(_sq(a, b)).mean() for a, b in ((x, x), (y, y), (x, y)))
    return kxx + kyy - 2 * kxy, 2 * dxy - dxx - dyy


def _cos_dist(a, b):
    return 1.0 - np.clip(_unit(a) @ _unit(b).T, -1, 1)


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return d.data.astype(np.float32), d.target


@pytest.mark.parametrize(
    "m, n, d, shift, metric",
    [(40, 40, 5, 0.0, "euclidean"), (37, 23, 3, 0.7, "euclidean"), (30, 50, 8, 0.3, "cosine")],
)
def test_statistics_and_coverage_match_brute_force(m, n, d, shift, metric):
    rng = np.random.default_rng(m + n)
    ref = rng.normal(size=(m, d)).astype(np.float32) + 1.0
    new = (rng.normal(size=(n, d)) + shift).astype(np.float32) + 1.0
    rep = drift(ref, new, key=jax.random.key(0), num_permutations=20, metric=metric)
    x, y = (_unit(ref), _unit(new)) if metric == "cosine" else (ref, new)
    pooled = np.concatenate([x, y])
    med = np.median(np.sqrt(_sq(pooled, pooled))[np.triu_indices(m + n, 1)])
    assert rep.length_scale == pytest.approx(med, rel=1e-4)
    mmd2, energy = _two_sample(x, y, rep.length_scale)
    assert rep.mmd == pytest.approx(mmd2, rel=1e-3, abs=1e-6)
    assert rep.energy_distance == pytest.approx(energy, rel=1e-3, abs=1e-5)
    # coverage: leave-one-out nearest distances, the 0.95 quantile ("higher"), new -> nearest
    dist = _cos_dist if metric == "cosine" else (lambda a, b: np.sqrt(_sq(a, b)))
    own = dist(ref, ref)
    np.fill_diagonal(own, np.inf)
    ref_near = own.min(axis=1)
    new_near = dist(new, ref).min(axis=1)
    radius = np.sort(ref_near)[int(np.ceil(0.95 * (m - 1)))]
    np.testing.assert_allclose(rep.reference_nearest, ref_near, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(rep.new_nearest, new_near, rtol=1e-4, atol=1e-5)
    assert rep.coverage_radius == pytest.approx(radius, rel=1e-4, abs=1e-6)
    assert rep.outside_share == pytest.approx(np.mean(new_near > radius))
    # p-values live on the permutation grid, the combined one too
    grid = np.arange(1, 22) / 21
    for p in (rep.p_value, rep.mmd_p_value, rep.energy_p_value):
        assert np.isclose(grid, p).any()


def test_clusters_table_is_consistent():
    rng = np.random.default_rng(3)
    ref = rng.normal(size=(200, 4)).astype(np.float32)
    new = np.concatenate([ref[:50] + 0.01, rng.normal(size=(30, 4)) + 6.0]).astype(np.float32)
    rep = drift(ref, new, key=jax.random.key(1), num_permutations=20, n_clusters=5)
    assert len(rep.clusters) == 5
    # More cells than reference rows: as many as rows, and the record says which were used.
    few = drift(ref[:4], new, key=jax.random.key(1), num_permutations=5, n_clusters=5)
    assert len(few.clusters) == 4
    assert (few.config["n_clusters"], few.config["n_clusters_requested"]) == (4, 5)
    counts = np.bincount(rep.new_cluster, minlength=5)
    for c in rep.clusters:
        assert c.new_count == counts[c.cluster]
        assert c.new_share == pytest.approx(counts[c.cluster] / 80)
        assert c.ratio == pytest.approx(c.new_share / c.reference_share)
        in_c = rep.new_cluster == c.cluster
        expect = np.mean(rep.new_nearest[in_c] > rep.coverage_radius) if in_c.any() else 0.0
        assert c.outside_share == pytest.approx(expect)
    assert sum(c.reference_count for c in rep.clusters) == 200
    ratios = [c.ratio for c in rep.clusters]
    assert ratios == sorted(ratios, reverse=True)
    # the far blob lands in one cell, entirely outside coverage; it ranks first
    far = rep.new_cluster[50:]
    assert np.all(far == far[0])
    assert rep.clusters[0].cluster == far[0]
    assert np.all(rep.new_nearest[50:] > rep.coverage_radius)


def test_held_back_classes_are_flagged(digits):
    """Reference: classes 0-6; new: classes 7-9 (300 each)."""
    x, y = digits
    for seed in range(3):
        rng = np.random.default_rng(seed)
        ref = rng.permutation(np.flatnonzero(y < 7))[:300]
        new = rng.permutation(np.flatnonzero(y >= 7))[:300]
        rep = drift(x[ref], x[new], key=jax.random.key(seed), num_permutations=200)
        assert rep.p_value < 0.01, (seed, rep.to_dict())
        assert rep.mmd_p_value < 0.01 and rep.energy_p_value < 0.01
        assert rep.outside_share > 0.5 > 0.1 > rep.reference_outside_share
        assert rep.drifted(0.01)


def test_same_distribution_is_not_flagged(digits):
    """Random disjoint halves of digits, 300 each, 10 seeds: p > 0.05 in at least 9."""
    x, _ = digits
    ps = []
    for seed in range(10):
        perm = np.random.default_rng(100 + seed).permutation(x.shape[0])
        rep = drift(x[perm[:300]], x[perm[300:600]], key=jax.random.key(seed))
        ps.append(rep.p_value)
        assert rep.outside_share < 0.15
    assert sum(p > 0.05 for p in ps) >= 9, ps


def test_subsampling_determinism_json_and_plot(digits, tmp_path):
    x, y = digits
    a, b = x[y < 5][:400], x[y >= 5][:350]
    kw = dict(key=jax.random.key(7), num_permutations=30, max_samples=100, max_reference=150)
    rep = drift(a, b, **kw)
    again = drift(a, b, **kw)
    assert (rep.tested_reference, rep.tested_new) == (100, 100)
    assert (rep.reference_size, rep.new_size) == (400, 350)
    assert rep.reference_nearest.shape == (150,) and rep.new_nearest.shape == (350,)
    assert rep.to_json() == again.to_json()
    np.testing.assert_array_equal(rep.new_cluster, again.new_cluster)
    loaded = json.loads(rep.to_json(tmp_path / "drift.json"))
    assert loaded == json.loads((tmp_path / "drift.json").read_text())
    assert loaded["p_value"] == rep.p_value and len(loaded["clusters"]) == 8
    other = drift(a, b, **{**kw, "key": jax.random.key(8)})
    assert other.mmd != rep.mmd  # another key draws other subsamples
    rep.plot(tmp_path / "drift.png")
    head = (tmp_path / "drift.png").read_bytes()
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) > 10_000


def test_store_input_is_one_mean_vector_per_sample(tmp_path):
    store = _stores.make(tmp_path / "s")
    vectors, sidx = store.read_vectors()
    mean = np.stack([vectors[sidx == s].mean(axis=0) for s in np.unique(sidx)])
    rng = np.random.default_rng(0)
    new = rng.normal(size=(15, vectors.shape[1])).astype(np.float32)
    kw = dict(key=jax.random.key(0), num_permutations=10, n_clusters=3)
    from_store, from_array = drift(store, new, **kw), drift(mean, new, **kw)
    assert from_store.to_json() == from_array.to_json()
    picked = monitoring_selection(new, str(tmp_path / "s"), 4, key=jax.random.key(0))
    np.testing.assert_array_equal(picked, monitoring_selection(new, mean, 4, key=jax.random.key(0)))


def _monitor_reference(ref, new, size, num_neighbors, power):
    d = np.sqrt(_sq(new, new))
    np.fill_diagonal(d, np.inf)
    typ = 1.0 / np.sort(d, axis=1)[:, :num_neighbors].mean(axis=1)
    w = (typ / typ.max()) ** power
    md = np.sqrt(_sq(new, ref)).min(axis=1) if len(ref) else np.full(len(new), np.inf)
    chosen = []
    for _ in range(size):
        score = np.where(np.isinf(md), w, w * md) if np.isinf(md).all() else w * md
        score[chosen] = -np.inf
        c = int(np.argmax(score))
        chosen.append(c)
        md = np.minimum(md, np.sqrt(_sq(new, new[c : c + 1]))[:, 0])
    return chosen


@pytest.mark.parametrize(
    "labelled, size, power",
    [(None, 6, 1.0), ([0, 3, 5, 9], 5, 1.0), ([], 4, 1.0), ([1, 2], 5, 0.0), (None, 0.1, 2.0)],
)
def test_monitoring_selection_matches_the_rule(labelled, size, power):
    rng = np.random.default_rng(5)
    ref = rng.normal(size=(12, 3)).astype(np.float32)
    new = np.concatenate([rng.normal(size=(30, 3)), rng.normal(size=(10, 3)) + 3]).astype(
        np.float32
    )
    got = monitoring_selection(
        ref, new, size, labelled=labelled, key=jax.random.key(0), num_neighbors=5, power=power
    )
    anchors = ref if labelled is None else ref[np.asarray(labelled, int)]
    count = size if isinstance(size, int) else int(np.ceil(size * 40))
    assert got.tolist() == _monitor_reference(anchors, new, count, 5, power)


def test_monitoring_selection_mask_equals_indices_and_cosine():
    rng = np.random.default_rng(9)
    ref, new = rng.normal(size=(20, 4)), rng.normal(size=(25, 4)) + 0.5
    mask = np.zeros(20, bool)
    mask[[2, 4, 11]] = True
    key = jax.random.key(0)
    a = monitoring_selection(ref, new, 5, labelled=mask, key=key)
    b = monitoring_selection(ref, new, 5, labelled=[11, 2, 4], key=key)
    np.testing.assert_array_equal(a, b)
    cos = monitoring_selection(ref, new, 5, labelled=mask, key=key, metric="cosine", power=0.0)
    expect = _monitor_reference(_unit(ref[mask]), _unit(new), 5, 20, 0.0)
    assert cos.tolist() == expect


def test_monitoring_selection_finds_the_new_classes(digits):
    x, y = digits
    rng = np.random.default_rng(0)
    ref = rng.permutation(np.flatnonzero(y < 7))[:400]
    seen = rng.permutation(np.setdiff1d(np.flatnonzero(y < 7), ref))[:200]
    unseen = rng.permutation(np.flatnonzero(y >= 7))[:100]
    new = np.concatenate([seen, unseen])
    picked = monitoring_selection(
        x[ref], x[new], 20, labelled=np.arange(0, 400, 4), key=jax.random.key(0)
    )
    assert len(set(picked.tolist())) == 20
    unseen_share = np.mean(y[new[picked]] >= 7)
    assert unseen_share >= 0.6, unseen_share  # a third of the pool, most of the picks
    assert set(y[new[picked]][y[new[picked]] >= 7]) == {7, 8, 9}  # every new class seen


@pytest.mark.parametrize(
    "call, err, words",
    [
        (lambda r, n: drift(r, n[:, :2], key=jax.random.key(0)), ValueError, "same width"),
        (lambda r, n: drift(r, n, key=0), TypeError, "key"),
        (lambda r, n: drift(r, n, key=jax.random.key(0), metric="l1"), ValueError, "metric"),
        (
            lambda r, n: drift(r, n, key=jax.random.key(0), coverage_quantile=0),
            ValueError,
            "coverage_quantile",
        ),
        (
            lambda r, n: drift(r, n, key=jax.random.key(0), num_permutations=0),
            ValueError,
            "num_permutations",
        ),
        (lambda r, n: drift(r[:1], n, key=jax.random.key(0)), ValueError, "at least 2"),
        (
            lambda r, n: drift(np.where(r > 0.5, np.nan, r), n, key=jax.random.key(0)),
            ValueError,
            "NaN",
        ),
        (lambda r, n: monitoring_selection(r, n, 99, key=jax.random.key(0)), ValueError, "size"),
        (
            lambda r, n: monitoring_selection(r, n, 2, labelled=[50], key=jax.random.key(0)),
            ValueError,
            "labelled",
        ),
        (
            lambda r, n: monitoring_selection(
                r, n, 2, labelled=np.ones(3, bool), key=jax.random.key(0)
            ),
            ValueError,
            "mask",
        ),
        (
            lambda r, n: monitoring_selection(r, n, 2, key=jax.random.key(0), power=float("nan")),
            ValueError,
            "power must be a finite float",
        ),
        (
            lambda r, n: gk.typical_kcenter(n, 2, power=float("nan")),
            ValueError,
            "power must be a finite float",
        ),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(call, err, words):
    rng = np.random.default_rng(0)
    ref, new = rng.random((10, 3)), rng.random((8, 3))
    with pytest.raises(err, match=words):
        call(ref, new)
