"""How well a selection stands for the data: coverage, distribution distances, class balance.

All measures compare the selected rows ``x[indices]`` with all rows ``x`` and are blocked
(``[block, n]`` temporaries, never an ``n x n`` matrix; ``O(n^2 d)`` work for the MMD and energy
distance):

* ``coverage_radius``: the largest Euclidean (or cosine) distance from a row to its nearest
  selected row (the k-center objective; smaller covers better);
* ``mmd``: the squared maximum mean discrepancy with an RBF kernel (median-distance bandwidth by
  default), ``mean k(S, S) + mean k(X, X) - 2 mean k(S, X)`` (0 when the selection's kernel mean
  equals the data's);
* ``energy_distance``: ``2 E|s - x| - E|s - s'| - E|x - x'|`` with Euclidean distances (0 for
  equal distributions);
* ``class_balance``: per-label counts and shares in the selection and in the data, and the total
  variation distance between the two label distributions.

``summary`` gathers them in a JSON-able dict. ``compare_to_random`` puts a selection against
random subsets of the same size: downstream accuracy (a classifier trained on the subset, scored
on a test set) over several seeds with mean, std and a 95% confidence interval, and the same
distribution measures for both.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from goldener_jax import kernels as gk
from goldener_jax.kernels._checks import as_float_matrix, check_metric
from goldener_jax.kernels.distance import (
    auto_block,
    block_rank_distances,
    fold_row_blocks,
    row_aux,
)

__all__ = [
    "class_balance",
    "compare_to_random",
    "comparison_table",
    "coverage_radius",
    "downstream_accuracy",
    "energy_distance",
    "mmd",
    "summary",
    "t_interval",
]


def downstream_accuracy(train_x, train_y, test_x, test_y, *, max_iter: int = 1000) -> float:
    """Test accuracy of a logistic regression trained on ``(train_x, train_y)``.

    A single-class training set predicts that class. The fit runs on one BLAS thread: next to
    JAX's threads on a small machine a multi-threaded BLAS made these small fits about 100x
    slower (2.4 s -> 0.02 s for 1,006 samples on 2 cores).
    """
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    train_y = np.asarray(train_y)
    if len(np.unique(train_y)) < 2:
        return float(np.mean(np.asarray(test_y) == train_y[0]))
    with threadpool_limits(1):
        clf = LogisticRegression(max_iter=max_iter)
        clf.fit(train_x, train_y)
        return float(clf.score(test_x, test_y))


def _indices(indices, n: int) -> np.ndarray:
    idx = np.asarray(indices)
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"indices must be a 1-D integer array, got {idx.dtype} {idx.shape}")
    if idx.size == 0:
        raise ValueError("indices must not be empty")
    if idx.min() < 0 or idx.max() >= n:
        raise ValueError(f"indices must lie in [0, {n}), got range [{idx.min()}, {idx.max()}]")
    return idx.astype(np.int64)


@partial(jax.jit, static_argnames=("kind", "block_size"))
def _mean_pair(a, b, scale, *, kind, block_size):
    """``mean_{i, j} f(|a_i - b_j|)`` with f = RBF(scale) or the distance itself."""
    block = auto_block(b.shape[0], a.shape[0], block_size)
    a_aux, b_aux = row_aux(a, "euclidean"), row_aux(b, "euclidean")

    def fold(rows, start, fresh_from, total):
        fresh = (start + jnp.arange(block)) >= fresh_from
        aux = jax.lax.dynamic_slice_in_dim(a_aux, start, block)
        sq = block_rank_distances(rows, aux, b, b_aux, "euclidean")
        v = jnp.exp(-sq / (2.0 * scale**2)) if kind == "rbf" else jnp.sqrt(sq)
        return total + jnp.sum(jnp.where(fresh[:, None], v, 0.0))

    total = fold_row_blocks(fold, a, block, jnp.zeros((), jnp.float32))
    return total / (a.shape[0] * b.shape[0])


def _centred(x) -> jax.Array:
    """``x`` less its column means (taken in float64), as float32. The three measures below do
    not change under a shift, but their float32 ``|a|^2 + |b|^2 - 2 a.b`` does: data 1,000 away
    from the origin moved the energy distance 2 % and the MMD 8 % before this."""
    x64 = np.asarray(x, np.float64)
    return jnp.asarray(x64 - x64.mean(axis=0), jnp.float32)


def coverage_radius(x, indices, *, metric: str = "euclidean") -> float:
    """Largest distance from a row of ``x`` to its nearest row of ``x[indices]``."""
    check_metric(metric)
    x = as_float_matrix(x, "x")
    if metric != "cosine":  # cosine depends on where the origin is: the rows as given
        x = _centred(x)
    idx = _indices(indices, x.shape[0])
    state = gk.kcenter_init(x, 0, metric=metric, anchors=x[idx])
    return float(gk.kcenter_coverage_radius(state, metric=metric))


def mmd(x, indices, *, length_scale: float | None = None, block_size: int | None = None) -> float:
    """Squared RBF MMD between ``x[indices]`` and ``x`` (bandwidth: median distance if None)."""
    x = _centred(as_float_matrix(x, "x"))
    idx = _indices(indices, x.shape[0])
    scale = gk.median_length_scale(x) if length_scale is None else float(length_scale)
    if not scale > 0:
        raise ValueError(f"length_scale must be > 0, got {length_scale}")
    s = x[idx]
    kw = {"kind": "rbf", "block_size": block_size}
    v = _mean_pair(s, s, scale, **kw) + _mean_pair(x, x, scale, **kw)
    v = v - 2.0 * _mean_pair(s, x, scale, **kw)
    return max(float(v), 0.0)


def energy_distance(x, indices, *, block_size: int | None = None) -> float:
    """Energy distance ``2 E|s - x| - E|s - s'| - E|x - x'|`` between ``x[indices]`` and ``x``."""
    x = _centred(as_float_matrix(x, "x"))
    idx = _indices(indices, x.shape[0])
    s = x[idx]
    kw = {"kind": "distance", "block_size": block_size}
    v = 2.0 * _mean_pair(s, x, 1.0, **kw) - _mean_pair(s, s, 1.0, **kw)
    v = v - _mean_pair(x, x, 1.0, **kw)
    return max(float(v), 0.0)


def class_balance(labels, indices) -> dict:
    """Per-label counts and shares in the selection and the data; ``total_variation`` is half the
    L1 distance between the two label distributions (0: same balance)."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D [n], got shape {labels.shape}")
    idx = _indices(indices, labels.shape[0])
    names, all_counts = np.unique(labels, return_counts=True)
    sel_counts = np.array([np.count_nonzero(labels[idx] == v) for v in names])
    p_all = all_counts / all_counts.sum()
    p_sel = sel_counts / sel_counts.sum()
    return {
        "labels": [v.item() if hasattr(v, "item") else v for v in names],
        "selected": sel_counts.tolist(),
        "total": all_counts.tolist(),
        "selected_share": p_sel.tolist(),
        "total_share": p_all.tolist(),
        "total_variation": float(0.5 * np.abs(p_sel - p_all).sum()),
    }


