"""cluster(): k-means against a NumPy Lloyd reference, ids stable across chunking, devices and
resume; manifest; errors; the sampler over its result."""

import os

import jax
import numpy as np
import pytest

from goldener_jax import kernels as gk
from goldener_jax.refine import ClusterBatchSampler, cluster


def _blobs(n=400, d=5, k=6, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 6, (k, d))
    return (centers[rng.integers(0, k, n)] + rng.normal(size=(n, d))).astype(np.float32)


def _numpy_lloyd(x, init, iters=100):
    x = x.astype(np.float64)
    c = init.astype(np.float64)
    prev = None
    for _ in range(iters):
        d = ((x[:, None] - c[None]) ** 2).sum(-1)
        a = d.argmin(axis=1)
        if prev is not None and np.array_equal(a, prev):
            break
        for j in range(len(c)):
            if (a == j).any():
                c[j] = x[a == j].mean(axis=0)
        prev = a
    return c, ((x[:, None] - c[None]) ** 2).sum(-1).argmin(axis=1)


def test_matches_numpy_lloyd_from_the_same_seeds():
    x = _blobs()
    key = jax.random.key(4)
    res = cluster(x, 6, key=key, progress=False)
    seeds = np.asarray(gk.kmeans_plusplus(x, 6, key))
    c, a = _numpy_lloyd(x, x[seeds])
    assert np.allclose(res.centroids, c, atol=1e-4)
    assert np.array_equal(res.assignment, a)
    assert res.sizes.tolist() == np.bincount(a, minlength=6).tolist()
    assert res.inertia == pytest.approx(((x - c[a]) ** 2).sum(), rel=1e-5)
    manifest = res.to_json()
    assert manifest["sizes"] == res.sizes.tolist() and manifest["num_clusters"] == 6
    assert manifest["config"]["n_clusters"] == 6


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1000])
def test_ids_independent_of_chunking(chunk_size):
    x = _blobs(seed=1)
    whole = cluster(x, 5, key=jax.random.key(0), progress=False)
    chunked = cluster(x, 5, key=jax.random.key(0), chunk_size=chunk_size, progress=False)
    assert np.array_equal(whole.assignment, chunked.assignment)
    assert chunked.inertia == pytest.approx(whole.inertia, rel=1e-9)


@pytest.mark.parametrize("devices", [2, 8])
def test_ids_equal_on_several_devices(devices):
    x = _blobs(seed=2)
    one = cluster(x, 6, key=jax.random.key(1), progress=False)
    many = cluster(
        x, 6, key=jax.random.key(1), mesh=gk.make_mesh(jax.devices()[:devices]), progress=False
    )
    assert np.array_equal(one.assignment, many.assignment)
    assert np.allclose(one.centroids, many.centroids, atol=1e-5)


def test_fit_on_a_seeded_sample_assigns_everything():
    x = _blobs(n=600, seed=3)
    res = cluster(x, 6, key=jax.random.key(2), fit_size=150, progress=False)
    again = cluster(x, 6, key=jax.random.key(2), fit_size=150, progress=False)
    assert np.array_equal(res.assignment, again.assignment)
    d = ((x[:, None].astype(np.float64) - res.centroids[None]) ** 2).sum(-1)
    assert np.array_equal(res.assignment, d.argmin(axis=1))
    assert res.sizes.sum() == 600


def test_minibatch_fit_assigns_to_its_centroids_near_lloyd():
    x = _blobs(n=3000, d=8, k=6, seed=5)
    lloyd = cluster(x, 6, key=jax.random.key(3), progress=False)
    mini = cluster(x, 6, key=jax.random.key(3), fit="minibatch", batch_size=256, progress=False)
    again = cluster(x, 6, key=jax.random.key(3), fit="minibatch", batch_size=256, progress=False)
    assert np.array_equal(mini.assignment, again.assignment)
    d = ((x[:, None].astype(np.float64) - mini.centroids[None]) ** 2).sum(-1)
    assert np.array_equal(mini.assignment, d.argmin(axis=1))
    assert mini.inertia <= 1.02 * lloyd.inertia
    assert mini.config["fit"] == {"method": "minibatch", "batch_size": 256, "num_epochs": 3}
    assert "fit" not in lloyd.config


def test_resume_reuses_centroids_and_written_chunks(tmp_path, monkeypatch):
    x = _blobs(n=300, seed=4)
    ckpt = tmp_path / "ck"
    full = cluster(x, 4, key=jax.random.key(3), chunk_size=50, progress=False)
    first = cluster(x, 4, key=jax.random.key(3), chunk_size=50, checkpoint_dir=ckpt, progress=False)
    assert np.array_equal(first.assignment, full.assignment)
    chunks = sorted(p for p in os.listdir(ckpt) if p.startswith("chunk_"))
    assert len(chunks) == 6
    for name in chunks[3:]:  # as if killed after three chunks
        os.remove(ckpt / name)

    def no_refit(*a, **k):
        raise AssertionError("centroids were refitted on resume")

    monkeypatch.setattr(gk, "kmeans", no_refit)
    calls = []
    real_assign = gk.kmeans_assign
    monkeypatch.setattr(
        gk, "kmeans_assign", lambda *a, **k: calls.append(1) or real_assign(*a, **k)
    )
    resumed = cluster(
        x, 4, key=jax.random.key(3), chunk_size=50, checkpoint_dir=ckpt, progress=False
    )
    assert len(calls) == 3, "only the missing chunks are assigned"
    assert np.array_equal(resumed.assignment, full.assignment)
    assert resumed.inertia == pytest.approx(full.inertia, rel=1e-12)
    with pytest.raises(ValueError, match="another config .*n_clusters"):
        cluster(x, 3, key=jax.random.key(3), checkpoint_dir=ckpt, progress=False)


