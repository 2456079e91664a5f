"""Kernel herding, k-means (seeds, Lloyd, assignment, medoids, TypiClust) and exact kNN on a mesh
of fake CPU devices (tests/conftest.py gives every test process 8) equal the single-device
kernels: the same indices, bit for bit where the global sums are exact (integer and
quarter-integer data symmetric about 0) and up to float32 rounding of the sums elsewhere.

Each case is one item. The single-device result is the reference for the mesh; the
single-device kernels are checked against NumPy brute force in test_herding / test_kmeans /
test_knn, and the tie rule (lowest global index) is checked here directly on duplicates placed
on different devices.
"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from goldener_jax import kernels as gk

KEY = jax.random.key(11)


def _mesh(devices: int):
    return gk.make_mesh(jax.devices()[:devices])


def _ints(n, d, seed=0, lo=-3, hi=3):
    return np.random.default_rng(seed).integers(lo, hi + 1, size=(n, d)).astype(np.float32)


def _floats(n, d, seed=0, loc=1.0):
    return np.random.default_rng(seed).normal(loc=loc, size=(n, d)).astype(np.float32)


def _bf16(n, d, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(n, d)), jnp.bfloat16)


def _duplicates():
    """36 rows (5 per device on 8 devices): copy j of point i sits at row 6 j + i, so the copies
    of a point lie on different devices. Quarter-integers, each row with its negation: column
    sums are exact in any order."""
    half = _ints(3, 3, seed=1) / 4.0
    return np.concatenate([np.concatenate([half, -half])] * 6)


def _copies():
    """Like ``_duplicates`` but six random points (no mirror images or lattice points, whose RBF
    scores can tie exactly and then split by rounding): 36 rows, copy j of point i at 6 j + i."""
    return np.concatenate([_floats(6, 3, seed=8)] * 6)


def _symmetric(n_half=29, seed=2):
    """Quarter-integer rows and their negations: every sum of them is exact in float32."""
    half = _ints(n_half, 3, seed=seed) / 4.0
    return np.concatenate([half, -half])


DATA = {
    "f32 n=37": lambda: _floats(37, 5),
    "f32 n=64": lambda: _floats(64, 5, seed=3, loc=0.0),
    "bf16 n=45": lambda: _bf16(45, 6),
    "duplicates n=36": _duplicates,
    "copies n=36": _copies,
    "symmetric n=58": _symmetric,
    "f32 n=2003": lambda: _floats(2003, 8, seed=4),
}
EXACT = {"duplicates n=36", "symmetric n=58"}


def _np(a):
    return np.asarray(a)


def _first_copies_first(x, picks):
    """Ties go to the lowest index: a copy of a row is never picked before a lower copy."""
    x = np.asarray(x, np.float32)
    seen = []
    for i in np.asarray(picks).tolist():
        lower = np.flatnonzero((x[:i] == x[i]).all(axis=1))
        assert all(j in seen for j in lower), (i, lower.tolist(), seen)
        seen.append(i)


# --------------------------------------------------------------------------- kernel herding

HERDING = [
    # (data, k, kernel, block_size, devices)
    ("f32 n=37", 20, "linear", None, 8),
    ("f32 n=37", 20, "rbf", None, 8),
    ("f32 n=64", 30, "rbf", 4, 8),
    ("bf16 n=45", 20, "linear", None, 8),
    ("bf16 n=45", 20, "rbf", None, 8),
    ("duplicates n=36", 30, "linear", None, 8),
    ("copies n=36", 36, "rbf", None, 8),
    ("f32 n=2003", 25, "linear", None, 8),
    ("f32 n=2003", 25, "rbf", 256, 8),
    ("f32 n=37", 37, "rbf", 8, 3),
    ("f32 n=37", 0, "rbf", None, 8),
    ("f32 n=37", 9, "linear", None, 1),
]


@pytest.mark.parametrize(("data", "k", "kernel", "block", "devices"), HERDING)
def test_herding_on_a_mesh_equals_one_device(data, k, kernel, block, devices):
    x = DATA[data]()
    kw = dict(kernel=kernel, length_scale=1.5, block_size=block)
    want = _np(gk.kernel_herding(x, k, **kw))
    got = _np(gk.kernel_herding(x, k, mesh=_mesh(devices), **kw))
    assert got.dtype == np.int32 and got.shape == (k,)
    np.testing.assert_array_equal(got, want)
    assert len(set(got.tolist())) == k
    if data in ("duplicates n=36", "copies n=36"):
        _first_copies_first(x, got)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_herding_init_on_a_mesh_keeps_unpadded_state(kernel):
    """State vectors of length n (not padded), equal kernel means within rounding, bit-equal
    kernel means for equal rows on different devices."""
    x = _copies()[:35]  # 35 rows on 8 devices: the last device holds padding
    one = gk.herding_init(x, 10, kernel=kernel, length_scale=1.5)
    many = gk.herding_init(x, 10, kernel=kernel, length_scale=1.5, mesh=_mesh(8))
    for a, b in zip(one, many, strict=True):
        assert np.shape(a) == np.shape(b)
    np.testing.assert_allclose(_np(many.mean_kernel), _np(one.mean_kernel), rtol=1e-6)
    assert not _np(many.taken).any() and int(many.count) == 0
    mk = _np(many.mean_kernel)
    for i in range(6):
        assert len(set(mk[i::6].tolist())) == 1  # the copies of row i


@pytest.mark.parametrize(
    ("data", "kernel", "start_devices", "finish_devices"),
    [
        ("f32 n=37", "rbf", 8, None),
        ("bf16 n=45", "linear", 8, None),
        ("copies n=36", "rbf", None, 8),
        ("f32 n=64", "linear", 8, 3),
    ],
)
def test_herding_chunked_and_moved_between_device_counts(
    data, kernel, start_devices, finish_devices
):
    """Chunks of 1, 0 and 2 steps on one device count, then (as after a checkpoint: host
    arrays) the rest on another: the same picks as one uninterrupted single-device run."""
    x = DATA[data]()
    k = 15
    kw = dict(kernel=kernel, length_scale=1.5)
    want = _np(gk.kernel_herding(x, k, **kw))
    start = None if start_devices is None else _mesh(start_devices)
    finish = None if finish_devices is None else _mesh(finish_devices)
    state = gk.herding_init(x, k, mesh=start, **kw)
    for chunk in (1, 0, 2):
        state = gk.herding_run(state, x, max_steps=chunk, mesh=start, **kw)
    state = gk.herding_step(state, x, mesh=start, **kw)
    assert int(state.count) == 4
    state = gk.HerdingState(*(np.asarray(a) for a in state))  # a restored checkpoint
    state = gk.herding_run(state, x, mesh=finish, **kw)
    np.testing.assert_array_equal(_np(state.selected), want)
    assert state.taken.shape == (x.shape[0],) and int(_np(state.taken).sum()) == k


# --------------------------------------------------------------------------- k-means

KMEANS = [
    # (data, k, devices)
    ("f32 n=37", 6, 8),
    ("f32 n=64", 12, 8),
    ("bf16 n=45", 5, 8),
    ("duplicates n=36", 4, 8),
    ("symmetric n=58", 7, 8),
    ("symmetric n=58", 7, 3),
    ("f32 n=2003", 20, 8),
    ("f32 n=37", 3, 1),
]


@pytest.mark.parametrize(("data", "k", "devices"), KMEANS)
def test_kmeans_on_a_mesh_equals_one_device(data, k, devices):
    """Seeds and assignments equal; centroids bit-equal where the sums are exact, else within
    float32 rounding (the per-cluster sums add in another order)."""
    x = DATA[data]()
    mesh = _mesh(devices)
    np.testing.assert_array_equal(
        _np(gk.kmeans_plusplus(x, k, KEY, mesh=mesh)), _np(gk.kmeans_plusplus(x, k, KEY))
    )
    c1, a1 = gk.kmeans(x, k, KEY, num_iters=10)
    c8, a8 = gk.kmeans(x, k, KEY, num_iters=10, mesh=mesh)
    np.testing.assert_array_equal(_np(a8), _np(a1))
    if data in EXACT:
        np.testing.assert_array_equal(_np(c8), _np(c1))
    else:
        np.testing.assert_allclose(_np(c8), _np(c1), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(_np(gk.kmeans_assign(x, c1, mesh=mesh)), _np(a1))


@pytest.mark.parametrize("data", ["symmetric n=58", "duplicates n=36"])
def test_kmeans_seeds_spread_duplicates_to_the_lowest_copy(data):
    """With every distinct row seeded, the rest are zero-distance duplicates: drawn as the first
    copy not taken, on a mesh as on one device."""
    x = DATA[data]()
    distinct = len(np.unique(np.asarray(x), axis=0))
    k = min(distinct + 3, x.shape[0])
    want = _np(gk.kmeans_plusplus(x, k, KEY))
    got = _np(gk.kmeans_plusplus(x, k, KEY, mesh=_mesh(8)))
    np.testing.assert_array_equal(got, want)
    assert len(set(got.tolist())) == k


@pytest.mark.parametrize(("data", "finish_devices"), [("symmetric n=58", None), ("f32 n=37", 3)])
def test_kmeans_chunked_and_moved_between_device_counts(data, finish_devices):
    """Seeded and one Lloyd iteration (then a 0-step chunk) on 8 devices, the rest (after a
    host round trip, as from a checkpoint) on one device or 3: the same clusters as one
    single-device run, bit for bit where the sums are exact."""
    x = DATA[data]()
    mesh = _mesh(8)
    finish = None if finish_devices is None else _mesh(finish_devices)
    whole = gk.kmeans_run(gk.kmeans_init(x, 6, KEY), x, num_iters=20)
    state = gk.kmeans_init(x, 6, KEY, mesh=mesh)
    state = gk.kmeans_run(state, x, num_iters=20, max_steps=1, mesh=mesh)
    state = gk.kmeans_run(state, x, num_iters=20, max_steps=0, mesh=mesh)
    assert int(state.iteration) == 1 and state.assignment.shape == (x.shape[0],)
    state = gk.KMeansState(*(np.asarray(a) for a in state))
    state = gk.kmeans_run(state, x, num_iters=20, mesh=finish)
    np.testing.assert_array_equal(_np(state.assignment), _np(whole.assignment))
    assert int(state.iteration) == int(whole.iteration)
    if data in EXACT:
        np.testing.assert_array_equal(_np(state.centroids), _np(whole.centroids))
    else:
        np.testing.assert_allclose(_np(state.centroids), _np(whole.centroids), rtol=1e-5)


# --------------------------------------------------------------------------- medoids, TypiClust

PICKERS = [
    # (data, k, num_picks, min_cluster_size, devices)
    ("f32 n=37", 6, None, 1, 8),
    ("f32 n=64", 12, 15, 2, 8),
    ("bf16 n=45", 5, 8, 1, 8),
    ("duplicates n=36", 4, 7, 1, 8),
    ("symmetric n=58", 7, 10, 5, 3),
    ("f32 n=2003", 20, 30, 1, 8),
]


def _clusters(x, k):
    c, a = gk.kmeans(x, k, KEY, num_iters=10)
    return np.asarray(c), np.asarray(a)


@pytest.mark.parametrize(("data", "k", "picks", "min_size", "devices"), PICKERS)
def test_kmeans_medoids_on_a_mesh_equal_one_device(data, k, picks, min_size, devices):
    x = DATA[data]()
    c, a = _clusters(x, k)
    kw = dict(num_picks=picks, min_cluster_size=min_size)
    want = _np(gk.kmeans_medoids(x, c, a, **kw))
    got = _np(gk.kmeans_medoids(x, c, a, mesh=_mesh(devices), **kw))
    np.testing.assert_array_equal(got, want)
    if data == "duplicates n=36":
        _first_copies_first(x, got)


@pytest.mark.parametrize(("data", "k", "picks", "min_size", "devices"), PICKERS)
def test_typicality_and_typical_points_on_a_mesh_equal_one_device(
    data, k, picks, min_size, devices
):
    x = DATA[data]()
    c, a = _clusters(x, k)
    mesh = _mesh(devices)
    block = None if x.shape[0] > 100 else 3
    t1 = _np(gk.typicality(x, a, num_neighbors=5, block_size=block))
    t8 = _np(gk.typicality(x, a, num_neighbors=5, block_size=block, mesh=mesh))
    np.testing.assert_array_equal(np.isinf(t8), np.isinf(t1))
    if data in EXACT:
        np.testing.assert_array_equal(t8, t1)
    else:
        np.testing.assert_allclose(t8, t1, rtol=1e-5, atol=0)
    kw = dict(num_neighbors=5, num_picks=picks, min_cluster_size=min_size, block_size=block)
    want = _np(gk.typical_points(x, c, a, **kw))
    np.testing.assert_array_equal(_np(gk.typical_points(x, c, a, mesh=mesh, **kw)), want)


def test_typicality_on_a_mesh_matches_brute_force_with_overlapping_blocks():
    """Blocks of 4 over 5 rows per device: the last block overlaps the previous one, whose rows
    must not merge the same neighbours twice. Integer data: exact distances."""
    x = _ints(40, 2, seed=6)
    a = (np.arange(40) % 3).astype(np.int32)
    got = _np(gk.typicality(x, a, num_neighbors=4, block_size=4, mesh=_mesh(8)))
    d = np.sqrt(((x[:, None].astype(np.float64) - x[None]) ** 2).sum(-1))
    want = np.empty(40)
    for i in range(40):
        others = np.flatnonzero((a == a[i]) & (np.arange(40) != i))
        mean = np.sort(d[i, others])[:4].mean()
        want[i] = np.inf if mean == 0 else 1.0 / mean
    np.testing.assert_allclose(got, want, rtol=1e-6)


# --------------------------------------------------------------------------- exact kNN

KNN = [
    # (data, k, kwargs, devices)
    ("ints n=37", 9, dict(metric="euclidean"), 8),
    ("ints n=37", 9, dict(metric="euclidean", exclude_self=False), 8),
    ("ints n=37", 9, dict(metric="sqeuclidean"), 8),
    ("ints n=37", 9, dict(metric="sqeuclidean", exclude_self=False), 8),
    ("ints n=37", 9, dict(metric="cosine"), 8),
    ("ints n=37", 9, dict(metric="cosine", exclude_self=False), 8),
    ("ints n=37", 9, dict(metric="cosine", queries="ints"), 8),
    ("ints n=37", 9, dict(metric="euclidean", queries="ints"), 3),
    ("duplicates n=36", 8, dict(block_size=4), 8),
    ("duplicates n=36", 35, dict(metric="cosine"), 8),
    ("duplicates n=36", 36, dict(exclude_self=False, block_size=2), 3),
    ("f32 n=64", 6, dict(), 8),
    ("f32 n=2003", 10, dict(block_size=256), 8),
    ("ints n=37", 4, dict(), 1),
]


@pytest.mark.parametrize(("data", "k", "kwargs", "devices"), KNN)
def test_knn_on_a_mesh_equals_one_device(data, k, kwargs, devices):
    """Integer data: every distance exact, so distances and indices (ties to the lowest index)
    bit-equal; float data: a product of another shape can round a distance's last bit."""
    x = _ints(37, 3, seed=5) if data == "ints n=37" else DATA[data]()
    kw = dict(kwargs)
    if kw.get("queries") == "ints":
        kw["queries"] = _ints(11, 3, seed=9)
    d1, i1 = (_np(a) for a in gk.knn(x, k, **kw))
    d8, i8 = (_np(a) for a in gk.knn(x, k, mesh=_mesh(devices), **kw))
    np.testing.assert_array_equal(i8, i1)
    if data.startswith("f32"):
        np.testing.assert_allclose(d8, d1, rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_array_equal(d8, d1)
    if data == "duplicates n=36" and kw.get("metric", "euclidean") == "euclidean":
        # the copies of a row (distance 0) come first, lowest index first
        for r in range(x.shape[0]):
            copies = [
                j for j in range(r % 6, 36, 6) if kw.get("exclude_self", True) is False or j != r
            ]
            np.testing.assert_array_equal(i8[r, : len(copies)], copies[:k])


def test_chunked_runs_on_a_mesh_compile_once():
    """``max_steps`` is traced: chunks of any length reuse one compiled mesh program."""
    herding = importlib.import_module("goldener_jax.kernels.herding")
    kmeans = importlib.import_module("goldener_jax.kernels.kmeans")  # not the function

    x = _floats(45, 4, seed=12)
    mesh = _mesh(8)
    state = gk.herding_init(x, 12, kernel="linear", mesh=mesh)
    before = herding._run._cache_size()
    for chunk in (1, 3, 0, 2):
        state = gk.herding_run(state, x, kernel="linear", max_steps=chunk, mesh=mesh)
    assert herding._run._cache_size() == before + 1
    km = gk.kmeans_init(x, 5, KEY, mesh=mesh)
    before = kmeans._run._cache_size()
    for chunk in (1, 2, 0):
        km = gk.kmeans_run(km, x, max_steps=chunk, mesh=mesh)
    assert kmeans._run._cache_size() == before + 1
