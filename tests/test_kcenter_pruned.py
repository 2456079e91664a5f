"""Pruned greedy k-center (``method="pruned"``) against the streaming steps and a NumPy reference.

The pruned steps must return the streaming (``"naive"``) float32 indices exactly, ties included:
on random, clustered (mixture of Gaussians) and real-feature-like data (scikit-learn digits,
tiled with and without noise: exact duplicates give real ties), with and without anchors, for
every metric, bf16 storage, on one device and on 8 (and 3) devices. A step-by-step check builds
the block bounds and asserts that every block they skip would not have changed (its rows'
computed distances to the new center are ``>=`` their running minima), on data built to stress
the rounding margin (a large offset from the origin, near-equal distances).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _reference import k_center
from goldener_jax.kernels import kcenter_pruned as kp
from goldener_jax.kernels.distance import point_rank_distances, point_stats
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
def test_pruned_on_mesh_equals_one_device(kind, with_anchors, metric, devices):
    x = data(kind, quantized=True)[: N - 7]  # not a multiple of the mesh: padding rows
    anchors = np.round(anchors_for(kind) * 16) / 16 if with_anchors else None
    one = gk.greedy_k_center(x, K, metric=metric, anchors=anchors, method="naive")
    sharded = gk.greedy_k_center(
        x,
        K,
        metric=metric,
        anchors=anchors,
        method="pruned",
        block_rows=BLOCK,
        mesh=mesh(devices),
    )
    np.testing.assert_array_equal(np.asarray(sharded), np.asarray(one))


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