def test_overwrite_starts_afresh(tmp_path):
    x = _blobs(n=100, seed=5)
    cluster(x, 4, key=jax.random.key(0), checkpoint_dir=tmp_path, progress=False)
    res = cluster(
        x, 3, key=jax.random.key(0), checkpoint_dir=tmp_path, overwrite=True, progress=False
    )
    assert res.num_clusters == 3 and res.assignment.max() <= 2


def test_sampler_over_clusters():
    x = _blobs(n=120, seed=6)
    res = cluster(x, 6, key=jax.random.key(0), progress=False)
    batches = list(ClusterBatchSampler(res, jax.random.key(0), batch_size=6, on_end="stop"))
    assert batches and all(len(set(res.assignment[b].tolist())) == 6 for b in batches)


@pytest.mark.parametrize(
    "n_clusters,kwargs,error,match",
    [
        (0, {}, ValueError, "n_clusters must be in \\[1, 50\\]"),
        (51, {}, ValueError, "n_clusters must be in \\[1, 50\\]"),
        (11, {"fit_size": 10}, ValueError, "n_clusters must be in \\[1, 10\\]"),
        (2, {"fit_size": 0}, ValueError, "fit_size"),
        (2, {"chunk_size": 0}, ValueError, "chunk_size"),
        (2, {"fit": "elkan"}, ValueError, "fit must be"),
        (2, {"fit": "minibatch", "batch_size": 0}, ValueError, "batch_size"),
        (2.5, {}, TypeError, "n_clusters must be an int"),
        (2, {"key": 3}, TypeError, "key must be a jax.random.key"),
    ],
)
def test_bad_input(n_clusters, kwargs, error, match):
    x = _blobs(n=50)
    args = {"key": jax.random.key(0), **kwargs}
    with pytest.raises(error, match=match):
        cluster(x, n_clusters, progress=False, **args)


def _parse(argv):
    import argparse

    from goldener_jax.refine import commands

    parser = argparse.ArgumentParser()
    commands.add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.quiet = True
    return commands.run(args)


def test_cli_cluster_and_outliers(tmp_path):
    import json

    x = _blobs(n=80, seed=7)
    x[5] += 100.0
    np.save(tmp_path / "x.npy", x)
    assert (
        _parse(
            ["cluster", str(tmp_path / "x.npy"), "--clusters", "4", "--out", str(tmp_path / "c")]
        )
        == 0
    )
    a = np.load(tmp_path / "c" / "assignment.npy")
    assert np.array_equal(a, cluster(x, 4, key=jax.random.key(0), progress=False).assignment)
    assert json.load(open(tmp_path / "c" / "clusters.json"))["num_clusters"] == 4
    labels = np.arange(80) % 2
    np.save(tmp_path / "y.npy", labels)
    argv = ["cluster", str(tmp_path / "x.npy"), "--clusters", "3", "--per-label"]
    assert _parse([*argv, "--labels", str(tmp_path / "y.npy"), "--out", str(tmp_path / "p")]) == 0
    per = cluster(x, 3, key=jax.random.key(0), per_label=True, labels=labels, progress=False)
    assert np.array_equal(np.load(tmp_path / "p" / "assignment.npy"), per.assignment)
    assert (
        _parse(["outliers", str(tmp_path / "x.npy"), "--k", "3", "--out", str(tmp_path / "o")]) == 0
    )
    assert np.load(tmp_path / "o" / "outliers.npy")[0] == 5
    assert json.load(open(tmp_path / "o" / "outliers.json"))["ranking"][0]["index"] == 5


@pytest.mark.parametrize("chunk_size", [13, 10000])
def test_per_label_clusters_each_label_apart(chunk_size):
    x = _blobs(n=300, seed=8)
    labels = np.random.default_rng(0).choice([7, 3, 11], 300)
    key = jax.random.key(5)
    res = cluster(
        x, 4, key=key, per_label=True, labels=labels, chunk_size=chunk_size, progress=False
    )
    assert res.centroids.shape == (12, 5) and res.config["labels"] == [3, 7, 11]
    for j, value in enumerate([3, 7, 11]):
        rows = np.flatnonzero(labels == value)
        c, a = gk.kmeans(x[rows], 4, jax.random.fold_in(key, j))
        assert np.array_equal(res.assignment[rows], np.asarray(a) + 4 * j)
        assert np.allclose(res.centroids[4 * j : 4 * j + 4], np.asarray(c))
    assert res.sizes.sum() == 300


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"per_label": True}, "per_label=True needs labels"),
        ({"labels": np.zeros(50, int)}, "only used with per_label=True"),
        (
            {"per_label": True, "labels": np.r_[np.zeros(47, int), np.ones(3, int)]},
            "n_clusters must be in \\[1, 3\\] .*smallest label",
        ),
        ({"per_label": True, "labels": np.zeros(49, int)}, "labels must have shape \\[50\\]"),
    ],
)
def test_per_label_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cluster(_blobs(n=50), 4, key=jax.random.key(0), progress=False, **kwargs)
