"""Pieces shared by the architectures: stems, the pooled classifier head, the output convention."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxconv.blocks.base import Activation, ModuleDef
from jaxconv.declarations import IMAGENET_MEAN, IMAGENET_STD
from jaxconv.layers import BatchNorm, Conv, Dropout, GlobalAvgPool, MaxPool, relu
from jaxconv.layers.norm import bind_training_mode

Features = dict[str, jnp.ndarray]


def classifier_output(logits: jnp.ndarray, features: Features, return_features: bool):
    """Every model returns logits, or (logits, features) when asked.

    ``features`` maps 'stem', 'stage1'..., 'pre_logits' (family-specific keys are
    documented on each model) to (N, H, W, C) or (N, C) arrays.
    """
    return (logits, features) if return_features else logits


def transform_input(x: jnp.ndarray) -> jnp.ndarray:
    """torchvision's ``transform_input``: (N, H, W, 3) images normalised with the ImageNet mean and std ->
    the same images normalised as (x - 0.5) / 0.5 per channel (pixels in [0, 1] -> [-1, 1]).

    torchvision's published GoogLeNet and Inception v3 weights were trained on such inputs.
    An exact per-channel affine map done before the first convolution, not folded into it: zero padding
    would make a folded version differ at the borders.
    """
    mean, std = jnp.asarray(IMAGENET_MEAN), jnp.asarray(IMAGENET_STD)
    return x * (std / 0.5) + (mean - 0.5) / 0.5


def pooled_head(
    x: jnp.ndarray,
    features: Features,
    *,
    num_classes: int,
    dropout: float,
    train: bool,
    dtype: Any,
) -> jnp.ndarray:
    """Global average pool -> dropout -> linear classifier named 'head'; records 'pre_logits'."""
    x = GlobalAvgPool(name="pool")(x)
    features["pre_logits"] = x
    x = Dropout(dropout, name="dropout")(x, deterministic=not train)
    return nn.Dense(num_classes, dtype=dtype, name="head")(x)


class ImageNetStem(nn.Module):
    """ResNet's stem: 7x7/2 conv (pad 3) -> norm -> act -> 3x3/2 max pool (pad 1); 224 -> 56."""

    features: int = 64
    conv: ModuleDef = Conv
    norm: ModuleDef | None = BatchNorm
    act: Activation = relu

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = self.conv(self.features, 7, 2, padding=3, name="conv")(x)
        if self.norm is not None:
            x = bind_training_mode(self.norm, train)(name="norm")(x)
        x = self.act(x)
        return MaxPool(3, 2, padding=1, fit="floor", name="pool")(x)


class CifarStem(nn.Module):
    """The CIFAR ResNets' stem: one 3x3 conv -> norm -> act at full resolution."""

    features: int = 16
    conv: ModuleDef = Conv
    norm: ModuleDef | None = BatchNorm
    act: Activation = relu

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = self.conv(self.features, 3, 1, padding=1, name="conv")(x)
        if self.norm is not None:
            x = bind_training_mode(self.norm, train)(name="norm")(x)
        return self.act(x)
