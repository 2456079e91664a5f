"""describe -> split with the sharded k-center, in one of several real JAX processes.

Run by test_multiprocess.py. Each process has 2 CPU devices; the processes talk through gloo on
127.0.0.1. ``NPROC == 0`` is the single-process, single-device reference (no mesh at all).

usage: python _multiprocess_worker.py PROC NPROC PORT WORKDIR [KILL_AT | pipeline]
  -> prints JSON (last line)

KILL_AT: process 1 SIGKILLs itself in its KILL_AT-th call of the k-center ``run`` (after the steps
of that call, before ``select`` checkpoints them), to test the restart.

``pipeline``: describe -> ``select(method="auto")`` -> ``split`` -> ``label_issues`` with the
mesh over every process's devices (the plain calls, no custom method), reporting the results and
the rows this process read from the store for each array it built.
"""

import os
import sys

PROC, NPROC, PORT, WORKDIR = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
MODE = sys.argv[5] if len(sys.argv) > 5 else None
PIPELINE = MODE == "pipeline"
KILL_AT = int(MODE) if MODE is not None and MODE.isdigit() else None
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


def _count_reads() -> tuple[list, list]:
    """``(builds, host_reads)``, filled as the pipeline reads the store per process: each
    row-sharded array built ``[rows asked, rows this process read]``, and the row count of
    each whole read on the host (``StoreRows.host_rows``)."""
    from goldener_jax.pipeline.data import StoreRows

    builds, host_reads = [], []
    sharded, host_rows = StoreRows.sharded, StoreRows.host_rows

    def counted_sharded(self, vecs):
        before = self.rows_read
        out = sharded(self, vecs)
        builds.append([int(len(vecs)), int(self.rows_read - before)])
        return out

    def counted_host_rows(self, vecs):
        host_reads.append(int(len(vecs)))
        return host_rows(self, vecs)

    read_rows = StoreRows.read_rows

    def counted_read_rows(self, vecs):
        PIECE_READS.append(int(len(vecs)))
        return read_rows(self, vecs)

    StoreRows.sharded, StoreRows.host_rows = counted_sharded, counted_host_rows
    StoreRows.read_rows = counted_read_rows
    return builds, host_reads


PIECE_READS: list = []  # rows of each StoreRows.read_rows (the leakage check's own rows, pieces)


