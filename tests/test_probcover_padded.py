"""ProbCover on rows already padded and row-sharded for a mesh (``shard_rows``) with ``n=`` the
real rows, the way ``select`` hands each process its own rows of a store: the same picks, states
and radius as the unpadded call on one device (and a NumPy brute force), padding rows never a
neighbour, never counted, never chosen.

Data are small integers or multiples of 1/8 (the cosine data: rows whose unit rows are multiples
of 1/2), so every squared distance is exact in float32 and every way must agree bit for bit.
"""

from __future__ import annotations

import importlib
import zlib

import goldener_jax.kernels as gk
import jax
import numpy as np
import pytest
from goldener_jax.kernels import selectors


def _data(name: str, n: int, d: int) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(f"{name}{n}x{d}".encode()))
    if name == "int":
        return rng.integers(-3, 4, (n, d)).astype(np.float32)
    if name == "dup":  # few distinct rows: duplicates on different devices, many ties
        return rng.integers(0, 2, (n, d)).astype(np.float32)
    if name == "blobs":
        centres = rng.integers(-12, 13, (5, d)) / 4.0
        x = centres[rng.integers(0, 5, n)] + rng.normal(size=(n, d)) * 0.6
        return (np.round(x * 8) / 8).astype(np.float32)
    if name == "cosine":  # c * v, |v| = 2, c in {1, 2, 4}: unit rows v / 2, exact
        signs = rng.choice([-1.0, 1.0], (n, d))
        axis = 2.0 * np.eye(d)[rng.integers(0, d, n)] * signs
        v = np.where(rng.random((n, 1)) < 0.5, signs, axis) if d == 4 else axis
        return (v * rng.choice([1.0, 2.0, 4.0], (n, 1))).astype(np.float32)
    raise ValueError(name)


# Radii between two exact squared distances (integers, multiples of 1/64): no pair on the edge.
RADIUS = {"int": 2.5, "dup": 1.2, "blobs": float(np.sqrt(2.0 + 1 / 128))}


def _ref(x, k, r, anchors=None) -> list[int]:
    """Greedy max coverage from scratch each step (float64 distances, exact here)."""
    x64 = x.astype(np.float64)
    r2 = float(np.float32(r) * np.float32(r))  # the kernels compare with the float32 square
    ball = ((x64[:, None] - x64[None]) ** 2).sum(-1) <= r2
    covered = np.zeros(len(x), bool)
    if anchors is not None:
        a = anchors.astype(np.float64)
        covered = (((a[:, None] - x64[None]) ** 2).sum(-1) <= r2).any(0)
    sizes, taken, out = ball.sum(1), np.zeros(len(x), bool), []
    for _ in range(k):
        degree = (ball & ~covered[None, :]).sum(1)
        key = np.where(taken, -1, degree * (len(x) + 1) + sizes)
        c = int(np.argmax(key))  # most uncovered, then largest ball, then lowest index
        out.append(c)
        taken[c], covered = True, covered | ball[c]
    return out


