"""Sharded-kernel checks on fake CPU devices (run as a subprocess by test_sharding.py).

The device count must be fixed before JAX initialises, so each device count is its own process.

usage: python _sharded_worker.py DEVICES TASK [ARGS...]  -> prints one JSON line (last line)

Tasks:
  equal                     sharded vs single-device k-center indices over many cases -> failures
  greedy_equal              the same for farthest / closest point
  kernels_equal             the same for herding, k-means (and its pickers), kNN, ZCore, and
                            select / split with mesh= -> failures per kernel
  retrace                   compile counts of the sharded programs
  memory N D                compiled per-device temporaries of the sharded run vs x's bytes
  ckpt_save DIR STEPS MESH  runs k-center for STEPS steps (MESH 1: on all devices, 0: no mesh),
                            saves through Checkpointer, then finishes -> final indices
  ckpt_resume DIR MESH      restores the latest checkpoint and finishes -> final indices
"""

import os
import sys

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={sys.argv[1]}"
)

import json  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from goldener_jax.kernels import sharding  # noqa: E402

from goldener_jax import kernels as gk  # noqa: E402
from goldener_jax.checkpoint import Checkpointer  # noqa: E402

assert jax.device_count() == int(sys.argv[1]), jax.devices()
TASK = sys.argv[2]
METRICS = ("euclidean", "sqeuclidean", "cosine")


def _ints(rng, n, d, lo=-3, hi=3):
    return rng.integers(lo, hi + 1, size=(n, d)).astype(np.float32)


def _cases():
    """(name, x, k, metric, anchors): random floats, sizes not divisible by 8, exact ties."""
    rng = np.random.default_rng(0)
    for n in (37, 64):
        for metric in METRICS:
            x = rng.normal(loc=2.0, size=(n, 6)).astype(np.float32)
            anchors = rng.normal(size=(5, 6)).astype(np.float32)
            k = min(n - 1, 25)
            yield f"float n={n} {metric}", x, k, metric, None
            yield f"float n={n} {metric} anchors", x, k, metric, anchors
    # bfloat16 storage.
    x = rng.normal(size=(45, 8)).astype(np.float32)
    for metric in ("euclidean", "cosine"):
        yield f"bf16 {metric}", jnp.asarray(x, jnp.bfloat16), 20, metric, None
        yield f"bf16 {metric} anchors", jnp.asarray(x, jnp.bfloat16), 20, metric, x[:3] + 0.5
    # Ties across shard boundaries: every point several times, copies on different shards
    # (n = 6 * 6 = 36 rows over 8 devices of 5 rows: copy j of point i sits at row 6 j + i).
    # Quarter-integers, each row with its negation: the column sums (hence the mean row) are
    # exact in any order of summation, so every distance is bit-identical on 1 and 8 devices and
    # the tie-breaking itself is what is compared. (With arbitrary floats, distances between
    # exact duplicates are rounding noise of the order of eps |x - mean|^2, and that noise
    # depends on the order of the mean's sum: see kernels/sharding.py.)
    half = _ints(rng, 3, 3) / 4.0
    base = np.concatenate([half, -half])
    dup = np.concatenate([base] * 6)
    for metric in METRICS:
        yield f"duplicates {metric}", dup, 30, metric, None
        yield f"duplicates {metric} anchors", dup, 30, metric, base[:2] + 0.25
    # Small integers: many exact ties in distance, not only between identical rows.
    for trial in range(2):
        n = int(rng.integers(9, 60))
        x = _ints(rng, n, int(rng.integers(1, 5)))
        for metric in METRICS:
            k = int(rng.integers(1, n))
            yield f"ints#{trial} n={n} {metric}", x, k, metric, None
            yield f"ints#{trial} n={n} {metric} anchors", x, k, metric, _ints(rng, 3, x.shape[1])
    square = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], np.float32)
    yield "square corners", square, 3, "euclidean", None
    yield "k=0", base, 0, "euclidean", None
    yield "k=0 anchors", base, 0, "euclidean", base[:1]
    yield "k=n", base, 5, "euclidean", None
    yield "k=1", dup, 1, "cosine", None


