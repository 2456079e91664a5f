"""The main job, end to end, on scikit-learn's bundled digits (nothing is downloaded).

1. A small Flax Linen CNN is trained with optax for a few seconds on a *pretrain* part of the
   digits (its labels play the part of a pretrained backbone's data).
2. ``gj.describe`` writes features captured from several of its layers (``Conv_0``, ``Conv_1``,
   ``Dense_0``, mean-pooled and concatenated) for every other image into a store under ``--out``.
3. Smart sampling: ``gj.select`` chooses 2%, 5%, 10%, 20% of the *pool* (no labels used) with
   ``kcenter``, ``zcore`` and ``auto``, against random subsets of the same size (several seeds); a
   logistic regression trained on each subset's embeddings is scored on a held-out test part.
4. Smart split: ``gj.split`` 70/15/15 stratified by label against random stratified splits: set
   sizes, class balance, coverage radius of each set, energy distance and RBF MMD of each set to
   the whole, and how far validation accuracy is from test accuracy.
5. Curation: on a copy of the pool's labels with 5% of them flipped to another class,
   ``gj.label_issues`` ranks the samples; the report gives the share of planted flips among the
   top-#flips suspects (precision; a random ranking would score the flip rate), and
   ``gj.near_duplicates`` counts exact duplicates among the described images.

Everything lands in ``--out``: the store, the selections and splits (``.npy`` + JSON manifests),
``report.md`` and PNG plots. A rerun reuses the CNN weights, the store, the selections and the
splits, and only recomputes the (cheap) classifier scores and plots. Cached selections are keyed
by method, budget and seed only: after upgrading goldener-jax (e.g. a new ``auto`` rule), use a
fresh ``--out`` to recompute them.
"""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np

from goldener_jax.evaluate import coverage_radius, downstream_accuracy, energy_distance, mmd

DEFAULT_BUDGETS = (0.02, 0.05, 0.1, 0.2)
SMART_METHODS = ("kcenter", "zcore", "auto")
# Methods whose result does not depend on the key (one run stands for every seed).
DETERMINISTIC = ("kcenter",)
METHOD_OPTIONS = {"zcore": {"num_samples": 20_000}}
SPLIT_SETS = {"train": 0.7, "val": 0.15, "test": 0.15}
LAYERS = ("Conv_0", "Conv_1", "Dense_0")
PRETRAIN_FRACTION = 0.2  # of all digits: trains the CNN, never selected or split
TEST_FRACTION = 0.3  # of the rest: held out to score the classifiers trained on the selections
FLIP_RATE = 0.05  # share of the pool's labels flipped to plant label issues
LABEL_ISSUE_K = 10


def _check(budgets, seeds) -> None:
    for b in budgets:
        if not 0 < b <= 1:
            raise ValueError(f"budget must be a fraction in (0, 1], got {b}")
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")


# --------------------------------------------------------------------------- data and model


