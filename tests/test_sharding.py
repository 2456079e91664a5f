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


def kernels_equal(family: str) -> dict:
    """One worker run per kernel family, so pytest-xdist spreads them over its workers."""
    return _worker(8, "kernels_equal", family, timeout=900)


def test_select_and_split_with_mesh_equal_without():
    """select with mesh= (kcenter with labels and chunks, herding, zcore, kmeans_medoids on cosine,
    typiclust, random, probcover, typical_kcenter, farthest, closest) returns the same indices,
    config and coverage radius as without; split(kcenter, groups, labels) and split(method="auto")
    the same sets."""
    r = kernels_equal("select")
    assert r["cases"] >= 12
    assert r["failures"] == []


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
    state = gk.kcenter_init(x, 7, mesh=mesh, anchors=x[:2] + 0.5)
    assert state.min_dist.shape == (21,)
    with pytest.raises(TypeError, match="jax.sharding.Mesh"):
        gk.greedy_k_center(x, 3, mesh="data")
    two_d = jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1), ("a", "b"))
    with pytest.raises(ValueError, match="1-D"):
        gk.greedy_k_center(x, 3, mesh=two_d)
    with pytest.raises(ValueError, match="state was made for 21 points"):
        gk.kcenter_run(state, x[:20], mesh=mesh)
