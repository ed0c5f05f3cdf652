"""A small Inception network for the naive-vs-reduced study (the lectures' 854M vs 358M ops).

stem 3x3 conv -> two Inception modules -> 2x2 max pool -> two modules -> global average
pool -> linear. The same branch widths either way: with 1x1 reductions (GoogLeNet's module)
or without them (the naive module, whose pooling branch passes its input through, so the
channels grow from module to module and the 3x3 and 5x5 convolutions see all of them).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxconv.archs.common import classifier_output, pooled_head
from jaxconv.blocks import ConvNormAct, Inception, InceptionNaive
from jaxconv.blocks.base import Activation, ModuleDef
from jaxconv.layers import BatchNorm, Conv, MaxPool, relu
from jaxconv.layers.norm import norm_factory
from jaxconv.registry import register

# (n1x1, n3x3_reduce, n3x3, n5x5_reduce, n5x5, pool_proj): GoogLeNet's inception (3a) at half width.
MODULE_WIDTHS = (32, 48, 64, 8, 16, 16)


class SmallInception(nn.Module):
    """Four Inception modules in two stages of two, 'naive' or 'reduced' (with 1x1 reductions).

    Features: 'stem', 'stage1', 'stage2', 'pre_logits'.
    """

    module: str = "reduced"
    num_classes: int = 10
    stem_width: int = 64
    widths: Sequence[int] = MODULE_WIDTHS
    norm: ModuleDef | None = BatchNorm
    act: Activation = relu
    dropout: float = 0.0
    dtype: Any = jnp.float32
    axis_name: str | None = None  # sync BatchNorm over this device axis (set by the training system)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, return_features: bool = False):
        if self.module not in ("naive", "reduced"):
            raise ValueError(f"module must be 'naive' or 'reduced', got {self.module!r}")
        conv = partial(Conv, use_bias=self.norm is None, dtype=self.dtype)
        norm = norm_factory(self.norm, train=train, dtype=self.dtype, axis_name=self.axis_name)
        n1, n3_reduce, n3, n5_reduce, n5, pool_proj = self.widths
        if self.module == "naive":
            block, widths = InceptionNaive, (n1, n3, n5)
        else:
            block, widths = Inception, tuple(self.widths)
        features: dict[str, jnp.ndarray] = {}
        x = ConvNormAct(self.stem_width, conv=conv, norm=norm, act=self.act, name="stem")(x, train)
        features["stem"] = x
        for stage in (1, 2):
            if stage == 2:
                x = MaxPool(2, 2, name="pool1")(x)
            for index in range(2):
                x = block(widths, conv=conv, norm=norm, act=self.act, name=f"stage{stage}_block{index}")(x, train)
            features[f"stage{stage}"] = x
        logits = pooled_head(x, features, num_classes=self.num_classes, dropout=self.dropout, train=train,
                             dtype=self.dtype)
        return classifier_output(logits, features, return_features)


for _module in ("reduced", "naive"):
    register(
        "inception_small" + ("_naive" if _module == "naive" else ""),
        partial(SmallInception, module=_module),
        image_size=32,
        num_classes=10,
        family="inception_small",
        description=f"a 4-module Inception net ({_module} modules) for the naive-vs-1x1-reduction study",
    )
