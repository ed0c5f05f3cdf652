"""Layers: pure Flax linen modules over NHWC arrays."""

from jaxconv.layers.activations import (
    ACTIVATIONS,
    gelu,
    get_activation,
    hard_sigmoid,
    hard_swish,
    leaky_relu,
    relu,
    relu6,
    sigmoid,
    softmax,
    swish,
    tanh,
)
from jaxconv.layers.conv import Conv, he_normal_fan_out
from jaxconv.layers.dropout import DropPath, Dropout
from jaxconv.layers.geometry import GeometryError, LayoutError, output_size
from jaxconv.layers.layer_scale import LayerScale
from jaxconv.layers.norm import NORMS, BatchNorm, GroupNorm, LayerNorm, LocalResponseNorm, norm_factory
from jaxconv.layers.pooling import AdaptiveAvgPool, AvgPool, GlobalAvgPool, MaxPool
from jaxconv.layers.shuffle import channel_shuffle
from jaxconv.layers.squeeze_excite import SqueezeExcite

__all__ = [
    "ACTIVATIONS",
    "AdaptiveAvgPool",
    "AvgPool",
    "BatchNorm",
    "Conv",
    "DropPath",
    "Dropout",
    "GeometryError",
    "LayoutError",
    "GlobalAvgPool",
    "GroupNorm",
    "LayerNorm",
    "LayerScale",
    "NORMS",
    "LocalResponseNorm",
    "MaxPool",
    "SqueezeExcite",
    "channel_shuffle",
    "gelu",
    "get_activation",
    "hard_sigmoid",
    "hard_swish",
    "he_normal_fan_out",
    "leaky_relu",
    "norm_factory",
    "output_size",
    "relu",
    "relu6",
    "sigmoid",
    "softmax",
    "swish",
    "tanh",
]
