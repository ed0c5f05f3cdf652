"""All-CNN-C (Springenberg et al. 2015, "Striving for simplicity: the all convolutional net")."""

from __future__ import annotations

from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxconv.archs.common import classifier_output
from jaxconv.blocks.base import Activation, ModuleDef
from jaxconv.layers import Conv, Dropout, GlobalAvgPool, relu
from jaxconv.layers.norm import norm_factory
from jaxconv.registry import register


class AllConvNet(nn.Module):
    """Only convolutions: max pooling replaced by 3x3 stride-2 convs, the FC head by 1x1 convs
    to one map per class and a global average (Table 2, model C: ~1.3M parameters).

    32x32 input: 3x3 96 (x2) -> 3x3 96 /2 -> 3x3 192 (x2) -> 3x3 192 /2 -> 3x3 192 (valid)
    -> 1x1 192 -> 1x1 classes (with ReLU, as in the paper's table) -> global average -> logits.
    Dropout 20% on the input and 50% after each stride-2 conv, as in the paper. The stride-2
    convs pad 1 and drop the remainder as Caffe does (32 -> 16 -> 8).
    Features: 'stage1', 'stage2', 'stage3' (the 192-channel 6x6 maps), 'pre_logits' (their
    global average).
    """

    num_classes: int = 10
    widths: tuple[int, int] = (96, 192)
    norm: ModuleDef | None = None
    act: Activation = relu
    dropout: float = 0.5
    input_dropout: float = 0.2
    dtype: Any = jnp.float32
    axis_name: str | None = None  # sync BatchNorm over this device axis (set by the training system)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, return_features: bool = False):
        conv = partial(Conv, use_bias=self.norm is None, fit="floor", dtype=self.dtype)
        norm = norm_factory(self.norm, train=train, dtype=self.dtype, axis_name=self.axis_name)
        features: dict[str, jnp.ndarray] = {}
        index = 0

        def layer(x, features_out, kernel, stride=1, padding=1):
            nonlocal index
            index += 1
            x = conv(features_out, kernel, stride, padding=padding, name=f"conv{index}")(x)
            if norm is not None:
                x = norm(name=f"norm{index}")(x)
            return self.act(x)

        x = Dropout(self.input_dropout, name="input_dropout")(x, deterministic=not train)
        narrow, wide = self.widths
        for stage, width in enumerate((narrow, wide), start=1):
            x = layer(x, width, 3)
            x = layer(x, width, 3)
            x = layer(x, width, 3, stride=2)
            x = Dropout(self.dropout, name=f"dropout{stage}")(x, deterministic=not train)
            features[f"stage{stage}"] = x
        x = layer(x, wide, 3, padding=0)
        x = layer(x, wide, 1, padding=0)
        features["stage3"] = x
        features["pre_logits"] = jnp.mean(x, axis=(1, 2))
        x = layer(x, self.num_classes, 1, padding=0)  # the paper's table keeps the ReLU here
        logits = GlobalAvgPool(name="pool")(x)
        return classifier_output(logits, features, return_features)


register(
    "allcnn_c",
    AllConvNet,
    image_size=32,
    num_classes=10,
    family="allconv",
    description="All-CNN-C (Springenberg et al. 2015): strided convs instead of pooling, no FC layers",
)
