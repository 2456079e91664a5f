"""ZCore scores: subspace samples per second; the compiled CPU walk vs the XLA window search vs
the XLA brute force (same run), vs NumPy (same run) and goldener 7.0.0's tool.

``--impl native`` (the default where the extension is built): ``zcore_run(impl="native")`` runs
all ``--samples`` subspace samples over ``[n, d]`` and its wall time is measured whole (sorted
tables, draws, grids and walks). ``--impl xla``: the window search in per-dimension sorted order
runs ``--measure-samples`` samples after one compiling chunk; its time is the build of the sorted
tables plus the per-sample time extrapolated linearly to ``--samples`` (labelled as such), and the
samples a window cannot prove (redone by brute force) are counted. With the native path, the XLA
window search also runs ``--xla-samples`` samples in the same process for the ratio. The
brute-force path (one ``[chunk, n]`` pass per sample and ``top_k`` over ``n``) runs
``--old-samples`` samples in the same process.
The NumPy baseline is the authors' loop (one full argsort per sample) on ``--numpy-samples``
samples of the same data, timed in this process. With ``--gold-python`` goldener's
``GoldZCoreSelectionTool`` runs (its own venv, a fresh process) on a size it can finish
(``--gold-n`` x ``--gold-d``, ``--gold-samples``), and the kernel is timed on the same data.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from goldener_jax import kernels as gk
from goldener_jax.benchmarks._machine import machine_summary, peak_rss_bytes, reset_peak_rss
from goldener_jax.kernels import zcore as zc


def add_arguments(parser) -> None:
    from goldener_jax.cli import int_at_least

    count, nonneg = int_at_least(1), int_at_least(0)

    parser.add_argument("--n", type=count, default=50_000, help="points")
    parser.add_argument("--d", type=count, default=256, help="dimensions")
    parser.add_argument("--samples", type=count, default=1_000_000, help="subspace samples")
    parser.add_argument(
        "--impl", choices=["auto", "native", "xla"], default="auto",
        help="the kernel timed: native (compiled CPU walk; auto where built) or xla",
    )  # fmt: skip
    parser.add_argument(
        "--measure-samples", type=nonneg, default=None,
        help="samples actually timed (0: all; default all for native, 8192 for xla)",
    )  # fmt: skip
    parser.add_argument(
        "--xla-samples", type=nonneg, default=4096,
        help="with --impl native: XLA window-search samples timed for the ratio (0: skip)",
    )  # fmt: skip
    parser.add_argument(
        "--old-samples", type=nonneg, default=1024, help="brute-force path samples (0: skip)"
    )
    parser.add_argument("--redundancy", type=count, default=1000, help="neighbours penalised")
    parser.add_argument("--variant", choices=["paper", "goldener"], default="paper")
    parser.add_argument("--chunk", type=count, default=256, help="samples per kernel call")
    parser.add_argument("--numpy-samples", type=nonneg, default=64, help="NumPy baseline samples")
    parser.add_argument("--gold-python", default=None, help="python of the goldener 7.0.0 venv")
    parser.add_argument("--gold-n", type=count, default=5000)
    parser.add_argument("--gold-d", type=count, default=64)
    parser.add_argument("--gold-samples", type=count, default=1000)
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and keys (0)")


def _numpy_zcore_seconds(x: np.ndarray, samples: int, redundancy: int, rng) -> float:
    """The authors' loop (L1, exponent 4, full argsort): seconds per sample."""
    lo, med, hi = x.min(0), np.median(x, 0), x.max(0)
    scores = rng.uniform(size=len(x))
    t0 = time.perf_counter()
    for _ in range(samples):
        dims = rng.choice(x.shape[1], 2, replace=False)
        width = hi[dims] - lo[dims]
        anchor = np.where(
            width > 0, rng.triangular(lo[dims], med[dims], hi[dims] + (width == 0)), lo[dims]
        )
        sub = x[:, dims]
        nearest = int(np.argmin(np.abs(sub - anchor).sum(1)))
        scores[nearest] += 1
        dist = np.abs(sub - sub[nearest]).sum(1)
        order = np.argsort(dist)[1 : redundancy + 1]
        w = 1.0 / (dist[order] + 1e-8) ** 4
        scores[order] -= w / w.sum()
    return (time.perf_counter() - t0) / max(1, samples)


