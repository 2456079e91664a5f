"""An offline segmentation set for click-to-mask: shapes and digits with one texture pasted on
backgrounds with another, true masks included, and the raw-pixel baselines.

Object and background draw their colours from the same palette, so colour alone does not tell
them apart: texture does (stripes of another orientation and frequency, or dots). The
baselines a feature-based mask must beat:

* ``box_masks``: a fixed-size square centred on the click;
* ``flood_masks``: the 4-connected region of pixels whose colour is within ``tolerance`` of the
  clicked pixel's (optionally after a box blur of the image).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["box_masks", "flood_masks", "iou", "make_shapes"]


def _stripes(size, rng):
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    freq = 2 * np.pi / rng.uniform(4.0, 7.0)  # fine stripes: texture, not large bands
    phase = rng.uniform(0, 2 * np.pi)
    return 0.5 + 0.5 * np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy) + phase), angle


def _dots(size, rng):
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = rng.uniform(3.0, 5.0)
    return ((np.sin(2 * np.pi * yy / period) * np.sin(2 * np.pi * xx / period)) > 0.3).astype(
        np.float32
    )


def _shape_mask(size, rng, digits):
    kind = rng.integers(0, 4 if digits is not None else 3)
    r = rng.uniform(0.18, 0.3) * size
    cy, cx = rng.uniform(r + 1, size - r - 1, 2)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if kind == 0:
        m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
    elif kind == 1:
        m = (np.abs(yy - cy) <= r * 0.85) & (np.abs(xx - cx) <= r * 0.85)
    elif kind == 2:
        m = (yy - cy + r <= 2 * r) & (yy >= cy - r) & (np.abs(xx - cx) <= (yy - cy + r) * 0.6)
    else:
        d = digits[rng.integers(0, len(digits))]
        side = int(2 * r) + 4
        big = ndimage.zoom(d, side / 8.0, order=1) > 6.0
        m = np.zeros((size, size), bool)
        y0, x0 = int(cy - side / 2), int(cx - side / 2)
        y0, x0 = max(0, min(size - side, y0)), max(0, min(size - side, x0))
        m[y0 : y0 + side, x0 : x0 + side] = big[:side, :side]
        m = ndimage.binary_dilation(m)
    labels, count = ndimage.label(m)
    if count > 1:  # keep the largest piece: one object, one connected mask
        m = labels == (1 + np.argmax(np.bincount(labels.ravel())[1:]))
    return m


def make_shapes(num: int, *, size: int = 48, seed: int = 0, digits: bool = True):
    """``(images float32 [num, size, size, 3] in [0, 1], masks bool [num, size, size],
    clicks int32 [num, 2])``: one textured object per image on a textured background, and a
    click on an object pixel at least 2 pixels from its border (or its most interior one)."""
    rng = np.random.default_rng(seed)
    digit_images = None
    if digits:
        from sklearn.datasets import load_digits

        digit_images = load_digits().images
    images = np.empty((num, size, size, 3), np.float32)
    masks = np.empty((num, size, size), bool)
    clicks = np.empty((num, 2), np.int32)
    for i in range(num):
        palette = rng.uniform(0, 1, (2, 3)).astype(np.float32)
        bg, angle = _stripes(size, rng)
        if rng.random() < 0.5:
            fg = _dots(size, rng)
        else:
            fg, _ = _stripes(size, rng)
            # another orientation than the background's, so the texture differs
            yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
            a2 = angle + np.pi / 2 + rng.uniform(-0.3, 0.3)
            f2 = 2 * np.pi / rng.uniform(3.0, 5.0)
            fg = 0.5 + 0.5 * np.sin(f2 * (np.cos(a2) * xx + np.sin(a2) * yy))
        order = rng.permutation(2)  # object and background share the palette
        bg_img = bg[..., None] * palette[order[0]] + (1 - bg[..., None]) * palette[order[1]]
        fg_img = fg[..., None] * palette[order[1]] + (1 - fg[..., None]) * palette[order[0]]
        m = _shape_mask(size, rng, digit_images)
        img = np.where(m[..., None], fg_img, bg_img)
        img += rng.normal(0, 0.03, img.shape).astype(np.float32)
        images[i] = np.clip(img, 0, 1)
        masks[i] = m
        inner = ndimage.binary_erosion(m, iterations=2)
        if not inner.any():
            dist = ndimage.distance_transform_edt(m)
            inner = dist == dist.max()
        ys, xs = np.nonzero(inner)
        j = rng.integers(0, len(ys))
        clicks[i] = (ys[j], xs[j])
    return images, masks, clicks


def iou(pred, truth) -> np.ndarray:
    """Per-mask intersection over union of bool ``[M, H, W]`` masks."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    inter = (pred & truth).sum(axis=(1, 2))
    union = (pred | truth).sum(axis=(1, 2))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def box_masks(shape_hw, clicks, side: int) -> np.ndarray:
    """A ``side x side`` square centred on each click (clipped to the image)."""
    h, w = shape_hw
    out = np.zeros((len(clicks), h, w), bool)
    for m, (y, x) in enumerate(np.asarray(clicks)[:, -2:]):
        y0, x0 = max(0, y - side // 2), max(0, x - side // 2)
        out[m, y0 : y0 + side, x0 : x0 + side] = True
    return out


def flood_masks(images, clicks, tolerance: float, blur: int = 0) -> np.ndarray:
    """Connected pixels whose colour is within ``tolerance`` (Euclidean, RGB) of the clicked
    pixel's, one image per click (click ``m`` on image ``m``); ``blur`` > 0 first averages each
    pixel over a ``blur x blur`` box."""
    images = np.asarray(images, np.float32)
    out = np.zeros(images.shape[:3], bool)
    for m, (y, x) in enumerate(np.asarray(clicks)[:, -2:]):
        img = images[m]
        if blur > 0:
            img = ndimage.uniform_filter(img, size=(blur, blur, 1))
        close = np.linalg.norm(img - img[y, x], axis=-1) <= tolerance
        labels, _ = ndimage.label(close)
        out[m] = labels == labels[y, x]
    return out
