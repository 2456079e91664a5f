"""``gk.pairs_within`` against an exact brute force on integer data with pairs at the threshold."""

from fractions import Fraction

import numpy as np
import pytest

from goldener_jax import kernels as gk


def _exact_pairs(x, y, threshold, metric):
    """Every pair within ``threshold`` in exact integer / rational arithmetic, closest first,
    ties by ``(i, j)``: ``[(i, j, distance as float)]``."""
    x = np.asarray(x).astype(np.int64)
    upper = y is None
    y = x if upper else np.asarray(y).astype(np.int64)
    t = Fraction(threshold)
    found = []
    for i in range(len(x)):
        for j in range(i + 1 if upper else 0, len(y)):
            u, v = [int(a) for a in x[i]], [int(b) for b in y[j]]
            if metric == "cosine":
                dot = sum(a * b for a, b in zip(u, v, strict=True))
                norms = sum(a * a for a in u) * sum(b * b for b in v)
                if norms == 0:
                    key, value, within = Fraction(0), 1.0, t >= 1
                else:
                    # sign(cos) cos^2 orders pairs like cos; 1 - cos <= t  <=>  cos >= 1 - t
                    key = Fraction(dot * abs(dot), norms)
                    c0 = 1 - t
                    within = key >= c0 * abs(c0)
                    value = 1.0 - dot / np.sqrt(float(norms))
                key = -key  # closest first = largest cosine first
            else:
                sq = sum((a - b) ** 2 for a, b in zip(u, v, strict=True))
                key = Fraction(sq)
                if metric == "euclidean":
                    within, value = sq <= t * t, float(np.sqrt(sq))
                else:
                    within, value = sq <= t, float(sq)
            if within:
                found.append((key, i, j, value))
    found.sort(key=lambda f: f[:3])
    return [(i, j, v) for _, i, j, v in found]


def _grid(seed, n, d, low, high, offset=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(low, high + 1, size=(n, d)) + offset).astype(np.float32)


# (metric, threshold, data offset): integer rows; the offset moves the data far from the origin
# so that the float32 search rounds, while the exact recheck does not.
CASES = [
    ("euclidean", 3.0, 0),
    ("euclidean", 3.0, 3000),
    ("euclidean", 2.0, 0),
    ("euclidean", 0.0, 0),
    ("sqeuclidean", 9.0, 3000),
    ("sqeuclidean", 5.0, 0),
    ("cosine", 0.5, 0),
    ("cosine", 1.0, 0),
    ("cosine", 0.0, 0),
]


def _at_threshold(pairs, threshold, metric):
    return [p for p in pairs if abs(p[2] - threshold) < 1e-12]


def _assert_same_pairs(got, want, metric):
    """The same pairs, each with its distance, in the documented order: by float64 distance,
    equal ones by ``(i, j)``. Exactly equal distances stay equal in float64 for the Euclidean
    metrics (square roots of equal integers); an irrational cosine may round differently for two
    pairs at the same exact distance, so there only the order up to 1e-12 is compared."""
    i, j, d = got
    assert i.dtype == j.dtype == np.int64 and d.dtype == np.float64
    pairs = list(zip(i.tolist(), j.tolist(), strict=True))
    if metric != "cosine":
        assert pairs == [(a, b) for a, b, _ in want]
    else:
        assert sorted(pairs) == sorted((a, b) for a, b, _ in want)
        value = {(a, b): v for a, b, v in want}
        np.testing.assert_allclose(d, [value[p] for p in pairs], rtol=0, atol=1e-12)
        assert np.all(np.diff([value[p] for p in pairs]) >= -1e-12)
    np.testing.assert_array_equal(np.lexsort((j, i, d)), np.arange(len(d)))
    np.testing.assert_allclose(d, [v for _, _, v in want], rtol=0, atol=1e-12)