def task_equal():
    mesh = gk.make_mesh()
    failures, count = [], 0
    for name, x, k, metric, anchors in _cases():
        want = np.asarray(gk.greedy_k_center(x, k, metric=metric, anchors=anchors)).tolist()
        got = np.asarray(
            gk.greedy_k_center(x, k, metric=metric, anchors=anchors, mesh=mesh)
        ).tolist()
        count += 1
        if got != want:
            failures.append({"case": name, "want": want, "got": got})
        # Chunked init/run through the public functions, states unpadded.
        if k > 2 and count % 3 == 0:
            state = gk.kcenter_init(x, k, metric=metric, anchors=anchors, mesh=mesh)
            if state.min_dist.shape != (x.shape[0],):
                failures.append({"case": name, "padded state": list(state.min_dist.shape)})
            for chunk in (1, 0, 2):
                state = gk.kcenter_run(state, x, metric=metric, max_steps=chunk, mesh=mesh)
            state = gk.kcenter_run(state, x, metric=metric, mesh=mesh)
            if np.asarray(state.selected).tolist() != want:
                failures.append({"case": name + " chunked", "want": want, "got": state.selected})
    # A one-device mesh, and a mesh of a subset of the devices.
    x = np.random.default_rng(1).normal(size=(29, 4)).astype(np.float32)
    want = np.asarray(gk.greedy_k_center(x, 12)).tolist()
    for devices in (jax.devices()[:1], jax.devices()[:3]):
        got = np.asarray(gk.greedy_k_center(x, 12, mesh=gk.make_mesh(devices))).tolist()
        count += 1
        if got != want:
            failures.append({"case": f"{len(devices)} devices", "want": want, "got": got})
    # Pre-padded rows read per device (shard_rows of something sliceable), real length given.
    import tensorstore as ts

    x = np.random.default_rng(4).normal(size=(45, 6)).astype(np.float32)
    spec = {"driver": "zarr3", "kvstore": {"driver": "memory"}}
    store = ts.open(spec, create=True, shape=x.shape, dtype=ts.float32).result()
    store.write(x).result()
    xs = gk.shard_rows(store, mesh)
    for metric in METRICS:
        want = np.asarray(gk.greedy_k_center(x, 20, metric=metric)).tolist()
        state, xs = sharding.sharded_kcenter_init(xs, 20, mesh=mesh, metric=metric, n=45)
        state = sharding.sharded_kcenter_run(state, xs, 20, mesh=mesh, metric=metric)
        count += 1
        if xs.shape != (48, 6) or np.asarray(state.selected).tolist() != want:
            failures.append({"case": f"pre-padded {metric}", "want": want, "got": state.selected})
    return {"cases": count, "failures": [str(f) for f in failures]}


def _greedy_cases():
    """Integer data (every distance exact in float32, so bit-identical whatever the order of
    the arithmetic), sizes not divisible by 8, duplicates on different shards; random floats for
    farthest point (closest point on random floats: see kernels/sharding.py)."""
    rng = np.random.default_rng(5)
    for trial in range(2):
        n = int(rng.integers(20, 60))
        x = _ints(rng, n, int(rng.integers(2, 5)))
        for metric in METRICS:
            for mode in ("farthest", "closest"):
                yield f"ints#{trial} n={n} {metric} {mode}", x, n // 2, metric, mode, None
    dup = np.concatenate([_ints(rng, 6, 3)] * 6)
    for metric in METRICS:
        for mode in ("farthest", "closest"):
            yield f"duplicates {metric} {mode}", dup, 30, metric, mode, 4
    for n, metric in ((37, "euclidean"), (64, "cosine")):
        x = rng.normal(loc=1.0, size=(n, 6)).astype(np.float32)
        yield f"float n={n} {metric} farthest", x, 20, metric, "farthest", None


