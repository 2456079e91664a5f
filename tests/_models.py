"""Tiny Flax models for the feature-capture tests and the capture benchmark's tests.

Small on purpose (a few channels, 8x8 / 16x16 inputs): the tests check wiring, not accuracy.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx


class ConvStage(nn.Module):
    """conv -> batch norm -> relu; the unit the CNN stacks."""

    features: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(self.features, (3, 3), name="conv")(x)
        x = nn.BatchNorm(use_running_average=not train, name="bn")(x)
        return nn.relu(x)


class LinenCNN(nn.Module):
    """Three conv stages with pooling, dropout and a classifier head."""

    widths: tuple[int, ...] = (4, 8, 8)
    num_classes: int = 3

    @nn.compact
    def __call__(self, x, train: bool = False):
        for i, width in enumerate(self.widths):
            x = ConvStage(width, name=f"stage_{i}")(x, train)
            if i < len(self.widths) - 1:
                x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = nn.Dropout(0.5, deterministic=not train, name="dropout")(x)
        x = jnp.max(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="head")(x)


class EncoderBlock(nn.Module):
    dim: int
    heads: int = 2

    @nn.compact
    def __call__(self, x, train: bool = False):
        y = nn.LayerNorm(name="norm1")(x)
        y = nn.MultiHeadDotProductAttention(self.heads, name="attn")(y, y)
        y = nn.Dropout(0.1, deterministic=not train)(y)
        x = x + y
        y = nn.LayerNorm(name="norm2")(x)
        y = nn.Dense(2 * self.dim, name="mlp_in")(y)
        y = nn.Dense(self.dim, name="mlp_out")(nn.gelu(y))
        x = x + y
        self.sow("intermediates", "tokens", x)
        return x


class LinenViT(nn.Module):
    """Patch embedding, class token, position embedding, encoder blocks, head."""

    dim: int = 16
    depth: int = 2
    patch: int = 4
    num_classes: int = 3

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(self.dim, (self.patch, self.patch), strides=self.patch, name="embed")(x)
        batch = x.shape[0]
        x = x.reshape(batch, -1, self.dim)
        cls = self.param("cls", nn.initializers.normal(0.02), (1, 1, self.dim))
        x = jnp.concatenate([jnp.broadcast_to(cls, (batch, 1, self.dim)), x], axis=1)
        pos = self.param("pos", nn.initializers.normal(0.02), (1, x.shape[1], self.dim))
        x = x + pos
        for i in range(self.depth):
            x = EncoderBlock(self.dim, name=f"block_{i}")(x, train)
        x = nn.LayerNorm(name="norm")(x)
        return nn.Dense(self.num_classes, name="head")(x[:, 0])


class SharedAndTuple(nn.Module):
    """A module called twice (shared weights) and one that returns a tuple and a dict."""

    @nn.compact
    def __call__(self, x):
        shared = nn.Dense(4, name="shared")
        a = shared(x)
        b = shared(a + 1.0)
        pair = PairOut(name="pair")(b)
        return pair[0] + pair[1]["scaled"]


class PairOut(nn.Module):
    @nn.compact
    def __call__(self, x):
        y = nn.Dense(4, name="proj")(x)
        return y, {"scaled": 2.0 * y}


# ---------------------------------------------------------------------------------- NNX


class NNXCNN(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(3, 4, (3, 3), rngs=rngs)
        self.bn1 = nnx.BatchNorm(4, rngs=rngs)
        self.conv2 = nnx.Conv(4, 6, (3, 3), rngs=rngs)
        self.blocks = nnx.List([nnx.Linear(6, 6, rngs=rngs) for _ in range(2)])
        self.shared = nnx.Linear(6, 6, rngs=rngs)
        self.dropout = nnx.Dropout(0.5, rngs=rngs)
        self.head = nnx.Linear(6, 3, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.bn1(self.conv1(x)))
        x = nnx.avg_pool(x, (2, 2), strides=(2, 2))
        x = nnx.relu(self.conv2(x))
        self.sow(nnx.Intermediate, "after_conv2", x)
        for block in self.blocks:
            x = block(x)
        x = self.shared(self.shared(x))
        x = self.dropout(x)
        return self.head(jnp.mean(x, axis=(1, 2)))


def init_linen(model: nn.Module, shape, seed: int = 0):
    """Variables with non-trivial batch statistics (one training step's worth)."""
    x = jax.random.normal(jax.random.key(seed + 1), shape)
    variables = jax.jit(model.init)(jax.random.key(seed), x)
    if "batch_stats" in variables:

        def train_step(variables, x):
            return model.apply(
                variables,
                x * 3.0 + 1.0,
                train=True,
                mutable=["batch_stats"],
                rngs={"dropout": jax.random.key(seed + 2)},
            )[1]

        variables = {**variables, **jax.jit(train_step)(variables, x)}
    return variables


def images(batch: int, size: int = 8, channels: int = 3, seed: int = 0) -> jax.Array:
    return jax.random.normal(jax.random.key(100 + seed), (batch, size, size, channels))


def example_fingerprints() -> tuple[str, str]:
    """Fingerprints of a Linen and an NNX extractor, rebuilt from scratch (seeded).

    Weights come from NumPy on the shapes ``jax.eval_shape`` gives: a compiled init would cost
    seconds in each process for nothing this test needs.
    """
    import numpy as np

    from goldener_jax import FeatureExtractor, Vectorizer

    rng = np.random.RandomState(0)
    model = LinenCNN()
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    variables = jax.tree.map(lambda a: rng.standard_normal(a.shape).astype(a.dtype), shapes)
    linen = FeatureExtractor(
        model=model,
        variables=variables,
        layers=["stage_0", "stage_1"],
        vectorizer=Vectorizer(remove_first=1, fusion="mean"),
    )
    small = nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(0)), nnx.relu)
    nnx_ex = FeatureExtractor(model=small, layers={"g": ["layers/0"]})
    return linen.fingerprint, nnx_ex.fingerprint
