"""Label proposals for unlabelled samples and outlier scores, from exact nearest neighbours.

* ``propose_labels``: each unlabelled sample's ``k`` nearest *labelled* samples (exact, blocked,
  ``kernels.knn`` with queries) vote for a class, weighted by ``1 / (distance + eps)`` or
  uniformly: the vote share ``v``. The confidence is calibrated: ``p ∝ (v + a) ** (1 / T)``
  with the smoothing ``a`` and temperature ``T`` fitted (grid, least negative log-likelihood) on
  the *labelled* samples by leave-one-out (each labelled sample voted on by its ``k`` nearest
  other labelled samples: the same vote an unlabelled sample gets, one neighbour fewer in the
  pool). The proposal is ``argmax p`` (ties to the lowest class), its confidence ``max p``; the
  samples to send to a person first are the least confident (ties by index).
  ``method="propagation"`` spreads the labels over the kNN graph of *all* samples instead
  (label spreading, Zhou et al. 2004: ``F = (I - alpha S)^-1 Y``, ``S`` the symmetrically
  normalised graph of Gaussian-weighted ``k`` nearest neighbours), so unlabelled samples relay
  labels along the data's shape; its calibration is fitted on held-out folds of the labelled
  samples. It costs a kNN over all ``n`` samples (``O(n^2 d)``) instead of ``O(n L d)``.
* ``outliers``: each sample's distance to its ``k``-th nearest other sample (exact); the higher,
  the more isolated. Ranked highest first, ties by index.
* ``expected_calibration_error`` and ``reliability_plot`` measure a confidence against the truth.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from goldener_jax._neighbours import nearest_others, nearest_to
from goldener_jax.refine.data import check_int, load_vectors, rows_of

__all__ = [
    "LabelProposals",
    "Outliers",
    "expected_calibration_error",
    "outliers",
    "propose_labels",
    "reliability_plot",
]

WEIGHTINGS = ("distance", "uniform")
METHODS = ("knn", "propagation")
METRICS = ("euclidean", "sqeuclidean", "cosine")
# Queries per kNN call: the progress bar advances once per chunk.
_CHUNK = 1 << 14
_SMOOTHING = (1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
_TEMPERATURES = np.geomspace(0.05, 20.0, 81)


def _check_common(metric, weighting=None):
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if weighting is not None and weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")


def _knn_queries(x, k, queries, metric, block_size, mesh, progress, desc):
    """``k`` nearest rows of ``x`` to each query, float64 distances and int64 indices."""
    return nearest_to(
        x, k, queries, metric=metric, block_size=block_size, mesh=mesh, progress=progress,
        desc=desc, chunk=_CHUNK,
    )  # fmt: skip


def _knn_others(x, k, metric, block_size, mesh, progress, desc):
    """Each row's ``k`` nearest *other* rows (a duplicate still counts): float64, int64."""
    return nearest_others(
        x, k, metric=metric, block_size=block_size, mesh=mesh, progress=progress, desc=desc,
        chunk=_CHUNK,
    )  # fmt: skip


def _votes(dist, nbr_labels, num_classes, weighting, eps):
    """Vote shares ``[m, C]`` (rows sum to 1)."""
    w = np.ones_like(dist) if weighting == "uniform" else 1.0 / (dist + eps)
    v = np.zeros((dist.shape[0], num_classes))
    np.add.at(v, (np.arange(dist.shape[0])[:, None], nbr_labels), w)
    return v / v.sum(axis=1, keepdims=True)


def _calibrated(votes, smoothing, temperature):
    with np.errstate(divide="ignore"):  # uncalibrated: a class without votes has p = 0
        logp = np.log(votes + smoothing) / temperature
    logp -= logp.max(axis=1, keepdims=True)
    p = np.exp(logp)
    return p / p.sum(axis=1, keepdims=True)


def _fit_calibration(votes, y) -> tuple[float, float, float]:
    """``(smoothing, temperature, nll)`` minimising the mean NLL of ``y`` (grid search; ties to
    the first grid point, so the fit is deterministic)."""
    best = (np.inf, 0.0, 1.0)
    rows = np.arange(len(y))
    for a in _SMOOTHING:
        base = np.log(votes + a)
        for t in _TEMPERATURES:
            z = base / t
            z = z - z.max(axis=1, keepdims=True)
            nll = float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[rows, y]))
            if nll < best[0] - 1e-12:
                best = (nll, a, float(t))
    return best[1], best[2], best[0]


