"""The ``goldener-jax`` command."""

from __future__ import annotations

import argparse
import json
import sys


def _build_parser() -> argparse.ArgumentParser:
    from goldener_jax import benchmarks

    parser = argparse.ArgumentParser(
        prog="goldener-jax",
        description="Decide which data to label, train on, validate on and watch.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the end-to-end demo on scikit-learn's bundled digits")
    demo.add_argument("--budget", type=float, default=0.05, help="fraction of the pool to select")
    demo.add_argument("--seeds", type=int, default=5, help="random baselines to compare with")

    bench = sub.add_parser("bench", help="benchmarks (baselines measured in the same run)")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    for name in benchmarks.BENCHMARKS:
        module = benchmarks.load(name)
        p = bench_sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        p.add_argument("--json", dest="json_out", default=None, help="also write results here")
        module.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    if args.command == "demo":
        from goldener_jax import demo

        demo.run(budget=args.budget, seeds=args.seeds)
        return 0
    if args.command == "bench":
        from goldener_jax import benchmarks

        result = benchmarks.load(args.bench).run(args)
        if args.json_out:
            with open(args.json_out, "w") as f:
                json.dump(result, f, indent=2)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
