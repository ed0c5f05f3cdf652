"""EfficientNet B0-B7 (Tan & Le 2019): B0's MBConv stages scaled by width, depth and resolution; and
EfficientNetV2-S/M/L (Tan & Le 2021): Fused-MBConv in the early stages, MBConv after them.

``EfficientNet`` builds any network of (Fused-)MBConv stages behind a 3x3/2 stem and before a 1x1
head convolution; MobileNetV2 (``jaxconv.archs.mobilenet``) is its configuration without
squeeze-and-excitation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxconv.archs.common import classifier_output, pooled_head
from jaxconv.blocks import ConvNormAct, FusedMBConv, MBConv, make_divisible
from jaxconv.blocks.base import Activation, ModuleDef
from jaxconv.declarations import TorchvisionKeys, torchvision_figures, torchvision_weights
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

# EfficientNetV2, Table 4 (S) and the paper's code (M, L), as torchvision's tables: (expand ratio, kernel, stride,
# output channels, layers); the first three stages are Fused-MBConv, the others MBConv with SE 0.25.
V2_S_STAGES = ((1, 3, 1, 24, 2), (4, 3, 2, 48, 4), (4, 3, 2, 64, 4), (4, 3, 2, 128, 6), (6, 3, 1, 160, 9),
               (6, 3, 2, 256, 15))
V2_M_STAGES = ((1, 3, 1, 24, 3), (4, 3, 2, 48, 5), (4, 3, 2, 80, 5), (4, 3, 2, 160, 7), (6, 3, 1, 176, 14),
               (6, 3, 2, 304, 18), (6, 3, 1, 512, 5))
V2_L_STAGES = ((1, 3, 1, 32, 4), (4, 3, 2, 64, 7), (4, 3, 2, 96, 7), (4, 3, 2, 192, 10), (6, 3, 1, 224, 19),
               (6, 3, 2, 384, 25), (6, 3, 1, 640, 7))


class EfficientNet(nn.Module):
    """Stem 3x3/2 conv -> (Fused-)MBConv stages (B0: seven) -> 1x1 conv (4x the last width; V2: 1280) -> pool -> linear.

    ``stages`` are (expand ratio, kernel, stride, output channels, blocks) per stage (B0's
    Table 1 by default); the first ``fused_stages`` are Fused-MBConv (EfficientNetV2: 3), the
    others MBConv, whose squeeze-and-excitation ``se_ratio`` sizes (0: none). The stem has
    ``stem_width`` channels (32; V2: its first stage's), the head conv ``head_width`` (None: 4x
    the last stage's; V2: 1280). ``width`` multiplies every channel count but the head's (rounded
    to multiples of 8), ``depth`` every stage's block count (rounded up); the resolution is the
    registered default image size.
    Stochastic depth rises linearly to ``drop_path_rate`` (0.2) over the blocks. BatchNorm
    uses eps 1e-5 for B0-B4 and eps 1e-3 with PyTorch momentum 0.01 (0.99 here) for B5-B7, as
    torchvision does (its B5-B7 weights come from TensorFlow, whose EfficientNets use 1e-3); V2
    uses eps 1e-3 with PyTorch's momentum 0.1.

    Features: 'stem', 'stage1'...'stage7' (V2-S: 'stage6'), 'head' (the 1x1 conv's output), 'pre_logits'.
    """

    width: float = 1.0
    depth: float = 1.0
    stages: Sequence[tuple[int, int, int, int, int]] = B0_STAGES
    se_ratio: float = 0.25
    fused_stages: int = 0
    stem_width: int = 32
    head_width: int | None = None
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
                partial(FusedMBConv, expand_ratio=expand, kernel_size=kernel) if index < self.fused_stages
                else partial(MBConv, expand_ratio=expand, kernel_size=kernel, se_ratio=self.se_ratio),
                depth=int(math.ceil(layers * self.depth)),
                width=make_divisible(channels * self.width),
                stride=stride,
            )
            for index, (expand, kernel, stride, channels, layers) in enumerate(self.stages)
        ]

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, return_features: bool = False):
        # torchvision pads (k - 1)/2 symmetrically and drops the remainder at stride 2.
        conv = partial(Conv, use_bias=self.norm is None, fit="floor", dtype=self.dtype)
        norm = norm_factory(self.norm, train=train, dtype=self.dtype, axis_name=self.axis_name)
        unit = partial(ConvNormAct, conv=conv, norm=norm, act=self.act)
        features: dict[str, jnp.ndarray] = {}
        x = unit(make_divisible(self.stem_width * self.width), 2, kernel_size=3, name="stem")(x, train)
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
        head_width = 4 * specs[-1].width if self.head_width is None else self.head_width
        x = unit(head_width, kernel_size=1, name="head_conv")(x, train)
        features["head"] = x
        logits = pooled_head(
            x, features, num_classes=self.num_classes, dropout=self.dropout, train=train, dtype=self.dtype
        )
        return classifier_output(logits, features, return_features)


def torchvision_prefix(module: tuple[str, ...], params) -> str:
    """jaxconv module path -> torchvision's EfficientNet module: ('stage2', 'block0', 'depthwise', 'norm') ->
    'features.2.0.block.1.1'. A block's Sequential holds its parts in order (V1 and V2's MBConv: expand, depthwise,
    se, project; V2's Fused-MBConv: expand, project, or the one fused conv), each conv-norm unit as (conv 0, norm 1).
    """
    unit = {"conv": "0", "norm": "1"}
    if module[0] == "stem":
        return f"features.0.{unit[module[1]]}"
    if module[0] == "head":
        return "classifier.1"
    if module[0] == "head_conv":
        stages = sum(1 for key in params if key.startswith("stage"))
        return f"features.{stages + 1}.{unit[module[1]]}"
    stage, block, part = module[:3]
    layers = [name for name in ("fused", "expand", "depthwise", "se", "project") if name in params[stage][block]]
    base = f"features.{int(stage.removeprefix('stage'))}.{int(block.removeprefix('block'))}.block.{layers.index(part)}"
    return f"{base}.{module[3]}" if part == "se" else f"{base}.{unit[module[3]]}"


# torchvision's weights metadata per variant: parameters, GMACs at the published size, and the weight
# sets (file, top-1, top-5, resize, crop, interpolation). B1 has a second, better-trained set.
PUBLISHED = {
    0: (5_288_548, 0.386, 224, [
        ("IMAGENET1K_V1", "efficientnet_b0_rwightman-7f5810bc.pth", 77.692, 93.532, 256, 224, "bicubic")]),
    1: (7_794_184, 0.687, 240, [
        ("IMAGENET1K_V1", "efficientnet_b1_rwightman-bac287d4.pth", 78.642, 94.186, 256, 240, "bicubic"),
        ("IMAGENET1K_V2", "efficientnet_b1-c27df63c.pth", 79.838, 94.934, 255, 240, "bilinear")]),
    2: (9_109_994, 1.088, 288, [
        ("IMAGENET1K_V1", "efficientnet_b2_rwightman-c35c1473.pth", 80.608, 95.310, 288, 288, "bicubic")]),
    3: (12_233_232, 1.827, 300, [
        ("IMAGENET1K_V1", "efficientnet_b3_rwightman-b3899882.pth", 82.008, 96.054, 320, 300, "bicubic")]),
    4: (19_341_616, 4.394, 380, [
        ("IMAGENET1K_V1", "efficientnet_b4_rwightman-23ab8bcd.pth", 83.384, 96.594, 384, 380, "bicubic")]),
    5: (30_389_784, 10.266, 456, [
        ("IMAGENET1K_V1", "efficientnet_b5_lukemelas-1a07897c.pth", 83.444, 96.628, 456, 456, "bicubic")]),
    6: (43_040_704, 19.068, 528, [
        ("IMAGENET1K_V1", "efficientnet_b6_lukemelas-24a108a5.pth", 84.008, 96.916, 528, 528, "bicubic")]),
    7: (66_347_960, 37.746, 600, [
        ("IMAGENET1K_V1", "efficientnet_b7_lukemelas-c5b4e57e.pth", 84.122, 96.908, 600, 600, "bicubic")]),
}

for _variant, (_width, _depth, _resolution, _dropout) in COEFFICIENTS.items():
    _norm = {"norm": partial(BatchNorm, epsilon=1e-3, momentum=0.99)} if _variant >= 5 else {}
    _params, _gmacs, _published_size, _weights = PUBLISHED[_variant]
    register(
        f"efficientnet_b{_variant}",
        partial(EfficientNet, width=_width, depth=_depth, dropout=_dropout, **_norm),
        image_size=_resolution,
        family="efficientnet",
        description=f"EfficientNet-B{_variant} (width x{_width}, depth x{_depth}, {_resolution} px)",
        published=torchvision_figures(_params, _gmacs, image_size=_published_size),
        weights=[torchvision_weights(tag, file, top1, top5, resize=resize, crop=crop, interpolation=interpolation)
                 for tag, file, top1, top5, resize, crop, interpolation in _weights],
        torchvision=TorchvisionKeys(torchvision_prefix, parity_size=64 if _variant == 0 else None),
    )


# torchvision's EfficientNetV2 (eps 1e-3, PyTorch's momentum 0.1, stochastic depth 0.2, a 1280-channel head): stem
# width, stages, dropout, and its weights metadata (num_params, _ops in GMACs at the eval size), the one weight set
# (file, acc@1, acc@5, resize = crop, interpolation; V2-L's, ported from the paper's TensorFlow code, normalises by
# mean = std = 0.5). Registered at the eval size (resize = crop), the size _ops is published at.
V2_PUBLISHED = {
    "s": (24, V2_S_STAGES, 0.2, 21_458_488, 8.366, "efficientnet_v2_s-dd5fe13b.pth", 84.228, 96.878, 384, "bilinear"),
    "m": (24, V2_M_STAGES, 0.3, 54_139_356, 24.582, "efficientnet_v2_m-dc08266a.pth", 85.112, 97.156, 480, "bilinear"),
    "l": (32, V2_L_STAGES, 0.4, 118_515_272, 56.08, "efficientnet_v2_l-59c71312.pth", 85.808, 97.788, 480, "bicubic"),
}

for _size, (_stem, _stages, _dropout, _params, _gmacs, _file, _top1, _top5, _eval, _interp) in V2_PUBLISHED.items():
    _normalization = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)} if _size == "l" else {}
    register(
        f"efficientnet_v2_{_size}",
        partial(EfficientNet, stages=_stages, fused_stages=3, stem_width=_stem, head_width=1280, dropout=_dropout,
                norm=partial(BatchNorm, epsilon=1e-3)),
        image_size=_eval,
        family="efficientnetv2",
        description=f"EfficientNetV2-{_size.upper()} (Fused-MBConv then MBConv stages, {_eval} px; torchvision's)",
        published=torchvision_figures(_params, _gmacs, image_size=_eval),
        weights=[torchvision_weights("IMAGENET1K_V1", _file, _top1, _top5, resize=_eval, crop=_eval,
                                     interpolation=_interp, **_normalization)],
        # Parity at 65 px: PyTorch's floor at the stem and every stride-2 convolution (33, 17, 9, 5, 3).
        torchvision=TorchvisionKeys(torchvision_prefix, parity_size=65 if _size == "s" else None),
    )
