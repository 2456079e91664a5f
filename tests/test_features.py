"""Feature capture, fusion and FeatureExtractor.

Captured values are compared with the same activations obtained another way: Linen's
``capture_intermediates=True``, values stored with ``sow``, or the submodule called by hand.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _models import (
    NNXCNN,
    LinenCNN,
    LinenViT,
    SharedAndTuple,
    example_fingerprints,
    images,
    init_linen,
)
from flax import nnx

import goldener_jax as gj
from goldener_jax.features import FeatureExtractor, Layer, capture, fuse, layer_names
from goldener_jax.vectorize import Vectorizer

JIT = pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])


def run_capture(jit, model, variables, x, **kwargs):
    fn = lambda v, x: capture(model, v, x, **kwargs)  # noqa: E731
    return (jax.jit(fn) if jit else fn)(variables, x)


def intermediates(model, variables, x, **kwargs):
    """Every module's ``__call__`` outputs, recorded by Flax itself."""
    _, state = model.apply(
        variables, x, capture_intermediates=True, mutable=["intermediates"], **kwargs
    )
    return state["intermediates"]


def nearest_up(a, size):
    """Nearest-neighbour upsampling of ``[B, h, w, C]`` by an integer factor, by hand."""
    factor = size // a.shape[1]
    return np.repeat(np.repeat(np.asarray(a), factor, axis=1), factor, axis=2)


@pytest.fixture(scope="module")
def cnn():
    model = LinenCNN()
    return model, init_linen(model, (2, 8, 8, 3)), images(4)


@pytest.fixture(scope="module")
def vit():
    model = LinenViT()
    return model, init_linen(model, (2, 16, 16, 3)), images(3, size=16)


@pytest.fixture(scope="module")
def nnx_model():
    return NNXCNN(nnx.Rngs(0))


# ------------------------------------------------------------------------------ Linen CNN


@JIT
def test_linen_cnn_matches_capture_intermediates(cnn, jit):
    model, variables, x = cnn
    ref = intermediates(model, variables, x)
    for path in ["stage_0", "stage_1/bn", "stage_2/conv"]:
        got = run_capture(jit, model, variables, x, layers=[path])
        node = ref
        for part in path.split("/"):
            node = node[part]
        np.testing.assert_allclose(got, node["__call__"][0], rtol=1e-6, atol=1e-6)


@JIT
def test_linen_cnn_three_layers_concat_is_hand_fused(cnn, jit):
    model, variables, x = cnn
    ref = intermediates(model, variables, x)
    got = run_capture(jit, model, variables, x, layers=["stage_0", "stage_1", "stage_2"])
    expected = np.concatenate(
        [
            np.asarray(ref["stage_0"]["__call__"][0]),
            nearest_up(ref["stage_1"]["__call__"][0], 8),
            nearest_up(ref["stage_2"]["__call__"][0], 8),
        ],
        axis=-1,
    )
    assert got.shape == (4, 8, 8, 4 + 8 + 8)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_linen_batch_norm_uses_running_statistics(cnn):
    model, variables, x = cnn
    got = capture(model, variables, x, layers=["stage_0/bn"])
    conv = capture(model, variables, x, layers=["stage_0/conv"])
    stats = variables["batch_stats"]["stage_0"]["bn"]
    params = variables["params"]["stage_0"]["bn"]
    expected = (conv - stats["mean"]) / np.sqrt(stats["var"] + 1e-5) * params["scale"] + params[
        "bias"
    ]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_linen_train_mode_is_refused(cnn):
    model, variables, x = cnn
    with pytest.raises(ValueError, match="inference mode.*apply_kwargs"):
        capture(model, variables, x, layers=["stage_0"], apply_kwargs={"train": True})


# ------------------------------------------------------------------------------ Linen ViT


@JIT
def test_linen_vit_matches_sow_and_intermediates(vit, jit):
    model, variables, x = vit
    ref = intermediates(model, variables, x)
    block = run_capture(jit, model, variables, x, layers=["block_1"])
    assert block.shape == (3, 1 + 16, 16)  # class token + 4x4 patches
    # the block sows its output itself: an independent record of the same activation
    np.testing.assert_allclose(block, ref["block_1"]["tokens"][0], rtol=2e-5, atol=2e-6)
    attn = run_capture(jit, model, variables, x, layers=["block_0/attn"])
    np.testing.assert_allclose(attn, ref["block_0"]["attn"]["__call__"][0], rtol=1e-6, atol=1e-6)


