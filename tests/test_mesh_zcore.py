"""ZCore on a mesh: one body (``kernels/_zcore_body.py``) for one device and for row shards.

The mesh results are checked against the single-device XLA kernel (scores within float32
rounding, statistics exact) and against NumPy references (nearest points and neighbours with ties
between copies on different shards). The reported hang (8 devices, ``x`` of shape ``[2000, 16]``)
runs in a subprocess with a timeout, so a hang fails the test instead of stalling the suite.
"""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from goldener_jax.kernels import collective
from goldener_jax.kernels._zcore_body import chunk_picks, stats_body
from goldener_jax.kernels.sharding import ALL, ROWS, on_mesh, replicate

from goldener_jax import kernels as gk


def _ints(rng, n, d, lo=-3, hi=3):
    return rng.integers(lo, hi + 1, size=(n, d)).astype(np.float32)


def _duplicates(rng, copies=6):
    """Copy j of point i at row 6 j + i: the copies of a point sit on different shards."""
    half = _ints(rng, 3, 3) / 4.0
    return np.concatenate([np.concatenate([half, -half])] * copies)


def _data(kind, n, d, seed):
    rng = np.random.default_rng(seed)
    if kind == "normal":
        return rng.standard_normal((n, d)).astype(np.float32)
    if kind == "ints":
        return _ints(rng, n, d)
    if kind == "duplicates":
        return _duplicates(rng)
    if kind == "bf16":
        return jnp.asarray(rng.standard_normal((n, d)), jnp.bfloat16)
    raise ValueError(kind)


def _mesh(devices):
    return gk.make_mesh(jax.devices()[:devices])


# (name, data kind, n, d, devices, variant, num_redundancy, num_dims, samples, chunk)
MESH_CASES = [
    # The reported shape: brute force on one device (n < 2 x the windows) and on the mesh.
    ("normal 2000x16 r=999 on 8", "normal", 2000, 16, 8, "paper", 1000, 2, 96, 64),
    # One device takes its window search (n > 2 x the widths), the mesh its brute-force body.
    ("ints 2500x3 windows vs mesh", "ints", 2500, 3, 8, "paper", 6, 2, 200, 64),
    ("normal 301x4, 3 devices, padding", "normal", 301, 4, 3, "goldener", 20, 2, 96, 64),
    ("r > n, padding", "normal", 53, 5, 8, "paper", 1000, 2, 300, 64),
    ("duplicates on different shards", "duplicates", 36, 3, 8, "goldener", 40, 2, 200, 64),
    ("r=0, 3 dims, 5 devices", "ints", 45, 4, 5, "goldener", 0, 3, 150, 32),
    ("n < devices", "normal", 5, 3, 8, "paper", 10, 2, 50, 16),
    ("n=1", "normal", 1, 2, 2, "paper", 5, 2, 20, 8),
    ("bfloat16", "bf16", 64, 6, 4, "paper", 12, 2, 100, 32),
]


@pytest.mark.parametrize(
    ("kind", "n", "d", "devices", "variant", "r", "num_dims", "samples", "chunk"),
    [case[1:] for case in MESH_CASES],
    ids=[case[0] for case in MESH_CASES],
)
def test_mesh_scores_equal_the_single_device_kernel(
    kind, n, d, devices, variant, r, num_dims, samples, chunk
):
    """Statistics bit-equal; scores after ``samples`` samples, the mesh run in two calls and
    then continued on one device, equal one single-device XLA run up to float32 rounding."""
    x = _data(kind, n, d, seed=n + d)
    mesh = _mesh(devices)
    key = jax.random.key(7)
    one = gk.zcore_init(x, key, variant=variant)
    many = gk.zcore_init(x, key, variant=variant, mesh=mesh)
    for field in ("scores", "key", "lo", "med", "hi"):
        np.testing.assert_array_equal(np.asarray(getattr(many, field)), getattr(one, field))
    kw = dict(chunk=chunk, variant=variant, num_redundancy=r, num_dims=num_dims)
    first = samples // 2 + 1
    want = gk.zcore_run(one, x, samples + 24, impl="xla", **kw)
    got = gk.zcore_run(many, x, first, mesh=mesh, **kw)
    got = gk.zcore_run(got, x, samples - first, mesh=mesh, **kw)
    assert got.scores.shape == (n,) and int(got.done) == samples
    # A mesh state continues on one device (and the other way round: the init above).
    got = gk.zcore_run(got, x, 24, impl="xla", **kw)
    assert int(got.done) == samples + 24
    np.testing.assert_allclose(
        np.asarray(got.scores), np.asarray(want.scores), rtol=1e-5, atol=1e-5
    )


