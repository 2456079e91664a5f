"""Times the pieces of one k-center step on the current backend (profiling aid).

    python scripts/profile_kcenter_step.py --n 1000000 --d 256 --dtype bf16

Prints ms per call and effective GB/s for: the mat-vec with Precision.HIGHEST, with the default
precision, an elementwise multiply-and-sum, the argmax + minimum update alone, and 20 steps of the
library's kernel.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from goldener_jax import kernels as gk

p = argparse.ArgumentParser()
p.add_argument("--n", type=int, default=1_000_000)
p.add_argument("--d", type=int, default=256)
p.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
p.add_argument("--steps", type=int, default=20)
a = p.parse_args()
dt = {"f32": jnp.float32, "bf16": jnp.bfloat16}[a.dtype]
x = jax.random.normal(jax.random.key(0), (a.n, a.d), jnp.float32).astype(dt)
v = x[3]
md = jnp.zeros((a.n,), jnp.float32)
nbytes = x.size * x.dtype.itemsize


def bench(name, fn, *args, per=1):
    f = jax.jit(fn)
    jax.block_until_ready(f(*args))
    ts = []
    for _ in range(5):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        ts.append(time.perf_counter() - t0)
    t = float(np.median(ts)) / per
    print(f"{name:<34} {t * 1e3:8.3f} ms   {nbytes / t / 1e9:8.1f} GB/s")


hi = jax.lax.Precision.HIGHEST
bench(
    "dot HIGHEST",
    lambda x, v: jnp.dot(x, v, precision=hi, preferred_element_type=jnp.float32),
    x,
    v,
)
bench("dot DEFAULT", lambda x, v: jnp.dot(x, v, preferred_element_type=jnp.float32), x, v)
bench("sum(x*v) f32", lambda x, v: jnp.sum(x.astype(jnp.float32) * v.astype(jnp.float32), 1), x, v)
bench(
    "argmax+min (no x read)", lambda m, u: jnp.minimum(m, u).at[jnp.argmax(m)].set(-jnp.inf), md, md
)
st = gk.kcenter_init(x, a.steps + 1)
bench(
    f"kcenter_run {a.steps} steps (per step)",
    lambda s, x: gk.kcenter_run(s, x).selected,
    st,
    x,
    per=a.steps,
)
print(jax.devices())


# Whole loops of `steps` steps with candidate mat-vec forms (what the kernel's while_loop runs).
def loop(form):
    def run(x, sq, shift):
        def body(i, md):
            idx = jnp.min(jnp.where(md == jnp.max(md), jnp.arange(a.n), a.n))
            vv = x[idx].astype(jnp.float32) - shift
            xv = vv.astype(x.dtype)
            if form == "highest":
                dots = jnp.dot(x, xv, precision=hi, preferred_element_type=jnp.float32)
            elif form == "default":
                dots = jnp.dot(x, xv, preferred_element_type=jnp.float32)
            else:  # matrix form [n, d] x [d, 1]
                dots = jnp.dot(x, xv[:, None], preferred_element_type=jnp.float32)[:, 0]
            dist = sq - 2.0 * (dots - shift @ vv) + vv @ vv
            return jnp.minimum(md, dist).at[idx].set(-jnp.inf)

        return jax.lax.fori_loop(0, a.steps, body, sq)

    return run


sq = jnp.sum(jnp.square(x.astype(jnp.float32)), 1)
shift = jnp.zeros((a.d,), jnp.float32)
for form in ("highest", "default", "matrix"):
    bench(f"loop {form} (per step)", loop(form), x, sq, shift, per=a.steps)
