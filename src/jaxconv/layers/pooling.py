"""Pooling over (N, H, W, C): max, average, global average and adaptive average."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from jaxconv.layers.geometry import (
    Fit,
    PaddingLike,
    as_pair,
    ceil_extra_padding,
    check_window,
    explicit_padding,
    layer_name,
)


class _Pool(nn.Module):
    """Shared geometry of max and average pooling (no parameters)."""

    window: int | tuple[int, int]
    stride: int | tuple[int, int] | None = None
    padding: PaddingLike = 0
    fit: Fit = "exact"

    def _geometry(self, x: jnp.ndarray):
        name = layer_name(self)
        if x.ndim != 4:
            raise ValueError(f"{name}: expected an (N, H, W, C) input, got shape {x.shape}")
        window = as_pair(self.window, f"{name}: window", positive=True)
        stride = as_pair(self.stride if self.stride is not None else self.window, f"{name}: stride", positive=True)
        pads = explicit_padding(self.padding, x.shape[1:3], window, stride)
        out = check_window(x.shape[1:3], window, stride, pads, fit=self.fit, layer=name)
        if self.fit == "ceil":  # extend the high side so that the floor-rounding reduction adds a window
            pads = tuple(
                (lo, hi + ceil_extra_padding(size, f, s, (lo, hi), o))
                for size, f, s, (lo, hi), o in zip(x.shape[1:3], window, stride, pads, out)
            )
        return window, stride, pads

    @staticmethod
    def _dims(window, stride, pads):
        return (1, *window, 1), (1, *stride, 1), ((0, 0), *pads, (0, 0))


class MaxPool(_Pool):
    """Max pooling; ``window=3, stride=2`` is AlexNet's overlapping pooling."""

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        dims, strides, pads = self._dims(*self._geometry(x))
        # Python scalars as init values give the differentiable reduce_window_max/_sum primitives.
        return lax.reduce_window(x, -jnp.inf, lax.max, dims, strides, pads)


class AvgPool(_Pool):
    """Average pooling.

    ``count_include_pad=True`` divides by the full window (PyTorch's default); the windows
    that ``fit='ceil'`` adds past the padded edge are divided by what they cover, as in PyTorch.
    """

    count_include_pad: bool = True

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        window, stride, pads = self._geometry(x)
        dims, strides, full_pads = self._dims(window, stride, pads)
        total = lax.reduce_window(x, 0.0, lax.add, dims, strides, full_pads)
        declared = explicit_padding(self.padding, x.shape[1:3], window, stride)
        if not self.count_include_pad or pads != declared:
            # Count the cells each window covers: the input, plus the declared padding if counted.
            ones = jnp.ones((1, *x.shape[1:3], 1), x.dtype)
            if self.count_include_pad:
                ones = jnp.pad(ones, ((0, 0), *declared, (0, 0)), constant_values=1)
                extra = tuple((lo - d_lo, hi - d_hi) for (lo, hi), (d_lo, d_hi) in zip(pads, declared))
                count = lax.reduce_window(ones, 0.0, lax.add, dims, strides, ((0, 0), *extra, (0, 0)))
            else:
                count = lax.reduce_window(ones, 0.0, lax.add, dims, strides, full_pads)
            return total / count
        return total / (window[0] * window[1])


class GlobalAvgPool(nn.Module):
    """Spatial mean: (N, H, W, C) -> (N, C), or (N, 1, 1, C) with keepdims."""

    keepdims: bool = False

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return jnp.mean(x, axis=(1, 2), keepdims=self.keepdims)


def _adaptive_bounds(size: int, out: int) -> list[tuple[int, int]]:
    # PyTorch's adaptive pooling cells: [floor(i*size/out), ceil((i+1)*size/out)).
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


class AdaptiveAvgPool(nn.Module):
    """Average pooling to a fixed (H', W') grid, with PyTorch's cell boundaries.

    torchvision's VGG and AlexNet end their feature extractor with it (7x7 and 6x6), which
    makes them accept inputs other than 224; at 224 it is the identity.
    """

    output_size: int | tuple[int, int]

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        out_h, out_w = as_pair(self.output_size, f"{layer_name(self)}: output_size", positive=True)
        height, width = x.shape[1:3]
        if (height, width) == (out_h, out_w):
            return x
        if height % out_h == 0 and width % out_w == 0:
            n, _, _, c = x.shape
            return x.reshape(n, out_h, height // out_h, out_w, width // out_w, c).mean(axis=(2, 4))
        rows = [
            jnp.stack([x[:, h0:h1, w0:w1, :].mean(axis=(1, 2)) for w0, w1 in _adaptive_bounds(width, out_w)], axis=1)
            for h0, h1 in _adaptive_bounds(height, out_h)
        ]
        return jnp.stack(rows, axis=1)