def _time_kernel(x, samples: int, args, widths="auto") -> dict:
    """Times ``samples`` subspace samples of the XLA kernel after a compiling chunk;
    ``widths=None``: brute force over all rows for every sample."""
    opts = dict(
        chunk=args.chunk, variant=args.variant, num_redundancy=args.redundancy, impl="xla",
        widths=widths,
    )  # fmt: skip
    state = gk.zcore_init(x, jax.random.key(args.seed), variant=args.variant)
    t0 = time.perf_counter()
    state, _ = zc.zcore_run_with_stats(state, x, args.chunk, **opts)  # compiles
    state.scores.block_until_ready()
    first = time.perf_counter() - t0
    tables = 0.0
    auto = zc.default_widths(x.shape[0], 2, args.redundancy)
    if widths is not None and auto is not None:
        t0 = time.perf_counter()
        jax.block_until_ready(zc.window_tables(x, auto))
        tables = time.perf_counter() - t0
    t0 = time.perf_counter()
    state, stats = zc.zcore_run_with_stats(state, x, samples, **opts)
    state.scores.block_until_ready()
    seconds = time.perf_counter() - t0 - tables  # the tables are built again inside the run
    return {
        "first_chunk_s": first,
        "tables_s": tables,
        "measured_s": seconds,
        "per_sample_s": seconds / samples,
        "fallbacks": stats,
        "scores": state.scores,
    }


def _time_native(x, samples: int, args) -> dict:
    """Wall time of ``zcore_run(impl="native")`` over ``samples`` samples, everything included
    (sorted tables, draws, grids, walks), after a first call of ``chunk`` samples that compiles
    the draws (as the XLA path's first chunk)."""
    state = gk.zcore_init(x, jax.random.key(args.seed), variant=args.variant)
    opts = dict(
        chunk=args.chunk, variant=args.variant, num_redundancy=args.redundancy, impl="native"
    )
    t0 = time.perf_counter()
    gk.zcore_run(state, x, args.chunk, **opts).scores.block_until_ready()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    state = gk.zcore_run(state, x, samples, **opts)
    state.scores.block_until_ready()
    seconds = time.perf_counter() - t0
    return {
        "first_chunk_s": first,
        "tables_s": 0.0,
        "measured_s": seconds,
        "per_sample_s": seconds / samples,
        "fallbacks": {},
        "scores": state.scores,
    }


def _impl(args) -> str:
    if args.impl == "auto":
        return "native" if zc.native_status()[0] else "xla"
    return args.impl


def run(args) -> dict:
    n, d = args.n, args.d
    x = jax.random.normal(jax.random.key(args.seed), (n, d), jnp.float32)
    impl = _impl(args)
    wanted = args.measure_samples
    if wanted is None:
        wanted = 0 if impl == "native" else 8192
    measure = args.samples if wanted <= 0 else min(args.samples, wanted)
    reset_peak_rss()
    new = _time_native(x, measure, args) if impl == "native" else _time_kernel(x, measure, args)
    peak = peak_rss_bytes()
    per_sample = new["per_sample_s"]
    fb = new["fallbacks"]
    result = {
        "benchmark": "zcore",
        "n": n,
        "d": d,
        "samples": args.samples,
        "measured_samples": measure,
        "extrapolated": measure < args.samples,
        "redundancy": args.redundancy,
        "variant": args.variant,
        "impl": impl,
        "chunk": args.chunk,
        "widths": zc.default_widths(n, 2, args.redundancy),
        "first_chunk_s": new["first_chunk_s"],
        "tables_s": new["tables_s"],
        "measured_s": new["measured_s"],
        "per_sample_s": per_sample,
        "total_s": new["tables_s"] + per_sample * args.samples,
        "samples_per_s": 1.0 / per_sample,
        "anchor_fallbacks": fb.get("anchor_fallbacks", 0),
        "redundancy_fallbacks": fb.get("redundancy_fallbacks", 0),
        "peak_rss_bytes": peak,
        "finite_scores": bool(np.isfinite(np.asarray(new["scores"])).all()),
        "machine": machine_summary(),
    }
    if impl == "native" and args.xla_samples > 0:
        xla = _time_kernel(x, min(args.samples, args.xla_samples), args)
        result["xla_per_sample_s"] = xla["per_sample_s"]
        result["xla_tables_s"] = xla["tables_s"]
        result["xla_total_s"] = xla["tables_s"] + xla["per_sample_s"] * args.samples
        result["xla_measured_samples"] = min(args.samples, args.xla_samples)
        result["speedup_vs_xla"] = result["xla_total_s"] / result["total_s"]
    if args.old_samples > 0:
        old = _time_kernel(x, args.old_samples, args, widths=None)
        result["old_per_sample_s"] = old["per_sample_s"]
        result["old_total_s"] = old["per_sample_s"] * args.samples
        result["speedup_vs_old"] = result["old_total_s"] / result["total_s"]
    if args.numpy_samples > 0:
        x_np = np.asarray(x)
        np_per = _numpy_zcore_seconds(
            x_np, args.numpy_samples, args.redundancy, np.random.default_rng(0)
        )
        result["numpy_per_sample_s"] = np_per
        result["speedup_vs_numpy"] = np_per / per_sample
    if args.gold_python:
        result["goldener"] = _vs_goldener(args)
    _print(result)
    return result


