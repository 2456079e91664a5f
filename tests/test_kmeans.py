"""k-means, medoids and typicality against NumPy brute-force references."""

import _reference
import jax
import numpy as np
import pytest

from goldener_jax import kernels as gk

KEY = jax.random.key(3)


# --------------------------------------------------------------------------- NumPy references


def plusplus_ref(x, k, key):
    """k-means++ with the kernel's documented draws (uniforms from fold_in(key, t))."""
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    first = int(jax.random.randint(jax.random.fold_in(key, 0), (), 0, n))
    seeds = [first]
    min_d = ((x - x[first]) ** 2).sum(1)
    taken = np.zeros(n, bool)
    taken[first] = True
    for t in range(1, k):
        w = np.where(taken, 0.0, min_d)
        cum = np.cumsum(w)
        u = float(jax.random.uniform(jax.random.fold_in(key, t), (), np.float32))
        hit = (cum > u * cum[-1]) & ~taken if cum[-1] > 0 else ~taken
        i = int(np.flatnonzero(hit)[0])
        seeds.append(i)
        taken[i] = True
        min_d = np.minimum(min_d, ((x - x[i]) ** 2).sum(1))
    return seeds


def lloyd_ref(x, seeds, num_iters):
    x = np.asarray(x, np.float64)
    c = x[seeds].copy()
    prev = np.full(x.shape[0], -1)
    changed = True
    for _ in range(num_iters):
        if not changed:
            break
        a = ((x[:, None] - c[None]) ** 2).sum(-1).argmin(1)
        changed = bool((a != prev).any())
        for j in range(len(seeds)):
            if (a == j).any():
                c[j] = x[a == j].mean(0)
        prev = a
    return c, ((x[:, None] - c[None]) ** 2).sum(-1).argmin(1)


def round_robin_ref(assignment, score, k, num_picks, min_size):
    size = np.bincount(assignment, minlength=k)
    got = np.zeros(k, int)
    taken = np.zeros(len(assignment), bool)
    picks = []
    for _ in range(num_picks):
        cands = [c for c in range(k) if ((assignment == c) & ~taken).any()]
        c = min(cands, key=lambda c: (size[c] < min_size, got[c], -size[c], c))
        members = np.flatnonzero((assignment == c) & ~taken)
        best = members[score[members] == score[members].max()][0]
        picks.append(int(best))
        taken[best] = True
        got[c] += 1
    return picks


def _blobs(n=96, d=3, k=4, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=6.0, size=(k, d))
    return (centres[rng.integers(0, k, n)] + rng.normal(size=(n, d))).astype(np.float32)


# --------------------------------------------------------------------------- k-means


def test_seeding_matches_reference_on_exact_arithmetic():
    x = np.random.default_rng(1).integers(-4, 5, size=(64, 3)).astype(np.float32)
    for seed in range(4):
        key = jax.random.key(seed)
        got = [int(i) for i in gk.kmeans_plusplus(x, 9, key)]
        assert got == plusplus_ref(x, 9, key)
        assert len(set(got)) == 9


def test_seeding_with_duplicates_stays_distinct():
    x = np.zeros((6, 2), np.float32)
    assert sorted(int(i) for i in gk.kmeans_plusplus(x, 6, KEY)) == list(range(6))


@pytest.mark.parametrize("block_size", [None, 7])
def test_kmeans_matches_numpy_lloyd_from_the_same_seeds(block_size):
    x = _blobs()
    for k, iters in ((4, 100), (7, 3)):
        cent, assign = gk.kmeans(x, k, KEY, num_iters=iters, block_size=block_size)
        seeds = [int(i) for i in gk.kmeans_plusplus(x, k, KEY)]
        ref_c, ref_a = lloyd_ref(x, seeds, iters)
        np.testing.assert_allclose(np.asarray(cent), ref_c, atol=1e-4)
        np.testing.assert_array_equal(np.asarray(assign), ref_a)


def test_kmeans_is_deterministic_and_jit_equals_no_jit():
    x = _blobs(seed=2)
    c1, a1 = gk.kmeans(x, 5, KEY)
    c2, a2 = gk.kmeans(x, 5, KEY)
    np.testing.assert_array_equal(np.asarray(c1), np.asarray(c2))
    np.testing.assert_array_equal(np.asarray(a1), np.asarray(a2))
    cj, aj = jax.jit(lambda x, key: gk.kmeans(x, 5, key))(x, KEY)
    np.testing.assert_allclose(np.asarray(cj), np.asarray(c1), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(aj), np.asarray(a1))


