"""Side by side with the peer libraries a user would otherwise pick, same data, same run.

One contest per task; each times ours and every installed peer on the same data (best of
``--repeats`` after one warm-up, so compilation is not counted; the peers' own warm-up is given
the same way), prints ``ours / peer / ratio`` and checks whether the results agree:

========================  =============================================  ==========================
task                      peers                                          agreement
========================  =============================================  ==========================
k-center (farthest pt)    NumPy mat-vec loop, ``fpsample.fps_sampling``  identical index sequences
kernel herding            ``coreax.solvers.KernelHerding``               shared picks, MMD to data
k-means (Lloyd)           ``sklearn.cluster.KMeans``, ``faiss.Kmeans``   final inertia, same seeds
mini-batch k-means        ``sklearn.cluster.MiniBatchKMeans``            final inertia
near duplicates           faiss ``range_search``, sklearn radius search  identical pair sets
k nearest neighbours      faiss ``IndexFlatL2``, sklearn brute force     identical neighbour lists
representative subset     ``apricot`` facility location                  k-median cost of the picks
label issues              ``cleanlab.filter.find_label_issues``          precision at #flips
========================  =============================================  ==========================

A peer that is not installed is reported as such (``pip install "goldener-jax[peers]"`` installs
them all). A ratio is ``peer time / our time``: above 1 we are faster. The machine (CPU, cores,
load) is printed with the results; run it on a quiet machine, the peers use every core they see
unless a contest says otherwise.
"""

from __future__ import annotations

import importlib
import time

import jax
import numpy as np

import goldener_jax as gj
from goldener_jax import kernels as gk
from goldener_jax.benchmarks._machine import machine_summary
from goldener_jax.benchmarks.kcenter import numpy_k_center_steps
from goldener_jax.benchmarks.kmeans import inertia, make_data
from goldener_jax.benchmarks.pairs import clustered

TASKS = (
    "kcenter",
    "herding",
    "kmeans",
    "minibatch_kmeans",
    "pairs",
    "knn",
    "representative",
    "label_issues",
)


