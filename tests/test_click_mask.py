"""Click-to-mask: Otsu, region growing against scipy's connected components, batching, errors,
and mean IoU on the offline shapes set against raw-pixel baselines."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from goldener_jax.refine import click_masks, masks_from_features, otsu_threshold
from goldener_jax.refine.shapes import box_masks, flood_masks, iou, make_shapes


class Stage(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(self.features, (3, 3), padding="REFLECT", name="conv")(x))
        return nn.avg_pool(x, (2, 2), strides=(2, 2))


class TextureNet(nn.Module):
    """Two random conv stages; ``stage_1`` is a [B, H/4, W/4, 64] map, ``head`` has none."""

    @nn.compact
    def __call__(self, x):
        x = Stage(32, name="stage_0")(x)
        x = Stage(64, name="stage_1")(x)
        return nn.Dense(3, name="head")(jnp.mean(x, axis=(1, 2)))


def test_otsu_splits_two_modes():
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.normal(0.2, 0.02, 300), rng.normal(0.8, 0.02, 100)])
    t = float(otsu_threshold(jnp.asarray(v)))
    # Every cut in the gap has the same between-class variance: the lowest wins.
    assert v[:300].max() < t <= v[300:].min()
    # Unequal modes with overlap: a brute-force Otsu over the same 64 bin edges agrees.
    w = np.concatenate([rng.normal(0.3, 0.1, 500), rng.normal(0.7, 0.1, 200)]).astype(np.float32)
    lo, hi = w.min(), w.max()
    best, cut = -1.0, None
    for j in range(1, 64):
        edge = lo + j * (hi - lo) / 64
        a, b = w[w < edge], w[w >= edge]
        if len(a) and len(b):
            var = len(a) * len(b) / len(w) ** 2 * (a.mean() - b.mean()) ** 2
            if var > best + 1e-9:
                best, cut = var, edge
    assert float(otsu_threshold(jnp.asarray(w))) == pytest.approx(cut, abs=1e-5)
    assert float(otsu_threshold(jnp.full(10, 0.5))) == 0.5  # constant: its value


def _reference_region(sim, thr, y, x):
    above = sim >= thr
    above[y, x] = True
    lab, _ = ndimage.label(above)  # 4-connectivity
    return lab == lab[y, x]


@pytest.mark.parametrize("seed", range(4))
def test_region_is_the_connected_component_of_the_click(seed):
    """Per-patch (nearest) masks with a fixed threshold equal scipy's 4-connected component of
    the above-threshold patches, repeated up to pixels."""
    rng = np.random.default_rng(seed)
    h, w, scale = 12, 10, 3
    feats = rng.normal(size=(2, h, w, 4)).astype(np.float32)
    clicks = np.stack(
        [rng.integers(0, 2, 6), rng.integers(0, h * scale, 6), rng.integers(0, w * scale, 6)], 1
    )
    res = masks_from_features(
        feats, clicks, (h * scale, w * scale), threshold=0.1, upsample="nearest", center="none"
    )
    for m, (b, y, x) in enumerate(clicks):
        f = feats[b] / np.linalg.norm(feats[b], axis=-1, keepdims=True)
        sim = f @ f[y // scale, x // scale]
        want = _reference_region(sim, 0.1, y // scale, x // scale)
        want = np.repeat(np.repeat(want, scale, 0), scale, 1)
        assert np.array_equal(np.asarray(res.masks[m]), want)
        assert np.allclose(np.asarray(res.similarity[m]), sim, atol=1e-5)


def test_two_blobs_same_feature_only_clicked_one():
    feats = np.zeros((1, 8, 8, 2), np.float32)
    feats[..., 0] = 1.0
    feats[0, 1:3, 1:3] = [0.0, 1.0]  # blob A
    feats[0, 5:7, 5:7] = [0.0, 1.0]  # blob B, same feature, not connected
    res = masks_from_features(feats, [[0, 1, 1]], (8, 8), upsample="nearest", center="none")
    want = np.zeros((8, 8), bool)
    want[1:3, 1:3] = True
    assert np.array_equal(np.asarray(res.masks[0]), want)


@pytest.fixture(scope="module")
def net():
    model = TextureNet()
    return model, model.init(jax.random.key(0), jnp.zeros((1, 48, 48, 3)))


def test_batched_clicks_equal_single_clicks(net):
    model, variables = net
    images, _, clicks = make_shapes(3, size=48, seed=1)
    many = np.array([[0, *clicks[0]], [1, *clicks[1]], [2, *clicks[2]], [0, 5, 5]])
    res = click_masks(model, variables, jnp.asarray(images), many, layer="stage_1")
    for m, (b, y, x) in enumerate(many):
        one = click_masks(
            model, variables, jnp.asarray(images[b : b + 1]), [[y, x]], layer="stage_1"
        )
        assert np.array_equal(np.asarray(res.masks[m]), np.asarray(one.masks[0]))
        assert bool(res.masks[m, y, x])  # the clicked pixel is always in its mask


def test_mean_iou_beats_raw_pixel_baselines(net):
    """Random conv features (no training) against baselines given oracle settings: a box of the
    true masks' mean size and flood fill at the tolerance that is best on this very set."""
    model, variables = net
    images, truth, clicks = make_shapes(48, size=48, seed=3)
    masks = np.asarray(
        click_masks(model, variables, jnp.asarray(images), clicks, layer="stage_1").masks
    )
    ours = iou(masks, truth).mean()
    side = int(round(np.sqrt(truth.sum(axis=(1, 2)).mean())))
    box = iou(box_masks((48, 48), clicks, side), truth).mean()
    flood = max(
        iou(flood_masks(images, clicks, tol, blur), truth).mean()
        for tol in (0.1, 0.2, 0.3, 0.5)
        for blur in (0, 3)
    )
    assert ours > max(box, flood) + 0.1, (ours, box, flood)


@pytest.mark.parametrize(
    "clicks,kwargs,error,match",
    [
        ([[0, 48, 3]], {}, ValueError, "click 0 at \\(y=48, x=3\\) is outside the 48 x 48 image"),
        ([[0, 3, -1]], {}, ValueError, "outside"),
        ([[2, 3, 3]], {}, ValueError, "click 0 is on image 2, but there are 2 images"),
        ([[1, 2]], {}, ValueError, "one click per image"),
        ([[0, 1, 1]], {"layer": "head"}, ValueError, "layer 'head' has no 2-D spatial map"),
        ([[0, 1, 1]], {"threshold": 2.0}, ValueError, "threshold is a cosine similarity"),
        ([[0, 1, 1]], {"upsample": "cubic"}, ValueError, "upsample must be one of"),
        ([[0, 1.5, 1]], {}, TypeError, "integer pixel coordinates"),
    ],
)
def test_bad_input(net, clicks, kwargs, error, match):
    model, variables = net
    images = jnp.zeros((2, 48, 48, 3))
    args = {"layer": "stage_1", **kwargs}
    with pytest.raises(error, match=match):
        click_masks(model, variables, images, np.asarray(clicks), **args)
