"""Normalisation layers (BatchNorm with running statistics, GroupNorm, LayerNorm over channels,
AlexNet's local response norm) and how a model sets its normalisation up once for its blocks.

A model is given ``norm`` as a name ('batch', 'group', 'layer'), a module class or partial,
or None, and hands its blocks ``norm_factory(norm, train=..., dtype=..., axis_name=...)``:
a partial that blocks call as ``norm(name='norm1')(x)``, with the training mode, compute
dtype and (BatchNorm only) the data-parallel axis already bound, as the Flax ImageNet
example's ``partial(nn.BatchNorm, use_running_average=not train, axis_name=...)``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from jaxconv.layers.geometry import layer_name


class BatchNorm(nn.BatchNorm):
    """Batch normalisation over (N, H, W) per channel, with running statistics.

    Set up by a model as ``norm_factory(BatchNorm, train=...)`` and called as ``norm(name=...)(x)``
    (on its own: ``BatchNorm()(x, use_running_average=not train)``): in training it normalises with
    the batch statistics and updates ``batch_stats`` (mean, var) by an exponential moving
    average; in evaluation it uses them, and is then a per-channel affine map that
    ``jaxconv.analysis.fold_batchnorm`` folds into the preceding convolution.

    Defaults follow torchvision: ``momentum=0.9`` here is PyTorch's ``momentum=0.1``
    (flax keeps the fraction of the old statistic), ``epsilon=1e-5``. With ``axis_name``
    set (inside pmap/shard_map), mean and E[x^2] are averaged over that device axis, so the
    statistics are those of the global batch (variance = E[x^2] - E[x]^2).
    Running variance is the biased batch variance (PyTorch stores the unbiased one).

    That one-pass variance (flax's ``use_fast_variance``, one reduction, one collective) loses float32
    precision when a channel's mean is far larger than its spread: at mean/std = 1000 the normalised
    output is off by up to 0.3 (PyTorch's kernels: 8e-4); at 300, 1e-2 to 3e-2; below about 10, float32
    rounding. Inputs normalised by the dataset's mean and std, and convolution outputs in a trained
    network, are far from that; ``use_fast_variance=False`` (two passes) gives 5e-5 at 1000.
    """

    momentum: float = 0.9
    epsilon: float = 1e-5


class GroupNorm(nn.Module):
    """Group normalisation (Wu & He 2018): per example, mean and variance over (H, W) and the
    channels of each of ``num_groups`` groups; a learned per-channel scale and bias.

    ``num_groups`` is the paper's 32, or, for fewer or indivisible channels, the largest
    divisor of the channel count that does not exceed it (16 channels: 16 groups), so that one
    setting fits every layer of a network. No running statistics: training and evaluation
    compute the same function. Statistics in float32 at least.
    """

    num_groups: int = 32
    epsilon: float = 1e-5
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        if isinstance(self.num_groups, bool) or not isinstance(self.num_groups, int) or self.num_groups < 1:
            raise ValueError(f"{layer_name(self)}: num_groups must be a positive int, got {self.num_groups!r}")
        channels = x.shape[-1]
        groups = max(d for d in range(1, min(self.num_groups, channels) + 1) if channels % d == 0)
        scale = self.param("scale", nn.initializers.ones, (channels,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (channels,), self.param_dtype)
        compute = jnp.promote_types(x.dtype, jnp.float32)
        grouped = x.astype(compute).reshape(*x.shape[:-1], groups, channels // groups)
        axes = (*range(1, x.ndim - 1), x.ndim)  # (H, W) and the channels of a group
        mean = grouped.mean(axis=axes, keepdims=True)
        var = jnp.square(grouped - mean).mean(axis=axes, keepdims=True)
        y = ((grouped - mean) * lax.rsqrt(var + self.epsilon)).reshape(x.shape)
        dtype = self.dtype or x.dtype
        return (y * scale + bias).astype(dtype)


class LayerNorm(nn.LayerNorm):
    """Layer normalisation over the channels of each position (N, H, W, C), ConvNeXt's
    'LayerNorm over channels'; PyTorch's epsilon."""

    epsilon: float = 1e-5


NORMS = {"batch": BatchNorm, "group": GroupNorm, "layer": LayerNorm}


def _module_class(norm: Any) -> type:
    while isinstance(norm, functools.partial):
        norm = norm.func
    return norm


def resolve_norm(norm: Any) -> Any:
    """A model's ``norm`` field as a module class or partial: 'batch', 'group', 'layer', None or a module."""
    if norm is None or not isinstance(norm, str):
        module_class = _module_class(norm)
        if norm is not None and not (isinstance(module_class, type) and issubclass(module_class, nn.Module)):
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, None, or a Flax module class (or partial), "
                             f"got {norm!r}")
        return norm
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r}: expected one of {', '.join(NORMS)} or None")
    return NORMS[norm]


def uses_batch_statistics(norm: Any) -> bool:
    """True for BatchNorm-like modules: they take ``use_running_average`` and keep running statistics."""
    norm = resolve_norm(norm)
    return norm is not None and "use_running_average" in {f.name for f in dataclasses.fields(_module_class(norm))}


def bind_training_mode(norm: Any, train: bool) -> Any:
    """``norm`` with ``use_running_average=not train`` bound when it is a BatchNorm not yet bound
    (a block used on its own, outside a model that set its normalisation up)."""
    if norm is None or not uses_batch_statistics(norm):
        return norm
    bound = norm.keywords if isinstance(norm, functools.partial) else {}
    return norm if "use_running_average" in bound else functools.partial(norm, use_running_average=not train)


def norm_factory(norm: Any, *, train: bool, dtype: Any = None, axis_name: str | None = None) -> Any:
    """The normalisation a model hands its blocks, called as ``norm(name=...)(x)`` (None: none).

    Binds what the module takes of: the training mode (``use_running_average=not train``),
    the compute ``dtype``, and for BatchNorm the device axis its statistics average over
    (sync BatchNorm; None: this device's batch).
    """
    norm = resolve_norm(norm)
    if norm is None:
        return None
    fields = {f.name for f in dataclasses.fields(_module_class(norm))}
    bound: dict[str, Any] = {}
    if "use_running_average" in fields:
        bound["use_running_average"] = not train
        if axis_name is not None and "axis_name" in fields:
            bound["axis_name"] = axis_name
    if dtype is not None and "dtype" in fields:
        bound["dtype"] = dtype
    return functools.partial(norm, **bound)


class LocalResponseNorm(nn.Module):
    """Local response normalisation across channels (Krizhevsky et al. 2012, §3.3).

        b[c] = a[c] / (k + alpha * sum_{c' in window(c)} a[c']^2) ** beta

    over the ``size`` channels centred on c. AlexNet uses k=2, n=5, alpha=1e-4, beta=0.75.
    This is the paper's formula; PyTorch's and Caffe's LRN divide alpha by ``size``, so
    their ``alpha`` equals ``size`` times this one.
    """

    size: int = 5
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 2.0

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        squares = jnp.square(x.astype(jnp.float32))
        half = self.size // 2
        window_sum = lax.reduce_window(
            squares,
            0.0,
            lax.add,
            (1, 1, 1, self.size),
            (1, 1, 1, 1),
            ((0, 0), (0, 0), (0, 0), (half, self.size - 1 - half)),
        )
        scale = (self.k + self.alpha * window_sum) ** (-self.beta)
        return (x * scale).astype(x.dtype)
