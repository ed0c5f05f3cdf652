"""What a benchmark is asked (Request), its errors, and the devices' published peaks."""

from __future__ import annotations

import dataclasses
import statistics

from jaxconv.errors import UserError

MODES = ("train", "eval", "data", "layers")
DTYPES = ("float32", "bfloat16")
RECIPES = ("imagenet", "imagenet-photo", "cifar")


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


def check_request(request: Request) -> None:
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


def requested_model(name: str):
    from jaxconv.models import UnknownModelError, model_info

    try:
        return model_info(name)
    except UnknownModelError as e:
        raise BenchError(str(e)) from None


def timing_summary(times: list[float], batch_size: int) -> dict:
    median = statistics.median(times)
    return {
        "step_time_s": median,
        "step_time_min_s": min(times),
        "step_time_max_s": max(times),
        "images_per_sec": batch_size / median,
    }
