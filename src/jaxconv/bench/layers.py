"""The convolutions of a model one by one: forward, input gradient and kernel gradient."""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np

from jaxconv.bench.common import BenchError, Request, requested_model


@dataclasses.dataclass(frozen=True)
class ConvLayer:
    """One distinct convolution of a model: its input (with the batch), kernel and geometry.

    ``count`` is how many layers of the model have exactly this convolution; ``names`` are their
    module paths. ``macs`` are per layer for the whole batch. ``input_grad`` is False for a
    convolution of the images themselves, whose input gradient a training step never computes.
    """

    input_shape: tuple[int, int, int, int]
    features: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[tuple[int, int], tuple[int, int]]
    dilation: tuple[int, int]
    groups: int
    count: int
    names: tuple[str, ...]
    input_grad: bool = True  # False for a layer on the images: a training step needs no gradient there

    @classmethod
    def from_dict(cls, fields: dict) -> ConvLayer:
        """The inverse of dataclasses.asdict after a JSON round trip (lists back to tuples)."""
        return cls(**{k: tuple(map(tuple, v)) if k == "padding" else tuple(v) if isinstance(v, list) else v
                      for k, v in fields.items()})

    @property
    def output_hw(self) -> tuple[int, int]:
        from jaxconv.layers.geometry import output_size

        h, w = (output_size(size, k, s, pad, dilation=d, fit="floor")
                for size, k, s, pad, d in zip(self.input_shape[1:3], self.kernel, self.stride, self.padding,
                                              self.dilation))
        return h, w

    @property
    def macs(self) -> int:
        out_h, out_w = self.output_hw
        per_output = self.kernel[0] * self.kernel[1] * self.input_shape[3] // self.groups
        return self.input_shape[0] * out_h * out_w * self.features * per_output

    def describe(self) -> str:
        n, h, w, c = self.input_shape
        (top, bottom), (left, right) = self.padding
        pad = f"{top}" if top == bottom == left == right else f"{self.padding}"
        groups = f" g{self.groups}" if self.groups > 1 else ""
        return (f"{self.kernel[0]}x{self.kernel[1]}/{self.stride[0]} p{pad}{groups} "
                f"{h}x{w}x{c}->{self.features}")


def conv_layers(model: str, batch_size: int = 1, image_size: int | None = None,
                num_classes: int | None = None) -> list[ConvLayer]:
    """The distinct convolutions of ``model`` on a (batch_size, size, size, C) input, in order of
    first use, each with the number of layers that have it (traced with jax.eval_shape: no compute)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from jaxconv.layers import Conv, GeometryError
    from jaxconv.layers.geometry import as_pair, explicit_padding
    from jaxconv.models import check_contract, get_model

    info = requested_model(model)
    size = image_size or info.image_size
    network = get_model(model, num_classes=num_classes or info.num_classes)
    found: dict[tuple, list[str]] = {}
    untimed: list[str] = []

    def record(next_fun, args, kwargs, context):
        module = context.module
        if isinstance(module, Conv) and context.method_name == "__call__":
            x = args[0]
            kernel = as_pair(module.kernel_size, "kernel_size")
            stride = as_pair(module.stride, "stride")
            dilation = as_pair(module.dilation, "dilation")
            padding = explicit_padding(module.padding, x.shape[1:3], kernel, stride, dilation)
            key = (tuple(x.shape), module.features, kernel, stride, padding, dilation, module.groups)
            found.setdefault(key, []).append("/".join(module.scope.path))
        elif type(module) is nn.Conv and context.method_name == "__call__":  # a plain Flax 2-D convolution
            key = _flax_conv_key(module, args[0])
            if key is None:
                untimed.append("/".join(module.scope.path))
            else:
                found.setdefault(key, []).append("/".join(module.scope.path))
        elif isinstance(module, (nn.ConvTranspose, nn.ConvLocal)) and context.method_name == "__call__":
            untimed.append(f"{'/'.join(module.scope.path)} ({type(module).__name__})")
        return next_fun(*args, **kwargs)

    images = jnp.zeros((batch_size, size, size, info.in_channels), jnp.float32)
    try:
        check_contract(model, network, images.shape)  # a user's model: one line, not a traceback in the trace
        with nn.intercept_methods(record):
            jax.eval_shape(partial(network.init, train=False), jax.random.PRNGKey(0), images)
    except GeometryError as e:
        raise BenchError(f"{model} cannot take {size} px inputs: {e} (its default size is {info.image_size})") from None
    if untimed:
        raise BenchError(f"{model}: --mode layers times 2-D convolutions without input dilation or circular "
                         f"padding (not transposed or unshared ones); these are not: {', '.join(untimed)} "
                         f"(--mode train times the whole model)")
    return [ConvLayer(*key, count=len(names), names=tuple(names), input_grad=key[0] != images.shape)
            for key, names in found.items()]


def _flax_conv_key(module, x) -> tuple | None:
    """A flax.linen.Conv's ConvLayer fields, or None where convolve cannot run it as the model does."""
    from jax import lax

    kernel = tuple(module.kernel_size)
    as_pair = lambda v: (1, 1) if v is None else (v, v) if isinstance(v, int) else tuple(v)
    stride, dilation = as_pair(module.strides), as_pair(module.kernel_dilation)
    if len(kernel) != 2 or x.ndim != 4 or as_pair(module.input_dilation) != (1, 1) or module.padding == "CIRCULAR":
        return None
    if isinstance(module.padding, str):
        effective = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilation))
        padding = tuple(map(tuple, lax.padtype_to_pads(x.shape[1:3], effective, stride, module.padding)))
    else:
        padding = tuple((p, p) if isinstance(p, int) else tuple(p) for p in
                        ((module.padding,) * 2 if isinstance(module.padding, int) else module.padding))
    return (tuple(x.shape), module.features, kernel, stride, padding, dilation, module.feature_group_count)