def digits():
    """scikit-learn's digits as the demo cuts them (fixed seeds, stratified by label).

    Returns:
      ``(images, labels, pretrain, rest, pool, test)``: images ``float32 [N, 8, 8, 1]`` in
      ``[0, 1]``, labels ``int64 [N]``, and sorted indices: ``pretrain`` (20%, trains the CNN),
      ``rest`` (the others, described), split into the selection ``pool`` and a held-out
      ``test`` part (30% of ``rest``).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images.astype(np.float32) / 16.0)[..., None]  # [N, 8, 8, 1] in [0, 1]
    y = digits.target.astype(np.int64)
    idx = np.arange(len(y))
    pre_idx, rest_idx = train_test_split(
        idx, train_size=PRETRAIN_FRACTION, random_state=0, stratify=y
    )
    pool_idx, test_idx = train_test_split(
        rest_idx, test_size=TEST_FRACTION, random_state=0, stratify=y[rest_idx]
    )
    return images, y, np.sort(pre_idx), np.sort(rest_idx), np.sort(pool_idx), np.sort(test_idx)


def digits_cnn():
    """The demo's small Flax Linen CNN (two convolutions, average pooling, two dense layers);
    its layers ``Conv_0``, ``Conv_1``, ``Dense_0`` are the ones described."""
    import flax.linen as nn

    class DigitsCNN(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(16, (3, 3))(x))
            x = nn.relu(nn.Conv(32, (3, 3))(x))
            x = nn.avg_pool(x, (2, 2), (2, 2))
            x = nn.relu(nn.Dense(64)(x.reshape(x.shape[0], -1)))
            return nn.Dense(10)(x)

    return DigitsCNN()


def train_cnn(model, images, labels, path: str, steps: int) -> tuple[dict, dict]:
    """Trains ``model`` with ``steps`` steps of full-batch Adam on ``(images, labels)``.

    The weights are saved to ``path`` (msgpack); when ``path`` exists they are read back instead
    of training. Returns ``(variables, info)``, ``info`` saying whether they were reused, the
    steps, the seconds and, when trained, the final loss and training accuracy.
    """
    import flax.serialization
    import jax
    import jax.numpy as jnp
    import optax

    variables = model.init(jax.random.key(0), images[:1])
    if os.path.exists(path):
        with open(path, "rb") as f:
            variables = flax.serialization.from_bytes(variables, f.read())
        return variables, {"reused": True, "steps": steps, "seconds": 0.0}
    tx = optax.adam(3e-3)
    opt = tx.init(variables["params"])
    x, y = jnp.asarray(images), jnp.asarray(labels)

    @jax.jit
    def step(params, opt):
        def loss_fn(p):
            logits = model.apply({"params": p}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, loss

    t0 = time.perf_counter()
    params = variables["params"]
    for _ in range(steps):
        params, opt, loss = step(params, opt)
    variables = {"params": params}
    acc = float(jnp.mean(jnp.argmax(model.apply(variables, x), -1) == y))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(flax.serialization.to_bytes(variables))
    os.replace(tmp, path)
    info = {"reused": False, "steps": steps, "seconds": time.perf_counter() - t0}
    return variables, {**info, "final_loss": float(loss), "train_accuracy": acc}


# --------------------------------------------------------------------------- cached steps


def _cached_indices(path: str, compute) -> tuple[np.ndarray, bool]:
    """Loads ``path`` (.npy) if a previous run wrote it, else computes and writes it."""
    if os.path.exists(path):
        return np.load(path), True
    idx = np.asarray(compute(), np.int64)
    tmp = path[:-4] + ".tmp.npy"
    np.save(tmp, idx)
    os.replace(tmp, path)
    return idx, False


def _library_digest() -> str:
    """A digest of the library's source (``goldener_jax`` and its kernels): cached selections
    and splits are results of this code, so a changed library recomputes them."""
    import hashlib

    from goldener_jax import kernels

    h = hashlib.sha256()
    for root in (os.path.dirname(__file__), os.path.dirname(kernels.__file__)):
        for dirpath, _, files in sorted(os.walk(root)):
            for name in sorted(f for f in files if f.endswith((".py", ".cpp"))):
                with open(os.path.join(dirpath, name), "rb") as f:
                    h.update(name.encode() + f.read())
    return h.hexdigest()[:16]


def _drop_stale_results(out: str, dirs: tuple[str, ...]) -> None:
    """Removes cached results in ``dirs`` written by another version of the library."""
    stamp, digest = os.path.join(out, "library_digest.txt"), _library_digest()
    old = open(stamp).read().strip() if os.path.exists(stamp) else None
    if old != digest:
        for d in dirs:
            for name in os.listdir(d) if os.path.isdir(d) else ():
                os.remove(os.path.join(d, name))
        with open(stamp, "w") as f:
            f.write(digest + "\n")


def _flip_labels(labels, rate: float, seed: int, num_classes: int):
    """A copy of ``labels`` with ``round(rate * n)`` of them moved to another class at random;
    returns ``(noisy, flipped_indices)``."""
    rng = np.random.default_rng(seed)
    flipped = np.sort(rng.choice(len(labels), int(round(rate * len(labels))), replace=False))
    noisy = np.array(labels, copy=True)
    noisy[flipped] = (noisy[flipped] + rng.integers(1, num_classes, len(flipped))) % num_classes
    return noisy, flipped


def _curation(pool_x, pool_y, out: str, progress: bool) -> tuple[dict, np.ndarray, np.ndarray]:
    """Label issues on a copy of the pool with planted flips; writes ``curation/*.json``."""
    import goldener_jax as gj

    noisy, flipped = _flip_labels(pool_y, FLIP_RATE, seed=0, num_classes=10)
    res = gj.label_issues(pool_x, noisy, k=LABEL_ISSUE_K, progress=progress)
    n_flip = len(flipped)
    is_flip = np.isin(res.indices, flipped)
    found = res.indices[:n_flip][is_flip[:n_flip]]
    suggested = dict(zip(res.indices.tolist(), res.suggested.tolist(), strict=True))
    info = {
        "flip_rate": FLIP_RATE,
        "flipped": n_flip,
        "k": LABEL_ISSUE_K,
        "precision_at_flips": float(is_flip[:n_flip].mean()),
        "recall_at_2x_flips": float(is_flip[: 2 * n_flip].sum() / n_flip),
        "suggested_is_true_label": float(
            np.mean([suggested[int(i)] == pool_y[i] for i in found]) if len(found) else 0.0
        ),
        "disagreeing": res.num_disagreeing,
    }
    os.makedirs(os.path.join(out, "curation"), exist_ok=True)
    with open(os.path.join(out, "curation", "label_issues.json"), "w") as f:
        rec = {**res.to_json(limit=100), "summary": info, "planted_flips": flipped.tolist()}
        json.dump(rec, f, indent=1)  # indices: rows of the pool
    return info, res.indices, flipped


def _random_stratified_split(labels, seed):
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    train, rest = train_test_split(
        idx, train_size=SPLIT_SETS["train"], random_state=seed, stratify=labels
    )
    val, test = train_test_split(rest, test_size=0.5, random_state=seed, stratify=labels[rest])
    return {"train": train, "val": val, "test": test}


# --------------------------------------------------------------------------- the demo


def run(
    budget: float | None = None,
    seeds: int = 5,
    *,
    out: str = "out/demo",
    budgets=None,
    methods=SMART_METHODS,
    split_seeds: int | None = None,
    train_steps: int = 300,
    progress: bool = True,
    verbose: bool = True,
) -> dict:
    """Runs the demo, prints its summary, writes ``out``; returns the figures.

    Args:
      budget: one budget (a fraction of the pool); the default runs 2%, 5%, 10% and 20%.
      seeds: random baselines (and keys of the smart methods) per budget.
      out: output directory (store, selections, splits, report.md, PNG plots). Reused on rerun.
      budgets: several budgets (overrides ``budget``).
      methods: smart methods given to ``gj.select``.
      split_seeds: smart and random splits compared (default: ``seeds``).
      train_steps: full-batch Adam steps of the CNN.
    """
    import jax
    from tqdm.auto import tqdm

    import goldener_jax as gj
    from goldener_jax import FeatureStore
    from goldener_jax import kernels as gk
    from goldener_jax import report as rep

    if budgets is None:
        budgets = DEFAULT_BUDGETS if budget is None else (budget,)
    budgets = tuple(float(b) for b in budgets)
    split_seeds = seeds if split_seeds is None else split_seeds
    _check(budgets, seeds)
    _check((), split_seeds)
    t_start = time.perf_counter()
    timings = {}
    os.makedirs(out, exist_ok=True)
    say = print if verbose else (lambda *a, **k: None)

    # 1. data and the CNN
    images, y, pre_idx, rest_idx, pool_idx, test_idx = digits()
    model = digits_cnn()
    t0 = time.perf_counter()
    variables, cnn_info = train_cnn(
        model, images[pre_idx], y[pre_idx], os.path.join(out, "cnn.msgpack"), train_steps
    )
    timings["train CNN"] = time.perf_counter() - t0

    # 2. describe the images the CNN never saw (pool + test) into a store
    t0 = time.perf_counter()
    store_path = os.path.join(out, "store")
    extractor = gj.FeatureExtractor(model=model, variables=variables, layers=list(LAYERS))
    done_before = 0
    if FeatureStore.peek_manifest(os.path.abspath(store_path)) is not None:
        done_before = int(np.sum(FeatureStore.open(os.path.abspath(store_path)).done_batches()))
    store = gj.describe(
        images[rest_idx],
        extractor,
        os.path.abspath(store_path),
        batch_size=256,
        labels=y[rest_idx],
        progress=progress,
    )
    vectors, _ = store.read_vectors()
    labels = store.read_labels()
    describe_info = {
        "samples": int(store.num_samples),
        "dim": int(store.dim),
        "batches": int(store.num_batches),
        "batches_reused": done_before,
    }
    timings["describe"] = time.perf_counter() - t0
    # standardise each feature over all described samples (no labels involved)
    feats = (vectors - vectors.mean(0)) / (vectors.std(0) + 1e-6)
    pos = {int(s): i for i, s in enumerate(rest_idx)}
    pool = np.array([pos[int(s)] for s in pool_idx])  # rows of `feats`
    test = np.array([pos[int(s)] for s in test_idx])
    pool_x, pool_y, test_x, test_y = feats[pool], labels[pool], feats[test], labels[test]
    n_pool = len(pool)

    # 3. smart sampling vs random
    t0 = time.perf_counter()
    sel_dir = os.path.join(out, "selections")
    # Cached picks and splits are reused only if this same library wrote them.
    _drop_stale_results(out, (sel_dir, os.path.join(out, "splits")))
    os.makedirs(sel_dir, exist_ok=True)
    all_methods = (*methods, "random")
    jobs = [(b, m, s) for b in budgets for m in all_methods for s in range(seeds)]
    acc = {(b, m): [] for b in budgets for m in all_methods}
    radius = {(b, m): [] for b in budgets for m in all_methods}
    picks, reused = {}, 0
    for b, m, s in tqdm(jobs, desc="select + classify", disable=not progress, unit="run"):
        stem = os.path.join(sel_dir, f"{m}_{b:g}_seed{s}")

        if m in DETERMINISTIC and s > 0:
            picks[(b, m, s)] = picks[(b, m, 0)]
            acc[(b, m)].append(acc[(b, m)][0])
            radius[(b, m)].append(radius[(b, m)][0])
            continue

        def compute(b=b, m=m, s=s, stem=stem):
            opts = METHOD_OPTIONS.get(m)
            sel = gj.select(
                pool_x, b, method=m, key=jax.random.key(s), method_options=opts, progress=False
            )
            with open(stem + ".json", "w") as f:
                rec = {**sel.to_json(), "digits_indices": pool_idx[sel.indices].tolist()}
                json.dump(rec, f, indent=1)  # indices: rows of the pool
            return sel.indices

        idx, was_cached = _cached_indices(stem + ".npy", compute)
        reused += was_cached
        picks[(b, m, s)] = idx
        acc[(b, m)].append(downstream_accuracy(pool_x[idx], pool_y[idx], test_x, test_y))
        radius[(b, m)].append(coverage_radius(pool_x, idx))
    timings["select + classify"] = time.perf_counter() - t0
    resolved = {}  # what method="auto" chose, from the selections' manifests
    for b in budgets:
        manifest = os.path.join(sel_dir, f"auto_{b:g}_seed0.json")
        if "auto" in methods and os.path.exists(manifest):
            with open(manifest) as f:
                resolved[f"{b:g}"] = json.load(f)["config"]["method"]
    full_acc = downstream_accuracy(pool_x, pool_y, test_x, test_y)

    # 4. smart split vs random stratified splits (over pool + test, every described sample)
    t0 = time.perf_counter()
    split_dir = os.path.join(out, "splits")
    os.makedirs(split_dir, exist_ok=True)
    split_rows = {"smart": [], "random": []}
    split_examples = {}
    length_scale = gk.median_length_scale(feats)  # one RBF bandwidth for every set's MMD
    for kind, s in tqdm(
        # the smart split (method="auto", representative sets) and random ones, seed for seed
        [(kind, s) for kind in ("smart", "random") for s in range(split_seeds)],
        desc="split + classify",
        disable=not progress,
        unit="split",
    ):
        stem = os.path.join(split_dir, f"{kind}_seed{s}")
        if all(os.path.exists(f"{stem}_{n}.npy") for n in SPLIT_SETS):
            sets = {n: np.load(f"{stem}_{n}.npy") for n in SPLIT_SETS}
            reused += 1
        else:
            if kind == "smart":
                sets = dict(
                    gj.split(
                        feats,
                        SPLIT_SETS,
                        method="auto",
                        key=jax.random.key(s),
                        labels=labels,
                        manifest_path=stem + ".json",
                        progress=False,
                    )
                )
            else:
                sets = _random_stratified_split(labels, s)
                with open(stem + ".json", "w") as f:
                    json.dump({n: [int(i) for i in v] for n, v in sets.items()}, f)
            for n, v in sets.items():
                np.save(f"{stem}_{n}.npy", np.asarray(v, np.int64))
        split_examples.setdefault(kind, sets)
        tr, va, te = sets["train"], sets["val"], sets["test"]
        val_acc = downstream_accuracy(feats[tr], labels[tr], feats[va], labels[va])
        test_acc = downstream_accuracy(feats[tr], labels[tr], feats[te], labels[te])
        split_rows[kind].append(
            {
                "sizes": {n: len(v) for n, v in sets.items()},
                "class_counts": {
                    n: np.bincount(labels[v], minlength=10).tolist() for n, v in sets.items()
                },
                "radius": {n: coverage_radius(feats, np.asarray(v)) for n, v in sets.items()},
                "energy": {n: energy_distance(feats, v) for n, v in sets.items()},
                "mmd": {n: mmd(feats, v, length_scale=length_scale) for n, v in sets.items()},
                "val_acc": val_acc,
                "test_acc": test_acc,
                "gap": abs(val_acc - test_acc),
            }
        )
    timings["split + classify"] = time.perf_counter() - t0

    # 5. curation: planted label flips in a copy of the pool; exact duplicates among the images
    t0 = time.perf_counter()
    curation, issue_ranking, flipped = _curation(pool_x, pool_y, out, progress)
    dups = gj.near_duplicates(feats, threshold=0.0, progress=progress)
    curation["duplicate_groups"] = len(dups)
    curation["duplicate_rows"] = int(sum(len(g) for g in dups.groups))
    timings["curate"] = time.perf_counter() - t0

    # 6. summary, report, plots
    t0 = time.perf_counter()
    summary = {
        "out": out,
        "data": {
            "pretrain": len(pre_idx),
            "pool": n_pool,
            "test": len(test),
            "classes": 10,
        },
        "cnn": cnn_info,
        "describe": describe_info,
        "budgets": list(budgets),
        "methods": list(methods),
        "seeds": seeds,
        "counts": {f"{b:g}": math.ceil(b * n_pool) for b in budgets},
        "accuracy": {f"{m}@{b:g}": acc[(b, m)] for b in budgets for m in all_methods},
        "radius": {f"{m}@{b:g}": radius[(b, m)] for b in budgets for m in all_methods},
        "full_pool_accuracy": full_acc,
        "auto_resolved": resolved,
        "split": split_rows,
        "curation": curation,
        "reused_selections_and_splits": reused,
    }
    plots = rep.write_plots(
        out,
        summary,
        feats=feats,
        pool=pool,
        pool_y=pool_y,
        picks=picks,
        split_examples=split_examples,
        labels=labels,
        issue_ranking=issue_ranking,
        flipped=flipped,
    )
    timings["report + plots"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    summary["timings_s"] = timings
    if hasattr(os, "getloadavg"):  # other work on the machine stretches the times above
        summary["machine"] = {"cpus": os.cpu_count(), "load_average_1min": os.getloadavg()[0]}
    summary["plots"] = plots
    text = rep.summary_text(summary)
    rep.write_report(out, summary, text)
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    say(text)
    return summary


QUICK = {"budgets": (0.05, 0.1), "seeds": 2, "train_steps": 100}


def main(*, budgets=None, seeds=None, out="out/demo", quick=False, **kw) -> dict:
    """The ``goldener-jax demo`` command: :func:`run` with ``--quick`` defaults when asked."""
    defaults = dict(QUICK) if quick else {}
    if budgets:
        defaults["budgets"] = budgets
    if seeds is not None:
        defaults["seeds"] = seeds
    return run(out=out, **defaults, **kw)
