"""The ``goldener-jax`` command.

User errors (bad arguments, missing files, a store that does not fit, a locked directory) print
one line on stderr and exit with status 2; ``--debug`` shows the traceback instead. ``verify``
exits with 1 when a store is damaged (or cannot be checked), 3 when it is intact but incomplete.
``--quiet`` turns progress bars off.
Every file a command writes goes under its ``--out`` directory.

Arguments are checked before any computation: counts at parse time (:func:`int_at_least`), inputs
through one loader (:func:`load_input`, :func:`load_source`: errors start with the argument's name),
output locations created or checked first (:func:`out_dir`, :func:`_out_file`), options the
command would ignore refused. A library error's advice is put in the command's words
(``overwrite=True`` -> ``--overwrite``). A closed stdout (``| head``) stops the printing, not the
command.
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


class UsageError(ValueError):
    """A command-line value that does not have the expected form."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (the usage is one ``--help`` away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def int_at_least(low: int):
    """An argparse ``type``: an int ``>= low`` (a count, a size, repeats), refused at parse time
    with ``argument --n: expected an int >= 1, got '-5'``."""

    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an int >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an int >= {low}, got {text!r}")
        return value

    check.__name__ = f"int >= {low}"
    return check


_COUNT = int_at_least(1)  # sizes, counts, repeats
_NONNEG = int_at_least(0)  # --top: rows printed (0: none)


def _float_type(name: str, ok, form: str):
    """An argparse ``type``: a finite float for which ``ok(value)``, else "expected <form>"."""

    def check(text: str) -> float:
        import math

        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and ok(value)):
            raise argparse.ArgumentTypeError(f"expected {form}, got {text!r}")
        return value

    check.__name__ = name
    return check


positive_float = _float_type("positive float", lambda v: v > 0, "a number > 0")
nonneg_float = _float_type("float >= 0", lambda v: v >= 0, "a number >= 0")
fraction = _float_type("fraction", lambda v: 0 < v <= 1, "a fraction in (0, 1]")


def _first_sentence(doc: str | None) -> str:
    """The first sentence of a docstring's first paragraph, on one line, without rST quotes."""
    para = " ".join((doc or "").strip().split("\n\n")[0].split()).replace("``", "")
    match = re.match(r"(.+?[.!?])(\s|$)", para)
    return match.group(1) if match else para


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
    demo.add_argument("--seeds", type=_COUNT, default=None, help="random baselines per budget (5)")
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
        "checksum and presence. Exit status 0: intact and complete; 1: damaged (or a store "
        "written before checksums, which cannot be checked); 2: not a store; 3: intact but "
        "incomplete (batches not described yet: run describe to finish).",
    )
    ver.add_argument("store", help="feature store directory (or kvstore URL)")
    ver.add_argument("--json", dest="json_out", default=None, help="also write the report here")

    bench = sub.add_parser("bench", help="benchmarks (baselines measured in the same run)")
    bench_sub = bench.add_subparsers(dest="bench", required=True, parser_class=_Parser)
    for name in benchmarks.BENCHMARKS:
        module = benchmarks.load(name)
        summary = _first_sentence(module.__doc__)
        p = bench_sub.add_parser(name, help=summary, description=summary)
        p.add_argument("--json", dest="json_out", default=None, help="also write results here")
        module.add_arguments(p)
    _escape_percent(parser)
    return parser


_SIZE_FORM = "a ratio in (0, 1] (0.1 or 10%) or a count (100)"


def _parse_size(text: str):
    """``0.1`` or ``10%`` -> ratio, ``100`` -> count; None when ``text`` is neither.

    E-notation of a whole number above 1 (``1e3``, ``2.5e1``) is a count: it cannot be a ratio.
    """
    import math

    text = text.strip()
    try:
        if text.endswith("%"):
            return float(text[:-1]) / 100.0
        if not any(c in text for c in ".eE"):
            return int(text)
        value = float(text)
        if "e" in text.lower() and math.isfinite(value) and value > 1 and value.is_integer():
            return int(value)
        return value
    except ValueError:
        return None


