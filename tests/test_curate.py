"""Label issues and near duplicates against NumPy brute force, and on planted problems."""

import json
from functools import partial

import numpy as np
import pytest
from _reference import distances

import goldener_jax as gj
from goldener_jax import curate
from goldener_jax import kernels as gk


def flip_labels(y, fraction, seed, num_classes):
    """A copy of ``y`` with ``fraction`` of the labels moved to another class at random."""
    rng = np.random.default_rng(seed)
    flipped = rng.choice(len(y), int(round(fraction * len(y))), replace=False)
    y = y.copy()
    y[flipped] = (y[flipped] + rng.integers(1, num_classes, len(flipped))) % num_classes
    return y, flipped


def label_issues_ref(x, y, k, metric, weighting):
    """Full distance matrix, stable sort per row, weighted votes, ranking by the documented keys."""
    n = len(x)
    d = distances(x, x, metric)
    np.fill_diagonal(d, np.inf)
    nbr = np.array([np.lexsort((np.arange(n), row))[:k] for row in d])
    nd = np.take_along_axis(d, nbr, 1)
    if weighting == "uniform":
        w = np.ones_like(nd)
    else:
        w = 1.0 / (nd + 0.01 * np.median(nd[:, -1]))
    c = y.max() + 1
    p = np.zeros((n, c))
    for i in range(n):
        for j in range(k):
            p[i, y[nbr[i, j]]] += w[i, j]
    p /= p.sum(1, keepdims=True)
    conf = p[np.arange(n), y]
    other = p.copy()
    other[np.arange(n), y] = -np.inf
    margin = other.max(1) - conf
    order = sorted(range(n), key=lambda i: (-(1 - conf[i]), -margin[i], i))
    return np.array(order), 1 - conf[order], p.argmax(1)[order]


@pytest.mark.parametrize(("metric", "weighting"), [("euclidean", "distance"),
                                                    ("cosine", "uniform"),
                                                    ("sqeuclidean", "distance")])  # fmt: skip
def test_label_issues_match_brute_force(metric, weighting):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 5)).astype(np.float32)
    y = rng.integers(0, 4, 120)
    got = curate.label_issues(x, y, k=7, metric=metric, weighting=weighting, block_size=16)
    order, score, suggested = label_issues_ref(x, y, 7, metric, weighting)
    np.testing.assert_allclose(got.scores, score, atol=1e-5)
    np.testing.assert_array_equal(got.suggested, suggested)
    np.testing.assert_array_equal(got.given, y[got.indices])
    # the order may differ only between samples with equal scores and margins (to rounding)
    np.testing.assert_array_equal(np.sort(got.indices), np.arange(120))
    same = got.indices == order
    assert same.mean() > 0.9
    np.testing.assert_allclose(got.scores[~same], score[~same], atol=1e-5)


def test_planted_flips_on_a_gaussian_mixture_rank_first():
    rng = np.random.default_rng(1)
    centers = rng.normal(scale=6.0, size=(6, 10))
    y = rng.integers(0, 6, 900)
    x = (centers[y] + rng.normal(size=(900, 10))).astype(np.float32)
    noisy, flipped = flip_labels(y, 0.05, seed=2, num_classes=6)
    res = curate.label_issues(x, noisy, k=10)
    top = res.indices[: len(flipped)]
    precision = np.isin(top, flipped).mean()
    assert precision > 0.9, precision  # flip rate 0.05
    # the suggestion recovers the true label of the flipped samples found
    suggested = dict(zip(res.indices.tolist(), res.suggested.tolist(), strict=True))
    found = top[np.isin(top, flipped)]
    assert np.mean([suggested[i] == y[i] for i in found]) > 0.95
    # below the top 2 x #flips, every sample's own label gets most of its neighbours' vote
    assert res.scores[len(flipped) * 2 :].max() < 0.5


