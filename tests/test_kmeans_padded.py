"""k-means on rows already padded and sharded by ``shard_rows`` (``n=``: the real row count), as
a store read per process gives them: every public k-means function equals the call on the
unpadded rows with the same mesh bit for bit, and the single-device call (seeds and assignments
equal; centroids bit-equal where the sums are exact, else within float32 rounding). Bad ``n``
is refused naming it. One item per case, on the 8 fake CPU devices of conftest."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from goldener_jax import kernels as gk

KEY = jax.random.key(5)


def _floats(n, d, seed=0):
    return np.random.default_rng(seed).normal(loc=1.0, size=(n, d)).astype(np.float32)


def _symmetric(n_half, d=3, seed=2):
    """Quarter-integer rows and their negations: every sum of them is exact in float32."""
    half = np.random.default_rng(seed).integers(-3, 4, size=(n_half, d)).astype(np.float32) / 4
    return np.concatenate([half, -half])


DATA = {
    "f32 n=37": lambda: _floats(37, 5),
    "f32 n=45 d=7": lambda: _floats(45, 7, seed=1),
    "bf16 n=45": lambda: jnp.asarray(_floats(45, 6, seed=2), jnp.bfloat16),
    "symmetric n=58": lambda: _symmetric(29),
    "f32 n=64": lambda: _floats(64, 4, seed=3),  # a multiple of 8: nothing padded
    "f32 n=9": lambda: _floats(9, 3, seed=4),
    "f32 n=1": lambda: _floats(1, 3, seed=5),
    "f32 n=13": lambda: _floats(13, 2, seed=6),
}
EXACT = {"symmetric n=58"}

CASES = [
    # (data, k, devices, init)
    ("f32 n=37", 6, 8, "kmeans++"),
    ("f32 n=45 d=7", 5, 3, "greedy"),
    ("bf16 n=45", 5, 8, "kmeans++"),
    ("symmetric n=58", 7, 8, "kmeans++"),
    ("f32 n=64", 12, 8, "kmeans++"),
    ("f32 n=9", 9, 8, "kmeans++"),  # k == n: every row its own cluster
    ("f32 n=1", 1, 8, "kmeans++"),  # one real row, seven padding rows
    ("f32 n=13", 1, 8, "kmeans++"),  # one cluster
]


def _np(a):
    return np.asarray(a)


def _setup(data, devices):
    x = DATA[data]()
    mesh = gk.make_mesh(jax.devices()[:devices])
    xs = gk.shard_rows(x, mesh)
    assert xs.shape[0] == gk.sharding.padded_rows(x.shape[0], mesh)
    return x, mesh, xs


def _close(got, want, data):
    if data in EXACT:
        np.testing.assert_array_equal(_np(got), _np(want))
    else:
        np.testing.assert_allclose(_np(got), _np(want), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("data", "k", "devices", "init"), CASES)
def test_kmeans_on_padded_rows_equals_unpadded(data, k, devices, init):
    x, mesh, xs = _setup(data, devices)
    n = x.shape[0]
    c_pad, a_pad = gk.kmeans(xs, k, KEY, num_iters=10, init=init, mesh=mesh, n=n)
    c_mesh, a_mesh = gk.kmeans(x, k, KEY, num_iters=10, init=init, mesh=mesh)
    c_one, a_one = gk.kmeans(x, k, KEY, num_iters=10, init=init)
    assert a_pad.shape == (n,) and c_pad.shape == (k, x.shape[1])
    np.testing.assert_array_equal(_np(c_pad), _np(c_mesh))
    np.testing.assert_array_equal(_np(a_pad), _np(a_mesh))
    np.testing.assert_array_equal(_np(a_pad), _np(a_one))
    _close(c_pad, c_one, data)
    assert _np(a_pad).min() >= 0 and _np(a_pad).max() < k


@pytest.mark.parametrize(("data", "k", "devices", "init"), CASES)
def test_seeds_and_init_on_padded_rows(data, k, devices, init):
    x, mesh, xs = _setup(data, devices)
    n = x.shape[0]
    seeds = _np(gk.kmeans_plusplus(xs, k, KEY, init=init, mesh=mesh, n=n))
    np.testing.assert_array_equal(seeds, _np(gk.kmeans_plusplus(x, k, KEY, init=init)))
    assert len(set(seeds.tolist())) == k and seeds.max() < n  # never a padding row
    state = gk.kmeans_init(xs, k, KEY, init=init, mesh=mesh, n=n)
    want = gk.kmeans_init(x, k, KEY, init=init)
    np.testing.assert_array_equal(_np(state.centroids), _np(want.centroids))
    np.testing.assert_array_equal(_np(state.assignment), np.full(n, -1))
    np.testing.assert_array_equal(
        _np(state.centroids), np.asarray(x[seeds], np.float32)
    )  # the seeds' rows, as the reference takes them


@pytest.mark.parametrize(("data", "k", "devices", "init"), CASES)
def test_run_chunked_and_assign_on_padded_rows(data, k, devices, init):
    """Seeded, one Lloyd iteration, then the rest, all on the padded rows: the unpadded mesh
    run bit for bit; ``kmeans_assign`` on the padded rows gives the run's assignment."""
    x, mesh, xs = _setup(data, devices)
    n = x.shape[0]
    state = gk.kmeans_init(xs, k, KEY, init=init, mesh=mesh, n=n)
    state = gk.kmeans_run(state, xs, num_iters=10, max_steps=1, mesh=mesh, n=n)
    assert state.assignment.shape == (n,) and int(state.iteration) == 1
    state = gk.kmeans_run(state, xs, num_iters=10, mesh=mesh, n=n)
    whole = gk.kmeans_run(
        gk.kmeans_init(x, k, KEY, init=init, mesh=mesh), x, num_iters=10, mesh=mesh
    )
    for got, want in zip(state, whole, strict=True):
        np.testing.assert_array_equal(_np(got), _np(want))
    one = gk.kmeans_run(gk.kmeans_init(x, k, KEY, init=init), x, num_iters=10)
    np.testing.assert_array_equal(_np(state.assignment), _np(one.assignment))
    _close(state.centroids, one.centroids, data)
    a = gk.kmeans_assign(xs, state.centroids, mesh=mesh, n=n)
    assert a.shape == (n,)
    np.testing.assert_array_equal(_np(a), _np(gk.kmeans_assign(x, state.centroids)))
    # a brute-force reference of the nearest centroid (float64; lowest index on ties)
    c = _np(state.centroids).astype(np.float64)
    xf = np.asarray(x, np.float64)
    dist = ((xf[:, None, :] - c[None]) ** 2).sum(-1)
    best = dist.min(axis=1, keepdims=True)
    near = dist <= best * (1 + 1e-4) + 1e-6  # the float32 argmin is one of the nearest
    assert near[np.arange(n), _np(a)].all()


