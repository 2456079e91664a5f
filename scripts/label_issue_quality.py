"""Label-issue ranking quality on scikit-learn's digits (raw 64-pixel vectors) with planted flips.

For each flip rate and seed, ``rate x N`` labels are moved to another class at random and
``goldener_jax.label_issues`` ranks the samples; the figure is the precision of the top-#flips
(a random ranking scores the flip rate). Writes JSON to the path given (default: stdout only).

    .venv/bin/python scripts/label_issue_quality.py docs/results/cpu_label_issues_digits.json
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
from sklearn.datasets import load_digits

import goldener_jax as gj

RATES = (0.02, 0.05, 0.1, 0.2)
SEEDS = range(5)
SETTINGS = [
    {"metric": "euclidean", "weighting": "distance"},
    {"metric": "euclidean", "weighting": "uniform"},
    {"metric": "cosine", "weighting": "distance"},
]


def main(path: str | None = None) -> dict:
    digits = load_digits()
    x, y = digits.data.astype(np.float32), digits.target
    rows = []
    for setting in SETTINGS:
        for k in (5, 10, 20):
            for rate in RATES:
                prec = []
                for seed in SEEDS:
                    rng = np.random.default_rng(seed)
                    flipped = rng.choice(len(y), int(round(rate * len(y))), replace=False)
                    noisy = y.copy()
                    noisy[flipped] = (noisy[flipped] + rng.integers(1, 10, len(flipped))) % 10
                    t0 = time.perf_counter()
                    res = gj.label_issues(x, noisy, k=k, **setting)
                    seconds = time.perf_counter() - t0
                    prec.append(float(np.isin(res.indices[: len(flipped)], flipped).mean()))
                rows.append({**setting, "k": k, "flip_rate": rate, "precision": prec,
                             "mean": float(np.mean(prec)), "last_seconds": seconds})  # fmt: skip
                print(f"{setting['metric']:9s} {setting['weighting']:8s} k={k:2d} "
                      f"flips {rate:4.0%}: precision@#flips {np.mean(prec):.3f} "
                      f"± {np.std(prec):.3f}")  # fmt: skip
    result = {"data": f"sklearn digits, {x.shape[0]} x {x.shape[1]} raw pixels",
              "seeds": len(SEEDS), "rows": rows}  # fmt: skip
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
