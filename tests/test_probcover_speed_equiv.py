"""ProbCover's ball-graph way (one device) against a NumPy brute force, the graph-free way
(``max_edges=0``), a mesh of 8 devices and ``jit``: the same indices and states.

Data are multiples of 1/8 with small norms, so every squared distance is exact in float32 (and
a multiple of 1/64); radii sit between two such values, so no pair is within rounding of the
radius and every way must agree exactly. Sizes above 2048 rows give several tiles (2048 rows a
tile), which exercises the mirrored (column-packed) half of the pair tiles.
"""

from __future__ import annotations

import zlib

import goldener_jax.kernels as gk
import jax
import numpy as np
import pytest


def _data(name: str) -> tuple[np.ndarray, float]:
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    if name.startswith("int"):
        n, d = {"int300x3": (300, 3), "int2100x4": (2100, 4)}[name]
        return rng.integers(-3, 4, (n, d)).astype(np.float32), 2.5
    n, d = {"blobs400x6": (400, 6), "blobs4300x5": (4300, 5)}[name]
    centres = rng.integers(-12, 13, (7, d)) / 4.0
    x = centres[rng.integers(0, 7, n)] + rng.normal(size=(n, d)) * 0.6
    x = np.round(x * 8) / 8  # multiples of 1/8: exact squared distances in float32
    # Between two multiples of 1/64: no squared distance equals the radius's square.
    return x.astype(np.float32), float(np.sqrt(2.0 + 1 / 128))


def _ref(x, k, r, anchors=None) -> list[int]:
    """Greedy max coverage from scratch each step (float64 distances, exact here)."""
    x64 = x.astype(np.float64)
    sq = (x64 * x64).sum(1)
    ball = sq[:, None] + sq[None, :] - 2 * x64 @ x64.T <= r * r
    n = len(x)
    covered = np.zeros(n, bool)
    if anchors is not None:
        a = anchors.astype(np.float64)
        covered = (((a[:, None] - x64[None]) ** 2).sum(-1) <= r * r).any(0)
    sizes = ball.sum(1)
    taken = np.zeros(n, bool)
    out = []
    for _ in range(k):
        degree = (ball & ~covered[None, :]).sum(1)
        key = np.where(taken, -1, degree * (n + 1) + sizes)
        c = int(np.argmax(key))  # most uncovered, then largest ball, then lowest index
        out.append(c)
        taken[c] = True
        covered |= ball[c]
    return out


def _list(a) -> list[int]:
    return np.asarray(a).tolist()


CASES = [
    # name, k, anchors?; k past full coverage in some cases (then the densest remaining points)
    ("int300x3", 40, False),
    ("int300x3", 120, True),
    ("int2100x4", 30, False),
    ("blobs400x6", 25, True),
    ("blobs4300x5", 20, False),
    ("blobs4300x5", 12, True),
]


@pytest.mark.parametrize(("name", "k", "with_anchors"), CASES)
def test_graph_way_equals_numpy_and_graph_free(name, k, with_anchors):
    x, r = _data(name)
    anchors = x[[3, 17, 101]] + 0.125 if with_anchors else None
    want = _ref(x, k, r, anchors)
    assert _list(gk.probcover(x, k, r, anchors=anchors)) == want
    assert _list(gk.probcover(x, k, r, anchors=anchors, max_edges=0)) == want
    # A state run in pieces on either way: equal picks and equal states.
    one = gk.probcover_init(x, k, r, anchors=anchors)
    free = gk.probcover_init(x, k, r, anchors=anchors)
    for steps in (1, 4, k):
        one = gk.probcover_run(one, x, max_steps=steps)
        free = gk.probcover_run(free, x, max_steps=steps, max_edges=0)
        for field, a, b in zip(one._fields, one, free, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=field)
    assert _list(one.selected) == want


@pytest.mark.parametrize(("name", "k", "with_anchors"), [CASES[1], CASES[3], CASES[4]])
def test_mesh_of_8_equals_one_device(name, k, with_anchors):
    x, r = _data(name)
    anchors = x[[3, 17, 101]] + 0.125 if with_anchors else None
    want = _list(gk.probcover(x, k, r, anchors=anchors))
    mesh = gk.make_mesh()
    assert _list(gk.probcover(x, k, r, anchors=anchors, mesh=mesh)) == want
    # The mesh's init (graph-free body) counts the same balls and degrees as the half tiles.
    one = gk.probcover_init(x, k, r, anchors=anchors)
    sharded = gk.probcover_init(x, k, r, anchors=anchors, mesh=mesh)
    for field in ("degree", "ball_size", "covered", "taken"):
        np.testing.assert_array_equal(
            np.asarray(getattr(one, field)), np.asarray(getattr(sharded, field)), err_msg=field
        )
    # A state begun on the mesh continues on one device (the graph way) to the same picks.
    sharded = gk.probcover_run(sharded, x, max_steps=3, mesh=mesh)
    assert _list(gk.probcover_run(sharded, x).selected) == want


def test_jit_takes_the_graph_free_way_with_the_same_picks():
    x, r = _data("int300x3")
    want = _ref(x, 30, r)
    assert _list(jax.jit(lambda a: gk.probcover(a, 30, r))(x)) == want


def test_max_edges_too_small_falls_back_and_bad_values_are_refused():
    x, r = _data("int300x3")
    want = _ref(x, 10, r)
    # Fewer entries allowed than the graph has: the graph-free way, same picks.
    assert _list(gk.probcover(x, 10, r, max_edges=len(x))) == want
    for bad in (-1, True, 2.5):
        with pytest.raises(ValueError, match="max_edges"):
            gk.probcover(x, 10, r, max_edges=bad)


@pytest.mark.parametrize("name", ["int300x3", "blobs400x6"])
def test_radius_is_the_quantile_of_kth_neighbour_distances(name):
    x, _ = _data(name)
    x64 = x.astype(np.float64)
    d = np.sqrt(((x64[:, None] - x64[None]) ** 2).sum(-1))
    for nn, q, max_points in ((5, 0.5, 2048), (9, 0.8, 97)):
        sub = np.arange(len(x))[:: max(1, len(x) // max_points)][:max_points]
        kth = np.sort(d[sub], axis=1)[:, nn]  # column 0: the point itself
        got = gk.probcover_radius(x, nn, quantile=q, max_points=max_points)
        assert got == pytest.approx(float(np.quantile(kth, q)), rel=1e-6)


def test_select_frees_the_ball_graph_when_its_run_is_over():
    """The graph kept between init and run (up to max_edges entries and a copy of x) is not
    held after select returns."""
    import importlib

    import goldener_jax as gj

    module = importlib.import_module("goldener_jax.kernels.probcover")
    x = np.random.default_rng(0).normal(size=(600, 8)).astype(np.float32)
    sel = gj.select(x, 30, method="probcover", key=jax.random.key(0), progress=False)
    assert len(sel.indices) == 30 and not module._LAST
