#!/usr/bin/env bash
# One-shot accelerator check: kernel tests on the GPU, then the k-center benchmark and
# `bench accel` (k-center naive/pruned, kNN, k-means at 10M x 768 bf16, bandwidth shares).
# Runs on a machine whose python already has jax (with CUDA), flax, chex, hypothesis, pytest and
# numpy; only the kernels are needed, so they are staged under /tmp/gj without installing.
set -uo pipefail
stage=/tmp/gj
rm -rf "$stage" && mkdir -p "$stage/goldener_jax"
cp -r kernels "$stage/goldener_jax/kernels"
cp -r goldener_jax/benchmarks "$stage/goldener_jax/benchmarks"
: > "$stage/goldener_jax/__init__.py"
repo=$PWD
export PYTHONPATH="$stage:$repo/tests" PYTHONUNBUFFERED=1
cd /tmp  # the checkout's own goldener_jax/ must not shadow the staged package
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import jax; print('jax', jax.__version__, jax.devices())"
timeout 300 python3 -m pytest -q -x -p no:cacheprovider --rootdir "$repo/tests" \
  "$repo/tests/test_distance.py" "$repo/tests/test_kcenter.py" "$repo/tests/test_greedy.py" 2>&1 \
  | tail -n 8
bench() {  # bench NAME ARGS...: goldener_jax.benchmarks.NAME, JSON under $OUT
  python3 - "$@" <<'PY'
import argparse, importlib, json, os, sys
name, rest = sys.argv[1], sys.argv[2:]
module = importlib.import_module(f"goldener_jax.benchmarks.{name}")
p = argparse.ArgumentParser(); module.add_arguments(p)
args = p.parse_args(rest)
r = module.run(args)
out = os.environ.get("OUT")
if out:
    tag = "_".join(str(getattr(args, a)) for a in ("n", "d", "k", "dtype") if hasattr(args, a))
    open(os.path.join(out, f"{name}_{tag}.json"), "w").write(json.dumps(r, indent=2))
PY
}
bench kcenter --n 1000000 --d 256 --k 200 --dtype f32 --numpy-steps 5
# N = 10M, d = 768, bf16, 1,000 Gaussians: k-center naive / pruned, kNN, k-means, each with its
# share of the measured read bandwidth (goldener_jax/benchmarks/accel.py).
ACCEL_ARGS=${ACCEL_ARGS:-}  # e.g. "--n 3001 --d 16" for a dry run on a CPU
timeout 420 bash -c "$(declare -f bench); bench accel $ACCEL_ARGS"
