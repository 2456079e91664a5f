"""The one compiled part: kernels/_zcore_cpu.cpp, the CPU walk behind ZCore's default path.

Everything else is configured in pyproject.toml. The extension is optional: without a C++
compiler the install still succeeds and ZCore runs its XLA kernel instead
(``goldener_jax.kernels.zcore.native_status()`` says which and why).
"""

import sys

from setuptools import Extension, setup

if sys.platform == "win32":
    flags = ["/O2", "/fp:precise", "/std:c++17"]
else:
    # No fused multiply-add contraction: distances round exactly as the XLA kernel's and numpy's.
    flags = ["-O3", "-std=c++17", "-ffp-contract=off", "-fno-math-errno"]

setup(
    ext_modules=[
        Extension(
            "goldener_jax.kernels._zcore_cpu",
            sources=["kernels/_zcore_cpu.cpp"],
            language="c++",
            extra_compile_args=flags,
            optional=True,
        )
    ]
)