def greedy_ref(x, k, key, trials):
    """Greedy k-means++ with the kernel's documented draws (float64)."""
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    first = int(jax.random.randint(jax.random.fold_in(key, 0), (), 0, n))
    seeds = [first]
    min_d = ((x - x[first]) ** 2).sum(1)
    min_d[first] = 0.0
    taken = np.zeros(n, bool)
    taken[first] = True
    for t in range(1, k):
        w = np.where(taken, 0.0, min_d)
        cum = np.cumsum(w)
        us = np.asarray(jax.random.uniform(jax.random.fold_in(key, t), (trials,), np.float32))
        cands = []
        for u in us:
            hit = (cum > float(u) * cum[-1]) & ~taken if cum[-1] > 0 else ~taken
            cands.append(int(np.flatnonzero(hit)[0]))
        new = [np.minimum(min_d, ((x - x[c]) ** 2).sum(1)) for c in cands]
        best = int(np.argmin([v.sum() for v in new]))
        i = cands[best]
        seeds.append(i)
        taken[i] = True
        min_d = new[best]
        min_d[i] = 0.0
    return seeds


@pytest.mark.parametrize("seed", range(4))
def test_greedy_seeding_matches_reference_on_exact_arithmetic(seed):
    x = np.random.default_rng(seed).integers(-4, 5, size=(80, 3)).astype(np.float32)
    key = jax.random.key(seed)
    k = 11
    trials = 2 + int(np.log(k))
    got = [int(i) for i in gk.kmeans_plusplus(x, k, key, init="greedy")]
    assert got == greedy_ref(x, k, key, trials)
    assert len(set(got)) == k


@pytest.mark.parametrize("devices", [3, 8])
def test_greedy_seeding_on_a_mesh_equals_one_device(devices):
    # Quarter-integer data: every sum is exact, so the potentials agree bit for bit.
    x = (np.random.default_rng(7).integers(-8, 9, size=(101, 4)) / 4).astype(np.float32)
    mesh = gk.make_mesh(jax.devices()[:devices])
    want = np.asarray(gk.kmeans_plusplus(x, 9, KEY, init="greedy"))
    got = np.asarray(gk.kmeans_plusplus(x, 9, KEY, init="greedy", mesh=mesh))
    np.testing.assert_array_equal(got, want)
    c1, a1 = gk.kmeans(x, 9, KEY, num_iters=10, init="greedy")
    c2, a2 = gk.kmeans(x, 9, KEY, num_iters=10, init="greedy", mesh=mesh)
    np.testing.assert_allclose(np.asarray(c2), np.asarray(c1), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(a2), np.asarray(a1))


def test_greedy_seeding_with_duplicates_stays_distinct():
    x = np.zeros((6, 2), np.float32)
    got = gk.kmeans_plusplus(x, 6, KEY, init="greedy")
    assert sorted(int(i) for i in got) == list(range(6))


def test_greedy_init_runs_lloyd_from_its_seeds():
    x = _blobs(seed=4)
    seeds = [int(i) for i in gk.kmeans_plusplus(x, 5, KEY, init="greedy")]
    cent, assign = gk.kmeans(x, 5, KEY, num_iters=50, init="greedy")
    ref_c, ref_a = lloyd_ref(x, seeds, 50)
    np.testing.assert_allclose(np.asarray(cent), ref_c, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(assign), ref_a)


