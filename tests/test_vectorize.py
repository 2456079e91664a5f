"""Vectorizer against a per-sample NumPy reference written from the option descriptions."""

from __future__ import annotations

import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from goldener_jax.vectorize import Vectorizer, flatten_vectors, mean_pool, pool_mask

# ----------------------------------------------------------------------- NumPy reference


def ref_pool_mask(mask_b, grid, ratio):
    """One sample's pixel mask -> bool per grid cell (row-major), by looping over cells."""
    cell = [m // g for m, g in zip(mask_b.shape, grid, strict=True)]
    out = []
    for index in itertools.product(*[range(g) for g in grid]):
        window = mask_b[tuple(slice(i * c, (i + 1) * c) for i, c in zip(index, cell, strict=True))]
        out.append(np.mean(window != 0) >= ratio - 1e-6)
    return np.array(out, bool)


def ref_vectorize(features, vec: Vectorizer, mask=None, keys=None, grid=None):
    """Per sample: list of kept row vectors (in output order) and the padded result's layout."""
    f = np.asarray(features, np.float64)
    rows = f.reshape(f.shape[0], -1, f.shape[-1])
    if vec.keep_first is not None:
        rows = rows[:, : vec.keep_first]
    if vec.keep_last is not None:
        rows = rows[:, rows.shape[1] - vec.keep_last :]
    rows = rows[:, vec.remove_first : rows.shape[1] - vec.remove_last]
    per_sample = []
    for b in range(rows.shape[0]):
        n = rows.shape[1]
        keep = np.ones(n, bool)
        if mask is not None:
            cells = ref_pool_mask(np.asarray(mask[b]), grid, vec.match_ratio)
            if cells.any():
                keep = cells
        index = np.arange(n)
        if vec.random is not None:
            u = np.asarray(jax.random.uniform(keys[b], (n,)))
            by_draw_valid = index[keep][np.argsort(u[keep], kind="stable")]
            by_draw_invalid = index[~keep][np.argsort(u[~keep], kind="stable")]
            chosen_valid = np.sort(by_draw_valid[: vec.random])
            chosen_invalid = np.sort(by_draw_invalid[: vec.random - len(chosen_valid)])
            index = np.concatenate([chosen_valid, chosen_invalid])
            keep = np.concatenate(
                [np.ones(len(chosen_valid), bool), np.zeros(len(chosen_invalid), bool)]
            )
        sample_rows, sample_keep = rows[b][index], keep
        if vec.fusion is not None:
            kept = sample_rows[sample_keep]
            if len(kept) == 0:
                fused, ok = np.zeros(rows.shape[-1]), False
            else:
                fused = {"mean": kept.mean(0), "add": kept.sum(0), "max": kept.max(0)}[vec.fusion]
                ok = True
            sample_rows, sample_keep = fused[None], np.array([ok])
        per_sample.append((sample_rows, sample_keep))
    vectors = np.stack([r for r, _ in per_sample])
    valid = np.stack([k for _, k in per_sample])
    return vectors, valid


def check(vec, features, mask=None, key=None, grid=None, jit=False):
    fn = (
        (lambda f, m, k: vec(f, mask=m, key=k))
        if not jit
        else jax.jit(lambda f, m, k: vec(f, mask=m, key=k))
    )
    got_vectors, got_valid = fn(features, mask, key)
    keys = None
    if vec.random is not None:
        keys = jax.random.split(key, features.shape[0]) if key.ndim == 0 else key
    ref_vectors, ref_valid = ref_vectorize(features, vec, mask, keys, grid)
    np.testing.assert_array_equal(got_valid, ref_valid)
    np.testing.assert_allclose(got_vectors, ref_vectors, rtol=1e-5, atol=1e-5)
    return got_vectors, got_valid


def feats(shape, seed=0):
    return jax.random.normal(jax.random.key(seed), shape)


def pixel_mask(batch, size, seed=1, density=0.4):
    mask = np.asarray(jax.random.uniform(jax.random.key(seed), (batch, size, size))) < density
    mask[0] = False  # an empty mask: the sample keeps all its rows
    return mask


# ------------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"keep_first": 3},
        {"keep_last": 2},
        {"remove_first": 1},
        {"remove_last": 2},
        {"remove_first": 1, "remove_last": 3},
        {"keep_first": 5, "remove_first": 1},
        {"fusion": "mean"},
        {"fusion": "add"},
        {"fusion": "max", "keep_last": 4},
    ],
    ids=str,
)
def test_row_options_match_reference(options):
    check(Vectorizer(**options), feats((3, 4, 4, 5)))