def add_arguments(parser) -> None:
    from goldener_jax.cli import int_at_least, positive_float

    count = int_at_least(1)

    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated subset")
    parser.add_argument("--repeats", type=count, default=3, help="best of this many runs")
    parser.add_argument(
        "--scale", type=positive_float, default=1.0, help="multiply every N by this"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and keys (0)")


def _peer(name: str):
    """The peer module, or None when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _best(fn, repeats: int):
    """(best seconds over ``repeats`` runs after one warm-up run, the last result)."""
    out = fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _row(task, size, ours_s, peer, peer_s, agree) -> dict:
    ratio = None if peer_s is None else peer_s / ours_s
    return {"task": task, "size": size, "ours_s": ours_s, "peer": peer, "peer_s": peer_s,
            "ratio": ratio, "agree": agree}  # fmt: skip


def _missing(task, size, ours_s, peer) -> dict:
    return _row(task, size, ours_s, peer, None, "not installed")


def _kcenter(args, n) -> list[dict]:
    d, k = 128, min(500, n // 2)
    x = make_data("mixture", n, d, args.seed)
    size = f"N={n:,} d={d} k={k}"
    ours_s, ours = _best(lambda: np.asarray(gk.greedy_k_center(x, k)), args.repeats)
    # The NumPy loop is the same streaming algorithm; it is timed over all k steps.
    t0 = time.perf_counter()
    picks, _ = numpy_k_center_steps(x, k)
    rows = [_row("kcenter", size, ours_s, "numpy loop", time.perf_counter() - t0,
                 _same_prefix(ours, picks, k))]  # fmt: skip
    fps = _peer("fpsample")
    if fps is None:
        return rows + [_missing("kcenter", size, ours_s, "fpsample")]
    # fpsample starts from a given index: ours' first pick, so the two walks can agree.
    t, theirs = _best(lambda: fps.fps_sampling(x, k, start_idx=int(ours[0])), args.repeats)
    return rows + [_row("kcenter", size, ours_s, "fpsample", t, _same_prefix(ours, theirs, k))]


def _same_prefix(a, b, k) -> str:
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    same = int(np.argmax(a != b)) if np.any(a != b) else min(len(a), len(b))
    return "identical" if same == k else f"first {same} of {k} identical"


def _herding(args, n) -> list[dict]:
    d, k = 32, min(100, n // 2)
    x = make_data("mixture", n, d, args.seed)
    ls = float(gk.median_length_scale(x))
    size = f"N={n:,} d={d} k={k}"
    ours_s, ours = _best(
        lambda: np.asarray(gk.kernel_herding(x, k, kernel="rbf", length_scale=ls)), args.repeats
    )
    coreax = _peer("coreax")
    if coreax is None:
        return [_missing("herding", size, ours_s, "coreax")]
    from coreax import Data
    from coreax.kernels import SquaredExponentialKernel
    from coreax.solvers import KernelHerding

    solver = KernelHerding(coreset_size=k, kernel=SquaredExponentialKernel(length_scale=ls))
    xj = jax.numpy.asarray(x)
    # jitted as a coreax user would (its reduce is a pure function of the data).
    reduce = jax.jit(lambda a: solver.reduce(Data(a))[0].unweighted_indices)

    def theirs():
        return np.asarray(reduce(xj))

    t, picks = _best(theirs, args.repeats)
    shared = len(set(ours.tolist()) & set(picks.tolist()))
    m_ours, m_theirs = gj.evaluate.mmd(x, ours), gj.evaluate.mmd(x, picks)
    agree = f"{shared}/{k} picks shared; MMD ours {m_ours:.2e}, coreax {m_theirs:.2e}"
    return [_row("herding", size, ours_s, "coreax", t, agree)]


def _kmeans(args, n) -> list[dict]:
    d, k, iters = 64, min(100, n // 10), 10
    x = make_data("normal", n, d, args.seed)
    size = f"N={n:,} d={d} k={k}, {iters} Lloyd iterations"
    state = gk.kmeans_init(x, k, jax.random.key(args.seed))  # k-means++ seeds, shared by all
    c0 = np.asarray(state.centroids)
    xj = jax.numpy.asarray(x)

    def ours():
        out = gk.kmeans_run(state, xj, num_iters=iters)
        return np.asarray(jax.block_until_ready(out.centroids))

    ours_s, c_ours = _best(ours, args.repeats)
    ref = inertia(x, c_ours)
    rows = []
    sklearn = _peer("sklearn")
    if sklearn is None:
        rows.append(_missing("kmeans", size, ours_s, "scikit-learn"))
    else:
        from sklearn.cluster import KMeans

        def sk():
            km = KMeans(k, init=c0, n_init=1, max_iter=iters, tol=0.0, algorithm="lloyd")
            return km.fit(x).cluster_centers_

        t, c = _best(sk, args.repeats)
        rows.append(_row("kmeans", size, ours_s, "scikit-learn", t, _inertia_note(ref, x, c)))
    faiss = _peer("faiss")
    if faiss is None:
        return rows + [_missing("kmeans", size, ours_s, "faiss")]

    def fa():
        km = faiss.Kmeans(d, k, niter=iters, max_points_per_centroid=n)
        km.train(x, init_centroids=c0)
        return km.centroids

    t, c = _best(fa, args.repeats)
    return rows + [_row("kmeans", size, ours_s, "faiss", t, _inertia_note(ref, x, c))]


def _minibatch(args, n) -> list[dict]:
    d, k, batch, epochs = 64, min(100, n // 10), 4096, 3
    x = make_data("mixture", n, d, args.seed)
    size = f"N={n:,} d={d} k={k}, batch {batch}, {epochs} epochs"
    key = jax.random.key(args.seed)

    def ours():
        c, _ = gk.minibatch_kmeans(x, k, key, batch_size=batch, num_epochs=epochs)
        return np.asarray(c)

    ours_s, c_ours = _best(ours, args.repeats)
    if _peer("sklearn") is None:
        return [_missing("minibatch_kmeans", size, ours_s, "scikit-learn")]
    from sklearn.cluster import MiniBatchKMeans

    def sk():
        km = MiniBatchKMeans(
            k, batch_size=batch, max_iter=epochs, n_init=1, max_no_improvement=None, tol=0.0,
            random_state=args.seed,
        )  # fmt: skip
        return km.fit(x).cluster_centers_

    t, c = _best(sk, args.repeats)
    agree = _inertia_note(inertia(x, c_ours), x, c)
    return [_row("minibatch_kmeans", size, ours_s, "sklearn MiniBatchKMeans", t, agree)]


def _inertia_note(ours: float, x, peer_centroids) -> str:
    theirs = inertia(x, peer_centroids)
    return f"inertia ours/peer {ours / theirs:.6f}"


def _pairs(args, n) -> list[dict]:
    d, threshold = 128, 1.0
    x, _, _ = clustered(n, d, min(500, n // 20), min(1000, n // 10), args.seed)
    size = f"N={n:,} d={d} threshold {threshold}"
    ours_s, (i, j, _) = _best(lambda: gk.pairs_within(x, threshold), args.repeats)
    mine = set(zip(i.tolist(), j.tolist(), strict=True))
    rows = []
    faiss = _peer("faiss")
    if faiss is None:
        rows.append(_missing("pairs", size, ours_s, "faiss"))
    else:

        def fa():
            index = faiss.IndexFlatL2(d)
            index.add(x)
            lims, _, ids = index.range_search(x, threshold**2)
            q = np.repeat(np.arange(n), np.diff(lims.astype(np.int64)))
            keep = q < ids
            return set(zip(q[keep].tolist(), ids[keep].tolist(), strict=True))

        t, theirs = _best(fa, args.repeats)
        rows.append(_row("pairs", size, ours_s, "faiss range_search", t, _pairs_note(mine, theirs)))
    if _peer("sklearn") is None:
        return rows + [_missing("pairs", size, ours_s, "scikit-learn")]
    from sklearn.neighbors import NearestNeighbors

    def sk():
        nn = NearestNeighbors(radius=threshold).fit(x)
        nbrs = nn.radius_neighbors(x, return_distance=False)
        return {(a, int(b)) for a, row in enumerate(nbrs) for b in row if a < b}

    t, theirs = _best(sk, 1)
    return rows + [_row("pairs", size, ours_s, "sklearn radius", t, _pairs_note(mine, theirs))]


def _pairs_note(mine: set, theirs: set) -> str:
    if mine == theirs:
        return f"identical ({len(mine):,} pairs)"
    return f"{len(mine - theirs)} only ours, {len(theirs - mine)} only peer (of {len(mine):,})"


def _knn(args, n) -> list[dict]:
    d, k = 64, 10
    x = make_data("normal", n, d, args.seed)
    size = f"N={n:,} d={d} k={k}"
    ours_s, (_, idx) = _best(lambda: tuple(map(np.asarray, gk.knn(x, k))), args.repeats)
    rows = []
    faiss = _peer("faiss")
    if faiss is None:
        rows.append(_missing("knn", size, ours_s, "faiss"))
    else:

        def fa():
            index = faiss.IndexFlatL2(d)
            index.add(x)
            return index.search(x, k + 1)[1][:, 1:]  # its first hit is the point itself

        t, theirs = _best(fa, args.repeats)
        rows.append(_row("knn", size, ours_s, "faiss IndexFlatL2", t, _knn_note(idx, theirs)))
    if _peer("sklearn") is None:
        return rows + [_missing("knn", size, ours_s, "scikit-learn")]
    from sklearn.neighbors import NearestNeighbors

    def sk():
        nn = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(x)
        return nn.kneighbors(return_distance=False)

    t, theirs = _best(sk, args.repeats)
    return rows + [_row("knn", size, ours_s, "sklearn brute", t, _knn_note(idx, theirs))]


def _knn_note(ours, theirs) -> str:
    same = np.mean(np.all(np.sort(ours, 1) == np.sort(theirs, 1), axis=1))
    return f"{100 * same:.2f} % of neighbour lists identical"


def _k_median_cost(x, picks) -> float:
    d = np.asarray(gk.pairwise_distances(x, x[np.asarray(picks)]))
    return float(d.min(axis=1).mean())


def _representative(args, n) -> list[dict]:
    d, k = 64, min(50, n // 5)
    x = make_data("mixture", n, d, args.seed)
    size = f"N={n:,} d={d} k={k}"
    key = jax.random.key(args.seed)

    def ours():
        return gj.select(x, k, method="kmeans_medoids", key=key, progress=False).indices

    ours_s, picks = _best(ours, args.repeats)
    apricot = _peer("apricot")
    if apricot is None:
        return [_missing("representative", size, ours_s, "apricot")]

    def theirs():
        sel = apricot.FacilityLocationSelection(k, metric="euclidean", optimizer="lazy")
        return sel.fit(x).ranking

    t, their_picks = _best(theirs, 1)
    c_ours, c_theirs = _k_median_cost(x, picks), _k_median_cost(x, their_picks)
    agree = f"mean distance to nearest pick: ours {c_ours:.3f}, apricot {c_theirs:.3f}"
    return [_row("representative", size, ours_s, "apricot facility location", t, agree)]


def _label_issues(args, n) -> list[dict]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = digits.data.astype(np.float32), digits.target.astype(np.int64)
    rng = np.random.default_rng(args.seed)
    flips = rng.choice(len(y), int(0.1 * len(y)), replace=False)
    noisy = y.copy()
    noisy[flips] = (y[flips] + rng.integers(1, 10, len(flips))) % 10
    size = f"digits N={len(y):,}, 10 % flipped"
    truth = set(flips.tolist())

    def precision(ranked) -> float:
        return len(truth & set(np.asarray(ranked)[: len(flips)].tolist())) / len(flips)

    ours_s, res = _best(lambda: gj.label_issues(x, noisy, progress=False), args.repeats)
    mine = precision(res.indices)
    cleanlab = _peer("cleanlab")
    if cleanlab is None:
        return [_missing("label_issues", size, ours_s, "cleanlab")]
    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    def theirs():
        # cleanlab needs out-of-sample probabilities: 5-fold logistic regression, timed with it.
        model = LogisticRegression(max_iter=1000)
        probs = cross_val_predict(model, x / 16.0, noisy, cv=5, method="predict_proba")
        return find_label_issues(noisy, probs, return_indices_ranked_by="self_confidence", n_jobs=1)

    t, ranked = _best(theirs, 1)
    agree = f"precision@#flips ours {mine:.3f}, cleanlab {precision(ranked):.3f}"
    return [_row("label_issues", size, ours_s, "cleanlab (+5-fold LR)", t, agree)]


_CONTESTS = {
    "kcenter": (_kcenter, 20_000),
    "herding": (_herding, 5_000),
    "kmeans": (_kmeans, 100_000),
    "minibatch_kmeans": (_minibatch, 200_000),
    "pairs": (_pairs, 50_000),
    "knn": (_knn, 50_000),
    "representative": (_representative, 5_000),
    "label_issues": (_label_issues, 0),
}


def run(args) -> dict:
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = sorted(set(tasks) - set(_CONTESTS))
    if unknown:
        raise ValueError(f"--tasks {unknown} unknown; choose from {list(TASKS)}")
    rows = []
    for task in tasks:
        fn, n = _CONTESTS[task]
        new = fn(args, max(100, int(n * args.scale)))
        for r in new:
            _print_row(r)
        rows.extend(new)
    return {"benchmark": "peers", "machine": machine_summary(), "rows": rows}


def _print_row(r: dict) -> None:
    peer_s = "-" if r["peer_s"] is None else f"{r['peer_s']:.3f} s"
    ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
    print(
        f"{r['task']:<15} {r['size']:<38} ours {r['ours_s']:.3f} s | {r['peer']:<26} {peer_s:>10}"
        f" | {ratio:>7} | {r['agree']}",
        flush=True,
    )
