"""`jaxconv bench`: training, evaluation and input-pipeline throughput, measured as `jaxconv train` runs.

    >>> from jaxconv.bench import measure_train
    >>> measure_train("resnet50", batch_size=256, dtype="bfloat16")["images_per_sec"]

Train and eval modes run the project's own steps (``jaxconv.train.steps``: the real optimizer,
BatchNorm in training mode, the state donated) through the same DataParallel runner as the
training loop, on a synthetic batch already on the devices, so they measure the model's compute
alone. The step is lowered and compiled explicitly (both timed; the persistent compilation
cache applies), then run ``warmup`` times untimed and ``steps`` times, each step waited for
with block_until_ready: the median is the step time. ``flops_per_step`` is XLA's cost analysis
of the compiled step (on the CPU a little below 2 x the analyzer's MACs per pass, as XLA skips
the multiply-adds that land on zero padding; on GPUs it leaves out the convolutions and matmuls
handed to cuDNN and cuBLAS, and the report says so). Achieved FLOP/s and MFU use the model's
FLOPs, ``model_flops_per_step`` (2 x the analyzer's MACs, x 3 for a training step), the
convention MFU is quoted in; MFU divides them by the device's published dense peak
(``PEAK_TFLOPS``), and is None where the device is not in the table (every CPU).

Data mode times the input pipeline alone (``jaxconv.data.pipeline.train_dataset``: record
fetch, decode, augmentation, normalisation, batching in tf.data on the host's cores) on
synthetic encoded records: ImageNet-sized JPEGs for the 'imagenet' recipe, 32 x 32 PNGs for
the 'cifar' recipe, as TFDS stores those datasets.

Layers mode takes the model apart: each distinct convolution (input shape, kernel, stride,
padding, groups) is timed alone, forward, input gradient and kernel gradient, as the model runs
it (``jaxconv.layers.conv.convolve``), to show which convolutions and which pass a training
step spends its time in. ``scripts/bench_vs_torch.py --layers`` times PyTorch's kernels on the
same list.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np

from jaxconv.errors import UserError

MODES = ("train", "eval", "data", "layers")
DTYPES = ("float32", "bfloat16")
RECIPES = ("imagenet", "cifar")


class BenchError(UserError, ValueError):
    """A benchmark request that cannot run (unknown model, size too small, indivisible batch...)."""


# Published dense (no structured sparsity) peak TFLOP/s per JAX device, for the dtype the
# benchmark's convolutions and matmuls run in. JAX computes float32 convolutions at DEFAULT
# precision: TF32 tensor cores on Ampere and newer NVIDIA GPUs, bfloat16 passes on TPU
# (https://docs.jax.dev/en/latest/201/precision.html), so those are the float32 peaks here.
# NVIDIA's data sheets quote tensor-core figures "with sparsity": the dense figure is half.
#   H100 SXM / PCIe / NVL: https://www.nvidia.com/en-us/data-center/h100/ (BF16 1,979 / 1,513 /
#     1,671, TF32 989 / 756 / 835 with sparsity)
#   H200 SXM / NVL: https://www.nvidia.com/en-us/data-center/h200/ (BF16 1,979 / 1,671, TF32 989 /
#     835 with sparsity)
#   A100: https://www.nvidia.com/en-us/data-center/a100/ (BF16 312, TF32 156 dense)
#   V100 SXM2: https://www.nvidia.com/en-us/data-center/v100/ (FP32 15.7; no bfloat16 tensor cores)
#   TPU v3 (a JAX device is one of a chip's two cores, 123 TFLOP/s per chip),
#   v4 (275 per chip), v5e (197), v5p (459), v6e (918):
#     https://cloud.google.com/tpu/docs/system-architecture-tpu-vm and the per-version pages
#     https://cloud.google.com/tpu/docs/v4, /v5e, /v5p, /v6e
# Keys are matched against ``device.device_kind`` (lower-cased), most specific first.
PEAK_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("h100 pcie", {"bfloat16": 756.5, "float32": 378.0}),
    ("h100 nvl", {"bfloat16": 835.5, "float32": 417.5}),
    ("h100", {"bfloat16": 989.4, "float32": 494.7}),  # SXM5 ("NVIDIA H100 80GB HBM3")
    ("h200 nvl", {"bfloat16": 835.5, "float32": 417.5}),
    ("h200", {"bfloat16": 989.4, "float32": 494.7}),
    ("a100", {"bfloat16": 312.0, "float32": 156.0}),
    ("v100", {"float32": 15.7}),
    ("tpu v3", {"bfloat16": 61.5, "float32": 61.5}),
    ("tpu v4", {"bfloat16": 275.0, "float32": 275.0}),
    ("tpu v5 lite", {"bfloat16": 197.0, "float32": 197.0}),  # v5e
    ("tpu v5e", {"bfloat16": 197.0, "float32": 197.0}),
    ("tpu v5", {"bfloat16": 459.0, "float32": 459.0}),  # v5p
    ("tpu v6 lite", {"bfloat16": 918.0, "float32": 918.0}),  # v6e (Trillium)
    ("tpu v6e", {"bfloat16": 918.0, "float32": 918.0}),
)


def peak_flops_per_sec(device_kind: str, dtype: str) -> float | None:
    """The published dense peak FLOP/s of one device of this kind in ``dtype``; None when unknown."""
    kind = device_kind.lower()
    for key, peaks in PEAK_TFLOPS:
        if key in kind:
            value = peaks.get(dtype)
            return None if value is None else value * 1e12
    return None


# --- the request ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Request:
    """What to measure. ``image_size`` None means the model's own input size."""

    model: str
    mode: str = "train"
    batch_size: int = 128
    image_size: int | None = None
    dtype: str = "float32"
    steps: int = 20
    warmup: int = 3
    num_classes: int | None = None
    recipe: str | None = None  # data mode: 'imagenet' or 'cifar' (default: by the image size)