@pytest.mark.parametrize(
    "ratio, fusion", [(0.25, None), (0.5, None), (1.0, None), (0.5, "mean"), (0.25, "max")]
)
def test_pixel_mask_pooled_with_match_ratio(ratio, fusion):
    features, mask = feats((4, 4, 4, 3)), pixel_mask(4, 8)
    _, valid = check(Vectorizer(match_ratio=ratio, fusion=fusion), features, mask, grid=(4, 4))
    if fusion is None:
        assert bool(valid[0].all())  # empty mask
        if ratio < 1.0:  # (at 40% density no 2x2 cell is fully on: every pooled mask is empty)
            assert not bool(valid[1:].all())  # the masks do drop rows


def test_mask_on_vit_patch_tokens_infers_grid():
    tokens, mask = feats((3, 1 + 16, 4)), pixel_mask(3, 16)
    check(Vectorizer.patch_tokens(1), tokens, mask, grid=(4, 4))
    check(Vectorizer.patch_tokens(1, grid=(4, 4), fusion="add"), tokens, mask, grid=(4, 4))
    # a row mask at the mask step (one flag per patch token) is used as it is
    row_mask = np.asarray(jax.random.uniform(jax.random.key(3), (3, 16))) < 0.5
    check(Vectorizer.patch_tokens(1), tokens, row_mask, grid=(16,))


def test_random_rows_match_reference_and_batching():
    features, mask = feats((4, 4, 4, 3)), pixel_mask(4, 8)
    key = jax.random.key(7)
    check(Vectorizer(random=5), features, key=key)
    check(Vectorizer(random=5), features, mask, key=key, grid=(4, 4), jit=True)
    check(Vectorizer(random=3, fusion="mean"), features, mask, key=key, grid=(4, 4))
    # per-sample keys make the draw independent of how samples are batched
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(4))
    whole = Vectorizer(random=5)(features, mask=mask, key=keys)
    for i in range(4):
        part = Vectorizer(random=5)(features[i : i + 1], mask=mask[i : i + 1], key=keys[i : i + 1])
        np.testing.assert_array_equal(part[0], whole[0][i : i + 1])
        np.testing.assert_array_equal(part[1], whole[1][i : i + 1])
    # legacy uint32 keys work too
    legacy = Vectorizer(random=2)(features, key=jax.random.PRNGKey(0))
    assert legacy[0].shape == (4, 2, 3)


def test_random_fewer_valid_rows_than_draws():
    features = feats((2, 2, 2, 3))
    mask = np.zeros((2, 2, 2), bool)
    mask[1, 0, 0] = True  # one valid row, three draws
    _, valid = check(Vectorizer(random=3), features, mask, key=jax.random.key(0), grid=(2, 2))
    np.testing.assert_array_equal(valid, [[True, True, True], [True, False, False]])


def test_jit_equals_eager_for_all_options():
    features, mask = feats((3, 4, 4, 2)), pixel_mask(3, 8)
    vec = Vectorizer(remove_first=2, random=4, fusion="max", grid=(2, 7))
    with pytest.raises(ValueError, match=r"\(3, 8, 8\) cannot be pooled to the row grid \(2, 7\)"):
        vec(features, mask=mask, key=jax.random.key(0))  # 8x8 mask does not divide into 2x7
    with pytest.raises(ValueError, match=r"grid=\(2, 8\) has 16 cells but the mask step has 14"):
        Vectorizer(remove_first=2, grid=(2, 8))(features, mask=mask)
    vec = Vectorizer(keep_last=8, random=4, fusion="max", grid=(2, 4))
    eager = vec(features, mask=mask, key=jax.random.key(0))
    jitted = jax.jit(lambda f, m, k: vec(f, mask=m, key=k))(features, mask, jax.random.key(0))
    np.testing.assert_array_equal(eager[0], jitted[0])
    np.testing.assert_array_equal(eager[1], jitted[1])


@settings(max_examples=6, deadline=None)
@given(
    height=st.integers(1, 4),
    keep=st.sampled_from([None, ("first", 1), ("first", 3), ("last", 2)]),
    remove=st.tuples(st.integers(0, 1), st.integers(0, 1)),
    fusion=st.sampled_from([None, "mean", "add", "max"]),
    random=st.sampled_from([None, 1, 2]),
    seed=st.integers(0, 1000),
)
def test_property_matches_reference(height, keep, remove, fusion, random, seed):
    features = feats((2, height, 4, 3), seed)
    rows = height * 4
    options = {"fusion": fusion, "random": random}
    if keep is not None:
        options[f"keep_{keep[0]}"] = min(keep[1], rows)
        rows = min(keep[1], rows)
    if sum(remove) < rows:
        options["remove_first"], options["remove_last"] = remove
        rows -= sum(remove)
    if random is not None and random > rows:
        options["random"] = rows
    key = jax.random.key(seed) if options["random"] else None
    check(Vectorizer(**options), features, key=key)


# -------------------------------------------------------------------------------- helpers


