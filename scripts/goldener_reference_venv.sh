#!/usr/bin/env bash
# Makes (once) a separate venv with goldener 7.0.0 for parity tests and side-by-side benchmarks,
# and prints its python. goldener is never a dependency of goldener-jax.
#   usage: GOLDENER_PYTHON=$(bash scripts/goldener_reference_venv.sh)
#   env:   GOLDENER_REF_VENV  where to put it (default: <system temp dir>/goldener-ref-venv)
# goldener imports torchvision (through pixeltable); PyPI's torchvision does not load beside the
# torch 2.13.0 CPU build, so on x86_64 this pins the matching pair torch 2.14.1 / torchvision 0.29.1.
set -euo pipefail
venv=${GOLDENER_REF_VENV:-$(python3 -c "import tempfile; print(tempfile.gettempdir())")/goldener-ref-venv}
if ! "$venv/bin/python" -c "import goldener.select" >/dev/null 2>&1; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q --upgrade pip >&2
  if [ "$(uname -m)" = "x86_64" ]; then
    "$venv/bin/pip" install -q "torch==2.14.1" "torchvision==0.29.1" "goldener==7.0.0" >&2
  else
    "$venv/bin/pip" install -q "torch==2.9.1" "torchvision==0.24.1" "goldener==7.0.0" >&2
  fi
  "$venv/bin/python" -c "import goldener.select" >&2
fi
echo "$venv/bin/python"
