"""ResNet blocks (He et al. 2016), their plain twins (the same layers without the shortcut), and
RegNet's bottleneck (Radosavovic et al. 2020): grouped by a fixed group width, optionally with SE.

Shortcut options, as in the paper (§3.3): 'A' zero-pads the extra channels of a strided
identity (no parameters, the CIFAR ResNets); 'B' projects with a 1x1 convolution when the
shape changes (torchvision); 'C' projects on every block.
"""

from __future__ import annotations

from typing import Literal

import flax.linen as nn
import jax.numpy as jnp

from jaxconv.blocks.base import Block
from jaxconv.layers import DropPath, SqueezeExcite

ShortcutKind = Literal["A", "B", "C"]


class ResidualBlock(Block):
    """Common part of residual blocks: y = act(branch(x) + shortcut(x)).

    Subclasses define ``branch(x, train)``; the shortcut, stochastic depth (``drop_path``)
    and the final activation are shared. ``zero_init_last`` starts the last norm's scale at
    zero, so that each block begins as the identity (Goyal et al. 2017); without a norm it
    starts the branch's last convolution at zero instead (Fixup's second rule, Zhang et al. 2019).
    """

    shortcut: ShortcutKind = "B"
    drop_path: float = 0.0
    zero_init_last: bool = False

    def branch(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        raise NotImplementedError

    def last_conv(self, *args, **kwargs) -> nn.Module:
        """The branch's last convolution: ``self.conv(*args, **kwargs)``, at zero when ``zero_init_last`` has no norm."""
        if self.zero_init_last and self.norm is None:
            kwargs["kernel_init"] = nn.initializers.zeros
        return self.conv(*args, **kwargs)

    def last_norm(self, x: jnp.ndarray, name: str, train: bool) -> jnp.ndarray:
        if self.zero_init_last:
            return self.normalize(x, name, train, scale_init=nn.initializers.zeros)
        return self.normalize(x, name, train)

    def identity(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        in_features = x.shape[-1]
        changes_shape = self.stride != 1 or in_features != self.features
        if self.shortcut not in ("A", "B", "C"):
            raise ValueError(f"shortcut must be 'A', 'B' or 'C', got {self.shortcut!r}")
        if self.shortcut == "C" or (self.shortcut == "B" and changes_shape):
            x = self.conv(self.features, 1, self.stride, name="shortcut_conv")(x)
            return self.normalize(x, "shortcut_norm", train)
        if not changes_shape:
            return x
        # Option A: subsample, then zero-pad the new channels, half on each side.
        if self.features < in_features:
            raise ValueError(
                f"shortcut 'A' cannot reduce channels ({in_features} -> {self.features}); use 'B' or 'C'"
            )
        x = x[:, :: self.stride, :: self.stride, :]
        extra = self.features - in_features
        return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        y = self.branch(x, train)
        y = DropPath(self.drop_path, name="drop_path")(y, deterministic=not train)
        return self.activate(y + self.identity(x, train))


class BasicBlock(ResidualBlock):
    """Two 3x3 convolutions (ResNet-18/34 and the CIFAR ResNets); stride on the first."""

    def branch(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        y = self.conv(self.features, 3, self.stride, padding=1, name="conv1")(x)
        y = self.activate(self.normalize(y, "norm1", train))
        y = self.last_conv(self.features, 3, 1, padding=1, name="conv2")(y)
        return self.last_norm(y, "norm2", train)


class Bottleneck(ResidualBlock):
    """1x1 reduce -> 3x3 -> 1x1 expand to ``features`` (ResNet-50/101/152, ResNeXt, Wide ResNet).

    The inner width is features / ``expansion`` x ``width_per_group`` / 64 x ``groups``, as
    torchvision computes it: ResNeXt's 32x4d splits the 3x3 into ``groups=32`` of 4 channels
    (Xie et al. 2017), Wide ResNet-50-2 doubles the inner width (``width_per_group=128``).
    ``variant='v1.5'`` (torchvision's default) strides the 3x3 convolution; ``'v1'`` (the
    paper) strides the first 1x1, which skips three of every four positions before any 3x3
    sees them: 3.86 vs 4.09 GMACs for ResNet-50.
    """

    expansion: int = 4
    variant: Literal["v1", "v1.5"] = "v1.5"
    groups: int = 1
    width_per_group: int = 64

    def branch(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        if self.variant not in ("v1", "v1.5"):
            raise ValueError(f"variant must be 'v1' or 'v1.5', got {self.variant!r}")
        width = int(self.features // self.expansion * self.width_per_group / 64) * self.groups
        stride_1x1, stride_3x3 = (self.stride, 1) if self.variant == "v1" else (1, self.stride)
        y = self.conv(width, 1, stride_1x1, name="conv1")(x)
        y = self.activate(self.normalize(y, "norm1", train))
        y = self.conv(width, 3, stride_3x3, padding=1, groups=self.groups, name="conv2")(y)
        y = self.activate(self.normalize(y, "norm2", train))
        y = self.last_conv(self.features, 1, 1, name="conv3")(y)
        return self.last_norm(y, "norm3", train)


class RegNetBottleneck(ResidualBlock):
    """1x1 -> 3x3 grouped (stride) [-> squeeze-excite] -> 1x1 to ``features``; torchvision's ResBottleneckBlock.

    The inner width is round(features x ``bottleneck_ratio``) (1 in every published RegNet), split into
    groups of ``group_width`` channels (the inner width // group_width groups). ``se_ratio`` (RegNetY: 0.25)
    adds squeeze-and-excitation after the 3x3, squeezing to round(se_ratio x the block's *input* width),
    with the block's activation and a sigmoid gate; None leaves it out (RegNetX). Shortcut 'B' (a strided
    1x1 projection when the shape changes), the activation after the sum.
    """

    group_width: int = 1
    bottleneck_ratio: float = 1.0
    se_ratio: float | None = None

    def branch(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        width = int(round(self.features * self.bottleneck_ratio))
        if width % self.group_width:
            raise ValueError(f"RegNetBottleneck: group_width={self.group_width} must divide the inner width {width} "
                             f"(features {self.features} x bottleneck_ratio {self.bottleneck_ratio})")
        y = self.conv(width, 1, name="conv1")(x)
        y = self.activate(self.normalize(y, "norm1", train))
        y = self.conv(width, 3, self.stride, padding=1, groups=width // self.group_width, name="conv2")(y)
        y = self.activate(self.normalize(y, "norm2", train))
        if self.se_ratio:
            y = SqueezeExcite(int(round(self.se_ratio * x.shape[-1])), act=self.activate, conv=self.conv, name="se")(y)
        y = self.last_conv(self.features, 1, name="conv3")(y)
        return self.last_norm(y, "norm3", train)


class PlainBasicBlock(BasicBlock):
    """BasicBlock without the shortcut: the 'plain' network of the ResNet paper."""

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        return self.activate(self.branch(x, train))


class PlainBottleneck(Bottleneck):
    """Bottleneck without the shortcut."""

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        return self.activate(self.branch(x, train))
