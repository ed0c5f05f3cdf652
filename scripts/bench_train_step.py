#!/usr/bin/env python3
"""Median time of jaxconv's own train step (and forward pass) on synthetic data.

    python scripts/bench_train_step.py resnet20 --image-size 32 --batch-size 64 --steps 20

Uses the same per-device step, optimizer and DataParallel runner as `jaxconv train`, on one
device, with a fixed batch already on the device, so it measures the model's compute alone.
Prints one JSON line: median step time, images/s, compile time, forward images/s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from functools import partial

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import jaxconv  # noqa: E402
from jaxconv.parallel import DataParallel, data_mesh  # noqa: E402
from jaxconv.train.state import create_state  # noqa: E402
from jaxconv.train.steps import StepOptions, eval_step, train_step  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--num-classes", type=int, default=10)
    args = parser.parse_args()

    info = jaxconv.model_info(args.model)
    size = args.image_size or info.image_size
    model = jaxconv.get_model(args.model, num_classes=args.num_classes)
    parallel = DataParallel("shard_map", mesh=data_mesh())
    state = create_state(model, optax.sgd(0.01, momentum=0.9), jax.random.PRNGKey(0), (1, size, size, info.in_channels),
                         ema=False)
    state = jax.device_put(state, parallel.replicated)
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.standard_normal((args.batch_size, size, size, info.in_channels)).astype(np.float32),
        "label": rng.integers(0, args.num_classes, args.batch_size).astype(np.int32),
        "mask": np.ones(args.batch_size, np.float32),
    }
    options = StepOptions(num_classes=args.num_classes)
    step = parallel.compile(partial(train_step, options=options), donate_state=True, returns_state=True)
    forward = parallel.compile(partial(eval_step, options=options), donate_state=False, returns_state=False)
    device_batch = parallel.shard_batch(batch)

    started = time.perf_counter()
    state, metrics = step(state, {k: device_batch[k] for k in ("image", "label")})
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - started
    times = []
    for _ in range(args.steps):
        started = time.perf_counter()
        state, metrics = step(state, {k: device_batch[k] for k in ("image", "label")})
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - started)
    jax.block_until_ready(forward(state, device_batch))
    forward_times = []
    for _ in range(args.steps):
        started = time.perf_counter()
        jax.block_until_ready(forward(state, device_batch))
        forward_times.append(time.perf_counter() - started)
    median = statistics.median(times)
    print(json.dumps({
        "model": args.model, "image_size": size, "batch_size": args.batch_size, "devices": parallel.device_count,
        "backend": jax.default_backend(), "train_step_s": round(median, 4),
        "train_images_per_sec": round(args.batch_size / median, 1), "compile_s": round(compile_s, 2),
        "forward_images_per_sec": round(args.batch_size / statistics.median(forward_times), 1),
    }))


if __name__ == "__main__":
    main()
