"""Machine facts and measurements shared by the benchmarks."""

from __future__ import annotations

import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np


def machine_summary() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gb = None
    try:
        with open("/proc/meminfo") as f:
            mem_gb = round(int(f.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem_gb,
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def timeit(fn, repeats: int) -> list[float]:
    """Wall times of ``fn()`` (which must block until its result is ready)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def read_bandwidth(x: jax.Array, repeats: int = 5, reads: int = 10) -> float:
    """Bytes/s of jitted mat-vecs over ``x`` (``reads`` of them in one ``fori_loop``, so dispatch
    is amortised as in a k-center run): the memory-read roofline a streaming kernel faces on this
    machine, measured on the same array. Median of ``repeats``."""
    v0 = jnp.ones((x.shape[1],), x.dtype)

    @jax.jit
    def reads_of(a, v):
        def body(_, carry):
            v, acc = carry
            r = jnp.dot(a, v, preferred_element_type=jnp.float32)
            # Each read depends on the previous one, so XLA cannot hoist or merge them.
            v = jnp.where(r[0] > 3e38, v * 2, v)
            return v, acc + r[-1]

        return jax.lax.fori_loop(0, reads, body, (v, jnp.zeros((), jnp.float32)))[1]

    reads_of(x, v0).block_until_ready()
    times = timeit(lambda: reads_of(x, v0).block_until_ready(), repeats)
    return reads * x.size * x.dtype.itemsize / float(np.median(times))


def _proc_status_bytes(field: str) -> int:
    """A memory field of ``/proc/self/status`` (``VmHWM``, ``VmRSS``) in bytes; -1 elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return -1


def peak_rss_bytes() -> int:
    """Peak resident memory of this process since the last ``reset_peak_rss`` (Linux)."""
    return _proc_status_bytes("VmHWM")


def rss_bytes() -> int:
    return _proc_status_bytes("VmRSS")


def reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