def _reference_picks(x, dims, anchors, r, metric):
    """Nearest point and ``r`` neighbours per sample: NumPy float32, the kernel's operations
    (exact on these integer / quarter-integer data), ties to the lowest index."""
    xt = np.asarray(x, np.float32).T

    def dist(sub, point):
        total = np.zeros(xt.shape[1], np.float32)
        for j, dim in enumerate(sub):
            diff = xt[dim] - np.float32(point[j])
            total = total + (np.abs(diff) if metric == "l1" else diff * diff)
        return total

    nearest, neighbours = [], []
    for sub, anchor in zip(dims, anchors, strict=True):
        i = int(np.argmin(dist(sub, anchor)))
        d = dist(sub, xt[sub, i])
        d = np.sqrt(d) if metric == "l2" else d
        d[i] = np.inf
        nearest.append(i)
        neighbours.append(np.argsort(d, kind="stable")[:r].tolist())
    return nearest, neighbours


def _picks(x, dims, anchors, *, mesh, r, metric):
    n = x.shape[0]

    def body(x, dims, anchors, *, axis):
        ids = collective.row_ids(x.shape[0], axis)
        nearest, _, idx = chunk_picks(x.T, ids, dims, anchors, n=n, r=r, metric=metric, axis=axis)
        return nearest, idx

    fn = jax.jit(on_mesh(body, mesh, (ROWS, ALL, ALL), (ALL, ALL)))
    xs = x if mesh is None else gk.shard_rows(x, mesh)
    nearest, idx = fn(xs, replicate(dims, mesh), replicate(anchors, mesh))
    return np.asarray(nearest).tolist(), np.asarray(idx).tolist()


# (name, data kind, n, d, devices, metric, r)
PICK_CASES = [
    ("duplicates l2 r=5", "duplicates", 36, 3, 8, "l2", 5),
    ("duplicates l1 r=35 (n - 1)", "duplicates", 36, 3, 8, "l1", 35),
    ("ints l1 r=6", "ints", 45, 4, 8, "l1", 6),
    ("ints l2 r=20, 3 devices", "ints", 50, 3, 3, "l2", 20),
    ("ints 2500 l1 r=6", "ints", 2500, 3, 8, "l1", 6),
    ("ints l1 r > rows per device", "ints", 30, 2, 8, "l1", 12),
]


@pytest.mark.parametrize(
    ("kind", "n", "d", "devices", "metric", "r"),
    [case[1:] for case in PICK_CASES],
    ids=[case[0] for case in PICK_CASES],
)
def test_nearest_and_neighbours_equal_numpy_with_ties_across_shards(kind, n, d, devices, metric, r):
    x = _data(kind, n, d, seed=3 * n + d)
    state = gk.zcore_init(x, jax.random.key(2))
    dims, anchors = gk.zcore_draws(state, 64, 64, 2)
    want = _reference_picks(x, np.asarray(dims), np.asarray(anchors), r, metric)
    for mesh in (None, _mesh(devices)):  # the same body without and with an axis
        got = _picks(jnp.asarray(x), dims, anchors, mesh=mesh, r=r, metric=metric)
        assert got == (want[0], want[1]), "one device" if mesh is None else "mesh"


@pytest.mark.parametrize(("n", "devices"), [(36, 8), (37, 8), (10, 3), (7, 8), (2, 2), (1, 4)])
def test_mesh_statistics_are_the_exact_min_lower_median_max(n, devices):
    rng = np.random.default_rng(n)
    x = _ints(rng, n, 4) / 4.0
    x[0, 1] = -0.0
    x[:, 3] = 2.5  # a constant column
    k = (n - 1) // 2
    want = (x.min(0), np.partition(x, k, axis=0)[k], x.max(0))
    state = gk.zcore_init(x, jax.random.key(0), mesh=_mesh(devices))
    for got, ref in zip((state.lo, state.med, state.hi), want, strict=True):
        np.testing.assert_array_equal(np.asarray(got), ref)
    # The same body without an axis (the accelerator path of one device).
    for got, ref in zip(stats_body(jnp.asarray(x), n=n, axis=None), want, strict=True):
        np.testing.assert_array_equal(np.asarray(got), ref)


