"""Squeeze-and-excitation (Hu et al. 2018), as used inside EfficientNet's MBConv."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxconv.layers.activations import sigmoid, swish
from jaxconv.layers.conv import Conv


class SqueezeExcite(nn.Module):
    """Rescales each channel of (N, H, W, C) by a gate computed from the global average.

    squeeze: global average -> 1x1 conv to ``squeeze_features`` -> ``act``;
    excite: 1x1 conv back to C -> ``gate`` (sigmoid) -> multiply the input.
    The two 1x1 convolutions carry biases (names fc1, fc2, as in torchvision); ``conv`` is
    the convolution factory of the enclosing block, so they share its dtype.
    """

    squeeze_features: int
    act: Callable[[jnp.ndarray], jnp.ndarray] = swish
    gate: Callable[[jnp.ndarray], jnp.ndarray] = sigmoid
    conv: Any = Conv

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        channels = x.shape[-1]
        scale = jnp.mean(x, axis=(1, 2), keepdims=True)
        scale = self.conv(self.squeeze_features, 1, use_bias=True, name="fc1")(scale)
        scale = self.conv(channels, 1, use_bias=True, name="fc2")(self.act(scale))
        return x * self.gate(scale)
