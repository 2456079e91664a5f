"""Active learning in rounds: anchored auto vs auto from scratch vs random, on digits.

The must-show of the round API (:class:`goldener_jax.rounds.Rounds`). Data: the demo's CNN
features (``quality.cnn_features``: its Flax CNN trained on a 20% pretrain part of the digits,
never selected; the other images described from three layers, each feature standardised) or raw
pixels (``--features raw``, centred / 16). Per seed: a stratified 70/30 pool / test split
(``random_state=seed``), then ``--rounds`` rounds of ``--round-size`` of the pool each:

* **rounds (anchored auto)**: ``Rounds.select(round_size, key=fold_in(key(seed), round),
  method="auto")`` then ``Rounds.label`` with the pool's labels; each round's selection has every
  earlier pick as anchors and never sees a label (``labels=False``);
* **scratch auto**: ``select(pool, total, method="auto", labels=False, key=...)`` run from nothing
  at the same accumulated size as each round;
* **rounds without anchors** (the naive loop): each round ``select``s the same count from the
  samples not yet picked, as a fresh pool, without anchors: it does not know what is labelled;
* **random**: ``--random-draws`` random subsets of the same accumulated size per seed (prefixes of
  one random permutation per draw: random rounds).

The probe is ``quality.py``'s: a logistic regression trained on the labelled pool samples,
scored on the test part. The table gives mean +- std over seeds per round, the gap of rounds to
random's mean and to scratch (points of accuracy) and, paired by seed, how often rounds beat or
tie scratch.

Greedy methods (k-center, typical k-center: what ``auto`` runs below 40 picks) are nested: the
first ``k`` picks of a run for ``k + m`` are the run for ``k``, so anchored rounds and a scratch
run of the same method at the same total pick the same samples; they differ where scratch's size
makes ``auto`` choose another method (ProbCover from 40 picks, while each round decides on its
own count), or for non-nested methods.
"""

from __future__ import annotations

import os
import tempfile
import time

import jax
import numpy as np

from goldener_jax.evaluate import downstream_accuracy


def add_arguments(parser) -> None:
    from goldener_jax.cli import fraction, int_at_least

    count = int_at_least(1)

    parser.add_argument("--seeds", type=count, default=10)
    parser.add_argument("--rounds", type=count, default=3)
    parser.add_argument(
        "--round-size", type=fraction, default=0.02, help="share of the pool picked per round"
    )
    parser.add_argument("--random-draws", type=count, default=5, help="random subsets per seed")
    parser.add_argument(
        "--features",
        choices=["raw", "cnn"],
        default="cnn",
        help="the demo's Flax CNN features (trained on a held-out 20%%), or raw pixels",
    )
    parser.add_argument("--cnn-dir", default=None, help="CNN weights / store cache (cnn)")
    parser.add_argument("--method", default="auto", help="the method of both rounds and scratch")


def _split(feats, labels, seed):
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    pool, test = train_test_split(idx, test_size=0.3, random_state=seed, stratify=labels)
    return feats[pool], labels[pool], feats[test], labels[test]


def _raw():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.data.astype(np.float32)
    return (x - x.mean(0)) / 16.0, digits.target


def one_seed(feats, labels, seed, *, rounds, round_size, random_draws, method="auto", workdir):
    """One seed of the benchmark.

    Returns ``{"counts", "rounds", "scratch", "random", "methods", "picks"}``: the accumulated
    sizes, the accuracy after each round (anchored rounds, scratch at that size, the mean of the
    random draws), the methods the rounds and scratch ran, and the rounds' picks per round.
    """
    from goldener_jax.rounds import Rounds
    from goldener_jax.select import select

    pool_x, pool_y, test_x, test_y = _split(feats, labels, seed)
    n = len(pool_y)
    key = jax.random.key(seed)

    def acc(idx):
        return downstream_accuracy(pool_x[idx], pool_y[idx], test_x, test_y, max_iter=2000)

    r = Rounds.open(pool_x, path=os.path.join(workdir, f"rounds_seed{seed}.json"))
    perms = [
        np.asarray(jax.random.permutation(jax.random.fold_in(key, 1000 + d), n))
        for d in range(random_draws)
    ]
    out = {
        "counts": [],
        "rounds": [],
        "scratch": [],
        "no_anchors": [],
        "random": [],
        "methods": [],
        "picks": [],
        "picks_all": [],
        "scratch_picks": [],
    }
    naive = np.zeros(0, np.int64)  # the no-anchor loop's picks so far
    for k in range(rounds):
        sel = r.select(round_size, key=jax.random.fold_in(key, k), method=method, progress=False)
        r.label(sel.indices, pool_y[sel.indices])  # the annotator: labels come after the pick
        total = int(r.labelled.indices.size)
        scratch = select(
            pool_x,
            total,
            key=jax.random.fold_in(key, 100 + k),
            method=method,
            labels=False,
            coverage=False,
            progress=False,
        )
        rest = np.setdiff1d(np.arange(n), naive)
        fresh = select(
            pool_x[rest],
            int(sel.indices.size),
            key=jax.random.fold_in(key, k),
            method=method,
            labels=False,
            coverage=False,
            progress=False,
        )
        naive = np.concatenate([naive, rest[fresh.indices]])
        out["counts"].append(total)
        out["rounds"].append(acc(r.labelled.indices))
        out["scratch"].append(acc(scratch.indices))
        out["no_anchors"].append(acc(naive))
        out["random"].append(float(np.mean([acc(p[:total]) for p in perms])))
        out["methods"].append({"rounds": sel.config["method"], "scratch": scratch.config["method"]})
        out["picks"].append(sel.indices.tolist())
        out["picks_all"].append(r.labelled.indices.tolist())
        out["scratch_picks"].append(scratch.indices.tolist())
    return out


