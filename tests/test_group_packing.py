"""Whole-group packing (``assign_groups_to_sets``) against brute force and closed-form cases."""

import itertools
import time

import numpy as np
import pytest

from goldener_jax._allocation import assign_groups_to_sets, check_group_ids, set_counts


def _brute(sizes, counts):
    """Every assignment of the groups to the sets: (reachable count vectors, the nearest by the
    documented rule: total |deviation|, then |deviation| set by set, then fewer samples first)."""
    sizes = np.asarray(sizes)
    counts = np.asarray(counts)
    k = counts.size
    assign = np.asarray(list(itertools.product(range(k), repeat=sizes.size)))
    totals = np.stack([(assign == j) @ sizes for j in range(k)], axis=1)
    reach = np.unique(totals, axis=0)
    dev = np.abs(reach - counts)
    keys = [
        tuple([int(d.sum()), *d.tolist(), *r.tolist()]) for d, r in zip(dev, reach, strict=True)
    ]
    nearest = reach[keys.index(min(keys))]
    return {tuple(r) for r in reach.tolist()}, nearest


def _check_consistent(res, sizes, num_sets):
    sizes = np.asarray(sizes)
    assert res.set_of_group.shape == sizes.shape
    assert ((res.set_of_group >= 0) & (res.set_of_group < num_sets)).all()
    totals = np.bincount(res.set_of_group, weights=sizes, minlength=num_sets).astype(np.int64)
    if res.achieved.ndim == 1:
        np.testing.assert_array_equal(totals, res.achieved)
    else:
        np.testing.assert_array_equal(totals, res.achieved.sum(axis=0))


def _random_case(seed, num_sets, max_groups):
    rng = np.random.default_rng(seed)
    g = int(rng.integers(1, max_groups + 1))
    hi = int(rng.choice([3, 6, 12]))
    sizes = rng.integers(1, hi + 1, g)
    n = int(sizes.sum())
    if seed % 2:  # reachable by construction
        owner = rng.integers(0, num_sets, g)
        counts = np.bincount(owner, weights=sizes, minlength=num_sets).astype(np.int64)
    else:  # any composition of n (often unreachable)
        cuts = np.sort(rng.integers(0, n + 1, num_sets - 1))
        counts = np.diff(np.r_[0, cuts, n])
    return sizes, counts


@pytest.mark.parametrize(
    "num_sets, max_groups, seed",
    [(3, 8, s) for s in range(40)]
    + [(2, 9, s) for s in range(12)]
    + [(4, 6, s) for s in range(12)],
)
def test_matches_brute_force(num_sets, max_groups, seed):
    sizes, counts = _random_case(seed, num_sets, max_groups)
    reach, nearest = _brute(sizes, counts)
    res = assign_groups_to_sets(sizes, counts)
    _check_consistent(res, sizes, num_sets)
    assert res.exact == (tuple(counts.tolist()) in reach)
    np.testing.assert_array_equal(res.achieved, nearest)
    np.testing.assert_array_equal(res.requested, counts)
    assert res.optimal
    assert res.deviation == int(np.abs(nearest - counts).sum())


@pytest.mark.parametrize("seed", range(12))
def test_two_sets_use_the_earliest_preferred_groups(seed):
    # The latest preference rank used by set 0 is the smallest any exact subset allows.
    rng = np.random.default_rng(100 + seed)
    g = int(rng.integers(3, 10))
    sizes = rng.integers(1, 7, g)
    order = rng.permutation(g)
    take = rng.random(g) < 0.5
    take[0] = True
    c0 = int(sizes[take].sum())
    counts = [c0, int(sizes.sum()) - c0]
    rank = np.empty(g, np.int64)
    rank[order] = np.arange(g)
    best = min(
        max(rank[list(sub)])
        for r in range(1, g + 1)
        for sub in itertools.combinations(range(g), r)
        if sizes[list(sub)].sum() == c0
    )
    res = assign_groups_to_sets(sizes, counts, order=order)
    assert res.exact
    assert rank[res.set_of_group == 0].max() == best


def test_preference_order_with_unit_groups():
    rng = np.random.default_rng(7)
    order = rng.permutation(50)
    res = assign_groups_to_sets(np.ones(50, int), [20, 18, 12], order=order)
    assert res.exact
    for k, part in enumerate(np.split(order, [20, 38])):
        assert (res.set_of_group[part] == k).all()
    # One order per set: each set takes the first groups of its own order still free.
    orders = np.stack([rng.permutation(50) for _ in range(3)])
    res = assign_groups_to_sets(np.ones(50, int), [20, 18, 12], order=orders)
    free = np.ones(50, bool)
    for k, c in enumerate([20, 18]):
        want = orders[k][free[orders[k]]][:c]
        assert set(np.flatnonzero(res.set_of_group == k)) == set(want.tolist())
        free[want] = False


