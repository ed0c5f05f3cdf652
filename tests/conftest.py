"""Shared test setup.

XLA compiles are the slow part of this suite on a CPU, so expensive things are computed
once per session and shared: model summaries, and parameters filled on the host instead of
by compiling each model's initialisers.
"""

from __future__ import annotations

import atexit
import functools
import math
import os
import shutil
import tempfile


def xla_flags_for_tests(devices: int = 8) -> str:
    """XLA_FLAGS for the suite and the processes it starts: ``devices`` virtual CPU devices, and no LLVM
    optimisation of XLA:CPU's generated code. The suite compiles hundreds of graphs and runs each a few
    times on tiny inputs: unoptimised code compiles in a half to two thirds of the time (a ResNeXt-50
    forward pass 8.9 s -> 3.6 s) while convolutions and matrix products run in the same libraries; the
    values agree to the last bits (ResNeXt-50's parity with torchvision: 7.5e-7 -> 8.7e-7, tolerance 1e-4).
    """
    return f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0"


# Eight virtual CPU devices for the data-parallel tests; must be set before jax is imported.
os.environ.setdefault("XLA_FLAGS", xla_flags_for_tests(8))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# One persistent compilation cache for the session, shared by the xdist workers and the
# subprocesses they start (all inherit the environment of the process that set it), so that
# the many small training runs compile each distinct step once.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxconv-test-xla-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import jaxconv  # noqa: E402


def cached_summary(name: str, image_size=None, **overrides):
    """jaxconv.summary at the model's defaults, computed once per session (the model's own size named or not)."""
    if image_size == jaxconv.model_info(name).image_size:
        image_size = None
    return _summary(name, image_size, **overrides)


@functools.cache
def _summary(name: str, image_size, **overrides):
    return jaxconv.summary(name, image_size=image_size, **overrides)


def host_variables(model, x, seed: int = 0):
    """Variables of ``model`` for input ``x``, filled on the host without compiling the initialisers.

    Kernels are uniform with He scaling (variance 2 / fan_in), biases zero, BatchNorm scale
    and running variance one: the same statistics as a real initialisation, at no compile cost.
    """
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        if name == "kernel":
            bound = np.float32(np.sqrt(6.0 / max(1, math.prod(leaf.shape[:-1]))))
            return rng.random(leaf.shape, np.float32) * (2 * bound) - bound
        if name in ("scale", "var"):
            return np.ones(leaf.shape, leaf.dtype)
        return np.zeros(leaf.shape, leaf.dtype)

    variables = jax.tree_util.tree_map_with_path(fill, shapes)
    return {k: v for k, v in variables.items() if k in ("params", "batch_stats")}


def small_input_size(name: str) -> int:
    """A small input each model accepts (AlexNet-family geometry needs its real size)."""
    info = jaxconv.model_info(name)
    if info.family in ("alexnet", "googlenet") and name != "googlenet_tv":
        return info.image_size
    return 32 if info.image_size <= 32 else 64


@pytest.fixture
def rng():
    return np.random.default_rng(0)