@pytest.mark.parametrize(
    ("n", "d", "k", "block_size"),
    [(50, 3, 1, None), (50, 3, 2, None), (97, 5, 7, 13), (300, 8, 33, None), (64, 4, 64, 5)],
)
def test_assign_matches_brute_force(n, d, k, block_size):
    rng = np.random.default_rng(n + k)
    x = rng.normal(size=(n, d)).astype(np.float32)
    c = rng.normal(size=(k, d)).astype(np.float32)
    got = np.asarray(gk.kmeans_assign(x, c, block_size=block_size))
    ref = ((x.astype(np.float64)[:, None] - c[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(got, ref)


def test_assign_ties_go_to_the_lowest_centroid():
    # Every centroid is duplicated; integer data makes all distances exact.
    x = np.random.default_rng(0).integers(-3, 4, size=(40, 2)).astype(np.float32)
    c = np.array([[1, 1], [0, 0], [1, 1], [0, 0], [-2, 1], [-2, 1]], np.float32)
    got = np.asarray(gk.kmeans_assign(x, c, block_size=7))
    d = ((x[:, None] - c[None]) ** 2).sum(-1)
    ref = np.array([int(np.flatnonzero(r == r.min())[0]) for r in d])
    np.testing.assert_array_equal(got, ref)


def test_chunked_run_equals_one_run():
    x = _blobs(seed=4)
    state = gk.kmeans_init(x, 6, KEY)
    whole = gk.kmeans_run(state, x, num_iters=20)
    s = state
    for _ in range(25):
        s = gk.kmeans_run(s, x, num_iters=20, max_steps=1)
    for a, b in zip(whole, s, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(whole.iteration) <= 20


def test_k_equals_n_and_k_one():
    x = _blobs(n=10)
    c, a = gk.kmeans(x, 10, KEY)
    assert sorted(np.asarray(a).tolist()) == list(range(10))
    c, a = gk.kmeans(x, 1, KEY)
    np.testing.assert_allclose(np.asarray(c)[0], x.astype(np.float64).mean(0), atol=1e-5)
    assert not np.asarray(a).any()


def test_bad_inputs_raise_clear_errors():
    x = _blobs(n=10)
    with pytest.raises(ValueError, match="n_clusters must be >= 1"):
        gk.kmeans(x, 0, KEY)
    with pytest.raises(ValueError, match="larger than the number of points"):
        gk.kmeans(x, 11, KEY)
    with pytest.raises(TypeError, match="n_clusters must be an int"):
        gk.kmeans(x, 2.0, KEY)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        gk.kmeans(bad, 2, KEY)
    with pytest.raises(TypeError, match="floating dtype"):
        gk.kmeans(x.astype(np.int32), 2, KEY)
    with pytest.raises(TypeError, match="key"):
        gk.kmeans(x, 2, 0)
    with pytest.raises(ValueError, match="metric"):
        gk.kmeans(x, 2, KEY, metric="cosine")
    with pytest.raises(ValueError, match="num_iters"):
        gk.kmeans(x, 2, KEY, num_iters=-1)
    with pytest.raises(ValueError, match="init must be one of"):
        gk.kmeans(x, 2, KEY, init="random")
    with pytest.raises(ValueError, match="init must be one of"):
        gk.kmeans_plusplus(x, 2, KEY, init="k-means++")
    with pytest.raises(ValueError, match="assignment"):
        gk.kmeans_medoids(x, x[:2], np.zeros(9, np.int32))
    with pytest.raises(ValueError, match="min_cluster_size"):
        gk.typical_points(x, x[:2], np.zeros(10, np.int32), min_cluster_size=0)


# --------------------------------------------------------------------------- representatives


def test_medoids_match_brute_force():
    x = _blobs(n=80, seed=5)
    c, a = gk.kmeans(x, 6, KEY)
    c, a = np.asarray(c), np.asarray(a)
    got = np.asarray(gk.kmeans_medoids(x, c, a))
    score = -((x.astype(np.float64) - c[a]) ** 2).sum(1)
    assert got.tolist() == round_robin_ref(a, score, 6, 6, 1)
    # The default is plain "nearest member of each cluster", the largest clusters first.
    nearest = {int(np.flatnonzero(a == j)[np.argmax(score[a == j])]) for j in range(6)}
    assert set(got.tolist()) == nearest


def test_round_robin_skips_small_and_empty_clusters():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 2)).astype(np.float32)
    a = np.array([0] * 12 + [1] * 2 + [3] * 16, np.int32)  # cluster 2 empty, 1 small
    c = np.stack([x[a == j].mean(0) if (a == j).any() else np.zeros(2) for j in range(4)])
    score = -((x.astype(np.float64) - c[a]) ** 2).sum(1)
    for picks, min_size in ((4, 1), (4, 5), (7, 5), (30, 5)):
        got = np.asarray(gk.kmeans_medoids(x, c, a, num_picks=picks, min_cluster_size=min_size))
        assert got.tolist() == round_robin_ref(a, score, 4, picks, min_size)
        assert len(set(got.tolist())) == picks


def test_typicality_and_typical_points_match_brute_force():
    x = _blobs(n=60, seed=6)
    c, a = gk.kmeans(x, 5, KEY)
    a = np.asarray(a)
    for m in (1, 4, 20):
        typ = np.asarray(gk.typicality(x, a, num_neighbors=m, block_size=16))
        # product-form distances: rounding of order eps * |x|^2 for close pairs
        np.testing.assert_allclose(typ, _reference.typicality(x, a, m), rtol=2e-3)
    got = np.asarray(gk.typical_points(x, c, a, num_neighbors=4, block_size=16))
    typ = np.asarray(gk.typicality(x, a, num_neighbors=4))
    assert got.tolist() == round_robin_ref(a, typ, 5, 5, 1)


def test_typicality_of_singletons_and_duplicates_is_inf():
    x = np.array([[0, 0], [0, 0], [5, 5], [9, 9]], np.float32)
    typ = np.asarray(gk.typicality(x, np.array([0, 0, 1, 2])))
    assert np.isinf(typ).all()


def test_assign_tie_between_non_adjacent_centroids_goes_to_the_lowest():
    # Centroids 2 and 4 tie for the nearest, 0 is farther: a halving that pairs j with j + k/2
    # carries 4 (it beats 0) against 2 and kept 4 on the tie.
    c = np.array([[5, 0], [9, 9], [1, 0], [9, 9], [1, 0], [9, 9], [9, 9], [9, 9]], np.float32)
    x = np.array([[1, 0], [1, 1], [5, 0], [9, 8]], np.float32)
    got = np.asarray(gk.kmeans_assign(x, c))
    np.testing.assert_array_equal(got, [2, 2, 0, 1])
