"""The ``goldener-jax`` command.

User errors (bad arguments, missing files, a store that does not fit, a locked directory) print
one line on stderr and exit with status 2; ``--debug`` shows the traceback instead. ``verify``
exits with 1 when a store is damaged (or cannot be checked). ``--quiet`` turns progress bars off.
Every file a command writes goes under its ``--out`` directory.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import sys

# Options that may appear anywhere on the command line (taken out before parsing).
_GLOBAL_FLAGS = {"--debug": "debug", "--quiet": "quiet", "-q": "quiet"}


class _UsageError(ValueError):
    """A command-line value that does not have the expected form."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (the usage is one ``--help`` away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _escape_percent(parser: argparse.ArgumentParser) -> None:
    """argparse %-formats help strings: a bare ``%`` ("95% CI") crashes ``--help``."""
    lone = re.compile(r"%(?!%|\()")
    for action in parser._actions:
        if isinstance(action.help, str):
            action.help = lone.sub("%%", action.help.replace("%%", "\0")).replace("\0", "%%")
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                if isinstance(choice.help, str):
                    choice.help = lone.sub("%%", choice.help.replace("%%", "\0")).replace(
                        "\0", "%%"
                    )
            for sub in action.choices.values():
                _escape_percent(sub)


def _build_parser() -> argparse.ArgumentParser:
    from goldener_jax import benchmarks

    parser = _Parser(
        prog="goldener-jax",
        description="Decide which data to label, train on, validate on and watch.",
        epilog="Anywhere on the line: --quiet / -q (no progress bars), --debug (tracebacks).",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

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
    from goldener_jax.refine import commands as refine_commands

    refine_commands.add_parsers(sub)
    _add_life_cycle(sub)
    _add_evaluate(sub)
    ver = sub.add_parser(
        "verify",
        help="check every chunk of a feature store (exit 1 when damaged)",
        description="Reads every chunk of every done batch of a feature store and checks its "
        "checksum and presence. Exit status 0: intact; 1: damaged (or a store written "
        "before checksums, which cannot be checked); 2: not a store.",
    )
    ver.add_argument("store", help="feature store directory (or kvstore URL)")
    ver.add_argument("--json", dest="json_out", default=None, help="also write the report here")

    bench = sub.add_parser("bench", help="benchmarks (baselines measured in the same run)")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    for name in benchmarks.BENCHMARKS:
        module = benchmarks.load(name)
        p = bench_sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        p.add_argument("--json", dest="json_out", default=None, help="also write results here")
        module.add_arguments(p)
    _escape_percent(parser)
    return parser


_SIZE_FORM = "a ratio in (0, 1] (0.1 or 10%) or a count (100)"


def _parse_size(text: str):
    """``0.1`` or ``10%`` -> ratio, ``100`` -> count; None when ``text`` is neither."""
    text = text.strip()
    try:
        if text.endswith("%"):
            return float(text[:-1]) / 100.0
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        return None


def _size(text: str):
    value = _parse_size(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"expected {_SIZE_FORM}, got {text!r}")
    return value


def _reduce(text: str) -> str:
    name, sep, comps = text.partition(":")
    if name not in ("pca", "random") or not sep or not comps.isdigit() or int(comps) < 1:
        raise argparse.ArgumentTypeError(
            f"expected pca:C or random:C with C a number of components >= 1 (pca:32), got {text!r}"
        )
    return text


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="a feature store directory, or a .npy of vectors [N, d]")
    p.add_argument(
        "--method",
        default=None,
        help="auto, kcenter, herding, zcore, kmeans_medoids, typiclust, probcover, "
        "typical_kcenter, farthest, closest, random (default: the library's: select 'auto', "
        "chosen by evidence across datasets; split 'auto', representative sets)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the jax.random.key")
    p.add_argument("--labels", default=None, help=".npy of per-sample labels (default: store's)")
    p.add_argument("--groups", default=None, help=".npy of per-sample group ids")
    p.add_argument("--sample-idx", default=None, help=".npy: the sample of each vector (.npy)")
    p.add_argument("--exclude-label", action="append", type=int, default=None)
    p.add_argument("--metric", default="euclidean", choices=["euclidean", "sqeuclidean", "cosine"])
    p.add_argument("--chunk-size", type=int, default=None, help="vectors per random chunk")
    p.add_argument("--reduce", type=_reduce, default=None, help="pca:C or random:C")
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
        "--strict-sizes",
        action="store_true",
        help="with --groups: fail when whole groups cannot meet the set sizes exactly "
        "(default: the nearest reachable sizes, reported)",
    )
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