@JIT
def test_linen_vit_embedding_matches_submodule_called_by_hand(vit, jit):
    model, variables, x = vit
    got = run_capture(jit, model, variables, x, layers=["embed"])
    by_hand = nn.Conv(16, (4, 4), strides=4).apply({"params": variables["params"]["embed"]}, x)
    np.testing.assert_allclose(got, by_hand, rtol=1e-6, atol=1e-6)


def test_linen_vit_class_token_and_patch_tokens(vit):
    model, variables, x = vit
    tokens = capture(model, variables, x, layers=["block_1"])
    cls_vec, valid = Vectorizer.class_token()(tokens)
    np.testing.assert_array_equal(cls_vec[:, 0], tokens[:, 0])
    assert valid.shape == (3, 1) and bool(valid.all())
    patches, valid = Vectorizer.patch_tokens(1)(tokens)
    np.testing.assert_array_equal(patches, tokens[:, 1:])
    assert valid.shape == (3, 16)


# ----------------------------------------------------------------------------------- NNX


def eval_copy(model):
    copy = nnx.clone(model)
    copy.eval()
    return copy


@JIT
def test_nnx_matches_sow_and_submodules_called_by_hand(nnx_model, jit):
    x = images(3)
    ref = eval_copy(nnx_model)
    _, sown = nnx.capture(ref, nnx.Intermediate)(x)
    conv2 = run_capture(jit, nnx_model, None, x, layers=["conv2"])
    np.testing.assert_allclose(jax.nn.relu(conv2), sown["after_conv2"][0], rtol=1e-6, atol=1e-6)

    bn1 = run_capture(jit, nnx_model, None, x, layers=["bn1"])
    np.testing.assert_allclose(bn1, ref.bn1(ref.conv1(x)), rtol=1e-6, atol=1e-6)
    block1 = run_capture(jit, nnx_model, None, x, layers=["blocks/1"])
    np.testing.assert_allclose(
        block1, ref.blocks[1](ref.blocks[0](sown["after_conv2"][0])), rtol=1e-6, atol=1e-6
    )


@JIT
def test_nnx_graphdef_and_state(nnx_model, jit):
    x = images(2)
    graphdef, state = nnx.split(nnx_model)
    a = run_capture(jit, graphdef, state, x, layers=["conv1", "conv2"])
    b = capture(nnx_model, None, x, layers=["conv1", "conv2"])
    np.testing.assert_array_equal(a, b)
    assert a.shape == (2, 8, 8, 4 + 6)


def host_state(model):
    as_numpy = lambda a: np.asarray(  # noqa: E731
        jax.random.key_data(a) if jnp.issubdtype(a.dtype, jax.dtypes.prng_key) else a
    )
    return jax.tree.map(as_numpy, nnx.state(model))


def test_nnx_capture_leaves_model_untouched(nnx_model):
    before = host_state(nnx_model)
    classes = {p: type(m) for p, m in nnx.iter_modules(nnx_model)}
    modes = (nnx_model.bn1.use_running_average, nnx_model.dropout.deterministic)
    capture(nnx_model, None, images(2), layers=["bn1", "dropout"])
    jax.tree.map(np.testing.assert_array_equal, before, host_state(nnx_model))
    assert classes == {p: type(m) for p, m in nnx.iter_modules(nnx_model)}
    assert modes == (nnx_model.bn1.use_running_average, nnx_model.dropout.deterministic)