def test_planted_flips_on_digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = digits.data.astype(np.float32), digits.target
    noisy, flipped = flip_labels(y, 0.05, seed=0, num_classes=10)
    for metric in ("euclidean", "cosine"):
        res = curate.label_issues(x, noisy, k=10, metric=metric)
        precision = np.isin(res.indices[: len(flipped)], flipped).mean()
        assert precision > 0.8, (metric, precision)  # vs a flip rate of 0.05
    # no flips: the ranking's top is mostly genuinely ambiguous samples, and the scores are low
    clean = curate.label_issues(x, y, k=10)
    assert clean.num_disagreeing < 0.03 * len(y)


def test_label_issues_result_json():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 3)).astype(np.float32)
    y = rng.integers(0, 3, 50)
    res = gj.label_issues(x, y, k=5, weighting="uniform")
    assert len(res) == 50
    j = json.loads(json.dumps(res.to_json(limit=4)))
    assert j["num_samples"] == 50 and len(j["ranking"]) == 4
    assert j["config"]["k"] == 5 and j["config"]["weighting"] == "uniform"
    assert j["ranking"][0] == {
        "index": int(res.indices[0]),
        "score": float(res.scores[0]),
        "given": int(res.given[0]),
        "suggested": int(res.suggested[0]),
    }
    assert j["num_disagreeing"] == int(np.sum(res.suggested != res.given))
    assert np.all(np.diff(res.scores) <= 0)  # ranked by score


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"labels": None}, ValueError, r"labels are required"),
        ({"labels": np.zeros(9, int)}, ValueError, r"labels must have shape \[10\].*\(9,\)"),
        ({"labels": np.zeros(10)}, TypeError, r"labels must be integers.*float64"),
        ({"labels": np.r_[np.zeros(9, int), -1]}, ValueError, r"labels must be >= 0, got -1 at "),
        ({"k": 10}, ValueError, r"k must be in \[1, n - 1\] = \[1, 9\], got k=10"),
        ({"k": 0}, ValueError, r"got k=0"),
        ({"weighting": "gauss"}, ValueError, r"weighting must be one of"),
        ({"metric": "l1"}, ValueError, r"metric must be one of"),
        ({"num_classes": 1}, ValueError, r"num_classes=1 but labels go up to 1"),
    ],
)
def test_label_issues_bad_arguments(kwargs, error, match):
    x = np.random.default_rng(0).normal(size=(10, 2)).astype(np.float32)
    args = {"labels": np.arange(10) % 2, **kwargs}
    labels = args.pop("labels")
    with pytest.raises(error, match=match):
        curate.label_issues(x, labels, **args)


# --------------------------------------------------------------------------- near duplicates


def near_duplicates_ref(x, threshold, metric):
    d = distances(x, x, metric)
    n = len(x)
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i

    pairs = [(i, j) for i in range(n) for j in range(i + 1, n) if d[i, j] <= threshold]
    for i, j in pairs:
        parent[find(i)] = find(j)
    groups = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    groups = sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])
    return pairs, groups, d


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
def test_near_duplicates_match_brute_force(metric):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(150, 6)).astype(np.float32)
    x[100] = x[3]  # exact
    x[101] = x[3] + 0.01  # near
    x[120] = x[50] * 3.0  # same direction (a cosine duplicate only)
    x[140] = x[101] + 0.01  # chain: 3 - 101 - 140
    threshold = {"euclidean": 0.1, "sqeuclidean": 0.01, "cosine": 1e-4}[metric]
    got = curate.near_duplicates(x, threshold=threshold, metric=metric, block_size=16)
    pairs, groups, d = near_duplicates_ref(x, threshold, metric)
    assert [tuple(p) for p in got.pairs.tolist()] == pairs
    assert [g.tolist() for g in got.groups] == groups
    np.testing.assert_allclose(got.distances, [d[i, j] for i, j in pairs], atol=1e-9)
    assert [3, 100, 101, 140] in [g.tolist() for g in got.groups]
    assert ([50, 120] in [g.tolist() for g in got.groups]) == (metric == "cosine")