def test_pool_mask_by_hand():
    mask = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]], bool)[None]
    np.testing.assert_array_equal(pool_mask(mask, (2, 2), 0.5), [[True, False, False, True]])
    np.testing.assert_array_equal(pool_mask(mask, (2, 2), 0.8), [[False, False, False, True]])
    np.testing.assert_array_equal(pool_mask(mask, (2, 2), 0.25), [[True, False, False, True]])
    np.testing.assert_array_equal(pool_mask(mask, (4, 4), 1.0), mask.reshape(1, 16))


def test_vit_helpers():
    tokens = feats((2, 5, 3))
    np.testing.assert_array_equal(Vectorizer.class_token()(tokens)[0], tokens[:, :1])
    np.testing.assert_array_equal(Vectorizer.prefix_tokens(2)(tokens)[0], tokens[:, :2])
    np.testing.assert_allclose(
        Vectorizer.prefix_tokens(2, fusion="mean")(tokens)[0][:, 0], tokens[:, :2].mean(1)
    )
    np.testing.assert_array_equal(Vectorizer.patch_tokens(2)(tokens)[0], tokens[:, 2:])


def test_flatten_vectors_and_mean_pool():
    vectors = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    valid = np.array([[True, False, True], [False, False, True]])
    flat, sample_index = flatten_vectors(vectors, valid)
    np.testing.assert_array_equal(flat, vectors[[0, 0, 1], [0, 2, 2]])
    np.testing.assert_array_equal(sample_index, [0, 0, 1])
    assert sample_index.dtype == np.int64
    pooled, ok = mean_pool(feats((2, 3, 3, 4)))
    assert pooled.shape == (2, 1, 4) and bool(ok.all())
    np.testing.assert_allclose(pooled[:, 0], feats((2, 3, 3, 4)).mean(axis=(1, 2)), rtol=1e-6)
    with pytest.raises(ValueError, match=r"\[B, R, C\].*\(2, 3, 2\) and \(2, 2\)"):
        flatten_vectors(vectors, valid[:, :2])


def test_config_is_json():
    cfg = Vectorizer.patch_tokens(1, grid=(4, 4), fusion="mean").config()
    assert json.loads(json.dumps(cfg))["grid"] == [4, 4]


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "options, message",
    [
        ({"keep_first": 0}, "keep_first must be >= 1, got 0"),
        ({"keep_last": -2}, "keep_last must be >= 1, got -2"),
        ({"random": 0}, "random must be >= 1, got 0"),
        ({"remove_first": -1}, "remove_first must be >= 0, got -1"),
        ({"keep_first": 1, "keep_last": 1}, "keep_first=1 and keep_last=1 both given"),
        ({"fusion": "concat"}, "fusion='concat' is not a row fusion"),
        ({"fusion": "median"}, "fusion must be None or one of"),
        ({"match_ratio": 0.0}, r"match_ratio must be a number in \(0, 1\]"),
        ({"grid": (4, 0)}, "grid must be a tuple of positive ints"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        Vectorizer(**options)


def test_bad_call_arguments():
    features = feats((2, 4, 4, 3))
    with pytest.raises(
        ValueError, match=r"mask must have shape \[B=2, \*mask_spatial\], got \(3, 8, 8\)"
    ):
        Vectorizer()(features, mask=np.ones((3, 8, 8)))
    with pytest.raises(
        ValueError, match=r"mask of shape \(2, 6, 6\) cannot be pooled to the row grid \(4, 4\)"
    ):
        Vectorizer()(features, mask=np.ones((2, 6, 6)))
    with pytest.raises(
        ValueError, match=r"cannot tell how 15 rows lie on a mask of spatial shape \(8, 8\)"
    ):
        Vectorizer(remove_first=1)(features, mask=np.ones((2, 8, 8)))
    with pytest.raises(
        ValueError, match=r"keep_first=20 but the features of shape \(2, 4, 4, 3\) have only 16"
    ):
        Vectorizer(keep_first=20)(features)
    with pytest.raises(ValueError, match="leaves no row of the 16 rows"):
        Vectorizer(remove_first=10, remove_last=6)(features)
    with pytest.raises(ValueError, match="random=3 needs a PRNG key"):
        Vectorizer(random=3)(features)
    with pytest.raises(ValueError, match="random=17 but only 16 rows"):
        Vectorizer(random=17)(features, key=jax.random.key(0))
    with pytest.raises(ValueError, match="key was given but"):
        Vectorizer()(features, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"one PRNG key or 2 keys.*shape \(3,\)"):
        Vectorizer(random=1)(features, key=jax.random.split(jax.random.key(0), 3))
    with pytest.raises(ValueError, match=r"features must have shape.*got \(5,\)"):
        Vectorizer()(jnp.ones(5))
