"""MobileNetV2 (Sandler et al. 2018): inverted residuals with linear bottlenecks, ReLU6.

Each block expands its input t times with a 1x1 convolution, filters it with a depthwise 3x3
convolution and projects it back with a linear 1x1 (no activation); the input is added back
when the shape allows. The same block (``MBConv``) without squeeze-and-excitation is
EfficientNet's. Built as torchvision builds it (width 1.0).

Features: 'stem', 'stage1'...'stage7', 'head' (the 1x1 conv's output), 'pre_logits'.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxconv.archs.common import classifier_output, pooled_head
from jaxconv.blocks import ConvNormAct, MBConv
from jaxconv.blocks.base import Activation, ModuleDef
from jaxconv.declarations import TorchvisionKeys, torchvision_figures, torchvision_weights
from jaxconv.layers import BatchNorm, Conv
from jaxconv.layers.norm import norm_factory
from jaxconv.registry import register
from jaxconv.stages import StageSpec, build_stages

# The paper's Table 2: expansion t, output channels c, blocks n, first stride s.
V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def relu6(x: jnp.ndarray) -> jnp.ndarray:
    return jnp.clip(x, 0.0, 6.0)


class MobileNetV2(nn.Module):
    """Stem 3x3/2 conv (32) -> seven stages of inverted residuals -> 1x1 conv (1280) -> pool -> dropout -> linear."""

    num_classes: int = 1000
    dropout: float = 0.2
    head_width: int = 1280
    norm: ModuleDef | None = BatchNorm
    act: Activation = relu6
    dtype: Any = jnp.float32
    axis_name: str | None = None  # sync BatchNorm over this device axis (set by the training system)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, return_features: bool = False):
        # torchvision pads (k - 1)/2 symmetrically and drops the remainder at stride 2.
        conv = partial(Conv, use_bias=self.norm is None, fit="floor", dtype=self.dtype)
        norm = norm_factory(self.norm, train=train, dtype=self.dtype, axis_name=self.axis_name)
        unit = partial(ConvNormAct, conv=conv, norm=norm, act=self.act)
        features: dict[str, jnp.ndarray] = {}
        x = unit(32, 2, kernel_size=3, name="stem")(x, train)
        features["stem"] = x
        specs = [StageSpec(partial(MBConv, expand_ratio=t, kernel_size=3, se_ratio=0.0), n, c, s)
                 for t, c, n, s in V2_STAGES]
        x = build_stages(x, specs, train=train, conv=conv, norm=norm, act=self.act, features=features)
        x = unit(self.head_width, kernel_size=1, name="head_conv")(x, train)
        features["head"] = x
        logits = pooled_head(x, features, num_classes=self.num_classes, dropout=self.dropout, train=train,
                             dtype=self.dtype)
        return classifier_output(logits, features, return_features)


def torchvision_prefix(module: tuple[str, ...], params) -> str:
    """jaxconv module path -> torchvision's: ('stage2', 'block1', 'depthwise', 'norm') -> 'features.3.conv.1.1'."""
    unit = {"conv": "0", "norm": "1"}
    if module[0] == "stem":
        return f"features.0.{unit[module[1]]}"
    if module[0] == "head":
        return "classifier.1"
    if module[0] == "head_conv":
        return f"features.{1 + sum(len(params[f'stage{s}']) for s in range(1, len(V2_STAGES) + 1))}.{unit[module[1]]}"
    stage, block, part, layer = module
    index = 1 + sum(len(params[f"stage{s}"]) for s in range(1, int(stage.removeprefix("stage"))))
    index += int(block.removeprefix("block"))
    parts = [name for name in ("expand", "depthwise") if name in params[stage][block]]
    if part != "project":
        return f"features.{index}.conv.{parts.index(part)}.{unit[layer]}"
    return f"features.{index}.conv.{len(parts) + (layer == 'norm')}"


register(
    "mobilenet_v2",
    MobileNetV2,
    image_size=224,
    family="mobilenet",
    description="MobileNetV2 (inverted residuals, linear bottlenecks, ReLU6; torchvision's)",
    published=torchvision_figures(3_504_872, 0.301),
    weights=[torchvision_weights("IMAGENET1K_V1", "mobilenet_v2-b0353104.pth", 71.878, 90.286),
             torchvision_weights("IMAGENET1K_V2", "mobilenet_v2-7ebf99e0.pth", 72.154, 90.822, resize=232)],
    # Parity at 67 px: PyTorch's floor on odd sizes at every stride-2 depthwise convolution.
    torchvision=TorchvisionKeys(torchvision_prefix, parity_size=67),
)