def pipeline_main():
    """describe -> select(auto) -> split -> label_issues, each with ``mesh`` when NPROC > 0."""
    import warnings

    builds, host_reads = _count_reads()
    _, _, extractor = build()
    # 122 samples: per-label tasks of about 40 rows (padded on 4 devices), 6 picks (5 %: typical
    # k-center under the auto rule).
    rng = np.random.RandomState(1)
    x = rng.rand(122, 8, 8, 3).astype(np.float32)
    labels = rng.randint(0, 3, 122)
    store = describe(
        ArraySource(x, labels=labels, name="pipeline-test"),
        extractor,
        os.path.join(WORKDIR, "pstore"),
        batch_size=BATCH_SIZE,
        progress=False,
    )
    mesh = None
    radius_piece = None
    if NPROC:
        from jax.experimental import multihost_utils

        from goldener_jax.pipeline import engine, leakage

        multihost_utils.sync_global_devices("worker:described")
        mesh = gk.make_mesh()
        # The coverage radius in pieces of 3 rows per device (12 on the 4 devices): several
        # pieces and a short last one (the default, 32 MB per device, is one piece here).
        engine._RADIUS_PIECE_BYTES = 3 * store.dim * 4
        radius_piece = 12
        # The split's leakage check streams the test set past each process's rows 8 at a time.
        leakage._PIECE_BYTES = 8 * store.dim * 4
    # A leakage threshold that some cross-set pairs meet: the 2 % quantile of all distances
    # (read here from the store directly, not through the pipeline's per-process reads).
    every = np.asarray(store.vectors.read().result(), np.float64)
    gaps = np.sqrt(((every[:, None] - every[None]) ** 2).sum(-1))[np.triu_indices(len(every), 1)]
    leak_at = float(np.quantile(gaps, 0.02))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sel = gj.select(store, 6, key=jax.random.key(1), mesh=mesh, progress=False)
        # random, typiclust, herding and zcore take n=: no process gathers a task's rows
        # (host_reads stays empty); their kernels run on the padded rows
        rnd = gj.select(
            store, 6, method="random", key=jax.random.key(3), mesh=mesh, progress=False
        )
        typ = gj.select(
            store, 6, method="typiclust", key=jax.random.key(4), mesh=mesh, progress=False
        )
        # herding's median bandwidth: rows gathered by one program on the mesh
        herd = gj.select(
            store, 6, method="herding", key=jax.random.key(5), mesh=mesh, progress=False
        )
        zc = gj.select(
            store,
            6,
            method="zcore",
            method_options={"num_samples": 64, "chunk": 32, "num_redundancy": 5},
            key=jax.random.key(6),
            mesh=mesh,
            progress=False,
        )
        parts = gj.split(
            store,
            {"train": 0.75, "test": 0.25},
            method="kcenter",  # sets filled in order by select's engine
            key=jax.random.key(2),
            mesh=mesh,
            manifest_path=False,
            leakage_threshold=leak_at,
            progress=False,
        )
        issues = gj.label_issues(store, k=5, mesh=mesh, progress=False)
    print(
        json.dumps(
            {
                "proc": PROC,
                "devices": jax.device_count(),
                "local_devices": jax.local_device_count(),
                "select": [int(i) for i in sel.indices],
                "select_method": sel.config["method"],
                "label_counts": {str(k): int(v) for k, v in sel.label_counts.items()},
                "coverage_radius": sel.coverage_radius,
                "random": [int(i) for i in rnd.indices],
                "typiclust": [int(i) for i in typ.indices],
                "herding": [int(i) for i in herd.indices],
                "zcore": [int(i) for i in zc.indices],
                "split": {k: [int(i) for i in v] for k, v in parts.items()},
                "leakage": parts.manifest["leakage"],
                "piece_reads": PIECE_READS,
                "issues": [int(i) for i in issues.indices],
                "issue_scores": [float(v) for v in issues.scores],
                "suggested": [int(v) for v in issues.suggested],
                "num_rows": store.num_rows,
                "radius_piece": radius_piece,
                "builds": builds,
                "host_reads": host_reads,
                "whole_reads": [str(w.message) for w in caught if "every vector" in str(w.message)],
            }
        )
    )


def probcover_main():
    """``select(method="auto")`` with 45 picks (ProbCover) with ``mesh`` when NPROC > 0: the
    selector takes ``n=``, so each process reads only its own devices' rows of each task."""
    import warnings

    builds, host_reads = _count_reads()
    _, _, extractor = build()
    rng = np.random.RandomState(2)
    x = rng.rand(130, 8, 8, 3).astype(np.float32)
    source = ArraySource(x, labels=rng.randint(0, 3, 130), name="probcover-test")
    path = os.path.join(WORKDIR, "pcstore")
    store = describe(source, extractor, path, batch_size=BATCH_SIZE, progress=False)
    mesh = None
    if NPROC:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("worker:described")
        mesh = gk.make_mesh()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sel = gj.select(store, 45, key=jax.random.key(3), mesh=mesh, progress=False)
    out = {"proc": PROC, "devices": jax.device_count(), "local_devices": jax.local_device_count()}
    out.update(select=[int(i) for i in sel.indices], select_method=sel.config["method"])
    out.update(builds=builds, host_reads=host_reads)
    out["whole_reads"] = [str(w.message) for w in caught if "every vector" in str(w.message)]
    print(json.dumps(out))