def test_nonzero_padding_rows_are_ignored():
    """Padding rows of any (finite) value: never drawn, assigned or part of the mean row."""
    x = DATA["f32 n=37"]()
    mesh = gk.make_mesh()
    junk = gk.shard_rows(x, mesh, fill=1e3)
    c, a = gk.kmeans(junk, 6, KEY, num_iters=10, mesh=mesh, n=37)
    c0, a0 = gk.kmeans(x, 6, KEY, num_iters=10, mesh=mesh)  # compiled by the cases above
    np.testing.assert_array_equal(_np(a), _np(a0))
    np.testing.assert_array_equal(_np(c), _np(c0))


BAD_N = [
    # (n, rows of x, devices or None, error, message piece)
    (36, 37, 8, ValueError, "n=36"),  # neither the rows nor them padded (40)
    (30, 40, 8, ValueError, "n=30"),  # 30 pads to 32, not 40
    (41, 40, 8, ValueError, "n=41"),
    (0, 8, 8, ValueError, "n=0"),
    (-3, 8, 8, ValueError, "n=-3"),
    (37, 37, None, ValueError, "n=37"),  # n without a mesh
    (2.5, 40, 8, TypeError, "n must be an int"),
    (True, 40, 8, TypeError, "n must be an int"),
]


@pytest.mark.parametrize(("n", "rows", "devices", "error", "match"), BAD_N)
@pytest.mark.parametrize("fn", ["kmeans", "kmeans_plusplus", "kmeans_init", "run", "assign"])
def test_bad_n_is_refused(n, rows, devices, error, match, fn):
    x = _floats(rows, 3)
    mesh = None if devices is None else gk.make_mesh(jax.devices()[:devices])
    c = jnp.asarray(x[:2])
    calls = {
        "kmeans": lambda: gk.kmeans(x, 2, KEY, mesh=mesh, n=n),
        "kmeans_plusplus": lambda: gk.kmeans_plusplus(x, 2, KEY, mesh=mesh, n=n),
        "kmeans_init": lambda: gk.kmeans_init(x, 2, KEY, mesh=mesh, n=n),
        "run": lambda: gk.kmeans_run(gk.kmeans_init(x, 2, KEY), x, mesh=mesh, n=n),
        "assign": lambda: gk.kmeans_assign(x, c, mesh=mesh, n=n),
    }
    with pytest.raises(error, match=match):
        calls[fn]()