def expected_calibration_error(confidence, correct, *, n_bins: int = 10) -> float:
    """``sum_b |B_b|/n * |accuracy(B_b) - mean confidence(B_b)|`` over ``n_bins`` equal-width
    confidence bins of ``[0, 1]`` (the last bin includes 1)."""
    conf = np.asarray(confidence, np.float64)
    ok = np.asarray(correct, bool)
    if conf.shape != ok.shape or conf.ndim != 1:
        raise ValueError(
            f"confidence and correct must be 1-D of one length, got {conf.shape} and {ok.shape}"
        )
    n_bins = check_int(n_bins, "n_bins", 1)
    if conf.size == 0:
        return 0.0
    b = np.minimum((conf * n_bins).astype(np.int64), n_bins - 1)
    total = 0.0
    for j in range(n_bins):
        m = b == j
        if m.any():
            total += m.sum() / conf.size * abs(ok[m].mean() - conf[m].mean())
    return float(total)


def reliability_plot(confidence, correct, path, *, n_bins: int = 10, title: str | None = None):
    """Writes a reliability diagram (accuracy per confidence bin against the diagonal, and the
    share of samples per bin) to ``path`` (PNG); returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conf = np.asarray(confidence, np.float64)
    ok = np.asarray(correct, bool)
    ece = expected_calibration_error(conf, ok, n_bins=n_bins)
    edges = np.linspace(0, 1, n_bins + 1)
    b = np.minimum((conf * n_bins).astype(np.int64), n_bins - 1)
    acc = np.array([ok[b == j].mean() if (b == j).any() else np.nan for j in range(n_bins)])
    share = np.array([(b == j).mean() for j in range(n_bins)])
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(4.5, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    top.bar(edges[:-1], acc, width=1 / n_bins, align="edge", edgecolor="k", label="accuracy")
    top.plot([0, 1], [0, 1], "r--", label="perfect calibration")
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1)
    top.legend(loc="upper left")
    top.set_title(title or f"reliability (ECE {ece:.3f}, n={conf.size})")
    bottom.bar(edges[:-1], share, width=1 / n_bins, align="edge", edgecolor="k", color="gray")
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("share")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


@dataclasses.dataclass(frozen=True)
class LabelProposals:
    """Proposed labels of the unlabelled samples.

    Attributes:
      indices: ``[m]`` the unlabelled samples (sample ids for a store, rows for an array),
        increasing.
      labels: ``[m]`` proposed class of each.
      confidence: ``[m]`` calibrated probability of the proposed class.
      probabilities: ``[m, C]`` calibrated class probabilities.
      to_review: ``[m]`` the same samples, least confident first (ties by index).
      smoothing, temperature: the fitted calibration ``p ∝ (vote + smoothing) ** (1 / T)``.
      loo: leave-one-out figures on the labelled samples (accuracy, NLL, ECE before and after
        calibration).
      config: the arguments.
    """

    indices: np.ndarray
    labels: np.ndarray
    confidence: np.ndarray
    probabilities: np.ndarray
    to_review: np.ndarray
    smoothing: float
    temperature: float
    loo: dict
    config: dict

    def __len__(self) -> int:
        return len(self.indices)

    def review(self, count: int) -> list[dict]:
        """The ``count`` least confident samples as ``{"index", "label", "confidence"}``."""
        pos = np.searchsorted(self.indices, self.to_review[:count])
        return [
            {
                "index": int(self.indices[p]),
                "label": int(self.labels[p]),
                "confidence": float(self.confidence[p]),
            }
            for p in pos
        ]

    def to_json(self, limit: int | None = None) -> dict:
        """Config, calibration, and the review order (all of it or its first ``limit``)."""
        count = len(self) if limit is None else min(int(limit), len(self))
        return {
            "config": dict(self.config),
            "num_proposed": len(self),
            "calibration": {"smoothing": self.smoothing, "temperature": self.temperature},
            "leave_one_out": dict(self.loo),
            "to_review": self.review(count),
        }


def propose_labels(
    x,
    labelled_idx,
    labels,
    *,
    k: int | None = None,
    method: str = "knn",
    metric: str = "euclidean",
    weighting: str = "distance",
    num_classes: int | None = None,
    calibrate: bool = True,
    alpha: float = 0.9,
    folds: int | None = None,
    block_size: int | None = None,
    mesh=None,
    progress: bool = True,
) -> LabelProposals:
    """Proposes a label, with a calibrated confidence, for every unlabelled sample.

    Args:
      x: ``[n, d]`` embeddings, or a ``FeatureStore`` (or its path) with one vector per sample
        (indices are then sample ids).
      labelled_idx: ``[L]`` distinct indices of the labelled samples.
      labels: ``[L]`` their int class ids ``>= 0``.
      k: ``"knn"``: labelled neighbours that vote, ``1 <= k <= L - 1`` (default
        ``min(5, L - 1)``); ``"propagation"``: neighbours per sample in the graph, ``1 <= k <=
        n - 1`` (default ``min(10, n - 1)``).
      method: ``"knn"`` (vote of the labelled neighbours) or ``"propagation"`` (label spreading
        over the kNN graph of all samples, labelled and not; see ``_propagate``).
      metric: ``"euclidean"``, ``"sqeuclidean"`` or ``"cosine"``.
      weighting: ``"distance"`` (``1 / (d + eps)``, ``eps`` 1% of the median leave-one-out
        ``k``-th distance) or ``"uniform"``.
      num_classes: number of classes (default ``max(labels) + 1``).
      calibrate: fit smoothing and temperature by leave-one-out (``"knn"``) or on held-out
        folds of the labelled samples (``"propagation"``); else the raw vote shares.
      alpha: ``"propagation"``: how far labels spread, in ``(0, 1)``.
      folds: ``"propagation"``: folds of the labelled samples for the calibration fit
        (default ``min(5, labelled samples)``).
      block_size: passed to ``kernels.knn``.
      mesh: passed to ``kernels.knn`` (a mesh shards the rows over devices).
      progress: a tqdm bar over the queries when there are more than 16384.

    Returns:
      :class:`LabelProposals`.

    Raises:
      ValueError: indices out of range or repeated, labels of another length or negative,
        fewer than 2 labelled samples, no unlabelled sample, bad ``k`` / ``metric``.
    """
    _check_common(metric, weighting)
    x, sample_ids = load_vectors(x)
    n = x.shape[0]
    lab = rows_of(labelled_idx, sample_ids, n, "labelled_idx")
    if len(np.unique(lab)) != len(lab):
        raise ValueError("labelled_idx has repeated indices")
    y = np.asarray(labels)
    if y.shape != lab.shape:
        raise ValueError(
            f"labels must have shape {lab.shape} (one per labelled_idx), got {y.shape}"
        )
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"labels must be integer class ids, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise ValueError(f"labels must be >= 0, got {int(y.min())}")
    if len(lab) < 2:
        raise ValueError(f"propose_labels needs at least 2 labelled samples, got {len(lab)}")
    top = int(y.max()) + 1
    num_classes = top if num_classes is None else check_int(num_classes, "num_classes", top)
    unl = np.setdiff1d(np.arange(n), lab)
    if unl.size == 0:
        raise ValueError("every sample is labelled: nothing to propose")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "propagation":
        return _propose_by_propagation(
            x,
            sample_ids,
            lab,
            y,
            unl,
            k,
            metric,
            num_classes,
            calibrate,
            alpha,
            folds,
            block_size,
            mesh,
            progress,
        )
    k = min(5, len(lab) - 1) if k is None else check_int(k, "k", 1, len(lab) - 1)
    x_lab = x[np.sort(lab)]
    order = np.argsort(lab)
    y_sorted = y[order]
    loo_d, loo_i = _knn_others(x_lab, k, metric, block_size, mesh, progress, "labelled kNN")
    scale = float(np.median(loo_d[:, -1]))
    eps = 0.01 * scale if scale > 0 else 1e-12
    loo_votes = _votes(loo_d, y_sorted[loo_i], num_classes, weighting, eps)
    raw_conf = loo_votes.max(axis=1)
    raw_ok = loo_votes.argmax(axis=1) == y_sorted
    if calibrate:
        a, t, nll = _fit_calibration(loo_votes, y_sorted)
    else:
        a, t = 0.0, 1.0
        nll = float(-np.mean(np.log(np.maximum(loo_votes[np.arange(len(y)), y_sorted], 1e-300))))
    loo_p = _calibrated(loo_votes, a, t)
    loo = {
        "accuracy": float(raw_ok.mean()),
        "nll": nll,
        "ece_raw": expected_calibration_error(raw_conf, raw_ok),
        "ece": expected_calibration_error(loo_p.max(axis=1), loo_p.argmax(axis=1) == y_sorted),
    }
    d, i = _knn_queries(x_lab, k, x[unl], metric, block_size, mesh, progress, "propose labels")
    p = _calibrated(_votes(d, y_sorted[i], num_classes, weighting, eps), a, t)
    proposed = p.argmax(axis=1)
    conf = p[np.arange(len(unl)), proposed]
    ids = unl if sample_ids is None else sample_ids[unl]
    review = ids[np.lexsort((ids, conf))]
    config = {
        "k": k,
        "method": "knn",
        "metric": metric,
        "weighting": weighting,
        "num_classes": num_classes,
        "calibrate": bool(calibrate),
        "num_labelled": int(len(lab)),
    }
    return LabelProposals(ids, proposed, conf, p, review, float(a), float(t), loo, config)


# ---------------------------------------------------------------------------- propagation


def _propagate(graph, seeds: np.ndarray, alpha: float) -> np.ndarray:
    """Label spreading (Zhou et al. 2004): ``F = (I - alpha S)^-1 Y`` with ``S = D^-1/2 W
    D^-1/2``, by conjugate gradients on all classes at once (``I - alpha S`` is symmetric
    positive definite with condition number at most ``(1 + alpha) / (1 - alpha)``; one sparse
    product per iteration serves every class). ``seeds`` is ``Y`` ``[n, C]``; returns ``F``
    clipped at 0."""
    f = np.zeros(seeds.shape)
    r = seeds.astype(np.float64)
    p = r.copy()
    rs = np.sum(r * r, axis=0)
    goal = (1e-10 * np.sqrt(rs)) ** 2
    for _ in range(10 * graph.shape[0] + 10):
        if np.all(rs <= goal):
            break
        ap = p - alpha * (graph @ p)
        step = rs / np.maximum(np.sum(p * ap, axis=0), 1e-300)
        f += step * p
        r -= step * ap
        rs_next = np.sum(r * r, axis=0)
        p = r + (rs_next / np.maximum(rs, 1e-300)) * p
        rs = rs_next
    return np.maximum(f, 0.0)


def _shares(f: np.ndarray) -> np.ndarray:
    """Rows of ``f`` as shares; a row that received nothing (a component without any label)
    becomes uniform."""
    total = f.sum(axis=1, keepdims=True)
    return np.where(total > 0, f / np.where(total > 0, total, 1.0), 1.0 / f.shape[1])


def _propose_by_propagation(
    x,
    sample_ids,
    lab,
    y,
    unl,
    k,
    metric,
    num_classes,
    calibrate,
    alpha,
    folds,
    block_size,
    mesh,
    progress,
) -> LabelProposals:
    from scipy.sparse import coo_matrix, diags

    n = x.shape[0]
    k = min(10, n - 1) if k is None else check_int(k, "k", 1, n - 1)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ValueError(f"alpha must be a number in (0, 1), got {alpha!r}")
    folds = min(5, len(lab)) if folds is None else check_int(folds, "folds", 2, len(lab))
    dist, nbr = _knn_others(x, k, metric, block_size, mesh, progress, "kNN graph")
    sigma = float(np.median(dist[:, -1]))
    weight = np.exp(-((dist / (sigma if sigma > 0 else 1.0)) ** 2))
    w = coo_matrix((weight.ravel(), (np.repeat(np.arange(n), k), nbr.ravel())), shape=(n, n))
    w = w.tocsr()
    w = w.maximum(w.T)  # symmetric: an edge when either end lists the other
    degree = np.asarray(w.sum(axis=1)).ravel()
    inv_sqrt = diags(np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1e-300)), 0.0))
    graph = (inv_sqrt @ w @ inv_sqrt).tocsr()

    def seeds(rows, labels):
        s = np.zeros((n, num_classes))
        s[rows, labels] = 1.0
        return s

    # Held-out folds of the labelled samples give votes made without their own label: the
    # calibration is fitted on those, as leave-one-out does for the kNN vote.
    fold_of = np.random.default_rng(0).permutation(len(lab)) % folds
    held = np.zeros((len(lab), num_classes))
    for f in range(folds):
        keep = fold_of != f
        held[~keep] = _shares(_propagate(graph, seeds(lab[keep], y[keep]), alpha))[lab[~keep]]
    ok = held.argmax(axis=1) == y
    if calibrate:
        a, t, nll = _fit_calibration(held, y)
    else:
        a, t = 0.0, 1.0
        nll = float(-np.mean(np.log(np.maximum(held[np.arange(len(y)), y], 1e-300))))
    held_p = _calibrated(held, a, t)
    loo = {
        "accuracy": float(ok.mean()),
        "nll": nll,
        "ece_raw": expected_calibration_error(held.max(axis=1), ok),
        "ece": expected_calibration_error(held_p.max(axis=1), held_p.argmax(axis=1) == y),
        "folds": folds,
    }
    p = _calibrated(_shares(_propagate(graph, seeds(lab, y), alpha))[unl], a, t)
    proposed = p.argmax(axis=1)
    conf = p[np.arange(len(unl)), proposed]
    ids = unl if sample_ids is None else sample_ids[unl]
    review = ids[np.lexsort((ids, conf))]
    config = {
        "k": k,
        "method": "propagation",
        "metric": metric,
        "alpha": float(alpha),
        "num_classes": num_classes,
        "calibrate": bool(calibrate),
        "num_labelled": int(len(lab)),
    }
    return LabelProposals(ids, proposed, conf, p, review, float(a), float(t), loo, config)


# ------------------------------------------------------------------------------ outliers


def _distances64(x, nbr, metric) -> np.ndarray:
    """float64 ``[n, k]`` distance of each row to its listed neighbours (rows of ``nbr``)."""
    out = np.empty(nbr.shape)
    step = max(1, (1 << 22) // max(1, nbr.shape[1] * x.shape[1]))
    for start in range(0, x.shape[0], step):
        a = np.asarray(x[start : start + step], np.float64)
        b = np.asarray(x[nbr[start : start + step]], np.float64)
        if metric == "cosine":
            na = np.linalg.norm(a, axis=1)[:, None]
            nb = np.linalg.norm(b, axis=2)
            dot = np.einsum("nd,nkd->nk", a, b)
            with np.errstate(invalid="ignore", divide="ignore"):
                cos = np.where((na > 0) & (nb > 0), dot / (na * nb), 0.0)
            out[start : start + step] = 1.0 - cos
        else:
            sq = np.sum((a[:, None, :] - b) ** 2, axis=2)
            out[start : start + step] = sq if metric == "sqeuclidean" else np.sqrt(sq)
    return out


@dataclasses.dataclass(frozen=True)
class Outliers:
    """Samples ranked from most to least isolated.

    Attributes:
      indices: ``[n]`` sample indices (sample ids for a store), most isolated first.
      scores: ``[n]`` each ranked sample's distance to its ``k``-th nearest other sample.
      config: the arguments.
    """

    indices: np.ndarray
    scores: np.ndarray
    config: dict

    def __len__(self) -> int:
        return len(self.indices)

    def top(self, count: int) -> list[dict]:
        """The ``count`` most isolated samples as ``{"index", "score"}``."""
        return [
            {"index": int(i), "score": float(s)}
            for i, s in zip(self.indices[:count], self.scores[:count], strict=True)
        ]

    def to_json(self, limit: int | None = None) -> dict:
        count = len(self) if limit is None else min(int(limit), len(self))
        return {"config": dict(self.config), "num_samples": len(self), "ranking": self.top(count)}


def outliers(
    x,
    *,
    k: int = 10,
    metric: str = "euclidean",
    block_size: int | None = None,
    mesh=None,
    progress: bool = True,
) -> Outliers:
    """Ranks samples by their distance to the ``k``-th nearest other sample (exact).

    Args:
      x: ``[n, d]`` embeddings, or a ``FeatureStore`` (or its path) with one vector per sample.
      k: ``1 <= k <= n - 1``.
      metric: ``"euclidean"``, ``"sqeuclidean"`` or ``"cosine"``.
      block_size: passed to ``kernels.knn``.
      mesh: passed to ``kernels.knn`` (a mesh shards the rows over devices).
      progress: a tqdm bar over the queries when there are more than 16384 samples.

    Returns:
      :class:`Outliers`, highest score first (ties: lowest index first).
    """
    _check_common(metric)
    x, sample_ids = load_vectors(x)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"outliers needs at least 2 samples, got n={n}")
    k = check_int(k, "k", 1, n - 1)
    _, nbr = _knn_others(x, k, metric, block_size, mesh, progress, "outliers (kNN)")
    # The device's float32 distances lose small ones to cancellation (two equal rows come out
    # ~1e-3 apart); the score is recomputed in float64 from the k neighbours found.
    score = np.max(_distances64(x, nbr, metric), axis=1)
    ids = np.arange(n) if sample_ids is None else sample_ids
    order = np.lexsort((ids, -score))
    return Outliers(ids[order], score[order], {"k": k, "metric": metric})