_REPORTED = textwrap.dedent(
    """
    import jax
    jax.config.update("jax_num_cpu_devices", 8)
    import numpy as np
    import goldener_jax as gj
    from goldener_jax import kernels as gk

    x = np.random.default_rng(0).standard_normal((2000, 16)).astype(np.float32)
    mesh = gk.make_mesh()
    key = jax.random.key(0)
    # 100 chunks of the default num_redundancy: before the fix, 100 chunk programs were queued
    # and XLA aborted after 40 s ("only 6 of them arrived").
    opts = dict(num_samples=3200, chunk=32)
    many = gk.zcore_scores(x, key, mesh=mesh, **opts)
    one = gk.zcore_scores(x, key, impl="xla", **opts)
    np.testing.assert_allclose(np.asarray(many), np.asarray(one), rtol=1e-5, atol=1e-5)
    state = gk.zcore_init(x, key, mesh=mesh)
    for _ in range(40):  # many small calls, as a checkpointed loop makes them
        state = gk.zcore_step(state, x, chunk=8, num_redundancy=50, mesh=mesh)
    whole = gk.zcore_run(gk.zcore_init(x, key), x, 320, chunk=8, num_redundancy=50, impl="xla")
    np.testing.assert_allclose(np.asarray(state.scores), np.asarray(whole.scores), atol=1e-5)
    sel = gj.select(x, 20, method="zcore", mesh=mesh, key=key, method_options=opts)
    ref = gj.select(x, 20, method="zcore", key=key, method_options={**opts, "impl": "xla"})
    assert list(np.asarray(sel.indices)) == list(np.asarray(ref.indices))
    print("RETURNED")
    """
)


def test_reported_mesh_case_returns():
    """``zcore_scores(x [2000, 16], key, mesh=make_mesh())`` on 8 devices, ``zcore_step`` in a
    loop and ``select(method="zcore", mesh=...)`` return (in a subprocess: a hang or an XLA
    abort fails here), with the single-device results."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    try:
        done = subprocess.run(
            [sys.executable, "-c", _REPORTED], capture_output=True, text=True, timeout=400, env=env
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the mesh run did not return within {e.timeout} s")
    tail = (done.stdout + done.stderr)[-3000:]
    assert done.returncode == 0, tail
    assert "RETURNED" in done.stdout, tail


@pytest.mark.parametrize(("variant", "n", "devices"), [("paper", 37, 8), ("goldener", 45, 4)])
def test_padded_rows_with_n_equal_the_unpadded_call(variant, n, devices):
    """``zcore_init(..., n=)`` on rows padded for the mesh (filled with 1e3: in no statistic,
    never a nearest point or neighbour), run in two calls, and the ZCore selector given ``n=``,
    equal the unpadded calls on the same mesh bit for bit (integer rows)."""
    x = _ints(np.random.default_rng(n), n, 3)
    mesh = gk.make_mesh(jax.devices()[:devices])
    junk = gk.shard_rows(x, mesh, fill=1e3)
    assert junk.shape[0] > n
    key = jax.random.key(2)
    kw = dict(chunk=8, variant=variant, num_redundancy=5, mesh=mesh)
    want = gk.zcore_run(gk.zcore_init(x, key, variant=variant, mesh=mesh), x, 24, **kw)
    state = gk.zcore_init(junk, key, variant=variant, mesh=mesh, n=n)
    for name in ("lo", "med", "hi"):
        np.testing.assert_array_equal(
            np.asarray(getattr(state, name)), np.asarray(getattr(want, name))
        )
    state = gk.zcore_run(gk.zcore_run(state, junk, 16, **kw), junk, 8, **kw)
    assert state.scores.shape == (n,)
    np.testing.assert_array_equal(np.asarray(state.scores), np.asarray(want.scores))
    sel = gk.selectors.zcore(num_samples=24, chunk=8, variant=variant, num_redundancy=5, mesh=mesh)
    plain = sel.picks(sel.run(sel.init(x, 6, key=key), x))
    padded = sel.picks(sel.run(sel.init(junk, 6, key=key, n=n), junk))
    np.testing.assert_array_equal(padded, plain)
    with pytest.raises(ValueError, match="state was made for"):  # neither its rows nor padding
        gk.zcore_run(gk.zcore_init(x[: n - 9], key, mesh=mesh), junk, 8, **kw)