def task_greedy_equal():
    mesh = gk.make_mesh()
    failures, count = [], 0
    for name, x, k, metric, mode, block in _greedy_cases():
        fn = gk.farthest_point if mode == "farthest" else gk.closest_point
        want = np.asarray(fn(x, k, metric=metric, block_size=block)).tolist()
        got = np.asarray(fn(x, k, metric=metric, block_size=block, mesh=mesh)).tolist()
        count += 1
        if got != want:
            failures.append({"case": name, "want": want, "got": got})
    return {"cases": count, "failures": [str(f) for f in failures]}


def _duplicates(rng):
    """36 rows over 8 devices of 5: copy j of point i sits at row 6 j + i, so the copies of a
    point lie on different shards. Quarter-integers, each row with its negation: column sums are
    exact in any order."""
    half = _ints(rng, 3, 3) / 4.0
    base = np.concatenate([half, -half])
    return np.concatenate([base] * 6)


def _herding_checks(mesh, failures):
    rng = np.random.default_rng(7)
    cases = []
    for n in (37, 64):
        x = rng.normal(loc=1.0, size=(n, 5)).astype(np.float32)
        for kernel in ("linear", "rbf"):
            cases.append((f"float n={n} {kernel}", x, 20, kernel, None))
    cases.append(("float rbf block 4", x, 30, "rbf", 4))
    xb = jnp.asarray(rng.normal(size=(45, 6)), jnp.bfloat16)
    cases += [("bf16 linear", xb, 20, "linear", None), ("bf16 rbf", xb, 20, "rbf", None)]
    dup = _duplicates(rng)
    for kernel in ("linear", "rbf"):
        cases.append((f"duplicates {kernel}", dup, 30, kernel, None))
    ints = _ints(rng, 43, 3)
    cases += [("ints rbf", ints, 43, "rbf", 8), ("k=0", ints, 0, "rbf", None)]
    count = 0
    for name, x, k, kernel, block in cases:
        kw = dict(kernel=kernel, length_scale=1.5, block_size=block)
        want = np.asarray(gk.kernel_herding(x, k, **kw)).tolist()
        got = np.asarray(gk.kernel_herding(x, k, mesh=mesh, **kw)).tolist()
        count += 1
        if got != want:
            failures.append({"case": f"herding {name}", "want": want, "got": got})
        if k > 2 and count % 2 == 0:
            run_kw = dict(kernel=kernel, length_scale=1.5)
            state = gk.herding_init(x, k, mesh=mesh, **kw)
            if state.mean_kernel.shape != (x.shape[0],):
                failures.append({"case": name, "padded state": list(state.mean_kernel.shape)})
            for chunk in (1, 0, 2):
                state = gk.herding_run(state, x, max_steps=chunk, mesh=mesh, **run_kw)
            state = gk.herding_run(state, x, **run_kw)  # finished on one device
            if np.asarray(state.selected).tolist() != want:
                failures.append({"case": f"herding {name} chunked", "got": state.selected})
    return count