def _check_request(request: Request) -> None:
    if request.mode not in MODES:
        raise BenchError(f"mode {request.mode!r}: choose one of {', '.join(MODES)}")
    if request.dtype not in DTYPES:
        raise BenchError(f"dtype {request.dtype!r}: choose float32 or bfloat16")
    for name in ("batch_size", "steps"):
        if getattr(request, name) < 1:
            raise BenchError(f"{name} {getattr(request, name)}: must be at least 1")
    if request.warmup < 0:
        raise BenchError(f"warmup {request.warmup}: must be 0 or more")
    if request.image_size is not None and request.image_size < 1:
        raise BenchError(f"image size {request.image_size}: must be at least 1")
    if request.recipe is not None and request.recipe not in RECIPES:
        raise BenchError(f"recipe {request.recipe!r}: choose one of {', '.join(RECIPES)}")


def _model_info(name: str):
    from jaxconv.models import UnknownModelError, model_info

    try:
        return model_info(name)
    except UnknownModelError as e:
        raise BenchError(str(e)) from None


def _timing_summary(times: list[float], batch_size: int) -> dict:
    median = statistics.median(times)
    return {
        "step_time_s": median,
        "step_time_min_s": min(times),
        "step_time_max_s": max(times),
        "images_per_sec": batch_size / median,
    }


# --- train and eval steps on device-resident synthetic data ---------------------------------------


@dataclasses.dataclass
class CompiledStep:
    """A compiled train or eval step with its state and a batch on the devices: run it, time it.

    ``flops`` are XLA's count for one step on one device (the compiled program is per device);
    ``memory_bytes`` is XLA's static estimate of the device memory the step needs (arguments,
    outputs and temporaries, less the donated buffers it reuses).
    """

    request: Request
    image_size: int
    executable: Callable
    state: object
    batch: dict
    devices: list
    lower_s: float
    compile_s: float
    flops: float | None
    memory_bytes: int | None
    returns_state: bool

    def run(self, steps: int) -> list[float]:
        """Runs ``steps`` steps, each waited for; returns their wall times in seconds."""
        import jax

        times = []
        for _ in range(steps):
            started = time.perf_counter()
            if self.returns_state:
                self.state, metrics = self.executable(self.state, self.batch)
                jax.block_until_ready((self.state, metrics))
            else:
                jax.block_until_ready(self.executable(self.state, self.batch))
            times.append(time.perf_counter() - started)
        return times


