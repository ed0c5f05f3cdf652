"""MBConv: the inverted residual block of MobileNetV2 with squeeze-and-excitation (EfficientNet),
EfficientNetV2's fused variant of it, and MobileNetV3's."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from jaxconv.blocks.base import Block, ConvNormAct
from jaxconv.layers import DropPath, SqueezeExcite, hard_sigmoid, relu, swish


def make_divisible(value: float, divisor: int = 8) -> int:
    """Rounds a channel count to a multiple of ``divisor``, never more than 10% below it.

    The rule of the TensorFlow and torchvision EfficientNets; parameter counts depend on it.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class MBConv(Block):
    """1x1 expand -> depthwise kxk (stride) -> squeeze-excite -> 1x1 project (no activation).

    The expansion is skipped when ``expand_ratio == 1``. The SE bottleneck has
    ``se_ratio * C_in`` channels (of the block's input, as in the paper). When stride is 1
    and channels are unchanged, the input is added back, with stochastic depth.
    """

    act: object = swish
    expand_ratio: int = 6
    kernel_size: int = 3
    se_ratio: float = 0.25
    drop_path: float = 0.0

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        in_features = x.shape[-1]
        hidden = make_divisible(in_features * self.expand_ratio)
        unit = dict(conv=self.conv, norm=self.norm, act=self.act)
        y = x
        if self.expand_ratio != 1:
            y = ConvNormAct(hidden, kernel_size=1, name="expand", **unit)(y, train)
        y = ConvNormAct(
            hidden, self.stride, kernel_size=self.kernel_size, groups=hidden, name="depthwise", **unit
        )(y, train)
        if self.se_ratio:
            squeeze = max(1, int(in_features * self.se_ratio))
            y = SqueezeExcite(squeeze, act=self.act, conv=self.conv, name="se")(y)
        y = ConvNormAct(self.features, kernel_size=1, name="project", **{**unit, "act": None})(y, train)
        if self.stride == 1 and in_features == self.features:
            y = DropPath(self.drop_path, name="drop_path")(y, deterministic=not train)
            y = y + x
        return y


class FusedMBConv(Block):
    """kxk expand (stride) -> 1x1 project (no activation); without expansion, one kxk conv (stride, with ``act``).

    EfficientNetV2's Fused-MBConv (Tan & Le 2021) as torchvision builds it: MBConv's 1x1 expansion
    and depthwise kxk fused into one full kxk convolution (named 'expand', to
    make_divisible(C_in * ``expand_ratio``) channels), no squeeze-and-excitation. When the expansion
    leaves the width unchanged, the block is the one kxk convolution straight to ``features``
    (named 'fused'). When stride is 1 and channels are unchanged, the input is added back, with
    stochastic depth.
    """

    act: object = swish
    expand_ratio: int = 4
    kernel_size: int = 3
    drop_path: float = 0.0

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        in_features = x.shape[-1]
        hidden = make_divisible(in_features * self.expand_ratio)
        unit = dict(conv=self.conv, norm=self.norm, act=self.act, kernel_size=self.kernel_size)
        if hidden != in_features:
            y = ConvNormAct(hidden, self.stride, name="expand", **unit)(x, train)
            y = ConvNormAct(self.features, name="project", **{**unit, "act": None, "kernel_size": 1})(y, train)
        else:
            y = ConvNormAct(self.features, self.stride, name="fused", **unit)(x, train)
        if self.stride == 1 and in_features == self.features:
            y = DropPath(self.drop_path, name="drop_path")(y, deterministic=not train)
            y = y + x
        return y


class MobileNetV3Block(Block):
    """1x1 expand to ``hidden`` -> depthwise kxk (stride) -> squeeze-excite -> 1x1 project (no activation).

    MobileNetV3's bottleneck (Howard et al. 2019) as torchvision builds it. Unlike MBConv, the
    expansion is a channel count (``hidden``; no expansion when it equals the input's), the
    squeeze-and-excitation is optional and sized on the expanded channels (make_divisible(hidden // 4)),
    with ReLU inside and a hard-sigmoid gate, and ``act`` (ReLU or hard swish) is chosen per block.
    When stride is 1 and channels are unchanged, the input is added back (no stochastic depth).
    """

    hidden: int = 16
    kernel_size: int = 3
    squeeze_excite: bool = False

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        in_features = x.shape[-1]
        unit = dict(conv=self.conv, norm=self.norm, act=self.act)
        y = x
        if self.hidden != in_features:
            y = ConvNormAct(self.hidden, kernel_size=1, name="expand", **unit)(y, train)
        y = ConvNormAct(
            self.hidden, self.stride, kernel_size=self.kernel_size, groups=self.hidden, name="depthwise", **unit
        )(y, train)
        if self.squeeze_excite:
            squeeze = make_divisible(self.hidden // 4)
            y = SqueezeExcite(squeeze, act=relu, gate=hard_sigmoid, conv=self.conv, name="se")(y)
        y = ConvNormAct(self.features, kernel_size=1, name="project", **{**unit, "act": None})(y, train)
        if self.stride == 1 and in_features == self.features:
            y = y + x
        return y
