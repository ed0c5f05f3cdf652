"""LeNet-5 (LeCun et al. 1998) as it is usually rebuilt today."""

from __future__ import annotations

from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxconv.archs.common import classifier_output
from jaxconv.blocks.base import Activation
from jaxconv.layers import AvgPool, Conv, tanh
from jaxconv.registry import register


class LeNet5(nn.Module):
    """32x32 input -> C1 6@5x5 -> S2 2x2 avg -> C3 16@5x5 -> S4 -> C5 120@5x5 -> F6 84 -> classes.

    Simplifications of the 1998 network, as in most modern rebuilds: C3 connects to all six
    S2 maps (the paper's partial connection table had 1,516 weights, not 2,416), S2/S4 are
    plain average pools without trainable coefficients, and the output is a linear layer
    instead of Euclidean RBF units. With one input channel and 10 classes: 61,706 parameters.
    Features: 'c1', 'c3', 'c5', 'pre_logits'.
    """

    num_classes: int = 10
    act: Activation = tanh
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, return_features: bool = False):
        conv = partial(Conv, dtype=self.dtype, kernel_init=nn.initializers.lecun_normal())
        features: dict[str, jnp.ndarray] = {}
        x = AvgPool(2, 2, name="s2")(self.act(conv(6, 5, name="c1")(x)))
        features["c1"] = x
        x = AvgPool(2, 2, name="s4")(self.act(conv(16, 5, name="c3")(x)))
        features["c3"] = x
        x = self.act(conv(120, 5, name="c5")(x))
        features["c5"] = x
        x = x.reshape(x.shape[0], -1)
        x = self.act(nn.Dense(84, dtype=self.dtype, name="f6")(x))
        features["pre_logits"] = x
        logits = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
        return classifier_output(logits, features, return_features)


register(
    "lenet5",
    LeNet5,
    image_size=32,
    num_classes=10,
    in_channels=1,
    family="lenet",
    description="LeNet-5 (tanh, average pooling; 32x32 grayscale)",
)
