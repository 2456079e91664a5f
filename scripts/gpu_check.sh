#!/usr/bin/env bash
# One-shot accelerator check: kernel tests on the GPU, then k-center benchmarks.
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
bench() {
  python3 - "$@" <<'PY'
import argparse, json, os, sys
from goldener_jax.benchmarks import kcenter
p = argparse.ArgumentParser(); kcenter.add_arguments(p)
args = p.parse_args(sys.argv[1:])
r = kcenter.run(args)
out = os.environ.get("OUT")
if out:
    name = f"kcenter_{args.n}_{args.d}_{args.k}_{args.dtype}.json"
    open(os.path.join(out, name), "w").write(json.dumps(r, indent=2))
PY
}
bench --n 1000000 --d 256 --k 200 --dtype f32 --numpy-steps 5
bench --n 10000000 --d 768 --k 1000 --dtype bf16 --numpy-steps 0 --repeats 2
