"""Time and peak memory of cluster / propose_labels / outliers on N x D random vectors.

    .venv/bin/python scripts/refine_bench.py --n 50000 --d 256 \
        --json docs/results/cpu_refine_50000_256.json

Each task runs in its own process (peak RSS = ``ru_maxrss`` of that process, which includes
the ~N x D x 4 bytes of the input and JAX's own footprint); the time includes compilation.
Data: a Gaussian mixture of 100 components (seed 0, well separated: the accuracies are 1.0;
this measures cost, not quality), float32; 5% labelled for the label proposals.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

TASKS = ("cluster", "propose_labels", "propose_labels_propagation", "outliers")


def _data(n, d):
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 4, (100, d)).astype(np.float32)
    y = rng.integers(0, 100, n)
    return (centers[y] + rng.normal(size=(n, d)).astype(np.float32)), y


def _one(task, n, d, clusters, k):
    import jax

    from goldener_jax.refine import cluster, outliers, propose_labels

    x, y = _data(n, d)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    if task == "cluster":
        r = cluster(x, clusters, key=jax.random.key(0), progress=False)
        extra = {"clusters": clusters, "inertia": r.inertia}
    elif task.startswith("propose_labels"):
        method = "propagation" if task.endswith("propagation") else "knn"
        lab = np.sort(np.random.default_rng(0).choice(n, n // 20, replace=False))
        r = propose_labels(x, lab, y[lab], k=k, method=method, progress=False)
        extra = {
            "labelled": len(lab),
            "k": k,
            "accuracy": float((r.labels == y[r.indices]).mean()),
        }
    else:
        r = outliers(x, k=k, progress=False)
        extra = {"k": k}
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "task": task,
        "seconds": seconds,
        "peak_rss_mib": peak / 1024,
        "rss_before_mib": base / 1024,
        **extra,
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=50000)
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--clusters", type=int, default=100)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--only", default=None, choices=TASKS)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    if a.only:
        print(json.dumps(_one(a.only, a.n, a.d, a.clusters, a.k)))
        return
    results = {"config": {"n": a.n, "d": a.d}, "tasks": []}
    for task in TASKS:
        cmd = [
            sys.executable,
            __file__,
            "--only",
            task,
            "--n",
            str(a.n),
            "--d",
            str(a.d),
            "--clusters",
            str(a.clusters),
            "--k",
            str(a.k),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        print(row, flush=True)
        results["tasks"].append(row)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
