"""Pruned greedy k-center (``method="pruned"``) against the streaming steps and a NumPy reference.

The pruned steps must return the streaming (``"naive"``) float32 indices exactly, ties included:
on random, clustered (mixture of Gaussians) and real-feature-like data (scikit-learn digits,
tiled with and without noise: exact duplicates give real ties), with and without anchors, for
every metric, bf16 storage, on one device and on 8 (and 3) devices. A step-by-step check builds
the block bounds and asserts that every block they skip would not have changed (its rows'
computed distances to the new center are ``>=`` their running minima), on data built to stress
the rounding margin (a large offset from the origin, near-equal distances). The rebuild predictor
(``predicted_skip_share``) is checked on closed-form cases and against a NumPy version of its
rule; runs forced through each branch (stream because the prediction is low, then rebuild; always
rebuild) on one device and on meshes return the streaming indices, and the rebuilt blocks skip.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _reference import k_center
from goldener_jax.kernels import kcenter_pruned as kp
from goldener_jax.kernels.distance import point_rank_distances, point_stats
from goldener_jax.kernels.kcenter import global_point_stats
from goldener_jax.kernels.sharding import ALL, ROWS, on_mesh, replicate, shard_rows
from sklearn.datasets import load_digits

from goldener_jax import kernels as gk

N, D, K, A = 1200, 64, 150, 5  # one shape for every data kind: programs compile once
BLOCK = 32  # small blocks: many of them at these sizes


@functools.cache
def digits() -> np.ndarray:
    return load_digits().data.astype(np.float32)  # [1797, 64]


@functools.cache
def data(kind: str, quantized: bool = False) -> np.ndarray:
    """``[N, D]`` float32; ``quantized``: multiples of 1/16, so column sums (the mean row) are
    exact in float32 and one device and a mesh compute the same distances."""
    rng = np.random.default_rng(sum(map(ord, kind)))
    if kind == "random":
        x = rng.normal(size=(N, D))
    elif kind == "clustered":
        means = rng.normal(size=(12, D)) * 2.0
        x = means[rng.integers(0, 12, N)] + 0.3 * rng.normal(size=(N, D))
    elif kind == "digits_noise":
        x = digits()[rng.integers(0, len(digits()), N)] + rng.normal(size=(N, D))
    elif kind == "digits_tiled":  # exact duplicates: ties everywhere
        x = np.tile(digits()[:300], (N // 300, 1))
    elif kind == "line":  # collinear, shuffled: the triangle inequality is tight (equality)
        u = rng.normal(size=D)
        x = 50.0 + rng.permutation(N)[:, None] * (u / np.linalg.norm(u))[None, :]
    elif kind == "offset":  # far from the origin: stresses the mean-shifted formula's rounding
        x = 1000.0 + rng.normal(size=(N, D)) * 0.01
    else:
        raise AssertionError(kind)
    x = x.astype(np.float32)
    return np.round(x * 16) / 16 if quantized else x


def anchors_for(kind: str) -> np.ndarray:
    x = data(kind)
    return (x[:A] + np.float32(0.5)).astype(np.float32)


KINDS = ["random", "clustered", "digits_noise", "digits_tiled", "offset"]


@pytest.mark.parametrize("metric", ["euclidean", "cosine", "sqeuclidean"])
@pytest.mark.parametrize("with_anchors", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_pruned_equals_naive(kind, with_anchors, metric):
    x = data(kind)
    anchors = anchors_for(kind) if with_anchors else None
    naive = gk.greedy_k_center(x, K, metric=metric, anchors=anchors, method="naive")
    pruned = gk.greedy_k_center(
        x, K, metric=metric, anchors=anchors, method="pruned", block_rows=BLOCK
    )
    np.testing.assert_array_equal(np.asarray(pruned), np.asarray(naive))


@pytest.mark.parametrize("with_anchors", [False, True])
def test_pruned_matches_numpy_reference_on_exact_data(with_anchors):
    """Small integers: every distance exact, so the NumPy brute force is the same sequence."""
    rng = np.random.default_rng(3)
    means = rng.integers(-20, 20, size=(6, 4))
    x = (means[rng.integers(0, 6, 256)] + rng.integers(-2, 3, size=(256, 4))).astype(np.float32)
    anchors = x[:3] + 1 if with_anchors else None
    got = gk.greedy_k_center(x, 60, anchors=anchors, method="pruned", block_rows=8)
    assert np.asarray(got).tolist() == k_center(x, 60, anchors=anchors)


@pytest.mark.parametrize("kind", ["clustered", "digits_noise"])
def test_bf16_storage_pruned_equals_naive(kind):
    x = jnp.asarray(data(kind)).astype(jnp.bfloat16)
    naive = gk.greedy_k_center(x, K, method="naive")
    pruned = gk.greedy_k_center(x, K, method="pruned", block_rows=BLOCK)
    np.testing.assert_array_equal(np.asarray(pruned), np.asarray(naive))


def test_pruned_reads_fewer_blocks_on_clustered_data():
    x = data("clustered")
    idx, touched = gk.greedy_k_center(x, K, method="pruned", block_rows=BLOCK, return_touched=True)
    _, ones = gk.greedy_k_center(x, K, method="naive", return_touched=True)
    touched = np.asarray(touched)
    np.testing.assert_array_equal(np.asarray(ones), np.ones(K, np.float32))
    assert touched.shape == (K,) and touched[0] == 1.0  # the seed step reads every row
    assert np.all((touched > 0) & (touched <= 1))
    assert touched[K // 2 :].mean() < 0.5  # 12 well-separated clusters: most blocks skipped


@pytest.mark.parametrize("kind", ["line", "clustered", "offset", "digits_tiled", "random"])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_skipped_blocks_cannot_change(kind, metric):
    """Replays the streaming steps; at each, every block ``skip_blocks`` skips keeps its minima."""
    x = jnp.asarray(data(kind))
    n = x.shape[0]
    stats = point_stats(x, metric)
    ids = jnp.arange(n, dtype=jnp.int32)
    # Pivots as the pruned run takes them: the first greedy centers; cells: nearest pivot.
    pivots = np.asarray(gk.greedy_k_center(x, 32, metric=metric, method="naive"))
    near = [np.asarray(point_rank_distances(x, stats, x[i], metric)) for i in pivots]
    labels = jnp.asarray(np.argmin(np.stack(near, axis=1), axis=1).astype(np.int32))
    index = kp.block_index(x, stats, ids < n, ids, x[pivots], labels, metric, BLOCK)
    rows = index.slot_row
    pad = np.asarray(index.slot_id) >= n
    state = gk.kcenter_init(x, 1, metric=metric)
    md = np.asarray(state.min_dist)
    skipped_any = 0
    for _ in range(80):
        center = int(np.argmax(md))
        z = x[center]
        md_slots = np.where(pad, -np.inf, md[np.asarray(rows)]).reshape(-1, BLOCK)
        # Each block's segments: slots by segment id.
        seg = np.asarray(index.seg)  # [nb, BLOCK]
        segs = seg[:, None, :] == np.arange(kp.SEGMENTS)[None, :, None]  # [nb, S, BLOCK]
        top = np.where(segs, md_slots[:, None, :], -np.inf).max(axis=2)
        skip = np.asarray(kp.skip_blocks(index, stats, z, jnp.asarray(top), metric))
        d = np.asarray(point_rank_distances(x, stats, z, metric))
        d_slots = d[np.asarray(rows)].reshape(-1, BLOCK)
        skipped_rows = np.any(segs & skip[:, :, None], axis=1)  # [nb, BLOCK]
        assert np.all(d_slots[skipped_rows] >= md_slots[skipped_rows]), "a skip was wrong"
        skipped_any += int(skip.sum())
        md = np.minimum(md, d)
        md[center] = -np.inf
    if kind in ("clustered", "digits_tiled"):
        assert skipped_any > 0  # the bound is not vacuous where data has structure


@functools.cache
def mesh(size: int):
    return gk.make_mesh(jax.devices()[:size])


# 8 devices for every case; 3 devices (each mesh size compiles its own programs) for two.
MESH_CASES = [
    (kind, anchors, metric, 8)
    for kind in ("clustered", "digits_tiled", "random")
    for anchors in (False, True)
    for metric in ("euclidean", "cosine")
] + [("clustered", False, "euclidean", 3), ("digits_tiled", True, "cosine", 3)]


@pytest.mark.parametrize(("kind", "with_anchors", "metric", "devices"), MESH_CASES)
def test_pruned_on_mesh_equals_naive_on_mesh(kind, with_anchors, metric, devices):
    """Against the streaming steps on the same mesh and on one device. (Before ``row_dots``, the
    mesh's streaming steps swapped picks 101 and 102 of digits_tiled with anchors, Euclidean, on
    8 devices: a shard's last rows fell in the mat-vec's remainder and rounded differently.)"""
    x = data(kind, quantized=True)[: N - 7]  # not a multiple of the mesh: padding rows
    anchors = np.round(anchors_for(kind) * 16) / 16 if with_anchors else None
    run = functools.partial(gk.greedy_k_center, x, K, metric=metric, anchors=anchors)
    naive = run(method="naive", mesh=mesh(devices))
    sharded = run(method="pruned", block_rows=BLOCK, mesh=mesh(devices))
    np.testing.assert_array_equal(np.asarray(sharded), np.asarray(naive))
    np.testing.assert_array_equal(np.asarray(naive), np.asarray(run(method="naive")))


@functools.cache
def many_clusters(kind: str) -> np.ndarray:
    """``[N, D]``: 100 clusters of 12 rows, rows shuffled; ``"tight"``: means about 110 apart,
    clusters about 0.4 wide; ``"wide"``: about 11 apart, 2 wide. The first 64 centers leave
    clusters uncovered (cells span several clusters: little to skip, the phase streams); by 128
    every cluster has one (the cells are tight: the blocks are rebuilt and most skipped)."""
    scale, spread = {"tight": (10.0, 0.05), "wide": (1.0, 0.25)}[kind]
    rng = np.random.default_rng(7)
    means = rng.normal(size=(100, D)) * scale
    x = means[rng.permutation(np.arange(N) % 100)] + spread * rng.normal(size=(N, D))
    return x.astype(np.float32)


@functools.cache
def pruned_program(k, n, rows, rebuild_share, devices, metric="euclidean"):
    """``(x, anchors) -> (selected, touched)``: ``pruned_steps`` run to ``k`` (one device or a
    mesh of ``devices``) with the given rebuild threshold; ``touched``: share of blocks read."""
    mesh_ = None if devices == 1 else mesh(devices)

    def body(min_dist, selected, count, x, *, axis):
        stats = global_point_stats(x, n, metric, axis)
        *_, sel, _, touched = kp.pruned_steps(
            min_dist, selected, count, x, stats, jnp.int32(k), n=n, metric=metric,
            rows=rows, axis=axis, rebuild_share=rebuild_share,
        )  # fmt: skip
        return sel, touched

    run = jax.jit(on_mesh(body, mesh_, (ROWS, ALL, ALL, ROWS), (ALL, ALL)))

    def call(x, anchors=None):
        state = gk.kcenter_init(x, k, metric=metric, anchors=anchors, mesh=mesh_)
        md, x = (state.min_dist, x) if mesh_ is None else (
            shard_rows(state.min_dist, mesh_, fill=-jnp.inf), shard_rows(x, mesh_)
        )  # fmt: skip
        sel, touched = run(md, replicate(state.selected, mesh_), replicate(state.count, mesh_), x)
        blocks = -(-md.shape[0] // (devices * rows)) * devices
        return np.asarray(sel), np.asarray(touched) / blocks

    return call


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])  # sqeuclidean: euclidean's steps
@pytest.mark.parametrize("with_anchors", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_forced_rebuilds_equal_naive(kind, with_anchors, metric):
    """Every phase rebuilt and pruned, whatever the prediction (most of these data would
    stream): the pruned steps themselves against the streaming ones, ties included."""
    x = data(kind)
    anchors = anchors_for(kind) if with_anchors else None
    sel, _ = pruned_program(K, N, BLOCK, -1.0, 1, metric)(x, anchors)
    naive = gk.greedy_k_center(x, K, metric=metric, anchors=anchors, method="naive")
    np.testing.assert_array_equal(sel, np.asarray(naive))


def test_forced_rebuilds_on_mesh_equal_naive_on_mesh():
    """Exact ties (tiled rows), anchors, cosine, padding rows, 8 devices, every phase pruned."""
    x = data("digits_tiled")[: N - 7]
    anchors = anchors_for("digits_tiled")
    sel, _ = pruned_program(K, N - 7, BLOCK, -1.0, 8, "cosine")(x, anchors)
    naive = gk.greedy_k_center(x, K, metric="cosine", anchors=anchors, mesh=mesh(8))
    np.testing.assert_array_equal(sel, np.asarray(naive))


# (data, threshold, devices, rows, the step whose phase rebuilds, bound on the share of blocks
# read from there). None: the predictor decides. Wide, one device, rows 8: 64 pivots predict
# 0.27 (the phase streams to 128), 128 predict 0.99 (rebuild; 7 % of blocks read after). Tight,
# 8 devices, rows 8: 38 pivots (twice the blocks), a prediction every 38 steps from 38 on
# (0.08, 0.40: stream; 0.93 at 114: rebuild). -1.0: always rebuild (at 64 the blocks already
# skip some rows before 128, so the natural runs did stream: a rebuild shows partial steps).
# Never rebuilding is what the random data of the tests above take (their predictions are 0).
# The 0.11 bound: with the centers' own rows left in the cells of the first pivots when the
# phase before streamed, 16 % of blocks were read (on the 1,000-Gaussian benchmark: all).
BRANCH_CASES = [
    ("wide", None, 1, 8, 128, 0.11),
    ("tight", None, 8, 8, 114, 0.2),
    ("wide", -1.0, 3, 8, 64, 0.6),
]


@pytest.mark.parametrize(("kind", "share", "devices", "rows", "rebuild_at", "bound"), BRANCH_CASES)
def test_predicted_phases_equal_naive(kind, share, devices, rows, rebuild_at, bound):
    x = many_clusters(kind)
    sel, touched = pruned_program(K, N, rows, share, devices)(x)
    naive = gk.greedy_k_center(x, K, mesh=None if devices == 1 else mesh(devices))
    np.testing.assert_array_equal(sel, np.asarray(naive))
    assert touched[0] == 0  # taken by kcenter_init
    assert np.all(touched[1:rebuild_at] == 1.0)  # streamed up to the rebuild
    assert touched[rebuild_at : rebuild_at + 64].min() < 1.0  # the rebuilt blocks skip
    assert touched[rebuild_at:].mean() < bound


def _cells(x, pivots):
    d2 = ((x[:, None, :].astype(np.float64) - x[pivots][None].astype(np.float64)) ** 2).sum(-1)
    return np.argmin(d2, axis=1).astype(np.int32), d2.min(axis=1)


def test_predicted_share_closed_form_separated_clusters():
    """8 tight clusters 100 apart, of 10, 20, ..., 80 rows; the pivots their first rows: every
    other cell is skippable, so the share is the rows outside the center's own cluster."""
    rng = np.random.default_rng(0)
    sizes = np.arange(1, 9) * 10
    means = np.eye(8, 16) * 100.0
    x = np.repeat(means, sizes, axis=0) + 0.01 * rng.normal(size=(sizes.sum(), 16))
    x = x.astype(np.float32)
    pivots = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    labels, near = _cells(x, pivots)
    md = near.astype(np.float32)
    md[pivots] = -np.inf  # selected rows: left out of the cells
    live = sizes - 1
    share = kp.predicted_skip_share(
        x[pivots], x[pivots[[0, 3]]], labels, near.astype(np.float32), md, "euclidean"
    )
    want = ((live.sum() - live[0]) + (live.sum() - live[3])) / (2 * live.sum())
    np.testing.assert_allclose(float(share), want, rtol=1e-6)


