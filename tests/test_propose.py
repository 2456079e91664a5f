"""Label proposals (kNN vote, calibrated) and outlier scores against NumPy references."""

import json

import numpy as np
import pytest
from sklearn.datasets import load_digits

from goldener_jax import kernels as gk
from goldener_jax.refine import (
    expected_calibration_error,
    outliers,
    propose_labels,
    reliability_plot,
)


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return d.data.astype(np.float32), d.target


def _split(n, fraction, seed):
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, int(round(fraction * n)), replace=False))


@pytest.mark.parametrize("seed", [0, 1])
def test_digits_five_percent_labelled(digits, seed):
    x, y = digits
    lab = _split(len(x), 0.05, seed)
    r = propose_labels(x, lab, y[lab], progress=False)
    assert np.array_equal(r.indices, np.setdiff1d(np.arange(len(x)), lab))
    ok = r.labels == y[r.indices]
    # 10 classes: chance is 0.1; raw-pixel kNN from ~9 labels per class does far better.
    assert ok.mean() > 0.8
    order = np.argsort(-r.confidence, kind="stable")
    confident, rest = order[: len(order) // 2], order[len(order) // 2 :]
    assert ok[confident].mean() > ok[rest].mean() + 0.15
    assert ok[confident].mean() > 0.93
    # Calibrated against the truth of the unlabelled samples (fitted on the labelled ones only).
    assert expected_calibration_error(r.confidence, ok) < 0.1
    # to_review: least confident first, every unlabelled sample once.
    assert sorted(r.to_review.tolist()) == r.indices.tolist()
    conf_of = dict(zip(r.indices.tolist(), r.confidence.tolist(), strict=True))
    seq = [conf_of[i] for i in r.to_review.tolist()]
    assert all(a <= b for a, b in zip(seq, seq[1:], strict=False))
    assert np.allclose(r.probabilities.sum(axis=1), 1.0)
    doc = json.loads(json.dumps(r.to_json(limit=5)))
    assert [e["index"] for e in doc["to_review"]] == r.to_review[:5].tolist()


def test_calibration_improves_on_raw_votes(digits):
    """Averaged over splits, the fitted calibration beats the raw vote share (k=10)."""
    x, y = digits
    cal, raw = [], []
    for seed in range(3):
        lab = _split(len(x), 0.05, seed)
        for flag, out in ((True, cal), (False, raw)):
            r = propose_labels(x, lab, y[lab], k=10, calibrate=flag, progress=False)
            out.append(expected_calibration_error(r.confidence, r.labels == y[r.indices]))
    assert np.mean(cal) < 0.6 * np.mean(raw)


def test_vote_matches_numpy_reference():
    """Uniform vote, no calibration: the vote share of the k nearest labelled rows."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)).astype(np.float32)
    lab = np.arange(0, 60, 3)
    y = rng.integers(0, 3, len(lab))
    r = propose_labels(x, lab, y, k=4, weighting="uniform", calibrate=False, progress=False)
    unl = np.setdiff1d(np.arange(60), lab)
    d = np.linalg.norm(x[unl, None].astype(np.float64) - x[None, lab], axis=-1)
    nn = np.argsort(d, axis=1, kind="stable")[:, :4]
    share = np.stack([(y[nn] == c).mean(axis=1) for c in range(3)], axis=1)
    assert np.allclose(r.probabilities, share, atol=1e-6)
    assert np.array_equal(r.labels, share.argmax(axis=1))


def test_propagation_digits_beats_the_vote(digits):
    x, y = digits
    lab = _split(len(x), 0.05, 0)
    r = propose_labels(x, lab, y[lab], method="propagation", progress=False)
    vote = propose_labels(x, lab, y[lab], progress=False)
    ok = r.labels == y[r.indices]
    assert ok.mean() > 0.92 and ok.mean() > (vote.labels == y[vote.indices]).mean() + 0.03
    assert expected_calibration_error(r.confidence, ok) < 0.1
    assert r.config["method"] == "propagation" and r.loo["folds"] == 5


def test_propagation_default_folds_follow_few_labels():
    # 4 labelled samples: the default folds (5) once refused its own default.
    x = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    r = propose_labels(x, [0, 1, 2, 3], [0, 1, 0, 1], method="propagation", progress=False)
    assert r.loo["folds"] == 4 and r.labels.shape == (56,)
    with pytest.raises(ValueError, match="folds"):
        propose_labels(x, [0, 1, 2, 3], [0, 1, 0, 1], method="propagation", folds=5)


def test_propagation_matches_dense_numpy_solve():
    """Uncalibrated: the class shares of (I - alpha S)^-1 Y, S from a dense NumPy kNN graph."""
    rng = np.random.default_rng(2)
    n, k, alpha = 40, 4, 0.9
    x = rng.normal(size=(n, 3)).astype(np.float32)
    lab = np.array([0, 7, 13, 21, 30, 38])
    y = np.array([0, 1, 2, 0, 1, 2])
    r = propose_labels(
        x, lab, y, method="propagation", k=k, alpha=alpha, calibrate=False, progress=False
    )
    x64 = x.astype(np.float64)
    d = np.sqrt(((x64[:, None] - x64[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    nn = np.argsort(d, axis=1, kind="stable")[:, :k]
    dk = np.take_along_axis(d, nn, 1)
    sigma = np.median(dk[:, -1])
    w = np.zeros((n, n))
    w[np.repeat(np.arange(n), k), nn.ravel()] = np.exp(-((dk / sigma) ** 2)).ravel()
    w = np.maximum(w, w.T)
    s = w / np.sqrt(np.outer(w.sum(1), w.sum(1)))
    seeds = np.zeros((n, 3))
    seeds[lab, y] = 1.0
    f = np.maximum(np.linalg.solve(np.eye(n) - alpha * s, seeds), 0)
    unl = np.setdiff1d(np.arange(n), lab)
    share = f[unl] / f[unl].sum(1, keepdims=True)
    assert np.allclose(r.probabilities, share, atol=1e-4)


def test_ece_closed_form():
    conf = np.array([0.95, 0.95, 0.55, 0.55])
    correct = np.array([1, 1, 1, 0], bool)
    # bin 9: acc 1 vs .95 -> .05 * 1/2; bin 5: acc .5 vs .55 -> .05 * 1/2
    assert expected_calibration_error(conf, correct) == pytest.approx(0.05)


def test_reliability_plot_writes_png(tmp_path, digits):
    x, y = digits
    lab = _split(len(x), 0.05, 0)
    r = propose_labels(x, lab, y[lab], progress=False)
    path = reliability_plot(r.confidence, r.labels == y[r.indices], tmp_path / "rel.png")
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"labelled_idx": [0, 200]}, ValueError, "labelled_idx must be row indices in \\[0, 99\\]"),
        ({"labelled_idx": [0, -1]}, ValueError, "labelled_idx"),
        ({"labelled_idx": [0, 0]}, ValueError, "repeated"),
        ({"labels": [0]}, ValueError, "labels must have shape \\(2,\\)"),
        ({"labels": [0, -2]}, ValueError, "labels must be >= 0"),
        ({"labelled_idx": [0], "labels": [1]}, ValueError, "at least 2 labelled"),
        ({"k": 2}, ValueError, "k must be in \\[1, 1\\]"),
        ({"metric": "manhattan"}, ValueError, "metric must be one of"),
        ({"labelled_idx": [0.0, 1.0]}, TypeError, "integer indices"),
        ({"method": "spread"}, ValueError, "method must be one of"),
        ({"method": "propagation", "alpha": 1.0}, ValueError, "alpha must be a number in"),
        ({"method": "propagation", "k": 100}, ValueError, "k must be in \\[1, 99\\]"),
    ],
)
def test_propose_bad_input(kwargs, error, match):
    x = np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32)
    args = {"labelled_idx": [0, 1], "labels": [0, 1], **kwargs}
    with pytest.raises(error, match=match):
        propose_labels(x, args.pop("labelled_idx"), args.pop("labels"), progress=False, **args)


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
@pytest.mark.parametrize("k", [1, 3, 7])
def test_outliers_match_brute_force(metric, k):
    rng = np.random.default_rng(k)
    x = rng.normal(size=(80, 6)).astype(np.float32)
    x[10] = x[11]  # a duplicate pair
    r = outliers(x, k=k, metric=metric, progress=False)
    x64 = x.astype(np.float64)
    if metric == "cosine":
        u = x64 / np.linalg.norm(x64, axis=1, keepdims=True)
        d = 1 - u @ u.T
    else:
        d = ((x64[:, None] - x64[None]) ** 2).sum(-1)
        d = d if metric == "sqeuclidean" else np.sqrt(d)
    np.fill_diagonal(d, np.inf)
    kth = np.sort(d, axis=1)[:, k - 1]
    assert np.allclose(r.scores, kth[r.indices], rtol=1e-4, atol=1e-5)
    assert np.all(np.diff(r.scores) <= 1e-6)
    assert sorted(r.indices.tolist()) == list(range(80))


def test_planted_outliers_rank_first():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    planted = np.array([17, 150, 299])
    x[planted] += np.array([40.0, -60.0, 80.0], np.float32)[:, None]
    r = outliers(x, k=5, progress=False)
    assert set(r.indices[:3].tolist()) == set(planted.tolist())
    doc = json.loads(json.dumps(r.to_json(limit=3)))
    assert [e["index"] for e in doc["ranking"]] == r.indices[:3].tolist()


def test_outliers_sharded_equal_single(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 4)).astype(np.float32)
    one = outliers(x, k=3, progress=False)
    many = outliers(x, k=3, mesh=gk.make_mesh(), progress=False)
    assert np.array_equal(one.indices, many.indices)
    assert np.allclose(one.scores, many.scores)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"k": 0}, ValueError, "k must be in"),
        ({"k": 80}, ValueError, "k must be in \\[1, 79\\]"),
        ({"metric": "l1"}, ValueError, "metric"),
    ],
)
def test_outliers_bad_input(kwargs, error, match):
    x = np.zeros((80, 2), np.float32)
    with pytest.raises(error, match=match):
        outliers(x, progress=False, **kwargs)


def test_outliers_rejects_nan():
    x = np.zeros((5, 2), np.float32)
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf values \\(first in row 3\\)"):
        outliers(x, k=1, progress=False)


def _store(path, x):
    from goldener_jax.store import FeatureStore

    n = len(x)
    manifest = FeatureStore.build_manifest(
        extractor_fingerprint="f",
        extractor_config={},
        source={"n": n},
        num_samples=n,
        rows_per_sample=1,
        dim=x.shape[1],
        dtype="float32",
        batch_size=n // 2,
    )
    store = FeatureStore.create(path, manifest)
    valid = np.ones(n, bool)
    valid[[3, 10]] = False  # two samples without a vector: sample ids are not row numbers
    half = n // 2
    for b in range(2):
        sl = slice(b * half, (b + 1) * half)
        store.write_batch(b, x[sl][:, None], valid[sl, None])
    return store, np.flatnonzero(valid)


def test_store_inputs_are_indexed_by_sample_id(tmp_path):
    import jax

    from goldener_jax.refine import cluster

    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 4)).astype(np.float32)
    store, ids = _store(tmp_path / "s", x)
    xa = x[ids]
    lab_ids = np.array([0, 5, 12, 30, 44, 59])
    y = np.array([0, 1, 2, 0, 1, 2])
    rows = np.searchsorted(ids, lab_ids)
    from_store = propose_labels(store, lab_ids, y, k=3, progress=False)
    from_array = propose_labels(xa, rows, y, k=3, progress=False)
    assert np.array_equal(from_store.indices, ids[from_array.indices])
    assert np.array_equal(from_store.labels, from_array.labels)
    with pytest.raises(ValueError, match="sample id 3 is not in the store"):
        propose_labels(store, [0, 3], [0, 1], progress=False)
    o_store, o_array = outliers(store, k=2, progress=False), outliers(xa, k=2, progress=False)
    assert np.array_equal(o_store.indices, ids[o_array.indices])
    c = cluster(store, 3, key=jax.random.key(0), progress=False)
    assert np.array_equal(c.sample_ids, ids)
    assert np.array_equal(c.members(0), ids[c.assignment == 0])