def _size_error(text: str, value) -> str | None:
    """Why ``value`` (parsed from ``text``) is no size, or None: a float must be a ratio."""
    if value is None:
        return f"expected {_SIZE_FORM}, got {text!r}"
    if isinstance(value, float) and not 0.0 < value <= 1.0:
        return (
            f"{text!r} is not a ratio in (0, 1]; give a ratio (0.1 or 10%) or a whole count "
            "(100, not 100.0)"
        )
    return None


def _size(text: str):
    value = _parse_size(text)
    error = _size_error(text, value)
    if error:
        raise argparse.ArgumentTypeError(error)
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
    p.add_argument(
        "--exclude-label",
        action="append",
        type=int,
        default=None,
        metavar="LABEL",
        help="leave out the samples with this label (repeatable; needs labels)",
    )
    p.add_argument(
        "--metric",
        default="euclidean",
        choices=["euclidean", "sqeuclidean", "cosine"],
        help="distance between vectors (default euclidean)",
    )
    p.add_argument("--chunk-size", type=_COUNT, default=None, help="vectors per random chunk")
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
    spl.add_argument(
        "--leakage-threshold",
        type=positive_float,
        default=None,
        metavar="DISTANCE",
        help="also report vector pairs in different sets closer than this (O(N^2 d); "
        "in split.json)",
    )


def _add_curate(sub) -> None:
    cur = sub.add_parser(
        "curate", help="rank likely label errors, group near duplicates (writes JSON + .npy)"
    )
    cur.add_argument("source", help="a .npy of vectors [N, d], or a feature store directory")
    cur.add_argument("--labels", default=None, help=".npy of int labels [N] (default: store's)")
    cur.add_argument("--k", type=_COUNT, default=10, help="neighbours that vote (10)")
    metrics = ["euclidean", "sqeuclidean", "cosine"]
    cur.add_argument(
        "--metric",
        default="euclidean",
        choices=metrics,
        help="distance of the neighbours and of --duplicate-threshold (default euclidean)",
    )
    cur.add_argument(
        "--weighting",
        default="distance",
        choices=["distance", "uniform"],
        help="neighbours' votes weighted by inverse distance, or equal (default distance)",
    )
    cur.add_argument("--top", type=_NONNEG, default=20, help="suspects printed (20)")
    cur.add_argument(
        "--duplicate-threshold",
        type=nonneg_float,
        default=None,
        help="also group rows within this distance (near duplicates)",
    )
    cur.add_argument("--out", required=True, help="output directory (JSON + .npy)")


_NPY_MAGIC, _ZIP_MAGIC = b"\x93NUMPY", b"PK\x03\x04"


def load_input(path: str | None, what: str, *, mmap: bool = False, expected: str = "a .npy file"):
    """A .npy file, with a one-line error naming the option when it cannot be read.

    Every array the commands read comes through here (or :func:`load_source`): a missing file,
    a directory, a .npz archive, a file that is not a .npy, a .npy of pickled Python objects
    each say so after ``<what>: ``; nothing is unpickled.
    """
    import numpy as np

    if path is None:
        return None
    if os.path.isdir(path):
        raise UsageError(f"{what}: {path!r} is a directory, expected a .npy file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what}: no such file {path!r}")
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError as e:
        raise OSError(f"{what}: cannot read {path!r} ({e.strerror or e})") from e
    if head.startswith(_ZIP_MAGIC):
        raise UsageError(
            f"{what}: {path!r} is a .npz archive; give {expected} (save one array with np.save)"
        )
    if head != _NPY_MAGIC:
        raise UsageError(f"{what}: {path!r} is not a .npy file (no NumPy header); give {expected}")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e) or "bject" in str(e):
            raise ValueError(
                f"{what}: {path!r} holds Python objects (dtype object), not numbers; save a "
                "numeric array with np.save"
            ) from e
        raise ValueError(f"{what}: {path!r} is not a readable .npy file ({e})") from e
    except OSError as e:
        raise OSError(f"{what}: {path!r} is not a readable .npy file ({e})") from e


