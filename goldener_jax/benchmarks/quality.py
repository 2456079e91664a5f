"""Selection quality vs random: downstream accuracy of a classifier trained on the selection.

scikit-learn's bundled digits (raw pixels, centred on the pool mean and scaled by 1/16 as the demo
does). For each seed: a stratified pool / test split (30% test, ``random_state=seed``); for each
budget (a fraction of the pool) and method, ``goldener_jax.select(pool, budget, method=...,
key=jax.random.key(seed))``, a logistic regression trained on the selected pool samples, and its
accuracy on the test set. With ``--stratified`` (default on) every method is also run with the
pool labels (per-class allocation, ``labels=``). Random is the same ``select`` path with
``method="random"``; every row is reported as mean +- std over seeds and as the mean difference
to random's mean in points of accuracy. ``auto`` is ``select(method=gj.BudgetRule())``, the
rule ``method="auto"`` stands for.

``--features cnn`` replaces the raw pixels by the demo's features: its Flax CNN trained on a 20%
pretrain part of the digits (never selected; ``goldener_jax.demo``'s data split, model and
training, imported), ``describe``d from the same three layers for the other images, each feature
standardised; per seed a stratified 70/30 pool / test split of those images.

``--suite`` runs the multi-dataset suite instead (:mod:`goldener_jax.benchmarks.quality_suite`:
10 real datasets, budgets 1-20%, a linear and a 1-NN probe); the ``auto`` rule is fitted and
validated on its JSON by :mod:`goldener_jax.benchmarks.auto_rule`.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np

from goldener_jax.evaluate import downstream_accuracy

DEFAULT_METHODS = (
    "random,kcenter,herding,zcore,kmeans_medoids,typiclust,probcover,typical_kcenter,auto"
)


def add_arguments(parser) -> None:
    from goldener_jax.cli import int_at_least

    count = int_at_least(1)

    parser.add_argument("--seeds", type=count, default=10)
    parser.add_argument(
        "--budgets", default=None, help="default 0.02,0.05,0.1,0.2 (--suite: 0.01,...,0.2)"
    )
    parser.add_argument("--methods", default=DEFAULT_METHODS)
    parser.add_argument("--no-stratified", action="store_true", help="skip the labels= runs")
    parser.add_argument("--zcore-samples", type=count, default=20_000)
    parser.add_argument(
        "--features",
        choices=["raw", "cnn"],
        default="raw",
        help="raw pixels, or the demo's Flax CNN features (trained on a held-out 20%%)",
    )
    parser.add_argument("--cnn-dir", default=None, help="CNN weights / store cache (cnn)")
    parser.add_argument(
        "--suite",
        action="store_true",
        help="the multi-dataset suite (benchmarks/quality_suite.py) instead of digits alone",
    )
    from goldener_jax.benchmarks import quality_suite

    quality_suite.add_arguments(parser)


def _split(seed):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.data.astype(np.float32)
    pool_x, test_x, pool_y, test_y = train_test_split(
        x, digits.target, test_size=0.3, random_state=seed, stratify=digits.target
    )
    mean = pool_x.mean(0)
    return (pool_x - mean) / 16.0, pool_y, (test_x - mean) / 16.0, test_y


def cnn_features(cache_dir: str | None = None, *, train_steps: int = 300):
    """The demo's pipeline up to the features: its Flax CNN trained on the pretrain part of the
    digits (20%, never selected), ``describe``d from the same 3 layers for the other images,
    each feature standardised over them. Returns ``(features [n, d], labels [n])``."""
    import tempfile

    import goldener_jax as gj
    from goldener_jax import demo

    images, y, pre_idx, rest_idx, _, _ = demo.digits()
    model = demo.digits_cnn()
    with tempfile.TemporaryDirectory() as tmp:
        out = cache_dir or tmp
        variables, _ = demo.train_cnn(
            model, images[pre_idx], y[pre_idx], os.path.join(out, "cnn.msgpack"), train_steps
        )
        extractor = gj.FeatureExtractor(model=model, variables=variables, layers=list(demo.LAYERS))
        store = gj.describe(
            images[rest_idx],
            extractor,
            os.path.abspath(os.path.join(out, "store")),
            batch_size=256,
            labels=y[rest_idx],
            progress=False,
        )
        vectors, _ = store.read_vectors()
        labels = np.asarray(store.read_labels())
    feats = (vectors - vectors.mean(0)) / (vectors.std(0) + 1e-6)
    return np.asarray(feats, np.float32), labels


def _cnn_split(feats, labels, seed):
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    pool, test = train_test_split(idx, test_size=0.3, random_state=seed, stratify=labels)
    return feats[pool], labels[pool], feats[test], labels[test]


def run(args) -> dict:
    if getattr(args, "suite", False):
        from goldener_jax.benchmarks import quality_suite

        return quality_suite.run(args)
    from goldener_jax.select import BudgetRule, select

    budgets = [float(b) for b in (args.budgets or "0.02,0.05,0.1,0.2").split(",")]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    variants = [False] if args.no_stratified else [False, True]
    acc = {}  # (method, stratified, budget) -> [accuracy per seed]
    resolved = {}  # (stratified, budget) -> what auto chose
    seconds = {}
    t_all = time.perf_counter()
    features = getattr(args, "features", "raw")
    if features == "cnn":
        feats, flabels = cnn_features(getattr(args, "cnn_dir", None))
    for seed in range(args.seeds):
        if features == "cnn":
            pool_x, pool_y, test_x, test_y = _cnn_split(feats, flabels, seed)
        else:
            pool_x, pool_y, test_x, test_y = _split(seed)
        key = jax.random.key(seed)
        for strat in variants:
            for budget in budgets:
                for method in methods:
                    opts = {"num_samples": args.zcore_samples} if method == "zcore" else {}
                    t0 = time.perf_counter()
                    sel = select(
                        pool_x,
                        budget,
                        method=BudgetRule() if method == "auto" else method,
                        key=key,
                        labels=pool_y if strat else None,
                        method_options=opts,
                        coverage=False,
                    )
                    seconds[method] = seconds.get(method, 0.0) + time.perf_counter() - t0
                    idx = sel.indices
                    a = downstream_accuracy(pool_x[idx], pool_y[idx], test_x, test_y, max_iter=2000)
                    acc.setdefault((method, strat, budget), []).append(a)
                    if method == "auto":
                        resolved[(strat, budget)] = sel.config["method"]
    rows = []
    for strat in variants:
        for method in methods:
            row = {"method": method, "stratified": strat, "budgets": {}}
            for budget in budgets:
                v = np.asarray(acc[(method, strat, budget)])
                r = np.asarray(acc[("random", strat, budget)]) if "random" in methods else v
                row["budgets"][budget] = {
                    "mean": float(v.mean()),
                    "std": float(v.std()),
                    "vs_random_points": float(100 * (v.mean() - r.mean())),
                    "wins_vs_random_mean": int(np.sum(v >= r.mean())),
                }
            row["mean_vs_random_points"] = float(
                np.mean([row["budgets"][b]["vs_random_points"] for b in budgets])
            )
            rows.append(row)
    out = {
        "benchmark": "quality",
        "data": "sklearn digits, raw pixels centred / 16, 30% stratified test split per seed"
        if features == "raw"
        else "sklearn digits minus the CNN's 20% pretrain part, demo CNN features (3 layers, "
        "standardised), 30% stratified test split per seed",
        "features": features,
        "seeds": args.seeds,
        "budgets": budgets,
        "auto_resolved": {f"{'strat' if s else 'plain'}@{b}": m for (s, b), m in resolved.items()},
        "rows": rows,
        "select_seconds": {k: round(v, 2) for k, v in seconds.items()},
        "wall_seconds": round(time.perf_counter() - t_all, 1),
    }
    print(markdown_table(out))
    return out


def markdown_table(out: dict) -> str:
    budgets = out["budgets"]
    head = "| method | " + " | ".join(f"{b:.0%}" for b in budgets) + " | mean vs random |"
    lines = [head, "|" + "---|" * (len(budgets) + 2)]
    for row in out["rows"]:
        name = row["method"] + (" (per class)" if row["stratified"] else "")
        cells = []
        for b in budgets:
            c = row["budgets"][b]
            if row["method"] == "random":
                cells.append(f"{100 * c['mean']:.1f} ± {100 * c['std']:.1f}")
            else:
                cells.append(f"{100 * c['mean']:.1f} ({c['vs_random_points']:+.1f})")
        mean = "—" if row["method"] == "random" else f"{row['mean_vs_random_points']:+.1f}"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {mean} |")
    return "\n".join(lines)
