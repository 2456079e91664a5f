"""Peak-memory bounds at sizes where an N x N float32 matrix could never fit.

Each case runs in a fresh subprocess; the worker compiles first, then measures the peak resident
memory of one call above the resident memory before it (``VmHWM`` after a reset).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("_memory_worker.py")
MB = 1 << 20


def _measure(*args) -> dict:
    out = subprocess.run(
        [sys.executable, str(WORKER), *map(str, args)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not result["reset"]:
        pytest.skip("this kernel does not allow resetting the peak RSS (/proc/self/clear_refs)")
    return result


@pytest.mark.slow
@pytest.mark.parametrize("kernel", ["kcenter", "kcenter_cosine", "kcenter_anchors"])
def test_k_center_extra_memory_is_o_n(kernel):
    n, d = 200_000, 64  # an N x N float32 matrix would need 160 GB
    r = _measure(kernel, n, d, 50, 64)
    # O(N) state (a few N-vectors) plus small blocks: far below one more copy of the data.
    assert r["extra"] < 0.25 * r["data"] + 16 * MB, r


@pytest.mark.slow
def test_farthest_point_extra_memory_is_one_block():
    n, d, block = 20_000, 16, 256  # N x N would need 1.6 GB; one block is 20 MB
    r = _measure("farthest", n, d, 50, block)
    assert r["extra"] < 1.5 * block * n * 4 + 16 * MB, r