def _cost(compiled) -> tuple[float | None, int | None]:
    """XLA's FLOPs and memory estimate of a compiled step (None where the backend has none)."""
    flops = None
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        flops = float(cost["flops"]) if cost and cost.get("flops", -1) >= 0 else None
    except Exception:  # backends without a cost model raise; the figure is optional
        flops = None
    memory = None
    try:
        m = compiled.memory_analysis()
        if m is not None:
            memory = int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                         - m.alias_size_in_bytes)
    except Exception:
        memory = None
    return flops, memory


def compile_step(request: Request) -> CompiledStep:
    """Builds the model, state and synthetic batch, and lowers and compiles the step (timed).

    Raises BenchError for a request that cannot run: an unknown model, an input the network
    cannot take, a batch that does not divide over the devices.
    """
    _check_request(request)
    if request.mode == "data":
        raise BenchError("compile_step measures train or eval steps; use measure_data for the input pipeline")
    import jax
    import jax.numpy as jnp
    import optax

    from jaxconv.layers import GeometryError
    from jaxconv.parallel import AXIS, DataParallel
    from jaxconv.models import get_model, runtime_options
    from jaxconv.train.config import base_config
    from jaxconv.train.optim import build_optimizer
    from jaxconv.train.state import create_state
    from jaxconv.train.steps import StepOptions, eval_step, train_step

    info = _model_info(request.model)
    size = request.image_size or info.image_size
    num_classes = request.num_classes or info.num_classes
    parallel = DataParallel("shard_map")
    devices = list(parallel.mesh.devices.flat)
    if request.batch_size % len(devices):
        raise BenchError(f"batch size {request.batch_size} does not divide over the {len(devices)} devices; "
                         f"use a multiple of {len(devices)}")
    dtype = jnp.bfloat16 if request.dtype == "bfloat16" else jnp.float32
    try:
        runtime = runtime_options(request.model, dtype=dtype, axis_name=AXIS)
    except ValueError as e:
        raise BenchError(str(e)) from None
    model = get_model(request.model, num_classes=num_classes, **runtime)
    input_shape = (1, size, size, info.in_channels)
    try:
        jax.eval_shape(partial(model.init, train=False), jax.random.PRNGKey(0), jnp.zeros(input_shape, jnp.float32))
    except GeometryError as e:
        raise BenchError(f"{request.model} cannot take {size} px inputs: {e} (its default size is "
                         f"{info.image_size})") from None

    # The project's optimizer as the base config builds it: SGD, momentum 0.9, weight decay 1e-4.
    config = base_config()
    tx = build_optimizer(config, optax.constant_schedule(config.learning_rate))
    create = partial(create_state, model, tx, input_shape=input_shape, ema=False)
    shardings = jax.tree_util.tree_map(lambda _: parallel.replicated, jax.eval_shape(create, jax.random.PRNGKey(0)))
    state = jax.jit(create, out_shardings=shardings)(jax.random.PRNGKey(0))

    rng = np.random.default_rng(0)
    images = rng.standard_normal((request.batch_size, size, size, info.in_channels), np.float32)
    host_batch = {
        "image": images.astype(jnp.bfloat16) if request.dtype == "bfloat16" else images,
        "label": rng.integers(0, num_classes, request.batch_size).astype(np.int32),
    }
    bn_mode = "sync" if "axis_name" in runtime else "local"  # a user's model without the field: local BatchNorm
    options = StepOptions(num_classes=num_classes, bn_mode=bn_mode, axis_name=AXIS)
    if request.mode == "train":
        step = parallel.compile(partial(train_step, options=options), donate_state=True, returns_state=True)
    else:
        host_batch["mask"] = np.ones(request.batch_size, np.float32)
        step = parallel.compile(partial(eval_step, options=options), donate_state=False, returns_state=False)
    batch = parallel.shard_batch(host_batch)
    jax.block_until_ready((state, batch))

    started = time.perf_counter()
    lowered = step.lower(state, batch)
    lowered_at = time.perf_counter()
    executable = lowered.compile()
    compiled_at = time.perf_counter()
    flops, memory = _cost(executable)
    return CompiledStep(request, size, executable, state, batch, devices, lowered_at - started,
                        compiled_at - lowered_at, flops, memory, returns_state=request.mode == "train")


