"""The signature every block shares, and the conv-norm-activation unit most are made of."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxconv.layers import BatchNorm, Conv, relu
from jaxconv.layers.norm import bind_training_mode

ModuleDef = Any  # a module class or a functools.partial of one
Activation = Callable[[jnp.ndarray], jnp.ndarray]


class Block(nn.Module):
    """Base of every block: ``Block(features, stride, conv, norm, act)(x, train) -> y``.

    The layers are injected, pre-configured: ``conv`` builds a convolution (e.g.
    ``partial(Conv, use_bias=False, fit='floor')``), ``norm`` a normalisation called as
    ``norm(name=...)(x)``, set up once by the model (``jaxconv.layers.norm_factory``: training
    mode, dtype and sync axis bound; a bare BatchNorm gets the mode from ``train``), or None,
    ``act`` is a function. ``features`` is what the block outputs: its channel count
    (a tuple of branch widths for Inception modules). ``stride`` is the block's spatial
    downsampling. The stage builder (``jaxconv.stages``) builds any subclass, including
    one written in a user's own file; subclasses add their own fields, all with defaults.
    """

    features: Any
    stride: int = 1
    conv: ModuleDef = Conv
    norm: ModuleDef | None = BatchNorm
    act: Activation | None = relu

    def normalize(self, x: jnp.ndarray, name: str, train: bool, **norm_kwargs) -> jnp.ndarray:
        """Applies the injected norm (if any) as submodule ``name``."""
        if self.norm is None:
            return x
        return bind_training_mode(self.norm, train)(name=name, **norm_kwargs)(x)

    def activate(self, x: jnp.ndarray) -> jnp.ndarray:
        return x if self.act is None else self.act(x)

    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must define __call__(x, train)")


class ConvNormAct(Block):
    """conv (kernel_size, stride, 'same-size' padding) -> norm -> act; VGG's block.

    Submodules are named ``conv`` and ``norm``. ``padding=None`` pads (F - 1) / 2 * dilation,
    which keeps the size at stride 1. ``act=None`` leaves the output linear.
    """

    kernel_size: int = 3
    padding: Any = None
    groups: int = 1
    dilation: int = 1

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        padding = (self.kernel_size - 1) // 2 * self.dilation if self.padding is None else self.padding
        x = self.conv(
            self.features,
            self.kernel_size,
            self.stride,
            padding=padding,
            groups=self.groups,
            dilation=self.dilation,
            name="conv",
        )(x)
        return self.activate(self.normalize(x, "norm", train))
