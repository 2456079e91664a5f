"""Sharded-kernel checks on fake CPU devices (run as a subprocess by test_sharding.py).

The device count must be fixed before JAX initialises, so each device count is its own process.

usage: python _sharded_worker.py DEVICES TASK [ARGS...]  -> prints one JSON line (last line)

Tasks:
  kernels_equal             sharded vs single-device select / split with mesh= -> failures
                            (herding, k-means, kNN on a mesh: tests/test_mesh_herding_kmeans_knn.py;
                            ZCore: tests/test_mesh_zcore.py; the k-center family:
                            tests/test_mesh_kcenter_family.py; all in process)
  ckpt_save DIR STEPS MESH  runs k-center for STEPS steps (MESH 1: on all devices, 0: no mesh),
                            saves through Checkpointer, then finishes -> final indices
  ckpt_resume DIR MESH      restores the latest checkpoint and finishes -> final indices
"""

import os
import sys

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={sys.argv[1]}"
)

import json  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from goldener_jax import kernels as gk  # noqa: E402
from goldener_jax.checkpoint import Checkpointer  # noqa: E402

assert jax.device_count() == int(sys.argv[1]), jax.devices()
TASK = sys.argv[2]


def _select_checks(mesh, failures):
    """select / split with mesh= equal the same calls without (labels, chunks, groups)."""
    from goldener_jax import select, split

    rng = np.random.default_rng(10)
    x = rng.normal(size=(90, 5)).astype(np.float32)
    labels = rng.integers(0, 3, size=90)
    key = jax.random.key(5)
    calls = [
        ("kcenter labels chunks", dict(method="kcenter", labels=labels, chunk_size=40), 0.2),
        ("herding", dict(method="herding"), 12),
        ("zcore", dict(method="zcore", method_options={"num_samples": 300, "chunk": 64}), 10),
        ("kmeans_medoids", dict(method="kmeans_medoids", metric="cosine"), 7),
        ("typiclust", dict(method="typiclust", method_options={"num_neighbors": 5}), 6),
        ("random", dict(method="random"), 9),
        ("probcover", dict(method="probcover", labels=labels), 8),
        ("typical_kcenter", dict(method="typical_kcenter", chunk_size=50), 8),
        ("farthest", dict(method="farthest"), 5),
        ("closest cosine", dict(method="closest", metric="cosine"), 5),
    ]
    for name, kw, size in calls:
        want = select(x, size, key=key, **kw)
        got = select(x, size, key=key, mesh=mesh, **kw)
        if want.indices.tolist() != got.indices.tolist() or want.config != got.config:
            failures.append({"case": f"select {name}", "want": want.indices, "got": got.indices})
        if name == "kcenter labels chunks" and want.coverage_radius != got.coverage_radius:
            failures.append({"case": "select coverage", "want": want.coverage_radius})
    groups = np.arange(90) // 3
    sets = {"train": 0.6, "val": 0.2, "test": 0.2}
    want = split(x, sets, key=key, groups=groups, labels=labels, manifest_path=False)
    got = split(x, sets, key=key, groups=groups, labels=labels, manifest_path=False, mesh=mesh)
    if {k: v.tolist() for k, v in want.items()} != {k: v.tolist() for k, v in got.items()}:
        failures.append({"case": "select split kcenter groups", "want": want, "got": got})
    # The representative split: its k-means cells on the mesh.
    want = split(x, sets, key=key, labels=labels, method="auto", manifest_path=False)
    got = split(x, sets, key=key, labels=labels, method="auto", manifest_path=False, mesh=mesh)
    if {k: v.tolist() for k, v in want.items()} != {k: v.tolist() for k, v in got.items()}:
        failures.append({"case": "select split auto", "want": want, "got": got})
    return len(calls) + 2


KERNEL_CHECKS = {
    "select": _select_checks,
}


def task_kernels_equal(family):
    mesh = gk.make_mesh()
    failures = []
    count = KERNEL_CHECKS[family](mesh, failures)
    return {"cases": count, "failures": [str(f) for f in failures]}


def _data():
    x = np.random.default_rng(3).normal(size=(101, 5)).astype(np.float32)
    return x, 40, "cosine" if os.environ.get("CKPT_METRIC") == "cosine" else "euclidean"


def task_ckpt_save(path, steps, use_mesh):
    x, k, metric = _data()
    mesh = gk.make_mesh() if use_mesh else None
    config = {"k": k, "metric": metric, "n": len(x)}
    state = gk.kcenter_init(x, k, metric=metric, mesh=mesh)
    state = gk.kcenter_run(state, x, metric=metric, max_steps=steps - 1, mesh=mesh)
    with Checkpointer(path, config=config, every_steps=1) as ckpt:
        ckpt.save(int(state.count), state)
    full = gk.kcenter_run(state, x, metric=metric, mesh=mesh)
    single = gk.greedy_k_center(x, k, metric=metric)
    return {
        "saved_count": int(state.count),
        "final": np.asarray(full.selected).tolist(),
        "single": np.asarray(single).tolist(),
    }


def task_ckpt_resume(path, use_mesh):
    x, k, metric = _data()
    mesh = gk.make_mesh() if use_mesh else None
    config = {"k": k, "metric": metric, "n": len(x)}
    # NumPy leaves: restored as host arrays whatever device layout wrote them (a bare
    # ShapeDtypeStruct would ask Orbax for the saved topology, which this process may not have).
    like = gk.KCenterState(
        np.zeros((len(x),), np.float32), np.zeros((k,), np.int32), np.zeros((), np.int32)
    )
    with Checkpointer(path, config=config, every_steps=1) as ckpt:
        state, step = ckpt.restore(like)
    state = gk.KCenterState(*(jnp.asarray(a) for a in state))
    full = gk.kcenter_run(state, x, metric=metric, mesh=mesh)
    return {"restored_step": step, "final": np.asarray(full.selected).tolist()}


if TASK == "kernels_equal":
    result = task_kernels_equal(sys.argv[3])
elif TASK == "ckpt_save":
    result = task_ckpt_save(sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1")
elif TASK == "ckpt_resume":
    result = task_ckpt_resume(sys.argv[3], sys.argv[4] == "1")
else:
    raise SystemExit(f"unknown task {TASK!r}")
print(json.dumps(result))