def _ref_radius(x, nn, quantile=0.5, max_points=2048) -> float:
    x64 = x.astype(np.float64)
    sub = x64[:: max(1, len(x) // max_points)][:max_points]
    kth = np.sort(np.sqrt(((sub[:, None] - x64[None]) ** 2).sum(-1)), axis=1)[:, nn]
    r = float(np.quantile(kth, quantile))
    return r if r > 0 else 1.0


def _mesh(devices: int):
    return gk.make_mesh(jax.devices()[:devices])


def _list(a) -> list[int]:
    return np.asarray(a).tolist()


def _assert_same_state(a, b):
    for field, u, v in zip(a._fields, a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v), err_msg=field)


# (data, n, d, k, anchors?, devices); n never a multiple of the devices but where said.
CASES = [
    ("int", 37, 5, 20, False, 8),
    ("int", 37, 5, 37, True, 8),  # k = n: past full coverage, every row chosen
    ("int", 45, 2, 30, True, 3),
    ("dup", 29, 3, 12, False, 8),
    ("blobs", 203, 6, 25, False, 8),
    ("blobs", 203, 6, 9, True, 3),
    ("int", 5, 3, 5, False, 8),  # n < devices: three devices hold padding only
    ("int", 6, 3, 2, True, 8),
    ("int", 7, 4, 0, False, 8),  # k = 0
    ("int", 40, 3, 11, True, 8),  # n a multiple of the devices: nothing padded
]


def _case_id(c) -> str:
    return f"{c[0]}{c[1]}x{c[2]}-k{c[3]}-{c[5]}dev" + "-anchors" * c[4]


def _anchors(x, with_anchors: bool, metric: str = "euclidean"):
    if not with_anchors:
        return None
    # Off the rows but on the exact grid (for the cosine: the same directions, scaled).
    return x[[0, len(x) // 2]] * 3 if metric == "cosine" else x[[0, len(x) // 2]] + 0.125


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_padded_init_and_run_equal_one_device(case):
    name, n, d, k, with_anchors, devices = case
    x, r = _data(name, n, d), RADIUS[name]
    anchors, mesh = _anchors(x, with_anchors), _mesh(devices)
    want = _ref(x, k, r, anchors)
    assert _list(gk.probcover(x, k, r, anchors=anchors)) == want
    xp = gk.shard_rows(x, mesh)
    assert xp.shape[0] == -(-n // devices) * devices
    state = gk.probcover_init(xp, k, r, anchors=anchors, mesh=mesh, n=n)
    one = gk.probcover_init(x, k, r, anchors=anchors)
    assert state.degree.shape == (n,)
    _assert_same_state(state, one)
    state = gk.probcover_run(state, xp, mesh=mesh)
    assert _list(state.selected) == want
    _assert_same_state(state, gk.probcover_run(one, x))
    # The unpadded x on the same mesh: the same state too.
    _assert_same_state(
        state,
        gk.probcover_run(gk.probcover_init(x, k, r, anchors=anchors, mesh=mesh), x, mesh=mesh),
    )


@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[3], CASES[5], CASES[7]], ids=_case_id)
def test_chunked_padded_runs_equal_one_run(case):
    name, n, d, k, with_anchors, devices = case
    x, r = _data(name, n, d), RADIUS[name]
    anchors, mesh = _anchors(x, with_anchors), _mesh(devices)
    xp = gk.shard_rows(x, mesh)
    state = gk.probcover_init(xp, k, r, anchors=anchors, mesh=mesh, n=n)
    one = gk.probcover_init(x, k, r, anchors=anchors)
    for steps in (1, 0, 3, 2):
        state = gk.probcover_run(state, xp, max_steps=steps, block_size=2, mesh=mesh)
        one = gk.probcover_run(one, x, max_steps=steps)
        _assert_same_state(state, one)
    state = gk.probcover_step(state, xp, mesh=mesh)
    # A padded run's state continues on one device with the unpadded x, and the other way.
    single = gk.probcover_run(state, x)
    state = gk.probcover_run(state, xp, mesh=mesh)
    _assert_same_state(state, single)
    assert _list(state.selected) == _ref(x, k, r, anchors)


@pytest.mark.parametrize(
    ("name", "n", "d", "devices"),
    [("int", 37, 5, 8), ("dup", 29, 3, 3), ("blobs", 203, 6, 8), ("int", 5, 3, 8)],
)
def test_padded_radius_equals_unpadded(name, n, d, devices):
    x, mesh = _data(name, n, d), _mesh(devices)
    xp = gk.shard_rows(x, mesh)
    for nn, quantile, max_points in ((1, 0.5, 2048), (3, 0.8, 4), (n - 1, 0.5, 2048)):
        kw = {"quantile": quantile, "max_points": max_points}
        want = gk.probcover_radius(x, nn, **kw)
        assert want == pytest.approx(_ref_radius(x, nn, quantile, max_points), rel=1e-6)
        assert gk.probcover_radius(xp, nn, mesh=mesh, n=n, **kw) == want
        assert gk.probcover_radius(x, nn, mesh=mesh, **kw) == want


def test_padded_radius_on_float_data_equals_the_unpadded_mesh_call():
    # Raw floats: the mesh's products have other shapes than one device's (last-bit rounding),
    # but padded and unpadded x on a mesh run the same program on the same real rows.
    x = np.random.default_rng(3).normal(size=(301, 7)).astype(np.float32)
    mesh = _mesh(8)
    xp = gk.shard_rows(x, mesh)
    for nn in (1, 6):
        want = gk.probcover_radius(x, nn, max_points=50)
        got = gk.probcover_radius(xp, nn, max_points=50, mesh=mesh, n=301)
        assert got == gk.probcover_radius(x, nn, max_points=50, mesh=mesh)
        assert got == pytest.approx(want, rel=1e-6)


SELECTOR_CASES = [
    # metric, data, n, d, k, anchors?; n = 33, k = 11: ceil(n / k) = 3 but ceil(40 / k) = 4
    ("euclidean", "int", 33, 4, 11, False),
    ("euclidean", "blobs", 203, 6, 40, True),
    ("cosine", "cosine", 45, 4, 12, False),
    ("cosine", "cosine", 37, 3, 9, True),
]


@pytest.mark.parametrize("case", SELECTOR_CASES, ids=lambda c: "-".join(map(str, c)))
def test_selector_with_padded_rows_equals_selector_without_mesh(case):
    metric, name, n, d, k, with_anchors = case
    x = _data(name, n, d)
    anchors = _anchors(x, with_anchors, metric)
    mesh = _mesh(8)
    xp = gk.shard_rows(x, mesh)
    plain = selectors.probcover(metric=metric)
    want_state = plain.run(plain.init(x, k, anchors=anchors), x)
    sel = selectors.probcover(metric=metric, mesh=mesh)
    state = sel.init(xp, k, anchors=anchors, n=n)
    # The default radius: num_neighbors = ceil(n / k) of the real rows.
    unit = x / np.linalg.norm(x, axis=1, keepdims=True) if metric == "cosine" else x
    assert float(state.radius) == np.float32(gk.probcover_radius(unit, -(-n // k)))
    assert float(state.radius) == float(want_state.radius)
    state = sel.run(sel.run(state, xp, 2), xp)
    assert _list(sel.picks(state)) == _list(plain.picks(want_state))
    assert _list(sel.picks(state)) == _ref(unit, k, float(state.radius), _unit(anchors, metric))


def _unit(a, metric):
    if a is None or metric != "cosine":
        return a
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_clear_errors_for_n():
    x = _data("int", 37, 5)
    mesh = _mesh(8)
    xp = gk.shard_rows(x, mesh)
    with pytest.raises(ValueError, match="n=37"):
        gk.probcover_init(xp, 3, 2.5, n=37)  # n without a mesh
    with pytest.raises(ValueError, match="n=37"):
        gk.probcover_radius(xp, 3, n=37)
    with pytest.raises(ValueError, match="n=31"):
        gk.probcover_init(xp, 3, 2.5, mesh=mesh, n=31)  # 40 rows: not 31, nor 31 padded (32)
    with pytest.raises(ValueError, match="n=30"):
        gk.probcover_radius(xp, 3, mesh=mesh, n=30)
    for bad in (0, -1, True, 2.5):
        with pytest.raises(ValueError, match="n="):
            gk.probcover_init(xp, 3, 2.5, mesh=mesh, n=bad)
    with pytest.raises(ValueError, match="n=37"):
        gk.probcover_init(xp, 38, 2.5, mesh=mesh, n=37)  # k counts real rows only
    with pytest.raises(ValueError, match="num_neighbors"):
        gk.probcover_radius(xp, 37, mesh=mesh, n=37)
    with pytest.raises(ValueError, match="n=37"):
        selectors.probcover().init(xp, 3, n=37)  # the selector without a mesh


@pytest.mark.parametrize("piece_bytes", [1, 3 * 5 * 4, 64 * 5 * 4])
def test_wide_row_pieces_give_the_same_picks_and_radius(monkeypatch, piece_bytes):
    # Wide rows (e.g. 131,072 floats) reach each device a few at a time: the radius's sampled
    # rows in pieces (the last one overlapping), a step's newly covered rows in small chunks.
    # Shrinking the piece budget to 1, 3 and 64 rows of this data must change nothing.
    pc = importlib.import_module("goldener_jax.kernels.probcover")  # the module, not the function
    monkeypatch.setattr(pc, "_PIECE_BYTES", piece_bytes)
    x, mesh = _data("blobs", 203, 5), _mesh(8)
    assert pc._piece_rows(203, 5, 4, 1) == max(1, min(203, piece_bytes // 20))
    xp = gk.shard_rows(x, mesh)
    for nn, max_points in ((3, 2048), (7, 60)):
        want = gk.probcover_radius(x, nn, max_points=max_points)
        got = gk.probcover_radius(xp, nn, max_points=max_points, mesh=mesh, n=203)
        assert got == want
    r = RADIUS["blobs"]
    state = gk.probcover_init(xp, 25, r, mesh=mesh, n=203)
    picks = _list(gk.probcover_run(state, xp, mesh=mesh).selected)
    assert picks == _list(gk.probcover(x, 25, r)) == _ref(x, 25, r)
