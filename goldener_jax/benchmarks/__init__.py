"""Benchmarks run by ``goldener-jax bench NAME``.

Each module here defines ``add_arguments(parser)`` and ``run(args) -> dict`` and is listed in
``BENCHMARKS``. Every benchmark measures its baseline in the same run and reports ratios.
"""

from __future__ import annotations

import importlib

# name -> module under goldener_jax.benchmarks; one line per benchmark.
BENCHMARKS = {
    "kcenter": "kcenter",
    "describe": "describe",
    "capture": "capture",
    "sharded": "sharded",
    "zcore": "zcore",
    "split": "split",
    "quality": "quality",
    "split-quality": "split_quality",
    "pairs": "pairs",
    "kmeans": "kmeans",
    "probcover": "probcover",
    "peers": "peers",
    "active-learning": "active_learning",
    "accel": "accel",
}


def load(name: str):
    return importlib.import_module(f"goldener_jax.benchmarks.{BENCHMARKS[name]}")
