"""VGG (Simonyan & Zisserman 2015): stacks of 3x3 convolutions, 2x2 pooling, three FC layers."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxconv.archs.common import classifier_output
from jaxconv.blocks import ConvNormAct
from jaxconv.blocks.base import Activation, ModuleDef
from jaxconv.declarations import TorchvisionKeys, torchvision_figures, torchvision_weights
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


def torchvision_prefix(module: tuple[str, ...], params) -> str:
    """jaxconv module path -> torchvision's VGG module: ('stage2', 'block0', 'conv') -> 'features.5'."""
    classifier = {"fc6": "classifier.0", "fc7": "classifier.3", "head": "classifier.6"}
    if module[0] in classifier:
        return classifier[module[0]]
    # torchvision's `features` is one Sequential: conv, [bn], relu per layer and a pool per stage.
    with_bn = any("norm" in block for block in params["stage1"].values())
    index = 0
    for stage_number in range(1, int(module[0].removeprefix("stage"))):
        index += len(params[f"stage{stage_number}"]) * (3 if with_bn else 2) + 1
    index += int(module[1].removeprefix("block")) * (3 if with_bn else 2)
    return f"features.{index + (module[2] == 'norm')}"


TORCHVISION_KEYS = TorchvisionKeys(torchvision_prefix, flattened_input="fc6")
# torchvision's weights metadata: (parameters, GMACs, weight file, top-1, top-5), without and with BatchNorm.
PUBLISHED = {
    "vgg11": (132_863_336, 7.609, "vgg11-8a719046.pth", 69.020, 88.628),
    "vgg11_bn": (132_868_840, 7.609, "vgg11_bn-6002323d.pth", 70.370, 89.810),
    "vgg13": (133_047_848, 11.308, "vgg13-19584684.pth", 69.928, 89.246),
    "vgg13_bn": (133_053_736, 11.308, "vgg13_bn-abd245e5.pth", 71.586, 90.374),
    "vgg16": (138_357_544, 15.470, "vgg16-397923af.pth", 71.592, 90.382),
    "vgg16_bn": (138_365_992, 15.470, "vgg16_bn-6c64b313.pth", 73.360, 91.516),
    "vgg19": (143_667_240, 19.632, "vgg19-dcbb9e9d.pth", 72.376, 90.876),
    "vgg19_bn": (143_678_248, 19.632, "vgg19_bn-c79401a0.pth", 74.218, 91.842),
}
ILSVRC_2014 = {"ilsvrc_entry": "VGG, ILSVRC 2014 (2nd)", "ilsvrc_top5_error": 7.3}  # the lectures' chart

for _depth, _stages in CONFIGS.items():
    for _bn in ("", "_bn"):
        _name = f"vgg{_depth}{_bn}"
        _params, _gmacs, _file, _top1, _top5 = PUBLISHED[_name]
        register(
            _name,
            partial(VGG, depths=_stages, norm=BatchNorm) if _bn else partial(VGG, depths=_stages),
            image_size=224,
            family="vgg",
            description=f"VGG-{_depth} with BatchNorm after every conv" if _bn else f"VGG-{_depth}",
            published=torchvision_figures(_params, _gmacs, **(ILSVRC_2014 if _depth in (16, 19) and not _bn else {})),
            weights=[torchvision_weights("IMAGENET1K_V1", _file, _top1, _top5, timm=f"{_name}.tv_in1k")],
            # Parity for vgg11_bn at 64 px: it ends on a 2x2 map, so the adaptive pool and flatten order matter.
            torchvision=(dataclasses.replace(TORCHVISION_KEYS, parity_size=64) if _name == "vgg11_bn"
                         else TORCHVISION_KEYS),
        )
