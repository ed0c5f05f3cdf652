"""The output-size rule of convolution and pooling, checked before anything runs.

A layer with window F, stride S and padding P maps a spatial extent W to

    W' = (W - F + 2P) / S + 1

(with P_lo + P_hi in place of 2P for asymmetric padding). The lectures point out that
when W' is not an integer "a ConvNet library could throw an exception": that is what
``fit='exact'`` does. Frameworks differ in what they do otherwise: PyTorch and Caffe
convolutions drop the last (W - F + 2P) mod S rows (``fit='floor'``), Caffe's and
PyTorch's ``ceil_mode`` pooling add one more window (``fit='ceil'``). Architectures
ported from those frameworks opt into the rounding they were designed with, explicitly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Union

from jaxconv.errors import UserError

Fit = Literal["exact", "floor", "ceil"]
FITS = ("exact", "floor", "ceil")

# Padding as users write it: an int (same on every side), a pair (per spatial dim),
# a pair of pairs ((lo, hi) per spatial dim), or the strings 'SAME' / 'VALID'.
PaddingLike = Union[int, str, Sequence[int], Sequence[Sequence[int]]]


class GeometryError(UserError, ValueError):
    """A layer's window does not fit its input (the output-size rule fails)."""


class LayoutError(UserError, ValueError):
    """The images are not (N, H, W, C) with the channels the network takes (NCHW, or other channels)."""


def as_pair(value: int | Sequence[int], what: str, *, positive: bool = False) -> tuple[int, int]:
    """Normalises an int or a length-2 sequence to a (height, width) pair; with ``positive``, each at least 1
    (a kernel size, stride, dilation or window of 0 or below raises ValueError naming ``what``)."""
    pair = (value, value) if isinstance(value, int) else tuple(value) if isinstance(value, Sequence) else ()
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise ValueError(f"{what} must be an int or a pair of ints, got {value!r}")
    if positive and min(pair) < 1:
        raise ValueError(f"{what}={value!r} must be positive (1 or more)")
    return pair  # type: ignore[return-value]


def explicit_padding(
    padding: PaddingLike,
    sizes: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int] = (1, 1),
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Returns ((lo, hi), (lo, hi)) padding for the two spatial dims.

    'SAME' follows TensorFlow: the output has ceil(W / S) positions and the extra padding
    goes to the high side.
    """
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "VALID":
            return ((0, 0), (0, 0))
        if mode == "SAME":
            pads = []
            for w, f, s, d in zip(sizes, kernel, stride, dilation):
                effective = (f - 1) * d + 1
                out = -(-w // s)
                total = max((out - 1) * s + effective - w, 0)
                pads.append((total // 2, total - total // 2))
            return (pads[0], pads[1])
        raise ValueError(f"padding must be an int, pairs of ints, 'SAME' or 'VALID', got {padding!r}")
    if isinstance(padding, int):
        return ((padding, padding), (padding, padding))
    entries = tuple(padding)
    if len(entries) != 2:
        raise ValueError(f"padding must give the two spatial dims (height, width), got {padding!r}")
    if all(isinstance(p, int) for p in entries):
        return ((entries[0], entries[0]), (entries[1], entries[1]))  # type: ignore[index]
    pairs = tuple(as_pair(p, "each padding entry") for p in entries)  # type: ignore[arg-type]
    return (pairs[0], pairs[1])


def _padding_text(pad: tuple[int, int]) -> str:
    return str(pad[0]) if pad[0] == pad[1] else f"({pad[0]}, {pad[1]})"


def fitting_sizes(size: int, kernel: int, stride: int, pad: tuple[int, int], dilation: int = 1) -> tuple[int, int]:
    """The input sizes nearest to ``size`` (below, above) for which the window fits exactly."""
    effective = (kernel - 1) * dilation + 1
    remainder = (size + pad[0] + pad[1] - effective) % stride
    below = size - remainder
    above = below + stride
    smallest = effective - pad[0] - pad[1]
    return (below if below >= max(smallest, 1) else above, above)


def output_size(
    size: int,
    kernel: int,
    stride: int,
    pad: tuple[int, int],
    *,
    dilation: int = 1,
    fit: Fit = "exact",
    layer: str = "layer",
    axis: str = "W",
) -> int:
    """Applies the output-size rule W' = (W - F + P_lo + P_hi) / S + 1 to one spatial dim.

    Raises GeometryError naming the layer, W, F, P and S when the result is below 1, or
    (with ``fit='exact'``) not an integer.
    """
    if fit not in FITS:
        raise ValueError(f"{layer}: fit must be one of {FITS}, got {fit!r}")
    effective = (kernel - 1) * dilation + 1
    span = size + pad[0] + pad[1] - effective
    kernel_text = f"{kernel}" if dilation == 1 else f"{kernel} (dilation {dilation}: {effective})"
    values = f"{axis}={size}, F={kernel_text}, P={_padding_text(pad)}, S={stride}"
    if span < 0:
        raise GeometryError(
            f"{layer}: the window does not fit the input: ({axis} - F + 2P)/S + 1 = "
            f"{span / stride + 1:g} < 1 with {values}; this layer needs an input of at least "
            f"{effective - pad[0] - pad[1]}, so the image must be larger"
        )
    if fit == "exact" and span % stride:
        below, above = fitting_sizes(size, kernel, stride, pad, dilation)
        raise GeometryError(
            f"{layer}: output size ({axis} - F + 2P)/S + 1 = {span / stride + 1:g} is not an integer "
            f"with {values}; inputs of {below} or {above} fit here (or declare fit='floor' to "
            f"drop the last {span % stride} row(s)/column(s) as PyTorch does)"
        )
    if fit == "ceil":
        out = -(-span // stride) + 1
        # As in PyTorch/Caffe: the last window must start inside the input or the low padding.
        if (out - 1) * stride >= size + pad[0]:
            out -= 1
        return out
    return span // stride + 1


def check_window(
    sizes: Sequence[int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pads: tuple[tuple[int, int], tuple[int, int]],
    *,
    dilation: tuple[int, int] = (1, 1),
    fit: Fit = "exact",
    layer: str = "layer",
) -> tuple[int, int]:
    """Applies the output-size rule to height and width; returns (H', W')."""
    return tuple(  # type: ignore[return-value]
        output_size(w, f, s, p, dilation=d, fit=fit, layer=layer, axis=axis)
        for w, f, s, p, d, axis in zip(sizes, kernel, stride, pads, dilation, ("H", "W"))
    )


def ceil_extra_padding(size: int, kernel: int, stride: int, pad: tuple[int, int], out: int) -> int:
    """High-side padding to add so that a floor-rounding window op yields ``out`` positions."""
    needed = (out - 1) * stride + kernel - size - pad[0] - pad[1]
    return max(needed, 0)


def layer_name(module) -> str:
    """A readable path for errors: 'stage1/block0/conv1', or the class name at the top."""
    path = getattr(getattr(module, "scope", None), "path", None)
    if path:
        return "/".join(path)
    return module.name or type(module).__name__


__all__ = [
    "FITS",
    "Fit",
    "GeometryError",
    "PaddingLike",
    "as_pair",
    "ceil_extra_padding",
    "check_window",
    "explicit_padding",
    "fitting_sizes",
    "layer_name",
    "output_size",
]
