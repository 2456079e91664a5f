"""describe -> split with the sharded k-center, in one of several real JAX processes.

Run by test_multiprocess.py. Each process has 2 CPU devices; the processes talk through gloo on
127.0.0.1. ``NPROC == 0`` is the single-process, single-device reference (no mesh at all).

usage: python _multiprocess_worker.py PROC NPROC PORT WORKDIR [KILL_AT]  -> prints JSON (last line)

KILL_AT: process 1 SIGKILLs itself in its KILL_AT-th call of the k-center ``run`` (after the steps
of that call, before ``select`` checkpoints them), to test the restart.
"""

import os
import sys

PROC, NPROC, PORT, WORKDIR = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
KILL_AT = int(sys.argv[5]) if len(sys.argv) > 5 else None
if NPROC:
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    )

import json  # noqa: E402
import signal  # noqa: E402

import jax  # noqa: E402

if NPROC:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{PORT}",
        num_processes=NPROC,
        process_id=PROC,
        initialization_timeout=60,
    )

import numpy as np  # noqa: E402
from _describe_worker import BATCH_SIZE, build  # noqa: E402
from goldener_jax.kernels import selectors  # noqa: E402

import goldener_jax as gj  # noqa: E402
from goldener_jax import kernels as gk  # noqa: E402
from goldener_jax.describe import describe  # noqa: E402
from goldener_jax.select import SelectionMethod, register_method  # noqa: E402
from goldener_jax.sources import ArraySource  # noqa: E402

SETS = {"train": 0.6, "val": 0.2, "test": 0.2}
CHECKPOINT_EVERY = 4
# Centers held by the state the first time `run` is called in this process (0 on a fresh start).
FIRST_RUN_COUNT = []
RUN_CALLS = []


def sharded_kcenter_method(mesh) -> SelectionMethod:
    """``select``'s k-center with rows sharded over ``mesh``. The state handed back to ``select``
    (and checkpointed by it) holds ``min_dist`` as a host array, identical on every process: it
    is O(N), gathered once per chunk of steps, and restores onto any device count."""
    from jax.experimental import multihost_utils

    def host(state):
        md = state.min_dist
        if not md.is_fully_addressable:
            md = multihost_utils.process_allgather(md, tiled=True)
        return gk.KCenterState(np.asarray(md), np.asarray(state.selected), np.asarray(state.count))

    def make(options, *, metric, mesh=None):
        base = selectors.kcenter(metric=metric, mesh=mesh_)

        def init(x, k, *, key=None, anchors=None):
            return host(base.init(x, k, key=key, anchors=anchors))

        def run(state, x, max_steps=None):
            if not FIRST_RUN_COUNT:
                FIRST_RUN_COUNT.append(int(state.count))
            state = host(base.run(state, x, max_steps))
            RUN_CALLS.append(int(state.count))
            if KILL_AT is not None and PROC == 1 and len(RUN_CALLS) == KILL_AT:
                os.kill(os.getpid(), signal.SIGKILL)
            return state

        return base._replace(
            name="kcenter_sharded", init=init, run=run, step=lambda s, x: run(s, x, 1)
        )

    mesh_ = mesh
    return SelectionMethod("kcenter_sharded", make)


def main():
    x, labels, extractor = build()
    store_path = os.path.join(WORKDIR, "store")
    store = describe(
        ArraySource(x, labels=labels, name="crash-test"),
        extractor,
        store_path,
        batch_size=BATCH_SIZE,
        progress=False,
    )
    if NPROC:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("worker:described")
        register_method(sharded_kcenter_method(gk.make_mesh()))
        method = "kcenter_sharded"
    else:
        method = "kcenter"
    result = gj.split(
        store,
        SETS,
        method=method,
        key=jax.random.key(0),
        checkpoint_dir=os.path.join(WORKDIR, "ckpt"),
        checkpoint_every=CHECKPOINT_EVERY,
        # One writer for the shared manifest.
        manifest_path=None if PROC == 0 else False,
    )
    # Lower level: each process reads only its own devices' rows of the store into the sharded
    # k-center (no process holds all the vectors); the reference reads them whole.
    if NPROC:
        mesh = gk.make_mesh()
        xs = gk.shard_rows(store.vectors, mesh)
        state = gk.kcenter_init(xs, 20, mesh=mesh, n=store.num_rows)
        state = gk.kcenter_run(state, xs, mesh=mesh)
        from_store = np.asarray(state.selected).tolist()
    else:
        from_store = np.asarray(gk.greedy_k_center(store.vectors.read().result(), 20)).tolist()
    done = store.done_batches()
    print(
        json.dumps(
            {
                "proc": PROC,
                "devices": jax.device_count(),
                "local_devices": jax.local_device_count(),
                "batches_done": int(done.sum()),
                "first_run_count": FIRST_RUN_COUNT[0] if FIRST_RUN_COUNT else None,
                "num_batches": int(done.size),
                "split": {k: [int(i) for i in v] for k, v in result.items()},
                "kcenter_from_store": from_store,
            }
        )
    )


main()