def test_exact_duplicates_far_from_the_origin_at_threshold_zero():
    # |x|^2 ~ 1e8: the matrix-product form alone rounds duplicates to distances far above 0.
    rng = np.random.default_rng(5)
    x = (rng.normal(size=(300, 32)) + 1e4).astype(np.float32)
    dup_of = {10: 250, 11: 251, 12: 252}
    for a, b in dup_of.items():
        x[b] = x[a]
    x[253] = x[252]  # a group of three
    for metric in ("euclidean", "sqeuclidean", "cosine"):
        got = curate.near_duplicates(x, threshold=0.0, metric=metric, block_size=64)
        assert [g.tolist() for g in got.groups] == [[10, 250], [11, 251], [12, 252, 253]], metric
        assert (got.distances == 0).all()
    np.testing.assert_array_equal(got.to_drop(), [250, 251, 252, 253])
    j = json.loads(json.dumps(got.to_json()))
    assert j["num_groups"] == 3 and j["rows_in_groups"] == 7 and j["num_pairs"] == 5


def test_near_duplicates_of_digits():
    from sklearn.datasets import load_digits

    x = load_digits().data.astype(np.float32)
    rng = np.random.default_rng(6)
    clean = curate.near_duplicates(x, threshold=0.0)
    src = rng.choice(len(x), 20, replace=False)
    noisy = x[src] + rng.normal(scale=0.05, size=(20, 64)).astype(np.float32)
    xx = np.concatenate([x, x[src[:10]], noisy[10:]])  # 10 exact copies, 10 perturbed copies
    got = gj.near_duplicates(xx, threshold=1.0)
    planted = [sorted([int(s), len(x) + i]) for i, s in enumerate(src)]
    grouped = [g.tolist() for g in got.groups]
    for pair in planted:
        assert any(set(pair) <= set(g) for g in grouped), pair
    # nothing else is grouped, except digits that were already duplicates in the dataset
    already = {i for g in clean.groups for i in g.tolist()}
    extra = {i for g in grouped for i in g} - {i for p in planted for i in p} - already
    assert not extra, extra


def test_near_duplicates_edge_cases_and_errors():
    x = np.random.default_rng(7).normal(size=(20, 3)).astype(np.float32)
    none = curate.near_duplicates(x, threshold=1e-6)
    assert len(none) == 0 and none.pairs.shape == (0, 2) and len(none.to_drop()) == 0
    assert len(curate.near_duplicates(x[:1], threshold=1.0)) == 0
    with pytest.raises(ValueError, match=r"more than 10 pairs within threshold=100.0"):
        curate.near_duplicates(x, threshold=100.0, max_pairs=10)
    with pytest.raises(ValueError, match=r"threshold must be a finite distance >= 0, got -1.0"):
        curate.near_duplicates(x, threshold=-1.0)
    with pytest.raises(TypeError, match=r"threshold must be a number"):
        curate.near_duplicates(x, threshold="0.1")
    with pytest.raises(ValueError, match=r"metric must be one of"):
        curate.near_duplicates(x, threshold=0.1, metric="l1")
    with pytest.raises(ValueError, match=r"x must be 2-D"):
        curate.near_duplicates(x[0], threshold=0.1)


def test_a_pair_exactly_at_the_threshold_is_a_near_duplicate():
    # kernels.pairs_within's edge rule: distance <= threshold on float64 distances; the float32
    # search alone would put these integer pairs (offset far from the origin) either side of it.
    x = np.array([[0, 0], [3, 4], [6, 8], [20, 20], [20, 25.001]], np.float32) + 3000
    got = curate.near_duplicates(x, threshold=5.0, progress=False)
    assert got.pairs.tolist() == [[0, 1], [1, 2]] and got.distances.tolist() == [5.0, 5.0]
    assert [g.tolist() for g in got.groups] == [[0, 1, 2]]
    got = curate.near_duplicates(x, threshold=25.0, metric="sqeuclidean", progress=False)
    assert got.pairs.tolist() == [[0, 1], [1, 2]]
    unit = np.array([[1, 1, 0], [1, 0, 1], [0, 2, 2], [-5, 0, 0]], np.float32)
    got = curate.near_duplicates(unit, threshold=0.5, metric="cosine", progress=False)
    assert got.pairs.tolist() == [[0, 1], [0, 2], [1, 2]]  # cosines 1/2, 1/2, 1/2
    assert got.distances.tolist() == [0.5, 0.5, 0.5]


