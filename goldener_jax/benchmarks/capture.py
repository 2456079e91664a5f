"""Feature capture overhead: 3 layers + fusion + vectorize under jit vs a plain jitted apply.

The model is a small Linen CNN (three conv stages with pooling, batch norm, a dense head). The
baseline is ``jax.jit(model.apply)`` on the same batches. The measured path is a jitted
``FeatureExtractor``: the model runs once, three stage outputs are captured, resized to the
largest map and fused (concat), then vectorized (``Vectorizer(fusion="mean")`` by default, or
``--vectorizer random`` for 16 random rows per sample, ``--vectorizer mask`` for the mean of the
rows under a pixel mask, ``--vectorizer max`` for the max over rows, ``--vectorizer rows`` for
every row). Both are compiled before timing and timed alternately in the same run; the claim is
the ratio of the medians.

``mean``, ``mask``, ``max`` and ``random`` take the extractor's exact shortcuts (reduce each
captured map before fusing; compute only the drawn rows); ``rows`` cannot: it builds and returns
the full-resolution fused map ``[B, H*W, 224]``, larger than any activation of the model.
"""

from __future__ import annotations

import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from goldener_jax.benchmarks import _machine


class _CNN(nn.Module):
    widths: tuple[int, ...] = (32, 64, 128)

    @nn.compact
    def __call__(self, x):
        for i, width in enumerate(self.widths):
            x = nn.Conv(width, (3, 3), name=f"stage_{i}_conv")(x)
            x = nn.BatchNorm(use_running_average=True, name=f"stage_{i}_bn")(x)
            x = nn.relu(nn.Conv(width, (3, 3), name=f"stage_{i}")(nn.relu(x)))
            if i < len(self.widths) - 1:
                x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        return nn.Dense(10, name="head")(x.mean(axis=(1, 2)))


def add_arguments(parser) -> None:
    from goldener_jax.cli import int_at_least

    count = int_at_least(1)

    parser.add_argument("--batch-size", type=count, default=64)
    parser.add_argument("--image-size", type=count, default=32)
    parser.add_argument("--batches", type=count, default=8, help="batches per timed run")
    parser.add_argument("--repeats", type=count, default=11, help="alternating timed runs of each")
    parser.add_argument(
        "--vectorizer",
        default="mean",
        choices=("mean", "random", "mask", "max", "rows"),
        help="mean: mean of all rows of a sample; random: 16 random rows per sample; mask: "
        "mean of the rows under a random pixel mask; max: max over rows; rows: every row "
        "(builds and returns the full fused map)",
    )


def run(args) -> dict:
    from goldener_jax.features import FeatureExtractor
    from goldener_jax.vectorize import Vectorizer

    model = _CNN()
    bs, size = args.batch_size, args.image_size
    rng = np.random.RandomState(0)
    batches = [
        jnp.asarray(rng.rand(bs, size, size, 3).astype(np.float32)) for _ in range(args.batches)
    ]
    variables = jax.jit(model.init)(jax.random.key(0), batches[0])
    layers = ["stage_0", "stage_1", "stage_2"]
    vectorizer = {
        "mean": Vectorizer(fusion="mean"),
        "random": Vectorizer(random=16),
        "mask": Vectorizer(fusion="mean"),
        "max": Vectorizer(fusion="max"),
        "rows": Vectorizer(),
    }[args.vectorizer]
    ex = FeatureExtractor(model=model, variables=variables, layers=layers, vectorizer=vectorizer)
    key = jax.random.key(1) if args.vectorizer == "random" else None
    mask = None
    if args.vectorizer == "mask":
        mask = jnp.asarray(rng.rand(bs, size, size) < 0.3)

    apply = jax.jit(model.apply)
    extract = jax.jit(lambda ex, x, mask, key: ex(x, mask=mask, key=key))

    def run_baseline():
        jax.block_until_ready([apply(variables, x) for x in batches])

    def run_capture():
        jax.block_until_ready([extract(ex, x, mask, key) for x in batches])

    run_baseline()  # compile
    run_capture()
    # Alternate baseline and capture runs and compare each pair: on a shared machine the load
    # drifts, and a ratio of neighbours cancels most of it. The process's CPU time (all its
    # threads) is measured too: on a CPU backend it barely depends on other processes' load.
    wall = {"base": [], "capture": []}
    cpu = {"base": [], "capture": []}

    def timed(name, fn):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall[name].append(time.perf_counter() - t0)
        cpu[name].append(time.process_time() - c0)

    for i in range(args.repeats):
        order = [("base", run_baseline), ("capture", run_capture)]
        for name, fn in order[::-1] if i % 2 else order:  # alternate which goes first
            timed(name, fn)
    ratios = np.array(wall["capture"]) / np.array(wall["base"])
    base, cap = float(np.median(wall["base"])), float(np.median(wall["capture"]))
    overhead = float(np.median(ratios)) - 1.0
    overhead_min = min(wall["capture"]) / min(wall["base"]) - 1.0
    overhead_cpu = float(np.median(cpu["capture"]) / np.median(cpu["base"])) - 1.0
    vectors, valid = extract(ex, batches[0], mask, key)
    result = {
        "benchmark": "capture",
        "machine": _machine.machine_summary(),
        "model": "Linen CNN, widths (32, 64, 128), 2 convs + batch norm per stage",
        "layers": layers,
        "fusion": "concat",
        "vectorizer": vectorizer.config(),
        "mask": args.vectorizer == "mask",
        "batch_size": bs,
        "image_size": size,
        "batches": args.batches,
        "repeats": args.repeats,
        "fused_map_shape": [bs, size, size, sum((32, 64, 128))],
        "vectors_shape": list(vectors.shape),
        "baseline_apply_s": base,
        "capture_s": cap,
        "overhead": overhead,
        "overhead_of_minimums": overhead_min,
        "overhead_cpu_time": overhead_cpu,
        "pair_ratios": ratios.tolist(),
        "wall_s": wall,
        "cpu_s": cpu,
        "samples_per_s_baseline": bs * args.batches / base,
        "samples_per_s_capture": bs * args.batches / cap,
    }
    print(
        f"feature capture overhead on {result['machine']['cpu']} "
        f"({result['machine']['backend']}, {result['machine']['cores']} cores)\n"
        f"  batches of {bs} x {size}x{size}x3, {args.batches} batches per run, "
        f"{args.repeats} alternating runs of each (medians)\n"
        f"  plain jitted model.apply        : {base * 1e3:8.1f} ms "
        f"({result['samples_per_s_baseline']:.0f} samples/s)\n"
        f"  capture 3 layers + concat + {args.vectorizer:6s}: {cap * 1e3:8.1f} ms "
        f"({result['samples_per_s_capture']:.0f} samples/s), vectors {tuple(vectors.shape)}, "
        f"{int(np.asarray(valid).sum())} valid in the first batch\n"
        f"  overhead: {overhead * 100:+.1f}% wall (median of paired runs; "
        f"{overhead_min * 100:+.1f}% between the fastest runs), "
        f"{overhead_cpu * 100:+.1f}% process CPU time  target <= +10%"
    )
    return result
