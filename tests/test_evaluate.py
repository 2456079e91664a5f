"""goldener_jax.evaluate.compare_to_random and the ``goldener-jax evaluate`` command."""

import json

import jax
import numpy as np
import pytest

from goldener_jax import cli
from goldener_jax import evaluate as ev
from goldener_jax import kernels as gk

KEY = jax.random.key(0)


def test_t_interval_closed_form():
    # mean 3, sample std sqrt(2.5), t_{0.975, 4} = 2.7764451
    lo, hi = ev.t_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.7764451 * np.sqrt(2.5) / np.sqrt(5)
    assert lo == pytest.approx(3 - half, rel=1e-6) and hi == pytest.approx(3 + half, rel=1e-6)
    assert ev.t_interval([0.7]) == (0.7, 0.7)


def _data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = (rng.normal(size=(n, 4)) + 3.0 * y[:, None]).astype(np.float32)
    return x, y


def test_compare_to_random_against_its_definition():
    x, y = _data()
    test_x, test_y = _data(30, seed=1)
    idx = np.array([0, 1, 2, 3, 4, 5, 6, 9])

    def share_of_zeros(tx, ty, sx, sy):  # a deterministic "training function"
        return float(np.mean(ty == 0))

    out = ev.compare_to_random(
        x, y, idx, test_x=test_x, test_y=test_y, key=KEY, train_fn=share_of_zeros, seeds=5
    )
    expect = [
        float(np.mean(y[np.asarray(gk.random_subset(jax.random.fold_in(KEY, s), 60, 8))] == 0))
        for s in range(5)
    ]
    r = out["random"]["accuracy"]
    assert r["values"] == pytest.approx(expect)
    assert r["mean"] == pytest.approx(np.mean(expect))
    assert r["std"] == pytest.approx(np.std(expect, ddof=1))
    assert r["ci95"] == pytest.approx(list(ev.t_interval(expect)))
    sel_acc = float(np.mean(y[idx] == 0))
    assert out["selection"]["accuracy"] == pytest.approx(sel_acc)
    d = out["difference"]
    assert d["accuracy"] == pytest.approx(sel_acc - np.mean(expect))
    assert d["ci95"] == pytest.approx([sel_acc - r["ci95"][1], sel_acc - r["ci95"][0]])
    assert d["beats"] == sum(sel_acc >= e for e in expect)
    assert out["selection"]["mmd"] == pytest.approx(ev.mmd(x, idx))
    assert out["selection"]["class_balance"]["selected"] == [4, 2, 2]
    assert "accuracy" in ev.comparison_table(out)
    with pytest.raises(ValueError, match="distinct"):
        ev.compare_to_random(x, y, np.array([1, 1]), test_x=test_x, test_y=test_y, key=KEY)
    with pytest.raises(ValueError, match="test_x"):
        ev.compare_to_random(x, y, idx, test_x=test_x[:, :2], test_y=test_y, key=KEY)


def test_compare_to_random_default_classifier_sees_a_class_balanced_selection_win():
    x, y = _data(300, seed=2)
    test_x, test_y = _data(150, seed=3)
    # 3 samples per class: the logistic regression separates the shifted blobs.
    idx = np.concatenate([np.flatnonzero(y == c)[:3] for c in range(3)])
    out = ev.compare_to_random(
        x, y, idx, test_x=test_x, test_y=test_y, key=KEY, seeds=4, measures=False
    )
    assert out["selection"]["accuracy"] > 0.9
    assert set(out["random"]) == {"accuracy"}


def test_cli_evaluate(tmp_path, capsys):
    x, y = _data(90)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "sel.npy", np.arange(0, 90, 10))
    tx, ty = _data(30, seed=4)
    np.save(tmp_path / "tx.npy", tx)
    np.save(tmp_path / "ty.npy", ty)
    base = ["evaluate", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy")]
    base += ["--selection", str(tmp_path / "sel.npy"), "--seeds", "3"]
    out_json = tmp_path / "r.json"
    rc = cli.main(
        base
        + ["--test-vectors", str(tmp_path / "tx.npy"), "--test-labels", str(tmp_path / "ty.npy")]
        + ["--json", str(out_json)]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "9 selected of 90; 30 test samples" in text and "mmd" in text
    saved = json.loads(out_json.read_text())
    assert saved["count"] == 9 and len(saved["random"]["accuracy"]["values"]) == 3
    # Without a test set: a stratified 30% of the 81 unselected samples (25) is held out.
    assert cli.main(base + ["--no-measures"]) == 0
    text = capsys.readouterr().out
    assert "9 selected of 65; 25 test samples" in text and "mmd" not in text


def test_summary_gathers_every_measure_and_report_no_longer_shadows_the_module():
    x, y = _data()
    idx = np.array([0, 4, 8, 13, 21, 34])
    got = ev.summary(x, idx, labels=y, metric="cosine")
    assert got == {
        "count": 6,
        "n": 60,
        "coverage_radius": ev.coverage_radius(x, idx, metric="cosine"),
        "mmd": ev.mmd(x, idx),
        "energy_distance": ev.energy_distance(x, idx),
        "class_balance": ev.class_balance(y, idx),
    }
    # the coverage radius is the brute-force one: farthest row from its nearest selected row
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert got["coverage_radius"] == pytest.approx((1 - u @ u[idx].T).min(1).max(), abs=1e-5)
    assert "class_balance" not in ev.summary(x, idx)
    assert not hasattr(ev, "report")  # goldener_jax.report is the report-writing module


def test_compare_to_random_progress_bar_on_stderr(capsys):
    x, y = _data()
    kw = {"test_x": x, "test_y": y, "key": KEY, "seeds": 2, "measures": False}
    ev.compare_to_random(x, y, np.arange(6), **kw)
    assert "compare to random" in capsys.readouterr().err
    ev.compare_to_random(x, y, np.arange(6), progress=False, **kw)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("offset", [0.0, 300.0, 1000.0])
def test_measures_do_not_move_with_the_data_s_offset(offset):
    # Energy distance, MMD and the coverage radius do not change under a shift; their float32
    # |a|^2 + |b|^2 - 2 a.b did (2 %, 8 % and 1 % at 1,000 from the origin). Float64 brute force
    # on the same float32 rows.
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(150, 4)) + offset).astype(np.float32)
    idx = rng.choice(150, 20, replace=False)
    X = x.astype(np.float64)
    s = X[idx]

    def dist(a, b):
        return np.sqrt(np.maximum(((a[:, None] - b[None]) ** 2).sum(-1), 0))

    energy = 2 * dist(s, X).mean() - dist(s, s).mean() - dist(X, X).mean()
    scale = float(gk.median_length_scale(x - x.mean(axis=0)))

    def k(a, b):
        return np.exp(-(dist(a, b) ** 2) / (2 * scale**2))

    mmd = k(s, s).mean() + k(X, X).mean() - 2 * k(s, X).mean()
    assert ev.energy_distance(x, idx) == pytest.approx(energy, rel=1e-3)
    assert ev.mmd(x, idx, length_scale=scale) == pytest.approx(mmd, rel=1e-3)
    assert ev.coverage_radius(x, idx) == pytest.approx(dist(X, s).min(axis=1).max(), rel=1e-4)
