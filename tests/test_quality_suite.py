"""The multi-dataset quality suite (benchmarks/quality_suite.py) and the auto-rule fit
(benchmarks/auto_rule.py): a tiny real run and the rule choice on hand-made results."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from goldener_jax.benchmarks import auto_rule, quality_suite
from goldener_jax.pipeline import BudgetRule


def test_knn_probe_matches_sklearn():
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(0)
    tx, ty = rng.normal(size=(30, 5)), rng.integers(0, 3, 30)
    vx, vy = rng.normal(size=(50, 5)), rng.integers(0, 3, 50)
    ref = KNeighborsClassifier(n_neighbors=1).fit(tx, ty).score(vx, vy)
    assert quality_suite.knn_accuracy(tx, ty, vx, vy) == pytest.approx(ref)


def test_split_is_stratified_and_standardised_on_the_pool():
    x, y = quality_suite.load_dataset("iris")
    px, py, tx, ty = quality_suite.split_standardised(x, y, seed=3)
    assert len(py) + len(ty) == 150 and np.bincount(ty).tolist() == [15, 15, 15]
    np.testing.assert_allclose(px.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(px.std(0), 1, atol=1e-4)


def test_max_rows_subsamples_stratified():
    from sklearn.datasets import load_digits

    x, y = quality_suite.load_dataset("digits", max_rows=500)
    share = np.bincount(load_digits().target) / 1797
    assert x.shape == (500, 64) and np.abs(np.bincount(y) - 500 * share).max() < 1


def test_tiny_suite_run():
    args = argparse.Namespace(
        seeds=2,
        budgets="0.1",
        suite_methods="kcenter,random",
        datasets="iris,wine",
        max_rows=3000,
        random_subsets=3,
        suite_zcore_samples=500,
        partial_json=None,
        plot=None,
    )
    out = quality_suite.run(args)
    assert set(out["datasets"]) == {"iris", "wine"}
    for name, n in (("iris", 150), ("wine", 178)):
        ds = out["datasets"][name]
        cell = ds["budgets"]["0.1"]
        assert ds["pool"] == n - int(np.ceil(0.3 * n)) and cell["count"] == int(
            np.ceil(0.1 * ds["pool"])
        )
        for m in ("kcenter", "random"):
            for p in ("linear", "knn"):
                accs = np.asarray(cell["methods"][m][p])
                assert accs.shape == (2,) and np.all((accs >= 0) & (accs <= 1))
        g = quality_suite.gains(ds, "kcenter", "0.1", "knn")
        ref = 100 * (
            np.asarray(cell["methods"]["kcenter"]["knn"])
            - np.asarray(cell["random"]["knn"]["mean"])
        )
        np.testing.assert_allclose(g, ref)
    lodo = auto_rule.leave_one_dataset_out(out)
    assert [r["dataset"] for r in lodo["lodo"]] == ["iris", "wine"]


def _fake_results(best_small, best_large, switch_budget):
    """Hand-made results: ``best_small`` gains 5 points below ``switch_budget``, ``best_large``
    from it on, every other method 0 (random's mean accuracy is 0.5 everywhere)."""
    budgets = ["0.01", "0.05", "0.2"]
    methods = ["a", "b", "c"]
    datasets = {}
    for d in range(3):
        cells = {}
        for b in budgets:
            win = best_small if float(b) < switch_budget else best_large
            cells[b] = {
                "count": int(np.ceil(float(b) * 1000)),
                "random": {p: {"mean": [0.5] * 4, "std": [0.0] * 4} for p in ("linear", "knn")},
                "methods": {
                    m: {p: [0.55 + 0.01 * d if m == win else 0.5] * 4 for p in ("linear", "knn")}
                    for m in methods
                },
            }
        datasets[f"d{d}"] = {"pool": 1000, "budgets": cells}
    return {"budgets": budgets, "methods": methods, "datasets": datasets}


def test_choose_finds_the_planted_switch():
    res = _fake_results("b", "c", 0.1)
    rules = auto_rule.candidates(res["methods"], res["budgets"])
    rule, rank, gain = auto_rule.choose(rules, res, list(res["datasets"]), ("linear",))
    ranks, _ = auto_rule.score(rules, res, list(res["datasets"]), ("linear",))
    # +5, +6, +7 points over the datasets; rules tied at the top share their mean rank
    assert rank == ranks.min() and gain == pytest.approx(5 + 1)
    assert [rule(1000, c) for c in (10, 50, 200)] == ["b", "b", "c"]


def test_single_method_wins_ties_with_rules():
    res = _fake_results("a", "a", 0.1)
    rules = auto_rule.candidates(res["methods"], res["budgets"])
    rule, _, _ = auto_rule.choose(rules, res, list(res["datasets"]), ("linear",))
    assert rule == auto_rule.SingleMethod("a")


def test_lodo_scores_the_held_out_dataset():
    res = _fake_results("b", "c", 0.1)
    lodo = auto_rule.leave_one_dataset_out(res, ("linear", "knn"))
    for row in lodo["lodo"]:
        d = int(row["dataset"][1])
        assert row["mean_gain_rule"] == pytest.approx(5 + d)
        assert [row["cells"][b]["method"] for b in res["budgets"]] == ["b", "b", "c"]
        assert row["cells"]["0.2"]["linear"]["seeds_above"] == 4


@pytest.mark.parametrize("n,count", [(100, 1), (100, 14), (100, 15), (1000, 151), (7, 1)])
def test_suite_rule_has_budget_rule_semantics(n, count):
    ours = auto_rule.SuiteRule(0.15, "kmeans_medoids", "kcenter")
    assert ours(n, count) == BudgetRule()(n, count)


def test_merge_joins_datasets_and_refuses_other_protocols(tmp_path):
    import json

    a, b = _fake_results("b", "c", 0.1), _fake_results("b", "c", 0.1)
    for r in (a, b):
        r.update(seeds=4, probes=["linear", "knn"], random_subsets=10, max_rows=3000, skipped={})
    b["datasets"] = {"e": b["datasets"]["d0"]}
    json.dump(a, open(tmp_path / "a.json", "w"))
    json.dump(b, open(tmp_path / "b.json", "w"))
    merged = auto_rule.merge([tmp_path / "a.json", tmp_path / "b.json"])
    assert list(merged["datasets"]) == ["d0", "d1", "d2", "e"]
    b["seeds"] = 5
    json.dump(b, open(tmp_path / "b.json", "w"))
    with pytest.raises(ValueError, match="seeds"):
        auto_rule.merge([tmp_path / "a.json", tmp_path / "b.json"])


@pytest.mark.parametrize(
    "n,count,want",
    [(1000, 39, "typical_kcenter"), (1000, 40, "probcover"), (10**6, 100, "probcover")],
)
def test_proposed_rule(n, count, want):
    assert auto_rule.PROPOSED(n, count) == want
    assert auto_rule.PROPOSED(np.zeros((n if n < 10**4 else 10, 2)), count) == want


def _fake_large(seeds=4):
    """One pool of 10,000: typical_kcenter +1 point everywhere, probcover +3 from 100 picks on
    and -2 below, random's own draw 0; the count and fraction rules disagree at 100 and 500
    picks (at or past 40 picks, below 7.1 %)."""
    budgets = ["0.001", "0.01", "0.05", "0.2"]
    cells = {}
    for b in budgets:
        count = int(np.ceil(float(b) * 10_000))
        gain = {"typical_kcenter": 0.01, "probcover": 0.03 if count >= 100 else -0.02, "random": 0}
        cells[b] = {
            "count": count,
            "random": {p: {"mean": [0.5] * seeds, "std": [0.0] * seeds} for p in ("linear", "knn")},
            "methods": {
                m: {p: [0.5 + g] * seeds for p in ("linear", "knn")} for m, g in gain.items()
            },
        }
    return {
        "budgets": budgets,
        "methods": ["typical_kcenter", "probcover", "random"],
        "datasets": {"big": {"pool": 10_000, "budgets": cells}},
    }


def test_held_out_check_scores_fixed_rules_and_the_cells_they_disagree_on():
    check = auto_rule.held_out_check(_fake_large())
    by_rule = {r["rule"]: r for r in check["rules"]}
    # count rule: tkc at 10 picks (+1), probcover at 100, 500, 2000 (+3 each)
    assert by_rule["typical_kcenter <40 picks<= probcover"]["mean_gain"] == pytest.approx(2.5)
    # fraction rule: tkc below 710 picks (+1 x 3), probcover at 2000 (+3)
    assert by_rule["typical_kcenter <7.1%<= probcover"]["mean_gain"] == pytest.approx(1.5)
    assert by_rule["typical_kcenter"]["mean_gain"] == pytest.approx(1.0)
    assert by_rule["probcover"]["mean_gain"] == pytest.approx((-2 + 9) / 4)
    assert by_rule["probcover"]["cells_below_random"] == 1
    assert by_rule["random"]["mean_gain"] == pytest.approx(0.0)
    assert [(c["budget"], c["count"]) for c in check["disagree"]] == [("0.01", 100), ("0.05", 500)]
    for c in check["disagree"]:
        assert c["methods"] == ["probcover", "typical_kcenter"]
        assert c["difference"] == pytest.approx(2.0) and c["stderr"] == pytest.approx(0.0)
        assert (c["seeds_above"], c["seeds_below"]) == (4, 0)
        assert c["sign_p"] == pytest.approx(0.125)  # two-sided, 4 of 4
    md = auto_rule.held_out_markdown(check)
    assert "| typical_kcenter <40 picks<= probcover | +2.50 | +2.50 | 0 |" in md
    assert "| big | 1.0% (100) | probcover - typical_kcenter: +2.00 ± 0.00 | 4 / 0 | 0.12 |" in md


def test_held_out_check_leaves_out_rules_naming_unmeasured_methods():
    check = auto_rule.held_out_check(
        _fake_large(), [auto_rule.SingleMethod("kcenter"), auto_rule.PROPOSED]
    )
    assert [r["rule"] for r in check["rules"]] == [
        "typical_kcenter <40 picks<= probcover",
        "random",
    ]
    assert check["disagree"] != []  # the count rule and random differ everywhere


def test_large_datasets_read_the_shipped_files():
    pytest.importorskip("statsmodels")
    path = quality_suite._package_file("statsmodels", "datasets", "randhie", "randhie.csv")
    raw = np.loadtxt(path, delimiter=",", skiprows=1)  # mdvis, 6 columns, hlthg, hlthf, hlthp
    x, y = quality_suite.load_dataset("randhie", max_rows=quality_suite.LARGE_MAX_ROWS)
    np.testing.assert_allclose(x, raw[:, 1:].astype(np.float32))
    np.testing.assert_array_equal(y, raw[:, 0] > 0)
    x, y = quality_suite.load_dataset("randhie_health", max_rows=quality_suite.LARGE_MAX_ROWS)
    np.testing.assert_allclose(x, raw[:, :7].astype(np.float32))
    health = raw[:, 7] + 2 * raw[:, 8] + 3 * raw[:, 9]  # excellent 0, good 1, fair 2, poor 3
    np.testing.assert_array_equal(y, health)
    x, y = quality_suite.load_dataset("fair_full", max_rows=quality_suite.LARGE_MAX_ROWS)
    assert x.shape == (6366, 8)  # uncapped; the suite's fair keeps 3,000
    assert quality_suite.load_dataset("fair")[0].shape == (3000, 8)


@pytest.mark.parametrize(
    "n,count,want",
    [
        (120, 5, "typical_kcenter"),
        (120, 39, "typical_kcenter"),
        (120, 40, "probcover"),
        (14_133, 39, "typical_kcenter"),
        (14_133, 71, "probcover"),  # 0.5 %: the fraction rule would say typical_kcenter
        (50_000, 40, "probcover"),
        (50_001, 100, "kmeans_medoids"),  # beyond max_pool: BudgetRule()
        (50_001, 10_000, "kcenter"),
    ],
)
def test_auto_is_the_count_rule_the_suite_chose(n, count, want):
    from goldener_jax.pipeline import AUTO, SuiteRule

    assert AUTO == SuiteRule() and AUTO.count_threshold == auto_rule.PROPOSED.count_threshold
    assert AUTO(n, count) == want
    if n <= AUTO.max_pool:
        assert AUTO(n, count) == auto_rule.PROPOSED(n, count)
    else:
        assert AUTO(n, count) == BudgetRule()(n, count)


@pytest.mark.parametrize("count,want", [(39, "typical_kcenter"), (40, "probcover")])
def test_select_auto_switches_at_40_picks(count, want):
    import jax

    import goldener_jax as gj

    x = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    sel = gj.select(x, count, key=jax.random.key(0), coverage=False, progress=False)
    assert sel.config["method"] == want and len(sel.indices) == count
    assert sel.config["auto"]["rule"] == "SuiteRule" and sel.config["auto"]["count_threshold"] == 40