def _labelled_store(path, n, dim, seed):
    """A store of ``n`` vectors of width ``dim``, three labelled blobs that overlap: small
    vectors, which the ridge (L2 1.0) fits loosely, so some units are hard."""
    from goldener_jax.store import FeatureStore

    batch = 100
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    centers = rng.standard_normal((3, dim))
    x = (0.05 * (0.3 * centers[labels] + rng.standard_normal((n, dim)))).astype(np.float32)
    manifest = FeatureStore.build_manifest(
        extractor_fingerprint="auto-split-test",
        extractor_config={},
        source={"n": n, "seed": seed},
        num_samples=n,
        rows_per_sample=1,
        dim=dim,
        dtype="float32",
        batch_size=batch,
        labels=((), "int64"),
    )
    store = FeatureStore.create(path, manifest)
    for b in range(-(-n // batch)):
        rows = slice(b * batch, min(n, (b + 1) * batch))
        store.write_batch(b, x[rows], np.ones(x[rows].shape[0], bool), labels=labels[rows])


def auto_split_main():
    """``split(method="auto")`` with ``mesh`` when NPROC > 0, no process reading a whole store:
    euclidean on 260 vectors of width 300 (projected for the difficulty), cosine on 150 of
    width 24. The difficulty's pieces have 64 rows (in the reference too: the pieces decide
    the float32 products). Then a chunked k-means with ``n=`` on the narrow store's rows."""
    import warnings

    from goldener_jax.pipeline import representative
    from goldener_jax.store import FeatureStore

    builds, host_reads = _count_reads()
    cases = {"euclidean": (260, 300, 5), "cosine": (150, 24, 6)}  # metric: (n, dim, seed)
    if PROC == 0:  # one writer
        for metric, (n, dim, seed) in cases.items():
            _labelled_store(os.path.join(WORKDIR, metric), n, dim, seed)
    mesh = None
    if NPROC:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("worker:written")
        mesh = gk.make_mesh()
    sets = {"train": 0.7, "val": 0.15, "test": 0.15}
    out = {"proc": PROC, "devices": jax.device_count(), "local_devices": jax.local_device_count()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for metric, (n, dim, seed) in cases.items():
            store = FeatureStore.open(os.path.join(WORKDIR, metric))
            representative._PIECE_BYTES = 64 * dim * 4
            del host_reads[:], builds[:]
            parts = gj.split(
                store, sets, key=jax.random.key(seed), metric=metric, mesh=mesh,
                manifest_path=False, progress=False,
            )  # fmt: skip
            out[metric] = {k: [int(i) for i in v] for k, v in parts.items()}
            out[metric + "_construction"] = parts.manifest["construction"]
            out[metric + "_reads"] = {"n": n, "builds": list(builds), "host": list(host_reads)}
        # groups of 3 samples (units: their mean vectors), read per process as well
        store = FeatureStore.open(os.path.join(WORKDIR, "euclidean"))
        representative._PIECE_BYTES = 16 * store.dim * 4
        del host_reads[:], builds[:]
        parts = gj.split(
            store, sets, groups=np.arange(store.num_rows) // 3, key=jax.random.key(8),
            mesh=mesh, manifest_path=False, progress=False,
        )  # fmt: skip
        out["groups"] = {k: [int(i) for i in v] for k, v in parts.items()}
        out["groups_construction"] = parts.manifest["construction"]
        out["groups_reads"] = {"builds": list(builds), "host": list(host_reads)}
    out["whole_reads"] = [str(w.message) for w in caught if "every vector" in str(w.message)]
    # k-means seeded, one Lloyd iteration, then the rest, on rows read per process (n=; 150
    # rows: 2 padding rows on 4 devices, so the state's assignment is padded back by a program)
    store = FeatureStore.open(os.path.join(WORKDIR, "cosine"))
    key, n = jax.random.key(7), store.num_rows
    if NPROC:
        from jax.experimental import multihost_utils

        xs = gk.shard_rows(store.vectors, mesh)
        state = gk.kmeans_init(xs, 6, key, mesh=mesh, n=n)
        state = gk.kmeans_run(state, xs, num_iters=10, max_steps=1, mesh=mesh, n=n)
        state = gk.kmeans_run(state, xs, num_iters=10, mesh=mesh, n=n)
        assignment = multihost_utils.process_allgather(state.assignment, tiled=True)
    else:
        x = store.vectors.read().result()
        state = gk.kmeans_run(gk.kmeans_init(x, 6, key), x, num_iters=10)
        assignment = state.assignment
    out["kmeans"] = np.asarray(assignment).tolist()
    out["kmeans_iterations"] = int(np.asarray(state.iteration))
    print(json.dumps(out))


{"probcover": probcover_main, "auto_split": auto_split_main}.get(
    MODE, pipeline_main if PIPELINE else main
)()
