"""The active-learning benchmark (benchmarks/active_learning.py) at a tiny size."""

from __future__ import annotations

import json

import numpy as np
import pytest

from goldener_jax.benchmarks import active_learning


def _digits(n=600):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.data.astype(np.float32)[:n]
    return (x - x.mean(0)) / 16.0, d.target[:n]


def test_one_seed_scores_the_picks_it_reports(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    x, y = _digits()
    out = active_learning.one_seed(
        x, y, 3, rounds=2, round_size=0.03, random_draws=2, method="kcenter", workdir=tmp_path
    )
    pool, test = train_test_split(np.arange(len(y)), test_size=0.3, random_state=3, stratify=y)
    count = int(np.ceil(0.03 * pool.size))
    assert out["counts"] == [count, 2 * count]
    first, second = out["picks"]
    assert len(first) == len(second) == count and not set(first) & set(second)
    # k-center is nested: the anchored rounds pick what one run for the total picks.
    assert sorted(out["picks_all"][1]) == sorted(out["scratch_picks"][1])
    assert out["rounds"][1] == out["scratch"][1]
    # The reported accuracy is a logistic regression on exactly the labelled picks.
    picks = pool[np.asarray(out["picks_all"][1])]
    clf = LogisticRegression(max_iter=2000).fit(x[picks], y[picks])
    assert out["rounds"][1] == pytest.approx(clf.score(x[test], y[test]))
    # The rounds' records are on disk, labels included.
    doc = json.loads((tmp_path / "rounds_seed3.json").read_text())
    assert [e["label"] for e in doc["labels"]] == y[pool][out["picks_all"][1]].tolist()


def test_cli_runs_and_writes_json(tmp_path):
    from goldener_jax.cli import main

    path = tmp_path / "al.json"
    argv = ["-q", "bench", "active-learning", "--seeds", "1", "--features", "raw"]
    assert main([*argv, "--rounds", "2", "--random-draws", "1", "--json", str(path)]) == 0
    out = json.loads(path.read_text())
    assert out["benchmark"] == "active-learning" and out["labels_seen_by_selection"] is False
    assert [r["round"] for r in out["rows"]] == [1, 2]
    assert [r["count"] for r in out["rows"]] == [26, 52]  # 2% of the 1,257-sample pool per round
    for r in out["rows"]:
        assert 0 < r["random_mean"] <= 1 and 0 < r["rounds_mean"] <= 1
        assert r["rounds_vs_random_points"] == pytest.approx(
            100 * (r["rounds_mean"] - r["random_mean"])
        )
