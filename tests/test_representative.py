"""Representative selection in ``select`` (k-means medoids, TypiClust) and the budget-aware auto."""

import jax
import numpy as np
import pytest

import goldener_jax as gj
from goldener_jax import kernels as gk
from goldener_jax.select import _AUTO, budget_auto, with_budget_auto

KEY = jax.random.key(0)
REPRESENTATIVE = ["kmeans_medoids", "typiclust"]


def _mixture(n=400, d=4, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=5.0, size=(3, d))
    return centres, (centres[rng.integers(0, 3, n)] + rng.normal(size=(n, d))).astype(np.float32)


@pytest.mark.parametrize("method", REPRESENTATIVE)
def test_select_equals_the_kernels(method):
    _, x = _mixture(120)
    sel = gj.select(x, 12, key=KEY, method=method, coverage=False)
    # One task (no labels, one chunk): k-means from the task key fold_in(key, 0).
    c, a = gk.kmeans(x, 12, jax.random.fold_in(KEY, 0))
    if method == "kmeans_medoids":
        ref = gk.kmeans_medoids(x, c, a, min_cluster_size=5)
    else:
        ref = gk.typical_points(x, c, a, num_neighbors=20, min_cluster_size=5)
    np.testing.assert_array_equal(sel.indices, np.asarray(ref))
    assert sel.config["method"] == method
    again = gj.select(x, 12, key=KEY, method=method, coverage=False)
    np.testing.assert_array_equal(sel.indices, again.indices)


@pytest.mark.parametrize("method", REPRESENTATIVE)
def test_stratified_cosine_and_checkpointed(method, tmp_path):
    _, x = _mixture(90, seed=1)
    labels = np.arange(90) % 3
    sel = gj.select(x, 0.1, key=KEY, method=method, labels=labels, metric="cosine")
    assert sel.label_counts == {0: 3, 1: 3, 2: 3} and len(set(sel.indices.tolist())) == 9
    plain = gj.select(x, 9, key=KEY, method=method, coverage=False)
    ckpt = gj.select(
        x,
        9,
        key=KEY,
        method=method,
        coverage=False,
        checkpoint_dir=tmp_path / "c",
        checkpoint_every=1,
    )
    np.testing.assert_array_equal(plain.indices, ckpt.indices)


def test_coverage_methods_include_a_planted_rare_cluster():
    centres, x = _mixture()
    rng = np.random.default_rng(5)
    rare = centres.mean(0) + np.array([30.0, 0, 0, 0]) + rng.normal(scale=0.5, size=(5, 4))
    x = np.concatenate([x, rare.astype(np.float32)])
    is_rare = np.arange(len(x)) >= 400
    for k in (5, 10):
        sel = gj.select(x, k, key=KEY, method="kcenter", coverage=False)
        assert is_rare[sel.indices].any()


@pytest.mark.parametrize("method", REPRESENTATIVE + ["herding"])
def test_representative_methods_avoid_planted_outliers(method):
    _, x = _mixture()
    rng = np.random.default_rng(7)
    dirs = rng.normal(size=(6, 4))
    outliers = 40.0 * dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    x = np.concatenate([x, outliers.astype(np.float32)])
    is_out = np.arange(len(x)) >= 400
    sel = gj.select(x, 12, key=KEY, method=method, coverage=False)
    assert not is_out[sel.indices].any()
    # ... whereas k-center, built for coverage, takes them first.
    assert is_out[gj.select(x, 5, key=KEY, coverage=False).indices].sum() >= 4


def test_budget_auto_rule_and_hook():
    assert budget_auto(1000, 20, {}) == "kmeans_medoids"
    assert budget_auto(1000, 149, {}) == "kmeans_medoids"
    assert budget_auto(1000, 150, {}) == "kcenter"
    _, x = _mixture(100)
    # The budget rule is method="auto"'s default; the context manager keeps working.
    assert gj.select(x, 5, key=KEY, method="auto").config["method"] == "kmeans_medoids"
    assert gj.select(x, 30, key=KEY, method="auto").config["method"] == "kcenter"
    before = list(_AUTO)
    with with_budget_auto():
        assert gj.select(x, 5, key=KEY, method="auto").config["method"] == "kmeans_medoids"
    assert _AUTO == before


# --------------------------------------------------------------------------- evaluate


def test_evaluate_measures_match_brute_force():
    from goldener_jax import evaluate as ev

    rng = np.random.default_rng(3)
    x = rng.normal(size=(70, 3)).astype(np.float32)
    idx = np.array([1, 5, 9, 30, 44, 61])
    xd = x.astype(np.float64)
    d = np.sqrt(((xd[:, None] - xd[None]) ** 2).sum(-1))
    s = idx
    assert ev.coverage_radius(x, idx) == pytest.approx(d[:, s].min(1).max(), rel=1e-4)
    energy = 2 * d[s].mean() - d[np.ix_(s, s)].mean() - d.mean()
    assert ev.energy_distance(x, idx, block_size=8) == pytest.approx(energy, rel=1e-3, abs=1e-5)
    k = np.exp(-(d**2) / (2 * 1.3**2))
    mmd = k[np.ix_(s, s)].mean() + k.mean() - 2 * k[s].mean()
    assert ev.mmd(x, idx, length_scale=1.3, block_size=8) == pytest.approx(mmd, rel=1e-3)
    labels = np.arange(70) % 2
    bal = ev.class_balance(labels, idx)
    assert bal["selected"] == [2, 4] and bal["total"] == [35, 35]
    assert bal["total_variation"] == pytest.approx(1 / 6)
    rep = ev.report(x, idx, labels=labels)
    assert rep["count"] == 6 and "class_balance" in rep
    # The whole data against itself: every distance is 0.
    assert ev.mmd(x, np.arange(70)) == pytest.approx(0.0, abs=1e-5)
    assert ev.energy_distance(x, np.arange(70)) == pytest.approx(0.0, abs=1e-4)
    with pytest.raises(ValueError, match="indices must lie"):
        ev.mmd(x, np.array([70]))
    with pytest.raises(ValueError, match="empty"):
        ev.energy_distance(x, np.array([], np.int64))


def test_evaluate_ranks_methods_by_their_objectives():
    from goldener_jax import evaluate as ev

    _, x = _mixture(150)
    picks = {
        m: gj.select(x, 15, key=KEY, method=m, coverage=False).indices
        for m in ("herding", "kcenter", "kmeans_medoids")
    }
    # Herding minimises the MMD, k-center the coverage radius.
    assert ev.mmd(x, picks["herding"]) < min(
        ev.mmd(x, picks[m]) for m in ("kcenter", "kmeans_medoids")
    )
    radius = {m: ev.coverage_radius(x, p) for m, p in picks.items()}
    assert radius["kcenter"] == min(radius.values())


def test_bench_quality_runs_small(capsys):
    import argparse

    from goldener_jax.benchmarks import load

    mod = load("quality")
    parser = argparse.ArgumentParser()
    mod.add_arguments(parser)
    args = parser.parse_args(
        ["--seeds", "1", "--budgets", "0.05", "--methods", "random,auto", "--no-stratified"]
    )
    out = mod.run(args)
    assert out["auto_resolved"] == {"plain@0.05": "kmeans_medoids"}
    assert [r["method"] for r in out["rows"]] == ["random", "auto"]
    assert "| auto |" in capsys.readouterr().out
    assert _AUTO == [_AUTO[0]]  # the rule is uninstalled afterwards