def test_nnx_shared_module_calls(nnx_model):
    x = images(2)
    with pytest.raises(ValueError, match="called 2 times"):
        capture(nnx_model, None, x, layers=["shared"])
    first = capture(nnx_model, None, x, layers=[Layer("shared", call="first")])
    last = capture(nnx_model, None, x, layers=[Layer("shared", call=-1)])
    both = capture(nnx_model, None, x, layers=[Layer("shared", call="all")])
    ref = eval_copy(nnx_model)
    _, sown = nnx.capture(ref, nnx.Intermediate)(x)
    h = ref.blocks[1](ref.blocks[0](sown["after_conv2"][0]))
    np.testing.assert_allclose(first, ref.shared(h), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(last, ref.shared(ref.shared(h)), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(both, jnp.concatenate([first, last], axis=-1))


def test_nnx_unknown_layer_lists_existing(nnx_model):
    with pytest.raises(ValueError, match=r"unknown layer\(s\) \['conv9'\].*'blocks/0'.*'conv1'"):
        capture(nnx_model, None, images(1), layers=["conv1", "conv9"])


# --------------------------------------------------------------------- shared layers, tuples


def test_linen_shared_module_and_tuple_outputs():
    model = SharedAndTuple()
    x = jax.random.normal(jax.random.key(0), (3, 4))
    variables = model.init(jax.random.key(1), x)
    ref = intermediates(model, variables, x)
    calls = ref["shared"]["__call__"]
    assert len(calls) == 2
    with pytest.raises(ValueError, match=r"'shared' was called 2 times.*call='first'"):
        capture(model, variables, x, layers=["shared"])
    first = capture(model, variables, x, layers=[Layer("shared", call="first")])
    last = capture(model, variables, x, layers=[Layer("shared", call="last")])
    np.testing.assert_array_equal(first, calls[0])
    np.testing.assert_array_equal(last, calls[1])
    both = capture(model, variables, x, layers=[Layer("shared", call="all")], fusion="add")
    np.testing.assert_allclose(both, calls[0] + calls[1], rtol=1e-6)
    with pytest.raises(ValueError, match=r"call=5.*called 2 times"):
        capture(model, variables, x, layers=[Layer("shared", call=5)])

    pair = ref["pair"]["__call__"][0]
    with pytest.raises(ValueError, match=r"'pair' returned \(array\(3, 4\), \{'scaled'"):
        capture(model, variables, x, layers=["pair"])
    np.testing.assert_array_equal(
        capture(model, variables, x, layers=[Layer("pair", output=0)]), pair[0]
    )
    np.testing.assert_array_equal(
        capture(model, variables, x, layers=[Layer("pair", output=(1, "scaled"))]),
        pair[1]["scaled"],
    )
    with pytest.raises(ValueError, match=r"output=1 is \{'scaled': array\(3, 4\)\}, not an"):
        capture(model, variables, x, layers=[Layer("pair", output=1)])
    with pytest.raises(ValueError, match=r"'nope' is not one of the keys \['scaled'\]"):
        capture(model, variables, x, layers=[Layer("pair", output=(1, "nope"))])
    with pytest.raises(ValueError, match="can only pick from a tuple"):
        capture(model, variables, x, layers=[Layer("pair/proj", output=0)])


# ------------------------------------------------------------- batch size, inference mode


@pytest.mark.parametrize("kind", ["cnn", "vit", "nnx"])
def test_features_do_not_depend_on_batch_size(kind, cnn, vit, nnx_model):
    if kind == "cnn":
        model, variables, _ = cnn
        x, layers = images(6), ["stage_0", "stage_1", "stage_2"]
    elif kind == "vit":
        model, variables, _ = vit
        x, layers = images(6, size=16), ["block_0", "block_1/attn"]
    else:
        model, variables = nnx_model, None
        x, layers = images(6), ["conv1", "blocks/1"]
    f = jax.jit(lambda v, x: capture(model, v, x, layers=layers))
    whole = np.asarray(f(variables, x))
    for size in (1, 2, 3):
        parts = np.concatenate([f(variables, x[i : i + size]) for i in range(0, 6, size)])
        # XLA may pick other convolution / matmul blockings for other batch sizes (which ones
        # depends on the CPU: bit for bit on some, last-bit differences on an AVX2 EPYC)
        np.testing.assert_allclose(parts, whole, rtol=2e-5, atol=1e-6)


def test_no_dropout_no_gradients(cnn, vit):
    model, variables, x = cnn
    a = capture(model, variables, x, layers=["dropout"])
    b = capture(model, variables, x, layers=["dropout"])
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, capture(model, variables, x, layers=["stage_2"]), rtol=1e-6)

    grads = jax.grad(lambda v: jnp.sum(capture(model, v, x, layers=["stage_1"]) ** 2))(variables)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))
    gx = jax.grad(lambda x: jnp.sum(capture(model, variables, x, layers=["stage_1"])))(x)
    assert float(jnp.abs(gx).max()) == 0.0


# ------------------------------------------------------------------------- fusion by hand