def _peak_memory(devices) -> int | None:
    """The highest peak of device memory in use over the devices, where the backend reports it."""
    peaks = []
    for device in devices:
        try:
            stats = device.memory_stats()
        except Exception:  # some backends raise instead of returning None
            stats = None
        if stats and "peak_bytes_in_use" in stats:
            peaks.append(int(stats["peak_bytes_in_use"]))
    return max(peaks) if peaks else None


def model_flops_per_step(request: Request, image_size: int) -> float:
    """The model's FLOPs for one step of the whole batch: 2 per multiply-accumulate of its
    convolutions and dense layers (the analyzer's MACs), times 3 for a training step (forward,
    input gradients, kernel gradients), the convention MFU is quoted in."""
    from jaxconv.analysis.summary import summary

    info = _model_info(request.model)
    macs = summary(request.model, image_size=image_size, num_classes=request.num_classes or info.num_classes).macs
    return 2.0 * macs * request.batch_size * (3 if request.mode == "train" else 1)


def measure_step(request: Request) -> dict:
    """Median step time, images/s, compile time, FLOPs, MFU and memory of a train or eval step."""
    import jax

    compiled = compile_step(request)
    compiled.run(request.warmup)
    times = compiled.run(request.steps)
    devices = compiled.devices
    kind = devices[0].device_kind
    result = {
        "mode": request.mode,
        "model": request.model,
        "batch_size": request.batch_size,
        "image_size": compiled.image_size,
        "dtype": request.dtype,
        "steps": request.steps,
        "warmup": request.warmup,
        "backend": jax.default_backend(),
        "device_kind": kind,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "devices": len(devices),
        **_timing_summary(times, request.batch_size),
        "lower_s": compiled.lower_s,
        "compile_s": compiled.compile_s,
    }
    flops_per_step = None if compiled.flops is None else compiled.flops * len(devices)
    model_flops = model_flops_per_step(request, compiled.image_size)
    achieved = model_flops / result["step_time_s"]
    peak = peak_flops_per_sec(kind, request.dtype)
    result.update({
        "flops_per_step": flops_per_step,
        "flops_per_image": None if flops_per_step is None else flops_per_step / request.batch_size,
        "model_flops_per_step": model_flops,
        "achieved_flops_per_sec": achieved,
        "peak_flops_per_sec": None if peak is None else peak * len(devices),
        "mfu": None if peak is None else achieved / (peak * len(devices)),
        "peak_memory_bytes": _peak_memory(devices),
        "xla_memory_bytes": compiled.memory_bytes,
    })
    notes = []
    if flops_per_step is not None and flops_per_step < 0.5 * model_flops:
        notes.append(f"XLA's cost analysis counts {flops_per_step:.3g} FLOPs against the model's {model_flops:.3g}: "
                     f"on the {result['backend']} backend it leaves out the convolutions and matmuls it hands to "
                     "libraries (cuDNN, cuBLAS), so achieved FLOP/s and MFU use the model's FLOPs")
    if result["peak_memory_bytes"] is None:
        notes.append(f"the {result['backend']} backend reports no device memory statistics "
                     "(peak_memory_bytes is null; xla_memory_bytes is XLA's static estimate for the step)")
    else:
        notes.append("peak_memory_bytes is the device allocator's peak since the process started (building "
                     "the state and compiling included); xla_memory_bytes is XLA's estimate for the step alone")
    if peak is None:
        notes.append(f"no published peak for {kind!r} in {request.dtype}, so no MFU")
    result["notes"] = notes
    return result


def measure_train(model: str, batch_size: int = 128, image_size: int | None = None, dtype: str = "float32",
                  steps: int = 20, warmup: int = 3, num_classes: int | None = None) -> dict:
    """Training throughput of ``model``: see measure_step for the keys of the result."""
    return measure_step(Request(model, "train", batch_size, image_size, dtype, steps, warmup, num_classes))


def measure_eval(model: str, batch_size: int = 128, image_size: int | None = None, dtype: str = "float32",
                 steps: int = 20, warmup: int = 3, num_classes: int | None = None) -> dict:
    """Inference (eval step: forward, loss, top-1/top-5) throughput of ``model``."""
    return measure_step(Request(model, "eval", batch_size, image_size, dtype, steps, warmup, num_classes))


