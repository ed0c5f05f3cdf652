"""ShuffleNet V2 (Ma et al. 2018): channel split, depthwise 3x3 and channel shuffle, designed for measured speed.

Each unit (``jaxconv.blocks.ShuffleNetV2Unit``) splits its channels in two, keeps one half as it is
and passes the other through 1x1 conv -> depthwise 3x3 -> 1x1 conv at equal width, concatenates the
two and shuffles the channels so the next split mixes both; a stride-2 unit opens each stage,
both branches then seeing the whole input. A 3x3/2 conv stem with a 3x3/2 max pool, three stages
(4, 8, 4 units), a 1x1 conv (1024 channels; 2048 for x2.0), global average pool, a linear
classifier. The four sizes differ in the stages' widths only. Built as torchvision builds them
(BatchNorm eps 1e-5, PyTorch momentum 0.1; PyTorch's default initialisation, which torchvision keeps).

Stages by resolution: 'stage1'...'stage3' are the paper's and torchvision's stage2...stage4 (the
paper's stage 1 is the stem), at strides 8, 16, 32.

Features: 'stem' (after the max pool), 'stage1'...'stage3', 'head' (the 1x1 conv's output),
'pre_logits' (pooled: the classifier's input).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxconv.archs.common import classifier_output
from jaxconv.blocks import ConvNormAct, ShuffleNetV2Unit
from jaxconv.blocks.base import Activation, ModuleDef
from jaxconv.declarations import TorchvisionKeys, torchvision_figures, torchvision_weights
from jaxconv.layers import BatchNorm, Conv, GlobalAvgPool, MaxPool, relu
from jaxconv.layers.norm import norm_factory
from jaxconv.registry import register
from jaxconv.stages import StageSpec, build_stages

# torchvision sets no initialisation for ShuffleNet V2: PyTorch's defaults, kernels uniform within 1/sqrt(fan in)
# (flax's lecun_uniform x 1/3 variance); the classifier's bias starts at zero here (PyTorch's is uniform too).
KERNEL_INIT = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


class ShuffleNetV2(nn.Module):
    """Stem 3x3/2 conv -> 3x3/2 max pool -> three stages of ShuffleNet V2 units -> 1x1 conv -> pool -> linear.

    ``widths`` are the output channels of the stem, the three stages and the 1x1 head conv (torchvision's
    stages_out_channels; x1.0: (24, 116, 232, 464, 1024)), ``depths`` the units per stage ((4, 8, 4)); each
    stage opens with a stride-2 unit. ``norm`` is BatchNorm with PyTorch's defaults, or any other norm or None
    (the convolutions then carry biases); ``axis_name`` synchronises BatchNorm statistics over a device axis.

    Features: 'stem', 'stage1'...'stage3', 'head' (the 1x1 conv's output), 'pre_logits' (pooled).
    """

    depths: Sequence[int] = (4, 8, 4)
    widths: Sequence[int] = (24, 116, 232, 464, 1024)
    num_classes: int = 1000
    norm: ModuleDef | None = BatchNorm
    act: Activation = relu
    dtype: Any = jnp.float32
    axis_name: str | None = None  # sync BatchNorm over this device axis (set by the training system)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, return_features: bool = False):
        if len(self.widths) != len(self.depths) + 2:
            raise ValueError(f"widths must give the stem's, each of the {len(self.depths)} stages' and the head "
                             f"conv's channels ({len(self.depths) + 2} numbers), got {tuple(self.widths)}")
        # torchvision's geometry: the stride-2 stem conv, max pool and depthwise convolutions round down.
        conv = partial(Conv, use_bias=self.norm is None, fit="floor", dtype=self.dtype, kernel_init=KERNEL_INIT)
        norm = norm_factory(self.norm, train=train, dtype=self.dtype, axis_name=self.axis_name)
        unit = partial(ConvNormAct, conv=conv, norm=norm, act=self.act)
        features: dict[str, jnp.ndarray] = {}
        x = unit(self.widths[0], 2, kernel_size=3, name="stem")(x, train)
        x = MaxPool(3, 2, padding=1, fit="floor", name="stem_pool")(x)
        features["stem"] = x
        specs = [StageSpec(ShuffleNetV2Unit, depth, width, stride=2)
                 for depth, width in zip(self.depths, self.widths[1:-1])]
        x = build_stages(x, specs, train=train, conv=conv, norm=norm, act=self.act, features=features)
        x = unit(self.widths[-1], kernel_size=1, name="head_conv")(x, train)
        features["head"] = x
        x = GlobalAvgPool(name="pool")(x)
        features["pre_logits"] = x
        logits = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=KERNEL_INIT, name="head")(x)
        return classifier_output(logits, features, return_features)


# Where each of a unit's convolutions sits in torchvision's InvertedResidual: (Sequential, index of its conv; its
# norm follows at index + 1). branch1 is (depthwise, norm, 1x1, norm, ReLU), branch2 (1x1, norm, ReLU, depthwise,
# norm, 1x1, norm, ReLU).
UNIT_LAYERS = {"branch1_depthwise": ("branch1", 0), "branch1_pointwise": ("branch1", 2),
               "branch2_pointwise1": ("branch2", 0), "branch2_depthwise": ("branch2", 3),
               "branch2_pointwise2": ("branch2", 5)}


def torchvision_prefix(module: tuple[str, ...], params) -> str:
    """jaxconv module path -> torchvision's: ('stage1', 'block0', 'branch2_depthwise', 'norm') -> 'stage2.0.branch2.4'.

    torchvision's model holds conv1 (conv 0, norm 1), stage2...stage4 (Sequentials of units), conv5 and fc.
    """
    offset = {"conv": 0, "norm": 1}
    if module[0] == "stem":
        return f"conv1.{offset[module[1]]}"
    if module[0] == "head_conv":
        return f"conv5.{offset[module[1]]}"
    if module[0] == "head":
        return "fc"
    stage, block, part, layer = module
    sequential, index = UNIT_LAYERS[part]
    return f"stage{int(stage.removeprefix('stage')) + 1}.{int(block.removeprefix('block'))}.{sequential}." \
           f"{index + offset[layer]}"


# torchvision's weights metadata: stages_out_channels of its builder, num_params, _ops (GMACs at 224 px) and the
# IMAGENET1K_V1 file with its _metrics (acc@1, acc@5) and resize (x0.5 and x1.0 ported from ericsun99's
# Shufflenet-v2-Pytorch, evaluated at resize 256; x1.5 and x2.0 trained with torchvision's new recipe, at 232),
# all at a 224 px centre crop, bilinear. The two ported files carry 10 hex digits of their SHA-256, not 8.
VARIANTS = {
    "x0_5": ((24, 48, 96, 192, 1024), 1_366_792, 0.04, "shufflenetv2_x0.5-f707e7126e.pth", 60.552, 81.746, 256),
    "x1_0": ((24, 116, 232, 464, 1024), 2_278_604, 0.145, "shufflenetv2_x1-5666bf0f80.pth", 69.362, 88.316, 256),
    "x1_5": ((24, 176, 352, 704, 1024), 3_503_624, 0.296, "shufflenetv2_x1_5-3c479a10.pth", 72.996, 91.086, 232),
    "x2_0": ((24, 244, 488, 976, 2048), 7_393_996, 0.583, "shufflenetv2_x2_0-8be3c8ee.pth", 76.230, 93.006, 232),
}

for _size, (_widths, _params, _gmacs, _file, _top1, _top5, _resize) in VARIANTS.items():
    register(
        f"shufflenet_v2_{_size}",
        partial(ShuffleNetV2, widths=_widths),
        image_size=224,
        family="shufflenet",
        description=f"ShuffleNet V2 {_size.replace('_', '.')} (channel split and shuffle, depthwise 3x3; "
                    f"torchvision's)",
        published=torchvision_figures(_params, _gmacs),
        weights=[torchvision_weights("IMAGENET1K_V1", _file, _top1, _top5, resize=_resize)],
        # Parity at 67 px: PyTorch's floor at the stem conv (34), the max pool (17) and the stride-2 depthwise
        # convolutions (9, 5, 3).
        torchvision=TorchvisionKeys(torchvision_prefix, parity_size=67 if _size == "x1_0" else None),
    )