def _kmeans_checks(mesh, failures):
    """Seeds, assignments, medoids, typical points equal; centroids and typicality within float32
    rounding (the global sums add in another order), bit-equal where the sums are exact."""
    rng = np.random.default_rng(8)
    key = jax.random.key(11)
    dup = _duplicates(rng)
    cases = [
        ("float n=37", rng.normal(loc=1.0, size=(37, 5)).astype(np.float32), 6, False),
        ("float n=64", rng.normal(size=(64, 5)).astype(np.float32), 12, False),
        ("bf16 n=45", jnp.asarray(rng.normal(size=(45, 6)), jnp.bfloat16), 5, False),
        ("duplicates", dup, 4, True),
        ("symmetric ints", np.concatenate([h := _ints(rng, 29, 3) / 4.0, -h]), 7, True),
    ]
    for name, x, k, exact in cases:
        c1, a1 = gk.kmeans(x, k, key)
        c8, a8 = gk.kmeans(x, k, key, mesh=mesh)
        checks = {
            "seeds": (gk.kmeans_plusplus(x, k, key), gk.kmeans_plusplus(x, k, key, mesh=mesh)),
            "assignment": (a1, a8),
            "medoids": (
                gk.kmeans_medoids(x, c1, a1, num_picks=k + 3),
                gk.kmeans_medoids(x, c8, a8, num_picks=k + 3, mesh=mesh),
            ),
            "typical points": (
                gk.typical_points(x, c1, a1, num_neighbors=5, min_cluster_size=2),
                gk.typical_points(x, c1, a1, num_neighbors=5, min_cluster_size=2, mesh=mesh),
            ),
        }
        t1 = np.asarray(gk.typicality(x, a1, num_neighbors=5, block_size=8))
        t8 = np.asarray(gk.typicality(x, a1, num_neighbors=5, block_size=8, mesh=mesh))
        if exact:
            checks["centroids bits"] = (c1, c8)
            checks["typicality bits"] = (t1, t8)
        for what, (want, got) in checks.items():
            if np.asarray(want).tolist() != np.asarray(got).tolist():
                failures.append({"case": f"kmeans {name} {what}", "want": want, "got": got})
        if not np.allclose(np.asarray(c1), np.asarray(c8), rtol=1e-5, atol=1e-6):
            failures.append({"case": f"kmeans {name} centroids", "want": c1, "got": c8})
        if not np.allclose(t1, t8, rtol=1e-5, atol=0) or not np.array_equal(
            np.isinf(t1), np.isinf(t8)
        ):
            failures.append({"case": f"kmeans {name} typicality", "want": t1, "got": t8})
    # Chunked Lloyd: seeded on 8 devices, one iteration there, the rest on one device.
    x = cases[0][1]
    state = gk.kmeans_init(x, 6, key, mesh=mesh)
    state = gk.kmeans_run(state, x, max_steps=1, mesh=mesh)
    state = gk.kmeans_run(state, x, max_steps=0, mesh=mesh)
    state = gk.kmeans_run(state, x)
    want = gk.kmeans_assign(x, gk.kmeans(x, 6, key)[0])
    got = gk.kmeans_assign(x, state.centroids, mesh=mesh)
    if np.asarray(want).tolist() != np.asarray(got).tolist():
        failures.append({"case": "kmeans chunked", "want": want, "got": got})
    return len(cases) + 1


def _knn_checks(mesh, failures):
    """Indices and distances equal: integer data (exact distances, many ties), duplicates on
    different shards, queries given, every row (k = n - 1), random floats."""
    rng = np.random.default_rng(9)
    ints = _ints(rng, 37, 3)
    dup = _duplicates(rng)
    floats = rng.normal(size=(45, 6)).astype(np.float32)
    cases = [
        ("ints euclidean", ints, 9, dict(metric="euclidean")),
        ("ints sqeuclidean keep self", ints, 9, dict(metric="sqeuclidean", exclude_self=False)),
        ("ints cosine queries", ints, 9, dict(metric="cosine", queries=_ints(rng, 11, 3))),
        ("duplicates block 4", dup, 8, dict(block_size=4)),
        ("duplicates cosine k = n - 1", dup, 35, dict(metric="cosine")),
        ("floats", floats, 6, dict()),
    ]
    for name, x, k, kw in cases:
        d1, i1 = (np.asarray(a) for a in gk.knn(x, k, **kw))
        d8, i8 = (np.asarray(a) for a in gk.knn(x, k, mesh=mesh, **kw))
        # Float data: a product of another shape can round the last bit of a distance
        # differently (kernels/knn.py); integer data: every distance exact, so bit-equal.
        same_d = np.allclose(d1, d8, rtol=1e-6) if name == "floats" else np.array_equal(d1, d8)
        if not (same_d and np.array_equal(i1, i8)):
            failures.append({"case": f"knn {name}", "want": (d1, i1), "got": (d8, i8)})
    return len(cases)


