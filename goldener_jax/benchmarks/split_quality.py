"""Split quality on digits: does validation accuracy predict test accuracy, auto vs random splits.

scikit-learn's bundled digits (1,797 images), raw pixels standardised per feature over all
images. For each seed ``s``: ``goldener_jax.split(x, {"train": 0.7, "val": 0.15, "test": 0.15},
method="auto", labels=y, key=jax.random.key(s))`` against a stratified random split of the same
sizes (scikit-learn ``train_test_split(..., stratify=y, random_state=s)`` twice, with the auto
split's counts). A logistic regression is trained on each train set. Reported per kind of
split, over seeds: mean validation and test accuracy, the mean absolute gap
``|val acc - test acc|`` (how well validation predicts test), and the RBF MMD (median
bandwidth) of each set to the whole data.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from goldener_jax.evaluate import downstream_accuracy, mmd

SETS = {"train": 0.7, "val": 0.15, "test": 0.15}


def add_arguments(parser) -> None:
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--cell-size", type=int, default=None, help="method_options cell_size")
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
    from goldener_jax.split import split

    x, y = _data()
    opts = None if args.cell_size is None else {"cell_size": args.cell_size}
    per_seed = {"auto": [], "random": []}
    sizes = None
    t_all = time.perf_counter()
    split_seconds = 0.0
    for seed in range(args.seeds):
        t0 = time.perf_counter()
        auto = split(
            x,
            SETS,
            method="auto",
            key=jax.random.key(seed),
            labels=y,
            method_options=opts,
            manifest_path=False,
        )
        split_seconds += time.perf_counter() - t0
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