def test_issue_groups_of_six_at_70_15_15():
    sizes = np.r_[np.full(232, 6), 5]  # 1,397 samples
    counts = list(set_counts({"train": 0.7, "val": 0.15, "test": 0.15}, 1397).values())
    assert counts == [978, 210, 209]
    res = assign_groups_to_sets(sizes, counts)
    assert res.exact and res.optimal
    np.testing.assert_array_equal(res.achieved, counts)
    _check_consistent(res, sizes, 3)
    assert res.set_of_group[-1] == 2  # 209 = 34 x 6 + 5: the group of 5 goes to test


def _six_five_nearest(counts):
    """Closed form reference for 232 groups of 6 and one of 5: set k gets n_k sixes and e_k
    fives (sum n_k = 232, sum e_k = 1); the nearest by the documented rule."""
    counts = np.asarray(counts)
    n0, n1 = (v.ravel() for v in np.meshgrid(np.arange(233), np.arange(233), indexing="ij"))
    n = np.stack([n0, n1, 232 - n0 - n1], axis=1)[n0 + n1 <= 232]
    a = np.concatenate([6 * n + 5 * (np.arange(3) == five) for five in range(3)])
    d = np.abs(a - counts)
    keys = np.concatenate([d.sum(axis=1, keepdims=True), d, a], axis=1)
    return a[np.lexsort(keys.T[::-1])[0]]


def test_issue_groups_of_six_at_80_10_10_is_unreachable_and_nearest():
    sizes = np.r_[np.full(232, 6), 5]
    counts = list(set_counts({"train": 0.8, "val": 0.1, "test": 0.1}, 1397).values())
    assert counts == [1117, 140, 140]  # 1117 is 1 mod 6: no set of 6s (and one 5) makes it
    res = assign_groups_to_sets(sizes, counts)
    assert not res.exact and res.optimal
    np.testing.assert_array_equal(res.achieved, _six_five_nearest(counts))
    np.testing.assert_array_equal(res.achieved, [1116, 138, 143])
    _check_consistent(res, sizes, 3)
    with pytest.raises(ValueError, match=r"\[1117, 140, 140\] exactly.*\[1116, 138, 143\]"):
        assign_groups_to_sets(sizes, counts, strict=True)


DIGITS_PER_LABEL = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]  # sklearn digits, 1,797