def test_run_refuses_a_state_for_other_rows():
    x = _floats(37, 3)
    mesh = gk.make_mesh()
    xs = gk.shard_rows(x, mesh)
    state = gk.kmeans_init(x[:33], 2, KEY)
    with pytest.raises(ValueError, match="33 points"):
        gk.kmeans_run(state, xs, mesh=mesh, n=37)


def test_n_clusters_above_the_real_rows_is_refused():
    """k is checked against the n real rows, not the padded ones."""
    x = _floats(37, 3)
    mesh = gk.make_mesh()
    with pytest.raises(ValueError, match="n_clusters=38"):
        gk.kmeans(gk.shard_rows(x, mesh), 38, KEY, mesh=mesh, n=37)


# ------------------------------------------- split(method="auto") on rows read per process
# The multi-process split (tests/test_multiprocess.py) equals the single-process one because
# its row-wise steps give each row the same bits whatever piece of rows it is computed in.

PIECES = [(0, 1), (0, 5), (3, 40), (40, 41), (100, 333), (0, 333)]


@pytest.mark.parametrize("dim", [3, 24, 300, 1000])
def test_cosine_scaling_of_a_row_does_not_depend_on_the_piece(dim):
    from goldener_jax.pipeline.representative import _unit_rows

    v = (np.random.default_rng(dim).standard_normal((333, dim)) * 3 + 1).astype(np.float32)
    v[7] = 0  # a zero row stays zero
    whole = _unit_rows(v)
    assert whole.dtype == np.float32 and not whole[7].any()
    norms = np.linalg.norm(whole.astype(np.float64), axis=1)
    np.testing.assert_allclose(np.delete(norms, 7), 1.0, rtol=1e-6)
    for a, b in PIECES:
        np.testing.assert_array_equal(_unit_rows(v[a:b]), whole[a:b])


@pytest.mark.parametrize(("rows", "dim", "piece_rows"), [(333, 300, 64), (130, 520, 130)])
def test_projection_in_fixed_pieces_is_the_same_in_any_order(monkeypatch, rows, dim, piece_rows):
    """The difficulty's projection: pieces of a fixed shape (the last one padded), made in any
    order or place, give the same rows; one piece is the plain product."""
    from goldener_jax.pipeline import representative as rep

    monkeypatch.setattr(rep, "_PIECE_BYTES", piece_rows * dim * 4)
    rng = np.random.default_rng(0)
    v = rng.standard_normal((rows, dim)).astype(np.float32)
    proj = rng.standard_normal((dim, 256)) / 16.0

    def read(a, b):
        return v[a:b]

    def backwards(count, make, dtype, tail):  # as on several processes: another order
        return [make(j) for j in reversed(range(count))][::-1]

    here = rep._projected(read, rows, proj, rep._spread_here)
    assert here.shape == (rows, 256) and here.dtype == np.float32
    np.testing.assert_array_equal(rep._projected(read, rows, proj, backwards), here)
    want = np.asarray(v, np.float64) @ proj
    np.testing.assert_allclose(here, want, rtol=1e-4, atol=1e-4)
    if piece_rows >= rows:
        hi = jax.lax.Precision.HIGHEST
        whole = jnp.matmul(jnp.asarray(v), jnp.asarray(proj, jnp.float32), precision=hi)
        np.testing.assert_array_equal(here, np.asarray(whole))