# --- the convolutions one by one -----------------------------------------------------------------


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
    from jaxconv.models import get_model

    info = _model_info(model)
    size = image_size or info.image_size
    network = get_model(model, num_classes=num_classes or info.num_classes)
    found: dict[tuple, list[str]] = {}

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
        return next_fun(*args, **kwargs)

    images = jnp.zeros((batch_size, size, size, info.in_channels), jnp.float32)
    try:
        with nn.intercept_methods(record):
            jax.eval_shape(partial(network.init, train=False), jax.random.PRNGKey(0), images)
    except GeometryError as e:
        raise BenchError(f"{model} cannot take {size} px inputs: {e} (its default size is {info.image_size})") from None
    return [ConvLayer(*key, count=len(names), names=tuple(names), input_grad=key[0] != images.shape)
            for key, names in found.items()]


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


def measure_layers(request: Request) -> dict:
    """Every distinct convolution of the model timed alone: forward, input and kernel gradient.

    ``step_time_s`` is the sum over the model's convolution layers of the passes a training
    step runs (each distinct convolution times its count; no input gradient for the images):
    the convolutions' part of one training step, run one at a time. Compare it with
    ``jaxconv bench MODEL`` (the whole step) to see how much of the step the convolutions are,
    and each row to see which of them cost most.
    """
    import jax

    layers = conv_layers(request.model, request.batch_size, request.image_size, request.num_classes)
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
        "image_size": request.image_size or _model_info(request.model).image_size,
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


# --- the input pipeline ---------------------------------------------------------------------------


