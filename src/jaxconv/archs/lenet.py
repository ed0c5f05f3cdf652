"""LeNet-5 (LeCun et al. 1998) as it is usually rebuilt today."""

from __future__ import annotations

from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxconv.archs.common import classifier_output
from jaxconv.blocks.base import Activation, ModuleDef
from jaxconv.layers import AvgPool, Conv, tanh
from jaxconv.layers.norm import norm_factory
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
    norm: ModuleDef | None = None  # none in 1998; 'batch', 'group', 'layer' or a module after c1, c3, c5
    act: Activation = tanh
    dtype: Any = jnp.float32
    axis_name: str | None = None  # sync BatchNorm over this device axis (set by the training system)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, return_features: bool = False):
        conv = partial(Conv, dtype=self.dtype, kernel_init=nn.initializers.lecun_normal())
        norm = norm_factory(self.norm, train=train, dtype=self.dtype, axis_name=self.axis_name)

        def unit(x, features, name):
            x = conv(features, 5, name=name)(x)
            return self.act(x if norm is None else norm(name=f"{name}_norm")(x))

        features: dict[str, jnp.ndarray] = {}
        x = AvgPool(2, 2, name="s2")(unit(x, 6, "c1"))
        features["c1"] = x
        x = AvgPool(2, 2, name="s4")(unit(x, 16, "c3"))
        features["c3"] = x
        x = unit(x, 120, "c5")
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
