"""Convolutional networks trained from scratch: a VGG-style network, a small ResNet and the
airbench network (Flax).

All map ``(b, H, W, 3)`` images (float, normalised) to a feature vector (global average pool --
max for airbench -- then an optional dense "descriptor" layer) and logits over the classes:
``model.apply(variables, x, train) -> (features, logits)``.

On the CPU, 3x3 convolutions run as one matrix product over 9 shifted copies of the input
(``im2col``): XLA:CPU's own convolution is 1.2-2.4x slower for these shapes (measured on two
cores, forward and backward). On accelerators the native convolution is used. Both store the
same ``(3, 3, C_in, C_out)`` kernel, so weights move freely between them.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["Conv3x3", "VGGNet", "ResNet", "AirbenchNet", "ARCHITECTURES", "make_network"]


class Conv3x3(nn.Module):
    """A 3x3 convolution, stride 1, 'same' padding, no bias."""

    features: int
    im2col: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.he_normal(), (3, 3, c, self.features), jnp.float32)
        kernel = kernel.astype(self.dtype)
        x = x.astype(self.dtype)
        if not self.im2col:
            return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        b, h, w, _ = x.shape
        padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        cols = jnp.concatenate([padded[:, i : i + h, j : j + w, :] for i in range(3) for j in range(3)], axis=-1)
        return (cols.reshape(b * h * w, 9 * c) @ kernel.reshape(9 * c, self.features)).reshape(b, h, w, self.features)


def _bn(train: bool, dtype, name=None):
    """BatchNorm with float32 statistics and arithmetic, output in ``dtype`` (bf16 activations stay bf16)."""
    norm = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=jnp.float32, name=name)
    return lambda x: norm(x.astype(jnp.float32)).astype(dtype)


class _Head(nn.Module):
    """Global average (or max) pool -> optional descriptor layer -> logits."""

    n_classes: int
    feature_dim: int | None
    feature_activation: str
    dtype: Any
    pool: str = "mean"

    @nn.compact
    def __call__(self, x):
        f = (jnp.max if self.pool == "max" else jnp.mean)(x.astype(jnp.float32), axis=(1, 2))
        if self.feature_dim:
            f = nn.Dense(self.feature_dim, name="descriptor")(f)
            f = {"sigmoid": nn.sigmoid, "tanh": jnp.tanh, "relu": nn.relu}[self.feature_activation](f)
        return f, nn.Dense(self.n_classes, name="classifier")(f)


class _Network(nn.Module):
    """The fields every network here shares; ``depth`` is convs (VGG, airbench) or residual blocks (ResNet) per stage."""

    widths: Sequence[int]
    n_classes: int
    depth: int = 2
    feature_dim: int | None = None
    feature_activation: str = "sigmoid"
    im2col: bool = False
    dtype: Any = jnp.float32

    def head(self, x, pool: str = "mean"):
        return _Head(self.n_classes, self.feature_dim, self.feature_activation, self.dtype, pool)(x)


class VGGNet(_Network):
    """VGG-style: stages of ``depth`` conv-BN-ReLU layers, each stage ending in 2x2 max pooling.

    widths: channels per stage, e.g. (32, 64, 128). The head is global average pooling, an
    optional descriptor layer of ``feature_dim`` units, and the classifier.
    """

    @nn.compact
    def __call__(self, x, train: bool = False):
        for width in self.widths:
            for _ in range(self.depth):
                x = Conv3x3(width, self.im2col, self.dtype)(x)
                x = nn.relu(_bn(train, self.dtype)(x))
            x = nn.max_pool(x, (2, 2), (2, 2))
        return self.head(x)


class _Residual(nn.Module):
    width: int
    downsample: bool
    im2col: bool
    dtype: Any

    @nn.compact
    def __call__(self, x, train: bool):
        if self.downsample:
            x = nn.max_pool(x, (2, 2), (2, 2))
        shortcut = x
        y = nn.relu(_bn(train, self.dtype)(Conv3x3(self.width, self.im2col, self.dtype)(x)))
        y = _bn(train, self.dtype)(Conv3x3(self.width, self.im2col, self.dtype)(y))
        if shortcut.shape[-1] != self.width:
            shortcut = nn.Dense(self.width, use_bias=False, dtype=self.dtype, name="project")(shortcut)
        return nn.relu(y + shortcut)


class ResNet(_Network):
    """A small ResNet: a conv stem, then stages of ``depth`` residual blocks (max-pool downsampling between stages)."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(_bn(train, self.dtype)(Conv3x3(self.widths[0], self.im2col, self.dtype)(x)))
        for stage, width in enumerate(self.widths):
            for block in range(self.depth):
                x = _Residual(width, stage > 0 and block == 0, self.im2col, self.dtype)(x, train)
        return self.head(x)


class AirbenchNet(_Network):
    """The network of Keller Jordan's airbench ("94% on CIFAR-10 in 3.29 seconds on a single GPU",
    2024) without its whitening stem: every stage is a convolution, 2x2 max pooling, BatchNorm and
    ReLU, then ``depth - 1`` more conv-BN-ReLU layers at the pooled size; global max pooling
    before the head.

    Pooling straight after a stage's first convolution runs its other convolutions on a quarter
    of the pixels. Measured on CIFAR-10 with widths 32-64-128 on two CPU cores, 3 epochs:
    depth 2 reached test accuracy .753 where :class:`VGGNet` (depth 1) reached .634, at 0.8x its
    images per second. The whitening stem and identity initialisation of airbench gave .754 at
    0.8x the speed again, so they are left out.
    """

    @nn.compact
    def __call__(self, x, train: bool = False):
        for width in self.widths:
            x = Conv3x3(width, self.im2col, self.dtype)(x)
            x = nn.max_pool(x, (2, 2), (2, 2))
            x = nn.relu(_bn(train, self.dtype)(x))
            for _ in range(self.depth - 1):
                x = nn.relu(_bn(train, self.dtype)(Conv3x3(width, self.im2col, self.dtype)(x)))
        return self.head(x, pool="max")


ARCHITECTURES = {"vgg": VGGNet, "resnet": ResNet, "airbench": AirbenchNet}


def make_network(architecture: str, widths: Sequence[int], n_classes: int, depth: int, feature_dim: int | None,
                 feature_activation: str = "sigmoid", dtype=jnp.float32, im2col: bool | None = None) -> nn.Module:
    """A network by name: ``"vgg"`` or ``"airbench"`` (``depth`` convs per stage) or ``"resnet"``
    (``depth`` blocks per stage).

    ``im2col`` defaults to True on the CPU and False elsewhere.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
    if im2col is None:
        im2col = jax.default_backend() == "cpu"
    return ARCHITECTURES[architecture](tuple(int(w) for w in widths), n_classes, depth, feature_dim, feature_activation, im2col,
                                       dtype)
