"""Runs goldener 7.0.0's selection tools on arrays from an .npz file (reference side of parity
and benchmark checks). Executed with the *reference* venv's python, never imported by the library:

    GOLD_PY=$(bash scripts/goldener_reference_venv.sh)
    $GOLD_PY scripts/goldener_ref.py select IN.npz OUT.json
    $GOLD_PY scripts/goldener_ref.py bench IN.npz OUT.json --k 500 --repeats 2
    $GOLD_PY scripts/goldener_ref.py zcore IN.npz OUT.json --k 100 --samples 2000

IN.npz holds cases ``x_<name>`` (and optionally ``anchors_<name>``); OUT.json maps each case and
tool to the selected indices (``select``) or to timings and peak memory (``bench``).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return -1


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return -1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["select", "bench", "zcore"])
    parser.add_argument("inp")
    parser.add_argument("out")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tool", choices=["kcenter", "farthest", "closest"], default="kcenter")
    parser.add_argument("--samples", type=int, default=2000, help="zcore: n_random_anchors")
    parser.add_argument("--redundancy", type=int, default=1000, help="zcore: n_redundancy")
    args = parser.parse_args()
    if args.mode == "zcore":
        _zcore(args)
        return

    import torch
    from goldener.select import (
        DistanceType,
        GoldGreedyClosestPointSelectionTool,
        GoldGreedyFarthestPointSelectionTool,
        GoldGreedyKCenterSelectionTool,
    )

    torch.set_num_threads(max(1, torch.get_num_threads()))
    data = np.load(args.inp)
    result: dict = {}
    if args.mode == "select":
        cases = sorted({name.split("_", 1)[1] for name in data.files if name.startswith("x_")})
        for case in cases:
            x = torch.from_numpy(data[f"x_{case}"])
            k = int(data[f"k_{case}"])
            anchors = data.get(f"anchors_{case}")
            anchors = None if anchors is None else torch.from_numpy(anchors)
            out = {}
            for metric in ("euclidean", "cosine"):
                dist = DistanceType(metric)
                kc = GoldGreedyKCenterSelectionTool("cpu", distance=dist)
                out[f"kcenter_{metric}"] = [int(i) for i in kc.select(x, k)]
                if anchors is not None:
                    out[f"kcenter_anchors_{metric}"] = [
                        int(i) for i in kc.select(x, k, anchors=anchors)
                    ]
                fp = GoldGreedyFarthestPointSelectionTool("cpu", distance=dist)
                cp = GoldGreedyClosestPointSelectionTool("cpu", distance=dist)
                out[f"farthest_{metric}"] = [int(i) for i in fp.select(x, k)]
                out[f"closest_{metric}"] = [int(i) for i in cp.select(x, k)]
            result[case] = out
    else:
        x = torch.from_numpy(data["x"])
        tool = {
            "kcenter": GoldGreedyKCenterSelectionTool,
            "farthest": GoldGreedyFarthestPointSelectionTool,
            "closest": GoldGreedyClosestPointSelectionTool,
        }[args.tool]("cpu")
        base_rss = _rss_bytes()
        times = []
        peak = 0
        indices = None
        for _ in range(args.repeats):
            _reset_peak()
            t0 = time.perf_counter()
            indices = tool.select(x, args.k)
            times.append(time.perf_counter() - t0)
            peak = max(peak, _peak_rss_bytes())
        result = {
            "times_s": times,
            "peak_rss_bytes": peak,
            "rss_before_bytes": base_rss,
            "indices": [int(i) for i in indices],
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        }
    with open(args.out, "w") as f:
        json.dump(result, f)


def _zcore(args) -> None:
    """goldener's ZCore tool on ``x`` of IN.npz: one timed call (its RNG is seeded)."""
    import torch
    from goldener.select import GoldZCoreSelectionTool

    x = torch.from_numpy(np.load(args.inp)["x"])
    tool = GoldZCoreSelectionTool(
        "cpu", n_random_anchors=args.samples, n_redundancy=args.redundancy, random_state=0
    )
    _reset_peak()
    t0 = time.perf_counter()
    indices = tool.select(x, args.k)
    seconds = time.perf_counter() - t0
    with open(args.out, "w") as f:
        json.dump(
            {
                "seconds": seconds,
                "samples": args.samples,
                "redundancy": args.redundancy,
                "peak_rss_bytes": _peak_rss_bytes(),
                "indices": [int(i) for i in indices],
                "threads": torch.get_num_threads(),
            },
            f,
        )


if __name__ == "__main__":
    main()
