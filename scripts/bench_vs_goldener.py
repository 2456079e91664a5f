"""Side by side, goldener 7.0.0 (PyTorch, its own venv) vs goldener-jax: greedy k-center, or
farthest / closest point with ``--tool``.

    GOLD_PY=$(bash scripts/goldener_reference_venv.sh)     # once, a few minutes
    .venv/bin/python scripts/bench_vs_goldener.py --gold-python "$GOLD_PY" --n 20000 --d 256 --k 500
    # clustered data (a mixture of --clusters Gaussians), our pruned k-center:
    ... --data clustered --clusters 100 --method pruned --repeats 3

Both sides get the same float32 data (saved to an .npz; ``--data`` as in ``goldener-jax bench
kcenter``), run in fresh processes one after the other on this machine, and report steady-state
time (best and median of --repeats, after one untimed call) and peak memory
(whole-process VmHWM, and the extra above the resident memory before the call). Prints the ratios
and whether the two selections agree.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

OURS = r"""
import json, sys, time
import numpy as np
import jax.numpy as jnp
from goldener_jax import kernels as gk
from goldener_jax.benchmarks._machine import peak_rss_bytes, reset_peak_rss, rss_bytes
x = jnp.asarray(np.load(sys.argv[1])["x"])
import functools
k, repeats = int(sys.argv[2]), int(sys.argv[3])
select = {"kcenter": functools.partial(gk.greedy_k_center, method=sys.argv[5]),
          "farthest": gk.farthest_point, "closest": gk.closest_point}[sys.argv[4]]
np.asarray(select(x, k))  # compile
before = rss_bytes()
times, peak = [], 0
for _ in range(repeats):
    reset_peak_rss()
    t0 = time.perf_counter()
    idx = np.asarray(select(x, k))
    times.append(time.perf_counter() - t0)
    peak = max(peak, peak_rss_bytes())
print(json.dumps({"times_s": times, "peak_rss_bytes": peak, "rss_before_bytes": before,
                  "indices": idx.tolist()}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--gold-python", required=True, help="python of the goldener 7.0.0 venv")
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--k", type=int, default=500)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tool", choices=["kcenter", "farthest", "closest"], default="kcenter")
    p.add_argument("--data", choices=["random", "clustered", "digits"], default="random")
    p.add_argument("--clusters", type=int, default=100, help="Gaussians of --data clustered")
    p.add_argument(
        "--method", choices=["naive", "pruned", "auto"], default="naive", help="our k-center"
    )
    p.add_argument("--json", default=None, help="write the results here too")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "x.npz"
        if args.data == "random":  # the data of the earlier runs, bit for bit
            rng = np.random.default_rng(args.seed)
            x = rng.normal(size=(args.n, args.d)).astype(np.float32)
        else:
            from goldener_jax.benchmarks.kcenter import make_data

            x = make_data(args.data, args.n, args.d, args.seed, args.clusters)
        np.savez(data, x=x)
        gold_out = Path(tmp) / "gold.json"
        subprocess.run(
            [
                args.gold_python,
                str(HERE / "goldener_ref.py"),
                "bench",
                str(data),
                str(gold_out),
                "--k",
                str(args.k),
                "--repeats",
                str(args.repeats),
                "--tool",
                args.tool,
            ],
            check=True,
            stderr=subprocess.DEVNULL,
        )
        gold = json.loads(gold_out.read_text())
        ours_run = subprocess.run(
            [
                sys.executable,
                "-c",
                OURS,
                str(data),
                str(args.k),
                str(args.repeats),
                args.tool,
                args.method,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        ours = json.loads(ours_run.stdout.strip().splitlines()[-1])

    t_gold, t_ours = float(np.median(gold["times_s"])), float(np.median(ours["times_s"]))
    best_gold, best_ours = min(gold["times_s"]), min(ours["times_s"])
    extra_gold = gold["peak_rss_bytes"] - gold["rss_before_bytes"]
    extra_ours = ours["peak_rss_bytes"] - ours["rss_before_bytes"]
    agree = sum(a == b for a, b in zip(gold["indices"], ours["indices"], strict=False))
    first_diff = next(
        (
            i
            for i, (a, b) in enumerate(zip(gold["indices"], ours["indices"], strict=False))
            if a != b
        ),
        None,
    )
    result = {
        "n": args.n,
        "d": args.d,
        "k": args.k,
        "data": args.data,
        "clusters": args.clusters if args.data == "clustered" else None,
        "method": args.method,
        "goldener_times_s": gold["times_s"],
        "ours_times_s": ours["times_s"],
        "speedup_best": best_gold / best_ours,
        "goldener_s": t_gold,
        "ours_s": t_ours,
        "speedup": t_gold / t_ours,
        "goldener_peak_rss_bytes": gold["peak_rss_bytes"],
        "ours_peak_rss_bytes": ours["peak_rss_bytes"],
        "goldener_extra_bytes": extra_gold,
        "ours_extra_bytes": extra_ours,
        "peak_rss_ratio": ours["peak_rss_bytes"] / gold["peak_rss_bytes"],
        "extra_ratio": extra_ours / max(1, extra_gold),
        "identical_prefix": first_diff if first_diff is not None else args.k,
        "same_position_picks": agree,
        "torch": gold.get("torch"),
        "torch_threads": gold.get("threads"),
    }
    print(
        f"greedy {args.tool} n={args.n:,} d={args.d} k={args.k} float32, CPU, data={args.data}"
        + (f" ({args.clusters} Gaussians)" if args.data == "clustered" else "")
        + f", ours method={args.method}"
    )
    print(
        f"  goldener 7.0.0 (torch {gold.get('torch')}, {gold.get('threads')} threads): "
        f"{t_gold:.2f} s, peak RSS {gold['peak_rss_bytes'] / 1e9:.2f} GB "
        f"(+{extra_gold / 1e9:.2f} GB during the call)"
    )
    print(
        f"  goldener-jax: {t_ours:.3f} s, peak RSS {ours['peak_rss_bytes'] / 1e9:.2f} GB "
        f"(+{extra_ours / 1e6:.1f} MB during the call)"
    )
    print(
        f"  speed-up {result['speedup']:.1f}x (median), {result['speedup_best']:.1f}x (best: "
        f"goldener {best_gold:.3f} s, ours {best_ours:.4f} s); whole-process peak ratio "
        f"{result['peak_rss_ratio']:.3f}; extra-memory ratio {result['extra_ratio']:.4f}"
    )
    print(f"  selections identical for the first {result['identical_prefix']} of {args.k} picks")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
