"""RegNet (Radosavovic et al. 2020): a ResNeXt-like network whose widths follow a quantised linear rule.

Six numbers generate a whole network: ``depth`` blocks whose widths grow linearly (u_j = w_0 + w_a * j),
snapped in log space to powers of ``w_m`` times w_0 and rounded to multiples of 8; blocks of equal
width form a stage (each opens with a stride-2 block), and every 3x3 convolution is split into groups of
``group_width`` channels (the widths adjusted so that groups fit). RegNetY adds squeeze-and-excitation
(``se_ratio`` 0.25 of each block's input width). A 3x3/2 stem of 32 channels, four stages of
``jaxconv.blocks.RegNetBottleneck`` (bottleneck ratio 1), global average pool and a linear classifier.
Built as torchvision builds it (torchvision.models.regnet.BlockParams.from_init_params), with BatchNorm's
PyTorch defaults.

Features: 'stem', 'stage1'...'stage4' (strides 4-32), 'pre_logits' (pooled: the classifier's input).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxconv.archs.common import classifier_output
from jaxconv.blocks import ConvNormAct, RegNetBottleneck, make_divisible
from jaxconv.blocks.base import Activation, ModuleDef
from jaxconv.declarations import TorchvisionKeys, torchvision_figures, torchvision_weights
from jaxconv.layers import BatchNorm, Conv, GlobalAvgPool, relu
from jaxconv.layers.norm import norm_factory
from jaxconv.registry import register
from jaxconv.stages import StageSpec, build_stages

# torchvision initialises the classifier with N(0, 0.01) and zero bias (convolutions with He fan-out, as jaxconv).
LINEAR_INIT = nn.initializers.normal(stddev=0.01)


def regnet_stages(depth: int, w_0: int, w_a: float, w_m: float, group_width: int,
                  bottleneck_ratio: float = 1.0) -> list[tuple[int, int, int]]:
    """(blocks, width, group width) per stage from RegNet's generating parameters, as torchvision computes them.

    Block j's continuous width w_0 + w_a * j is snapped to w_0 * w_m^round(log_{w_m}(u_j / w_0)) and rounded
    to a multiple of 8; runs of equal widths are the stages. Then each stage's group width becomes
    min(group_width, inner width) and its inner width (width x ``bottleneck_ratio``) the nearest multiple of
    it (``make_divisible``). Computed in float32, as torchvision's torch tensors are (the rounding of a
    boundary case depends on it). RegNetX-400MF (22, 24, 24.48, 2.54, 16): [(1, 32, 16), (2, 64, 16),
    (7, 160, 16), (12, 400, 16)].
    """
    if w_a < 0 or w_0 <= 0 or w_m <= 1 or w_0 % 8:
        raise ValueError(f"RegNet needs w_a >= 0, w_0 > 0 a multiple of 8 and w_m > 1; got w_0={w_0}, w_a={w_a}, "
                         f"w_m={w_m}")
    continuous = np.arange(depth, dtype=np.float32) * np.float32(w_a) + np.float32(w_0)
    capacity = np.round(np.log(continuous / np.float32(w_0)) / np.float32(math.log(w_m)))
    widths = (np.round(np.float32(w_0) * np.power(np.float32(w_m), capacity) / np.float32(8)) * 8).astype(int)
    stages: list[list[int]] = []  # [width, blocks]
    for width in widths.tolist():
        if stages and stages[-1][0] == width:
            stages[-1][1] += 1
        else:
            stages.append([width, 1])
    result = []
    for width, blocks in stages:
        inner = int(width * bottleneck_ratio)
        group = min(group_width, inner)
        result.append((blocks, int(make_divisible(inner, group) / bottleneck_ratio), group))
    return result


class RegNet(nn.Module):
    """Stem (3x3/2 conv, norm, ReLU) -> stages of RegNetBottleneck -> global average pool -> linear.

    The stages come from the generating parameters (``regnet_stages``): ``depth`` blocks in all, initial width
    ``w_0``, slope ``w_a``, width multiplier ``w_m``, ``group_width`` channels per group of the 3x3
    convolutions, ``bottleneck_ratio`` (1), ``se_ratio`` (0.25 for RegNetY, None for RegNetX). Every stage
    opens with a stride-2 block. ``norm`` is BatchNorm with PyTorch's defaults, or any other norm or None
    (the convolutions then carry biases); ``axis_name`` synchronises BatchNorm statistics over a device axis.

    Features: 'stem', 'stage1'... (one per stage), 'pre_logits'.
    """

    depth: int = 22
    w_0: int = 24
    w_a: float = 24.48
    w_m: float = 2.54
    group_width: int = 16
    bottleneck_ratio: float = 1.0
    se_ratio: float | None = None
    stem_width: int = 32
    num_classes: int = 1000
    norm: ModuleDef | None = BatchNorm
    act: Activation = relu
    drop_path_rate: float = 0.0
    dtype: Any = jnp.float32
    axis_name: str | None = None  # sync BatchNorm over this device axis (set by the training system)

    def stage_specs(self) -> list[StageSpec]:
        stages = regnet_stages(self.depth, self.w_0, self.w_a, self.w_m, self.group_width, self.bottleneck_ratio)
        return [StageSpec(partial(RegNetBottleneck, group_width=group, bottleneck_ratio=self.bottleneck_ratio,
                                  se_ratio=self.se_ratio), blocks, width, 2)
                for blocks, width, group in stages]

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, return_features: bool = False):
        # torchvision pads 1 on every side and drops the remainder at stride 2 (odd sizes), hence fit='floor'.
        conv = partial(Conv, use_bias=self.norm is None, fit="floor", dtype=self.dtype)
        norm = norm_factory(self.norm, train=train, dtype=self.dtype, axis_name=self.axis_name)
        features: dict[str, jnp.ndarray] = {}
        x = ConvNormAct(self.stem_width, 2, conv=conv, norm=norm, act=self.act, kernel_size=3, name="stem")(x, train)
        features["stem"] = x
        x = build_stages(x, self.stage_specs(), train=train, conv=conv, norm=norm, act=self.act,
                         drop_path_rate=self.drop_path_rate, features=features)
        x = GlobalAvgPool(name="pool")(x)
        features["pre_logits"] = x
        logits = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=LINEAR_INIT, name="head")(x)
        return classifier_output(logits, features, return_features)


def torchvision_prefix(module: tuple[str, ...], params) -> str:
    """jaxconv module path -> torchvision's: ('stage2', 'block0', 'conv2') -> 'trunk_output.block2.block2-0.f.b.0'.

    torchvision's `stem` is a conv-norm unit (0, 1); `trunk_output.block<s>` holds the blocks 'block<s>-<i>',
    each a projection `proj` (0, 1; when the shape changes) and a transform `f` of units a, b, c (1x1, 3x3, 1x1)
    with the squeeze-excite `se` (fc1, fc2) between b and c; `fc` is the classifier.
    """
    unit = {"conv": "0", "norm": "1"}
    if module[0] == "stem":
        return f"stem.{unit[module[1]]}"
    if module[0] == "head":
        return "fc"
    stage, block, layer = module[:3]
    s, i = int(stage.removeprefix("stage")), int(block.removeprefix("block"))
    base = f"trunk_output.block{s}.block{s}-{i}"
    if layer == "se":
        return f"{base}.f.se.{module[3]}"
    if layer.startswith("shortcut_"):
        return f"{base}.proj.{unit[layer.removeprefix('shortcut_')]}"
    kind, index = layer[:-1], int(layer[-1])
    return f"{base}.f.{'abc'[index - 1]}.{unit[kind]}"


def _imagenet(name: str, v1: tuple[str, float, float], v2: tuple[str, float, float]) -> list:
    """torchvision's IMAGENET1K_V1 (resize 256) and IMAGENET1K_V2 (the new recipe, resize 232) weight sets."""
    return [torchvision_weights("IMAGENET1K_V1", f"{name}-{v1[0]}.pth", v1[1], v1[2]),
            torchvision_weights("IMAGENET1K_V2", f"{name}-{v2[0]}.pth", v2[1], v2[2], resize=232)]


