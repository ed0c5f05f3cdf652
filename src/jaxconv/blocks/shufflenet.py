"""ShuffleNet V2's unit (Ma et al. 2018): channel split, two branches, concatenation, channel shuffle."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from jaxconv.blocks.base import Block, ConvNormAct
from jaxconv.layers import channel_shuffle


class ShuffleNetV2Unit(Block):
    """Two branches of ``features // 2`` channels each, concatenated, then their channels shuffled (2 groups).

    Stride 1 (the paper's Fig. 3c): the input is split into halves; the first passes unchanged, the
    second goes through 1x1 conv -> norm -> act -> depthwise kxk -> norm -> 1x1 conv -> norm -> act
    (``branch2_pointwise1``, ``branch2_depthwise``, ``branch2_pointwise2``); the input must have
    ``features`` channels. Stride 2 (Fig. 3d): no split, both branches see the whole input; the first
    becomes a depthwise kxk/2 -> norm -> 1x1 conv -> norm -> act (``branch1_depthwise``,
    ``branch1_pointwise``), the second the same three convolutions with its depthwise strided, so the
    width may change. No activation follows a depthwise convolution. The shuffle interleaves the two
    branches' channels, so the next unit's split takes half of each.
    """

    kernel_size: int = 3

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        in_features = x.shape[-1]
        if self.features % 2:
            raise ValueError(f"{type(self).__name__}: features={self.features} must be even (two equal branches)")
        if self.stride == 1 and in_features != self.features:
            raise ValueError(f"{type(self).__name__}: at stride 1 the input's {in_features} channels must equal "
                             f"features={self.features} (half of them pass unchanged); a stride-2 unit changes width")
        branch = self.features // 2
        unit = dict(conv=self.conv, norm=self.norm, act=self.act)
        linear = {**unit, "act": None}
        if self.stride == 1:
            kept, y = jnp.split(x, 2, axis=-1)
        else:
            kept = ConvNormAct(in_features, self.stride, kernel_size=self.kernel_size, groups=in_features,
                               name="branch1_depthwise", **linear)(x, train)
            kept = ConvNormAct(branch, kernel_size=1, name="branch1_pointwise", **unit)(kept, train)
            y = x
        y = ConvNormAct(branch, kernel_size=1, name="branch2_pointwise1", **unit)(y, train)
        y = ConvNormAct(branch, self.stride, kernel_size=self.kernel_size, groups=branch, name="branch2_depthwise",
                        **linear)(y, train)
        y = ConvNormAct(branch, kernel_size=1, name="branch2_pointwise2", **unit)(y, train)
        return channel_shuffle(jnp.concatenate([kept, y.astype(kept.dtype)], axis=-1), 2)