def _select_checks(mesh, failures):
    """select / split with mesh= equal the same calls without (labels, chunks, groups)."""
    import dataclasses

    from goldener_jax import select, split
    from goldener_jax.select import METHODS, register_method

    rng = np.random.default_rng(10)
    x = rng.normal(size=(90, 5)).astype(np.float32)
    labels = rng.integers(0, 3, size=90)
    key = jax.random.key(5)
    calls = [
        ("kcenter labels chunks", dict(method="kcenter", labels=labels, chunk_size=40), 0.2),
        ("herding", dict(method="herding"), 12),
        ("zcore", dict(method="zcore", method_options={"num_samples": 300, "chunk": 64}), 10),
        ("kmeans_medoids", dict(method="kmeans_medoids", metric="cosine"), 7),
        ("typiclust", dict(method="typiclust", method_options={"num_neighbors": 5}), 6),
        ("random", dict(method="random"), 9),
    ]
    for name, kw, size in calls:
        want = select(x, size, key=key, **kw)
        got = select(x, size, key=key, mesh=mesh, **kw)
        if want.indices.tolist() != got.indices.tolist() or want.config != got.config:
            failures.append({"case": f"select {name}", "want": want.indices, "got": got.indices})
        if name == "kcenter labels chunks" and want.coverage_radius != got.coverage_radius:
            failures.append({"case": "select coverage", "want": want.coverage_radius})
    groups = np.arange(90) // 3
    sets = {"train": 0.6, "val": 0.2, "test": 0.2}
    want = split(x, sets, key=key, groups=groups, labels=labels, manifest_path=False)
    got = split(x, sets, key=key, groups=groups, labels=labels, manifest_path=False, mesh=mesh)
    if {k: v.tolist() for k, v in want.items()} != {k: v.tolist() for k, v in got.items()}:
        failures.append({"case": "select split kcenter groups", "want": want, "got": got})
    # Clear errors: a method without a sharded kernel, split(method="auto").
    plain = dataclasses.replace(METHODS["kcenter"], name="plain_kcenter", shardable=False)
    register_method(plain)
    for fn, args, match in (
        (select, (x, 5), "has no sharded kernel"),
        (split, (x, sets), "no sharded version"),
    ):
        method = "plain_kcenter" if fn is select else "auto"
        try:
            fn(*args, key=key, method=method, mesh=mesh)
            failures.append({"case": f"select error {match}", "got": "no error"})
        except ValueError as e:
            if match not in str(e):
                failures.append({"case": f"select error {match}", "got": str(e)})
    return len(calls) + 3


def _zcore_reference_picks(x, dims, anchors, r, metric):
    """Nearest point and top-r neighbours per sample, NumPy float32 (exact on integer data)."""
    xt = np.asarray(x, np.float32).T

    def dist(sub, point):
        total = np.zeros(xt.shape[1], np.float32)
        for j, dim in enumerate(sub):
            diff = xt[dim] - np.float32(point[j])
            total = total + (np.abs(diff) if metric == "l1" else diff * diff)
        return total

    nearest, neighbours = [], []
    for sub, anchor in zip(dims, anchors, strict=True):
        i = int(np.argmin(dist(sub, anchor)))
        d = dist(sub, xt[sub, i])
        d = np.sqrt(d) if metric == "l2" else d
        d[i] = np.inf
        nearest.append(i)
        neighbours.append(np.argsort(d, kind="stable")[:r].tolist())
    return nearest, neighbours


