"""Describe throughput: `describe` into a FeatureStore vs the same jitted model storing nothing.

The model is a small Linen CNN (conv stages with pooling); the extractor captures its last two
stages, fuses them (concat) and mean-pools them to one vector per sample. The baseline runs the
very same jitted step over the same batches (asynchronous dispatch, as many batches queued as
describe allows, results left on the device: nothing fetched, nothing stored). `describe` adds
reading the source, fetching the vectors to the host and writing them (TensorStore zarr v3, data
then done flag) in a writer thread that overlaps the computation of the next batch. Both are
measured in the same run, alternately, after a warm-up that compiles the step; the claim is the
median of the paired ratios (baseline time / describe time of back-to-back runs).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from functools import partial

import flax.linen as nn
import jax
import numpy as np

from goldener_jax.benchmarks import _machine


class _CNN(nn.Module):
    widths: tuple[int, ...] = (32, 64, 128)

    @nn.compact
    def __call__(self, x):
        for i, width in enumerate(self.widths):
            x = nn.relu(nn.Conv(width, (3, 3), name=f"conv_{i}")(x))
            x = nn.relu(nn.Conv(width, (3, 3), name=f"conv_{i}b")(x))
            if i < len(self.widths) - 1:
                x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        return nn.Dense(10, name="head")(x.mean(axis=(1, 2)))


def add_arguments(parser) -> None:
    from goldener_jax.cli import int_at_least

    count = int_at_least(1)

    parser.add_argument("--samples", type=count, default=2048, help="samples described")
    parser.add_argument("--batch-size", type=count, default=128)
    parser.add_argument("--image-size", type=count, default=64)
    parser.add_argument("--repeats", type=count, default=5, help="alternating timed runs of each")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--path", default=None, help="store directory (default: a temp dir)")


def _extractor(image_size: int):
    from goldener_jax.features import FeatureExtractor

    model = _CNN()
    x = np.zeros((1, image_size, image_size, 3), np.float32)
    variables = jax.jit(model.init)(jax.random.key(0), x)
    return FeatureExtractor(model=model, variables=variables, layers=["conv_1b", "conv_2b"])


@partial(jax.jit, static_argnames=("dtype",))
def _model_step(extractor, x, *, dtype: str):
    """What describe computes per batch (no mask, no key): the extractor's vectors and validity,
    cast to the store's dtype. The extractor is an argument (its variables are inputs), as in
    describe's own step."""
    vectors, valid = extractor(x)
    return vectors.astype(dtype), valid


def run(args) -> dict:
    from goldener_jax import describe

    n, bs = args.samples, args.batch_size
    rng = np.random.RandomState(0)
    data = rng.rand(n, args.image_size, args.image_size, 3).astype(np.float32)
    ex = _extractor(args.image_size)
    root = args.path or tempfile.mkdtemp(prefix="goldener-bench-describe-")
    num_batches = -(-n // bs)

    def baseline() -> float:
        t0 = time.perf_counter()
        queued = []
        for b in range(num_batches):
            x = data[b * bs : (b + 1) * bs]
            if len(x) < bs:
                x = np.concatenate([x, np.repeat(x[-1:], bs - len(x), axis=0)])
            queued.append(_model_step(ex, x, dtype=args.dtype))
            if len(queued) > 3:  # describe's depth: 2 queued writes + the batch dispatched
                jax.block_until_ready(queued.pop(0))
        jax.block_until_ready(queued)
        return time.perf_counter() - t0

    def stored(i: int) -> float:
        path = f"{root}/store-{i}"
        shutil.rmtree(path, ignore_errors=True)
        t0 = time.perf_counter()
        describe(data, ex, path, batch_size=bs, dtype=args.dtype, progress=False)
        return time.perf_counter() - t0

    # Warm-up: compiles the step once for both (describe reuses the module-level jitted step).
    baseline()
    stored(-1)
    base_times, store_times = [], []
    for i in range(args.repeats):
        base_times.append(baseline())
        store_times.append(stored(i))
    check = describe(data, ex, f"{root}/store-0", dtype=args.dtype, progress=False)
    assert check.is_complete()
    dim = check.dim
    if args.path is None:
        shutil.rmtree(root, ignore_errors=True)

    base, store = float(np.median(base_times)), float(np.median(store_times))
    # Each describe run follows its baseline run: the median of these paired ratios is the
    # figure least disturbed by other load on a shared machine.
    paired = float(np.median(np.asarray(base_times) / np.asarray(store_times)))
    result = {
        "benchmark": "describe",
        "samples": n,
        "batch_size": bs,
        "image_size": args.image_size,
        "dim": dim,
        "dtype": args.dtype,
        "repeats": args.repeats,
        "baseline_s": base_times,
        "describe_s": store_times,
        "baseline_samples_per_s": n / base,
        "describe_samples_per_s": n / store,
        "ratio": base / store,
        "ratio_paired_median": paired,
        "ratio_best": min(base_times) / min(store_times),
        "machine": _machine.machine_summary(),
    }
    print(
        f"describe throughput: {n} samples of {args.image_size}x{args.image_size}x3, "
        f"batch {bs}, vectors [{n}, {dim}] {args.dtype}, median of {args.repeats}"
    )
    print(f"  jitted model, nothing stored : {n / base:10.1f} samples/s  ({base:.3f} s)")
    print(f"  describe into a FeatureStore : {n / store:10.1f} samples/s  ({store:.3f} s)")
    print(
        f"  ratio describe / baseline    : {paired:10.3f}  (median of {args.repeats} paired "
        f"runs; ratio of medians {base / store:.3f}, of bests "
        f"{min(base_times) / min(store_times):.3f})"
    )
    print(
        f"  machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, "
        f"backend {result['machine']['backend']}"
    )
    return result
