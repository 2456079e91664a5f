"""The ``goldener-jax`` command."""

from __future__ import annotations

import argparse
import json
import sys


def _build_parser() -> argparse.ArgumentParser:
    from goldener_jax import benchmarks

    parser = argparse.ArgumentParser(
        prog="goldener-jax",
        description="Decide which data to label, train on, validate on and watch.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the end-to-end demo on scikit-learn's bundled digits")
    demo.add_argument(
        "--budget",
        type=float,
        action="append",
        default=None,
        help="fraction of the pool to select (repeatable; default 0.02 0.05 0.1 0.2)",
    )
    demo.add_argument("--seeds", type=int, default=None, help="random baselines per budget (5)")
    demo.add_argument("--out", default="out/demo", help="output directory (reused on rerun)")
    demo.add_argument("--quick", action="store_true", help="small run: 2 budgets, 2 seeds")

    _add_select_split(sub)
    _add_curate(sub)
    _add_evaluate(sub)

    bench = sub.add_parser("bench", help="benchmarks (baselines measured in the same run)")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    for name in benchmarks.BENCHMARKS:
        module = benchmarks.load(name)
        p = bench_sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        p.add_argument("--json", dest="json_out", default=None, help="also write results here")
        module.add_arguments(p)
    return parser


def _size(text: str):
    """``0.1`` -> ratio, ``100`` -> count."""
    return float(text) if any(c in text for c in ".eE") else int(text)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="a feature store directory, or a .npy of vectors [N, d]")
    p.add_argument("--method", default="kcenter", help="kcenter, herding, zcore, random, auto")
    p.add_argument("--seed", type=int, default=0, help="seed of the jax.random.key")
    p.add_argument("--labels", default=None, help=".npy of per-sample labels (default: store's)")
    p.add_argument("--groups", default=None, help=".npy of per-sample group ids")
    p.add_argument("--sample-idx", default=None, help=".npy: the sample of each vector (.npy)")
    p.add_argument("--exclude-label", action="append", type=int, default=None)
    p.add_argument("--metric", default="euclidean", choices=["euclidean", "sqeuclidean", "cosine"])
    p.add_argument("--chunk-size", type=int, default=None, help="vectors per random chunk")
    p.add_argument("--reduce", default=None, help="pca:C or random:C")
    p.add_argument("--checkpoint-dir", default=None, help="resumable progress here")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="method option, e.g. num_samples=100000 (repeatable)",
    )
    p.add_argument("--out", required=True, help="output directory (JSON + .npy)")


def _add_select_split(sub) -> None:
    sel = sub.add_parser("select", help="choose samples to label / keep (writes JSON + .npy)")
    _common(sel)
    sel.add_argument("--size", required=True, type=_size, help="ratio in (0, 1] or a count")
    sel.add_argument("--anchors", default=None, help=".npy of sample indices already chosen")
    spl = sub.add_parser("split", help="split samples into named sets (writes JSON + .npy)")
    _common(spl)
    spl.add_argument(
        "--set",
        dest="sets",
        action="append",
        required=True,
        metavar="NAME=SIZE",
        help="a set and its ratio or count, in order (repeat: train=0.8 val=0.2)",
    )
    spl.add_argument("--leakage-threshold", type=float, default=None)


def _add_curate(sub) -> None:
    cur = sub.add_parser(
        "curate", help="rank likely label errors, group near duplicates (writes JSON + .npy)"
    )
    cur.add_argument("source", help="a .npy of vectors [N, d], or a feature store directory")
    cur.add_argument("--labels", default=None, help=".npy of int labels [N] (default: store's)")
    cur.add_argument("--k", type=int, default=10, help="neighbours that vote (10)")
    metrics = ["euclidean", "sqeuclidean", "cosine"]
    cur.add_argument("--metric", default="euclidean", choices=metrics)
    cur.add_argument("--weighting", default="distance", choices=["distance", "uniform"])
    cur.add_argument("--top", type=int, default=20, help="suspects printed (20)")
    cur.add_argument(
        "--duplicate-threshold",
        type=float,
        default=None,
        help="also group rows within this distance (near duplicates)",
    )
    cur.add_argument("--out", required=True, help="output directory (JSON + .npy)")