def test_fuse_by_hand_same_size():
    a = np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2)
    b = 10 - np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2)
    np.testing.assert_array_equal(fuse([a, b]), np.concatenate([a, b], axis=-1))
    np.testing.assert_array_equal(fuse([a, b], fusion="add"), a + b)
    np.testing.assert_array_equal(fuse([a, b], fusion="mean"), (a + b) / 2)
    np.testing.assert_array_equal(fuse([a, b], fusion="max"), np.maximum(a, b))


def test_fuse_by_hand_different_spatial_sizes():
    big = np.ones((1, 4, 4, 1), np.float32)
    small = np.array([1.0, 2.0, 3.0, 4.0], np.float32).reshape(1, 2, 2, 1)
    expected_small = np.array(
        [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]], np.float32
    ).reshape(1, 4, 4, 1)
    np.testing.assert_array_equal(fuse([small, big]), np.concatenate([expected_small, big], -1))
    np.testing.assert_array_equal(fuse([big, small], fusion="add"), expected_small + 1)
    np.testing.assert_array_equal(fuse([small, big], fusion="max"), expected_small)
    # tokens of different lengths, linear resize (half-pixel centres): [a, b] -> 4 tokens
    tokens = np.array([0.0, 4.0], np.float32).reshape(1, 2, 1)
    longer = np.zeros((1, 4, 1), np.float32)
    out = fuse([tokens, longer], fusion="add", resize_method="linear")
    np.testing.assert_allclose(out[0, :, 0], [0.0, 1.0, 3.0, 4.0])
    # a vector ([B, C]) is broadcast over the spatial axes
    vec = np.array([[5.0]], np.float32)
    np.testing.assert_array_equal(fuse([big, vec], fusion="add"), big + 5.0)


def test_fuse_channel_axis_first():
    a = np.arange(2 * 3 * 4, dtype=np.float32).reshape(1, 2, 3, 4)  # [B, C, H, W]
    out = fuse([a], channel_axis=1)
    np.testing.assert_array_equal(out, np.moveaxis(a, 1, -1))
    out2 = fuse([a, a], fusion="concat", channel_axis=1)
    assert out2.shape == (1, 3, 4, 4)


