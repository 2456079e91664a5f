"""Split quality on digits: does validation accuracy predict test accuracy, auto vs random splits.

scikit-learn's bundled digits (1,797 images), raw pixels standardised per feature over all
images. For each seed ``s``: ``goldener_jax.split(x, {"train": 0.7, "val": 0.15, "test": 0.15},
method="auto", labels=y, key=jax.random.key(s))`` against a stratified random split of the same
sizes (scikit-learn ``train_test_split(..., stratify=y, random_state=s)`` twice, with the auto
split's counts). A logistic regression is trained on each train set. Reported per kind of
split, over seeds: mean validation and test accuracy, the mean absolute gap
``|val acc - test acc|`` (how well validation predicts test), and the RBF MMD (median
bandwidth) of each set to the whole data.

``--suite``: the same protocol on every dataset of the quality suite
(:data:`goldener_jax.benchmarks.quality_suite.DATASETS`, loaded by its ``load_dataset``, at
most ``--max-rows`` rows, each feature standardised over all rows), ``--seeds`` seeds (30 by
default there), one logistic regression per split scoring both validation and test. Reported
per dataset and kind of split: mean ``|val acc - test acc|`` over seeds and the spread (std)
of test accuracy over seeds; no MMD columns.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from goldener_jax.evaluate import downstream_accuracy, mmd

SETS = {"train": 0.7, "val": 0.15, "test": 0.15}


def add_arguments(parser) -> None:
    from goldener_jax.cli import int_at_least

    count = int_at_least(1)

    parser.add_argument("--seeds", type=count, default=None, help="10, or 30 with --suite")
    parser.add_argument("--suite", action="store_true", help="every quality-suite dataset")
    parser.add_argument(
        "--first-seed", type=int, default=0,
        help="--suite: seeds first-seed .. first-seed + seeds - 1 (fresh seeds: out of sample)",
    )  # fmt: skip
    parser.add_argument("--datasets", default=None, help="--suite: comma-separated subset")
    parser.add_argument("--max-rows", type=count, default=3000, help="--suite: rows per dataset")
    parser.add_argument("--cell-size", type=count, default=None, help="method_options cell_size")
    parser.add_argument("--no-mmd", action="store_true", help="skip the per-set MMD columns")


def _data():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.data.astype(np.float32)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    return x, digits.target.astype(np.int64)


def random_stratified_split(labels, seed, sizes: dict) -> dict:
    """Stratified random split with the given set sizes (scikit-learn), the baseline."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    train, rest = train_test_split(
        idx, train_size=sizes["train"], random_state=seed, stratify=labels
    )
    val, test = train_test_split(
        rest, test_size=sizes["test"], random_state=seed, stratify=labels[rest]
    )
    return {"train": train, "val": val, "test": test}


def _measure(x, y, sets, with_mmd: bool = True) -> dict:
    tr, va, te = sets["train"], sets["val"], sets["test"]
    val_acc = downstream_accuracy(x[tr], y[tr], x[va], y[va], max_iter=2000)
    test_acc = downstream_accuracy(x[tr], y[tr], x[te], y[te], max_iter=2000)
    out = {"val_acc": val_acc, "test_acc": test_acc, "gap": abs(val_acc - test_acc)}
    for name, idx in sets.items():
        out[f"mmd_{name}"] = mmd(x, np.asarray(idx)) if with_mmd else float("nan")
    return out


def run(args) -> dict:
    if getattr(args, "suite", False):
        return run_suite(args)

    if args.seeds is None:
        args.seeds = 10
    x, y = _data()
    opts = None if args.cell_size is None else {"cell_size": args.cell_size}
    per_seed = {"auto": [], "random": []}
    sizes = None
    t_all = time.perf_counter()
    split_seconds = 0.0
    for seed in range(args.seeds):
        auto, seconds = timed_auto_split(x, y, seed, opts)
        split_seconds += seconds
        sizes = {k: len(v) for k, v in auto.items()}
        per_seed["auto"].append(_measure(x, y, dict(auto), not args.no_mmd))
        rnd = random_stratified_split(y, seed, sizes)
        assert {k: len(v) for k, v in rnd.items()} == sizes, (rnd, sizes)
        per_seed["random"].append(_measure(x, y, rnd, not args.no_mmd))
    summary = {}
    for kind, rows in per_seed.items():
        summary[kind] = {
            k: {
                "mean": float(np.mean([r[k] for r in rows])),
                "std": float(np.std([r[k] for r in rows])),
            }
            for k in rows[0]
        }
    out = {
        "benchmark": "split_quality",
        "data": "sklearn digits (1,797), raw pixels standardised; 70/15/15; logistic regression",
        "seeds": args.seeds,
        "sizes": sizes,
        "cell_size": args.cell_size,
        "summary": summary,
        "per_seed": per_seed,
        "auto_split_seconds_total": round(split_seconds, 2),
        "wall_seconds": round(time.perf_counter() - t_all, 1),
    }
    print(markdown_table(out))
    return out


def markdown_table(out: dict) -> str:
    cols = [
        ("val_acc", "val acc %", 100),
        ("test_acc", "test acc %", 100),
        ("gap", "mean abs(val - test) (points)", 100),
        ("mmd_train", "MMD train (1e-4)", 1e4),
        ("mmd_val", "MMD val (1e-4)", 1e4),
        ("mmd_test", "MMD test (1e-4)", 1e4),
    ]
    lines = [
        "| split | " + " | ".join(c[1] for c in cols) + " |",
        "|" + "---|" * (len(cols) + 1),
    ]
    for kind in ("auto", "random"):
        s = out["summary"][kind]
        cells = [f"{s[k]['mean'] * f:.2f} ± {s[k]['std'] * f:.2f}" for k, _, f in cols]
        name = "auto" if kind == "auto" else "stratified random"
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- suite


