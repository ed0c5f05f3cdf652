"""2-D convolution (NHWC) that checks the output-size rule before it computes."""

from __future__ import annotations

import contextlib
import contextvars
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxconv.layers.geometry import Fit, LayoutError, PaddingLike, as_pair, check_window, explicit_padding, layer_name

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
        if not hasattr(x, "ndim"):  # a file name, a PIL image, a list: not yet an array
            raise TypeError(f"{name}: expected an (N, H, W, C) array of images, got {type(x).__name__} {x!r:.60}")
        if x.ndim != 4:
            raise ValueError(f"{name}: expected an (N, H, W, C) input, got shape {x.shape}")
        if self.fit == "ceil":
            raise ValueError(f"{name}: fit='ceil' is a pooling mode; convolutions take 'exact' or 'floor'")
        kernel = as_pair(self.kernel_size, f"{name}: kernel_size", positive=True)
        stride = as_pair(self.stride, f"{name}: stride", positive=True)
        dilation = as_pair(self.dilation, f"{name}: dilation", positive=True)
        in_features = x.shape[-1]
        for field in ("features", "groups"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: {field}={value!r} must be a positive integer")
        if in_features % self.groups or self.features % self.groups:
            raise ValueError(
                f"{name}: groups={self.groups} must divide both the input channels ({in_features}) "
                f"and the output channels ({self.features})"
            )
        pads = explicit_padding(self.padding, x.shape[1:3], kernel, stride, dilation)
        check_window(x.shape[1:3], kernel, stride, pads, dilation=dilation, fit=self.fit, layer=name)

        first = self.is_initializing() and _first_convolution(self)
        if first and x.shape[1] in (1, 3, 4) and x.shape[2] == x.shape[3] > 4:
            # (N, 3, 32, 32): a square NCHW image would build weights for 32 input channels, silently. Guessed on the
            # images only (the first convolution of the network): an inner (N, 3, 64, 64) map is NHWC (12x256 inputs).
            raise LayoutError(f"{name}: the input's shape {tuple(x.shape)} looks like NCHW: jaxconv models take NHWC "
                             f"images, x.transpose(0, 2, 3, 1) gives {(x.shape[0], *x.shape[2:], x.shape[1])}")
        if self.has_variable("params", "kernel"):  # applying given weights: do they take this input?
            expected = self.get_variable("params", "kernel").shape[2] * self.groups
            if expected != in_features:
                layout = ("; it looks like NCHW: jaxconv models take NHWC, x.transpose(0, 2, 3, 1)"
                          if x.shape[1] == expected else f"; jaxconv models take NHWC images with {expected} channels")
                raise LayoutError(f"{name}: its weights take {expected} input channels, the input has {in_features} "
                                 f"(shape {tuple(x.shape)}){layout}")
        kernel_param = self.param(
            "kernel", self.kernel_init, (*kernel, in_features // self.groups, self.features), self.param_dtype
        )
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
        x, kernel_param, bias = nn.dtypes.promote_dtype(x, kernel_param, bias, dtype=self.dtype)
        y = convolve(x, kernel_param, stride, pads, dilation, self.groups)
        if bias is not None:
            y = y + bias
        return y


def _first_convolution(conv: Conv) -> bool:
    """Whether ``conv`` is the first convolution called in its network's trace (the one the images reach)."""
    root = conv.scope.root
    if getattr(root, "_jaxconv_convolved", False):
        return False
    root._jaxconv_convolved = True
    return True


NHWC = ("NHWC", "HWIO", "NHWC")
_REFERENCE = contextvars.ContextVar("jaxconv_reference_convolutions", default=False)


@contextlib.contextmanager
def reference_convolutions():
    """Within this context ``convolve`` emits one plain lax.conv_general_dilated per call.

    The analyzer (jaxconv.analysis) traces models inside it: it reads MACs and receptive
    fields from the convolution primitives of the jaxpr, whatever formulation runs. Trace a
    new function inside it (a closure, as the analyzer does): JAX's trace cache, keyed on the
    function and its arguments' shapes, would return an earlier jit's trace of the same one.
    """
    token = _REFERENCE.set(True)
    try:
        yield
    finally:
        _REFERENCE.reset(token)


def convolve(x: jnp.ndarray, kernel: jnp.ndarray, stride: tuple[int, int], padding, dilation=(1, 1),
             groups: int = 1) -> jnp.ndarray:
    """lax.conv_general_dilated of (N, H, W, C) by (kh, kw, C / groups, C_out) with explicit padding.

    Two cases take another formulation, for XLA's CPU backend (docs/benchmarks.md, issue 7);
    the values are the same, the summation order (hence the last bits) may differ:

    * a kernel with more taps than its input or output map has positions (a 3x3 kernel on a
      2x2 or 1x1 map: the last stages of an ImageNet ResNet at 32 px) goes through
      ``small_map_convolution``: XLA would otherwise swap its operands (the small map becoming
      the kernel) and run the swapped convolution on a generic loop, 10-15x slower;
    * on the CPU backend, a depthwise convolution (groups = input = output channels) is a sum
      over its taps of shifted views times per-channel weights (``depthwise_by_taps``): XLA:CPU
      lowers grouped convolutions' gradients to far more work (its cost analysis of an
      EfficientNet-B0 training step: 7.5 GFLOP per image against 0.89 this way; the step runs
      5.1x faster). Other backends keep the grouped convolution;
    * on the CPU backend, any other grouped convolution (ResNeXt's, AlexNet's two towers) goes
      through ``grouped_by_dense``: dense convolutions over bundles of groups, concatenated.
      XLA:CPU runs grouped convolutions (forward and both gradients) 80-2,200x slower per MAC
      than a dense convolution of the same MACs; this way 1.9-9x (docs/benchmarks.md, issue 18);
    * on the CPU backend, a differentiated dense convolution with more than one tap reads its
      input through ``kept_for_backward``, so that its kernel gradient does not recompute the
      chain that produced it (issue 23).
    """
    (top, bottom), (left, right) = padding
    height, width = x.shape[1:3]
    kh, kw = kernel.shape[:2]
    out_h = (height + top + bottom - kh) // stride[0] + 1
    out_w = (width + left + right - kw) // stride[1] + 1
    taps = kh * kw
    stride = (int(stride[0]), int(stride[1]))
    pads = ((int(top), int(bottom)), (int(left), int(right)))
    plain = partial(_plain_convolution, stride=stride, padding=pads, dilation=tuple(dilation), groups=groups)
    if _REFERENCE.get() or tuple(dilation) != (1, 1):
        return plain(x, kernel)
    if groups == 1 and (taps > height * width or taps > out_h * out_w):
        return small_map_convolution(x, kernel, stride, pads)
    if groups > 1 and groups == x.shape[-1] == kernel.shape[-1]:
        return lax.platform_dependent(x, kernel, cpu=partial(depthwise_by_taps, stride=stride, padding=pads),
                                      default=plain)
    if groups > 1:
        return lax.platform_dependent(x, kernel, cpu=partial(grouped_by_dense, stride=stride, padding=pads,
                                                             groups=groups), default=plain)
    if taps > 1:  # a 1x1 convolution's kernel gradient is a matrix product on XLA:CPU: no layout copy
        x = lax.platform_dependent(x, kernel, cpu=kept_for_backward, default=lambda x, kernel: x)
    return plain(x, kernel)


@jax.custom_jvp
def kept_for_backward(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    """``x`` itself; differentiated, ``x`` as a buffer XLA cannot fuse through (XLA:CPU, dense convolutions).

    A kernel gradient on XLA:CPU first copies the convolution's input into another layout, and
    XLA fuses into that copy whatever elementwise chain produced the input: in a ResNet the
    BatchNorms, residual adds and ReLUs of every earlier block of the stage, recomputed once per
    convolution in the backward pass. Under differentiation the input passes through a
    conditional (on a value of the kernel, which XLA cannot fold; both branches return the
    input), whose output is a buffer: the copy reads it instead (ResNet-20's train step
    1.2-1.45x faster; docs/benchmarks.md, issue 23). Tangents and cotangents pass unchanged, and
    without differentiation nothing is added.
    """
    del kernel
    return x


@kept_for_backward.defjvp
def _kept_for_backward_jvp(primals, tangents):
    x, kernel = primals
    dx, _ = tangents
    first = kernel.reshape(-1)[0]
    # False only for a NaN; both branches return the input (x * 1.0 is x exactly; identical branches
    # would be merged, and the conditional with them).
    kept = lax.cond(first == first, lambda x: x, lambda x: x * 1.0, x)
    return kept, dx


def group_bundle(groups: int, group_channels: int, min_channels: int = 16) -> int:
    """How many neighbouring groups ``grouped_by_dense`` convolves together.

    One group at a time while a group has 8 or more input channels; narrower groups are
    bundled until a bundle has ``min_channels`` (the largest divisor of ``groups`` that does
    not exceed it): XLA:CPU's dense convolutions are so slow per MAC at 4 channels that
    computing the zero blocks of a bundle's block-diagonal kernel costs less
    (docs/benchmarks.md, issue 18).
    """
    if group_channels >= 8:
        return 1
    limit = max(1, min_channels // group_channels)
    return max(d for d in range(1, min(groups, limit) + 1) if groups % d == 0)


def block_diagonal(kernel: jnp.ndarray, groups: int) -> jnp.ndarray:
    """A grouped kernel (kh, kw, C / G, C_out) as the dense kernel (kh, kw, C, C_out) it stands for:
    group g's block on the diagonal, zeros elsewhere."""
    kh, kw, group_in, out = kernel.shape
    blocks = kernel.reshape(kh, kw, group_in, groups, out // groups)
    dense = jnp.einsum("hwcpo,pq->hwpcqo", blocks, jnp.eye(groups, dtype=kernel.dtype))
    return dense.reshape(kh, kw, groups * group_in, out)


def grouped_by_dense(x: jnp.ndarray, kernel: jnp.ndarray, *, stride: tuple[int, int], padding,
                     groups: int) -> jnp.ndarray:
    """A grouped convolution, kernel (kh, kw, C / G, C_out), as dense convolutions, concatenated.

    Each bundle of ``group_bundle`` neighbouring groups is one dense convolution of its input
    channels by its block-diagonal kernel; the outputs are concatenated in group order.
    Values and gradients are those of the grouped convolution.
    """
    group_in = x.shape[-1] // groups
    group_out = kernel.shape[-1] // groups
    bundle = group_bundle(groups, group_in)
    outputs = []
    for first in range(0, groups, bundle):
        part = x[..., first * group_in:(first + bundle) * group_in]
        weights = kernel[..., first * group_out:(first + bundle) * group_out]
        if bundle > 1:
            weights = block_diagonal(weights, bundle)
        outputs.append(convolve(part, weights, stride, padding))  # dense: its own CPU paths apply
    return jnp.concatenate(outputs, axis=-1)


def _plain_convolution(x, kernel, *, stride, padding, dilation, groups):
    return lax.conv_general_dilated(x, kernel, window_strides=stride, padding=padding, rhs_dilation=dilation,
                                    dimension_numbers=NHWC, feature_group_count=groups)


def depthwise_by_taps(x: jnp.ndarray, kernel: jnp.ndarray, *, stride: tuple[int, int], padding) -> jnp.ndarray:
    """A depthwise convolution, kernel (kh, kw, 1, C), as sum_taps view(x, tap) * kernel[tap].

    view(x, (i, j)) is the padded input from row i and column j on, strided like the output:
    kh * kw elementwise products XLA fuses into one loop, and whose input gradient (pads and
    products) it fuses as well. Sums in float32 at least.

    The kernel gradient, a reduction over (N, H, W) per tap, makes XLA:CPU copy every tap's view
    of the input first. For a stride-1 float32 layer with a kernel of at most 5x5 and at least 8
    channels in a bundle of ``group_bundle`` it is computed instead as ``grouped_by_dense``'s (dense
    convolutions over bundles of channels with block-diagonal kernels): whole training steps ran
    1.1-1.35x faster (EfficientNet-B0, MobileNetV2), cold compiles about twice as long
    (docs/benchmarks.md, issue 18; ConvNeXt's 7x7, 16 times the MACs in the bundles, was not
    measured and keeps autodiff's). Values are the same.
    """
    stride = (int(stride[0]), int(stride[1]))
    padding = tuple((int(a), int(b)) for a, b in padding)
    dense_gradient = (stride == (1, 1) and max(kernel.shape[:2]) <= 5 and x.dtype == kernel.dtype == jnp.float32
                      and group_bundle(x.shape[-1], 1) >= 8)
    if dense_gradient:
        return _taps_with_dense_kernel_gradient(x, kernel, stride, padding)
    return _sum_over_taps(x, kernel, stride, padding)


def _sum_over_taps(x, kernel, stride, padding):
    kh, kw = kernel.shape[:2]
    batch, _, _, channels = x.shape
    padded = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    out_h = (padded.shape[1] - kh) // stride[0] + 1
    out_w = (padded.shape[2] - kw) // stride[1] + 1
    accumulate = jnp.promote_types(x.dtype, jnp.float32)
    total = None
    for i in range(kh):
        for j in range(kw):
            view = lax.slice(padded, (0, i, j, 0),
                             (batch, i + (out_h - 1) * stride[0] + 1, j + (out_w - 1) * stride[1] + 1, channels),
                             (1, stride[0], stride[1], 1))
            term = view.astype(accumulate) * kernel[i, j, 0].astype(accumulate)
            total = term if total is None else total + term
    return total.astype(x.dtype)


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _taps_with_dense_kernel_gradient(x, kernel, stride, padding):
    return _sum_over_taps(x, kernel, stride, padding)


def _taps_forward(x, kernel, stride, padding):
    return _sum_over_taps(x, kernel, stride, padding), (x, kernel)


def _taps_backward(stride, padding, residuals, grad):
    x, kernel = residuals
    _, input_vjp = jax.vjp(lambda x: _sum_over_taps(x, kernel, stride, padding), x)
    _, kernel_vjp = jax.vjp(lambda k: grouped_by_dense(x, k, stride=stride, padding=padding, groups=x.shape[-1]),
                            kernel)
    return input_vjp(grad)[0], kernel_vjp(grad)[0]


_taps_with_dense_kernel_gradient.defvjp(_taps_forward, _taps_backward)


def _padded(x: jnp.ndarray, padding) -> jnp.ndarray:
    # The barrier keeps XLA from folding the pad back into the convolution's window (and
    # then swapping its operands after all).
    return lax.optimization_barrier(jnp.pad(x, ((0, 0), *padding, (0, 0))))


def _valid_convolution(x, kernel, stride):
    return lax.conv_general_dilated(x, kernel, stride, "VALID", dimension_numbers=NHWC)


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def small_map_convolution(x, kernel, stride: tuple[int, int], padding) -> jnp.ndarray:
    """A convolution on a map smaller than its kernel, as XLA's fast path takes it.

    The input is zero-padded explicitly, so the convolution itself is VALID on a map at least
    as large as the kernel. The input gradient (custom VJP) is likewise a VALID convolution of
    the explicitly dilated and padded output gradient with the flipped kernel, not the padded
    convolution autodiff would emit (which XLA would swap again).
    """
    return _valid_convolution(_padded(x, padding), kernel, stride)


def _small_map_forward(x, kernel, stride, padding):
    return small_map_convolution(x, kernel, stride, padding), (x, kernel)


def _small_map_backward(stride, padding, residuals, grad):
    x, kernel = residuals
    padded = _padded(x, padding)
    _, kernel_vjp = jax.vjp(lambda k: _valid_convolution(padded, k, stride), kernel)
    (kernel_grad,) = kernel_vjp(grad)
    kh, kw = kernel.shape[:2]
    # d(padded)[i] = sum over the outputs o and taps t with o * s + t = i of grad[o] * kernel[t]:
    # grad dilated by the stride, padded by k - 1 on both sides, correlated with the kernel
    # flipped in space and transposed in channels.
    dilated = lax.pad(grad, jnp.zeros((), grad.dtype), ((0, 0, 0), (kh - 1, kh - 1, stride[0] - 1),
                                                       (kw - 1, kw - 1, stride[1] - 1), (0, 0, 0)))
    flipped = jnp.swapaxes(kernel[::-1, ::-1], 2, 3)
    padded_grad = _valid_convolution(lax.optimization_barrier(dilated), flipped, (1, 1))
    # Rows and columns the forward never read (the floor of the output-size rule) get zero.
    rows, cols = padded.shape[1] - padded_grad.shape[1], padded.shape[2] - padded_grad.shape[2]
    padded_grad = jnp.pad(padded_grad, ((0, 0), (0, rows), (0, cols), (0, 0)))
    (top, _), (left, _) = padding
    return padded_grad[:, top : top + x.shape[1], left : left + x.shape[2]], kernel_grad


small_map_convolution.defvjp(_small_map_forward, _small_map_backward)