def summary(x, indices, *, labels=None, metric: str = "euclidean") -> dict:
    """All measures of a selection, JSON-able: ``count``, ``n``, ``coverage_radius``, ``mmd``,
    ``energy_distance`` and, with ``labels``, ``class_balance``."""
    out = {
        "count": int(np.asarray(indices).shape[0]),
        "n": int(np.asarray(x).shape[0]),
        "coverage_radius": coverage_radius(x, indices, metric=metric),
        "mmd": mmd(x, indices),
        "energy_distance": energy_distance(x, indices),
    }
    if labels is not None:
        out["class_balance"] = class_balance(labels, indices)
    return out


def t_interval(values, confidence: float = 0.95) -> tuple[float, float]:
    """Confidence interval of the mean of ``values`` (Student's t; a point for one value)."""
    from scipy import stats

    v = np.asarray(values, np.float64)
    if v.size < 2:
        m = float(v.mean()) if v.size else float("nan")
        return m, m
    half = stats.t.ppf(0.5 + confidence / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)
    return float(v.mean() - half), float(v.mean() + half)


def _spread(values) -> dict:
    v = np.asarray(values, np.float64)
    lo, hi = t_interval(v)
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
        "ci95": [lo, hi],
        "values": [float(a) for a in v],
    }


def compare_to_random(
    x,
    labels,
    indices,
    *,
    test_x,
    test_y,
    key,
    train_fn=None,
    seeds: int = 10,
    measures: bool = True,
    progress: bool = True,
) -> dict:
    """Downstream accuracy and distribution measures of a selection against random subsets.

    For each of ``seeds`` random subsets of ``x`` with the selection's size (drawn with
    ``kernels.random_subset(fold_in(key, seed), ...)``), ``train_fn`` is trained on the subset
    and scored on ``(test_x, test_y)``; the selection is scored once the same way.

    Args:
      x: the pool's vectors ``[n, d]``.
      labels: the pool's labels ``[n]`` (what ``train_fn`` learns).
      indices: the selection, 1-D sample indices into ``x``.
      test_x: held-out vectors the accuracy is measured on.
      test_y: their labels.
      key: a ``jax.random.key`` for the random subsets.
      train_fn: ``(train_x, train_y, test_x, test_y) -> accuracy``; default
        :func:`downstream_accuracy` (logistic regression).
      seeds: random subsets (>= 2 for a confidence interval).
      measures: also compute coverage radius, MMD and energy distance to ``x`` of the selection
        and of each random subset (``O(n^2 d)`` each), and the selection's class balance.
      progress: show a tqdm bar over the selection and the random subsets.

    Returns:
      A JSON-able dict: ``count``, ``n``, ``selection`` (``accuracy`` and the measures),
      ``random`` (per quantity ``mean``, ``std``, ``ci95`` (t-distribution), ``values``), and
      ``difference``: the selection's accuracy minus random's mean, with the 95% interval of
      that difference, and ``beats``: in how many seeds the selection is at least as accurate.
    """
    from tqdm.auto import tqdm

    if not (isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)):
        raise TypeError(f"key must be a jax.random.key(...), got {key!r}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be an int >= 1, got {seeds!r}")
    x_np = np.asarray(x)
    if x_np.ndim != 2:
        raise ValueError(f"x must be 2-D [n, d], got shape {x_np.shape}")
    n = x_np.shape[0]
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape [{n}], got {labels.shape}")
    idx = _indices(indices, n)
    if np.unique(idx).size != idx.size:
        raise ValueError("indices must be distinct")
    test_x, test_y = np.asarray(test_x), np.asarray(test_y)
    if test_x.ndim != 2 or test_x.shape[1] != x_np.shape[1] or test_y.shape != (test_x.shape[0],):
        raise ValueError(
            f"test_x must be [m, {x_np.shape[1]}] and test_y [m], got {test_x.shape} and "
            f"{test_y.shape}"
        )
    train = downstream_accuracy if train_fn is None else train_fn

    def measure(sub) -> dict:
        out = {"accuracy": float(train(x_np[sub], labels[sub], test_x, test_y))}
        if measures:
            out["coverage_radius"] = coverage_radius(x_np, sub)
            out["mmd"] = mmd(x_np, sub)
            out["energy_distance"] = energy_distance(x_np, sub)
        return out

    with tqdm(
        total=seeds + 1, desc="compare to random", unit="subset", disable=not progress
    ) as bar:
        chosen = measure(idx)
        if measures:
            chosen["class_balance"] = class_balance(labels, idx)
        bar.update()
        runs = []
        for s in range(seeds):
            runs.append(
                measure(np.asarray(gk.random_subset(jax.random.fold_in(key, s), n, idx.size)))
            )
            bar.update()
    rand = {q: _spread([r[q] for r in runs]) for q in runs[0]}
    rand_acc = np.asarray(rand["accuracy"]["values"])
    lo, hi = rand["accuracy"]["ci95"]
    return {
        "count": int(idx.size),
        "n": int(n),
        "seeds": seeds,
        "selection": chosen,
        "random": rand,
        "difference": {
            "accuracy": chosen["accuracy"] - rand["accuracy"]["mean"],
            "ci95": [chosen["accuracy"] - hi, chosen["accuracy"] - lo],
            "beats": int(np.sum(chosen["accuracy"] >= rand_acc)),
        },
    }


def comparison_table(result: dict) -> str:
    """A plain-text table of :func:`compare_to_random`'s result."""
    rows = [("measure", "selection", "random mean ± std", "random 95% CI")]
    for q in ("accuracy", "coverage_radius", "mmd", "energy_distance"):
        if q not in result["random"]:
            continue
        r = result["random"][q]
        rows.append(
            (
                q,
                f"{result['selection'][q]:.4g}",
                f"{r['mean']:.4g} ± {r['std']:.2g}",
                f"[{r['ci95'][0]:.4g}, {r['ci95'][1]:.4g}]",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    d = result["difference"]
    lines.append(
        f"selection - random accuracy: {100 * d['accuracy']:+.2f} points "
        f"(95% CI [{100 * d['ci95'][0]:+.2f}, {100 * d['ci95'][1]:+.2f}]), at least as accurate "
        f"as {d['beats']} of {result['seeds']} random subsets of {result['count']}"
    )
    bal = result["selection"].get("class_balance")
    if bal is not None:
        lines.append(f"class balance: total variation to the data {bal['total_variation']:.3f}")
    return "\n".join(lines)
