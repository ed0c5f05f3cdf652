"""Train and eval steps on device-resident synthetic data: compile time, step time, FLOPs, MFU."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from functools import partial

import numpy as np

from jaxconv.bench.common import BenchError, Request, check_request, peak_flops_per_sec, requested_model, timing_summary


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


def compile_step(request: Request, compiler_options: dict[str, str] | None = None,
                 progress: Callable[[str], None] | None = None) -> CompiledStep:
    """Builds the model, state and synthetic batch, and lowers and compiles the step (timed).

    compiler_options: XLA options for this compilation only (DebugOptions fields by name, e.g.
    {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE"}), beside $XLA_FLAGS.

    Raises BenchError for a request that cannot run: an unknown model, an input the network
    cannot take, a batch that does not divide over the devices.
    """
    check_request(request)
    if request.mode == "data":
        raise BenchError("compile_step measures train or eval steps; use measure_data for the input pipeline")
    import jax
    import jax.numpy as jnp
    import optax

    from jaxconv.layers import GeometryError
    from jaxconv.parallel import AXIS, DataParallel
    from jaxconv.models import check_contract, get_model, runtime_options
    from jaxconv.train.config import base_config
    from jaxconv.train.optim import build_optimizer
    from jaxconv.train.state import create_state
    from jaxconv.train.steps import StepOptions, eval_step, train_step

    info = requested_model(request.model)
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
        check_contract(request.model, model, input_shape)  # a user's model: one line, not a traceback in the step
        jax.eval_shape(partial(model.init, train=False), jax.random.PRNGKey(0), jnp.zeros(input_shape, jnp.float32))
    except GeometryError as e:
        raise BenchError(f"{request.model} cannot take {size} px inputs: {e} (its default size is "
                         f"{info.image_size})") from None
    if progress is not None:
        progress(f"compiling the {request.model} {request.mode} step ...")

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
    executable = lowered.compile(compiler_options)
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

    info = requested_model(request.model)
    macs = summary(request.model, image_size=image_size, num_classes=request.num_classes or info.num_classes).macs
    return 2.0 * macs * request.batch_size * (3 if request.mode == "train" else 1)


def measure_step(request: Request, progress: Callable[[str], None] | None = None) -> dict:
    """Median step time, images/s, compile time, FLOPs, MFU and memory of a train or eval step.

    ``progress`` is given a line when the checked step starts compiling."""
    import jax

    compiled = compile_step(request, progress=progress)
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
        **timing_summary(times, request.batch_size),
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
    if flops_per_step is not None and not 0.5 <= flops_per_step / model_flops <= 2:
        if result["backend"] in ("gpu", "cuda", "rocm") and flops_per_step < model_flops:
            reason = "on this backend it leaves out the convolutions and matmuls it hands to libraries (cuDNN, cuBLAS)"
        else:
            reason = "XLA's cost model and the analyzer's MACs count different operations (docs/analysis.md)"
        notes.append(f"XLA's cost analysis counts {flops_per_step:.3g} FLOPs against the model's {model_flops:.3g} "
                     f"on the {result['backend']} backend: {reason}; achieved FLOP/s and MFU use the model's FLOPs")
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