def _swag(name: str, e2e: tuple[str, float, float], linear: tuple[str, float, float]) -> list:
    """torchvision's SWAG weight sets (Singh et al. 2022, bicubic): fine-tuned end to end at 384 px (resize 384,
    crop 384), and a linear classifier on the frozen trunk at 224 px (resize 224)."""
    return [torchvision_weights("IMAGENET1K_SWAG_E2E_V1", f"{name}_swag-{e2e[0]}.pth", e2e[1], e2e[2], resize=384,
                                crop=384, interpolation="bicubic"),
            torchvision_weights("IMAGENET1K_SWAG_LINEAR_V1", f"{name}_lc_swag-{linear[0]}.pth", linear[1], linear[2],
                                resize=224, interpolation="bicubic")]


# torchvision's builders: (depth, w_0, w_a, w_m, group_width, se_ratio) for BlockParams.from_init_params; then its
# weights metadata: num_params, _ops (GMACs at 224 px) and the weight files (hash prefix, acc@1, acc@5).
VARIANTS = {
    "regnet_x_400mf": ((22, 24, 24.48, 2.54, 16, None), 5_495_976, 0.414,
                       _imagenet("regnet_x_400mf", ("adf1edd5", 72.834, 90.950), ("62229a5f", 74.864, 92.322))),
    "regnet_x_800mf": ((16, 56, 35.73, 2.28, 16, None), 7_259_656, 0.8,
                       _imagenet("regnet_x_800mf", ("ad17e45c", 75.212, 92.348), ("94a99ebd", 77.522, 93.826))),
    "regnet_x_1_6gf": ((18, 80, 34.01, 2.25, 24, None), 9_190_136, 1.603,
                       _imagenet("regnet_x_1_6gf", ("e3633e7f", 77.040, 93.440), ("a12f2b72", 79.668, 94.922))),
    "regnet_x_3_2gf": ((25, 88, 26.31, 2.25, 48, None), 15_296_552, 3.177,
                       _imagenet("regnet_x_3_2gf", ("f342aeae", 78.364, 93.992), ("7071aa85", 81.196, 95.430))),
    "regnet_x_8gf": ((23, 80, 49.56, 2.88, 120, None), 39_572_648, 7.995,
                     _imagenet("regnet_x_8gf", ("03ceed89", 79.344, 94.686), ("2b70d774", 81.682, 95.678))),
    "regnet_x_16gf": ((22, 216, 55.59, 2.1, 128, None), 54_278_536, 15.941,
                      _imagenet("regnet_x_16gf", ("2007eb11", 80.058, 94.944), ("ba3796d7", 82.716, 96.196))),
    "regnet_x_32gf": ((23, 320, 69.86, 2.0, 168, None), 107_811_560, 31.736,
                      _imagenet("regnet_x_32gf", ("9d47f8d0", 80.622, 95.248), ("6eb8fdc6", 83.014, 96.288))),
    "regnet_y_400mf": ((16, 48, 27.89, 2.09, 8, 0.25), 4_344_144, 0.402,
                       _imagenet("regnet_y_400mf", ("c65dace8", 74.046, 91.716), ("e6988f5f", 75.804, 92.742))),
    "regnet_y_800mf": ((14, 56, 38.84, 2.4, 16, 0.25), 6_432_512, 0.834,
                       _imagenet("regnet_y_800mf", ("1b27b58c", 76.420, 93.136), ("58fc7688", 78.828, 94.502))),
    "regnet_y_1_6gf": ((27, 48, 20.71, 2.65, 24, 0.25), 11_202_430, 1.612,
                       _imagenet("regnet_y_1_6gf", ("b11a554e", 77.950, 93.966), ("0d7bc02a", 80.876, 95.444))),
    "regnet_y_3_2gf": ((21, 80, 42.63, 2.66, 24, 0.25), 19_436_338, 3.176,
                       _imagenet("regnet_y_3_2gf", ("b5a9779c", 78.948, 94.576), ("9180c971", 81.982, 95.972))),
    "regnet_y_8gf": ((17, 192, 76.82, 2.19, 56, 0.25), 39_381_472, 8.473,
                     _imagenet("regnet_y_8gf", ("d0d0e4a8", 80.032, 95.048), ("dc2b1b54", 82.828, 96.330))),
    "regnet_y_16gf": ((18, 200, 106.23, 2.48, 112, 0.25), 83_590_140, 15.912,
                      _imagenet("regnet_y_16gf", ("9e6ed7dd", 80.424, 95.240), ("3e4a00f9", 82.886, 96.328))
                      + _swag("regnet_y_16gf", ("43afe44d", 86.012, 98.054), ("f3ec0043", 83.976, 97.244))),
    "regnet_y_32gf": ((20, 232, 115.89, 2.53, 232, 0.25), 145_046_770, 32.28,
                      _imagenet("regnet_y_32gf", ("4dee3f7a", 80.878, 95.340), ("8db6d4b5", 83.368, 96.498))
                      + _swag("regnet_y_32gf", ("04fdfa75", 86.838, 98.362), ("e1583746", 84.622, 97.480))),
    # Only SWAG weights; the linear-probe set (224 px) comes first, so that the published accuracy is at the size
    # of the published GMACs (127.518 at 224; torchvision's 374.57 are the end-to-end set's, at 384).
    "regnet_y_128gf": ((27, 456, 160.83, 2.52, 264, 0.25), 644_812_894, 127.518,
                       _swag("regnet_y_128gf", ("c8ce3e52", 88.228, 98.682), ("cbe8ce12", 86.068, 97.844))[::-1]),
}

for _name, ((_depth, _w0, _wa, _wm, _group, _se), _params, _gmacs, _weights) in VARIANTS.items():
    _kind = f"RegNet{_name[7].upper()}-{_name[9:].upper().replace('_', '.')}"
    register(
        _name,
        partial(RegNet, depth=_depth, w_0=_w0, w_a=_wa, w_m=_wm, group_width=_group, se_ratio=_se),
        image_size=224,
        family="regnet",
        description=f"{_kind} (quantised linear widths, group width {_group}{', SE' if _se else ''}; torchvision's)",
        published=torchvision_figures(_params, _gmacs),
        weights=_weights,
        # Parity for regnet_y_400mf (grouped 3x3, SE) at 67 px: PyTorch's floor at the stem and each stage's
        # stride-2 3x3 and 1x1 projection (34, 17, 9, 5, 3).
        torchvision=TorchvisionKeys(torchvision_prefix, parity_size=67 if _name == "regnet_y_400mf" else None),
    )