def _zcore_checks(mesh, failures):
    """Statistics bit-equal, scores equal up to float32 rounding, the same selection; the nearest
    points and neighbours of a chunk equal a NumPy reference on integer data (ties, duplicates
    on different shards)."""
    from goldener_jax.kernels.sharding import _replicate, _zcore_chunk_picks

    rng = np.random.default_rng(12)
    floats = rng.normal(size=(53, 5)).astype(np.float32)
    cases = [
        ("ints paper", _ints(rng, 45, 4), "paper", 6),
        ("duplicates goldener", _duplicates(rng), "goldener", 40),
        # n > 2 x the window widths: one device runs its window search, the mesh brute force.
        ("ints n=2500 windows", _ints(rng, 2500, 3), "paper", 6),
        ("floats paper", floats, "paper", 1000),
        ("floats goldener r=0", floats, "goldener", 0),
    ]
    key = jax.random.key(2)
    for name, x, variant, r in cases:
        s1 = gk.zcore_init(x, key, variant=variant)
        s8 = gk.zcore_init(x, key, variant=variant, mesh=mesh)
        for field in ("scores", "lo", "med", "hi", "key"):
            if not np.array_equal(np.asarray(getattr(s1, field)), np.asarray(getattr(s8, field))):
                failures.append({"case": f"zcore {name} init {field}"})
        kw = dict(chunk=64, variant=variant, num_redundancy=r)
        b = gk.zcore_run(s8, x, 200, mesh=mesh, **kw)
        b = gk.zcore_run(b, x, 100, mesh=mesh, **kw)
        # One device: the XLA kernel and the compiled CPU walk (impl="native").
        for impl in ("xla", "native"):
            a = gk.zcore_run(s1, x, 300, impl=impl, **kw)
            if int(b.done) != 300 or not np.allclose(a.scores, b.scores, rtol=1e-5, atol=1e-5):
                failures.append(
                    {"case": f"zcore {name} {impl} scores", "want": a.scores, "got": b.scores}
                )
            if gk.zcore_select(a.scores, 12).tolist() != gk.zcore_select(b.scores, 12).tolist():
                failures.append({"case": f"zcore {name} {impl} select"})
        if name.startswith("floats"):
            continue
        metric = gk.ZCORE_VARIANTS[variant]["metric"]
        dims, anchors = (np.asarray(v) for v in gk.zcore_draws(s1, 64, 64, 2))
        want = _zcore_reference_picks(x, dims, anchors, min(r, len(x) - 1), metric)
        rep = [_replicate(v, mesh) for v in (s1.key, np.int32(64), s1.lo, s1.med, s1.hi)]
        nearest, nbrs = _zcore_chunk_picks(
            gk.shard_rows(x, mesh), *rep, mesh=mesh, n=len(x), chunk=64, num_dims=2,
            num_redundancy=r, metric=metric,
        )  # fmt: skip
        got = (np.asarray(nearest).tolist(), np.asarray(nbrs).tolist())
        if got != (want[0], want[1]):
            failures.append({"case": f"zcore {name} picks", "want": want, "got": got})
    return len(cases)


KERNEL_CHECKS = {
    "herding": _herding_checks,
    "kmeans": _kmeans_checks,
    "knn": _knn_checks,
    "zcore": _zcore_checks,
    "select": _select_checks,
}


def task_kernels_equal(family):
    mesh = gk.make_mesh()
    failures = []
    count = KERNEL_CHECKS[family](mesh, failures)
    return {"cases": count, "failures": [str(f) for f in failures]}


def task_retrace():
    mesh = gk.make_mesh()
    rng = np.random.default_rng(2)
    for _ in range(3):  # new data, same shapes
        x = rng.normal(size=(50, 4)).astype(np.float32)
        state = gk.kcenter_init(x, 10, mesh=mesh)
        for chunk in (1, 2, 3):  # new chunk sizes: traced, no recompile
            state = gk.kcenter_run(state, x, max_steps=chunk, mesh=mesh)
        gk.greedy_k_center(x, 10, mesh=mesh)
        gk.farthest_point(x, 10, mesh=mesh)
        gk.closest_point(x, 10, mesh=mesh)
    return {
        "init": sharding._init._cache_size(),
        "run": sharding._run._cache_size(),
        "greedy_init": sharding._greedy_init._cache_size(),
        "greedy_run": sharding._greedy_run._cache_size(),  # one per mode
    }


