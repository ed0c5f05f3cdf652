"""Inception modules: parallel convolution and pooling branches, concatenated along channels.

GoogLeNet's (Szegedy et al. 2015): 1x1, 3x3, 5x5 and pooling branches that keep the spatial size.
Inception v3's (Szegedy et al. 2016, "Rethinking the Inception Architecture"): the 35x35 module
(InceptionA: the 5x5 as two 3x3), the 17x17 module (InceptionC: 7x7 factorised into 1x7 and 7x1),
the 8x8 module (InceptionE: expanded 1x3 / 3x1 outputs side by side) and the two grid reductions
(InceptionB, InceptionD: stride-2 convolutions beside a stride-2 max pool, which pass the input's
channels through). Their submodules carry torchvision's names (``branch5x5_1``, ``branch_pool``, ...).
"""

from __future__ import annotations

from functools import partial

import flax.linen as nn
import jax.numpy as jnp

from jaxconv.blocks.base import Block, ConvNormAct
from jaxconv.layers import AvgPool, MaxPool


class _InceptionBase(Block):
    def _unit(self, name: str) -> partial:
        return partial(ConvNormAct, conv=self.conv, norm=self.norm, act=self.act, name=name)

    def _check(self, count: int, reduction: bool = False) -> tuple[int, ...]:
        if self.stride != 1 and not reduction:
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


# Inception v3 (Szegedy et al. 2016), as torchvision builds it (models/inception.py): every convolution is a
# conv-norm-ReLU unit; the pooling branches of the size-keeping modules average 3x3 windows padded by one
# (PyTorch's count_include_pad: the padding counts), the grid reductions' max pool 3x3/2 without padding.


class InceptionA(_InceptionBase):
    """The 35x35 module (the paper's figure 5): 1x1; 1x1 -> 5x5; 1x1 -> 3x3 -> 3x3; 3x3 average pool -> 1x1.

    ``features = (n1x1, n5x5_reduce, n5x5, n3x3dbl_reduce, n3x3dbl, pool_proj)``; torchvision's Mixed_5b is
    (64, 48, 64, 64, 96, 32) (its 5x5 branch kept from the TensorFlow release). Output channels: n1x1 + n5x5 +
    n3x3dbl + pool_proj.
    """

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        n1, n5_reduce, n5, n3_reduce, n3, pool_proj = self._check(6)
        unit = self._unit
        branch1x1 = unit("branch1x1")(n1, kernel_size=1)(x, train)
        branch5x5 = unit("branch5x5_1")(n5_reduce, kernel_size=1)(x, train)
        branch5x5 = unit("branch5x5_2")(n5, kernel_size=5)(branch5x5, train)
        branch3x3dbl = unit("branch3x3dbl_1")(n3_reduce, kernel_size=1)(x, train)
        branch3x3dbl = unit("branch3x3dbl_2")(n3, kernel_size=3)(branch3x3dbl, train)
        branch3x3dbl = unit("branch3x3dbl_3")(n3, kernel_size=3)(branch3x3dbl, train)
        branch_pool = AvgPool(3, 1, padding=1, name="pool")(x)
        branch_pool = unit("branch_pool")(pool_proj, kernel_size=1)(branch_pool, train)
        return jnp.concatenate([branch1x1, branch5x5, branch3x3dbl, branch_pool], axis=-1)


class InceptionB(_InceptionBase):
    """The 35x35 -> 17x17 grid reduction (figure 10): 3x3/2; 1x1 -> 3x3 -> 3x3/2; 3x3/2 max pool.

    ``features = (n3x3, n3x3dbl_reduce, n3x3dbl)``; torchvision's Mixed_6a is (384, 64, 96). The strided
    convolutions are unpadded and round down, as the pool. Output channels: n3x3 + n3x3dbl + the input's.
    """

    stride: int = 2

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        n3, n3_reduce, n3dbl = self._check(3, reduction=True)
        unit = self._unit
        branch3x3 = unit("branch3x3")(n3, self.stride, kernel_size=3, padding=0)(x, train)
        branch3x3dbl = unit("branch3x3dbl_1")(n3_reduce, kernel_size=1)(x, train)
        branch3x3dbl = unit("branch3x3dbl_2")(n3dbl, kernel_size=3)(branch3x3dbl, train)
        branch3x3dbl = unit("branch3x3dbl_3")(n3dbl, self.stride, kernel_size=3, padding=0)(branch3x3dbl, train)
        branch_pool = MaxPool(3, self.stride, fit="floor", name="pool")(x)
        return jnp.concatenate([branch3x3, branch3x3dbl, branch_pool], axis=-1)