@pytest.mark.parametrize(("metric", "threshold", "offset"), CASES)
@pytest.mark.parametrize("block_size", [None, 7])
def test_pairs_within_x_alone_matches_exact_brute_force(metric, threshold, offset, block_size):
    x = _grid(0, 70, 3, -2, 2, offset)
    want = _exact_pairs(x, None, threshold, metric)
    assert _at_threshold(want, threshold, metric), "no pair at the threshold: nothing tested"
    got = gk.pairs_within(x, threshold, metric=metric, block_size=block_size)
    _assert_same_pairs(got, want, metric)
    assert np.all(got[2] <= threshold)


@pytest.mark.parametrize(("metric", "threshold", "offset"), CASES)
def test_pairs_within_x_vs_y_matches_exact_brute_force(metric, threshold, offset):
    x = _grid(1, 40, 3, -2, 2, offset)
    y = _grid(2, 33, 3, -2, 2, offset)
    want = _exact_pairs(x, y, threshold, metric)
    assert _at_threshold(want, threshold, metric)
    got = gk.pairs_within(x, threshold, y=y, metric=metric, block_size=9)
    _assert_same_pairs(got, want, metric)


def test_the_edge_pair_is_included_and_reported_at_the_threshold():
    x = np.array([[0, 0], [3, 4], [6, 8], [0, -5.0001]], np.float32)  # 5.0001: just out
    i, j, d = gk.pairs_within(x, 5.0)
    assert list(zip(i.tolist(), j.tolist(), strict=True)) == [(0, 1), (1, 2)]
    assert d.tolist() == [5.0, 5.0]
    i, j, d = gk.pairs_within(np.array([[1, 1, 0], [1, 0, 1], [0, 0, 0]], np.float32), 0.5,
                              metric="cosine")  # fmt: skip
    assert (i.tolist(), j.tolist(), d.tolist()) == ([0], [1], [0.5])


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("max_pairs", [1, 5, 23])
def test_max_pairs_keeps_the_closest_with_ties_by_index(metric, max_pairs):
    """The ``max_pairs`` first pairs of the full answer (itself checked against the brute force),
    with ties at the cut: kept while blocks stream in, and again after pruning."""
    x = _grid(3, 60, 3, -2, 2)
    threshold = 2.0 if metric == "euclidean" else 0.5
    for y in (None, x[:20]):
        want = _exact_pairs(x, y, threshold, metric)
        full = gk.pairs_within(x, threshold, y=y, metric=metric)
        _assert_same_pairs(full, want, metric)
        assert len(want) > 3 * max_pairs  # the pruning path runs
        assert full[2][max_pairs - 1] == full[2][max_pairs]  # a tie straddles the cut
        got = gk.pairs_within(x, threshold, y=y, metric=metric, block_size=5, max_pairs=max_pairs)
        for a, b in zip(got, full, strict=True):
            np.testing.assert_array_equal(a, b[:max_pairs])


@pytest.mark.parametrize("max_pairs", [1, 3, 10])
def test_max_pairs_on_continuous_data_with_the_closest_pairs_in_late_blocks(max_pairs):
    # Rows sorted by their nearest-neighbour distance, largest first: every later block holds
    # pairs closer than those kept so far, just below the tightened filter's limit.
    rng = np.random.default_rng(8)
    x = rng.normal(size=(90, 2)).astype(np.float32)
    nearest = np.sort(np.linalg.norm(x[:, None] - x[None], axis=-1), axis=1)[:, 1]
    x = x[np.argsort(-nearest, kind="stable")]
    full = gk.pairs_within(x, 1.0)
    assert len(full[0]) > 10 * max_pairs
    got = gk.pairs_within(x, 1.0, block_size=3, max_pairs=max_pairs)
    for a, b in zip(got, full, strict=True):
        np.testing.assert_array_equal(a, b[:max_pairs])


def test_exact_duplicates_far_from_the_origin():
    rng = np.random.default_rng(4)
    x = (rng.normal(size=(200, 16)) + 1e4).astype(np.float32)
    x[150] = x[3]
    x[170] = x[3]
    for metric in ("euclidean", "sqeuclidean", "cosine"):
        i, j, d = gk.pairs_within(x, 0.0, metric=metric, block_size=32)
        assert list(zip(i.tolist(), j.tolist(), strict=True)) == [(3, 150), (3, 170), (150, 170)]
        assert d.tolist() == [0.0, 0.0, 0.0]


