"""EfficientNet B0-B7 (Tan & Le 2019): B0's MBConv stages scaled by width, depth and resolution."""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxconv.archs.common import classifier_output, pooled_head
from jaxconv.blocks import ConvNormAct, MBConv, make_divisible
from jaxconv.blocks.base import Activation, ModuleDef
from jaxconv.layers import BatchNorm, Conv, swish
from jaxconv.layers.norm import norm_factory
from jaxconv.registry import register
from jaxconv.stages import StageSpec, build_stages

# EfficientNet-B0, Table 1: (expand ratio, kernel, stride, output channels, layers).
B0_STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)

# Compound coefficients (width, depth, resolution, dropout) of B0-B7, from the paper's code.
COEFFICIENTS = {
    0: (1.0, 1.0, 224, 0.2),
    1: (1.0, 1.1, 240, 0.2),
    2: (1.1, 1.2, 260, 0.3),
    3: (1.2, 1.4, 300, 0.3),
    4: (1.4, 1.8, 380, 0.4),
    5: (1.6, 2.2, 456, 0.4),
    6: (1.8, 2.6, 528, 0.5),
    7: (2.0, 3.1, 600, 0.5),
}


class EfficientNet(nn.Module):
    """Stem 3x3/2 conv -> seven MBConv stages -> 1x1 conv to 4x the last width -> pool -> linear.

    ``width`` multiplies every channel count (rounded to multiples of 8), ``depth`` every
    stage's block count (rounded up); the resolution is the registered default image size.
    Stochastic depth rises linearly to ``drop_path_rate`` (0.2) over the blocks. BatchNorm
    uses eps 1e-5 for B0-B4 and eps 1e-3 with PyTorch momentum 0.01 (0.99 here) for B5-B7, as
    torchvision does (its B5-B7 weights come from TensorFlow, whose EfficientNets use 1e-3).

    Features: 'stem', 'stage1'...'stage7', 'head' (the 1x1 conv's output), 'pre_logits'.
    """

    width: float = 1.0
    depth: float = 1.0
    num_classes: int = 1000
    dropout: float = 0.2
    drop_path_rate: float = 0.2
    norm: ModuleDef | None = BatchNorm
    act: Activation = swish
    dtype: Any = jnp.float32
    axis_name: str | None = None  # sync BatchNorm over this device axis (set by the training system)

    def stage_specs(self) -> list[StageSpec]:
        return [
            StageSpec(
                partial(MBConv, expand_ratio=expand, kernel_size=kernel),
                depth=int(math.ceil(layers * self.depth)),
                width=make_divisible(channels * self.width),
                stride=stride,
            )
            for expand, kernel, stride, channels, layers in B0_STAGES
        ]

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, return_features: bool = False):
        # torchvision pads (k - 1)/2 symmetrically and drops the remainder at stride 2.
        conv = partial(Conv, use_bias=self.norm is None, fit="floor", dtype=self.dtype)
        norm = norm_factory(self.norm, train=train, dtype=self.dtype, axis_name=self.axis_name)
        unit = partial(ConvNormAct, conv=conv, norm=norm, act=self.act)
        features: dict[str, jnp.ndarray] = {}
        x = unit(make_divisible(32 * self.width), 2, kernel_size=3, name="stem")(x, train)
        features["stem"] = x
        specs = self.stage_specs()
        x = build_stages(
            x,
            specs,
            train=train,
            conv=conv,
            norm=norm,
            act=self.act,
            drop_path_rate=self.drop_path_rate,
            features=features,
        )
        x = unit(4 * specs[-1].width, kernel_size=1, name="head_conv")(x, train)
        features["head"] = x
        logits = pooled_head(
            x, features, num_classes=self.num_classes, dropout=self.dropout, train=train, dtype=self.dtype
        )
        return classifier_output(logits, features, return_features)


for _variant, (_width, _depth, _resolution, _dropout) in COEFFICIENTS.items():
    _norm = {"norm": partial(BatchNorm, epsilon=1e-3, momentum=0.99)} if _variant >= 5 else {}
    register(
        f"efficientnet_b{_variant}",
        partial(EfficientNet, width=_width, depth=_depth, dropout=_dropout, **_norm),
        image_size=_resolution,
        family="efficientnet",
        description=f"EfficientNet-B{_variant} (width x{_width}, depth x{_depth}, {_resolution} px)",
    )