def test_progress_bars_can_be_turned_off(capsys):
    x = np.random.default_rng(9).normal(size=(40, 3)).astype(np.float32)
    curate.near_duplicates(x, threshold=0.1, progress=True)
    assert "near duplicates" in capsys.readouterr().err
    curate.near_duplicates(x, threshold=0.1, progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_label_issues_in_query_chunks_equal_one_knn_call(monkeypatch, metric):
    """Above ``_KNN_CHUNK`` samples the kNN runs in chunks (a progress bar per chunk): the
    ranking is the same, also when a row's duplicates at lower indices fill its k + 1 list."""
    rng = np.random.default_rng(10)
    x = rng.normal(size=(120, 5)).astype(np.float32)
    x[[20, 30, 40, 50, 60, 70, 80]] = x[10]  # 8 copies of one row, k = 5
    y = rng.integers(0, 3, 120)
    whole = curate.label_issues(x, y, k=5, metric=metric, block_size=16, progress=False)
    monkeypatch.setattr(curate, "_KNN_CHUNK", 32)
    chunked = curate.label_issues(x, y, k=5, metric=metric, block_size=16, progress=False)
    for field in ("indices", "scores", "given", "suggested"):
        np.testing.assert_array_equal(getattr(chunked, field), getattr(whole, field))


# --------------------------------------------------------------------------- CLI


def test_cli_curate_prints_suspects_and_writes_json(tmp_path, capsys):
    from sklearn.datasets import load_digits

    from goldener_jax import cli

    digits = load_digits()
    x = np.concatenate([digits.data, digits.data[:3]]).astype(np.float32)  # 3 exact duplicates
    y = np.concatenate([digits.target, digits.target[:3]])
    noisy, flipped = flip_labels(y, 0.05, seed=1, num_classes=10)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", noisy)
    out = tmp_path / "out"
    args = ["curate", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"), "--top", "5"]
    assert cli.main([*args, "--duplicate-threshold", "0", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "rank" in text and "suggested" in text and "near duplicates" in text
    report = json.loads((out / "label_issues.json").read_text())
    ranked = np.load(out / "label_issues.npy")
    assert [r["index"] for r in report["ranking"]] == ranked.tolist()
    assert len(ranked) == len(x)
    assert np.isin(ranked[: len(flipped)], flipped).mean() > 0.8
    first = report["ranking"][0]
    assert f"{first['index']}" in text.split("suggested")[1].splitlines()[2]
    groups = json.loads((out / "near_duplicates.json").read_text())["groups"]
    n = len(digits.data)
    for i in range(3):
        assert any({i, n + i} <= set(g) for g in groups)
    # a user error: one line on stderr, exit status 2 (cli's contract)
    assert cli.main(["curate", str(tmp_path / "x.npy"), "--out", str(out)]) == 2
    assert "nothing to do: give --labels" in capsys.readouterr().err


def _store(path, x, labels, rows_per_sample=1, valid=None):
    from goldener_jax.store import FeatureStore

    n = len(x) // rows_per_sample
    manifest = FeatureStore.build_manifest(
        extractor_fingerprint="f",
        extractor_config={},
        source={"n": n},
        num_samples=n,
        rows_per_sample=rows_per_sample,
        dim=x.shape[1],
        dtype="float32",
        batch_size=n // 2,
        labels=((), "int64"),
    )
    store = gj.FeatureStore.create(path, manifest)
    half = n // 2
    for b in range(2):
        rows = x[b * half * rows_per_sample : (b + 1) * half * rows_per_sample]
        store.write_batch(
            b,
            rows.reshape(half, rows_per_sample, x.shape[1]),
            np.ones((half, rows_per_sample), bool)
            if valid is None
            else valid[b * half : (b + 1) * half, None],
            labels=labels[b * half : (b + 1) * half],
        )
    return store


def test_curation_over_a_store(tmp_path):
    rng = np.random.default_rng(8)
    x = rng.normal(size=(60, 4)).astype(np.float32)
    x[41] = x[7]
    y = rng.integers(0, 3, 60)
    _store(tmp_path / "store", x, y)
    from_store = gj.label_issues(str(tmp_path / "store"), k=5)
    from_array = gj.label_issues(x, y, k=5)
    np.testing.assert_array_equal(from_store.indices, from_array.indices)
    np.testing.assert_array_equal(from_store.suggested, from_array.suggested)
    dups = gj.near_duplicates(gj.FeatureStore.open(tmp_path / "store"), threshold=0.0)
    assert [g.tolist() for g in dups.groups] == [[7, 41]]
    from goldener_jax import cli

    out = tmp_path / "cli"
    assert cli.main(["curate", str(tmp_path / "store"), "--k", "5", "--out", str(out)]) == 0
    np.testing.assert_array_equal(np.load(out / "label_issues.npy"), from_store.indices)
    _store(tmp_path / "two", np.concatenate([x, x]), y[:60], rows_per_sample=2)
    with pytest.raises(ValueError, match=r"one vector per sample; .* 120 vectors for 60 samples"):
        gj.label_issues(tmp_path / "two")


def test_store_labels_per_sample_id_or_per_sample_present(tmp_path):
    """select's rules: a store without vectors for some samples takes labels per sample id or
    one per sample present; indices are sample ids."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=(60, 4)).astype(np.float32)
    y = rng.integers(0, 3, 60)
    valid = np.ones(60, bool)
    valid[[5, 33]] = False  # samples 5 and 33 have no vector
    _store(tmp_path / "store", x, y, valid=valid)
    present = np.flatnonzero(valid)
    want = gj.label_issues(x[present], y[present], k=5, progress=False)
    for labels in (None, y, y[present]):
        got = gj.label_issues(tmp_path / "store", labels, k=5, progress=False)
        np.testing.assert_array_equal(got.indices, present[want.indices])
        np.testing.assert_array_equal(got.suggested, want.suggested)
    with pytest.raises(ValueError, match=r"one entry per sample \(58\) or per sample id \(60\)"):
        gj.label_issues(tmp_path / "store", y[:59], k=5)


# --------------------------------------------------------------------------- leakage


def _leakage_ref(x, vec_set, vec_sample, threshold, max_pairs):
    """Brute force: every pair of vectors of different sets within the threshold (float64),
    closest first then by rows, one entry per pair of samples, the first ``max_pairs``."""
    d = distances(x, x, "euclidean")
    found = sorted(
        (d[r, c], r, c)
        for r in range(len(x))
        for c in range(r + 1, len(x))
        if vec_set[r] != vec_set[c] and d[r, c] <= threshold
    )
    out, seen = [], set()
    for dist, r, c in found:
        pair = (int(vec_sample[r]), int(vec_sample[c]))
        if (min(pair), max(pair)) not in seen:  # an unordered pair of samples, once
            seen.add((min(pair), max(pair)))
            out.append((pair, str(vec_set[r]), str(vec_set[c]), dist))
    return out[:max_pairs]


def _leaky_split():
    """30 far-apart samples in sets a / b / c, plus near copies: across sets at 0.125 .. 0.75
    (0.75 is the threshold, 0.875 beyond it), one within a set, and a sample of two vectors."""
    x = np.zeros((40, 3), np.float32)
    x[:30, 0] = 10.0 * np.arange(30)
    vec_set = np.array(["a", "b", "c"] * 10 + [""] * 10, dtype=object)
    vec_sample = np.arange(40)
    copies = [  # (row, copy of, offset, set of the copy)
        (30, 0, 0.5, "b"),
        (31, 1, 0.125, "a"),
        (32, 2, 0.375, "b"),
        (33, 3, 0.25, "c"),
        (34, 4, 0.625, "c"),
        (35, 5, 0.75, "a"),  # exactly at the threshold: a leak
        (36, 6, 0.875, "b"),  # beyond it
        (37, 7, 0.0625, "b"),  # same set as row 7: not a leak
        (38, 8, 0.3125, "a"),  # rows 38 and 39: two vectors of sample 100 ...
        (39, 8, 0.4375, "a"),  # ... one pair (8, 100) at its closest vector
    ]
    for row, src, offset, name in copies:
        x[row] = x[src] + [0.0, offset, 0.0]
        vec_set[row] = name
    vec_sample[[38, 39]] = 100
    return x, vec_set, vec_sample


def test_leakage_pairs_closest_first_within_max_pairs():
    x, vec_set, vec_sample = _leaky_split()
    everything = curate.leakage_pairs(x, vec_set, vec_sample, 0.75)
    want = _leakage_ref(x, vec_set, vec_sample, 0.75, 1000)
    got = [((p["a"], p["b"]), p["set_a"], p["set_b"], p["distance"]) for p in everything]
    assert got == want
    # the documented order and edge rule, by hand
    assert [p for p, *_ in got] == [(1, 31), (3, 33), (8, 100), (2, 32), (0, 30), (4, 34), (5, 35)]
    assert got[-1][3] == 0.75
    for max_pairs in (1, 3, 5):
        cut = curate.leakage_pairs(x, vec_set, vec_sample, 0.75, max_pairs=max_pairs)
        assert cut == everything[:max_pairs]
    # through the public name (re-exported by goldener_jax)
    assert gj.leakage_pairs(x, vec_set, vec_sample, 0.75, max_pairs=3) == everything[:3]


def test_leakage_pairs_of_many_vectors_per_sample_fill_max_pairs():
    """Duplicated pairs of samples (many vectors each) push unique pairs past a first cut."""
    rng = np.random.default_rng(12)
    base = rng.normal(size=(20, 3)).astype(np.float32) * 10
    x = np.concatenate([np.repeat(base, 4, axis=0), base + 0.01])  # 4 vectors per sample
    x[:80] += rng.normal(scale=0.001, size=(80, 3)).astype(np.float32)
    vec_sample = np.r_[np.repeat(np.arange(20), 4), 20 + np.arange(20)]
    vec_set = np.array(["train"] * 80 + ["test"] * 20, dtype=object)
    got = curate.leakage_pairs(x, vec_set, vec_sample, 0.5, max_pairs=6)
    want = _leakage_ref(x, vec_set, vec_sample, 0.5, 6)
    assert [((p["a"], p["b"]), p["set_a"], p["set_b"], p["distance"]) for p in got] == want
    assert len(got) == 6


def test_leakage_pairs_of_samples_whose_rows_interleave_come_once():
    # Sample ids not grouped by row (each sample's rows far apart): a pair of samples came in
    # both orders and was kept twice, the second time at a farther distance.
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 2)).astype(np.float32)
    vec_sample = np.r_[np.arange(20), np.arange(20)]
    vec_set = np.where(np.arange(40) % 2 == 0, "train", "val").astype(object)
    got = curate.leakage_pairs(x, vec_set, vec_sample, 100.0, max_pairs=1000)
    keys = [(min(p["a"], p["b"]), max(p["a"], p["b"])) for p in got]
    assert len(keys) == len(set(keys))
    want = _leakage_ref(x, vec_set, vec_sample, 100.0, 1000)
    assert [((p["a"], p["b"]), p["set_a"], p["set_b"], p["distance"]) for p in got] == want


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"threshold": -0.5}, ValueError, r"threshold must be a finite distance >= 0"),
        ({"max_pairs": 0}, ValueError, r"max_pairs must be >= 1, got 0"),
        ({"vec_set": np.array(["a", "b"])}, ValueError, r"vec_set must have shape \[4\]"),
        ({"metric": "l1"}, ValueError, r"metric must be one of"),
    ],
)
def test_leakage_pairs_bad_arguments(kwargs, error, match):
    args = {
        "vec_set": np.array(["a", "a", "b", "b"]),
        "vec_sample": np.arange(4),
        "threshold": 1.0,
        **kwargs,
    }
    with pytest.raises(error, match=match):
        curate.leakage_pairs(np.zeros((4, 2), np.float32), **args)


@pytest.mark.parametrize("fixture", ["leaky", "many_vectors"])
@pytest.mark.parametrize("processes", [1, 3])
@pytest.mark.parametrize("piece", [3, 128])
def test_store_leakage_pairs_over_processes_equal_leakage_pairs(tmp_path, monkeypatch, fixture,
                                                                processes, piece):  # fmt: skip
    """The leakage check of a store read per process (``pipeline.leakage``): each (simulated)
    process owns a range of rows, streams the later sets past them in pieces of 3 or 128 rows, and
    the merged result equals ``leakage_pairs`` on every vector, and the brute force: cut lists
    and the retry with a larger budget included (``many_vectors``, max_pairs 6: with pieces of
    128 rows, one process retries as leakage_pairs does)."""
    import threading

    from goldener_jax.pipeline import data as pdata
    from goldener_jax.pipeline import leakage

    if fixture == "leaky":
        x, vec_set, vec_sample = _leaky_split()
        threshold, max_pairs = 0.75, 5
    else:
        rng = np.random.default_rng(12)
        base = rng.normal(size=(20, 3)).astype(np.float32) * 10
        x = np.concatenate([np.repeat(base, 4, axis=0), base + 0.01])
        x[:80] += rng.normal(scale=0.001, size=(80, 3)).astype(np.float32)
        vec_sample = np.r_[np.repeat(np.arange(20), 4), 20 + np.arange(20)]
        vec_set = np.array(["train"] * 80 + ["test"] * 20, dtype=object)
        rows = rng.permutation(len(x))  # the sets interleaved in the store
        x, vec_set, vec_sample = x[rows], vec_set[rows], vec_sample[rows]
        threshold, max_pairs = 0.5, 6
    store = _store(tmp_path / fixture, x, np.zeros(len(x), np.int64))
    monkeypatch.setattr(leakage, "_PIECE_BYTES", piece * x.shape[1] * 4)
    n = len(x)
    cuts = np.linspace(0, n, processes + 1).astype(int)
    barrier, box, out = threading.Barrier(processes), [None] * processes, [None] * processes
    reads = []

    def gather(rank, *arrays):
        box[rank] = arrays
        barrier.wait()
        merged = tuple(np.concatenate([b[i] for b in box]) for i in range(4))
        barrier.wait()
        return merged

    def run(rank):
        src = pdata.StoreRows(store, np.arange(n), gk.make_mesh())
        src.own_vector_ranges = lambda: [(int(cuts[rank]), int(cuts[rank + 1]))]
        read = src.read_rows
        src.read_rows = lambda v: reads.append(len(v)) or read(v)
        out[rank] = leakage.store_leakage_pairs(
            src, vec_set, vec_sample, threshold, "euclidean", max_pairs,
            gather=partial(gather, rank),
        )  # fmt: skip

    threads = [threading.Thread(target=run, args=(r,)) for r in range(processes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    want = curate.leakage_pairs(x, vec_set, vec_sample, threshold, max_pairs=max_pairs)
    assert len(want) == max_pairs
    assert [((p["a"], p["b"]), p["set_a"], p["set_b"], p["distance"]) for p in want] == (
        _leakage_ref(x, vec_set, vec_sample, threshold, max_pairs)
    )
    for got in out:
        assert got == want
    # each process read its own rows of every set but the last (set by set: nothing is compared
    # with the last set's own rows), then pieces of at most `piece` rows
    names, set_of = np.unique(vec_set, return_inverse=True)
    spans = zip(cuts[:-1], cuts[1:], strict=True)
    own = [int(v) for a, b in spans for v in np.bincount(set_of[a:b], minlength=len(names))[:-1]]
    assert max(reads) <= max(piece, *own)
    if piece == 3:
        assert sorted(r for r in reads if r > 3) == sorted(v for v in own if v > 3)


def test_gather_pairs_keeps_float64_bits_on_one_process():
    from goldener_jax.pipeline.leakage import _gather_pairs

    d = np.array([0.1, 1 / 3, np.nextafter(1.0, 2.0)])
    ra, rb, cut = np.array([5, 2**40, 7]), np.array([9, 3, 2**33]), np.array([np.pi])
    got = _gather_pairs(ra, rb, d, cut)
    for a, b in zip(got, (ra, rb, d, cut), strict=True):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