def task_memory(n, d):
    mesh = gk.make_mesh()
    axis, p = sharding.mesh_axis(mesh)
    rows = sharding.padded_rows(n, mesh)
    row_sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axis))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    xs = jax.ShapeDtypeStruct((rows, d), jnp.float32, sharding=row_sharded)
    md = jax.ShapeDtypeStruct((rows,), jnp.float32, sharding=row_sharded)
    sel = jax.ShapeDtypeStruct((100,), jnp.int32, sharding=replicated)
    scalar = jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated)
    out = {"x_bytes": rows * d * 4, "x_local_bytes": rows * d * 4 // p, "devices": p}
    for metric in ("euclidean", "cosine"):
        run = sharding._run.lower(md, sel, scalar, xs, scalar, mesh=mesh, n=n, metric=metric)
        out[f"run_{metric}"] = run.compile().memory_analysis().temp_size_in_bytes
        init = sharding._init.lower(xs, None, mesh=mesh, n=n, k=100, metric=metric, block_size=None)
        out[f"init_{metric}"] = init.compile().memory_analysis().temp_size_in_bytes
    flags = jax.ShapeDtypeStruct((rows,), jnp.bool_, sharding=row_sharded)
    ints = jax.ShapeDtypeStruct((rows,), jnp.int32, sharding=row_sharded)
    run = sharding._greedy_run.lower(
        md, ints, flags, sel, scalar, xs, scalar, mesh=mesh, n=n, mode="farthest", metric="cosine"
    )
    out["greedy_run"] = run.compile().memory_analysis().temp_size_in_bytes
    init = sharding._greedy_init.lower(
        xs, mesh=mesh, n=n, k=100, metric="euclidean", block_size=256
    )
    out["greedy_init"] = init.compile().memory_analysis().temp_size_in_bytes
    return out


def _data():
    x = np.random.default_rng(3).normal(size=(101, 5)).astype(np.float32)
    return x, 40, "cosine" if os.environ.get("CKPT_METRIC") == "cosine" else "euclidean"


def task_ckpt_save(path, steps, use_mesh):
    x, k, metric = _data()
    mesh = gk.make_mesh() if use_mesh else None
    config = {"k": k, "metric": metric, "n": len(x)}
    state = gk.kcenter_init(x, k, metric=metric, mesh=mesh)
    state = gk.kcenter_run(state, x, metric=metric, max_steps=steps - 1, mesh=mesh)
    with Checkpointer(path, config=config, every_steps=1) as ckpt:
        ckpt.save(int(state.count), state)
    full = gk.kcenter_run(state, x, metric=metric, mesh=mesh)
    single = gk.greedy_k_center(x, k, metric=metric)
    return {
        "saved_count": int(state.count),
        "final": np.asarray(full.selected).tolist(),
        "single": np.asarray(single).tolist(),
    }


def task_ckpt_resume(path, use_mesh):
    x, k, metric = _data()
    mesh = gk.make_mesh() if use_mesh else None
    config = {"k": k, "metric": metric, "n": len(x)}
    # NumPy leaves: restored as host arrays whatever device layout wrote them (a bare
    # ShapeDtypeStruct would ask Orbax for the saved topology, which this process may not have).
    like = gk.KCenterState(
        np.zeros((len(x),), np.float32), np.zeros((k,), np.int32), np.zeros((), np.int32)
    )
    with Checkpointer(path, config=config, every_steps=1) as ckpt:
        state, step = ckpt.restore(like)
    state = gk.KCenterState(*(jnp.asarray(a) for a in state))
    full = gk.kcenter_run(state, x, metric=metric, mesh=mesh)
    return {"restored_step": step, "final": np.asarray(full.selected).tolist()}


if TASK == "equal":
    result = task_equal()
elif TASK == "greedy_equal":
    result = task_greedy_equal()
elif TASK == "kernels_equal":
    result = task_kernels_equal(sys.argv[3])
elif TASK == "retrace":
    result = task_retrace()
elif TASK == "memory":
    result = task_memory(int(sys.argv[3]), int(sys.argv[4]))
elif TASK == "ckpt_save":
    result = task_ckpt_save(sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1")
elif TASK == "ckpt_resume":
    result = task_ckpt_resume(sys.argv[3], sys.argv[4] == "1")
else:
    raise SystemExit(f"unknown task {TASK!r}")
print(json.dumps(result))