def _run_curate(args) -> int:
    import os
    import time

    import numpy as np

    from goldener_jax.curate import label_issues, near_duplicates

    labels = None if args.labels is None else np.load(args.labels)
    if args.source.endswith(".npy"):
        x = np.asarray(np.load(args.source, mmap_mode="r"))
    else:  # a store: its vectors (one per sample) and, without --labels, its labels
        from goldener_jax.store import FeatureStore

        x = FeatureStore.open(args.source)
        if labels is None:
            labels = x.read_labels()
    if labels is None and args.duplicate_threshold is None:
        raise ValueError("nothing to do: give --labels (label issues) or --duplicate-threshold")
    os.makedirs(args.out, exist_ok=True)
    if labels is not None:
        t0 = time.perf_counter()
        res = label_issues(x, labels, k=args.k, metric=args.metric, weighting=args.weighting)
        seconds = time.perf_counter() - t0
        np.save(os.path.join(args.out, "label_issues.npy"), res.indices)
        with open(os.path.join(args.out, "label_issues.json"), "w") as f:
            json.dump({**res.to_json(), "seconds": seconds}, f, indent=1)
        print(
            f"label issues over {len(res)} samples (k={args.k}, {args.metric}) in {seconds:.2f} s:"
            f" {res.num_disagreeing} whose neighbours suggest another label"
        )
        rows = [
            (r + 1, t["index"], f"{t['score']:.3f}", t["given"], t["suggested"])
            for r, t in enumerate(res.top(args.top))
        ]
        print(_table(rows, ("rank", "index", "score", "given", "suggested")))
        print(f"wrote {os.path.join(args.out, 'label_issues.json')} and label_issues.npy")
    if args.duplicate_threshold is not None:
        t0 = time.perf_counter()
        dup = near_duplicates(x, threshold=args.duplicate_threshold, metric=args.metric)
        seconds = time.perf_counter() - t0
        with open(os.path.join(args.out, "near_duplicates.json"), "w") as f:
            json.dump({**dup.to_json(), "seconds": seconds}, f, indent=1)
        print(
            f"near duplicates (distance <= {args.duplicate_threshold:g}): {len(dup)} groups, "
            f"{len(dup.pairs)} pairs, {len(dup.to_drop())} rows to drop to keep one per group"
        )
        for g in dup.groups[: args.top]:
            print("  " + " ".join(map(str, g.tolist())))
        print(f"wrote {os.path.join(args.out, 'near_duplicates.json')}")
    return 0


def _option_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _inputs(args) -> tuple:
    import numpy as np

    source = args.source
    if source.endswith(".npy"):
        source = np.load(source, mmap_mode="r")
        source = np.asarray(source)
    load = lambda p: None if p is None else np.load(p)  # noqa: E731
    options = {}
    for item in args.option:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--option must be NAME=VALUE, got {item!r}")
        options[name] = _option_value(value)
    kw = dict(
        method=args.method,
        labels=load(args.labels),
        groups=load(args.groups),
        sample_idx=load(args.sample_idx),
        exclude_labels=args.exclude_label,
        metric=args.metric,
        chunk_size=args.chunk_size,
        reduce=args.reduce,
        checkpoint_dir=args.checkpoint_dir,
        method_options=options or None,
    )
    return source, kw


def _table(rows: list[tuple], header: tuple) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(v).rjust(w) for v, w in zip(r, widths, strict=True))  # noqa: E731
    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *map(line, rows)])


def _run_select(args) -> int:
    import os

    import jax
    import numpy as np

    from goldener_jax.select import select

    source, kw = _inputs(args)
    anchors = None if args.anchors is None else np.load(args.anchors)
    t0 = __import__("time").perf_counter()
    sel = select(source, args.size, key=jax.random.key(args.seed), anchors=anchors, **kw)
    seconds = __import__("time").perf_counter() - t0
    os.makedirs(args.out, exist_ok=True)
    np.save(os.path.join(args.out, "selection.npy"), sel.indices)
    with open(os.path.join(args.out, "selection.json"), "w") as f:
        json.dump({**sel.to_json(), "seconds": seconds}, f, indent=1)
    print(f"selected {len(sel)} samples with {sel.config['method']} in {seconds:.2f} s")
    if sel.coverage_radius is not None:
        print(f"coverage radius: {sel.coverage_radius:.6g}")
    if sel.label_counts:
        print(_table([(k, v) for k, v in sel.label_counts.items()], ("label", "selected")))
    print(f"wrote {os.path.join(args.out, 'selection.json')} and selection.npy")
    return 0