def load_source(path: str, what: str = "source"):
    """A command's input: a .npy of vectors (an array) or a feature store (opened)."""
    import numpy as np

    if os.path.isfile(path):
        expected = "a .npy of vectors [N, d] or a feature store directory"
        return np.asarray(load_input(path, what, mmap=True, expected=expected))
    if not os.path.isdir(path) and "://" not in path:
        raise FileNotFoundError(
            f"{what}: no such file or directory {path!r} (give a .npy of vectors [N, d] or a "
            "feature store directory)"
        )
    from goldener_jax.store import FeatureStore

    try:
        return FeatureStore.open(path)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{what}: {e}") from e
    except ValueError as e:
        raise ValueError(f"{what}: {e}") from e


def _num_rows(source) -> int:
    """Vectors of an array, samples of a store (the rows the per-sample commands see)."""
    return int(source.shape[0]) if hasattr(source, "shape") else int(source.num_samples)


def out_dir(path: str, flag: str = "--out", *, create: bool = True) -> str:
    """Creates the output directory before any work: a file there, or a directory that cannot
    be created or written, fails now (naming ``flag``), not after the computation.
    ``create=False``: only the check that ``path`` is not a file."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{flag} {path!r} is a file; give a directory (new or existing)")
    if not create:
        return path
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise OSError(f"{flag} {path!r}: cannot create the directory ({e.strerror or e})") from e
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(f"{flag} {path!r}: the directory is not writable")
    return path


def _out_file(path: str | None, flag: str = "--json") -> str | None:
    """Checks before any work that the file ``path`` can be written (its folder exists and is
    writable, it is not a directory)."""
    if path is None:
        return None
    if os.path.isdir(path):
        raise UsageError(f"{flag} {path!r} is a directory; give a file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{flag} {path!r}: no such directory {folder!r}")
    if not os.access(folder, os.W_OK | os.X_OK) or (
        os.path.exists(path) and not os.access(path, os.W_OK)
    ):
        raise PermissionError(f"{flag} {path!r}: cannot write there")
    return path


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

    labels = load_input(args.labels, "--labels")
    x = load_source(args.source)
    if labels is None and not hasattr(x, "shape"):  # a store: without --labels, its labels
        labels = x.read_labels()
    if labels is None and args.duplicate_threshold is None:
        raise UsageError("nothing to do: give --labels (label issues) or --duplicate-threshold")
    out_dir(args.out)
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
    source = load_source(args.source)
    if not hasattr(source, "shape"):  # a store: the library opens it by its path, as before
        source = args.source
    options = {}
    for item in args.option:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--option expects NAME=VALUE (num_samples=1000), got {item!r}")
        options[name] = _option_value(value)
    kw = dict(
        method=args.method or "auto",
        labels=load_input(args.labels, "--labels"),
        groups=load_input(args.groups, "--groups"),
        sample_idx=load_input(args.sample_idx, "--sample-idx"),
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
    anchors = load_input(args.anchors, "--anchors")
    out_dir(args.out)
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


def _set_name_error(name: str) -> str | None:
    """Why ``name`` cannot name a split set (its file is ``<--out>/<name>.npy``), or None."""
    if not name:
        return "a set needs a name"
    if "/" in name or "\\" in name or name in (".", "..") or "\0" in name:
        return "a set name is a plain file name (no '/', '\\', not '.' or '..')"
    return None


def _old_split_sets(out: str) -> list[str]:
    """The set names of the split.json already in ``out`` (none when absent or unreadable)."""
    try:
        with open(os.path.join(out, "split.json")) as f:
            sets = json.load(f).get("sets", {})
    except (OSError, ValueError, AttributeError):
        return []
    return [n for n in sets if isinstance(n, str) and _set_name_error(n) is None]


def _run_split(args) -> int:
    import jax
    import numpy as np

    from goldener_jax.split import split

    sets = {}
    for item in args.sets:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--set expects NAME=SIZE (train=0.8 or train=80%), got {item!r}")
        problem = _set_name_error(name)
        if problem:
            raise UsageError(f"--set {item!r}: {problem}; its file is --out/NAME.npy")
        if name in sets:
            raise UsageError(f"--set names must be unique, got {name!r} twice")
        size = _parse_size(value)
        if size is None:
            raise UsageError(f"--set {item!r}: SIZE must be {_SIZE_FORM}, got {value!r}")
        error = _size_error(value, size)
        if error:
            raise UsageError(f"--set {item!r}: {error}")
        sets[name] = size
    if args.strict_sizes and args.groups is None:
        raise UsageError("--strict-sizes only applies with --groups (whole groups per set)")
    source, kw = _inputs(args)
    out_dir(args.out)
    stale = [n for n in _old_split_sets(args.out) if n not in sets]
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
    for name in stale:  # the previous split's sets that this one does not have
        try:
            os.remove(os.path.join(args.out, f"{name}.npy"))
        except FileNotFoundError:
            pass
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
    if stale:
        print(f"removed the previous split's {', '.join(f'{n}.npy' for n in stale)}")
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
        default=None,
        help="without --test-vectors: score on this stratified random part of the unselected "
        "samples, drawn from --seed (default 0.3); random subsets come from the rest",
    )
    ev.add_argument("--seeds", type=_COUNT, default=10, help="random subsets (default 10)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the jax.random.key")
    ev.add_argument("--no-measures", action="store_true", help="accuracy only (no MMD etc.)")
    ev.add_argument("--out", default=None, help="output directory (writes evaluate.json)")
    ev.add_argument("--json", dest="json_out", default=None, help="also write results here")


def _pool(source: str, labels_path: str | None):
    """(vectors [N, d] float32, labels [N]) from a .npy or a store (one vector per sample)."""
    import numpy as np

    labels = load_input(labels_path, "--labels")
    x = load_source(source)
    if not hasattr(x, "shape"):  # a store
        store = x
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
        raise UsageError(f"give --labels: the source {source!r} has no labels")
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

    sel = load_input(path, "--selection")
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

    if (args.test_vectors is None) != (args.test_labels is None):
        raise UsageError("give both --test-vectors and --test-labels, or neither")
    if args.test_vectors is not None and args.test_fraction is not None:
        raise UsageError(
            "--test-fraction only applies without --test-vectors (the test set is given)"
        )
    test_fraction = 0.3 if args.test_fraction is None else args.test_fraction
    if not 0 < test_fraction < 1:
        raise UsageError(f"--test-fraction must be in (0, 1), got {test_fraction}")
    _out_file(args.json_out)
    if args.out:
        out_dir(args.out)
    x, labels = _pool(args.source, args.labels)
    sel = _selection(args.selection, x.shape[0])
    if args.test_vectors is not None:
        test_x = np.asarray(load_input(args.test_vectors, "--test-vectors"), np.float32)
        test_y = load_input(args.test_labels, "--test-labels")
        pool = np.arange(x.shape[0])
    else:
        from sklearn.model_selection import train_test_split

        rest = np.setdiff1d(np.arange(x.shape[0]), sel)
        if rest.size < 2:
            raise UsageError(
                f"--selection covers {sel.size} of the pool's {x.shape[0]} samples: "
                f"{'nothing is' if rest.size == 0 else 'one sample is'} left to test on "
                "(give --test-vectors and --test-labels)"
            )
        counts = np.unique(labels[rest], return_counts=True)[1]
        strat = labels[rest] if counts.min() >= 2 else None
        _, test = train_test_split(
            rest, test_size=test_fraction, random_state=args.seed, stratify=strat
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
        outputs.append(os.path.join(args.out, "evaluate.json"))
    for path in outputs:
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {path}")
    return 0


def _run_verify(args) -> int:
    from goldener_jax.store import FeatureStore

    _out_file(args.json_out)
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
    if not report.ok:
        return 1
    return 3 if report.batches_not_done else 0


def _add_life_cycle(sub) -> None:
    run = sub.add_parser(
        "run",
        help="run or resume a stored pipeline (JSON spec): finished steps are reused",
        description="Runs the steps of a pipeline spec (goldener_jax.workflow) not done yet for "
        "their current inputs; each step writes under OUT/<step name>/, and the summary says "
        "which steps ran and which were reused. Run the same command again to resume. The "
        "extractor's model module is imported as `python -m` would: from the current "
        "directory first, then the spec file's directory, then the Python path.",
    )
    run.add_argument("pipeline", help="the pipeline spec (JSON)")
    run.add_argument("--out", required=True, help="output directory (reused on rerun)")
    dr = sub.add_parser(
        "drift",
        help="has new data drifted from a reference? (p-values, coverage, clusters, plot)",
    )
    dr.add_argument("reference", help="a feature store directory, or a .npy of vectors [N, d]")
    dr.add_argument("new", help="a feature store directory, or a .npy of vectors [M, d]")
    dr.add_argument("--permutations", type=_COUNT, default=200, help="permutations (default 200)")
    dr.add_argument(
        "--metric",
        default="euclidean",
        choices=["euclidean", "cosine"],
        help="distance between vectors (default euclidean)",
    )
    dr.add_argument(
        "--max-samples",
        type=int_at_least(2),
        default=2000,
        help="rows per side in the tests (default 2000)",
    )
    dr.add_argument(
        "--clusters",
        type=_COUNT,
        default=8,
        help="k-means cells of the reference (8; at most its rows)",
    )
    dr.add_argument(
        "--monitor",
        type=_COUNT,
        default=None,
        metavar="COUNT",
        help="also pick this many new samples to label (monitoring_selection; 1 .. new rows)",
    )
    dr.add_argument("--seed", type=int, default=0, help="seed of the jax.random.key")
    dr.add_argument(
        "--out", required=True, help="output directory (drift.json, drift.png, monitoring.npy)"
    )


def _run_pipeline(args) -> int:
    from goldener_jax.workflow import Pipeline

    if not os.path.isfile(args.pipeline):
        raise FileNotFoundError(f"pipeline: no such file {args.pipeline!r}")
    out_dir(args.out)
    # The spec names its model by import path ("my_models:small_cnn"). `python -m` puts the
    # current directory first on sys.path; a console script does not: add it (and the spec's
    # directory) for the run, as the guide's "run it from the folder of my_models.py" expects.
    added = []
    for folder in (os.getcwd(), os.path.dirname(os.path.abspath(args.pipeline))):
        if folder not in sys.path and folder not in added:
            added.append(folder)
    sys.path[:0] = added
    try:
        summary = Pipeline.load(args.pipeline).run(args.out, progress=not args.quiet)
    finally:
        for folder in added:
            if folder in sys.path:
                sys.path.remove(folder)
    print(summary.text())
    return 0


def _run_drift(args) -> int:
    import jax
    import numpy as np

    from goldener_jax.drift import drift, monitoring_selection

    def vectors(path, what):  # (an array or a store's path: drift opens it, its rows)
        source = load_source(path, what)
        return (source if hasattr(source, "shape") else path), _num_rows(source)

    ref, ref_rows = vectors(args.reference, "reference")
    new, new_rows = vectors(args.new, "new")
    # drift fits its clusters on at most 20,000 reference rows (max_reference)
    fit_rows = min(ref_rows, 20_000)
    if args.clusters > fit_rows:
        raise UsageError(
            f"--clusters {args.clusters}: at most {fit_rows} (the reference rows the clusters are "
            "fitted on)"
        )
    if args.monitor is not None and args.monitor > new_rows:
        raise UsageError(f"--monitor {args.monitor}: at most {new_rows} (the new samples)")
    out_dir(args.out)
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
    if args.monitor is not None:
        picked = monitoring_selection(
            ref, new, args.monitor, key=jax.random.key(args.seed), metric=args.metric
        )
        np.save(os.path.join(args.out, "monitoring.npy"), picked)
        print(f"monitoring: {len(picked)} new samples to label -> monitoring.npy")
    return 0


def _run(args) -> int:
    if args.command == "demo":
        from goldener_jax import demo

        out_dir(args.out, create=False)  # the demo checks its budgets, then creates it
        demo.main(
            budgets=args.budget,
            seeds=args.seeds,
            out=args.out,
            quick=args.quick,
            progress=not args.quiet,
        )
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

        _out_file(args.json_out)
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


# A library argument named in an error's advice -> the flag that sets it on the command line
# (a command-line user cannot "pass overwrite=True"); used only where the command has the flag.
_LIBRARY_NAMES = {
    "overwrite": "--overwrite",
    "per_label": "--per-label",
    "n_clusters": "--clusters",
    "num_permutations": "--permutations",
    "max_samples": "--max-samples",
    "num_iters": "--iters",
    "fit_size": "--fit-size",
    "batch_size": "--batch-size",
    "chunk_size": "--chunk-size",
    "checkpoint_dir": "--checkpoint-dir",
    "method_options": "--option",
    "exclude_labels": "--exclude-label",
    "sample_idx": "--sample-idx",
    "leakage_threshold": "--leakage-threshold",
    "strict_sizes": "--strict-sizes",
    "duplicate_threshold": "--duplicate-threshold",
    "test_fraction": "--test-fraction",
}


def _in_cli_words(text: str, flags: set) -> str:
    """``text`` with the library's argument names replaced by the command's flags."""
    # a damaged store: no command here rewrites one; describe (Python) starts it over
    text = re.sub(
        r"\bpass overwrite=True to start the store over",
        "describe the data again with describe(..., overwrite=True) to start the store over",
        text,
    )
    if "--overwrite" not in flags and "--checkpoint-dir" in flags:
        text = re.sub(r"\bpass overwrite=True\b", "empty the --checkpoint-dir", text)
    for name, flag in _LIBRARY_NAMES.items():
        if flag in flags:  # a plain word ("overwrite") only as "overwrite=True"
            form = f"{name}(?:=True)?" if "_" in name else f"{name}=True"
            text = re.sub(rf"(?<![\w./-]){form}(?![\w=])", flag, text)
    if "--labels" in flags:  # "pass labels=": the argument, not the word
        text = re.sub(r"(?<![\w./-])labels=(?![\w'\"(\[{])", "--labels", text)
    return text


def _command_parser(parser: argparse.ArgumentParser, args) -> argparse.ArgumentParser:
    """The parser of the command ``args`` ran (``bench NAME``: that benchmark's)."""
    path = [args.command] + ([args.bench] if args.command == "bench" else [])
    for name in path:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or name not in subs[0].choices:
            break
        parser = subs[0].choices[name]
    return parser


def _command_flags(parser: argparse.ArgumentParser) -> set:
    """The option strings of ``parser``'s arguments."""
    return {flag for action in parser._actions for flag in action.option_strings}


class _Stdout:
    """The command's ``sys.stdout``: when the reader goes away (``| head -1``), printing stops
    quietly and the command carries on, its files still written. File descriptor 1 then points at
    ``os.devnull`` (the Python docs' note on SIGPIPE), so no later flush complains."""

    def __init__(self, stream):
        self._stream = stream
        self.gone = False

    def write(self, text):
        if not self.gone:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._reader_gone()
        return len(text)

    def flush(self):
        if not self.gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._reader_gone()

    def _reader_gone(self):
        self.gone = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self._stream.fileno())
            finally:
                os.close(devnull)
            self._stream.flush()  # what was buffered goes to devnull
        except (OSError, ValueError, AttributeError):
            pass

    def __getattr__(self, name):
        return getattr(self._stream, name)


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
    parser = _build_parser()
    args, unknown = parser.parse_known_args(rest)
    command = _command_parser(parser, args)
    if unknown:  # the subcommand's error (argparse would report it as the top level's)
        command.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.debug, args.quiet = flags["debug"] or args.debug, flags["quiet"] or args.quiet
    stdout = sys.stdout
    sys.stdout = guarded = _Stdout(stdout)
    try:
        with _no_progress_bars(args.quiet):
            status = _guarded(args, _command_flags(command))
        guarded.flush()
        return status
    finally:
        sys.stdout = stdout


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


def _guarded(args, flags: set = frozenset()) -> int:
    if args.debug:
        return _run(args)
    from goldener_jax._locks import LockedError

    command = args.command + (f" {args.bench}" if args.command == "bench" else "")
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("goldener-jax: interrupted (run the same command again to resume)", file=sys.stderr)
        return 130
    except (ValueError, TypeError, KeyError, OSError, LockedError) as e:
        message = _in_cli_words(_one_line(e), flags)
        print(f"goldener-jax {command}: error: {message}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug, not a user error: say how to get the details
        print(
            f"goldener-jax {command}: internal error: {type(e).__name__}: {_one_line(e)} "
            "(rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