def test_group_fusion_by_hand(cnn):
    model, variables, x = cnn
    ref = intermediates(model, variables, x)
    s0 = np.asarray(ref["stage_0"]["__call__"][0])  # 8x8x4
    s1 = nearest_up(ref["stage_1"]["__call__"][0], 8)  # 4x4x8 -> 8x8x8
    s2 = nearest_up(ref["stage_2"]["__call__"][0], 8)  # 2x2x8 -> 8x8x8
    c0 = np.asarray(ref["stage_0"]["conv"]["__call__"][0])  # 8x8x4
    layers = {"deep": ["stage_1", "stage_2"], "shallow": ["stage_0", "stage_0/conv"]}
    got = capture(model, variables, x, layers=layers, fusion="max", group_fusion="concat")
    expected = np.concatenate([np.maximum(s1, s2), np.maximum(s0, c0)], axis=-1)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    got = capture(
        model, variables, x, layers={"a": ["stage_1"], "b": ["stage_2"]}, group_fusion="mean"
    )
    s1_raw = np.asarray(ref["stage_1"]["__call__"][0])  # 4x4x8: the largest of the two groups
    s2_up = nearest_up(ref["stage_2"]["__call__"][0], 4)
    np.testing.assert_allclose(got, (s1_raw + s2_up) / 2, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------- bad input


def test_unknown_layer_lists_existing_names(cnn):
    model, variables, x = cnn
    with pytest.raises(ValueError) as err:
        capture(model, variables, x, layers=["stage_0", "backbone/nope"])
    msg = str(err.value)
    assert "'backbone/nope'" in msg and "'stage_1/bn'" in msg and "'head'" in msg
    assert layer_names(model, variables, x)[:3] == ["dropout", "head", "stage_0"]


@pytest.mark.parametrize("fusion", ["add", "mean", "max"])
def test_mismatched_channels_named(cnn, fusion):
    model, variables, x = cnn
    with pytest.raises(ValueError) as err:
        capture(model, variables, x, layers=["stage_0", "stage_1"], fusion=fusion)
    msg = str(err.value)
    assert f"fusion={fusion!r}" in msg
    assert "'stage_0': (4, 8, 8, 4)" in msg and "'stage_1': (4, 4, 4, 8)" in msg
    with pytest.raises(ValueError, match=r"group 'a'.*group 'b'"):
        capture(
            model, variables, x, layers={"a": ["stage_0"], "b": ["stage_1"]}, group_fusion=fusion
        )


def test_bad_arguments(cnn):
    model, variables, x = cnn
    with pytest.raises(ValueError, match="fusion must be one of"):
        capture(model, variables, x, layers=["stage_0"], fusion="sum")
    with pytest.raises(ValueError, match="non-empty list"):
        capture(model, variables, x, layers=[])
    with pytest.raises(ValueError, match=r"layers\['g'\] must be a non-empty list"):
        capture(model, variables, x, layers={"g": []})
    with pytest.raises(TypeError, match="model must be"):
        capture(lambda x: x, None, x, layers=["a"])
    with pytest.raises(ValueError, match="Layer.call must be"):
        Layer("a", call="middle")
    with pytest.raises(ValueError, match="same number of spatial/token axes"):
        fuse([np.ones((1, 2, 2, 3)), np.ones((1, 4, 3))])


# ------------------------------------------------------------------------ FeatureExtractor


def test_extractor_default_mean_pools(cnn):
    model, variables, x = cnn
    ex = FeatureExtractor(model=model, variables=variables, layers=["stage_0", "stage_1"])
    vectors, valid = ex(x)
    fused = capture(model, variables, x, layers=["stage_0", "stage_1"])
    np.testing.assert_allclose(vectors[:, 0], fused.mean(axis=(1, 2)), rtol=1e-6, atol=1e-6)
    assert vectors.shape == (4, 1, 12) and valid.shape == (4, 1) and bool(valid.all())


@pytest.mark.parametrize(
    "fusion, group_fusion, vectorizer, resize",
    [
        ("concat", "concat", None, "nearest"),
        ("mean", "add", Vectorizer(fusion="mean"), "nearest"),
        ("concat", "concat", Vectorizer(fusion="mean", match_ratio=0.25), "nearest"),
        ("max", "concat", None, "nearest"),  # max does not commute with a mean: full path
        ("max", "max", Vectorizer(fusion="max"), "nearest"),
        ("concat", "concat", Vectorizer(fusion="add"), "nearest"),
        ("add", "concat", Vectorizer(fusion="max"), "nearest"),  # full path
        ("concat", "concat", Vectorizer(random=5), "nearest"),
        ("max", "mean", Vectorizer(random=5, fusion="max"), "nearest"),
        ("concat", "concat", Vectorizer(random=5), "linear"),  # linear resize: full path
    ],
)
def test_extractor_shortcuts_equal_the_fused_map_path(
    cnn, fusion, group_fusion, vectorizer, resize
):
    # the extractor pools before fusing, or computes only the drawn rows, when that is exact;
    # the result must equal vectorizing the full fused map
    model, variables, x = cnn
    if fusion == "concat":
        layers = ["stage_0", "stage_1", "stage_2"]  # 8x8, 4x4, 2x2 maps
    else:  # equal widths for add/mean/max
        layers = {"a": ["stage_1/conv", "stage_1"], "b": ["stage_2/bn"]}
    ex = FeatureExtractor(
        model=model,
        variables=variables,
        layers=layers,
        fusion=fusion,
        group_fusion=group_fusion,
        vectorizer=vectorizer,
        resize_method=resize,
    )
    key = jax.random.key(3) if vectorizer is not None and vectorizer.random else None
    mask = None
    if vectorizer is not None:
        mask = np.asarray(jax.random.uniform(jax.random.key(4), (4, 8, 8))) < 0.5
        mask[1] = False  # an empty mask keeps every row
    features = ex.features(x)
    if vectorizer is None:
        expected = (features.mean(axis=(1, 2))[:, None], np.ones((4, 1), bool))
    else:
        expected = vectorizer(features, mask=mask, key=key)
    got = jax.jit(lambda e, x: e(x, mask=mask, key=key))(ex, x)
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-5, atol=1e-6)
    if fusion == "concat":  # does the traced computation build the fused map [4, 8, 8, 20]?
        program = str(jax.make_jaxpr(lambda e, x: e(x, mask=mask, key=key))(ex, x))
        assert ("f32[4,8,8,20]" in program) == (resize == "linear")