def val_test_accuracy(x, y, sets, *, max_iter: int = 2000) -> tuple[float, float]:
    """Validation and test accuracy of one logistic regression trained on the train set (the
    model of :func:`goldener_jax.evaluate.downstream_accuracy`, fitted once for both)."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    tr, va, te = (np.asarray(sets[k]) for k in ("train", "val", "test"))
    if len(np.unique(y[tr])) < 2:
        c = y[tr][0]
        return float(np.mean(y[va] == c)), float(np.mean(y[te] == c))
    with threadpool_limits(1):
        clf = LogisticRegression(max_iter=max_iter).fit(x[tr], y[tr])
        return float(clf.score(x[va], y[va])), float(clf.score(x[te], y[te]))


def timed_auto_split(x, y, seed: int, method_options=None):
    """``(split(method="auto") of x with labels y and key(seed), its seconds)``."""
    from goldener_jax.split import split

    t0 = time.perf_counter()
    auto = split(
        x, SETS, method="auto", key=jax.random.key(seed), labels=y,
        method_options=method_options, manifest_path=False, progress=False,
    )  # fmt: skip
    return auto, time.perf_counter() - t0


def suite_dataset(x, y, *, seeds: int, method_options=None, first_seed: int = 0) -> dict:
    """Per-seed ``val_acc`` / ``test_acc`` of the auto split and of a stratified random split
    of the same sizes on one dataset, and their summaries (mean |val - test|, std of test)."""

    per = {"auto": {"val_acc": [], "test_acc": []}, "random": {"val_acc": [], "test_acc": []}}
    seconds = 0.0
    for seed in range(first_seed, first_seed + seeds):
        auto, took = timed_auto_split(x, y, seed, method_options)
        seconds += took
        sizes = {k: len(v) for k, v in auto.items()}
        rnd = random_stratified_split(y, seed, sizes)
        for kind, sets in (("auto", dict(auto)), ("random", rnd)):
            va, te = val_test_accuracy(x, y, sets)
            per[kind]["val_acc"].append(va)
            per[kind]["test_acc"].append(te)
    summary = {}
    for kind, r in per.items():
        va, te = np.asarray(r["val_acc"]), np.asarray(r["test_acc"])
        summary[kind] = {
            "mean_abs_val_minus_test": float(np.mean(np.abs(va - te))),
            "std_abs_val_minus_test": float(np.std(np.abs(va - te))),
            "mean_test_acc": float(te.mean()),
            "std_test_acc": float(te.std()),
            "mean_val_acc": float(va.mean()),
            "std_val_acc": float(va.std()),
        }
    return {"per_seed": per, "summary": summary, "auto_split_seconds": round(seconds, 2)}


def run_suite(args) -> dict:
    from goldener_jax.benchmarks import quality_suite

    seeds = 30 if args.seeds is None else args.seeds
    names = args.datasets.split(",") if args.datasets else list(quality_suite.DATASETS)
    opts = None if args.cell_size is None else {"cell_size": args.cell_size}
    out = {
        "benchmark": "split_quality_suite",
        "protocol": (
            "70/15/15; split(method='auto', labels=y, key=jax.random.key(seed)) vs a stratified "
            "random split of the same sizes (scikit-learn, random_state=seed); features "
            "standardised over all rows; one logistic regression (max_iter=2000) per split "
            "trained on train, scored on val and test; summaries over seeds"
        ),
        "seeds": seeds,
        "first_seed": args.first_seed,
        "max_rows": args.max_rows,
        "cell_size": args.cell_size,
        "datasets": {},
        "skipped": {},
    }
    t_all = time.perf_counter()
    for name in (n.strip() for n in names if n.strip()):
        try:
            x, y = quality_suite.load_dataset(name, max_rows=args.max_rows)
        except LookupError as e:
            out["skipped"][name] = str(e)
            print(f"skip {name}: {e}")
            continue
        x = (x - x.mean(0)) / np.where(x.std(0) > 1e-8, x.std(0), 1.0)
        res = suite_dataset(
            x.astype(np.float32), y, seeds=seeds, method_options=opts, first_seed=args.first_seed
        )
        res.update(n=int(len(y)), d=int(x.shape[1]), classes=int(len(np.unique(y))))
        out["datasets"][name] = res
        s = res["summary"]
        print(
            f"{name}: auto {100 * s['auto']['mean_abs_val_minus_test']:.2f} vs random "
            f"{100 * s['random']['mean_abs_val_minus_test']:.2f} points "
            f"({time.perf_counter() - t_all:.0f} s)",
            flush=True,
        )
    out["wall_seconds"] = round(time.perf_counter() - t_all, 1)
    print(suite_table(out))
    return out


def suite_table(out: dict) -> str:
    """Markdown: per dataset, mean |val - test| and std of test accuracy (points), both splits."""
    lines = [
        "| dataset | n | auto mean abs(val - test) | random mean abs(val - test) "
        "| auto std test acc | random std test acc |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in out["datasets"].items():
        a, b = r["summary"]["auto"], r["summary"]["random"]
        lines.append(
            f"| {name} | {r['n']} | {100 * a['mean_abs_val_minus_test']:.2f} "
            f"| {100 * b['mean_abs_val_minus_test']:.2f} | {100 * a['std_test_acc']:.2f} "
            f"| {100 * b['std_test_acc']:.2f} |"
        )
    return "\n".join(lines)