def _load(path: str | None, what: str):
    """A .npy file, with a one-line error naming the option when it cannot be read."""
    import numpy as np

    if path is None:
        return None
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what}: no such file {path!r}")
    try:
        return np.load(path)
    except (ValueError, OSError) as e:
        raise ValueError(f"{what}: {path!r} is not a readable .npy file ({e})") from e


def _progress_kw(fn, quiet: bool) -> dict:
    """``progress=False`` for functions that take it (the library's long operations)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    return {"progress": not quiet} if "progress" in params else {}


def _run_curate(args) -> int:
    import time

    import numpy as np

    from goldener_jax.curate import label_issues, near_duplicates

    labels = _load(args.labels, "--labels")
    if args.source.endswith(".npy"):
        if not os.path.isfile(args.source):
            raise FileNotFoundError(f"source: no such file {args.source!r}")
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
        res = label_issues(
            x,
            labels,
            k=args.k,
            metric=args.metric,
            weighting=args.weighting,
            **_progress_kw(label_issues, args.quiet),
        )
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
        dup = near_duplicates(
            x,
            threshold=args.duplicate_threshold,
            metric=args.metric,
            **_progress_kw(near_duplicates, args.quiet),
        )
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
        if not os.path.isfile(source):
            raise FileNotFoundError(f"source: no such file {source!r}")
        source = np.load(source, mmap_mode="r")
        source = np.asarray(source)
    options = {}
    for item in args.option:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise _UsageError(f"--option expects NAME=VALUE (num_samples=1000), got {item!r}")
        options[name] = _option_value(value)
    kw = dict(
        method=args.method or "auto",
        labels=_load(args.labels, "--labels"),
        groups=_load(args.groups, "--groups"),
        sample_idx=_load(args.sample_idx, "--sample-idx"),
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
    import jax
    import numpy as np

    from goldener_jax.select import select

    source, kw = _inputs(args)
    anchors = _load(args.anchors, "--anchors")
    t0 = __import__("time").perf_counter()
    sel = select(
        source,
        args.size,
        key=jax.random.key(args.seed),
        anchors=anchors,
        **kw,
        **_progress_kw(select, args.quiet),
    )
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
    import jax
    import numpy as np

    from goldener_jax.split import split

    sets = {}
    for item in args.sets:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise _UsageError(f"--set expects NAME=SIZE (train=0.8 or train=80%), got {item!r}")
        if name in sets:
            raise _UsageError(f"--set names must be unique, got {name!r} twice")
        size = _parse_size(value)
        if size is None:
            raise _UsageError(f"--set {item!r}: SIZE must be {_SIZE_FORM}, got {value!r}")
        sets[name] = size
    source, kw = _inputs(args)
    os.makedirs(args.out, exist_ok=True)
    t0 = __import__("time").perf_counter()
    result = split(
        source,
        sets,
        key=jax.random.key(args.seed),
        leakage_threshold=args.leakage_threshold,
        manifest_path=os.path.join(args.out, "split.json"),
        strict_sizes=args.strict_sizes,
        **kw,
        **_progress_kw(split, args.quiet),
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
    ev.add_argument(
        "source", help="the pool: a feature store directory, or a .npy of vectors [N, d]"
    )
    ev.add_argument(
        "--labels", default=None, help=".npy of the pool's labels [N] (default: the store's)"
    )
    ev.add_argument(
        "--selection", required=True, help=".npy of selected sample indices (0 <= i < N)"
    )
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
    ev.add_argument("--out", default=None, help="output directory (writes evaluate.json)")
    ev.add_argument("--json", dest="json_out", default=None, help="also write results here")


def _pool(source: str, labels_path: str | None):
    """(vectors [N, d] float32, labels [N]) from a .npy or a store (one vector per sample)."""
    import numpy as np

    labels = _load(labels_path, "--labels")
    if source.endswith(".npy"):
        x = _load(source, "source")
    else:
        from goldener_jax.store import FeatureStore

        store = FeatureStore.open(source)
        x, sample_idx = store.read_vectors()
        if x.shape[0] != store.num_samples or not np.array_equal(
            sample_idx, np.arange(store.num_samples)
        ):
            raise ValueError(
                f"source {source!r} has {store.rows_per_sample} rows per sample; evaluate needs "
                "one vector per sample (describe with the default vectorizer)"
            )
        if labels is None:
            labels = store.read_labels()
    if labels is None:
        raise _UsageError(f"give --labels: the source {source!r} has no labels")
    x = np.asarray(x, np.float32)
    if x.ndim != 2:
        raise ValueError(f"source {source!r}: vectors must be [N, d], got shape {x.shape}")
    labels = np.asarray(labels)
    if labels.shape != (x.shape[0],):
        raise ValueError(
            f"--labels must have one label per sample ([{x.shape[0]}]), got shape {labels.shape}"
        )
    return x, labels


def _selection(path: str, n: int):
    import numpy as np

    sel = _load(path, "--selection")
    if sel.ndim != 1 or not (np.issubdtype(sel.dtype, np.integer) or sel.size == 0):
        raise ValueError(
            f"--selection must be a 1-D array of int sample indices, got {sel.dtype} {sel.shape}"
        )
    sel = sel.astype(np.int64)
    bad = sel[(sel < 0) | (sel >= n)]
    if bad.size:
        raise ValueError(
            f"--selection indices must be in [0, {n}) (the pool's samples), got {int(bad[0])}"
            f"{' (negative indices are not accepted)' if bad[0] < 0 else ''}"
        )
    if np.unique(sel).size != sel.size:
        raise ValueError("--selection has repeated indices; each sample is selected once")
    return sel


def _run_evaluate(args) -> int:
    import jax
    import numpy as np

    from goldener_jax.evaluate import compare_to_random, comparison_table

    x, labels = _pool(args.source, args.labels)
    sel = _selection(args.selection, x.shape[0])
    if (args.test_vectors is None) != (args.test_labels is None):
        raise _UsageError("give both --test-vectors and --test-labels, or neither")
    if args.test_vectors is not None:
        test_x = np.asarray(_load(args.test_vectors, "--test-vectors"), np.float32)
        test_y = _load(args.test_labels, "--test-labels")
        pool = np.arange(x.shape[0])
    else:
        from sklearn.model_selection import train_test_split

        if not 0 < args.test_fraction < 1:
            raise _UsageError(f"--test-fraction must be in (0, 1), got {args.test_fraction}")
        rest = np.setdiff1d(np.arange(x.shape[0]), sel)
        counts = np.unique(labels[rest], return_counts=True)[1]
        strat = labels[rest] if counts.min() >= 2 else None
        _, test = train_test_split(
            rest, test_size=args.test_fraction, random_state=args.seed, stratify=strat
        )
        test_x, test_y = x[test], labels[test]
        pool = np.setdiff1d(np.arange(x.shape[0]), test)
        # Selected samples are never in `test`: their positions in `pool` are exact.
        sel = np.searchsorted(pool, sel)
    kw = _progress_kw(compare_to_random, args.quiet)
    result = compare_to_random(
        x[pool],
        labels[pool],
        sel,
        test_x=test_x,
        test_y=test_y,
        key=jax.random.key(args.seed),
        seeds=args.seeds,
        measures=not args.no_measures,
        **kw,
    )
    print(f"{len(sel)} selected of {len(pool)}; {len(test_y)} test samples; {args.seeds} seeds")
    print(comparison_table(result))
    outputs = [args.json_out] if args.json_out else []
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        outputs.append(os.path.join(args.out, "evaluate.json"))
    for path in outputs:
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {path}")
    return 0


def _run_verify(args) -> int:
    from goldener_jax.store import FeatureStore

    report = FeatureStore.open(args.store).verify()
    print(f"{args.store}: {report.summary()}")
    for b, problems in list(report.damaged.items())[:20]:
        print(f"  batch {b}: " + "; ".join(problems))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(
                {
                    "checked": report.checked,
                    "reason": report.reason,
                    "batches_checked": report.batches_checked,
                    "damaged": {str(b): p for b, p in report.damaged.items()},
                },
                f,
                indent=1,
            )
    return 0 if report.ok else 1


def _add_life_cycle(sub) -> None:
    run = sub.add_parser(
        "run",
        help="run or resume a stored pipeline (JSON spec): finished steps are reused",
        description="Runs the steps of a pipeline spec (goldener_jax.workflow) not done yet for "
        "their current inputs; each step writes under OUT/<step name>/, and the summary says "
        "which steps ran and which were reused. Run the same command again to resume.",
    )
    run.add_argument("pipeline", help="the pipeline spec (JSON)")
    run.add_argument("--out", required=True, help="output directory (reused on rerun)")
    dr = sub.add_parser(
        "drift",
        help="has new data drifted from a reference? (p-values, coverage, clusters, plot)",
    )
    dr.add_argument("reference", help="a feature store directory, or a .npy of vectors [N, d]")
    dr.add_argument("new", help="a feature store directory, or a .npy of vectors [M, d]")
    dr.add_argument("--permutations", type=int, default=200, help="permutations (default 200)")
    dr.add_argument("--metric", default="euclidean", choices=["euclidean", "cosine"])
    dr.add_argument(
        "--max-samples", type=int, default=2000, help="rows per side in the tests (default 2000)"
    )
    dr.add_argument("--clusters", type=int, default=8, help="k-means cells of the reference (8)")
    dr.add_argument(
        "--monitor",
        type=int,
        default=None,
        help="also pick this many new samples to label (monitoring_selection)",
    )
    dr.add_argument("--seed", type=int, default=0, help="seed of the jax.random.key")
    dr.add_argument(
        "--out", required=True, help="output directory (drift.json, drift.png, monitoring.npy)"
    )


def _run_pipeline(args) -> int:
    from goldener_jax.workflow import Pipeline

    summary = Pipeline.load(args.pipeline).run(args.out, progress=not args.quiet)
    print(summary.text())
    return 0


def _run_drift(args) -> int:
    import os

    import jax
    import numpy as np

    from goldener_jax.drift import drift, monitoring_selection

    def vectors(path):
        return np.load(path, allow_pickle=False) if path.endswith(".npy") else path

    ref, new = vectors(args.reference), vectors(args.new)
    os.makedirs(args.out, exist_ok=True)
    report = drift(
        ref,
        new,
        key=jax.random.key(args.seed),
        num_permutations=args.permutations,
        metric=args.metric,
        max_samples=args.max_samples,
        n_clusters=args.clusters,
    )
    report.to_json(os.path.join(args.out, "drift.json"))
    report.plot(os.path.join(args.out, "drift.png"))
    verdict = "DRIFT" if report.drifted(0.05) else "no drift detected"
    print(
        f"{verdict}: p = {report.p_value:.3g} (MMD p = {report.mmd_p_value:.3g}, energy p = "
        f"{report.energy_p_value:.3g}); {100 * report.outside_share:.1f}% of new samples outside "
        f"the reference's coverage (reference: {100 * report.reference_outside_share:.1f}%)"
    )
    top = report.clusters[0]
    print(
        f"most over-represented cluster: {top.cluster} ({100 * top.new_share:.1f}% of new vs "
        f"{100 * top.reference_share:.1f}% of reference)"
    )
    if args.monitor:
        picked = monitoring_selection(
            ref, new, args.monitor, key=jax.random.key(args.seed), metric=args.metric
        )
        np.save(os.path.join(args.out, "monitoring.npy"), picked)
        print(f"monitoring: {len(picked)} new samples to label -> monitoring.npy")
    return 0


def _run(args) -> int:
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
    if args.command == "verify":
        return _run_verify(args)
    if args.command == "run":
        return _run_pipeline(args)
    if args.command == "drift":
        return _run_drift(args)
    from goldener_jax.refine import commands as refine_commands

    if args.command in refine_commands.COMMANDS:
        return refine_commands.run(args)
    if args.command == "bench":
        from goldener_jax import benchmarks

        result = benchmarks.load(args.bench).run(args)
        if args.json_out:
            with open(args.json_out, "w") as f:
                json.dump(result, f, indent=2)
        return 0
    return 2


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) if str(e) else type(e).__name__
    if isinstance(e, OSError) and e.strerror and e.filename and str(e.filename) not in text:
        text = f"{e.strerror}: {e.filename!r}"
    if isinstance(e, KeyError):
        text = f"missing key {text}"
    return text


def main(argv: list[str] | None = None) -> int:
    """Runs the command; returns the exit status (0 ok, 1 damaged / failed, 2 user error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    flags = {name: False for name in _GLOBAL_FLAGS.values()}
    rest = []
    for i, arg in enumerate(argv):
        if arg == "--":
            rest += argv[i:]
            break
        if arg in _GLOBAL_FLAGS:
            flags[_GLOBAL_FLAGS[arg]] = True
        else:
            rest.append(arg)
    args = _build_parser().parse_args(rest)
    args.debug, args.quiet = flags["debug"] or args.debug, flags["quiet"] or args.quiet
    with _no_progress_bars(args.quiet):
        return _guarded(args)


def _no_progress_bars(quiet: bool):
    """With ``--quiet``, tqdm bars default to ``disable=True`` for the command's duration (bars
    of callees that take no ``progress`` argument too); restored afterwards."""
    import contextlib
    import functools

    if not quiet:
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def patched():
        import tqdm.std

        original = tqdm.std.tqdm.__init__
        tqdm.std.tqdm.__init__ = functools.partialmethod(original, disable=True)
        try:
            yield
        finally:
            tqdm.std.tqdm.__init__ = original

    return patched()


def _guarded(args) -> int:
    if args.debug:
        return _run(args)
    from goldener_jax._locks import LockedError

    try:
        return _run(args)
    except KeyboardInterrupt:
        print("goldener-jax: interrupted (run the same command again to resume)", file=sys.stderr)
        return 130
    except (ValueError, TypeError, KeyError, OSError, LockedError) as e:
        print(f"goldener-jax {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug, not a user error: say how to get the details
        print(
            f"goldener-jax {args.command}: internal error: {type(e).__name__}: {_one_line(e)} "
            "(rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