def run(args) -> dict:
    t_all = time.perf_counter()
    features = getattr(args, "features", "cnn")
    if features == "cnn":
        from goldener_jax.benchmarks.quality import cnn_features

        feats, labels = cnn_features(getattr(args, "cnn_dir", None))
    else:
        feats, labels = _raw()
    method = getattr(args, "method", "auto")
    per_seed = []
    with tempfile.TemporaryDirectory() as workdir:
        for seed in range(args.seeds):
            per_seed.append(
                one_seed(
                    feats,
                    labels,
                    seed,
                    rounds=args.rounds,
                    round_size=args.round_size,
                    random_draws=args.random_draws,
                    method=method,
                    workdir=workdir,
                )
            )
    rows = []
    for k in range(args.rounds):
        a = {
            name: np.asarray([s[name][k] for s in per_seed])
            for name in ("rounds", "scratch", "no_anchors")
        }
        rnd = np.asarray([s["random"][k] for s in per_seed])
        counts = sorted({s["counts"][k] for s in per_seed})
        rows.append(
            {
                "round": k + 1,
                "share": round((k + 1) * args.round_size, 6),
                "count": counts[0] if len(counts) == 1 else counts,
                "rounds_mean": float(a["rounds"].mean()),
                "rounds_std": float(a["rounds"].std()),
                "scratch_mean": float(a["scratch"].mean()),
                "scratch_std": float(a["scratch"].std()),
                "no_anchors_mean": float(a["no_anchors"].mean()),
                "no_anchors_std": float(a["no_anchors"].std()),
                "random_mean": float(rnd.mean()),
                "random_std": float(rnd.std()),
                "rounds_vs_random_points": float(100 * (a["rounds"].mean() - rnd.mean())),
                "scratch_vs_random_points": float(100 * (a["scratch"].mean() - rnd.mean())),
                "rounds_vs_scratch_points": float(100 * (a["rounds"].mean() - a["scratch"].mean())),
                "rounds_vs_no_anchors_points": float(
                    100 * (a["rounds"].mean() - a["no_anchors"].mean())
                ),
                "seeds_rounds_identical_to_scratch": int(
                    sum(
                        sorted(s["picks_all"][k]) == sorted(s["scratch_picks"][k]) for s in per_seed
                    )
                ),
                "rounds_beats_random_mean": bool(a["rounds"].mean() > rnd.mean()),
                "rounds_beats_scratch_mean": bool(a["rounds"].mean() > a["scratch"].mean()),
                "seeds_rounds_above_scratch": int(np.sum(a["rounds"] > a["scratch"])),
                "seeds_rounds_tie_scratch": int(np.sum(a["rounds"] == a["scratch"])),
                "methods": sorted(
                    {
                        f"{s['methods'][k]['rounds']} / {s['methods'][k]['scratch']}"
                        for s in per_seed
                    }
                ),
            }
        )
    out = {
        "benchmark": "active-learning",
        "data": "sklearn digits minus the CNN's 20% pretrain part, demo CNN features (3 layers, "
        "standardised), 30% stratified test split per seed"
        if features == "cnn"
        else "sklearn digits, raw pixels centred / 16, 30% stratified test split per seed",
        "features": features,
        "method": method,
        "seeds": args.seeds,
        "rounds": args.rounds,
        "round_size": args.round_size,
        "random_draws": args.random_draws,
        "probe": "logistic regression (max_iter=2000) on the labelled pool samples, test accuracy",
        "labels_seen_by_selection": False,
        "rows": rows,
        "per_seed": [
            {k: v for k, v in s.items() if k not in ("picks", "picks_all", "scratch_picks")}
            | {"seed": i}
            for i, s in enumerate(per_seed)
        ],
        "all_rounds_beat_random": all(r["rounds_beats_random_mean"] for r in rows),
        "all_rounds_beat_scratch": all(r["rounds_beats_scratch_mean"] for r in rows),
        "wall_seconds": round(time.perf_counter() - t_all, 1),
    }
    print(markdown_table(out))
    return out


def markdown_table(out: dict) -> str:
    lines = [
        "| round | labelled | random | scratch auto | rounds (anchored auto) | rounds - random "
        "| rounds - scratch | seeds rounds > scratch | same picks as scratch "
        "| no-anchor rounds | rounds - no-anchor |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in out["rows"]:
        lines.append(
            f"| {r['round']} | {r['count']} ({100 * r['share']:.0f}%) "
            f"| {100 * r['random_mean']:.1f} ± {100 * r['random_std']:.1f} "
            f"| {100 * r['scratch_mean']:.1f} ± {100 * r['scratch_std']:.1f} "
            f"| {100 * r['rounds_mean']:.1f} ± {100 * r['rounds_std']:.1f} "
            f"| {r['rounds_vs_random_points']:+.1f} | {r['rounds_vs_scratch_points']:+.1f} "
            f"| {r['seeds_rounds_above_scratch']}/{out['seeds']} "
            f"| {r['seeds_rounds_identical_to_scratch']}/{out['seeds']} "
            f"| {100 * r['no_anchors_mean']:.1f} ± {100 * r['no_anchors_std']:.1f} "
            f"| {r['rounds_vs_no_anchors_points']:+.1f} |"
        )
    return "\n".join(lines)
