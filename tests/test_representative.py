"""Representative selection in ``select`` (k-means medoids, TypiClust, ProbCover,
typicality-weighted k-center) and the budget-aware auto."""

import jax
import numpy as np
import pytest

import goldener_jax as gj
from goldener_jax import kernels as gk
from goldener_jax.pipeline import AUTO, BudgetRule

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
        # ProbCover at a radius that lets a few balls cover each main cluster: once they are
        # covered, the rare cluster's ball is the one covering the most new points.
        sel = gj.select(
            x, k, key=KEY, method="probcover", coverage=False, method_options={"radius": 4.0}
        )
        assert is_rare[sel.indices].any()


@pytest.mark.parametrize(
    "method", REPRESENTATIVE + ["herding", "probcover", "typical_kcenter", "auto"]
)
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
    assert is_out[gj.select(x, 5, key=KEY, method="kcenter", coverage=False).indices].sum() >= 4


def test_budget_auto_rule():
    rule = gj.BudgetRule()
    assert rule(1000, 20) == "kmeans_medoids"
    assert rule(1000, 149) == "kmeans_medoids"
    assert rule(1000, 150) == "kcenter"
    _, x = _mixture(100)
    # A rule object can be passed as the method; method="auto" is the suite-fitted rule.
    assert gj.select(x, 5, key=KEY, method=BudgetRule()).config["method"] == "kmeans_medoids"
    assert gj.select(x, 30, key=KEY, method=BudgetRule()).config["method"] == "kcenter"
    assert AUTO == gj.SuiteRule()


# --------------------------------------------------------------------------- ProbCover


def _ref_probcover(x, k, r, anchors=None):
    """NumPy brute force: greedy max coverage of the full ball graph (float64)."""
    xd = x.astype(np.float64)
    ball = np.sqrt(((xd[:, None] - xd[None]) ** 2).sum(-1)) <= r
    covered = np.zeros(len(x), bool)
    if anchors is not None:
        ad = anchors.astype(np.float64)
        covered |= (np.sqrt(((ad[:, None] - xd[None]) ** 2).sum(-1)) <= r).any(0)
    size = ball.sum(1)
    taken = np.zeros(len(x), bool)
    out = []
    for _ in range(k):
        degree = (ball & ~covered[None]).sum(1)
        free = np.flatnonzero(~taken)
        best = max(free, key=lambda i: (degree[i], size[i], -i))
        out.append(best)
        taken[best] = True
        covered |= ball[best]
    return np.asarray(out)


def test_probcover_matches_numpy_greedy_max_coverage():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(150, 4)).astype(np.float32)
    r = gk.probcover_radius(x, 8)
    for k in (20, 150):  # 150: past full coverage, the densest remaining points
        got = gk.probcover(x, k, r, block_size=7)  # chunks of 7 newly covered points
        np.testing.assert_array_equal(np.asarray(got), _ref_probcover(x, k, r))
    anchors = rng.normal(size=(4, 4)).astype(np.float32)
    got = gk.probcover(x, 15, r, anchors=anchors)
    np.testing.assert_array_equal(np.asarray(got), _ref_probcover(x, 15, r, anchors))
    # Chunked runs equal one run.
    state = gk.probcover_init(x, 20, r)
    state = gk.probcover_run(state, x, max_steps=7)
    state = gk.probcover_run(gk.probcover_step(state, x), x)
    np.testing.assert_array_equal(np.asarray(state.selected), _ref_probcover(x, 20, r))
    with pytest.raises(ValueError, match="radius"):
        gk.probcover(x, 3, 0.0)


def test_probcover_radius_is_a_quantile_of_kth_neighbour_distances():
    rng = np.random.default_rng(12)
    x = rng.normal(size=(90, 3)).astype(np.float32)
    d = np.sqrt(((x[:, None].astype(np.float64) - x[None]) ** 2).sum(-1))
    kth = np.sort(d, axis=1)[:, 5]  # column 0 is the point itself
    for q in (0.5, 0.9):
        assert gk.probcover_radius(x, 5, quantile=q, block_size=16) == pytest.approx(
            np.quantile(kth, q), rel=1e-4
        )


def test_probcover_in_select_uses_the_kernel():
    _, x = _mixture(120)
    sel = gj.select(x, 10, key=KEY, method="probcover", coverage=False)
    r = gk.probcover_radius(x, 12)  # default num_neighbors = ceil(n / k)
    np.testing.assert_array_equal(sel.indices, np.asarray(gk.probcover(x, 10, r)))


# --------------------------------------------------------------------------- typical k-center


def _ref_typical_kcenter(x, k, num_neighbors, power):
    xd = x.astype(np.float64)
    d = np.sqrt(((xd[:, None] - xd[None]) ** 2).sum(-1))
    near = np.sort(d + np.diag(np.full(len(x), np.inf)), axis=1)[:, :num_neighbors]
    typ = 1.0 / near.mean(1)
    w = (typ / typ.max()) ** power
    out = [int(np.argmax(w))]
    min_d = d[out[0]].copy()
    for _ in range(k - 1):
        score = np.where(np.isin(np.arange(len(x)), out), -np.inf, w * min_d)
        out.append(int(np.argmax(score)))
        min_d = np.minimum(min_d, d[out[-1]])
    return np.asarray(out)


def test_typical_kcenter_matches_numpy():
    rng = np.random.default_rng(13)
    x = rng.normal(size=(120, 3)).astype(np.float32)
    for power in (1.0, 2.0):
        got = gk.typical_kcenter(x, 15, num_neighbors=10, power=power)
        np.testing.assert_array_equal(np.asarray(got), _ref_typical_kcenter(x, 15, 10, power))
    # power 0: plain k-center after the most typical point.
    got = np.asarray(gk.typical_kcenter(x, 10, num_neighbors=10, power=0.0))
    np.testing.assert_array_equal(got, _ref_typical_kcenter(x, 10, 10, 0.0))
    sel = gj.select(x, 15, key=KEY, method="typical_kcenter", coverage=False)
    np.testing.assert_array_equal(sel.indices, _ref_typical_kcenter(x, 15, 20, 1.0))


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
    rep = ev.summary(x, idx, labels=labels)
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
