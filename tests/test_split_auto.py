"""``split(method="auto")``, the default: exact counts label by label, and the hard samples
paired over each label, a pair dealt to train whole or split between validation and test
(checked against a NumPy float64 ridge)."""

import json

import jax
import numpy as np
import pytest

import goldener_jax as gj
from goldener_jax import cli
from goldener_jax._allocation import set_counts

KEY = jax.random.key(0)


def _overlapping(n=240, seed=0, labels=3):
    """Labels whose classes overlap, so a linear fit gets many samples nearly wrong."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, labels, n)
    centres = rng.normal(scale=1.5, size=(labels, 4))
    return (centres[y] + rng.normal(size=(n, 4))).astype(np.float32), y


def _ridge_difficulty(x, y):
    """Reference: best other label's score minus its own, ridge one-vs-rest (targets +-1, L2 1,
    intercept column penalised too, centred features), in float64."""
    v = np.c_[x - x.mean(0), np.ones(len(x))].astype(np.float64)
    t = -np.ones((len(y), y.max() + 1))
    t[np.arange(len(y)), y] = 1.0
    s = v @ np.linalg.solve(v.T @ v + np.eye(v.shape[1]), v.T @ t)
    own = s[np.arange(len(y)), y].copy()
    s[np.arange(len(y)), y] = -np.inf
    return s.max(1) - own


def test_auto_is_the_default_of_split_and_of_the_cli(tmp_path):
    x, y = _overlapping()
    sets = {"train": 0.7, "val": 0.15, "test": 0.15}
    default = gj.split(x, sets, key=KEY, labels=y, manifest_path=False, progress=False)
    auto = gj.split(x, sets, method="auto", key=KEY, labels=y, manifest_path=False, progress=False)
    assert default.manifest["method"] == "auto"
    for name in sets:
        np.testing.assert_array_equal(default[name], auto[name])
    np.save(tmp_path / "v.npy", x)
    np.save(tmp_path / "l.npy", y)
    out = tmp_path / "out"
    argv = ["split", str(tmp_path / "v.npy"), "--labels", str(tmp_path / "l.npy")]
    for name, ratio in sets.items():
        argv += ["--set", f"{name}={ratio}"]
    assert cli.main([*argv, "--out", str(out), "--quiet"]) == 0
    manifest = json.loads((out / "split.json").read_text())
    assert manifest["method"] == "auto"
    for name in sets:
        np.testing.assert_array_equal(np.load(out / f"{name}.npy"), auto[name])


@pytest.mark.parametrize(
    "sets",
    [
        {"train": 0.7, "val": 0.15, "test": 0.15},
        {"train": 0.6, "val": 0.25, "test": 0.15},  # held-out sets of different sizes
        {"val": 0.2, "train": 0.6, "test": 0.2},  # the largest set is not the first
    ],
)
def test_exact_counts_and_label_shares_with_matched_pairs(sets):
    x, y = _overlapping(seed=1)
    result = gj.split(x, sets, key=KEY, labels=y, manifest_path=False, progress=False)
    assert {k: len(v) for k, v in result.items()} == set_counts(sets, len(y))
    assert sorted(np.concatenate(list(result.values())).tolist()) == list(range(len(y)))
    construction = result.manifest["construction"]
    assert construction["held_out_pairs"] is True
    held = sorted(v for k, v in set_counts(sets, len(y)).items() if k != "train")
    # twins before the deal only for held-out sets of equal size; else pairs after it
    assert construction["twins_dealt"] is (held[1] - held[0] <= 1)
    assert construction["hard_units"] == int(np.count_nonzero(_ridge_difficulty(x, y) > -1.0))
    for idx in result.values():  # each label's share of each set within 1 of proportional
        for lab in range(3):
            share = np.count_nonzero(y == lab) * len(idx) / len(y)
            assert abs(np.count_nonzero(y[idx] == lab) - share) <= 1.0 + 1e-9


def _split_overlapping(seed):
    """Labels, reference ridge difficulty and each sample's set of a 70/15/15 auto split."""
    x, y = _overlapping(seed=seed)
    sets = {"train": 0.7, "val": 0.15, "test": 0.15}
    result = gj.split(
        x, sets, key=jax.random.key(seed), labels=y, manifest_path=False, progress=False
    )
    where = np.full(len(y), "", object)
    for name, idx in result.items():
        where[idx] = name
    return y, _ridge_difficulty(x, y), where


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hardest_held_out_samples_of_a_label_are_split_between_val_and_test(seed):
    y, difficulty, where = _split_overlapping(seed)
    checked = 0
    for lab in range(3):
        held = np.flatnonzero((y == lab) & (where != "train") & (difficulty > -1.0))
        ranked = held[np.argsort(-difficulty[held], kind="stable")]
        if (where[ranked] == "val").sum() == 0 or (where[ranked] == "test").sum() == 0:
            continue
        # the first pair is the two hardest; only checked when the reference ranks are clear
        d = difficulty[ranked]
        if len(d) > 2 and d[1] - d[2] > 1e-3:
            assert {where[ranked[0]], where[ranked[1]]} == {"val", "test"}
            checked += 1
    assert checked >= 1


