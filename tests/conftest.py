"""Every test process sees 8 CPU devices, so a sharded case is an ordinary pytest item.

Single-device code runs on the first device as before (``jax.devices()[0]`` is the default
device); a test that wants a mesh builds one with ``goldener_jax.kernels.make_mesh()`` (all 8)
or over a slice of ``jax.devices()``. The count must be set before JAX starts its backend, which
is why it sits here, at collection time.
"""

import jax

jax.config.update("jax_num_cpu_devices", 8)