def test_extractor_jit_forms_agree(cnn, nnx_model):
    model, variables, x = cnn
    for ex in [
        FeatureExtractor(
            model=model,
            variables=variables,
            layers={"a": ["stage_0"], "b": ["stage_2"]},
            vectorizer=Vectorizer(fusion="max"),
            preprocess=lambda x: x * 0.5,
        ),
        FeatureExtractor(model=nnx_model, layers=["conv1", "blocks/0"], vectorizer=Vectorizer()),
    ]:
        eager = ex(x)
        for fn in [
            jax.jit(lambda e, x: e(x)),
            jax.jit(lambda e, x: e(x), static_argnums=0),
            lambda e, x: jax.jit(e.__call__)(x),
            lambda e, x: e.jit()(x),
        ]:
            got = fn(ex, x)
            np.testing.assert_allclose(got[0], eager[0], rtol=1e-6, atol=1e-6)
            np.testing.assert_array_equal(got[1], eager[1])


def test_extractor_jit_does_not_retrace(cnn):
    model, variables, x = cnn
    ex = FeatureExtractor(model=model, variables=variables, layers=["stage_1"])

    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(e, x):
        return e(x)

    f(ex, x)
    f(ex, x + 1.0)
    # same config, new weights: still no retrace (the weights are inputs)
    other = jax.tree.map(lambda a: a + 1.0, variables)
    f(FeatureExtractor(model=model, variables=other, layers=["stage_1"]), x)


def test_fingerprint_tracks_config_and_values(cnn, nnx_model):
    model, variables, x = cnn
    base = FeatureExtractor(model=model, variables=variables, layers=["stage_0", "stage_1"])
    same = FeatureExtractor(
        model=LinenCNN(),
        variables=jax.tree.map(jnp.array, variables),
        layers=["stage_0", "stage_1"],
    )
    assert base.fingerprint == same.fingerprint and base == same and hash(base) == hash(same)
    json.dumps(base.config())
    changed = [
        FeatureExtractor(model=model, variables=variables, layers=["stage_0", "stage_2"]),
        FeatureExtractor(
            model=model, variables=variables, layers=["stage_0", "stage_1"], fusion="max"
        ),
        FeatureExtractor(
            model=model, variables=variables, layers=["stage_0", "stage_1"], vectorizer=Vectorizer()
        ),
        FeatureExtractor(
            model=LinenCNN(widths=(4, 8, 8), num_classes=3),
            variables=jax.tree.map(lambda a: a.at[(0,) * a.ndim].add(1e-3), variables),
            layers=["stage_0", "stage_1"],
        ),
        FeatureExtractor(
            model=model, variables=variables, layers=["stage_0", "stage_1"], preprocess=jnp.tanh
        ),
    ]
    prints = {base.fingerprint} | {ex.fingerprint for ex in changed}
    assert len(prints) == 1 + len(changed)
    nnx_ex = FeatureExtractor(model=nnx_model, layers=["conv1"])
    trained = nnx.clone(nnx_model)
    trained.train()
    nnx.capture(trained, nnx.Intermediate)(images(2))  # moves the dropout stream and the stats
    trained.bn1.mean[...] = nnx_model.bn1.mean[...]  # restore the statistics, not the stream
    trained.bn1.var[...] = nnx_model.bn1.var[...]
    trained.eval()
    assert FeatureExtractor(model=trained, layers=["conv1"]).fingerprint == nnx_ex.fingerprint
    assert (
        nnx_ex.fingerprint
        == FeatureExtractor(model=nnx.clone(nnx_model), layers=["conv1"]).fingerprint
    )
    assert (
        nnx_ex.fingerprint
        != FeatureExtractor(model=NNXCNN(nnx.Rngs(1)), layers=["conv1"]).fingerprint
    )


def _scaled(x, scale, shift=0.0):
    return x * scale + shift


def _make_scale(scale):
    def pre(x):
        return x * scale

    return pre