class InceptionC(_InceptionBase):
    """The 17x17 module (figure 6, n = 7): 1x1; 1x1 -> 1x7 -> 7x1; 1x1 -> 7x1 -> 1x7 -> 7x1 -> 1x7; 3x3 average
    pool -> 1x1.

    ``features = (n1x1, n7x7_reduce, n7x7, n7x7dbl_reduce, n7x7dbl, pool_proj)``: the factorised convolutions keep
    their reduce width and the last of each branch gives n7x7 / n7x7dbl; torchvision's Mixed_6b is
    (192, 128, 192, 128, 192, 192) (its channels_7x7 = 128). Output channels: n1x1 + n7x7 + n7x7dbl + pool_proj.
    """

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        n1, n7_reduce, n7, n7dbl_reduce, n7dbl, pool_proj = self._check(6)
        unit = self._unit
        row, column = dict(kernel_size=(1, 7), padding=(0, 3)), dict(kernel_size=(7, 1), padding=(3, 0))
        branch1x1 = unit("branch1x1")(n1, kernel_size=1)(x, train)
        branch7x7 = unit("branch7x7_1")(n7_reduce, kernel_size=1)(x, train)
        branch7x7 = unit("branch7x7_2")(n7_reduce, **row)(branch7x7, train)
        branch7x7 = unit("branch7x7_3")(n7, **column)(branch7x7, train)
        branch7x7dbl = unit("branch7x7dbl_1")(n7dbl_reduce, kernel_size=1)(x, train)
        for index, (width, shape) in enumerate(
                ((n7dbl_reduce, column), (n7dbl_reduce, row), (n7dbl_reduce, column), (n7dbl, row)), start=2):
            branch7x7dbl = unit(f"branch7x7dbl_{index}")(width, **shape)(branch7x7dbl, train)
        branch_pool = AvgPool(3, 1, padding=1, name="pool")(x)
        branch_pool = unit("branch_pool")(pool_proj, kernel_size=1)(branch_pool, train)
        return jnp.concatenate([branch1x1, branch7x7, branch7x7dbl, branch_pool], axis=-1)


class InceptionD(_InceptionBase):
    """The 17x17 -> 8x8 grid reduction: 1x1 -> 3x3/2; 1x1 -> 1x7 -> 7x1 -> 3x3/2; 3x3/2 max pool.

    ``features = (n3x3_reduce, n3x3, n7x7x3_reduce, n7x7x3)``: the 1x7 and 7x1 keep the reduce width;
    torchvision's Mixed_7a is (192, 320, 192, 192). Output channels: n3x3 + n7x7x3 + the input's.
    """

    stride: int = 2

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        n3_reduce, n3, n7_reduce, n7 = self._check(4, reduction=True)
        unit = self._unit
        branch3x3 = unit("branch3x3_1")(n3_reduce, kernel_size=1)(x, train)
        branch3x3 = unit("branch3x3_2")(n3, self.stride, kernel_size=3, padding=0)(branch3x3, train)
        branch7x7x3 = unit("branch7x7x3_1")(n7_reduce, kernel_size=1)(x, train)
        branch7x7x3 = unit("branch7x7x3_2")(n7_reduce, kernel_size=(1, 7), padding=(0, 3))(branch7x7x3, train)
        branch7x7x3 = unit("branch7x7x3_3")(n7_reduce, kernel_size=(7, 1), padding=(3, 0))(branch7x7x3, train)
        branch7x7x3 = unit("branch7x7x3_4")(n7, self.stride, kernel_size=3, padding=0)(branch7x7x3, train)
        branch_pool = MaxPool(3, self.stride, fit="floor", name="pool")(x)
        return jnp.concatenate([branch3x3, branch7x7x3, branch_pool], axis=-1)


class InceptionE(_InceptionBase):
    """The 8x8 module with expanded outputs (figure 7): 1x1; 1x1 -> (1x3 | 3x1); 1x1 -> 3x3 -> (1x3 | 3x1);
    3x3 average pool -> 1x1, where (a | b) applies a and b to the same map and concatenates them.

    ``features = (n1x1, n3x3_reduce, n3x3, n3x3dbl_reduce, n3x3dbl, pool_proj)``; torchvision's Mixed_7b is
    (320, 384, 384, 448, 384, 192). Output channels: n1x1 + 2 n3x3 + 2 n3x3dbl + pool_proj (2048 there).
    """

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        n1, n3_reduce, n3, n3dbl_reduce, n3dbl, pool_proj = self._check(6)
        unit = self._unit
        row, column = dict(kernel_size=(1, 3), padding=(0, 1)), dict(kernel_size=(3, 1), padding=(1, 0))
        branch1x1 = unit("branch1x1")(n1, kernel_size=1)(x, train)
        branch3x3 = unit("branch3x3_1")(n3_reduce, kernel_size=1)(x, train)
        branch3x3 = jnp.concatenate([unit("branch3x3_2a")(n3, **row)(branch3x3, train),
                                     unit("branch3x3_2b")(n3, **column)(branch3x3, train)], axis=-1)
        branch3x3dbl = unit("branch3x3dbl_1")(n3dbl_reduce, kernel_size=1)(x, train)
        branch3x3dbl = unit("branch3x3dbl_2")(n3dbl, kernel_size=3)(branch3x3dbl, train)
        branch3x3dbl = jnp.concatenate([unit("branch3x3dbl_3a")(n3dbl, **row)(branch3x3dbl, train),
                                        unit("branch3x3dbl_3b")(n3dbl, **column)(branch3x3dbl, train)], axis=-1)
        branch_pool = AvgPool(3, 1, padding=1, name="pool")(x)
        branch_pool = unit("branch_pool")(pool_proj, kernel_size=1)(branch_pool, train)
        return jnp.concatenate([branch1x1, branch3x3, branch3x3dbl, branch_pool], axis=-1)
