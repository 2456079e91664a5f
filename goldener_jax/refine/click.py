"""Click-to-mask labelling assistance: one clicked pixel -> a mask of the object under it.

For each click ``(b, y, x)`` on image ``b``:

1. the captured layer's spatial feature map of the image (``[h, w, C]``, ``capture``), centred
   on the image's mean feature and by default scaled to unit spread per channel (``center=``),
   gives the cosine similarity of every patch feature to the clicked patch's
   (``(y * h // H, x * w // W)``);
2. ``upsample="bilinear"``: the similarity map is resized bilinearly to the image's ``H x W``
   and the rest works per pixel; ``"nearest"``: the rest works per patch and the final mask is
   repeated up to pixels;
3. a threshold splits the map: Otsu's (of the 64 equal-width bin edges over the map's range,
   the one whose cut maximises the between-class variance of the values), or a given similarity;
4. the mask is the 4-connected region of above-threshold cells containing the click (grown by
   repeated dilation in a ``lax.while_loop`` until it stops changing). The clicked cell is
   always in it.

Everything after the forward pass is one jitted function (``masks_from_features``), vmapped over
clicks: many clicks on one image cost one forward pass.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "CENTER",
    "UPSAMPLE",
    "ClickMasks",
    "click_masks",
    "masks_from_features",
    "otsu_threshold",
]

UPSAMPLE = ("bilinear", "nearest")
CENTER = ("center", "standardize", "none")
_BINS = 64
# Dilations per while_loop iteration: fewer convergence checks, same fixed point.
_DILATIONS_PER_CHECK = 4


class ClickMasks(NamedTuple):
    """Attributes:
    masks: bool ``[M, H, W]``, one per click.
    thresholds: float32 ``[M]`` the similarity threshold used for each click.
    similarity: float32 ``[M, h', w']`` the thresholded map (pixels for ``"bilinear"``,
      patches for ``"nearest"``).
    """

    masks: jax.Array
    thresholds: jax.Array
    similarity: jax.Array


def otsu_threshold(values: jax.Array, bins: int = _BINS) -> jax.Array:
    """Otsu's threshold of ``values`` (any shape): the upper edge of the histogram bin that
    maximises the between-class variance (``bins`` bins over ``[min, max]``; ties to the lowest
    cut). A constant input gives its value. Jit-able."""
    v = jnp.ravel(values).astype(jnp.float32)
    lo, hi = jnp.min(v), jnp.max(v)
    width = jnp.maximum(hi - lo, 1e-12)
    b = jnp.clip(jnp.floor((v - lo) / width * bins).astype(jnp.int32), 0, bins - 1)
    # Per-bin counts and sums of the values themselves (not bin centres): the class means,
    # hence the between-class variance of each cut, are those of the values.
    p = jnp.zeros(bins, jnp.float32).at[b].add(1.0) / v.size
    w0 = jnp.cumsum(p)
    mu0 = jnp.cumsum(jnp.zeros(bins, jnp.float32).at[b].add(v) / v.size)
    mu_t = mu0[-1]
    between = (mu_t * w0 - mu0) ** 2 / jnp.maximum(w0 * (1.0 - w0), 1e-12)
    between = jnp.where((w0 > 0) & (w0 < 1), between, -1.0)
    t = jnp.argmax(between)
    return jnp.where(hi > lo, lo + (t + 1.0) * width / bins, lo)


def _grow(above: jax.Array, y, x) -> jax.Array:
    """The 4-connected component of ``above`` (bool ``[h, w]``) containing ``(y, x)``."""
    above = above.at[y, x].set(True)
    seed = jnp.zeros_like(above).at[y, x].set(True)

    def dilate(m):
        grown = m
        grown = grown.at[1:, :].set(grown[1:, :] | m[:-1, :])
        grown = grown.at[:-1, :].set(grown[:-1, :] | m[1:, :])
        grown = grown.at[:, 1:].set(grown[:, 1:] | m[:, :-1])
        grown = grown.at[:, :-1].set(grown[:, :-1] | m[:, 1:])
        return grown & above

    def body(carry):
        m, _ = carry
        new = m
        for _ in range(_DILATIONS_PER_CHECK):
            new = dilate(new)
        return new, jnp.any(new != m)

    mask, _ = jax.lax.while_loop(lambda c: c[1], body, (seed, jnp.array(True)))
    return mask


def _one_click(feats, click, threshold, *, image_hw, upsample, otsu, center):
    h, w = feats.shape[0], feats.shape[1]
    height, width = image_hw
    y, x = click[1], click[2]
    py, px = y * h // height, x * w // width
    f = feats.astype(jnp.float32)
    if center != "none":
        # Post-ReLU features share a large common component (every cosine near 1); removing
        # the image's mean feature leaves what tells one region from another.
        f = f - jnp.mean(f, axis=(0, 1), keepdims=True)
    if center == "standardize":
        f = f / jnp.maximum(jnp.std(f, axis=(0, 1), keepdims=True), 1e-6)
    f = f / jnp.maximum(jnp.linalg.norm(f, axis=-1, keepdims=True), 1e-12)
    sim = jnp.einsum("hwc,c->hw", f, f[py, px], precision=jax.lax.Precision.HIGHEST)
    if upsample == "bilinear":
        sim = jax.image.resize(sim, (height, width), "bilinear")
        sy, sx = y, x
    else:
        sy, sx = py, px
    thr = otsu_threshold(sim) if otsu else threshold
    region = _grow(sim >= thr, sy, sx)
    if upsample == "nearest":
        rows = jnp.arange(height) * h // height
        cols = jnp.arange(width) * w // width
        region = region[rows][:, cols]
    return region, thr, sim


@partial(jax.jit, static_argnames=("image_hw", "upsample", "otsu", "center"))
def _masks(features, clicks, threshold, *, image_hw, upsample, otsu, center):
    one = partial(_one_click, image_hw=image_hw, upsample=upsample, otsu=otsu, center=center)
    return jax.vmap(lambda c: one(features[c[0]], c, threshold))(clicks)


def _check_clicks(clicks, batch: int, height: int, width: int) -> np.ndarray:
    c = np.asarray(clicks)
    if c.ndim == 1 and c.shape[0] in (2, 3):
        c = c[None]
    if c.ndim != 2 or c.shape[1] not in (2, 3) or c.shape[0] == 0:
        raise ValueError(
            f"clicks must be [M, 2] (y, x) or [M, 3] (image, y, x) with M >= 1, got shape {c.shape}"
        )
    if not np.issubdtype(c.dtype, np.integer):
        raise TypeError(f"clicks must be integer pixel coordinates, got dtype {c.dtype}")
    c = c.astype(np.int64)
    if c.shape[1] == 2:  # one click per image in order, or all on a single image
        if batch == 1:
            c = np.concatenate([np.zeros((len(c), 1), np.int64), c], axis=1)
        elif batch == len(c):
            c = np.concatenate([np.arange(len(c))[:, None], c], axis=1)
        else:
            raise ValueError(
                f"clicks [M, 2] need one image or one click per image (M == batch); got "
                f"M={len(c)} clicks for {batch} images: pass [M, 3] (image, y, x)"
            )
    for m, (b, y, x) in enumerate(c.tolist()):
        if not 0 <= b < batch:
            raise ValueError(f"click {m} is on image {b}, but there are {batch} images")
        if not (0 <= y < height and 0 <= x < width):
            raise ValueError(f"click {m} at (y={y}, x={x}) is outside the {height} x {width} image")
    return c.astype(np.int32)


def _check_options(threshold, upsample, center="center"):
    if center not in CENTER:
        raise ValueError(f"center must be one of {CENTER}, got {center!r}")
    if upsample not in UPSAMPLE:
        raise ValueError(f"upsample must be one of {UPSAMPLE}, got {upsample!r}")
    if threshold is None or (isinstance(threshold, str) and threshold == "otsu"):
        return True, jnp.float32(0.0)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)):
        raise TypeError(
            f"threshold must be None / 'otsu' or a number in [-1, 1], got {threshold!r}"
        )
    if not -1.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
    return False, jnp.float32(threshold)


def masks_from_features(
    features,
    clicks,
    image_hw: tuple[int, int],
    *,
    threshold: float | str | None = None,
    upsample: str = "bilinear",
    center: str = "standardize",
) -> ClickMasks:
    """Masks from already computed feature maps (the part of ``click_masks`` after the model).

    Args:
      features: ``[B, h, w, C]`` spatial feature maps, channels last.
      clicks: int ``[M, 3]`` (image, y, x), or ``[M, 2]`` (y, x) when ``B == 1`` or ``M == B``.
      image_hw: ``(H, W)`` of the images the clicks are on.
      threshold: ``None`` / ``"otsu"`` (automatic, per click) or a cosine similarity.
      upsample: ``"bilinear"`` (threshold and grow per pixel) or ``"nearest"`` (per patch).
      center: ``"center"`` (subtract the image's mean feature before the cosine),
        ``"standardize"`` (also divide each channel by its spread over the image) or ``"none"``.

    Returns:
      :class:`ClickMasks`.
    """
    otsu, thr = _check_options(threshold, upsample, center)
    features = jnp.asarray(features)
    if features.ndim != 4:
        raise ValueError(
            f"features must be a spatial map [B, h, w, C], got shape {tuple(features.shape)}"
        )
    height, width = (int(v) for v in image_hw)
    c = _check_clicks(clicks, features.shape[0], height, width)
    masks, thresholds, sim = _masks(
        features,
        jnp.asarray(c),
        thr,
        image_hw=(height, width),
        upsample=upsample,
        otsu=otsu,
        center=center,
    )
    return ClickMasks(masks, thresholds, sim)


def click_masks(
    model,
    variables,
    images,
    clicks,
    *,
    layer,
    threshold: float | str | None = None,
    upsample: str = "bilinear",
    center: str = "standardize",
    method=None,
    apply_kwargs=None,
) -> ClickMasks:
    """A mask of the object under each clicked pixel, from a model's spatial feature map.

    Args:
      model: a Flax model (as for ``goldener_jax.capture``).
      variables: its variables.
      images: ``[B, H, W, C]`` channels-last images (the model's input).
      clicks: int ``[M, 3]`` (image, y, x) pixel coordinates, or ``[M, 2]`` (y, x) when
        ``B == 1`` (every click on the one image) or ``M == B`` (click ``m`` on image ``m``).
      layer: the captured layer (path or ``Layer``); its output must be a spatial map
        ``[B, h, w, C]``.
      threshold: ``None`` / ``"otsu"`` (automatic per click) or a fixed cosine similarity.
      upsample: ``"bilinear"`` or ``"nearest"`` (see the module doc).
      center: ``"center"``, ``"standardize"`` or ``"none"`` (see ``masks_from_features``).
      method: passed to ``capture``.
      apply_kwargs: passed to ``capture``.

    Returns:
      :class:`ClickMasks` with ``masks`` bool ``[M, H, W]``.

    Raises:
      ValueError: a click outside the image (or on an image that does not exist), a layer whose
        output is not a 2-D spatial map, bad ``threshold`` / ``upsample``.
    """
    from goldener_jax.features import capture

    otsu, thr = _check_options(threshold, upsample, center)
    shape = tuple(getattr(images, "shape", ()))
    if len(shape) != 4:
        raise ValueError(f"images must be [B, H, W, C] (channels last), got shape {shape}")
    c = _check_clicks(clicks, shape[0], shape[1], shape[2])
    feats = capture(
        model, variables, images, layers=[layer], method=method, apply_kwargs=apply_kwargs
    )
    if feats.ndim != 4:
        raise ValueError(
            f"layer {layer!r} has no 2-D spatial map: its output has shape {tuple(feats.shape)} "
            "(need [B, h, w, C]); pick a convolutional layer before global pooling"
        )
    masks, thresholds, sim = _masks(
        feats,
        jnp.asarray(c),
        thr,
        image_hw=(shape[1], shape[2]),
        upsample=upsample,
        otsu=otsu,
        center=center,
    )
    return ClickMasks(masks, thresholds, sim)
