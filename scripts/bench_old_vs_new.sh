#!/usr/bin/env bash
# Same-run comparison of two checkouts (OLD, NEW) of goldener-jax: k-center and ZCore benches,
# alternating old / new so that machine drift hits both. Each checkout runs from its own source
# (PYTHONPATH), with the same venv.
#   usage: OLD=/path/to/old/checkout NEW=/path/to/new/checkout OUT=dir bash scripts/bench_old_vs_new.sh
set -u
OLD=${OLD:?a checkout of the old commit (git worktree add DIR COMMIT)}
NEW=${NEW:-$(pwd)}
OUT=${OUT:-docs/results/redesign_check}; mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
PY=${PY:-$NEW/.venv/bin/python}
for rep in 1 2 3; do
  for side in old new; do
    if [ $side = old ]; then dir=$OLD; else dir=$NEW; fi
    (cd $dir && PYTHONPATH=$dir timeout 600 $PY -m goldener_jax.cli bench kcenter --n 500000 --d 256 --k 200 --repeats 3 --numpy-steps 0 --json "$OUT"/kcenter_${side}_$rep.json > "$OUT"/kcenter_${side}_$rep.log 2>&1)
  done
done
for rep in 1 2; do
  for side in old new; do
    if [ $side = old ]; then dir=$OLD; else dir=$NEW; fi
    (cd $dir && PYTHONPATH=$dir timeout 600 $PY -m goldener_jax.cli bench zcore --n 50000 --d 256 --samples 200000 --xla-samples 0 --old-samples 0 --numpy-samples 0 --json "$OUT"/zcore_${side}_$rep.json > "$OUT"/zcore_${side}_$rep.log 2>&1)
  done
done
