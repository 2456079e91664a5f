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


@pytest.mark.parametrize("kernel", ["kcenter_wide", "kmeans_wide"])
def test_wide_rows_are_not_copied(kernel):
    # 512 rows of 131,072 floats (256 MB): XLA:CPU's one-shot column sum (the mean row) and
    # row sums of x - mean held a whole copy of x and a quarter of it (measured); blocked, the
    # extra is the O(n + k d) state and small blocks.
    r = _measure(kernel, 512, 131_072, 4)
    assert r["extra"] < 0.15 * r["data"] + 16 * MB, r


def test_pair_recheck_of_wide_rows_reads_a_piece_at_a_time():
    # 64 rows of 131,072 floats (32 MB), all 2,016 pairs within the threshold: gathering every
    # candidate's two rows for the float64 recheck at once took 2 GB (4 GB in float64).
    r = _measure("pairs_wide", 64, 131_072, 0)
    assert r["n_out"] == 64 * 63 // 2
    assert r["extra"] < 4 * r["data"] + 256 * MB, r


@pytest.mark.slow
def test_farthest_point_extra_memory_is_one_block():
    n, d, block = 20_000, 16, 256  # N x N would need 1.6 GB; one block is 20 MB
    r = _measure("farthest", n, d, 50, block)
    assert r["extra"] < 1.5 * block * n * 4 + 16 * MB, r


def _temp_bytes(lowered) -> int:
    analysis = lowered.compile().memory_analysis()
    if analysis is None:
        pytest.skip("this backend reports no compiled memory analysis")
    return analysis.temp_size_in_bytes


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_compiled_k_center_temporaries_are_o_n(metric):
    """XLA's own accounting of the compiled executables, at N = 4M, d = 256 (4 GB of vectors, an
    N x N matrix would be 64 TB): temporaries stay a few N-vectors, never a copy of x."""
    import jax
    import jax.numpy as jnp
    from goldener_jax.kernels import _checks
    from goldener_jax.kernels import kcenter as kc

    n, d, k = 4_000_000, 256, 100
    x = jax.ShapeDtypeStruct((n, d), jnp.float32)
    anchors = jax.ShapeDtypeStruct((500, d), jnp.float32)
    budget = 8 * 4 * n  # eight float32 N-vectors
    assert _temp_bytes(_checks._all_finite.lower(x)) < budget
    init = kc._init.lower(x, None, mesh=None, n=n, k=k, metric=metric, block_size=None)
    assert _temp_bytes(init) < budget
    with_anchors = kc._init.lower(x, anchors, mesh=None, n=n, k=k, metric=metric, block_size=2)
    assert _temp_bytes(with_anchors) < budget + 2 * 4 * n  # plus one [n, 2] distance block
    state = jax.eval_shape(
        lambda a: kc._init(a, None, mesh=None, n=n, k=k, metric=metric, block_size=None), x
    )
    run = kc._run.lower(state, x, jnp.int32(k), mesh=None, n=n, metric=metric)
    assert _temp_bytes(run) < budget


def test_compiled_greedy_temporaries_are_one_block():
    import jax
    import jax.numpy as jnp
    from goldener_jax.kernels import greedy

    n, d, block = 1_000_000, 64, 32
    x = jax.ShapeDtypeStruct((n, d), jnp.float32)
    init = greedy._init.lower(x, mesh=None, n=n, k=10, metric="euclidean", block_size=block)
    assert _temp_bytes(init) < 3 * block * n * 4 + 16 * 4 * n
    state = jax.eval_shape(
        lambda a: greedy._init(a, mesh=None, n=n, k=10, metric="euclidean", block_size=block), x
    )
    run = greedy._run.lower(state, x, jnp.int32(10), mesh=None, mode="farthest", metric="euclidean")
    assert _temp_bytes(run) < 3 * 16 * n * 4 + 16 * 4 * n  # one batch of recomputed rows


def test_compiled_sharded_label_issues_knn_temporaries_are_one_piece():
    """``label_issues``' kNN on a mesh spanning processes (here 8 CPU devices of one process, the
    same program): each device's temporaries are one ``[block, piece]`` distance block, the
    fetched piece of rows and the running k-lists, never a copy of the device's rows."""
    import jax
    import jax.numpy as jnp
    from goldener_jax.kernels.distance import auto_block

    from goldener_jax import curate
    from goldener_jax import kernels as gk

    mesh = gk.make_mesh()
    _, p = gk.sharding.mesh_axis(mesh)
    n, d, k, piece = 4_000_000, 256, 10, 8192  # 4 GB of rows: 512 MB per device
    rows = gk.sharding.padded_rows(n, mesh)
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(mesh.axis_names[0]))
    x = jax.ShapeDtypeStruct((rows, d), jnp.float32, sharding=sharding)
    m = rows // p
    block = auto_block(piece, m, None)
    lowered = curate._pieces_knn.lower(
        x, mesh=mesh, n=n, k=k, metric="euclidean", piece=piece, block=block
    )
    temp = _temp_bytes(lowered)
    one_piece = block * piece * 4 + piece * d * 4  # a distance block and the fetched rows
    k_lists = m * k * 8  # float32 distances + int32 ids of the device's rows
    assert temp < 1.5 * one_piece + 3 * k_lists, (temp, one_piece, k_lists)
    assert temp < 0.5 * m * d * 4, temp