@pytest.mark.parametrize("seed", [0, 3])
def test_hard_samples_are_twins_over_the_whole_label(seed):
    # Pairs are formed over each label before the deal: the hard samples of a label ranked by
    # difficulty, first with second, third with fourth, ...; a pair goes to train whole or is
    # split between validation and test, never one twin in train and one held out.
    y, difficulty, where = _split_overlapping(seed)
    checked = split = 0
    for lab in range(3):
        hard = np.flatnonzero((y == lab) & (difficulty > -1.0))
        d = np.sort(difficulty[hard])[::-1]
        ranked = hard[np.argsort(-difficulty[hard], kind="stable")]
        for k in range(0, 2 * (len(ranked) // 2), 2):
            # only pairs whose reference ranks are clear (float32 XLA vs float64 NumPy)
            gaps = np.abs(np.diff(d[max(k - 1, 0) : k + 3]))
            if gaps.size and gaps.min() < 1e-3:
                continue
            pair = {where[ranked[k]], where[ranked[k + 1]]}
            assert pair in ({"train"}, {"val", "test"}), (lab, k, pair)
            checked += 1
            split += pair == {"val", "test"}
    assert checked >= 20 and split >= 3


def test_error_prone_samples_are_balanced_between_val_and_test():
    # Samples the reference ridge gets wrong: validation and test hold nearly as many each
    # (pairs split them; per label at most one pair straddles 0 plus the unpaired few), a
    # stratified random split does not.
    x, y = _overlapping(n=600, seed=4)
    wrong = _ridge_difficulty(x, y) > 0
    sets = {"train": 0.7, "val": 0.15, "test": 0.15}
    gaps_auto, gaps_random = [], []
    for s in range(4):
        kw = dict(key=jax.random.key(s), labels=y, manifest_path=False, progress=False)
        auto = gj.split(x, sets, **kw)
        rand = gj.split(x, sets, method="random", **kw)
        gaps_auto.append(abs(int(wrong[auto["val"]].sum()) - int(wrong[auto["test"]].sum())))
        gaps_random.append(abs(int(wrong[rand["val"]].sum()) - int(wrong[rand["test"]].sum())))
    assert max(gaps_auto) <= 3 * 3
    assert np.mean(gaps_auto) < np.mean(gaps_random)


@pytest.mark.parametrize(
    ("max_values", "width", "want"), [(1 << 20, 4, 60), (16, 4, 4), (12, 4, 3)]
)
def test_wide_vectors_get_fewer_cells(monkeypatch, max_values, width, want):
    # k-means keeps copies of its [cells, d] centroids on every device: cells x width is capped
    # (2^20 values: 256 cells up to 4,096 dims, 8 at 131,072). Here the cap is shrunk so that
    # 4-wide rows meet it: 240 units in cells of 4 would be 60 cells.
    from goldener_jax.pipeline import representative

    monkeypatch.setattr(representative, "_MAX_CENTROID_VALUES", max_values)
    x, y = _overlapping(seed=2)
    assert x.shape[1] == width
    sets = {"train": 0.5, "val": 0.25, "test": 0.25}
    options = {"cell_size": 4}
    result = gj.split(
        x, sets, key=KEY, labels=y, method_options=options, manifest_path=False, progress=False
    )
    assert result.manifest["construction"]["cells"] == want
    assert {k: len(v) for k, v in result.items()} == set_counts(sets, len(y))