def _run_split(args) -> int:
    import os

    import jax
    import numpy as np

    from goldener_jax.split import split

    source, kw = _inputs(args)
    sets = {}
    for item in args.sets:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set must be NAME=SIZE, got {item!r}")
        if name in sets:
            raise ValueError(f"set names must be unique, got {name!r} twice")
        sets[name] = _size(value)
    os.makedirs(args.out, exist_ok=True)
    t0 = __import__("time").perf_counter()
    result = split(
        source,
        sets,
        key=jax.random.key(args.seed),
        leakage_threshold=args.leakage_threshold,
        manifest_path=os.path.join(args.out, "split.json"),
        **kw,
    )
    seconds = __import__("time").perf_counter() - t0
    for name, idx in result.items():
        np.save(os.path.join(args.out, f"{name}.npy"), idx)
    rows = []
    labels = result.manifest["label_counts"]
    for name, idx in result.items():
        row = (name, len(idx))
        if labels:
            row += (" ".join(f"{k}:{v}" for k, v in labels[name].items()),)
        rows.append(row)
    header = ("set", "samples") + (("per label",) if labels else ())
    print(f"split {sum(len(v) for v in result.values())} samples in {seconds:.2f} s")
    print(_table(rows, header))
    if result.leaks is not None:
        print(f"near-duplicate pairs across sets: {len(result.leaks)}")
    print(f"wrote {os.path.join(args.out, 'split.json')} and one .npy per set")
    return 0


def _add_evaluate(sub) -> None:
    ev = sub.add_parser(
        "evaluate", help="a saved selection against random subsets (accuracy with 95% CI, MMD)"
    )
    ev.add_argument("vectors", help=".npy of the pool's vectors [N, d]")
    ev.add_argument("--labels", required=True, help=".npy of the pool's labels [N]")
    ev.add_argument("--selection", required=True, help=".npy of selected sample indices")
    ev.add_argument("--test-vectors", default=None, help=".npy of held-out vectors [M, d]")
    ev.add_argument("--test-labels", default=None, help=".npy of held-out labels [M]")
    ev.add_argument(
        "--test-fraction",
        type=float,
        default=0.3,
        help="without --test-vectors: score on this stratified random part of the unselected "
        "samples, drawn from --seed (default 0.3); random subsets come from the rest",
    )
    ev.add_argument("--seeds", type=int, default=10, help="random subsets (default 10)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the jax.random.key")
    ev.add_argument("--no-measures", action="store_true", help="accuracy only (no MMD etc.)")
    ev.add_argument("--json", dest="json_out", default=None, help="also write results here")


def _run_evaluate(args) -> int:
    import jax
    import numpy as np

    from goldener_jax.evaluate import compare_to_random, comparison_table

    x = np.asarray(np.load(args.vectors), np.float32)
    labels = np.load(args.labels)
    sel = np.load(args.selection).astype(np.int64)
    if (args.test_vectors is None) != (args.test_labels is None):
        raise ValueError("give both --test-vectors and --test-labels, or neither")
    if args.test_vectors is not None:
        test_x = np.asarray(np.load(args.test_vectors), np.float32)
        test_y = np.load(args.test_labels)
        pool = np.arange(x.shape[0])
    else:
        from sklearn.model_selection import train_test_split

        if not 0 < args.test_fraction < 1:
            raise ValueError(f"--test-fraction must be in (0, 1), got {args.test_fraction}")
        rest = np.setdiff1d(np.arange(x.shape[0]), sel)
        counts = np.unique(labels[rest], return_counts=True)[1]
        strat = labels[rest] if counts.min() >= 2 else None
        _, test = train_test_split(
            rest, test_size=args.test_fraction, random_state=args.seed, stratify=strat
        )
        test_x, test_y = x[test], labels[test]
        pool = np.setdiff1d(np.arange(x.shape[0]), test)
        sel = np.searchsorted(pool, sel)
    result = compare_to_random(
        x[pool],
        labels[pool],
        sel,
        test_x=test_x,
        test_y=test_y,
        key=jax.random.key(args.seed),
        seeds=args.seeds,
        measures=not args.no_measures,
    )
    print(f"{len(sel)} selected of {len(pool)}; {len(test_y)} test samples; {args.seeds} seeds")
    print(comparison_table(result))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    if args.command == "demo":
        from goldener_jax import demo

        demo.main(budgets=args.budget, seeds=args.seeds, out=args.out, quick=args.quick)
        return 0
    if args.command == "select":
        return _run_select(args)
    if args.command == "split":
        return _run_split(args)
    if args.command == "curate":
        return _run_curate(args)
    if args.command == "evaluate":
        return _run_evaluate(args)
    if args.command == "bench":
        from goldener_jax import benchmarks

        result = benchmarks.load(args.bench).run(args)
        if args.json_out:
            with open(args.json_out, "w") as f:
                json.dump(result, f, indent=2)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
