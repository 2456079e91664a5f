"""Anchored kernel herding, k-means medoids and TypiClust (issue 17), and ``select``'s ``size_of``.

Anchors are rows already chosen (e.g. labelled). Herding: the anchors are herding's first points
(closed form: anchors = the first ``m`` picks of a run give the rest of that run; NumPy brute
force). k-means medoids / TypiClust: TypiClust's anchored form, ``k + m`` clusters, clusters
holding an anchor covered, uncovered clusters served first (NumPy reference of the order from the
final centroids; picks never land in a covered cluster while an uncovered one is left). Each
works on a mesh of 8 fake devices with the single-device indices.
"""

import _reference
import jax
import numpy as np
import pytest
from goldener_jax.kernels import selectors

import goldener_jax as gj
from goldener_jax import kernels as gk

KEY = jax.random.key(5)


def _floats(n, d, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def _blobs(per=12, seed=0):
    """Six well-separated blobs (centres 40 along +-e1, +-e2, +-e3: distinct directions too,
    for cosine; unit noise): blob ``b`` is rows ``b * per ... (b + 1) * per - 1``."""
    rng = np.random.default_rng(seed)
    centres = 40.0 * np.concatenate([np.eye(3), -np.eye(3)])[[0, 3, 1, 4, 2, 5]]
    rows = [c + rng.normal(size=(per, 3)) for c in centres]
    return np.concatenate(rows).astype(np.float32), centres.astype(np.float32)


# --------------------------------------------------------------------------- herding


def _herding_ref(x, k, anchors, kernel, length_scale):
    """Herding of ``m + k`` points whose first ``m`` are ``anchors``, float64 brute force."""
    x = np.asarray(x, np.float64)
    a = np.zeros((0, x.shape[1])) if anchors is None else np.asarray(anchors, np.float64)

    def kern(u, v):
        if kernel == "linear":
            return u @ v.T
        sq = ((u[:, None] - v[None]) ** 2).sum(-1)
        return np.exp(-sq / (2.0 * length_scale**2))

    gram = kern(x, x)
    mean = gram.mean(1)
    penalty = kern(x, a).sum(1)
    taken = (x[:, None] == a[None]).all(-1).any(-1)  # rows equal to an anchor count as chosen
    picks = []
    for t in range(k):
        score = np.where(taken, -np.inf, mean - penalty / (len(a) + t + 1))
        i = int(np.flatnonzero(score == score.max())[0])
        picks.append(i)
        taken[i] = True
        penalty += gram[:, i]
    return picks


# (kernel, n, d, m anchors, k more): closed form, anchors = the first m picks of a run
CLOSED = [
    ("rbf", 60, 4, 1, 8),
    ("rbf", 60, 4, 5, 7),
    ("rbf", 200, 6, 20, 10),
    ("linear", 50, 3, 4, 6),
]


@pytest.mark.parametrize("case", CLOSED, ids=lambda c: f"{c[0]}-n{c[1]}-m{c[3]}")
def test_herding_anchored_at_its_own_first_picks_continues_the_run(case):
    kernel, n, d, m, k = case
    x = _floats(n, d, seed=n + m)
    full = np.asarray(gk.kernel_herding(x, m + k, kernel=kernel, length_scale=1.7))
    rest = np.asarray(gk.kernel_herding(x, k, kernel=kernel, length_scale=1.7, anchors=x[full[:m]]))
    assert rest.tolist() == full[m:].tolist()
    # the state after the anchors is the run's state after m steps, bit for bit
    s0 = gk.herding_init(x, m + k, kernel=kernel, length_scale=1.7)
    s0 = gk.herding_run(s0, x, kernel=kernel, length_scale=1.7, max_steps=m)
    s1 = gk.herding_init(x, k, kernel=kernel, length_scale=1.7, anchors=x[full[:m]])
    np.testing.assert_array_equal(np.asarray(s1.penalty), np.asarray(s0.penalty))
    assert int(s1.num_anchors) == m and int(s1.count) == 0


# (kernel, n, d, anchors, k, length_scale): NumPy brute force; anchors are not rows of x
BRUTE = [
    ("rbf", 40, 3, 0, 10, 1.0),
    ("rbf", 40, 3, 3, 10, 1.0),
    ("rbf", 55, 5, 12, 9, 2.5),
    ("linear", 30, 2, 4, 6, 1.0),
    ("linear", 30, 2, -4, 6, 1.0),  # the anchors are rows of x: never picked
]


@pytest.mark.parametrize("case", BRUTE, ids=lambda c: f"{c[0]}-n{c[1]}-a{c[3]}")
def test_herding_with_anchors_matches_brute_force(case):
    kernel, n, d, m, k, ls = case
    x = _floats(n, d, seed=abs(m))
    anchors = _floats(m, d, seed=100 + m) * 0.8 if m > 0 else None
    if m < 0:
        anchors = x[:-m]
    got = np.asarray(gk.kernel_herding(x, k, kernel=kernel, length_scale=ls, anchors=anchors))
    assert got.tolist() == _herding_ref(x, k, anchors, kernel, ls)
    if m < 0:
        assert got.min() >= -m


def test_herding_anchors_change_the_picks_and_are_checked():
    x = _floats(50, 3, seed=1)
    plain = np.asarray(gk.kernel_herding(x, 5)).tolist()
    # an anchor on the first pick: the run must go elsewhere first
    anchored = np.asarray(gk.kernel_herding(x, 5, anchors=x[plain[:1]] + 1e-3)).tolist()
    assert anchored[0] != plain[0]
    with pytest.raises(ValueError, match="anchors must have the same width"):
        gk.kernel_herding(x, 5, anchors=np.zeros((2, 4), np.float32))


# (kernel, n, devices): the anchored herding selector on a mesh equals one device
HERD_MESH = [("rbf", 37, 8), ("rbf", 64, 3), ("linear", 37, 8)]


@pytest.mark.parametrize("case", HERD_MESH, ids=lambda c: f"{c[0]}-n{c[1]}-p{c[2]}")
def test_herding_selector_with_anchors_on_a_mesh_equals_one_device(case):
    kernel, n, devices = case
    x = _floats(n, 4, seed=n)
    anchors = _floats(6, 4, seed=9)
    one = selectors.herding(kernel=kernel)
    many = selectors.herding(kernel=kernel, mesh=gk.make_mesh(jax.devices()[:devices]))
    assert one.uses_anchors and many.uses_anchors
    want = one.picks(one.run(one.init(x, 9, key=KEY, anchors=anchors), x))
    state = many.init(x, 9, key=KEY, anchors=anchors)
    for _ in range(3):  # chunked on the mesh: equal to one whole run on one device
        state = many.run(state, x, max_steps=3)
    assert many.finished(state)
    np.testing.assert_array_equal(many.picks(state), want)


# --------------------------------------------------------------------------- clustering


def _round_robin_ref(assignment, score, k, num_picks, min_size, existing):
    """TypiClust's order with ``existing`` picks per cluster (anchors)."""
    size = np.bincount(assignment, minlength=k)
    got = np.array(existing, int)
    taken = np.zeros(len(assignment), bool)
    picks = []
    for _ in range(num_picks):
        cands = [c for c in range(k) if ((assignment == c) & ~taken).any()]
        c = min(cands, key=lambda c: (size[c] < min_size, got[c], -size[c], c))
        members = np.flatnonzero((assignment == c) & ~taken)
        picks.append(int(members[score[members] == score[members].max()][0]))
        taken[picks[-1]] = True
        got[c] += 1
    return picks


def _nearest(rows, centroids):
    rows, centroids = np.asarray(rows, np.float64), np.asarray(centroids, np.float64)
    return ((rows[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)


def _unit(a):
    a = np.asarray(a, np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def _run(sel, x, k, anchors, steps=None):
    state = sel.init(x, k, key=KEY, anchors=anchors)
    if steps is None:
        return state, sel.run(state, x)
    while not sel.finished(state):
        state = sel.run(state, x, max_steps=steps)
    return None, state


# (method, n, k, anchors, min_cluster_size, metric)
CLUSTER = [
    ("kmeans_medoids", 60, 5, 0, 1, "euclidean"),
    ("kmeans_medoids", 60, 5, 7, 1, "euclidean"),
    ("kmeans_medoids", 80, 6, 9, 5, "euclidean"),
    ("kmeans_medoids", 60, 4, 5, 1, "cosine"),
    ("kmeans_medoids", 30, 8, 40, 1, "euclidean"),  # k + m > n: n clusters
    ("typiclust", 60, 5, 7, 1, "euclidean"),
    ("typiclust", 80, 6, 9, 5, "euclidean"),
    ("typiclust", 60, 4, 5, 1, "cosine"),
]


@pytest.mark.parametrize("case", CLUSTER, ids=lambda c: f"{c[0]}-n{c[1]}-k{c[2]}-a{c[3]}-{c[5]}")
def test_anchored_clustering_matches_reference_order(case):
    """From the selector's final centroids, NumPy recomputes the assignment, the anchors' covered
    clusters and TypiClust's anchored order: the picks must equal it."""
    name, n, k, m, min_size, metric = case
    x = _floats(n, 3, seed=n + k)
    anchors = _floats(m, 3, seed=7) if m else None
    opts = {"num_neighbors": 4} if name == "typiclust" else {}
    sel = getattr(selectors, name)(metric=metric, min_cluster_size=min_size, **opts)
    assert sel.uses_anchors
    _, state = _run(sel, x, k, anchors)
    c = np.asarray(state.kmeans.centroids)
    assert c.shape[0] == selectors.anchored_clusters(n, k, m, 500) == (min(n, k + m) if m else k)
    xk = _unit(x) if metric == "cosine" else x
    assignment = _nearest(xk, c)
    existing = np.zeros(len(c), int)
    if m:
        ak = _unit(anchors) if metric == "cosine" else anchors
        existing = np.bincount(_nearest(ak, c), minlength=len(c))
    if name == "typiclust":
        score = _reference.typicality(xk, assignment, 4)
    else:
        score = -((np.asarray(xk, np.float64) - c[assignment]) ** 2).sum(1)
    want = _round_robin_ref(assignment, score, len(c), k, min_size, existing)
    assert sel.picks(state).tolist() == want
    # no pick in a covered cluster while an uncovered one (of enough points) has no pick yet
    size = np.bincount(assignment, minlength=len(c))
    picked = np.zeros(len(c), int)
    for i in want:
        ci = assignment[i]
        if existing[ci] > 0:
            assert not ((existing == 0) & (picked == 0) & (size >= min_size)).any()
        picked[ci] += 1
    if m and k <= ((existing == 0) & (size >= min_size)).sum():
        assert (existing[assignment[want]] == 0).all()  # enough uncovered clusters: none else


@pytest.mark.parametrize("name", ["kmeans_medoids", "typiclust"])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_anchors_push_cluster_picks_to_unlabelled_blobs(name, metric):
    """Six blobs, anchors in three of them: the three picks are one per blob without an anchor
    (without anchors the picks would spread over the blobs ignoring the labelled ones)."""
    x, centres = _blobs()
    labelled = [0, 2, 5]
    anchors = centres[labelled] + 0.5
    sel = getattr(selectors, name)(metric=metric, min_cluster_size=1)
    _, state = _run(sel, x, 3, anchors)
    blobs = (sel.picks(state) // 12).tolist()
    assert sorted(blobs) == [1, 3, 4]


def test_unanchored_clustering_is_unchanged():
    """Without anchors: k clusters and the kernels' own medoids, as before."""
    x = _floats(50, 3, seed=2)
    sel = selectors.kmeans_medoids(min_cluster_size=5)
    _, state = _run(sel, x, 6, None)
    c, a = gk.kmeans(x, 6, KEY)
    np.testing.assert_array_equal(np.asarray(state.kmeans.centroids), np.asarray(c))
    want = gk.kmeans_medoids(x, c, a, min_cluster_size=5)
    np.testing.assert_array_equal(sel.picks(state), np.asarray(want))
    assert int(state.num_anchors) == 0


def _symmetric(n_half=29, seed=2):
    half = np.random.default_rng(seed).integers(-3, 4, size=(n_half, 3)).astype(np.float32) / 4
    return np.concatenate([half, -half])


# (method, data, devices): anchored clustering selectors on a mesh equal one device
CLUSTER_MESH = [
    ("kmeans_medoids", "symmetric", 8),
    ("kmeans_medoids", "blobs", 8),
    ("typiclust", "symmetric", 8),
    ("typiclust", "blobs", 3),
]


@pytest.mark.parametrize("case", CLUSTER_MESH, ids=lambda c: f"{c[0]}-{c[1]}-p{c[2]}")
def test_anchored_clustering_on_a_mesh_equals_one_device(case):
    name, data, devices = case
    x = _symmetric() if data == "symmetric" else _blobs()[0]
    anchors = x[[1, 5, 30]] + 0.125
    opts = {"num_neighbors": 5} if name == "typiclust" else {}
    one = getattr(selectors, name)(min_cluster_size=1, **opts)
    many = getattr(selectors, name)(
        min_cluster_size=1, mesh=gk.make_mesh(jax.devices()[:devices]), **opts
    )
    _, want = _run(one, x, 5, anchors)
    _, got = _run(many, x, 5, anchors, steps=2)  # chunked Lloyd iterations on the mesh
    np.testing.assert_array_equal(many.picks(got), one.picks(want))


def test_existing_counts_are_checked():
    x = _floats(10, 2)
    c, a = x[:2], np.array([0, 1] * 5, np.int32)
    with pytest.raises(ValueError, match="existing must be int"):
        gk.kmeans_medoids(x, c, a, existing=np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="existing counts must be >= 0"):
        gk.typical_points(x, c, a, existing=np.array([-1, 0]))
    # a count beyond n (more anchors than rows) still orders the clusters
    got = gk.kmeans_medoids(x, c, a, existing=np.array([50, 0]), num_picks=2)
    assert [int(a[i]) for i in np.asarray(got)] == [1, 1]


@pytest.mark.parametrize("fn", [gk.kmeans_medoids, gk.typical_points])
def test_assignment_ids_are_checked_and_zero_picks_is_empty(fn):
    x = _floats(10, 2)
    c, a = x[:2], np.array([0, 1] * 5, np.int32)
    # Ids outside [0, k) once gave the same pick num_picks times.
    for bad in (np.full(10, 9, np.int32), np.full(10, -1, np.int32)):
        with pytest.raises(ValueError, match=r"assignment ids must be in \[0, 2\)"):
            fn(x, c, bad)
    got = fn(x, c, a, num_picks=0)
    assert got.shape == (0,) and got.dtype == np.int32
    # Under jit the ids are not at hand: the same picks as outside it.
    jitted = jax.jit(lambda x, c, a: fn(x, c, a))
    np.testing.assert_array_equal(jitted(x, c, a), fn(x, c, a))


# --------------------------------------------------------------------------- select


def test_auto_rules_keep_their_choice_with_anchors():
    """Every method the default rules choose uses anchors: the rule keeps its choice."""
    x = _floats(200, 4, seed=3)
    anchors = np.arange(10)
    rule = gj.BudgetRule()  # 5 %: k-means medoids, now anchor-aware
    sel = gj.select(x, 10, method=rule, key=KEY, anchors=anchors, progress=False)
    assert sel.config["method"] == "kmeans_medoids"
    want = gj.select(x, 10, method="kmeans_medoids", key=KEY, anchors=anchors, progress=False)
    np.testing.assert_array_equal(sel.indices, want.indices)
    plain = gj.select(x, 10, method="kmeans_medoids", key=KEY, progress=False)
    assert sel.indices.tolist() != plain.indices.tolist()  # the anchors steered it
    assert not set(sel.indices.tolist()) & set(anchors.tolist())
    for method in ("herding", "typiclust"):
        assert (
            gj.select(x, 10, method=method, key=KEY, anchors=anchors, progress=False).config[
                "method"
            ]
            == method
        )
    # a custom rule choosing a method without anchors gets its anchored method
    custom = gj.BudgetRule(small="random")
    got = gj.select(x, 10, method=custom, key=KEY, anchors=anchors, progress=False)
    assert got.config["method"] == "typical_kcenter"


@pytest.mark.parametrize("method", ["farthest", "closest", "zcore", "random"])
def test_methods_without_anchors_are_refused(method):
    x = _floats(60, 3)
    with pytest.raises(ValueError, match=f"method '{method}' cannot use anchors.*herding"):
        gj.select(x, 5, method=method, key=KEY, anchors=np.arange(4), progress=False)


# (size, size_of, anchors, new picks expected) on a pool of 200 samples
SIZES = [
    (0.05, "remaining", 20, 9),  # ceil(0.05 x 180)
    (0.05, "pool", 20, 10),  # ceil(0.05 x 200)
    (0.05, "pool", 0, 10),
    (0.2, "total", 20, 20),  # ceil(0.2 x 200) - 20
    (7, "remaining", 20, 7),
    (7, "pool", 20, 7),
    (30, "total", 20, 10),
    (0.5, "total", 0, 100),
]


@pytest.mark.parametrize("case", SIZES, ids=lambda c: f"{c[0]}-{c[1]}-a{c[2]}")
def test_size_of(case):
    size, size_of, m, expected = case
    x = _floats(200, 3, seed=4)
    anchors = np.arange(0, 2 * m, 2) if m else None
    kw = dict(method="kcenter", key=KEY, anchors=anchors, progress=False)
    sel = gj.select(x, size, size_of=size_of, **kw)
    assert len(sel) == expected and sel.config["size_of"] == size_of
    # the same request as the int count of new picks
    np.testing.assert_array_equal(sel.indices, gj.select(x, expected, **kw).indices)


def test_size_of_pool_keeps_each_rounds_share():
    """Issue 17: 0.05 of the pool each round is 10 new samples each round (not 10 then 10 of
    the 190 left = 10, then fewer), the earlier picks as anchors."""
    x = _floats(200, 3, seed=6)
    kw = dict(method="kcenter", key=KEY, progress=False)
    first = gj.select(x, 0.05, size_of="pool", **kw)
    second = gj.select(x, 0.05, size_of="pool", anchors=np.sort(first.indices), **kw)
    third = gj.select(
        x, 0.05, size_of="pool", anchors=np.sort(np.r_[first.indices, second.indices]), **kw
    )
    assert [len(first), len(second), len(third)] == [10, 10, 10]
    both = np.r_[first.indices, second.indices, third.indices]
    assert len(set(both.tolist())) == 30
    old = gj.select(x, 0.05, anchors=np.sort(np.r_[first.indices, second.indices]), **kw)
    assert len(old) == 9  # "remaining": ceil(0.05 x 180)


@pytest.mark.parametrize(
    "size, size_of, m, match",
    [
        (0.05, "total", 20, "asks for -10 new samples with 20 anchors in a pool of 200"),
        (20, "total", 20, "asks for 0 new samples"),
        (1.0, "pool", 20, "asks for 200 new samples .* need 1 to 180"),
        (0.1, "whole", 0, "size_of must be 'remaining', 'pool' or 'total'"),
    ],
)
def test_size_of_errors(size, size_of, m, match):
    x = _floats(200, 3)
    anchors = np.arange(m) if m else None
    with pytest.raises(ValueError, match=match):
        gj.select(x, size, size_of=size_of, key=KEY, anchors=anchors, method="kcenter")


@pytest.mark.parametrize(
    "pick",
    [
        lambda x, k: gk.greedy_k_center(x, k),
        lambda x, k: gk.kernel_herding(x, k),
        lambda x, k: gk.typical_kcenter(x, k),
        lambda x, k: gk.probcover(x, k, 1.0),
    ],
)
def test_a_pool_without_rows_gives_no_picks(pick):
    # 0 rows once crashed inside JAX (a first row sliced from nothing) or divided by zero.
    empty = np.zeros((0, 4), np.float32)
    got = pick(empty, 0)
    assert got.shape == (0,) and got.dtype == np.int32
    with pytest.raises(ValueError, match="larger than the number of points n=0"):
        pick(empty, 1)


def test_zcore_scores_and_select_check_their_inputs():
    assert gk.zcore_scores(np.zeros((0, 4), np.float32), jax.random.key(0)).shape == (0,)
    with pytest.raises(ValueError, match=r"scores must be numbers \[n\]"):
        gk.zcore_select(np.ones((3, 3), np.float32), 2)  # once returned a [3, 2] array
    with pytest.raises(ValueError, match="NaN"):
        gk.zcore_select(np.array([1.0, np.nan, 3.0, 2.0], np.float32), 2)  # NaN ranked first
    np.testing.assert_array_equal(gk.zcore_select(np.array([1, 3, 3, 2]), 3), [1, 2, 3])