def _share(args, devices: int):
    """``predicted_skip_share(pivots, recent, labels, near, min_dist)`` on one device, or with
    the rows sharded over a mesh of ``devices`` (padding rows at ``-inf``: left out)."""
    if devices == 1:
        return kp.predicted_skip_share(*args, "euclidean")
    m = mesh(devices)
    body = functools.partial(kp.predicted_skip_share, metric="euclidean")
    run = jax.jit(on_mesh(body, m, (ALL, ALL, ROWS, ROWS, ROWS), ALL))
    rows = [shard_rows(a, m) for a in args[2:4]] + [shard_rows(args[4], m, fill=-jnp.inf)]
    return run(*args[:2], *rows)


@pytest.mark.parametrize("devices", [1, 8])
def test_predicted_share_uniform_is_zero_and_mesh_agrees(devices):
    """Uniform in 64 dimensions: every cell's radius is about the distance between pivots, so
    no cell is skippable; on a mesh the share is the same (cells span the devices)."""
    x = data("random")
    pivots = np.asarray(gk.greedy_k_center(x, 24))
    labels, near = _cells(x, pivots)
    md = near.astype(np.float32)
    md[pivots] = -np.inf
    args = (x[pivots], x[pivots[-8:]], labels, near.astype(np.float32), md)
    share = _share(args, devices)
    assert float(share) == 0.0


