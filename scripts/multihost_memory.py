"""Peak memory of the multi-process pipeline: each process holds only its own rows.

Builds a store of at least 1 GB (written with the store API, ``FeatureStore.create`` +
``write_batch``: clustered float32 vectors, one per sample, with labels), then runs
``select(method="auto")`` -> ``split`` (``method="auto"``, 70/15/15) -> ``label_issues`` in 2 JAX
processes on 127.0.0.1 (gloo), 2 CPU devices each, with ``mesh`` over the 4 devices. Each process
measures its resident-memory high-water mark (``VmHWM``, Linux) per step, above its baseline
(the JAX runtime initialised and the collectives warmed up, before any data), and the script
prints it as a fraction of the store's vector bytes.

    python scripts/multihost_memory.py [--rows 2100] [--dim 131072] [--workdir DIR]

The default shape (2,100 rows of 131,072 floats, 1.1 GB) is chosen for the cost of
``label_issues``: its exact kNN is O(N^2 d), about 1.2e12 multiply-adds at this shape, where the
1.1M x 256 shape of the same size would be 3e14 (hours on 2 CPU cores). Wide rows are the hard
case for memory: every "small" temporary of a few rows or of one centroid per cell is large next
to the store.

The vectors are integers in [-3, 3] (clustered), so every distance is exact in float32 and
one process must agree with the mesh bit for bit. With ``--check`` the same steps also run in
one process without a mesh (the whole store read) and the results are compared.

The library bounds what stays resident in a multi-process step (``pipeline/data.py``:
``bound_heap`` maps buffers of 1 MB or more on their own, ``release_freed_memory`` drops the
programs compiled for a finished task and hands freed heap back); ``--keep-memory`` turns that
off (``GOLDENER_JAX_KEEP_MEMORY=1``) to show what it saves.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    # Resets VmHWM to the current resident size (Linux >= 4.0).
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def build_store(path: str, rows: int, dim: int, labels: int, batch: int, seed: int = 0):
    """Clustered float32 vectors (``labels`` Gaussian clusters rounded to integers in [-3, 3], the
    label is the cluster with 5 % of the labels flipped), written batch by batch with the store
    API."""
    import numpy as np

    from goldener_jax.store import FeatureStore

    fingerprint = f"synthetic-int-{rows}x{dim}-{labels}-{seed}"
    if FeatureStore.peek_manifest(path) is not None:
        store = FeatureStore.open(path)
        same = store.extractor_fingerprint == fingerprint
        if same and store.num_rows == rows and store.dim == dim and store.is_complete():
            return store
    manifest = FeatureStore.build_manifest(
        extractor_fingerprint=fingerprint,
        extractor_config={"synthetic": True, "rows": rows, "dim": dim, "labels": labels},
        source={"name": "multihost_memory", "num_samples": rows},
        num_samples=rows,
        rows_per_sample=1,
        dim=dim,
        dtype="float32",
        batch_size=batch,
        labels=((), "int64"),
    )
    store = FeatureStore.create(path, manifest, overwrite=True)
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((labels, dim)).astype(np.float32) * 2.0
    for b in range(store.num_batches):
        s0, s1 = store.batch_samples(b)
        brng = np.random.default_rng([seed, b])
        cluster = brng.integers(0, labels, s1 - s0)
        x = centres[cluster] + brng.standard_normal((s1 - s0, dim), dtype=np.float32)
        # Integers in [-3, 3]: every dot product and squared norm is an integer below 2^24, so
        # each distance is exact in float32 whatever the summation order (the blocking of a
        # matrix product depends on its shape): one process and a mesh must then agree bit for
        # bit, as they do wherever distances are exact.
        x = np.clip(np.rint(x), -3, 3).astype(np.float32)
        flip = brng.random(s1 - s0) < 0.05
        y = np.where(flip, brng.integers(0, labels, s1 - s0), cluster)
        store.write_batch(b, x, np.ones(s1 - s0, bool), labels=y.astype(np.int64))
    return store


def _dir_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            total += os.path.getsize(os.path.join(root, name))
    return total


def worker(args) -> None:
    nproc = args.nproc
    if nproc:
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
        )
    import jax

    if nproc:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=f"127.0.0.1:{args.port}",
            num_processes=nproc,
            process_id=args.proc,
            initialization_timeout=120,
        )
    import numpy as np

    import goldener_jax as gj
    from goldener_jax import kernels as gk
    from goldener_jax.pipeline.data import StoreRows

    reads = []
    sharded = StoreRows.sharded

    def counted(self, vecs):
        before = self.rows_read
        out = sharded(self, vecs)
        reads.append((int(len(vecs)), int(self.rows_read - before)))
        return out

    StoreRows.sharded = counted
    mesh = gk.make_mesh() if nproc else None
    store = gj.FeatureStore.open(args.store)
    if mesh is not None:
        # Warm up the runtime and the collectives (part of the baseline, not of the data).
        from jax.experimental import multihost_utils

        multihost_utils.process_allgather(np.zeros(4, np.uint32))
        w = gk.shard_rows(np.zeros((8, 4), np.float32), mesh)
        jax.jit(lambda a: a.sum())(w).block_until_ready()
        del w
    baseline = _status("VmRSS")
    steps = {}
    results = {}

    def run(name, fn):
        _reset_peak()
        t0 = time.perf_counter()
        out = fn()
        steps[name] = {
            "seconds": round(time.perf_counter() - t0, 1),
            "peak_above_baseline": _status("VmHWM") - baseline,
            "rss_after_above_baseline": _status("VmRSS") - baseline,
            "rows_read": sum(r for _, r in reads),
            "rows_asked": sum(m for m, _ in reads),
            "builds": len(reads),
        }
        reads.clear()
        return out

    key = jax.random.key(0)
    wanted = args.steps.split(",")
    if "select" in wanted:
        sel = run(
            "select",
            lambda: gj.select(store, args.select, key=key, mesh=mesh, progress=False),
        )
        results["select"] = [int(i) for i in sel.indices]
        results["select_method"] = sel.config["method"]

    def split(**options):
        sets = {"train": 0.7, "val": 0.15, "test": 0.15}
        return gj.split(
            store, sets, key=key, mesh=mesh, manifest_path=False, progress=False, **options
        )

    if "leakage" in wanted:
        # split's leakage check (after a random split, whose tasks read their rows per
        # process): each process holds its own rows and streams the later sets past them
        # (pipeline/leakage.py)
        parts = run(
            "leakage",
            lambda: split(method="random", leakage_threshold=args.leakage_threshold),
        )
        results["leakage"] = parts.manifest["leakage"]
    if "split" in wanted:
        parts = run("split", lambda: split())  # method="auto", the default
        results["split"] = {k: [int(i) for i in v] for k, v in parts.items()}
    if "label_issues" in wanted:
        issues = run(
            "label_issues", lambda: gj.label_issues(store, k=10, mesh=mesh, progress=False)
        )
        results["issues"] = [int(i) for i in issues.indices[:200]]
        results["issue_scores"] = [float(v) for v in issues.scores[:200]]
    print(
        json.dumps(
            {
                "proc": args.proc,
                "devices": jax.device_count(),
                "baseline": baseline,
                "steps": steps,
                "results": results,
            }
        ),
        flush=True,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(args, proc: int, nproc: int, port: int) -> subprocess.Popen:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--store", args.store]
    cmd += ["--proc", str(proc), "--nproc", str(nproc), "--port", str(port)]
    cmd += ["--select", str(args.select), "--steps", args.steps]
    cmd += ["--leakage-threshold", str(args.leakage_threshold)]
    env = dict(os.environ)
    if args.keep_memory:
        env["GOLDENER_JAX_KEEP_MEMORY"] = "1"
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)


def _collect(p: subprocess.Popen) -> dict:
    out, _ = p.communicate()
    if p.returncode != 0:
        raise SystemExit(f"worker failed with status {p.returncode}")
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2100)
    ap.add_argument("--dim", type=int, default=131072)
    ap.add_argument("--labels", type=int, default=10)
    ap.add_argument("--batch", type=int, default=16, help="samples per store chunk")
    ap.add_argument("--select", type=int, default=100, help="samples select(auto) picks")
    ap.add_argument("--workdir", default="/tmp/goldener_multihost_memory")
    ap.add_argument("--check", action="store_true", help="also run one process, no mesh")
    ap.add_argument(
        "--steps",
        default="select,split,label_issues",
        help="comma-separated steps, in this order: select, leakage (split(method='random', "
        "leakage_threshold=...)), split, label_issues",
    )
    ap.add_argument("--leakage-threshold", type=float, default=468.5)
    ap.add_argument(
        "--keep-memory",
        action="store_true",
        help="GOLDENER_JAX_KEEP_MEMORY=1: keep compiled programs and glibc's default allocator",
    )
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    ap.add_argument("--proc", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--nproc", type=int, default=2, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    os.makedirs(args.workdir, exist_ok=True)
    args.store = os.path.join(args.workdir, "store")
    t0 = time.perf_counter()
    store = build_store(args.store, args.rows, args.dim, args.labels, args.batch)
    vector_bytes = store.num_rows * store.dim * 4
    store_bytes = _dir_bytes(args.store)
    print(
        f"store: {store.num_rows} rows x {store.dim} float32, vectors {vector_bytes / 1e9:.3f} GB, "
        f"on disk {store_bytes / 1e9:.3f} GB (built or reused in {time.perf_counter() - t0:.0f} s)",
        flush=True,
    )
    port = _free_port()
    t0 = time.perf_counter()
    procs = [_spawn(args, i, 2, port) for i in range(2)]
    results = [_collect(p) for p in procs]
    print(f"2 processes x 2 devices: {time.perf_counter() - t0:.0f} s", flush=True)
    report = {"vector_bytes": vector_bytes, "store_bytes": store_bytes, "processes": []}
    for r in results:
        worst = max(s["peak_above_baseline"] for s in r["steps"].values())
        report["processes"].append(
            {
                "proc": r["proc"],
                "baseline_bytes": r["baseline"],
                "steps": r["steps"],
                "peak_above_baseline_over_store": worst / store_bytes,
            }
        )
        for name, s in r["steps"].items():
            print(
                f"process {r['proc']} {name:>12}: peak above baseline "
                f"{s['peak_above_baseline'] / 1e6:8.1f} MB = "
                f"{s['peak_above_baseline'] / store_bytes:.3f} x store; rows read "
                f"{s['rows_read']} of {s['rows_asked']} asked ({s['builds']} arrays), "
                f"{s['seconds']} s; after: {s['rss_after_above_baseline'] / 1e6:.1f} MB"
            )
        print(
            f"process {r['proc']}: worst step {worst / store_bytes:.3f} x store "
            f"(select(auto) ran {r['results'].get('select_method')!r})"
        )
    same = results[0]["results"] == results[1]["results"]
    print(f"both processes agree: {same}")
    report["processes_agree"] = same
    if args.check:
        t0 = time.perf_counter()
        single = _collect(_spawn(args, 0, 0, 0))
        equal = single["results"] == results[0]["results"]
        differ = [k for k in single["results"] if single["results"][k] != results[0]["results"][k]]
        print(
            f"one process, no mesh ({time.perf_counter() - t0:.0f} s): equal results: {equal}"
            + (f" (differ: {differ})" if differ else "")
        )
        for k in differ:
            print(f"  {k}: one process {single['results'][k]}")
            print(f"  {k}: 2 processes {results[0]['results'][k]}")
        report["equal_to_single_process"] = equal
    print(json.dumps(report))


if __name__ == "__main__":
    main()