WIDE_BLOCKS = [(100, 64, 512), (100, 8192, 128), (100, 16384, 64), (16, 131072, 8),
               (500, 131072, 8), (1000, 64, 128)]  # fmt: skip


@pytest.mark.parametrize(("k", "d", "want"), WIDE_BLOCKS)
def test_assignment_blocks_shrink_for_wide_rows(k, d, want):
    # A block of rows gathered by the bounded pass is a copy: at most ROW_BLOCK_BUDGET values
    # (4 MB) once rows are wider than 8,192 (512 rows of 131,072 held 268 MB per device).
    from goldener_jax.kernels.kmeans_lloyd import assign_block_rows

    assert assign_block_rows(k, 100_000, None, d) == want
    assert assign_block_rows(k, 100_000, 300, d) == 300  # an explicit block_size is kept


def test_wide_rows_cluster_like_a_brute_force_assignment():
    # 40 rows of 16,384 values (blocks of 64 rows: the width cap), three well separated groups.
    rng = np.random.default_rng(5)
    centres = rng.integers(-3, 4, (3, 16384)).astype(np.float32) * 4
    x = centres[rng.integers(0, 3, 40)] + rng.integers(-1, 2, (40, 16384)).astype(np.float32)
    c, a = gk.kmeans(x, 3, jax.random.key(0), num_iters=10)
    d2 = ((x[:, None, :].astype(np.float64) - np.asarray(c, np.float64)[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(np.asarray(a), d2.argmin(1))
    assert len(set(np.asarray(a).tolist())) == 3


# --------------------------------------------------------------------------- kmeans_compile


class _CompileLog:
    """Names of the programs JAX compiles while it is in use (``jax.log_compiles``)."""

    def __init__(self):
        import logging

        self.names: list[str] = []
        outer = self

        class Handler(logging.Handler):
            def emit(self, record):
                msg = record.getMessage()
                if msg.startswith("Compiling "):
                    outer.names.append(msg.split(" ")[1])

        self.handler = Handler()
        self.logger = logging.getLogger("jax")

    def __enter__(self):
        self.logger.addHandler(self.handler)
        self.ctx = jax.log_compiles(True)
        self.ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self.ctx.__exit__(*exc)
        self.logger.removeHandler(self.handler)


COMPILE_CASES = [
    # (n, d, k, devices or None, init)
    (50, 6, 4, None, "kmeans++"),
    (37, 5, 3, 8, "kmeans++"),  # padded to 40
    (48, 3, 5, 3, "greedy"),  # a multiple of 3: nothing padded
    (29, 4, 2, 3, "greedy"),
]


@pytest.mark.parametrize(("n", "d", "k", "devices", "init"), COMPILE_CASES)
def test_kmeans_compile_then_kmeans_compiles_nothing_more(n, d, k, devices, init):
    # Shapes no other test uses (d + 90), so nothing is in JAX's caches before.
    d = d + 90
    x = _floats(n, d, seed=n)
    mesh = None if devices is None else gk.make_mesh(jax.devices()[:devices])
    xs = jnp.asarray(x) if mesh is None else gk.shard_rows(x, mesh)
    rows = None if mesh is None else n
    like = jax.ShapeDtypeStruct(xs.shape, xs.dtype, sharding=None if mesh is None else xs.sharding)
    gk.kmeans_compile(like, k, KEY, init=init, mesh=mesh, n=rows)
    with _CompileLog() as log:
        got = gk.kmeans(xs, k, KEY, num_iters=6, init=init, mesh=mesh, n=rows)
        jax.block_until_ready(got)
    # Only small helper programs (finiteness check, padding) may compile; k-means' own three
    # (seeding, Lloyd, assignment) were compiled ahead.
    assert not [s for s in log.names if any(p in s for p in ("_seed", "_lloyd", "_final_assign"))]
    want = gk.kmeans(x, k, KEY, num_iters=6, init=init, mesh=mesh)  # after: nothing warmed
    np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(want[1]))
    np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(want[0]))


def test_compile_log_sees_kmeans_programs():
    # The check above can fail: without kmeans_compile the same call logs the three programs.
    x = _floats(31, 97, seed=9)
    with _CompileLog() as log:
        jax.block_until_ready(gk.kmeans(x, 3, KEY, num_iters=2))
    for program in ("_seed", "_lloyd", "_final_assign"):
        assert any(program in s for s in log.names), (program, log.names)


@pytest.mark.parametrize(
    ("x", "kwargs", "match"),
    [
        (jax.ShapeDtypeStruct((10,), jnp.float32), {}, "x must be"),
        (jax.ShapeDtypeStruct((10, 3), jnp.int32), {}, "x must be"),
        (jax.ShapeDtypeStruct((10, 3), jnp.float32), {"n": 4}, "n=4"),
        (jax.ShapeDtypeStruct((10, 3), jnp.float32), {"init": "kmeans|"}, "init must be"),
    ],
)
def test_kmeans_compile_refuses_bad_arguments(x, kwargs, match):
    with pytest.raises(ValueError, match=match):
        gk.kmeans_compile(x, 2, KEY, **kwargs)


# ------------------------------------------- pickers and selectors built on k-means, padded rows

PICKER_CASES = [
    # (selector, metric, data, k, devices, anchors)
    ("kmeans_medoids", "euclidean", "f32 n=37", 5, 8, False),
    ("kmeans_medoids", "cosine", "f32 n=45 d=7", 4, 4, True),
    ("typiclust", "euclidean", "symmetric n=58", 6, 8, True),
    ("typiclust", "cosine", "f32 n=37", 5, 3, False),
    ("typiclust", "euclidean", "f32 n=13", 2, 8, False),
]


@pytest.mark.parametrize("case", PICKER_CASES, ids=lambda c: "-".join(map(str, c)))
def test_clustering_selectors_on_padded_rows_equal_unpadded(case):
    """``kmeans_medoids`` / ``typiclust`` selectors take ``n=`` (as ``select`` hands each process
    its own rows of a store): the picks of padded rows (filled with 1e3, never a pick or a
    neighbour), run in two chunks, equal the unpadded call on the same mesh, and the medoid
    and typical-point kernels called with ``n=`` equal their unpadded calls."""
    name, metric, data, k, devices, with_anchors = case
    x = DATA[data]()
    mesh = gk.make_mesh(jax.devices()[:devices])
    junk = gk.shard_rows(x, mesh, fill=1e3)
    assert junk.shape[0] > x.shape[0]
    n = x.shape[0]
    anchors = x[:2] + np.float32(0.25) if with_anchors else None
    make = getattr(gk.selectors, name)
    sel = make(metric=metric, num_iters=20, min_cluster_size=1, mesh=mesh)
    want = sel.picks(sel.run(sel.init(x, k, key=KEY, anchors=anchors), x))
    state = sel.init(junk, k, key=KEY, anchors=anchors, n=n)
    state = sel.run(sel.run(state, junk, 2), junk)
    got = sel.picks(state)
    np.testing.assert_array_equal(got, want)
    assert got.max() < n and len(set(got.tolist())) == k

    rows = x if metric == "euclidean" else x / np.linalg.norm(x, axis=1, keepdims=True)
    padded = gk.shard_rows(rows, mesh, fill=1e3)
    c, a = gk.kmeans(rows, k, KEY, num_iters=20, mesh=mesh)
    picker = gk.kmeans_medoids if name == "kmeans_medoids" else gk.typical_points
    kw = {} if name == "kmeans_medoids" else {"num_neighbors": 4}
    np.testing.assert_array_equal(
        _np(picker(padded, c, a, mesh=mesh, n=n, **kw)), _np(picker(rows, c, a, mesh=mesh, **kw))
    )
    if name == "typiclust":
        np.testing.assert_array_equal(
            _np(gk.typicality(padded, a, num_neighbors=4, mesh=mesh, n=n)),
            _np(gk.typicality(rows, a, num_neighbors=4, mesh=mesh)),
        )
    with pytest.raises(ValueError, match="assignment must be int"):
        picker(padded, c, a[:-1], mesh=mesh, n=n, **kw)