def test_digits_in_groups_of_three():
    counts = list(set_counts({"train": 0.7, "val": 0.15, "test": 0.15}, 1797).values())
    assert counts == [1258, 270, 269]
    # 599 groups of exactly 3: every set total is a multiple of 3, 1258 is not.
    res = assign_groups_to_sets(np.full(599, 3), counts)
    assert not res.exact and res.optimal
    np.testing.assert_array_equal(res.achieved, [1257, 270, 270])
    # Groups of 3 formed within each label (the last of a label smaller): exact.
    sizes, strata = [], []
    for label, n in enumerate(DIGITS_PER_LABEL):
        g = [3] * (n // 3) + ([n % 3] if n % 3 else [])
        sizes += g
        strata += [label] * len(g)
    sizes, strata = np.asarray(sizes), np.asarray(strata)
    res = assign_groups_to_sets(sizes, counts, strict=True)
    assert res.exact
    _check_consistent(res, sizes, 3)
    # Combined stratified rule: set totals exact, each label near its share.
    res = assign_groups_to_sets(sizes, counts, strata=strata, strict=True)
    assert res.exact
    _check_consistent(res, sizes, 3)
    for label, n in enumerate(DIGITS_PER_LABEL):
        got = np.bincount(res.set_of_group[strata == label], weights=sizes[strata == label])
        share = n * np.asarray(counts) / 1797
        assert np.abs(got - share).max() <= 12, (label, got, share)


@pytest.mark.parametrize("seed", range(6))
def test_per_stratum_counts_match_brute_force_per_stratum(seed):
    rng = np.random.default_rng(200 + seed)
    strata = rng.integers(0, 2, 10)
    strata[:2] = [0, 1]
    sizes = rng.integers(1, 6, 10)
    rows = []
    for s in range(2):
        n = int(sizes[strata == s].sum())
        cuts = np.sort(rng.integers(0, n + 1, 2))
        rows.append(np.diff(np.r_[0, cuts, n]))
    counts = np.stack(rows)
    res = assign_groups_to_sets(sizes, counts, strata=strata)
    assert res.achieved.shape == (2, 3)
    for s in range(2):
        reach, nearest = _brute(sizes[strata == s], counts[s])
        np.testing.assert_array_equal(res.achieved[s], nearest)
        got = np.bincount(res.set_of_group[strata == s], weights=sizes[strata == s], minlength=3)
        np.testing.assert_array_equal(got, nearest)
    assert res.exact == bool(np.array_equal(res.achieved, counts))


def test_combined_strata_totals_match_unstratified_reachability():
    rng = np.random.default_rng(5)
    for _ in range(10):
        sizes = rng.integers(1, 5, 7)
        strata = rng.integers(0, 3, 7)
        strata[:3] = [0, 1, 2]
        owner = rng.integers(0, 3, 7)
        counts = np.bincount(owner, weights=sizes, minlength=3).astype(np.int64)
        res = assign_groups_to_sets(sizes, counts, strata=strata)
        assert res.exact  # reachable by construction, so the joint repair must find it
        _check_consistent(res, sizes, 3)


def test_unreachable_beyond_the_joint_table_is_still_nearest():
    # One group of 500,000 and 1,000 of one: the huge group sits in one set, so the nearest is
    # (500000, a1, a2) with a1 + a2 = 1000 and the earlier set closest: (500000, 1000, 0).
    sizes = np.r_[500_000, np.ones(1000, int)]
    res = assign_groups_to_sets(sizes, [350_700, 75_150, 75_150])
    assert not res.exact
    np.testing.assert_array_equal(res.achieved, [500_000, 1000, 0])
    _check_consistent(res, sizes, 3)


@pytest.mark.parametrize("kind", ["exact", "unreachable"])
def test_large_instance_is_fast(kind):
    rng = np.random.default_rng(0)
    if kind == "exact":
        sizes = rng.integers(1, 11, 100_000)
        n = int(sizes.sum())
        counts = list(set_counts({"a": 0.7, "b": 0.15, "c": 0.15}, n).values())
    else:
        sizes = np.full(100_000, 6)
        counts = [420_001, 90_001, 89_998]
    start = time.perf_counter()
    res = assign_groups_to_sets(sizes, counts, order=rng.permutation(sizes.size))
    elapsed = time.perf_counter() - start
    _check_consistent(res, sizes, 3)
    if kind == "exact":
        assert res.exact
    else:
        assert not res.exact and res.optimal
        np.testing.assert_array_equal(res.achieved, [420_000, 90_000, 90_000])
    assert elapsed < 10.0, elapsed


def test_strict_passes_when_exact_and_errors_name_the_problem():
    assert assign_groups_to_sets([2, 2, 1], [2, 3], strict=True).exact
    with pytest.raises(ValueError, match=r"set counts \[1, 5\] exactly.*are \[0, 6\]"):
        assign_groups_to_sets([2, 2, 2], [1, 5], strict=True)
    with pytest.raises(ValueError, match=r"must sum to the number of samples in the groups \(5\)"):
        assign_groups_to_sets([2, 2, 1], [1, 3])
    with pytest.raises(ValueError, match="group_sizes must be >= 1, got 0 at position 1"):
        assign_groups_to_sets([2, 0, 1], [1, 2])
    with pytest.raises(ValueError, match="counts must be >= 0"):
        assign_groups_to_sets([2, 2, 1], [-1, 6])
    with pytest.raises(ValueError, match="group_sizes must be a non-empty 1-D"):
        assign_groups_to_sets([1.5, 2.0], [1, 2])
    with pytest.raises(ValueError, match=r"order\[0\] must be a permutation of range\(3\)"):
        assign_groups_to_sets([2, 2, 1], [2, 3], order=[0, 0, 1])
    with pytest.raises(ValueError, match=r"order must have shape \[3\] or \[2, 3\]"):
        assign_groups_to_sets([2, 2, 1], [2, 3], order=np.zeros((3, 3), int))
    with pytest.raises(ValueError, match="strata must be"):
        assign_groups_to_sets([2, 2, 1], [2, 3], strata=[0, 1])
    with pytest.raises(ValueError, match=r"counts\[1\] must sum to the samples of stratum 1"):
        assign_groups_to_sets([2, 2, 1], [[2, 2], [0, 2]], strata=[0, 0, 1])


def test_check_group_ids_refuses_nan():
    with pytest.raises(ValueError, match="position 3 is NaN"):
        check_group_ids(np.array([0.0, 1.0, 1.0, np.nan, np.nan]))
    with pytest.raises(ValueError, match="position 1 is NaN"):
        check_group_ids(np.array(["a", float("nan")], dtype=object))
    with pytest.raises(ValueError, match="1-D"):
        check_group_ids(np.zeros((2, 2)))
    ok = check_group_ids([3, 3, 1])
    np.testing.assert_array_equal(ok, [3, 3, 1])
    assert check_group_ids(np.array(["x", "y"])).tolist() == ["x", "y"]
    assert check_group_ids(np.array([0.5, 1.5])).tolist() == [0.5, 1.5]


def test_per_stratum_packing_follows_each_stratum_part_of_the_order():
    rng = np.random.default_rng(11)
    strata = rng.integers(0, 3, 40)
    order = rng.permutation(40)
    counts = []
    for s in range(3):
        n = int((strata == s).sum())
        counts.append([n // 2, n // 4, n - n // 2 - n // 4])
    res = assign_groups_to_sets(np.ones(40, int), counts, strata=strata, order=order)
    assert res.exact
    for s in range(3):
        part = order[strata[order] == s]
        for k, chunk in enumerate(np.split(part, np.cumsum(counts[s])[:-1])):
            assert (res.set_of_group[chunk] == k).all(), (s, k)