def time_conv_layer(layer: ConvLayer, dtype: str = "float32", reps: int = 5, warmup: int = 1) -> dict:
    """Wall times (s) of one convolution's forward pass, input gradient and kernel gradient.

    Each is its own jitted function of device-resident operands, run as the model runs it
    (``jaxconv.layers.conv.convolve``: the formulations it picks on this backend included) and
    waited for; the three are interleaved, ``reps`` times each after ``warmup``.
    """
    import jax
    import jax.numpy as jnp

    from jaxconv.layers.conv import convolve

    compute = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
    rng = np.random.default_rng(0)
    n, _, _, c = layer.input_shape
    out_h, out_w = layer.output_hw
    x = jnp.asarray(rng.standard_normal(layer.input_shape, np.float32), compute)
    fan_in = layer.kernel[0] * layer.kernel[1] * c // layer.groups
    w = jnp.asarray(rng.standard_normal((*layer.kernel, c // layer.groups, layer.features), np.float32)
                    / np.sqrt(fan_in), compute)
    g = jnp.asarray(rng.standard_normal((n, out_h, out_w, layer.features), np.float32), compute)

    def conv(x, w):
        return convolve(x, w, layer.stride, layer.padding, layer.dilation, layer.groups)

    functions = {
        "forward": jax.jit(conv),
        "input_grad": jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0]),
        "kernel_grad": jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0]),
    }
    if not layer.input_grad:
        del functions["input_grad"]
    operands = {"forward": (x, w), "input_grad": (x, w, g), "kernel_grad": (x, w, g)}
    times: dict[str, list[float]] = {name: [] for name in functions}
    started = time.perf_counter()
    for name, function in functions.items():
        jax.block_until_ready(function(*operands[name]))
    compile_s = time.perf_counter() - started
    for rep in range(warmup + reps):
        for name, function in functions.items():
            began = time.perf_counter()
            jax.block_until_ready(function(*operands[name]))
            if rep >= warmup:
                times[name].append(time.perf_counter() - began)
    return {"times": times, "compile_s": compile_s}


PASSES = ("forward", "input_grad", "kernel_grad")


def layer_row(layer: ConvLayer, times: dict[str, list[float]]) -> dict:
    """One layer's entry in a layers report: its geometry, median times and FLOP/s per pass
    (None for a pass that was not timed: the input gradient of a convolution of the images)."""
    medians = {name: statistics.median(times[name]) if times.get(name) else None for name in PASSES}
    flops = 2 * layer.macs
    return {
        "layer": layer.describe(),
        "count": layer.count,
        "names": list(layer.names),
        "input_shape": list(layer.input_shape),
        "features": layer.features,
        "kernel": list(layer.kernel),
        "stride": list(layer.stride),
        "padding": [list(p) for p in layer.padding],
        "groups": layer.groups,
        "macs": layer.macs,
        **{f"{name}_s": medians[name] for name in PASSES},
        **{f"{name}_flops_per_sec": None if medians[name] is None else flops / medians[name] for name in PASSES},
    }


def measure_layers(request: Request, progress: Callable[[str], None] | None = None) -> dict:
    """Every distinct convolution of the model timed alone: forward, input and kernel gradient.

    ``step_time_s`` is the sum over the model's convolution layers of the passes a training
    step runs (each distinct convolution times its count; no input gradient for the images):
    the convolutions' part of one training step, run one at a time. Compare it with
    ``jaxconv bench MODEL`` (the whole step) to see how much of the step the convolutions are,
    and each row to see which of them cost most.
    """
    import jax

    layers = conv_layers(request.model, request.batch_size, request.image_size, request.num_classes)
    if not layers:  # nothing to time, and nothing to divide the batch by
        raise BenchError(f"{request.model} has no convolutions to time (--mode layers times each convolution "
                         f"alone); time its whole step with --mode train or --mode eval")
    if progress is not None:
        progress(f"timing the {len(layers)} distinct convolutions of {request.model} one by one ...")
    rows, compile_s = [], 0.0
    for layer in layers:
        timed = time_conv_layer(layer, request.dtype, request.steps, request.warmup)
        compile_s += timed["compile_s"]
        rows.append(layer_row(layer, timed["times"]))
    totals = {f"{name}_s": sum((r[f"{name}_s"] or 0.0) * r["count"] for r in rows) for name in PASSES}
    total = sum(totals.values())
    macs = sum(r["macs"] * r["count"] for r in rows)
    work = sum(r["macs"] * r["count"] * sum(r[f"{name}_s"] is not None for name in PASSES) for r in rows)
    return {
        "mode": "layers",
        "model": request.model,
        "batch_size": request.batch_size,
        "image_size": request.image_size or requested_model(request.model).image_size,
        "dtype": request.dtype,
        "steps": request.steps,
        "warmup": request.warmup,
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "conv_layers": sum(r["count"] for r in rows),
        "distinct_layers": len(rows),
        "macs_per_step": macs,
        "step_time_s": total,
        "images_per_sec": request.batch_size / total,
        "compile_s": compile_s,
        "totals": totals,
        "achieved_flops_per_sec": 2 * work / total,
        "layers": rows,
    }
