"""Activation functions by name, so that configs and overrides can name them.

The lectures' set: sigmoid, tanh, ReLU, leaky ReLU (slope 0.01 for x < 0), swish
(x * sigmoid(x), EfficientNet's activation) and softmax; GELU (ConvNeXt's); hard sigmoid and hard swish
(MobileNetV3's piecewise-linear stand-ins for sigmoid and swish).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import flax.linen as nn
import jax.numpy as jnp

Activation = Callable[[jnp.ndarray], jnp.ndarray]

relu = nn.relu
relu6 = nn.relu6  # MobileNet's min(max(x, 0), 6)
leaky_relu = partial(nn.leaky_relu, negative_slope=0.01)
tanh = jnp.tanh
sigmoid = nn.sigmoid
swish = nn.swish
# x * Phi(x) with the exact normal CDF (erf), as PyTorch's nn.GELU(); flax's default is the tanh approximation.
gelu = partial(nn.gelu, approximate=False)
softmax = nn.softmax


def hard_sigmoid(x: jnp.ndarray) -> jnp.ndarray:
    """relu6(x + 3) / 6: 0 below -3, 1 above 3, linear between; PyTorch's nn.Hardsigmoid (MobileNetV3's gate)."""
    return relu6(x + 3.0) / 6.0


def hard_swish(x: jnp.ndarray) -> jnp.ndarray:
    """x * relu6(x + 3) / 6, PyTorch's nn.Hardswish: swish without the exponential (MobileNetV3)."""
    return x * hard_sigmoid(x)


ACTIVATIONS: dict[str, Activation] = {
    "relu": relu,
    "relu6": relu6,
    "leaky_relu": leaky_relu,
    "tanh": tanh,
    "sigmoid": sigmoid,
    "swish": swish,
    "silu": swish,
    "gelu": gelu,
    "hard_sigmoid": hard_sigmoid,
    "hard_swish": hard_swish,
    "softmax": softmax,
}


def get_activation(name_or_fn: str | Activation) -> Activation:
    """Returns the activation called ``name`` (relu, relu6, leaky_relu, tanh, sigmoid, swish, gelu,
    hard_sigmoid, hard_swish, softmax).

    A callable is returned unchanged, so model fields accept either.
    """
    if callable(name_or_fn):
        return name_or_fn
    try:
        return ACTIVATIONS[name_or_fn]
    except (KeyError, TypeError):  # TypeError: an unhashable value
        raise ValueError(
            f"unknown activation {name_or_fn!r}; choose one of {', '.join(sorted(ACTIVATIONS))}"
        ) from None
