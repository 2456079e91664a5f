"""The ``goldener-jax cluster`` and ``goldener-jax outliers`` subcommands.

``cli.py`` wires them with ``add_parsers(sub)`` and dispatches ``args.command in COMMANDS`` to
``run(args)``; both read a feature store directory or a ``.npy`` of vectors and write JSON + .npy.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

__all__ = ["COMMANDS", "add_parsers", "run"]

COMMANDS = ("cluster", "outliers")


def add_parsers(sub) -> None:
    """Adds the ``cluster`` and ``outliers`` subparsers to an argparse subparsers object."""
    from goldener_jax.cli import int_at_least

    count, nonneg = int_at_least(1), int_at_least(0)
    cl = sub.add_parser(
        "cluster", help="k-means clusters with stable ids over every sample (writes JSON + .npy)"
    )
    cl.add_argument("source", help="a feature store directory, or a .npy of vectors [N, d]")
    cl.add_argument("--clusters", type=count, required=True, help="number of clusters")
    cl.add_argument("--seed", type=int, default=0, help="seed of the jax.random.key (0)")
    cl.add_argument("--fit-size", type=count, default=None, help="fit on this many sampled rows")
    cl.add_argument(
        "--fit", choices=["lloyd", "minibatch"], default="lloyd",
        help="exact Lloyd, or mini-batch k-means (one batch on the device at a time)",
    )  # fmt: skip
    cl.add_argument(
        "--batch-size",
        type=count,
        default=None,
        help="with --fit minibatch: rows per mini-batch step (default 4096)",
    )
    cl.add_argument("--iters", type=nonneg, default=100, help="at most this many Lloyd iterations")
    cl.add_argument("--chunk-size", type=count, default=1 << 16, help="rows assigned per chunk")
    cl.add_argument("--checkpoint-dir", default=None, help="resumable progress here")
    cl.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh when --checkpoint-dir holds a clustering with another config",
    )
    cl.add_argument(
        "--per-label", action="store_true", help="cluster each label apart (--clusters each)"
    )
    cl.add_argument(
        "--labels", default=None, help="with --per-label: .npy of labels (default: the store's)"
    )
    cl.add_argument("--out", required=True, help="output directory (JSON + .npy)")
    ol = sub.add_parser(
        "outliers", help="rank samples by distance to their k-th neighbour (writes JSON + .npy)"
    )
    ol.add_argument("source", help="a feature store directory, or a .npy of vectors [N, d]")
    ol.add_argument("--k", type=count, default=10, help="the k of the k-th neighbour (10)")
    ol.add_argument(
        "--metric",
        default="euclidean",
        choices=["euclidean", "sqeuclidean", "cosine"],
        help="distance to the neighbours (default euclidean)",
    )
    ol.add_argument("--top", type=nonneg, default=20, help="outliers printed (20)")
    ol.add_argument("--out", required=True, help="output directory (JSON + .npy)")


def _checked(args):
    """The command's inputs, each argument checked before any work (one-line errors naming it)."""
    from goldener_jax.cli import UsageError, load_input, load_source, out_dir

    labels = None
    if args.command == "cluster":
        if args.batch_size is not None and args.fit != "minibatch":
            raise UsageError("--batch-size only applies with --fit minibatch")
        if args.labels is not None and not args.per_label:
            raise UsageError("--labels only applies with --per-label (a clustering per label)")
        if args.overwrite and args.checkpoint_dir is None:
            raise UsageError("--overwrite only applies with --checkpoint-dir")
        if args.checkpoint_dir is not None:
            out_dir(args.checkpoint_dir, "--checkpoint-dir", create=False)
        labels = load_input(args.labels, "--labels")
    x = load_source(args.source)
    out_dir(args.out)
    return x, labels


def run(args) -> int:
    """Runs ``args.command`` (one of ``COMMANDS``); returns the exit status."""
    import jax

    from goldener_jax.refine import cluster, outliers

    progress = not getattr(args, "quiet", False)
    x, labels = _checked(args)
    t0 = time.perf_counter()
    if args.command == "cluster":
        res = cluster(
            x,
            args.clusters,
            key=jax.random.key(args.seed),
            fit_size=args.fit_size,
            fit=args.fit,
            batch_size=4096 if args.batch_size is None else args.batch_size,
            num_iters=args.iters,
            chunk_size=args.chunk_size,
            checkpoint_dir=args.checkpoint_dir,
            overwrite=args.overwrite,
            per_label=args.per_label,
            labels=labels,
            progress=progress,
        )
        seconds = time.perf_counter() - t0
        np.save(os.path.join(args.out, "assignment.npy"), res.assignment)
        np.save(os.path.join(args.out, "centroids.npy"), res.centroids)
        if res.sample_ids is not None:
            np.save(os.path.join(args.out, "sample_ids.npy"), res.sample_ids)
        with open(os.path.join(args.out, "clusters.json"), "w") as f:
            json.dump({**res.to_json(), "seconds": seconds}, f, indent=1)
        print(
            f"{res.num_clusters} clusters over {len(res.assignment)} samples in {seconds:.2f} s "
            f"(inertia {res.inertia:.6g}; sizes {res.sizes.min()}..{res.sizes.max()})"
        )
        print(f"wrote {os.path.join(args.out, 'clusters.json')}, assignment.npy, centroids.npy")
        return 0
    if args.command == "outliers":
        res = outliers(x, k=args.k, metric=args.metric, progress=progress)
        seconds = time.perf_counter() - t0
        np.save(os.path.join(args.out, "outliers.npy"), res.indices)
        with open(os.path.join(args.out, "outliers.json"), "w") as f:
            json.dump({**res.to_json(), "seconds": seconds}, f, indent=1)
        print(f"outliers over {len(res)} samples (k={args.k}, {args.metric}) in {seconds:.2f} s:")
        for rank, t in enumerate(res.top(args.top), 1):
            print(f"  {rank:>4}  index {t['index']:>8}  score {t['score']:.4g}")
        print(f"wrote {os.path.join(args.out, 'outliers.json')} and outliers.npy")
        return 0
    raise ValueError(f"not a refine command: {args.command!r} (expected one of {COMMANDS})")