def synthetic_images(count: int, *, size: tuple[int, int] | None, seed: int = 0):
    """``count`` uint8 (H, W, 3) images that compress like photographs: smooth colour fields
    with some texture. ``size`` None draws ImageNet-like sizes (shorter side 300-500 px,
    aspect 3:4 to 4:3; ImageNet's average image is about 400 x 350)."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        if size is None:
            short = int(rng.integers(300, 501))
            long = int(short * rng.uniform(1.0, 4 / 3))
            height, width = (short, long) if rng.random() < 0.5 else (long, short)
        else:
            height, width = size
        coarse = rng.integers(0, 256, (max(2, height // 32), max(2, width // 32), 3)).astype(np.float32)
        rows = np.linspace(0, coarse.shape[0] - 1, height)
        cols = np.linspace(0, coarse.shape[1] - 1, width)
        r0, c0 = rows.astype(int), cols.astype(int)
        r1, c1 = np.minimum(r0 + 1, coarse.shape[0] - 1), np.minimum(c0 + 1, coarse.shape[1] - 1)
        fr, fc = (rows - r0)[:, None, None], (cols - c0)[None, :, None]
        smooth = ((1 - fr) * ((1 - fc) * coarse[r0][:, c0] + fc * coarse[r0][:, c1])
                  + fr * ((1 - fc) * coarse[r1][:, c0] + fc * coarse[r1][:, c1]))
        texture = rng.normal(0, 12, (height, width, 3))
        yield np.clip(smooth + texture, 0, 255).astype(np.uint8)


class EncodedImageSource:
    """A random-access source (``jaxconv.data.sources.Source``) of synthetic encoded images.

    Records are serialized tf.train.Example protos holding an encoded image and a label, as
    TFDS stores ImageNet (JPEG) and CIFAR (PNG); ``decode`` parses and decodes them in tf.data.
    ``distinct`` images are encoded once and repeated up to ``length`` records.
    """

    channels = 3

    def __init__(self, length: int, *, image_format: str, size: tuple[int, int] | None, num_classes: int,
                 distinct: int = 64):
        import tensorflow as tf

        self.name = f"synthetic_{image_format}"
        self.num_classes = num_classes
        self._length = length
        encode = tf.io.encode_jpeg if image_format == "jpeg" else tf.io.encode_png
        records = []
        for i, image in enumerate(synthetic_images(min(distinct, length), size=size)):
            encoded = encode(image, quality=90) if image_format == "jpeg" else encode(image)
            features = {
                "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded.numpy()])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % num_classes])),
            }
            records.append(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())
        self._records = np.array(records, dtype=object)
        self.mean_record_bytes = float(np.mean([len(r) for r in records]))

    def __len__(self) -> int:
        return self._length

    def fetch(self, indices: np.ndarray) -> np.ndarray:
        return self._records[np.asarray(indices) % len(self._records)]

    def decode(self, record):
        import tensorflow as tf

        parsed = tf.io.parse_single_example(record, {
            "image": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([], tf.int64),
        })
        image = tf.io.decode_image(parsed["image"], channels=3, expand_animations=False)
        return image, tf.cast(parsed["label"], tf.int32)


def measure_data(recipe: str = "imagenet", batch_size: int = 128, image_size: int | None = None,
                 dtype: str = "float32", steps: int = 20, warmup: int = 3, source=None) -> dict:
    """Images/s of the training input pipeline alone: fetch, decode, augment, normalise, batch.

    'imagenet': ImageNet-sized JPEG records, Inception crop + flip to ``image_size`` (224).
    'cifar': 32 x 32 PNG records, pad-4 random crop + flip (He et al.) to ``image_size`` (32).
    ``source`` replaces the synthetic records with a real Source (e.g. a prepared dataset's
    training split). Batches are pulled as numpy arrays, as the training loop pulls them.
    """
    if recipe not in RECIPES:
        raise BenchError(f"recipe {recipe!r}: choose one of {', '.join(RECIPES)}")
    _check_request(Request("data", "data", batch_size, image_size, dtype, steps, warmup))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from jaxconv.data import pipeline
    from jaxconv.data.sources import IMAGENET_MEAN, IMAGENET_STD

    size = image_size or (224 if recipe == "imagenet" else 32)
    augment = "inception" if recipe == "imagenet" else "cifar"
    length = max(batch_size * (steps + warmup + 2), 1024)
    if source is None:
        source = EncodedImageSource(length, image_format="jpeg" if recipe == "imagenet" else "png",
                                    size=None if recipe == "imagenet" else (32, 32),
                                    num_classes=1000 if recipe == "imagenet" else 10)
    preprocess = pipeline.Preprocess(image_size=size, mean=IMAGENET_MEAN, std=IMAGENET_STD, augment=augment,
                                     dtype=dtype)
    dataset = pipeline.train_dataset(source, preprocess, global_batch=batch_size, seed=0)
    batches = pipeline.numpy_batches(dataset)
    started = time.perf_counter()
    next(batches)
    first_batch_s = time.perf_counter() - started
    for _ in range(warmup):
        next(batches)
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        next(batches)
        times.append(time.perf_counter() - started)
    total = sum(times)
    result = {
        "mode": "data",
        "recipe": recipe,
        "augment": augment,
        "batch_size": batch_size,
        "image_size": size,
        "dtype": dtype,
        "steps": steps,
        "warmup": warmup,
        "host_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        # Batches arrive from a prefetching pipeline, so the mean over the run is the rate;
        # the median of single pulls would flatter it.
        "images_per_sec": batch_size * steps / total,
        "step_time_s": total / steps,
        "step_time_min_s": min(times),
        "step_time_max_s": max(times),
        "compile_s": first_batch_s,  # building tf.data's graph and the first batch
        "source": getattr(source, "name", type(source).__name__),
        "mean_record_bytes": getattr(source, "mean_record_bytes", None),
    }
    return result


def run(request: Request) -> dict:
    """Dispatches a request to measure_step, measure_layers or measure_data."""
    _check_request(request)
    if request.mode == "layers":
        return measure_layers(request)
    if request.mode != "data":
        return measure_step(request)
    info = _model_info(request.model)
    size = request.image_size or info.image_size
    recipe = request.recipe or ("imagenet" if size >= 64 else "cifar")
    result = measure_data(recipe, request.batch_size, size, request.dtype, request.steps, request.warmup)
    return {"model": request.model, **result}


def _format_layers(result: dict, si) -> str:
    head = (f"{result['model']}: its {result['conv_layers']} convolutions ({result['distinct_layers']} distinct), "
            f"batch {result['batch_size']} at {result['image_size']} px, {result['dtype']}, "
            f"{result['device_kind']} ({result['backend']}); median of {result['steps']} after {result['warmup']}")
    columns = ("layer", "count", "forward ms", "input grad ms", "kernel grad ms", "GFLOP/s fwd / in / kernel")
    table = []
    for row in result["layers"]:
        ms = ["-" if row[f"{name}_s"] is None else f"{row[f'{name}_s'] * 1e3:.2f}" for name in PASSES]
        rates = ["-" if row[f"{name}_flops_per_sec"] is None else f"{row[f'{name}_flops_per_sec'] / 1e9:.0f}"
                 for name in PASSES]
        table.append([row["layer"], str(row["count"]), *ms, " / ".join(rates)])
    totals = result["totals"]
    table.append(["all layers (x count)", str(result["conv_layers"]),
                  *(f"{totals[f'{name}_s'] * 1e3:.1f}" for name in PASSES),
                  f"{result['achieved_flops_per_sec'] / 1e9:.0f} overall"])
    widths = [max(len(columns[i]), *(len(r[i]) for r in table)) for i in range(len(columns))]

    def line(cells):
        return "  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    lines = [head, line(columns), *(line(r) for r in table),
             f"  the convolutions of one training step, one at a time: {result['step_time_s'] * 1e3:.1f} ms "
             f"({si(result['macs_per_step'], 'MAC')} forward); compile {result['compile_s']:.1f} s"]
    return "\n".join(lines) + "\n"


def format_text(result: dict) -> str:
    """A short human-readable report of a measure_* result."""

    def si(value, unit):
        if value is None:
            return "n/a"
        for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
            if abs(value) >= factor:
                return f"{value / factor:.2f} {prefix}{unit}"
        return f"{value:.3g} {unit}"

    if result["mode"] == "layers":
        return _format_layers(result, si)
    if result["mode"] == "data":
        head = (f"input pipeline, {result['recipe']} recipe ({result['augment']} augmentation) at "
                f"{result['image_size']} px, batch {result['batch_size']}, {result['host_cpus']} host CPUs")
        lines = [head,
                 f"  images/s      {result['images_per_sec']:,.1f}",
                 f"  batch time    {result['step_time_s'] * 1e3:.1f} ms mean over {result['steps']} batches "
                 f"(single pulls {result['step_time_min_s'] * 1e3:.1f}-{result['step_time_max_s'] * 1e3:.1f} ms)",
                 f"  first batch   {result['compile_s']:.2f} s",
                 f"  records       {result['source']}"
                 + (f", {result['mean_record_bytes'] / 1e3:.1f} kB each" if result.get("mean_record_bytes") else "")]
        return "\n".join(lines) + "\n"
    head = (f"{result['model']} {result['mode']} step, batch {result['batch_size']} at {result['image_size']} px, "
            f"{result['dtype']}, {result['devices']} x {result['device_kind']} ({result['backend']})")
    mfu = "n/a" if result["mfu"] is None else f"{100 * result['mfu']:.1f}%"
    lines = [head,
             f"  images/s      {result['images_per_sec']:,.1f}",
             f"  step time     {result['step_time_s'] * 1e3:.1f} ms median of {result['steps']} "
             f"(min {result['step_time_min_s'] * 1e3:.1f}, max {result['step_time_max_s'] * 1e3:.1f}) "
             f"after {result['warmup']} warm-up",
             f"  compile       {result['compile_s']:.2f} s (+ {result['lower_s']:.2f} s lowering)",
             f"  XLA FLOPs     {si(result['flops_per_step'], 'FLOP')} per step, "
             f"{si(result['flops_per_image'], 'FLOP')} per image",
             f"  model FLOPs   {si(result['model_flops_per_step'], 'FLOP')} per step (2 x MACs"
             f"{' x 3' if result['mode'] == 'train' else ''})",
             f"  achieved      {si(result['achieved_flops_per_sec'], 'FLOP/s')} of model FLOPs  MFU {mfu}",
             f"  memory        peak {si(result['peak_memory_bytes'], 'B')}, XLA estimate "
             f"{si(result['xla_memory_bytes'], 'B')}"]
    lines += [f"  note: {note}" for note in result.get("notes", [])]
    return "\n".join(lines) + "\n"


__all__ = ["BenchError", "CompiledStep", "ConvLayer", "EncodedImageSource", "PEAK_TFLOPS", "Request", "compile_step",
           "conv_layers", "format_text", "measure_data", "measure_eval", "measure_layers", "measure_step",
           "measure_train", "peak_flops_per_sec", "run", "synthetic_images", "time_conv_layer"]
