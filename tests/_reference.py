"""Independent NumPy brute-force references (float64, full matrices) for the kernel tests."""

from __future__ import annotations

import numpy as np


def distances(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if metric == "cosine":
        na = np.linalg.norm(a, axis=1, keepdims=True)
        nb = np.linalg.norm(b, axis=1, keepdims=True)
        ua = np.divide(a, na, out=np.zeros_like(a), where=na > 0)
        ub = np.divide(b, nb, out=np.zeros_like(b), where=nb > 0)
        return 1.0 - np.clip(ua @ ub.T, -1.0, 1.0)
    sq = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return np.sqrt(sq) if metric == "euclidean" else sq


def k_center(x, k, metric="euclidean", anchors=None):
    """goldener 7.0.0's greedy k-center, with its flaws fixed (k=0 -> [], no re-selection)."""
    n = len(x)
    if k == n:
        return list(range(n))
    dist = distances(x, x, metric)
    chosen: list[int] = []
    if anchors is not None and len(anchors):
        running = distances(x, anchors, metric).min(axis=1)
    else:
        if k == 0:
            return []
        first = int(np.argmax(np.linalg.norm(dist, axis=1)))
        chosen.append(first)
        running = dist[first].copy()
    running = running.astype(np.float64)
    running[chosen] = -np.inf
    while len(chosen) < k:
        nxt = int(np.argmax(running))
        chosen.append(nxt)
        running = np.minimum(running, dist[nxt])
        running[chosen] = -np.inf
    return chosen


def greedy_point(x, k, mode, metric="euclidean"):
    """goldener 7.0.0's farthest / closest point: nearest remaining neighbours, every round."""
    n = len(x)
    if k == n:
        return list(range(n))
    dist = distances(x, x, metric)
    np.fill_diagonal(dist, np.inf)
    remaining = list(range(n))
    chosen = []
    for _ in range(k):
        sub = dist[np.ix_(remaining, remaining)]
        nn = sub.min(axis=1)
        pos = int(np.argmax(nn)) if mode == "farthest" else int(np.argmin(nn))
        chosen.append(remaining.pop(pos))
    return chosen


def assert_valid_k_center(x, chosen, metric="euclidean", anchors=None, rtol=1e-4):
    """Replays ``chosen`` in float64: each pick must be a greedy maximiser up to float rounding,
    and must be *the* maximiser whenever no other candidate is within rounding of it."""
    n = len(x)
    chosen = [int(i) for i in chosen]
    assert len(set(chosen)) == len(chosen), f"repeated index in {chosen}"
    if len(chosen) == n:
        return
    dist = distances(x, x, metric)
    if anchors is not None and len(anchors):
        running = distances(x, anchors, metric).min(axis=1)
        rest = chosen
    else:
        if not chosen:
            return
        score = np.linalg.norm(dist, axis=1)
        _assert_argmax_like(score, chosen[0], rtol, "first center")
        running = dist[chosen[0]].copy()
        running[chosen[0]] = -np.inf
        rest = chosen[1:]
    taken = list(chosen[: len(chosen) - len(rest)])
    for i in rest:
        _assert_argmax_like(running, i, rtol, f"center {len(taken)}")
        taken.append(i)
        running = np.minimum(running, dist[i])
        running[taken] = -np.inf


def _assert_argmax_like(values, picked, rtol, what):
    best = float(np.max(values))
    tol = rtol * max(1.0, abs(best))
    near = np.flatnonzero(values >= best - tol)
    assert picked in near, f"{what}: picked {picked} ({values[picked]}), best {best} at {near}"


def step_scores(x, prefix, method, metric="euclidean", anchors=None):
    """The values the greedy rule compares at step ``len(prefix)``, after choosing ``prefix``.

    ``method``: ``"kcenter"`` (max wins), ``"farthest"`` (max wins) or ``"closest"`` (min wins).
    Already chosen points get ``nan``.
    """
    prefix = [int(i) for i in prefix]
    dist = distances(x, x, metric)
    if method == "kcenter":
        if anchors is not None and len(anchors):
            scores = distances(x, anchors, metric).min(axis=1)
            if prefix:
                scores = np.minimum(scores, dist[prefix].min(axis=0))
        elif not prefix:
            scores = np.linalg.norm(dist, axis=1)
        else:
            scores = dist[prefix].min(axis=0)
    else:
        remaining = np.setdiff1d(np.arange(len(x)), prefix)
        sub = dist[np.ix_(remaining, remaining)]
        np.fill_diagonal(sub, np.inf)
        scores = np.full(len(x), np.nan)
        scores[remaining] = sub.min(axis=1)
    scores = scores.astype(np.float64)
    scores[prefix] = np.nan
    return scores


def assert_same_or_rounding_tie(
    x, ours, theirs, method, metric="euclidean", anchors=None, rtol=1e-5
):
    """Parity rule: identical sequences, except that at the first divergence both picks must be
    at the same distance up to float rounding (a tie float rounding decided). Returns how many
    leading picks are identical."""
    ours, theirs = [int(i) for i in ours], [int(i) for i in theirs]
    assert len(ours) == len(theirs)
    for step, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        if a == b:
            continue
        scores = step_scores(x, ours[:step], method, metric, anchors)
        va, vb = scores[a], scores[b]
        assert np.isclose(va, vb, rtol=rtol, atol=1e-7), (
            f"step {step}: ours picked {a} (value {va}), reference picked {b} (value {vb}): "
            "not a rounding tie"
        )
        return step
    return len(ours)


def zcore(x, dims, anchors, init_scores, metric, exponent, num_redundancy, eps=1e-8):
    """ZCore with given draws: a plain loop, float64, full argsort per sample (the paper's
    algorithm; the chosen point is excluded from its own neighbours by index)."""
    x = np.asarray(x, np.float64)
    scores = np.asarray(init_scores, np.float64).copy()
    n = len(x)
    for s in range(len(dims)):
        sub = x[:, dims[s]]
        diff = sub - np.asarray(anchors[s], np.float64)[None, :]
        to_anchor = np.abs(diff).sum(1) if metric == "l1" else (diff**2).sum(1)
        nearest = int(np.argmin(to_anchor))
        scores[nearest] += 1
        r = min(num_redundancy, n - 1)
        if r <= 0:
            continue
        diff = sub - sub[nearest][None, :]
        dist = np.abs(diff).sum(1) if metric == "l1" else np.sqrt((diff**2).sum(1))
        dist[nearest] = np.inf
        neighbours = np.argsort(dist, kind="stable")[:r]
        penalty = 1.0 / (dist[neighbours] + eps) ** exponent
        scores[neighbours] -= penalty / penalty.sum()
    return scores


def herding(x, k, kernel="rbf", length_scale=1.0):
    """Kernel herding with the full Gram matrix (float64)."""
    x = np.asarray(x, np.float64)
    if kernel == "linear":
        gram = x @ x.T
    else:
        gram = np.exp(-distances(x, x, "sqeuclidean") / (2 * length_scale**2))
    mean = gram.mean(axis=1)
    penalty = np.zeros(len(x))
    chosen: list[int] = []
    for t in range(k):
        score = mean - penalty / (t + 1)
        score[chosen] = -np.inf
        i = int(np.argmax(score))
        chosen.append(i)
        penalty += gram[:, i]
    return chosen


def tie_heavy(kind: str, n: int, d: int, seed: int = 7) -> np.ndarray:
    """float32 test data where exact ties are common: ``"normal"``; ``"relu"`` (many exact zeros:
    ties in every dimension and at distance 0); ``"duplicates"`` (coarse grid values and every row
    twice); ``"heavy"`` (Student-t tails: neighbourhoods far wider than typical)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    if kind == "relu":
        x = np.maximum(x, 0.0)
    elif kind == "duplicates":
        x = np.round(x * 2) / 2
        x[n // 2 :] = x[: n // 2]
    elif kind == "heavy":
        x = rng.standard_t(1.5, size=(n, d)).astype(np.float32)
    return x


def typicality(x, assignment, m):
    """TypiClust's typicality, brute force in float64: 1 / mean distance to the ``m`` nearest
    other rows of the same cluster (``inf`` when that mean is 0, 0 for a lone row)."""
    x = np.asarray(x, np.float64)
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    out = np.zeros(len(x))
    for i in range(len(x)):
        others = np.flatnonzero((assignment == assignment[i]) & (np.arange(len(x)) != i))
        near = np.sort(d[i, others])[:m]
        mean = near.mean() if near.size else 0.0
        out[i] = np.inf if mean == 0 else 1.0 / mean
    return out