def test_16_bit_inputs_are_rechecked_on_their_own_values():
    x = _grid(5, 50, 4, -3, 3).astype(np.float16)
    want = _exact_pairs(x.astype(np.float32), None, 3.0, "euclidean")
    i, j, _ = gk.pairs_within(x, 3.0)
    assert list(zip(i.tolist(), j.tolist(), strict=True)) == [(a, b) for a, b, _ in want]


def test_on_block_sees_every_row_and_can_stop_the_search():
    x = _grid(6, 50, 2, -3, 3)
    calls = []
    i, _, _ = gk.pairs_within(x, 1.0, block_size=8, on_block=lambda r, p: calls.append((r, p)))
    assert sum(r for r, _ in calls) == 50 and len(calls) == 7
    assert calls[-1][1] == len(i) and np.all(np.diff([p for _, p in calls]) >= 0)

    def stop(rows, pairs):
        raise RuntimeError(f"stopped after {pairs} pairs")

    with pytest.raises(RuntimeError, match="stopped after"):
        gk.pairs_within(x, 1.0, block_size=8, on_block=stop)


def test_empty_results():
    x = _grid(7, 10, 2, -3, 3)
    for i, j, d in (
        gk.pairs_within(x[:1], 10.0),
        gk.pairs_within(x[:0], 10.0),
        gk.pairs_within(x, 10.0, y=x[:0]),
        gk.pairs_within(x, 10.0, max_pairs=0),
        gk.pairs_within(x + np.arange(10)[:, None] * 100, 1.0),
    ):
        assert i.shape == j.shape == d.shape == (0,)
        assert i.dtype == np.int64 and d.dtype == np.float64


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"threshold": -1.0}, ValueError, r"threshold must be a finite distance >= 0, got -1.0"),
        ({"threshold": float("nan")}, ValueError, r"threshold must be a finite distance"),
        ({"threshold": "1"}, TypeError, r"threshold must be a number, got '1'"),
        ({"metric": "l1"}, ValueError, r"metric must be one of"),
        ({"max_pairs": -1}, ValueError, r"max_pairs must be >= 0 or None, got -1"),
        ({"max_pairs": 2.0}, TypeError, r"max_pairs must be an int >= 0 or None, got 2.0"),
        ({"block_size": 0}, ValueError, r"block_size must be >= 1, got 0"),
        ({"y": np.zeros((3, 5), np.float32)}, ValueError, r"y must have the same width as x"),
        ({"x": np.zeros(4, np.float32)}, ValueError, r"x must be 2-D"),
        ({"x": np.zeros((4, 2), int)}, TypeError, r"x must have a floating dtype"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    args = {"x": np.zeros((4, 2), np.float32), "threshold": 1.0, **kwargs}
    x, threshold = args.pop("x"), args.pop("threshold")
    with pytest.raises(error, match=match):
        gk.pairs_within(x, threshold, **args)


def _numpy_pairs(x, y, threshold_sq):
    """Exact integer brute force for larger inputs: every pair with squared distance
    ``<= threshold_sq`` as ``(i, j, squared distance)``, closest first, ties by ``(i, j)``."""
    xi = np.asarray(x).astype(np.int64)
    yi = xi if y is None else np.asarray(y).astype(np.int64)
    rows, cols, sq = [], [], []
    for s in range(0, len(xi), 500):
        d2 = ((xi[s : s + 500, None, :] - yi[None, :, :]) ** 2).sum(-1)
        r, c = np.nonzero(d2 <= threshold_sq)
        r = r + s
        keep = c > r if y is None else np.ones(len(r), bool)
        rows.append(r[keep]), cols.append(c[keep]), sq.append(d2[r[keep] - s, c[keep]])
    rows, cols, sq = (np.concatenate(a) for a in (rows, cols, sq))
    order = np.lexsort((cols, rows, sq))
    return rows[order], cols[order], sq[order]


# (n, m or None, block_size): more rows and columns than one 2048-column tile, blocks that do or
# do not line up with the tiles, so the tile grid, its zero padding and the skipped tiles below
# the diagonal all run.
TILED = [(5000, None, None), (5000, None, 1000), (4500, 2600, None), (3000, 4200, 700)]


@pytest.mark.parametrize(("n", "m", "block_size"), TILED)
@pytest.mark.parametrize(("metric", "threshold"), [("euclidean", 1.0), ("sqeuclidean", 2.0)])
def test_tiled_search_matches_numpy_brute_force(n, m, block_size, metric, threshold):
    x = _grid(10, n, 4, -4, 4)
    y = None if m is None else _grid(11, m, 4, -4, 4)
    want_i, want_j, want_sq = _numpy_pairs(
        x, y, threshold**2 if metric == "euclidean" else threshold
    )
    assert len(want_i) > 1000 and np.any(
        want_sq == (threshold**2 if metric == "euclidean" else threshold)
    )
    i, j, d = gk.pairs_within(x, threshold, y=y, metric=metric, block_size=block_size)
    np.testing.assert_array_equal(i, want_i)
    np.testing.assert_array_equal(j, want_j)
    np.testing.assert_array_equal(d, np.sqrt(want_sq) if metric == "euclidean" else want_sq)


# Threshold 0 (not cosine) hashes rows instead of comparing blocks: the same pairs as the brute
# force on integer rows with many repeats, -0.0 planted next to +0.0, several dtypes, x alone and
# against y.
@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("with_y", [False, True])
def test_threshold_zero_hash_path_matches_brute_force(metric, dtype, with_y):
    x = _grid(12, 300, 3, -1, 1).astype(dtype)  # 27 distinct rows: large groups
    x[x == 0] = -0.0 * (np.arange(x.size).reshape(x.shape)[x == 0] % 2)  # half the zeros are -0.0
    assert np.any(np.signbit(x) & (x == 0))
    y = _grid(13, 120, 3, -1, 1).astype(dtype) if with_y else None
    want_i, want_j, _ = _numpy_pairs(x, y, 0)
    calls = []
    i, j, d = gk.pairs_within(
        x, 0.0, y=y, metric=metric, on_block=lambda r, p: calls.append((r, p))
    )
    np.testing.assert_array_equal(i, want_i)
    np.testing.assert_array_equal(j, want_j)
    assert d.dtype == np.float64 and np.all(d == 0)
    assert calls == [(300, len(want_i))]
    got = gk.pairs_within(x, 0.0, y=y, metric=metric, max_pairs=17)
    for a, b in zip(got, (want_i, want_j, d), strict=True):
        np.testing.assert_array_equal(a, b[:17])


def test_threshold_zero_rows_sharing_a_long_prefix():
    """Rows equal on their first 128 bytes but not after: the prefix hash collides for all of
    them, the whole-row hash and the byte comparison separate them."""
    rng = np.random.default_rng(14)
    x = np.zeros((400, 64), np.float32)
    x[:, 40:] = rng.integers(0, 3, size=(150, 24))[rng.integers(0, 150, size=400)]  # repeats
    want_i, want_j, _ = _numpy_pairs(x, None, 0)
    assert 0 < len(want_i) < 2000
    i, j, _ = gk.pairs_within(x, 0.0)
    np.testing.assert_array_equal(i, want_i)
    np.testing.assert_array_equal(j, want_j)


def test_threshold_zero_survives_every_hash_colliding(monkeypatch):
    """Equal hashes are only a grouping key: with every hash equal, the byte comparison alone
    must still find exactly the equal rows."""
    import importlib

    module = importlib.import_module("goldener_jax.kernels.pairs_hash")
    monkeypatch.setattr(module, "_row_hashes", lambda a, width=None: np.zeros(len(a), np.uint64))
    x = _grid(15, 200, 2, -2, 2)
    y = _grid(16, 90, 2, -2, 2)
    for other in (None, y):
        want_i, want_j, _ = _numpy_pairs(x, other, 0)
        i, j, _ = gk.pairs_within(x, 0.0, y=other)
        np.testing.assert_array_equal(i, want_i)
        np.testing.assert_array_equal(j, want_j)


def test_threshold_zero_still_rejects_non_finite_inputs():
    x = np.zeros((5, 3), np.float32)
    x[3, 2] = np.inf
    with pytest.raises(ValueError, match=r"x contains NaN or Inf \(first at row 3, column 2\)"):
        gk.pairs_within(x, 0.0)
    with pytest.raises(ValueError, match=r"y contains NaN or Inf \(first at row 3, column 2\)"):
        gk.pairs_within(np.zeros((2, 3), np.float32), 0.0, y=x)


def _float64_cosine_pairs(x, y):
    """The edge rule's own float64 cosine distance (module docstring) for every pair, same
    einsum forms: the pairs at distance ``<= 0``."""
    upper = y is None
    y = x if upper else y
    i, j = np.triu_indices(len(x), 1) if upper else np.indices((len(x), len(y))).reshape(2, -1)
    u, v = x[i].astype(np.float64), y[j].astype(np.float64)
    dot = np.einsum("ij,ij->i", u, v)
    norms = np.einsum("ij,ij->i", u, u) * np.einsum("ij,ij->i", v, v)
    cos = np.clip(dot / np.sqrt(np.where(norms > 0, norms, 1.0)), -1.0, 1.0)
    keep = np.where(norms > 0, 1.0 - cos, 1.0) <= 0
    order = np.lexsort((j[keep], i[keep]))
    return i[keep][order], j[keep][order]


@pytest.mark.parametrize("with_y", [False, True])
def test_cosine_threshold_zero_finds_near_parallel_rows_the_edge_rule_accepts(with_y):
    """Scaled copies of a few directions, rounded to float32: their float64 cosines round to 1
    or just below, and rows counted at distance 0 need not have equal unit vectors, so no hash of
    normalised rows could reproduce the edge rule; the window search must."""
    rng = np.random.default_rng(17)
    base = rng.normal(size=(6, 16))
    label_x, label_y = rng.integers(0, 6, 240), rng.integers(0, 6, 90)
    x = (base[label_x] * rng.uniform(0.3, 3.0, size=(240, 1))).astype(np.float32)
    x[::7] = 0  # zero rows: distance 1 from everything
    x[5::11, 3] = np.nextafter(x[5::11, 3], np.float32(np.inf))  # one ulp off in one component
    y = (base[label_y] * rng.uniform(0.3, 3.0, size=(90, 1))).astype(np.float32)
    other, label_o = (y, label_y) if with_y else (x, label_x)
    y = y if with_y else None
    want_i, want_j = _float64_cosine_pairs(x, y)
    unit_a = x[want_i] / np.linalg.norm(x[want_i].astype(np.float64), axis=1, keepdims=True)
    unit_b = other[want_j] / np.linalg.norm(other[want_j].astype(np.float64), axis=1, keepdims=True)
    assert np.any(np.any(unit_a != unit_b, axis=1)), "every pair has equal unit vectors"
    same_base = (label_x[:, None] == label_o[None, :]) & np.any(x != 0, axis=1)[:, None]
    same_base &= np.any(other != 0, axis=1)[None, :]
    same_base = np.triu(same_base, 1) if y is None else same_base
    assert 0 < len(want_i) < int(same_base.sum())  # some near-parallel pairs are rejected
    i, j, d = gk.pairs_within(x, 0.0, y=y, metric="cosine")
    np.testing.assert_array_equal(i, want_i)
    np.testing.assert_array_equal(j, want_j)
    assert np.all(d == 0)


def test_threshold_zero_max_pairs_does_not_enumerate_a_huge_group():
    """200,000 equal rows hold 2e10 pairs: with max_pairs only the rows holding the first pairs
    by (i, j) are paired (enumerating them all would need hundreds of GB)."""
    x = np.zeros((200_000, 8), np.float32)
    x[1::2, 0] = 1.0  # two groups, interleaved
    i, j, d = gk.pairs_within(x, 0.0, max_pairs=5)
    assert i.tolist() == [0] * 5 and j.tolist() == [2, 4, 6, 8, 10] and d.tolist() == [0.0] * 5
    i, j, _ = gk.pairs_within(x, 0.0, y=x[:7], max_pairs=4)
    assert list(zip(i.tolist(), j.tolist(), strict=True)) == [(0, 0), (0, 2), (0, 4), (0, 6)]


# A mesh (8 fake CPU devices, tests/conftest.py): the rows are sharded over the devices and each
# step compares a block of every device's rows with a replicated column tile. The same pairs as
# one device and as the brute force, rows not divisible by the device count, y or not.
MESH_CASES = [(3, 5000, None, None), (8, 4500, 2600, None), (8, 3001, None, 100), (2, 777, 50, 64)]


@pytest.mark.parametrize(("devices", "n", "m", "block_size"), MESH_CASES)
def test_mesh_search_equals_one_device_and_brute_force(devices, n, m, block_size):
    import jax

    mesh = gk.make_mesh(jax.devices()[:devices])
    x = _grid(20, n, 4, -4, 4)
    y = None if m is None else _grid(21, m, 4, -4, 4)
    want_i, want_j, want_sq = _numpy_pairs(x, y, 1.0)
    seen = []
    got = gk.pairs_within(
        x, 1.0, y=y, block_size=block_size, mesh=mesh, on_block=lambda r, p: seen.append(r)
    )
    one = gk.pairs_within(x, 1.0, y=y, block_size=block_size)
    for a, b in zip(got, one, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(got[0], want_i)
    np.testing.assert_array_equal(got[1], want_j)
    np.testing.assert_array_equal(got[2], np.sqrt(want_sq))
    assert sum(seen) == n


@pytest.mark.parametrize(("metric", "threshold", "offset"), [c for c in CASES if c[1] > 0])
def test_mesh_search_matches_exact_brute_force(metric, threshold, offset):
    import jax

    x = _grid(3, 61, 3, -3, 3, offset)
    want = _exact_pairs(x, None, threshold, metric)
    got = gk.pairs_within(x, threshold, metric=metric, mesh=gk.make_mesh(jax.devices()[:8]))
    _assert_same_pairs(got, want, metric)


@pytest.mark.parametrize(("devices", "n", "m"), [(1, 777, None), (1, 500, 301), (8, 1777, 301)])
def test_wide_rows_get_smaller_slices_and_the_same_pairs(monkeypatch, devices, n, m):
    """Blocks and tiles hold at most ``_SLICE_VALUES`` values (wide rows: fewer rows per slice);
    capped here at 100 rows of 4 values (tiles of 128 columns), on one device and a mesh."""
    import jax
    from goldener_jax.kernels import pairs

    monkeypatch.setattr(pairs, "_SLICE_VALUES", 4 * 100)
    x = _grid(20, n, 4, -4, 4)
    y = None if m is None else _grid(21, m, 4, -4, 4)
    want_i, want_j, want_sq = _numpy_pairs(x, y, 1.0)
    mesh = None if devices == 1 else gk.make_mesh(jax.devices()[:devices])
    seen = []
    i, j, d = gk.pairs_within(x, 1.0, y=y, mesh=mesh, on_block=lambda r, p: seen.append(r))
    assert len(seen) > 1 and max(seen) <= 100 * max(1, devices)  # several capped blocks
    np.testing.assert_array_equal(i, want_i)
    np.testing.assert_array_equal(j, want_j)
    np.testing.assert_array_equal(d, np.sqrt(want_sq))


def test_mesh_search_with_max_pairs_keeps_the_closest():
    import jax

    x = _grid(4, 900, 3, -3, 3)
    mesh = gk.make_mesh(jax.devices()[:8])
    for max_pairs in (1, 7, 50):
        got = gk.pairs_within(x, 2.0, max_pairs=max_pairs, block_size=16, mesh=mesh)
        one = gk.pairs_within(x, 2.0, max_pairs=max_pairs, block_size=16)
        for a, b in zip(got, one, strict=True):
            np.testing.assert_array_equal(a, b)