def test_fingerprint_tracks_the_values_a_preprocess_carries(cnn):
    # A partial's arguments, a closure's cells and a large array's elided middle once left the
    # fingerprint unchanged: a store written with one preprocessing accepted for another.
    model, variables, _ = cnn
    big = np.zeros(2000, np.float32)
    bigger = big.copy()
    bigger[500] = 1.0

    def ex(**kw):
        return FeatureExtractor(model=model, variables=variables, layers=["stage_0"], **kw)

    pairs = [
        (
            dict(preprocess=functools.partial(_scaled, scale=1.0)),
            dict(preprocess=functools.partial(_scaled, scale=2.0)),
        ),
        (
            dict(preprocess=functools.partial(_scaled, shift=1.0, scale=2.0)),
            dict(preprocess=functools.partial(_scaled, shift=0.0, scale=2.0)),
        ),
        (dict(preprocess=_make_scale(1.0)), dict(preprocess=_make_scale(3.0))),
        (dict(apply_kwargs={"offset": big}), dict(apply_kwargs={"offset": bigger})),
    ]
    for a, b in pairs:
        assert ex(**a).fingerprint != ex(**b).fingerprint, a
        assert ex(**a).fingerprint == ex(**a).fingerprint  # and stable for the same values
    # A plain function keeps the bare name it always had (older stores stay valid).
    assert ex(preprocess=_scaled).config()["preprocess"] == f"{__name__}._scaled"


class _Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(4, name="fc")(x) * 2


class _RematNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.remat(_Block)(name="b1")(nn.Dense(4, name="d")(x))


class _NNXBlock(nnx.Module):
    def __init__(self, rngs):
        self.fc = nnx.Linear(4, 4, rngs=rngs)

    def __call__(self, x):
        return nnx.tanh(self.fc(x))


class _NNXRematNet(nnx.Module):
    def __init__(self, rngs):
        self.b = _NNXBlock(rngs)

    def __call__(self, x):
        return nnx.remat(lambda b, x: b(x))(self.b, x)


def test_layers_inside_lifted_transforms_are_refused_clearly():
    # Once a leaked-tracer error (Linen) or "its method was never called" (NNX, untrue).
    x = jnp.ones((2, 4))
    linen = _RematNet()
    variables = linen.init(jax.random.key(0), x)
    for layer in ("b1", "b1/fc"):
        with pytest.raises(ValueError, match="inside a lifted transform"):
            capture(linen, variables, x, layers=[layer])
    assert capture(linen, variables, x, layers=["d"]).shape == (2, 4)  # outside: fine
    with pytest.raises(ValueError, match="or the layer runs inside a lifted transform"):
        capture(_NNXRematNet(nnx.Rngs(0)), None, x, layers=["b/fc"])


def test_fingerprint_is_stable_across_processes():
    script = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        "from _models import example_fingerprints; print(*example_fingerprints())"
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    # -P: do not put the working directory (a source checkout) ahead of the installed package.
    other = subprocess.run(
        [sys.executable, "-P", "-c", script], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    here = example_fingerprints()
    assert other == list(here) and len(here) == 2 and all(len(h) == 64 for h in here)


def test_extractor_is_a_snapshot_of_the_model(nnx_model):
    model = nnx.clone(nnx_model)
    ex = FeatureExtractor(model=model, layers=["conv1"])
    x = images(2)
    before, fingerprint = np.asarray(ex(x)[0]), ex.fingerprint
    model.conv1.kernel[...] = model.conv1.kernel[...] + 1.0  # training the module in place
    np.testing.assert_array_equal(ex(x)[0], before)
    assert FeatureExtractor(model=model, layers=["conv1"]).fingerprint != fingerprint


def test_extractor_rejects_bad_config(cnn):
    model, variables, _ = cnn
    with pytest.raises(ValueError, match="group_fusion must be one of"):
        FeatureExtractor(model=model, variables=variables, layers=["a"], group_fusion="sum")
    with pytest.raises(ValueError, match="variables must be given"):
        FeatureExtractor(model=model, layers=["a"])
    with pytest.raises(TypeError, match="vectorizer must be a Vectorizer"):
        FeatureExtractor(model=model, variables=variables, layers=["a"], vectorizer="mean")
    with pytest.raises(ValueError, match="mask and key need a vectorizer"):
        FeatureExtractor(model=model, variables=variables, layers=["stage_0"])(
            images(1), mask=np.ones((1, 8, 8))
        )


def test_public_names():
    assert gj.capture is capture and gj.FeatureExtractor is FeatureExtractor
    assert gj.Vectorizer is Vectorizer
