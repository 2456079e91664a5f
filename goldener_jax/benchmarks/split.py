"""Split at scale: N vectors with labels into train / val / test, end to end, time and memory.

Synthetic data: ``--labels`` Gaussian blobs in ``d`` dimensions, one label per vector. The split
is ``goldener_jax.split`` with k-center, stratified by label, chunked (``--chunk-size``), the
largest set last (it takes what remains; the others are selected). Reported: wall time of the
whole call, peak RSS above the resident memory before it (the data itself included in neither),
and the same split on a random baseline (``method="random"``, same code path) for the ratio of
what the kernel costs over the bookkeeping.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from goldener_jax.benchmarks._machine import (
    machine_summary,
    peak_rss_bytes,
    reset_peak_rss,
    rss_bytes,
)


def add_arguments(parser) -> None:
    from goldener_jax.cli import fraction, int_at_least

    count, nonneg = int_at_least(1), int_at_least(0)

    parser.add_argument("--n", type=count, default=1_000_000, help="vectors (= samples)")
    parser.add_argument("--d", type=count, default=32, help="dimensions")
    parser.add_argument("--labels", type=count, default=10, help="number of labels")
    parser.add_argument("--val", type=fraction, default=0.1)
    parser.add_argument("--test", type=fraction, default=0.1)
    parser.add_argument("--chunk-size", type=count, default=50_000)
    parser.add_argument("--max-anchors", type=nonneg, default=512)
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and keys (0)")
    parser.add_argument("--skip-baseline", action="store_true")


def _data(args):
    rng = np.random.default_rng(args.seed)
    labels = rng.integers(0, args.labels, args.n)
    centres = rng.normal(scale=4.0, size=(args.labels, args.d)).astype(np.float32)
    x = centres[labels] + rng.normal(size=(args.n, args.d)).astype(np.float32)
    return x, labels


def _run_split(x, labels, sets, method, args):
    from goldener_jax.split import split

    before = rss_bytes()
    reset_peak_rss()
    t0 = time.perf_counter()
    result = split(
        x,
        sets,
        method=method,
        key=jax.random.key(args.seed),
        labels=labels,
        chunk_size=args.chunk_size,
        max_anchors=args.max_anchors,
        manifest_path=False,
    )
    seconds = time.perf_counter() - t0
    return result, seconds, peak_rss_bytes() - before


def run(args) -> dict:
    x, labels = _data(args)
    sets = {"val": args.val, "test": args.test, "train": 1.0 - args.val - args.test}
    sets = {k: round(v, 12) for k, v in sets.items()}
    result, seconds, extra = _run_split(x, labels, sets, "kcenter", args)
    counts = {k: int(len(v)) for k, v in result.items()}
    covered = np.zeros(args.n, bool)
    for v in result.values():
        covered[v] = True
    out = {
        "benchmark": "split",
        "n": args.n,
        "d": args.d,
        "labels": args.labels,
        "sets": sets,
        "counts": counts,
        "every_sample_once": bool(covered.all() and sum(counts.values()) == args.n),
        "chunk_size": args.chunk_size,
        "max_anchors": args.max_anchors,
        "seconds": seconds,
        "peak_extra_rss_bytes": extra,
        "data_bytes": int(x.nbytes),
        "label_counts": result.manifest["label_counts"],
        "machine": machine_summary(),
    }
    if not args.skip_baseline:
        _, base_s, base_extra = _run_split(x, labels, sets, "random", args)
        out["random_seconds"] = base_s
        out["random_peak_extra_rss_bytes"] = base_extra
        out["ratio_vs_random"] = seconds / base_s
    _print(out)
    return out


def _print(r: dict) -> None:
    m = r["machine"]
    print(
        f"split  n={r['n']:,} d={r['d']} labels={r['labels']} sets={r['sets']} "
        f"chunk={r['chunk_size']:,} max_anchors={r['max_anchors']}"
    )
    print(f"  machine: {m['cpu']}, {m['cores']} cores, jax {m['jax']} on {m['backend']}")
    print(f"  counts: {r['counts']}  every sample exactly once: {r['every_sample_once']}")
    print(
        f"  k-center split end to end: {r['seconds']:.1f} s; peak RSS above the start "
        f"{r['peak_extra_rss_bytes'] / 1e9:.2f} GB (data {r['data_bytes'] / 1e9:.2f} GB)"
    )
    if "random_seconds" in r:
        print(
            f"  same split, method='random' (bookkeeping only): {r['random_seconds']:.1f} s, "
            f"peak +{r['random_peak_extra_rss_bytes'] / 1e9:.2f} GB -> k-center costs "
            f"{r['ratio_vs_random']:.1f}x"
        )