def _vs_goldener(args) -> dict:
    here = os.path.dirname(os.path.abspath(__file__))
    script = os.path.join(here, "..", "..", "scripts", "goldener_ref.py")
    rng = np.random.default_rng(args.seed)
    x = rng.normal(size=(args.gold_n, args.gold_d)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = os.path.join(tmp, "x.npz"), os.path.join(tmp, "out.json")
        np.savez(inp, x=x)
        cmd = [
            args.gold_python,
            script,
            "zcore",
            inp,
            out,
            "--k",
            "100",
            "--samples",
            str(args.gold_samples),
            "--redundancy",
            str(args.redundancy),
        ]
        subprocess.run(cmd, check=True, capture_output=True)
        with open(out) as f:
            gold = json.load(f)

    class _A:
        pass

    a = _A()
    a.__dict__.update(vars(args))
    timer = _time_native if _impl(args) == "native" else _time_kernel
    ours = timer(jnp.asarray(x), args.gold_samples, a)
    ours = ours["tables_s"] + ours["measured_s"]
    return {
        "n": args.gold_n,
        "d": args.gold_d,
        "samples": args.gold_samples,
        "goldener_s": gold["seconds"],
        "ours_s": ours,
        "speedup": gold["seconds"] / ours,
        "goldener_peak_rss_bytes": gold["peak_rss_bytes"],
    }


def _print(r: dict) -> None:
    m = r["machine"]
    print(
        f"ZCore  n={r['n']:,} d={r['d']} samples={r['samples']:,} redundancy={r['redundancy']} "
        f"variant={r['variant']} impl={r['impl']} chunk={r['chunk']}"
    )
    print(f"  machine: {m['cpu']}, {m['cores']} cores, jax {m['jax']} on {m['backend']}")
    how = (
        f"extrapolated from {r['measured_samples']:,} measured samples"
        if r["extrapolated"]
        else "measured"
    )
    if r["impl"] == "native":
        first = r["first_chunk_s"]
        print(f"  first call ({r['chunk']} samples, compiles the draws): {first:.2f} s")
        print(
            f"  compiled CPU walk: {r['samples']:,} samples in {r['total_s']:.1f} s ({how}, "
            f"wall time of zcore_run: sorted tables, draws, grids, walks); "
            f"{r['samples_per_s']:,.0f} samples/s; peak RSS {r['peak_rss_bytes'] / 1e9:.2f} GB"
        )
        if "xla_total_s" in r:
            print(
                f"  XLA window search: {r['xla_total_s']:.0f} s (extrapolated from "
                f"{r['xla_measured_samples']:,} samples) -> compiled walk "
                f"{r['speedup_vs_xla']:.1f}x faster"
            )
    else:
        print(f"  first chunk (compile + run): {r['first_chunk_s']:.2f} s")
        print(
            f"  {r['samples']:,} samples: {r['total_s']:.1f} s ({how}; sorted tables "
            f"{r['tables_s']:.1f} s); {r['samples_per_s']:,.0f} samples/s; "
            f"peak RSS {r['peak_rss_bytes'] / 1e9:.2f} GB"
        )
        m = r["measured_samples"]
        print(
            f"  window widths {r['widths']}: redone by brute force {r['anchor_fallbacks']} / "
            f"{m} nearest points ({r['anchor_fallbacks'] / m:.2%}), "
            f"{r['redundancy_fallbacks']} / {m} neighbour sets "
            f"({r['redundancy_fallbacks'] / m:.2%})"
        )
    if "old_per_sample_s" in r:
        print(
            f"  brute-force path (before the window search): {r['old_per_sample_s'] * 1e3:.2f} "
            f"ms/sample -> {r['old_total_s']:.0f} s; "
            f"{r['impl']} {r['speedup_vs_old']:.1f}x faster"
        )
    if "numpy_per_sample_s" in r:
        print(
            f"  NumPy loop (authors' algorithm): {r['numpy_per_sample_s'] * 1e3:.2f} ms/sample "
            f"-> kernel {r['speedup_vs_numpy']:.1f}x faster"
        )
    if "goldener" in r:
        g = r["goldener"]
        print(
            f"  goldener 7.0.0 GoldZCoreSelectionTool at n={g['n']:,} d={g['d']} "
            f"samples={g['samples']:,}: {g['goldener_s']:.2f} s vs {g['ours_s']:.3f} s "
            f"-> {g['speedup']:.1f}x faster"
        )
