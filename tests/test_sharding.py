"""Sharded kernels on 8 fake CPU devices equal the single-device kernels exactly (indices).

The device count is fixed when JAX initialises, and this test process already has one device, so
every check runs in a subprocess (tests/_sharded_worker.py) started with the device count it needs.
"""

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from goldener_jax import kernels as gk

WORKER = Path(__file__).with_name("_sharded_worker.py")


def _worker(devices: int, *args, timeout: int = 300) -> dict:
    out = subprocess.run(
        [sys.executable, str(WORKER), str(devices), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_sharded_k_center_equals_single_device_exactly():
    """Sizes divisible by 8 and not, euclidean / sqeuclidean / cosine, with and without anchors,
    float32 and bfloat16, duplicates on different shards, integer ties, k = 0, 1, n, chunked
    init/run through the public functions, meshes of 1 and 3 devices."""
    r = _worker(8, "equal")
    assert r["cases"] > 40
    assert r["failures"] == []


def test_sharded_farthest_and_closest_point_equal_single_device_exactly():
    """Integer data (exact distances) with n not divisible by 8, every metric, both modes,
    duplicates on different shards, a small block size; random floats for farthest point."""
    r = _worker(8, "greedy_equal")
    assert r["cases"] > 15
    assert r["failures"] == []


def kernels_equal(family: str) -> dict:
    """One worker run per kernel family, so pytest-xdist spreads them over its workers."""
    return _worker(8, "kernels_equal", family, timeout=900)


def test_sharded_herding_equals_single_device_exactly():
    """Linear and RBF kernels, n = 37 / 45 / 64 / 43 over 8 devices (padding), float32 and
    bfloat16, duplicates on different shards (ties to the lowest global index), a small block,
    k = 0 and k = n; chunked init/run through the public functions, finished on one device."""
    r = kernels_equal("herding")
    assert r["cases"] >= 10
    assert r["failures"] == []


def test_sharded_kmeans_family_equals_single_device():
    """k-means++ seeds, Lloyd assignments, medoids and TypiClust picks equal the single-device
    ones (n = 37 / 45 / 64 / 36 / 58, float32, bfloat16, duplicates on different shards); the
    centroids and typicality agree within float32 rounding (their global sums add in another
    order) and bit for bit on data whose sums are exact; a Lloyd run seeded and started on 8
    devices and finished on one converges to the same clusters."""
    r = kernels_equal("kmeans")
    assert r["cases"] >= 6
    assert r["failures"] == []


def test_sharded_knn_equals_single_device_exactly():
    """Neighbours and distances: integer data with many ties, every metric, own row excluded or
    kept, queries given, duplicates on different shards (ties to the lowest global index), a
    small block, k = n - 1, random floats."""
    r = kernels_equal("knn")
    assert r["cases"] >= 6
    assert r["failures"] == []


def test_sharded_zcore_equals_single_device():
    """Statistics (min, lower median, max) bit-equal; scores after 300 samples (run in two
    pieces on the mesh) equal up to float32 rounding and the same top 12; the nearest points and
    neighbour indices of a chunk equal a NumPy reference on integer data with ties and
    duplicates on different shards, including n = 2500 where one device uses its window search
    and the mesh a brute force over each shard."""
    r = kernels_equal("zcore")
    assert r["cases"] >= 5
    assert r["failures"] == []


def test_select_and_split_with_mesh_equal_without():
    """select with mesh= (kcenter with labels and chunks, herding, zcore, kmeans_medoids on cosine,
    typiclust, random) returns the same indices, config and coverage radius as without;
    split(kcenter, groups, labels) the same sets; a method without a sharded kernel and
    split(method="auto") raise a clear ValueError."""
    r = kernels_equal("select")
    assert r["cases"] >= 9
    assert r["failures"] == []


def test_sharded_programs_compile_once_per_shape():
    r = _worker(8, "retrace")
    assert r == {"init": 1, "run": 1, "greedy_init": 1, "greedy_run": 2}, r


def test_sharded_temporaries_are_o_n_over_p_never_x():
    """XLA's accounting of the compiled per-device programs at N = 512K, d = 64 (128 MB of x,
    16 MB per device): the run holds a few N/P-vectors, never a gathered (or even local) copy of
    x; the init's cosine statistics hold at most one row block (ROW_BLOCK_BUDGET values)."""
    n, d = 8 * 65_536, 64
    r = _worker(8, "memory", n, d)
    local, full = r["x_local_bytes"], r["x_bytes"]
    for metric in ("euclidean", "cosine"):
        assert r[f"run_{metric}"] < 0.1 * local, r
        assert r[f"init_{metric}"] < 0.1 * local + 4 * (1 << 20) * 4, r
        assert r[f"init_{metric}"] < full / 4, r
    # Farthest point: the distance blocks of the single-device kernel ([batch, N] for the
    # recompute, [block, N / P] here for the ring), plus the visiting row block of the ring.
    m = n // r["devices"]
    assert r["greedy_run"] < 1.2 * (r["devices"] * 16) * m * 4 + local, r
    assert r["greedy_init"] < 1.2 * 256 * m * 4 + 3 * local, r


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_checkpoint_moves_between_device_counts(tmp_path, monkeypatch, metric):
    """Saved mid-run on 8 devices, resumed on 1 (no mesh); saved on 1, resumed on 8: the final
    indices equal an uninterrupted run's, and the single-device kernel's."""
    monkeypatch.setenv("CKPT_METRIC", metric)
    saved = _worker(8, "ckpt_save", tmp_path / "from8", 7, 1)
    assert saved["saved_count"] == 7
    assert saved["final"] == saved["single"]
    resumed = _worker(1, "ckpt_resume", tmp_path / "from8", 0)
    assert resumed == {"restored_step": 7, "final": saved["single"]}

    saved = _worker(1, "ckpt_save", tmp_path / "from1", 9, 0)
    resumed = _worker(8, "ckpt_resume", tmp_path / "from1", 1)
    assert resumed == {"restored_step": 9, "final": saved["single"]}


def test_one_device_mesh_in_process_and_clear_errors():
    """This process has one device: a mesh of it runs the sharded programs in-process."""
    x = np.random.default_rng(0).normal(size=(21, 3)).astype(np.float32)
    mesh = gk.make_mesh()
    assert gk.greedy_k_center(x, 7, mesh=mesh).tolist() == gk.greedy_k_center(x, 7).tolist()
    assert gk.farthest_point(x, 7, mesh=mesh).tolist() == gk.farthest_point(x, 7).tolist()
    herd = gk.kernel_herding(x, 7, kernel="linear", mesh=mesh)
    assert herd.tolist() == gk.kernel_herding(x, 7, kernel="linear").tolist()
    key = jax.random.key(0)
    assert gk.kmeans(x, 3, key, mesh=mesh)[1].tolist() == gk.kmeans(x, 3, key)[1].tolist()
    assert gk.knn(x, 4, mesh=mesh)[1].tolist() == gk.knn(x, 4)[1].tolist()
    state = gk.kcenter_init(x, 7, mesh=mesh, anchors=x[:2] + 0.5)
    assert state.min_dist.shape == (21,)
    with pytest.raises(TypeError, match="jax.sharding.Mesh"):
        gk.greedy_k_center(x, 3, mesh="data")
    two_d = jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1), ("a", "b"))
    with pytest.raises(ValueError, match="1-D"):
        gk.greedy_k_center(x, 3, mesh=two_d)
    with pytest.raises(ValueError, match="state was made for 21 points"):
        gk.kcenter_run(state, x[:20], mesh=mesh)
