"""Click-to-mask on the offline shapes set: mean IoU of feature masks vs raw-pixel baselines.

    .venv/bin/python scripts/click_mask_eval.py --num 200 \
        --json docs/results/click_mask_shapes.json --plot docs/images/click_mask_shapes.png

The features come from a small conv net defined here, randomly initialised (no training): the
point is what the spatial map of a generic conv layer gives. Baselines: a fixed box of the true
masks' mean size (an oracle size) and flood fill on raw / blurred pixels with the tolerance that
scores best on this very set (also an oracle). The feature method uses Otsu's threshold.
"""

from __future__ import annotations

import argparse
import json
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from goldener_jax.refine import click_masks
from goldener_jax.refine.shapes import box_masks, flood_masks, iou, make_shapes


class Stage(nn.Module):
    """conv -> relu -> average pool (the texture energy of a random filter bank)."""

    features: int
    pool: int = 2

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(self.features, (3, 3), padding="REFLECT", name="conv")(x))
        return nn.avg_pool(x, (self.pool, self.pool), strides=(self.pool, self.pool))


class TextureNet(nn.Module):
    widths: tuple[int, ...] = (32, 64)

    @nn.compact
    def __call__(self, x):
        for i, w in enumerate(self.widths):
            x = Stage(w, name=f"stage_{i}")(x)
        return jnp.mean(x, axis=(1, 2))


def evaluate(num, size, seed, layer, upsample, widths=(32, 64), center="center"):
    images, truth, clicks = make_shapes(num, size=size, seed=seed)
    model = TextureNet(widths)
    variables = model.init(jax.random.key(seed), jnp.zeros((1, size, size, 3)))
    t0 = time.perf_counter()
    res = click_masks(
        model, variables, jnp.asarray(images), clicks, layer=layer, upsample=upsample, center=center
    )
    masks = np.asarray(res.masks)
    seconds = time.perf_counter() - t0
    out = {f"features_{upsample}_{center}": float(iou(masks, truth).mean())}
    side = int(round(np.sqrt(truth.sum(axis=(1, 2)).mean())))
    out["box_oracle_size"] = float(iou(box_masks((size, size), clicks, side), truth).mean())
    best = {}
    for blur in (0, 3):
        scores = {
            tol: float(iou(flood_masks(images, clicks, tol, blur), truth).mean())
            for tol in (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7)
        }
        tol = max(scores, key=scores.get)
        best[blur] = (tol, scores[tol])
    out["flood_raw_best_tolerance"] = best[0][1]
    out["flood_blur3_best_tolerance"] = best[3][1]
    return (
        out,
        {
            "tolerances": {str(b): t for b, (t, _) in best.items()},
            "seconds": seconds,
            "box_side": side,
        },
        (images, truth, clicks, masks),
    )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--num", type=int, default=200)
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layer", default="stage_1")
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None)
    a = p.parse_args()
    results = {}
    for upsample, center in (
        ("bilinear", "center"),
        ("nearest", "center"),
        ("bilinear", "standardize"),
        ("bilinear", "none"),
    ):
        r, info, arrays = evaluate(a.num, a.size, a.seed, a.layer, upsample, center=center)
        results.update(r)
        results.setdefault("info", {})[f"{upsample}_{center}"] = info
        if (upsample, center) == ("bilinear", "standardize"):  # the defaults
            kept = arrays
    results["config"] = {
        "num": a.num,
        "size": a.size,
        "seed": a.seed,
        "layer": a.layer,
        "model": "TextureNet(32, 64), random init",
        "threshold": "otsu",
        "plot": "bilinear, standardize (the defaults)",
    }
    print(json.dumps(results, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    if a.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        images, truth, clicks, masks = kept
        fig, axes = plt.subplots(3, 6, figsize=(12, 6))
        for j in range(6):
            axes[0, j].imshow(images[j])
            axes[0, j].plot(clicks[j, 1], clicks[j, 0], "r+", ms=12, mew=2)
            axes[1, j].imshow(truth[j], cmap="gray")
            axes[2, j].imshow(masks[j], cmap="gray")
            axes[2, j].set_xlabel(f"IoU {iou(masks[j : j + 1], truth[j : j + 1])[0]:.2f}")
            for i in range(3):
                axes[i, j].set_xticks([])
                axes[i, j].set_yticks([])
        for i, name in enumerate(("image + click", "true mask", "click mask")):
            axes[i, 0].set_ylabel(name)
        fig.tight_layout()
        fig.savefig(a.plot, dpi=90)


if __name__ == "__main__":
    main()
