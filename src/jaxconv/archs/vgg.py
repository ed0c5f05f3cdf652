"""VGG (Simonyan & Zisserman 2015): stacks of 3x3 convolutions, 2x2 pooling, three FC layers."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxconv.archs.common import classifier_output
from jaxconv.blocks import ConvNormAct
from jaxconv.blocks.base import Activation, ModuleDef
from jaxconv.layers import AdaptiveAvgPool, BatchNorm, Conv, Dropout, MaxPool, relu
from jaxconv.layers.norm import norm_factory
from jaxconv.registry import register
from jaxconv.stages import Stage, StageSpec

CONFIGS = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}


class VGG(nn.Module):
    """Five stages of 3x3 conv (stride 1, pad 1) blocks, each closed by 2x2/2 max pooling,
    then FC-4096 -> FC-4096 -> FC-classes with dropout, as torchvision builds it.

    As in torchvision, an adaptive average pool to 7x7 sits before the classifier, so that
    inputs other than 224 work; at 224 it is the identity. With ``norm=BatchNorm``
    (``vgg16_bn``) each conv is followed by BN; the convs keep their biases, as torchvision's.

    Features: 'stage1'...'stage5' (after pooling), 'pre_logits' (FC7's output).
    """

    depths: Sequence[int]
    num_classes: int = 1000
    widths: Sequence[int] = (64, 128, 256, 512, 512)
    classifier_width: int = 4096
    kernel_size: int = 3  # every conv's; 5 or 7 for the kernel-size study (stacks of 3x3 vs one big kernel)
    norm: ModuleDef | None = None
    act: Activation = relu
    dropout: float = 0.5
    pool_to: int | None = 7
    dtype: Any = jnp.float32
    axis_name: str | None = None  # sync BatchNorm over this device axis (set by the training system)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, return_features: bool = False):
        conv = partial(Conv, dtype=self.dtype)
        norm = norm_factory(self.norm, train=train, dtype=self.dtype, axis_name=self.axis_name)
        features: dict[str, jnp.ndarray] = {}
        for i, (depth, width) in enumerate(zip(self.depths, self.widths), start=1):
            block = ConvNormAct if self.kernel_size == 3 else partial(ConvNormAct, kernel_size=self.kernel_size)
            stage = Stage(StageSpec(block, depth, width), conv=conv, norm=norm, act=self.act, name=f"stage{i}")
            x = stage(x, train)
            x = MaxPool(2, 2, name=f"pool{i}")(x)
            features[f"stage{i}"] = x
        if self.pool_to is not None:
            x = AdaptiveAvgPool(self.pool_to, name="adaptive_pool")(x)
        x = x.reshape(x.shape[0], -1)
        for name in ("fc6", "fc7"):
            x = self.act(nn.Dense(self.classifier_width, dtype=self.dtype, name=name)(x))
            x = Dropout(self.dropout, name=f"{name}_dropout")(x, deterministic=not train)
        features["pre_logits"] = x
        logits = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
        return classifier_output(logits, features, return_features)


for _depth, _stages in CONFIGS.items():
    register(f"vgg{_depth}", partial(VGG, depths=_stages), image_size=224, family="vgg", description=f"VGG-{_depth}")
    register(
        f"vgg{_depth}_bn",
        partial(VGG, depths=_stages, norm=BatchNorm),
        image_size=224,
        family="vgg",
        description=f"VGG-{_depth} with BatchNorm after every conv",
    )
