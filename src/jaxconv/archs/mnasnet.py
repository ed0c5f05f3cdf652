"""MNASNet (Tan et al. 2019): the mobile network found by platform-aware architecture search (its B1 variant).

A 3x3/2 stem, a depthwise-separable convolution (stage 1: an MBConv without expansion), then six
stacks of MobileNetV2's inverted residuals (``jaxconv.blocks.MBConv`` with ReLU and no
squeeze-and-excitation) expanding 3x or 6x around 3x3 or 5x5 depthwise convolutions; a 1x1
convolution to 1280 channels, global average pool, dropout and the classifier. Built as
torchvision builds it: the depth multiplier (its ``alpha``, ``width`` here) scales every width but
the head's 1280, rounded to a multiple of 8 by torchvision's ``_round_to_multiple_of`` (round to
nearest, up when that loses more than 10%: jaxconv's ``make_divisible`` is the same rule). Since
torchvision's MNASNet ``_version`` 2 the stem is scaled too, as the published files of all four
variants assume (a version-1 file of a multiplier other than 1.0 has a 32-16 stem and is refused
with its shapes). BatchNorm eps 1e-5 and momentum 0.9997 as torchvision sets it (PyTorch's 1 - 0.9997, a
TensorFlow value its comment attributes to the paper).

Features: 'stem', 'stage1'...'stage7', 'head' (the 1x1 conv's output), 'pre_logits' (pooled).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxconv.archs.common import classifier_output
from jaxconv.blocks import ConvNormAct, MBConv, make_divisible
from jaxconv.blocks.base import ModuleDef
from jaxconv.declarations import TorchvisionKeys, torchvision_figures, torchvision_weights
from jaxconv.layers import BatchNorm, Conv, Dropout, GlobalAvgPool, relu
from jaxconv.layers.norm import norm_factory
from jaxconv.registry import register
from jaxconv.stages import StageSpec, build_stages

# torchvision's MNASNet (the paper's Figure 7, B1) as (expand ratio, kernel, first stride, output channels at
# multiplier 1.0, blocks): the separable convolution, then the six stacks of inverted residuals.
STAGES = ((1, 3, 1, 16, 1), (3, 3, 2, 24, 3), (3, 5, 2, 40, 3), (6, 5, 2, 80, 3), (6, 3, 1, 96, 2),
          (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
# torchvision initialises linear weights by kaiming_uniform_(mode='fan_out', nonlinearity='sigmoid'), biases to 0
# (convolutions by He normal fan-out, jaxconv's default).
LINEAR_INIT = nn.initializers.variance_scaling(1.0, "fan_out", "uniform")


class MNASNet(nn.Module):
    """Stem 3x3/2 conv -> separable conv -> six inverted-residual stacks -> 1x1 conv to ``head_width`` -> pool ->
    dropout -> linear.

    ``stages`` are (expand ratio, kernel, first stride, output channels, blocks) per stage (torchvision's by
    default); ``width`` is the depth multiplier: the stem's 32 and every stage's channels times ``width``, rounded
    to multiples of 8 (the head's ``head_width`` is not scaled). ``norm`` is BatchNorm with momentum 0.9997
    (torchvision's PyTorch momentum 1 - 0.9997), or any other norm or None (the convolutions then carry biases);
    ``axis_name`` synchronises BatchNorm statistics over a device axis.

    Features: 'stem', 'stage1'...'stage7', 'head', 'pre_logits'.
    """

    width: float = 1.0
    stages: Sequence[tuple[int, int, int, int, int]] = STAGES
    stem_width: int = 32
    head_width: int = 1280
    num_classes: int = 1000
    dropout: float = 0.2
    norm: ModuleDef | None = partial(BatchNorm, momentum=0.9997)
    dtype: Any = jnp.float32
    axis_name: str | None = None  # sync BatchNorm over this device axis (set by the training system)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, return_features: bool = False):
        # torchvision pads k // 2 symmetrically and drops the remainder at stride 2.
        conv = partial(Conv, use_bias=self.norm is None, fit="floor", dtype=self.dtype)
        norm = norm_factory(self.norm, train=train, dtype=self.dtype, axis_name=self.axis_name)
        unit = partial(ConvNormAct, conv=conv, norm=norm, act=relu)
        features: dict[str, jnp.ndarray] = {}
        x = unit(make_divisible(self.stem_width * self.width), 2, kernel_size=3, name="stem")(x, train)
        features["stem"] = x
        specs = [StageSpec(partial(MBConv, expand_ratio=expand, kernel_size=kernel, se_ratio=0.0), depth=blocks,
                           width=make_divisible(channels * self.width), stride=stride)
                 for expand, kernel, stride, channels, blocks in self.stages]
        x = build_stages(x, specs, train=train, conv=conv, norm=norm, act=relu, features=features)
        x = unit(self.head_width, kernel_size=1, name="head_conv")(x, train)
        features["head"] = x
        x = GlobalAvgPool(name="pool")(x)
        features["pre_logits"] = x
        x = Dropout(self.dropout, name="dropout")(x, deterministic=not train)
        logits = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=LINEAR_INIT, name="head")(x)
        return classifier_output(logits, features, return_features)


def torchvision_prefix(module: tuple[str, ...], params) -> str:
    """jaxconv module path -> torchvision's key prefix.

    ('stage1', 'block0', 'project', 'norm') -> 'layers.7';
    ('stage3', 'block1', 'depthwise', 'conv') -> 'layers.9.1.layers.3'.

    torchvision's `layers` is one Sequential: the stem's conv 0 and norm 1 (ReLU 2), the separable convolution's
    depthwise conv 3, norm 4 (ReLU 5) and pointwise conv 6, norm 7, one Sequential per stack of blocks (8-13),
    each block's `layers` being (expand conv 0, norm 1, ReLU, depthwise conv 3, norm 4, ReLU, project conv 6,
    norm 7), then the head's conv and norm (14, 15); `classifier` is (dropout, linear 1).
    """
    offset = {"conv": 0, "norm": 1}
    if module[0] == "head":
        return "classifier.1"
    if module[0] == "stem":
        return f"layers.{offset[module[1]]}"
    if module[0] == "head_conv":
        stages = sum(1 for key in params if key.startswith("stage"))
        return f"layers.{7 + stages + offset[module[1]]}"
    stage, block, part, layer = module
    index = {"expand": 0, "depthwise": 3, "project": 6}[part] + offset[layer]
    if stage == "stage1":
        return f"layers.{index}"
    return f"layers.{6 + int(stage.removeprefix('stage'))}.{int(block.removeprefix('block'))}.layers.{index}"


# torchvision's weights metadata per depth multiplier: num_params, _ops (GMACs at 224 px) and the IMAGENET1K_V1
# file with its _metrics (acc@1, acc@5) and the shorter side it resizes to before the 224 px centre crop (bilinear):
# 0.5 and 1.0 from the paper's recipe (1e100/mnasnet_trainer), 0.75 and 1.3 from torchvision's new recipe (232).
VARIANTS = {
    "0_5": (0.5, 2_218_512, 0.104, "mnasnet0.5_top1_67.823-3ffadce67e.pth", 67.734, 87.490, 256),
    "0_75": (0.75, 3_170_208, 0.215, "mnasnet0_75-7090bc5f.pth", 71.180, 90.496, 232),
    "1_0": (1.0, 4_383_312, 0.314, "mnasnet1.0_top1_73.512-f206786ef8.pth", 73.456, 91.510, 256),
    "1_3": (1.3, 6_282_256, 0.526, "mnasnet1_3-a4c69d6f.pth", 76.506, 93.522, 232),
}

for _suffix, (_width, _params, _gmacs, _file, _top1, _top5, _resize) in VARIANTS.items():
    register(
        f"mnasnet{_suffix}",
        partial(MNASNet, width=_width),
        image_size=224,
        family="mnasnet",
        description=f"MNASNet-B1 (depth multiplier {_width}; searched inverted residuals, ReLU; torchvision's)",
        published=torchvision_figures(_params, _gmacs),
        weights=[torchvision_weights("IMAGENET1K_V1", _file, _top1, _top5, resize=_resize)],
        # Parity at 67 px for 0.5 (its stem scaled, torchvision's version 2): PyTorch's floor at the stem and the
        # stride-2 depthwise convolutions (34, 17, 9, 5, 3).
        torchvision=TorchvisionKeys(torchvision_prefix, parity_size=67 if _suffix == "0_5" else None),
    )
