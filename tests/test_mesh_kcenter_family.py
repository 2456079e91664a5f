"""The k-center family with ``mesh=``: one body runs on one device and on a mesh.

Greedy k-center, farthest / closest point, typical k-center and ProbCover on 8 devices (and on 3)
return the single-device indices, which equal a NumPy brute force where that is cheap. Sizes are
not multiples of the mesh (padding rows), duplicates sit on different shards (ties to the lowest
*global* index), and integer data makes every distance exact, so equality is bit for bit.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _reference import assert_valid_k_center, distances, greedy_point, k_center
from goldener_jax.kernels import greedy as greedy_module
from goldener_jax.kernels import kcenter as kcenter_module
from goldener_jax.kernels import sharding
from hypothesis import given, settings
from hypothesis import strategies as st

from goldener_jax import kernels as gk

METRICS = ("euclidean", "sqeuclidean", "cosine")
MODES = ("farthest", "closest")
# Data also checked on a mesh of 3 devices (each mesh size compiles its own programs).
MESH3_DATA = ("int37x5", "dup36x3")


@functools.cache
def mesh8():
    return gk.make_mesh()


@functools.cache
def mesh3():
    return gk.make_mesh(jax.devices()[:3])


def _symmetric(half: np.ndarray) -> np.ndarray:
    rows = np.concatenate([half, np.zeros((1, half.shape[1])), -half])
    return rows[np.random.default_rng(0).permutation(len(rows))].astype(np.float32)


@functools.cache
def data(name: str) -> np.ndarray:
    """Float32 test data by name (cached: the same arrays for every case)."""
    if name == "float2003x16":  # not a multiple of 8 nor of 3: padding rows on both meshes
        return np.random.default_rng(1).normal(loc=2.0, size=(2003, 16)).astype(np.float32)
    if name == "float203x6":
        return np.random.default_rng(2).normal(loc=1.0, size=(203, 6)).astype(np.float32)
    # Integer rows, each with its negation, and a zero row: the mean row is exactly 0, so every
    # float32 distance is exact (with another mean, |x - mean|^2 rounds, and equal distances of
    # different points on the grid would tie only up to rounding).
    if name == "int37x5":
        return _symmetric(np.random.default_rng(3).integers(-3, 4, size=(18, 5)))
    if name == "int45x2":  # few distinct distances: many exact ties
        return _symmetric(np.random.default_rng(4).integers(-2, 3, size=(22, 2)))
    if name == "dup36x3":
        # 6 points, each 6 times: copy j of point i is row 6 j + i, so on 8 devices of 5 rows the
        # copies of a point sit on different devices. Quarter-integers, each row with its
        # negation: the column sums (the mean row) are exact in any order of summation.
        half = np.random.default_rng(5).integers(-3, 4, size=(3, 3)).astype(np.float32) / 4.0
        return np.concatenate([np.concatenate([half, -half])] * 6)
    raise KeyError(name)


def anchors_for(name: str) -> np.ndarray:
    x = data(name)
    if name == "dup36x3":
        return x[:2] + 0.25
    return x[:3] + 0.5  # off the grid by halves: distances stay exact on integer data


def _as(x, dtype):
    return jnp.asarray(x, jnp.bfloat16) if dtype == "bf16" else x


def _list(a):
    return np.asarray(a).tolist()


# --------------------------------------------------------------------------- greedy k-center

# (data, k, metric, anchored, dtype, reference): "exact" = NumPy brute force, bit for bit;
# "valid" = a greedy sequence up to float rounding (cosine of integers is not exact); None = too
# large for a full distance matrix, mesh vs one device only.
KCENTER_CASES = [
    *[("float2003x16", 12, m, False, "f32", None) for m in METRICS],
    *[("float2003x16", 12, m, True, "f32", None) for m in ("euclidean", "cosine")],
    *[("int37x5", 20, "euclidean", a, "f32", "exact") for a in (False, True)],
    ("int37x5", 20, "sqeuclidean", True, "f32", "exact"),
    *[("int37x5", 20, "cosine", a, "f32", "valid") for a in (False, True)],
    *[("int37x5", 20, m, a, "bf16", "exact") for m in ("euclidean",) for a in (False, True)],
    ("int37x5", 20, "cosine", False, "bf16", "valid"),
    ("float203x6", 25, "euclidean", True, "f32", "valid"),
    ("float203x6", 25, "cosine", False, "f32", "valid"),
    ("float203x6", 25, "euclidean", True, "bf16", None),
    ("float203x6", 25, "cosine", False, "bf16", None),
    *[("dup36x3", 30, "euclidean", a, "f32", "exact") for a in (False, True)],
    ("dup36x3", 30, "sqeuclidean", False, "f32", "exact"),
    ("dup36x3", 30, "cosine", False, "f32", None),
    ("int45x2", 30, "euclidean", False, "f32", "exact"),
    ("int45x2", 30, "cosine", True, "f32", None),
    ("int37x5", 0, "euclidean", False, "f32", "exact"),
    ("int37x5", 0, "euclidean", True, "f32", "exact"),
    ("int37x5", 1, "cosine", False, "f32", "valid"),
    ("int37x5", 37, "euclidean", False, "f32", "exact"),
]


def _case_id(case):
    name, k, metric, anchored, dtype, _ = case
    return f"{name}-k{k}-{metric}-{dtype}" + ("-anchors" if anchored else "")


@pytest.mark.parametrize("case", KCENTER_CASES, ids=_case_id)
def test_greedy_k_center_on_a_mesh_equals_one_device(case):
    name, k, metric, anchored, dtype, reference = case
    x = _as(data(name), dtype)
    anchors = anchors_for(name) if anchored else None
    want = _list(gk.greedy_k_center(x, k, metric=metric, anchors=anchors))
    assert len(want) == k == len(set(want))
    got = gk.greedy_k_center(x, k, metric=metric, anchors=anchors, mesh=mesh8())
    assert _list(got) == want
    if name in MESH3_DATA:
        got3 = gk.greedy_k_center(x, k, metric=metric, anchors=anchors, mesh=mesh3())
        assert _list(got3) == want
    x64 = np.asarray(jnp.asarray(x, jnp.float32))
    if reference == "exact":
        assert want == k_center(x64, k, metric, anchors)
    elif reference == "valid":
        assert_valid_k_center(x64, want, metric, anchors)


@pytest.mark.parametrize("metric", METRICS)
def test_kcenter_chunked_across_device_counts_equals_one_run(metric):
    """init on 8 devices, steps on 8 / 3 / 1 devices, finished on 8: one run's indices, and the
    state keeps ``n`` rows whatever the mesh."""
    x = data("dup36x3") if metric != "cosine" else data("int37x5")
    k = 25
    want = _list(gk.greedy_k_center(x, k, metric=metric))
    state = gk.kcenter_init(x, k, metric=metric, mesh=mesh8())
    assert state.min_dist.shape == (x.shape[0],)
    for steps, mesh in ((1, mesh8()), (0, mesh3()), (2, None), (3, mesh3())):
        state = gk.kcenter_run(state, x, metric=metric, max_steps=steps, mesh=mesh)
        assert state.min_dist.shape == (x.shape[0],)
    state = gk.kcenter_step(state, x, metric=metric, mesh=mesh8())
    assert int(state.count) == 8
    single = gk.kcenter_run(state, x, metric=metric)
    state = gk.kcenter_run(state, x, metric=metric, mesh=mesh8())
    assert _list(state.selected) == want == _list(single.selected)
    np.testing.assert_array_equal(state.min_dist, single.min_dist)


def test_kcenter_state_equals_one_device_bit_for_bit():
    x, anchors = data("int37x5"), anchors_for("int37x5")
    for a in (None, anchors):
        one = gk.kcenter_run(gk.kcenter_init(x, 9, anchors=a), x, max_steps=4)
        many = gk.kcenter_run(gk.kcenter_init(x, 9, anchors=a, mesh=mesh8()), x, max_steps=4,
                              mesh=mesh8())  # fmt: skip
        for field in range(3):
            np.testing.assert_array_equal(np.asarray(many[field]), np.asarray(one[field]))


@settings(max_examples=8, deadline=None)
@given(
    shape=st.sampled_from([(4, 1), (9, 2), (13, 3), (23, 2)]),
    k_frac=st.sampled_from([0.0, 0.3, 0.7, 1.0]),
    seed=st.integers(0, 2**16),
    metric=st.sampled_from(("euclidean", "cosine")),
)
def test_kcenter_property_mesh_equals_one_device_equals_reference(shape, k_frac, seed, metric):
    """Symmetric integer data (exact distances), a few shapes so that examples share programs."""
    half, d = shape
    x = _symmetric(np.random.default_rng(seed).integers(-3, 4, size=(half, d)))
    n = x.shape[0]
    k = int(round(k_frac * n))
    want = _list(gk.greedy_k_center(x, k, metric=metric))
    assert _list(gk.greedy_k_center(x, k, metric=metric, mesh=mesh8())) == want
    assert _list(gk.greedy_k_center(x, k, metric=metric, mesh=mesh3())) == want
    if metric == "euclidean":
        assert want == k_center(x, k, metric)
    else:
        assert_valid_k_center(x, want, metric)


def test_kcenter_pre_padded_rows_with_n():
    """Rows read per device (``shard_rows`` of a TensorStore array), padded, real count given."""
    import tensorstore as ts

    x = data("float203x6")[:45]
    spec = {"driver": "zarr3", "kvstore": {"driver": "memory"}}
    store = ts.open(spec, create=True, shape=x.shape, dtype=ts.float32).result()
    store.write(x).result()
    xs = gk.shard_rows(store, mesh8())
    assert xs.shape == (48, 6)
    for metric in METRICS:
        want = _list(gk.greedy_k_center(x, 20, metric=metric))
        state = gk.kcenter_init(xs, 20, metric=metric, mesh=mesh8(), n=45)
        assert state.min_dist.shape == (45,)
        state = gk.kcenter_run(state, xs, metric=metric, max_steps=3, mesh=mesh8())
        state = gk.kcenter_run(state, xs, metric=metric, mesh=mesh8())
        assert _list(state.selected) == want
    with pytest.raises(ValueError, match="n=40"):
        gk.kcenter_init(xs, 5, mesh=mesh8(), n=40)
    with pytest.raises(ValueError, match="without a mesh"):
        gk.kcenter_init(x, 5, n=44)
    with pytest.raises(ValueError, match="k=46"):
        gk.kcenter_init(xs, 46, mesh=mesh8(), n=45)


def test_kcenter_jit_equals_no_jit_on_a_mesh():
    x = data("int37x5")
    want = _list(gk.greedy_k_center(x, 11))
    fn = jax.jit(lambda a: gk.greedy_k_center(a, 11, mesh=mesh8()))
    assert _list(fn(x)) == want
    step = jax.jit(lambda s, a: gk.kcenter_step(s, a))
    a, b = gk.kcenter_init(x, 5), gk.kcenter_init(x, 5)
    for _ in range(5):
        a, b = step(a, x), gk.kcenter_step(b, x)
    assert _list(a.selected) == _list(b.selected) == want[:5]


def test_mesh_programs_compile_once_per_shape():
    """New data and new chunk sizes reuse the compiled programs, on a mesh as on one device."""
    rng = np.random.default_rng(2)
    init, run = kcenter_module._init, kcenter_module._run
    g_init, g_run = greedy_module._init, greedy_module._run

    def go(x):
        state = gk.kcenter_init(x, 10, mesh=mesh8())
        for chunk in (1, 2, 3):
            state = gk.kcenter_run(state, x, max_steps=chunk, mesh=mesh8())
        gk.greedy_k_center(x, 10, mesh=mesh8())
        gk.farthest_point(x, 10, mesh=mesh8())
        gk.closest_point(x, 10, mesh=mesh8())

    go(rng.normal(size=(50, 4)).astype(np.float32))
    sizes = [f._cache_size() for f in (init, run, g_init, g_run)]
    for _ in range(2):
        go(rng.normal(size=(50, 4)).astype(np.float32))
    assert [f._cache_size() for f in (init, run, g_init, g_run)] == sizes


def test_mesh_temporaries_are_o_n_over_p_never_x():
    """XLA's accounting of the compiled per-device programs at N = 512K, d = 64 (128 MB of x,
    16 MB per device): the k-center run holds a few N/P-vectors, never a gathered (or even
    local) copy of x; the init's cosine statistics at most one row block (ROW_BLOCK_BUDGET
    values); farthest point the distance blocks ([P * batch, N / P] for the recompute,
    [block, N / P] for the ring) plus the visiting row block of the ring."""
    n, d, k = 8 * 65_536, 64, 100
    mesh = mesh8()
    axis, p = sharding.mesh_axis(mesh)
    rows = sharding.padded_rows(n, mesh)
    row_sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axis))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    xs = jax.ShapeDtypeStruct((rows, d), jnp.float32, sharding=row_sharded)
    vec = functools.partial(jax.ShapeDtypeStruct, (rows,), sharding=row_sharded)
    sel = jax.ShapeDtypeStruct((k,), jnp.int32, sharding=replicated)
    scalar = jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated)
    local = rows * d * 4 // p

    def temp(lowered):
        return lowered.compile().memory_analysis().temp_size_in_bytes

    for metric in ("euclidean", "cosine"):
        state = gk.KCenterState(vec(jnp.float32), sel, scalar)
        run = temp(kcenter_module._run.lower(state, xs, scalar, mesh=mesh, n=n, metric=metric))
        init = temp(kcenter_module._init.lower(xs, None, mesh=mesh, n=n, k=k, metric=metric,
                                               block_size=None))  # fmt: skip
        assert run < 0.1 * local, (metric, run)
        assert init < 0.1 * local + 4 * (1 << 20) * 4, (metric, init)
        assert init < rows * d * 4 / 4, (metric, init)
    m = n // p
    state = gk.GreedyState(vec(jnp.float32), vec(jnp.int32), vec(jnp.bool_), sel, scalar)
    run = temp(greedy_module._run.lower(state, xs, scalar, mesh=mesh, mode="farthest",
                                        metric="cosine"))  # fmt: skip
    init = temp(greedy_module._init.lower(xs, mesh=mesh, n=n, k=k, metric="euclidean",
                                          block_size=256))  # fmt: skip
    assert run < 1.2 * (p * 16) * m * 4 + local, run
    assert init < 1.2 * 256 * m * 4 + 3 * local, init


# --------------------------------------------------------------------------- farthest / closest

# (data, k, metric, mode, block_size, reference): "exact" against the NumPy rounds.
GREEDY_CASES = [
    *[("int37x5", 18, m, mode, None, "exact") for m in METRICS[:2] for mode in MODES],
    *[("int37x5", 18, "cosine", mode, None, None) for mode in ("farthest", "closest")],
    *[("int45x2", 30, "euclidean", mode, 4, "exact") for mode in ("farthest", "closest")],
    *[("dup36x3", 30, "euclidean", mode, 4, "exact") for mode in MODES],
    *[("dup36x3", 30, "cosine", mode, 4, None) for mode in ("farthest", "closest")],
    ("float203x6", 25, "euclidean", "farthest", None, "exact"),
    ("float2003x16", 12, "euclidean", "farthest", 256, None),
    ("float2003x16", 12, "cosine", "farthest", None, None),
    ("int37x5", 0, "euclidean", "closest", None, "exact"),
    ("int37x5", 37, "euclidean", "farthest", None, "exact"),
]  # fmt: skip


def _greedy_id(case):
    name, k, metric, mode, block, _ = case
    return f"{mode}-{name}-k{k}-{metric}" + (f"-block{block}" if block else "")


@pytest.mark.parametrize("case", GREEDY_CASES, ids=_greedy_id)
def test_farthest_closest_on_a_mesh_equal_one_device(case):
    name, k, metric, mode, block, reference = case
    x = data(name)
    fn = gk.farthest_point if mode == "farthest" else gk.closest_point
    want = _list(fn(x, k, metric=metric, block_size=block))
    assert len(set(want)) == len(want) == k
    assert _list(fn(x, k, metric=metric, block_size=block, mesh=mesh8())) == want
    if name in MESH3_DATA:
        assert _list(fn(x, k, metric=metric, block_size=block, mesh=mesh3())) == want
    if reference == "exact":
        assert want == greedy_point(x, k, mode, metric)


@pytest.mark.parametrize("mode", ["farthest", "closest"])
def test_greedy_init_run_chunked_across_device_counts(mode):
    """The public init / run take mesh= too; the table is the single-device one (integer data)."""
    x = data("dup36x3")
    want = _list(gk.closest_point(x, 20) if mode == "closest" else gk.farthest_point(x, 20))
    one = gk.greedy_init(x, 20)
    state = gk.greedy_init(x, 20, mesh=mesh8(), block_size=3)
    for field in range(3):
        np.testing.assert_array_equal(np.asarray(state[field]), np.asarray(one[field]))
    for steps, mesh in ((1, mesh8()), (0, mesh8()), (4, None), (2, mesh3())):
        state = gk.greedy_run(state, x, mode=mode, max_steps=steps, mesh=mesh)
        assert state.nn_dist.shape == (36,)
    state = gk.greedy_step(state, x, mode=mode, mesh=mesh8())
    state = gk.greedy_run(state, x, mode=mode, mesh=mesh8())
    assert _list(state.selected) == want
    one = gk.greedy_run(one, x, mode=mode)
    for field in range(5):
        np.testing.assert_array_equal(np.asarray(state[field]), np.asarray(one[field]))


def test_greedy_jit_equals_no_jit_on_a_mesh():
    x = data("int37x5")
    for fn in (gk.farthest_point, gk.closest_point):
        want = _list(fn(x, 9))
        assert _list(jax.jit(lambda a, fn=fn: fn(a, 9, mesh=mesh8()))(x)) == want


# --------------------------------------------------------------------------- typical k-center


def _ref_typical_kcenter(x, k, num_neighbors, power, anchors=None):
    """NumPy float64 brute force of the typicality-weighted k-center."""
    d = distances(x, x, "euclidean")
    near = np.sort(d + np.diag(np.full(len(x), np.inf)), axis=1)[:, :num_neighbors]
    typ = 1.0 / near.mean(1)
    w = (typ / typ.max()) ** power
    out = []
    if anchors is None:
        out.append(int(np.argmax(w)))
        min_d = d[out[0]].copy()
    else:
        min_d = distances(x, anchors, "euclidean").min(1)
    while len(out) < k:
        score = np.where(np.isin(np.arange(len(x)), out), -np.inf, w * min_d)
        out.append(int(np.argmax(score)))
        min_d = np.minimum(min_d, d[out[-1]])
    return out


# (data, k, num_neighbors, power, anchored, reference)
TYPICAL_CASES = [
    ("float203x6", 15, 10, 1.0, False, True),
    ("float203x6", 15, 10, 2.0, True, True),
    ("float2003x16", 10, 20, 1.0, False, False),
    ("int37x5", 12, 4, 1.0, False, False),
    ("dup36x3", 12, 3, 0.0, False, False),
    ("int37x5", 12, 4, 1.0, True, False),
]


@pytest.mark.parametrize(
    "case", TYPICAL_CASES, ids=lambda c: f"{c[0]}-k{c[1]}-nn{c[2]}-p{c[3]}" + "-anchors" * c[4]
)
def test_typical_kcenter_on_a_mesh_equals_one_device(case):
    name, k, nn, power, anchored, reference = case
    x = data(name)
    anchors = anchors_for(name) if anchored else None
    kw = dict(num_neighbors=nn, power=power, anchors=anchors)
    want = _list(gk.typical_kcenter(x, k, **kw))
    assert len(set(want)) == len(want) == k
    assert _list(gk.typical_kcenter(x, k, mesh=mesh8(), **kw)) == want
    if name in MESH3_DATA:
        assert _list(gk.typical_kcenter(x, k, mesh=mesh3(), **kw)) == want
    if reference:
        assert want == _ref_typical_kcenter(x, k, nn, power, anchors)


def test_typical_kcenter_weights_and_chunked_runs_across_device_counts():
    x = data("int37x5")
    w1 = np.asarray(gk.typicality_weights(x, num_neighbors=4))
    w8 = np.asarray(gk.typicality_weights(x, num_neighbors=4, mesh=mesh8()))
    np.testing.assert_allclose(w8, w1, rtol=1e-6)
    want = _list(gk.typical_kcenter(x, 14, num_neighbors=4))
    state = gk.typical_kcenter_init(x, 14, num_neighbors=4, mesh=mesh8())
    assert state.min_dist.shape == state.weight.shape == (37,)
    for steps, mesh in ((1, mesh8()), (0, mesh3()), (3, None), (2, mesh8())):
        state = gk.typical_kcenter_run(state, x, max_steps=steps, mesh=mesh)
    single = gk.typical_kcenter_run(state, x)
    state = gk.typical_kcenter_run(state, x, mesh=mesh3())
    assert _list(state.selected) == want == _list(single.selected)
    np.testing.assert_array_equal(np.asarray(state.min_dist), np.asarray(single.min_dist))


# --------------------------------------------------------------------------- ProbCover


def _ref_probcover(x, k, r, anchors=None):
    """NumPy brute force: greedy max coverage of the full ball graph (float64)."""
    ball = distances(x, x, "euclidean") <= r
    covered = np.zeros(len(x), bool)
    if anchors is not None:
        covered |= (distances(anchors, x, "euclidean") <= r).any(0)
    size = ball.sum(1)
    taken = np.zeros(len(x), bool)
    out = []
    for _ in range(k):
        degree = (ball & ~covered[None]).sum(1)
        free = np.flatnonzero(~taken)
        best = max(free, key=lambda i: (degree[i], size[i], -i))
        out.append(int(best))
        taken[best] = True
        covered |= ball[best]
    return out


# (data, k, radius, anchored, block_size, reference). Integer data: squared distances are
# integers, radii squared fall between them, so ball membership is exact.
PROBCOVER_CASES = [
    ("int37x5", 20, 2.5, False, None, True),
    ("int37x5", 37, 2.5, True, 3, True),  # past full coverage; chunks of 3 newly covered rows
    ("int45x2", 30, 1.2, False, 2, True),
    ("dup36x3", 20, 0.4, False, None, True),
    ("dup36x3", 20, 0.4, True, 4, True),
    ("float203x6", 25, 1.3, False, None, True),
    ("float2003x16", 12, 4.0, False, None, False),
    # The radius exactly on a grid distance: a point at distance == radius is inside its ball
    # (a `<` anywhere in the kernel fails these).
    ("int37x5", 12, 2.0, False, None, True),
    ("int37x5", 12, 2.0, True, 3, True),
    ("int45x2", 20, 1.0, False, 2, True),
]


@pytest.mark.parametrize(
    "case", PROBCOVER_CASES, ids=lambda c: f"{c[0]}-k{c[1]}-r{c[2]}-block{c[4]}" + "-anchors" * c[3]
)
def test_probcover_on_a_mesh_equals_one_device(case):
    name, k, radius, anchored, block, reference = case
    x = data(name)
    anchors = anchors_for(name) if anchored else None
    want = _list(gk.probcover(x, k, radius, anchors=anchors, block_size=block))
    assert len(set(want)) == len(want) == k
    got = gk.probcover(x, k, radius, anchors=anchors, block_size=block, mesh=mesh8())
    assert _list(got) == want
    if name in MESH3_DATA:
        got = gk.probcover(x, k, radius, anchors=anchors, block_size=block, mesh=mesh3())
        assert _list(got) == want
    if reference:
        assert want == _ref_probcover(x, k, radius, anchors)


def test_probcover_state_and_chunked_runs_across_device_counts():
    x, anchors = data("int37x5"), anchors_for("int37x5")
    one = gk.probcover_init(x, 25, 2.5, anchors=anchors)
    state = gk.probcover_init(x, 25, 2.5, anchors=anchors, mesh=mesh8())
    for field in range(7):
        np.testing.assert_array_equal(np.asarray(state[field]), np.asarray(one[field]))
    for steps, mesh in ((1, mesh8()), (0, mesh3()), (5, None), (2, mesh3())):
        state = gk.probcover_run(state, x, max_steps=steps, block_size=2, mesh=mesh)
        assert state.degree.shape == (37,)
    state = gk.probcover_step(state, x, mesh=mesh8())
    state = gk.probcover_run(state, x, mesh=mesh8())
    one = gk.probcover_run(one, x)
    for field in range(7):
        np.testing.assert_array_equal(np.asarray(state[field]), np.asarray(one[field]))
    assert _list(one.selected) == _ref_probcover(x, 25, 2.5, anchors)


@pytest.mark.parametrize("name", ["int37x5", "dup36x3", "float2003x16"])
def test_probcover_radius_on_a_mesh(name):
    x = data(name)
    for nn in (1, 5):
        want = gk.probcover_radius(x, nn, max_points=500)
        got8 = gk.probcover_radius(x, nn, max_points=500, mesh=mesh8())
        got3 = gk.probcover_radius(x, nn, max_points=500, mesh=mesh3())
        if name.startswith("float"):  # products of another shape: within float32 rounding
            assert got8 == pytest.approx(want, rel=1e-6) and got3 == pytest.approx(want, rel=1e-6)
        else:
            assert got8 == want == got3
            sub = x[:: max(1, len(x) // 500)][:500]
            kth = np.sort(distances(sub, x, "euclidean"), axis=1)[:, nn]
            ref = float(np.quantile(kth, 0.5))
            assert want == pytest.approx(ref if ref > 0 else 1.0, rel=1e-6)


def test_probcover_and_typical_jit_equal_no_jit_on_a_mesh():
    x = data("int37x5")
    want = _list(gk.probcover(x, 9, 2.5))
    assert _list(jax.jit(lambda a: gk.probcover(a, 9, 2.5, mesh=mesh8()))(x)) == want
    want = _list(gk.typical_kcenter(x, 9, num_neighbors=4))
    got = jax.jit(lambda a: gk.typical_kcenter(a, 9, num_neighbors=4, mesh=mesh8()))(x)
    assert _list(got) == want


# --------------------------------------------------------------------------- errors


def test_clear_errors_with_a_mesh():
    x = data("int37x5")
    two_d = jax.sharding.Mesh(np.asarray(jax.devices()[:2]).reshape(1, 2), ("a", "b"))
    for fn in (
        lambda m: gk.greedy_k_center(x, 3, mesh=m),
        lambda m: gk.farthest_point(x, 3, mesh=m),
        lambda m: gk.greedy_init(x, 3, mesh=m),
        lambda m: gk.typical_kcenter(x, 3, num_neighbors=4, mesh=m),
        lambda m: gk.probcover(x, 3, 1.0, mesh=m),
        lambda m: gk.probcover_radius(x, 3, mesh=m),
    ):
        with pytest.raises(TypeError, match="jax.sharding.Mesh"):
            fn("data")
        with pytest.raises(ValueError, match="1-D"):
            fn(two_d)
    state = gk.kcenter_init(x, 5, mesh=mesh8())
    with pytest.raises(ValueError, match="state was made for 37 points"):
        gk.kcenter_run(state, x[:36], mesh=mesh8())
    with pytest.raises(ValueError, match="mode"):
        gk.greedy_run(gk.greedy_init(x, 3), x, mode="middle", mesh=mesh8())


@pytest.mark.parametrize("n", [64, 61])
def test_mesh_entry_points_under_a_callers_jit(n):
    """``mesh=`` inside the caller's ``jax.jit``, with ``n`` a multiple of the mesh size or not:
    ``shard_rows`` / ``replicate`` see tracers there and only constrain the layout."""
    x = np.random.default_rng(n).normal(size=(n, 5)).astype(np.float32)
    mesh = gk.make_mesh()
    ref = np.asarray(gk.greedy_k_center(x, 7))
    got = jax.jit(lambda v: gk.greedy_k_center(v, 7, mesh=mesh))(x)
    np.testing.assert_array_equal(np.asarray(got), ref)
    herd = jax.jit(lambda v: gk.kernel_herding(v, 5, mesh=mesh))(x)
    np.testing.assert_array_equal(np.asarray(herd), np.asarray(gk.kernel_herding(x, 5)))