@pytest.mark.parametrize("devices", [1, 8])
def test_predicted_share_matches_numpy_rule(devices):
    """Clustered data, 32 pivots: the share equals the rule computed in NumPy (float64)."""
    x = data("clustered")
    pivots = np.asarray(gk.greedy_k_center(x, 32))
    labels, near = _cells(x, pivots)
    md = np.minimum(near, ((x - x[0]) ** 2).sum(-1)).astype(np.float32)  # an extra center
    md[pivots] = -np.inf
    recent = pivots[-8:]
    live = md > -np.inf
    rho = np.array([np.sqrt(near[live & (labels == j)].max(initial=0)) for j in range(32)])
    top = np.array([np.sqrt(md[live & (labels == j)].max(initial=0)) for j in range(32)])
    size = np.bincount(labels[live], minlength=32)
    dz = np.sqrt(((x[recent][:, None].astype(np.float64) - x[pivots][None]) ** 2).sum(-1))
    skip = (dz - rho >= top) & (dz > 0)  # each recent center is a pivot: its own cell is 0 away
    want = (skip * size).sum() / (8 * size.sum())
    args = (x[pivots], x[recent], labels, near.astype(np.float32), md)
    share = _share(args, devices)
    assert 0.05 < want < 0.95  # neither closed-form extreme
    np.testing.assert_allclose(float(share), want, rtol=1e-5)


def test_run_continues_in_chunks():
    x = data("clustered")
    naive = gk.greedy_k_center(x, K, method="naive")
    state = gk.kcenter_init(x, K)
    state = gk.kcenter_run(state, x, max_steps=40, method="pruned", block_rows=BLOCK)
    state = gk.kcenter_run(state, x, method="pruned", block_rows=BLOCK)
    np.testing.assert_array_equal(np.asarray(state.selected), np.asarray(naive))
    ref = gk.kcenter_run(gk.kcenter_init(x, K), x, method="naive")
    np.testing.assert_array_equal(np.asarray(state.min_dist), np.asarray(ref.min_dist))


def test_auto_gives_the_same_indices():
    x = data("digits_noise")
    auto = gk.greedy_k_center(x, K, method="auto")
    np.testing.assert_array_equal(np.asarray(auto), np.asarray(gk.greedy_k_center(x, K)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "fast"}, "method must be one of"),
        ({"method": "pruned", "block_rows": 0}, "block_rows must be"),
        ({"method": "pruned", "block_rows": 2.5}, "block_rows must be"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gk.greedy_k_center(data("random")[:100], 5, **kwargs)
