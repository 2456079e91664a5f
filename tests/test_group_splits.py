"""Group-aware splits and selections: whole groups, exact set counts whenever whole groups can
meet them, else the nearest reachable counts (reported; ``strict_sizes=True`` raises).

The nearest counts are checked against an independent enumeration of every reachable count
vector under the documented rule (smallest total deviation, then set by set, then fewer samples
in earlier sets), as ``tests/test_group_packing.py`` does for the packing itself."""

import itertools
import warnings

import jax
import numpy as np
import pytest

import goldener_jax as gj

KEY = jax.random.key(0)
METHODS = ["auto", "kcenter", "random"]
N6 = 1397  # groups of 6, the last of 5


def _x(n, d=8, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def _nearest(reachable, counts):
    """The documented nearest of ``reachable`` count vectors to ``counts``."""
    counts = np.asarray(counts)

    def rule(r):
        dev = np.abs(np.asarray(r) - counts)
        return (int(dev.sum()), *dev.tolist(), *r)

    return list(min(reachable, key=rule))


def _reachable_sixes(n):
    """Every (a, b, c) whole groups of 6 (and the one group of 5) can make of ``n`` samples."""
    full, rest = divmod(n, 6)
    out = set()
    for k0, k1 in itertools.product(range(full + 1), repeat=2):
        if k0 + k1 > full:
            continue
        base = [6 * k0, 6 * k1, 6 * (full - k0 - k1)]
        for j in range(3):
            r = list(base)
            r[j] += rest
            out.add(tuple(r))
    return out


def _reachable_threes(n):
    return {
        (3 * a, 3 * b, n - 3 * a - 3 * b) for a in range(n // 3 + 1) for b in range(n // 3 + 1 - a)
    }


def _check_sets(result, groups, n):
    names = list(result)
    seen = np.concatenate([result[k] for k in names])
    assert np.array_equal(np.sort(seen), np.arange(n))  # a partition of the samples
    owner = np.empty(n, np.int64)
    for i, k in enumerate(names):
        owner[result[k]] = i
    for g in np.unique(groups):  # groups always whole
        assert np.unique(owner[groups == g]).size == 1, f"group {g} straddles two sets"
    return [int(len(result[k])) for k in names]


@pytest.mark.parametrize("method", METHODS)
def test_groups_of_six_exact_counts(method):
    groups = np.arange(N6) // 6
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an exact split says nothing
        res = gj.split(
            _x(N6),
            {"train": 0.7, "val": 0.15, "test": 0.15},
            key=KEY,
            groups=groups,
            method=method,
            progress=False,
        )
    assert _check_sets(res, groups, N6) == [978, 210, 209]
    rec = res.manifest["group_counts"]
    assert rec["exact"] and rec["achieved"] == rec["requested"] == {
        "train": 978,
        "val": 210,
        "test": 209,
    }


@pytest.mark.parametrize("method", METHODS)
def test_groups_of_six_unreachable_gives_nearest_and_says_so(method):
    groups = np.arange(N6) // 6
    sets = {"train": 0.8, "val": 0.1, "test": 0.1}
    with pytest.warns(UserWarning, match="nearest reachable counts"):
        res = gj.split(_x(N6), sets, key=KEY, groups=groups, method=method, progress=False)
    want = _nearest(_reachable_sixes(N6), [1117, 140, 140])
    assert want == [1116, 138, 143]
    assert _check_sets(res, groups, N6) == want
    rec = res.manifest["group_counts"]
    assert rec["requested"] == {"train": 1117, "val": 140, "test": 140}
    assert list(rec["achieved"].values()) == want and rec["exact"] is False
    assert [res.manifest["sets"][k]["count"] for k in sets] == want
    with pytest.raises(ValueError, match="groups cannot satisfy the counts .* exactly"):
        gj.split(
            _x(N6), sets, key=KEY, groups=groups, method=method, strict_sizes=True, progress=False
        )


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data.astype(np.float32), d.target


@pytest.mark.parametrize("method", METHODS)
def test_digits_groups_of_three_nearest(digits, method):
    x, _ = digits
    n = x.shape[0]
    groups = np.arange(n) // 3
    with pytest.warns(UserWarning, match="nearest reachable counts"):
        res = gj.split(
            x,
            {"a": 0.7, "b": 0.15, "c": 0.15},
            key=KEY,
            groups=groups,
            method=method,
            progress=False,
        )
    requested = [1258, 270, 269]  # 1258 is no multiple of 3: exact is impossible
    assert list(res.manifest["group_counts"]["requested"].values()) == requested
    want = _nearest(_reachable_threes(n), requested)
    assert _check_sets(res, groups, n) == want == [1257, 270, 270]
    assert res.manifest["group_counts"]["optimal"] is True


def test_digits_groups_of_three_with_labels_auto(digits):
    x, y = digits
    groups = np.arange(x.shape[0]) // 3
    with pytest.warns(UserWarning, match="nearest"):
        res = gj.split(
            x,
            {"a": 0.7, "b": 0.15, "c": 0.15},
            key=KEY,
            groups=groups,
            labels=y,
            method="auto",
            progress=False,
        )
    assert _check_sets(res, groups, x.shape[0]) == [1257, 270, 270]


@pytest.mark.parametrize(
    "groups",
    [
        np.where(np.arange(30) == 7, np.nan, np.arange(30) // 3).astype(np.float64),
        np.array([str(i // 3) if i != 4 else float("nan") for i in range(30)], dtype=object),
    ],
    ids=["float", "object"],
)
def test_nan_group_ids_are_refused(groups):
    x = _x(30)
    with pytest.raises(ValueError, match="groups must not contain NaN: group id at position"):
        gj.split(x, {"a": 0.5, "b": 0.5}, key=KEY, groups=groups, progress=False)
    with pytest.raises(ValueError, match="groups must not contain NaN"):
        gj.select(x, 6, key=KEY, groups=groups, progress=False)


@pytest.mark.parametrize("method", ["kcenter", "random", "herding"])
@pytest.mark.parametrize("count", [5, 209, 977, 978])
def test_select_meets_reachable_counts_with_whole_groups(method, count):
    # Reachable: 6k or 6k + 5 samples. The greedy fill can take the wrong groups (e.g. the
    # group of 5 for a multiple of 6): the picks are packed to the exact count.
    groups = np.arange(N6) // 6
    sel = gj.select(_x(N6), count, key=KEY, groups=groups, method=method, progress=False)
    assert len(sel) == count == np.unique(sel.indices).size
    chosen = set(sel.indices.tolist())
    for g in np.unique(groups[sel.indices]):
        assert set(np.flatnonzero(groups == g).tolist()) <= chosen
    assert sel.group_counts == {
        "requested": count,
        "achieved": count,
        "exact": True,
        "optimal": True,
    }


@pytest.mark.parametrize("count, want", [(7, 6), (8, 6), (9, 11), (100, 101)])
def test_select_unreachable_count_gives_nearest_with_warning(count, want):
    # nearest of 6k and 6k + 5 (ties to fewer selected): 7 -> 6, 8 -> 6 (|2| vs |3|),
    # 9 -> 11 (|2| vs |3|), 100 -> 101
    groups = np.arange(N6) // 6
    with pytest.warns(UserWarning, match=f"nearest reachable count, {want}"):
        sel = gj.select(_x(N6), count, key=KEY, groups=groups, progress=False)
    assert len(sel) == want
    assert sel.group_counts == {
        "requested": count,
        "achieved": want,
        "exact": False,
        "optimal": True,
    }
    chosen = set(sel.indices.tolist())
    for g in np.unique(groups[sel.indices]):
        assert set(np.flatnonzero(groups == g).tolist()) <= chosen


def test_select_group_packing_keeps_the_picks_first():
    # The packed selection starts with the greedy picks (pick order), so the selection order
    # stays the method's: the exact 978 of kcenter begin with its first picks.
    groups = np.arange(N6) // 6
    x = _x(N6)
    # 60 is reachable greedily
    small = gj.select(x, 60, key=KEY, method="kcenter", groups=groups, progress=False)
    big = gj.select(x, 978, key=KEY, method="kcenter", groups=groups, progress=False)
    np.testing.assert_array_equal(big.indices[:60], small.indices)


def test_select_count_below_every_group_is_refused():
    with pytest.raises(ValueError, match="nearest count whole groups can meet is 0"):
        gj.select(_x(20), 3, key=KEY, groups=np.arange(20) // 10, progress=False)
