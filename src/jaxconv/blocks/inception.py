"""Inception modules (Szegedy et al. 2015): parallel 1x1, 3x3, 5x5 and pooling branches.

Branch outputs are concatenated along channels; every branch keeps the spatial size.
"""

from __future__ import annotations

from functools import partial

import flax.linen as nn
import jax.numpy as jnp

from jaxconv.blocks.base import Block, ConvNormAct
from jaxconv.layers import MaxPool


class _InceptionBase(Block):
    def _unit(self, name: str) -> partial:
        return partial(ConvNormAct, conv=self.conv, norm=self.norm, act=self.act, name=name)

    def _check(self, count: int) -> tuple[int, ...]:
        if self.stride != 1:
            raise ValueError(
                f"{type(self).__name__} keeps the spatial size (stride 1); got stride={self.stride}. "
                "Put a pooling layer between Inception stages instead."
            )
        widths = tuple(self.features)
        if len(widths) != count:
            raise ValueError(f"{type(self).__name__} takes {count} branch widths, got {self.features!r}")
        return widths


class InceptionNaive(_InceptionBase):
    """The naive module: 1x1, 3x3 and 5x5 convolutions and a 3x3 max pool, side by side.

    ``features = (n1x1, n3x3, n5x5)``; the pool branch passes the input's channels through,
    so the output has n1x1 + n3x3 + n5x5 + C_in channels ("depth can only grow").
    """

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        n1, n3, n5 = self._check(3)
        branches = [
            self._unit("branch1")(n1, kernel_size=1)(x, train),
            self._unit("branch2")(n3, kernel_size=3)(x, train),
            self._unit("branch3")(n5, kernel_size=5)(x, train),
            MaxPool(3, 1, padding=1, name="branch4_pool")(x),
        ]
        return jnp.concatenate(branches, axis=-1)


class Inception(_InceptionBase):
    """The module with 1x1 dimension reductions (GoogLeNet's).

    ``features = (n1x1, n3x3_reduce, n3x3, n5x5_reduce, n5x5, pool_proj)`` as in the paper's
    Table 1. ``branch3_kernel`` is 5 in the paper; torchvision's GoogLeNet uses 3 there.
    """

    branch3_kernel: int = 5

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        n1, n3_reduce, n3, n5_reduce, n5, pool_proj = self._check(6)
        unit = self._unit
        branch1 = unit("branch1")(n1, kernel_size=1)(x, train)
        branch2 = unit("branch2_reduce")(n3_reduce, kernel_size=1)(x, train)
        branch2 = unit("branch2")(n3, kernel_size=3)(branch2, train)
        branch3 = unit("branch3_reduce")(n5_reduce, kernel_size=1)(x, train)
        branch3 = unit("branch3")(n5, kernel_size=self.branch3_kernel)(branch3, train)
        branch4 = MaxPool(3, 1, padding=1, name="branch4_pool")(x)
        branch4 = unit("branch4")(pool_proj, kernel_size=1)(branch4, train)
        return jnp.concatenate([branch1, branch2, branch3, branch4], axis=-1)
