"""2-D convolution (NHWC) that checks the output-size rule before it computes."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from jaxconv.layers.geometry import Fit, PaddingLike, as_pair, check_window, explicit_padding, layer_name

Dtype = Any
Initializer = Any

# He (Kaiming) normal with fan_out, as torchvision initialises ResNet/VGG convolutions.
he_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class Conv(nn.Module):
    """Convolution over (N, H, W, C) inputs with kernel layout (kh, kw, C_in / groups, C_out).

    The output-size rule W' = (W - F + 2P)/S + 1 is applied to H and W when the layer is
    traced, so a geometry that does not fit raises GeometryError (a ValueError) naming the
    layer, W, F, P and S before any compute. ``fit='floor'`` instead drops the remainder
    rows the way PyTorch and Caffe do; architectures ported from them declare it.

    Attributes:
      features: output channels C_out.
      kernel_size: F, an int or (kh, kw).
      stride: S, an int or (sh, sw).
      padding: P as an int, (ph, pw), ((lo, hi), (lo, hi)), 'SAME' or 'VALID'.
      dilation: kernel dilation (atrous convolution).
      groups: channel groups (AlexNet's two-GPU split; groups = C_in is depthwise).
      fit: 'exact' (raise when the rule gives a non-integer) or 'floor'.
    """

    features: int
    kernel_size: int | tuple[int, int]
    stride: int | tuple[int, int] = 1
    padding: PaddingLike = 0
    dilation: int | tuple[int, int] = 1
    groups: int = 1
    use_bias: bool = True
    fit: Fit = "exact"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    kernel_init: Initializer = he_normal_fan_out
    bias_init: Initializer = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        name = layer_name(self)
        if x.ndim != 4:
            raise ValueError(f"{name}: expected an (N, H, W, C) input, got shape {x.shape}")
        if self.fit == "ceil":
            raise ValueError(f"{name}: fit='ceil' is a pooling mode; convolutions take 'exact' or 'floor'")
        kernel = as_pair(self.kernel_size, f"{name}: kernel_size")
        stride = as_pair(self.stride, f"{name}: stride")
        dilation = as_pair(self.dilation, f"{name}: dilation")
        in_features = x.shape[-1]
        if in_features % self.groups or self.features % self.groups:
            raise ValueError(
                f"{name}: groups={self.groups} must divide both the input channels ({in_features}) "
                f"and the output channels ({self.features})"
            )
        pads = explicit_padding(self.padding, x.shape[1:3], kernel, stride, dilation)
        check_window(x.shape[1:3], kernel, stride, pads, dilation=dilation, fit=self.fit, layer=name)

        kernel_param = self.param(
            "kernel", self.kernel_init, (*kernel, in_features // self.groups, self.features), self.param_dtype
        )
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
        x, kernel_param, bias = nn.dtypes.promote_dtype(x, kernel_param, bias, dtype=self.dtype)
        y = lax.conv_general_dilated(
            x,
            kernel_param,
            window_strides=stride,
            padding=pads,
            rhs_dilation=dilation,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=self.groups,
        )
        if bias is not None:
            y = y + bias
        return y
