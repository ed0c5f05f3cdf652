"""Input pipelines over random-access sources, deterministic and resumable at any step.

Training: epoch e visits the examples in the order ``permutation(seed, e)``; global batch b
of the epoch is the slice [b*B, (b+1)*B) of that order, and process p of P reads only its
own sub-slice [b*B + p*B/P, b*B + (p+1)*B/P). So the data a step sees is a function of
(seed, step) alone: a resumed run starts at its checkpoint's step and sees exactly what an
uninterrupted run would, and the global batch does not depend on how many processes or
devices share it. Augmentation seeds come from (seed, epoch, example index) for the same
reason. Records are fetched by index in Python; decoding and augmentation run in parallel
tf.data workers. Images leave as uint8 (a quarter of float32's bytes to copy and to send to the
devices); the compiled step normalises them (jaxconv.train.steps.model_inputs).

Evaluation: every example exactly once; each process takes a contiguous part, padded to a
whole number of batches (the same number on every process) and masked.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from jaxconv.data import augment
from jaxconv.data.catalog import RESIZE_RATIO
from jaxconv.data.source import dataset_options
from jaxconv.data.sources import Source

# The input pipeline runs on the host's CPUs; keep TensorFlow off the accelerators JAX uses.
try:
    tf.config.set_visible_devices([], "GPU")
except (RuntimeError, ValueError):  # already initialised, or no such device type
    pass


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """How images become model inputs: views made here, ``mean`` and ``std`` applied on the devices."""

    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str = "none"
    auto_augment: str = "none"  # 'trivial' or 'rand' after the augment recipe
    eval_crop: str = "resize"
    resize_ratio: float = RESIZE_RATIO


def epoch_permutation(seed: int, epoch: int, count: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch, 0x5EED]).permutation(count)


def _fetch_fn(source: Source):
    def fetch(indices):
        return source.fetch(np.maximum(indices, 0))  # padding (-1) reads example 0, masked later

    def fetch_records(indices):
        records = tf.numpy_function(fetch, [indices], tf.string, stateful=False)
        return tf.reshape(records, tf.shape(indices))  # numpy_function loses the static shape

    return fetch_records


def train_dataset(
    source: Source,
    preprocess: Preprocess,
    *,
    global_batch: int,
    seed: int,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
) -> tf.data.Dataset:
    """Endless batches {'image': (b, s, s, C), 'label': (b,)} for this process, from ``start_step``."""
    count = len(source)
    if global_batch % process_count:
        raise ValueError(f"batch size {global_batch} is not divisible by the {process_count} processes")
    local = global_batch // process_count
    steps_per_epoch = count // global_batch
    if steps_per_epoch < 1:
        raise ValueError(f"the {source.name} training split has {count} examples, fewer than one batch of {global_batch}")

    permutation = functools.lru_cache(maxsize=2)(lambda epoch: epoch_permutation(seed, epoch, count))

    def step_indices(step):
        epoch, batch = divmod(int(step), steps_per_epoch)
        begin = batch * global_batch + process_index * local
        return permutation(epoch)[begin : begin + local].astype(np.int64), np.int64(epoch)

    fetch = _fetch_fn(source)

    def records_of(step):
        indices, epoch = tf.numpy_function(step_indices, [step], (tf.int64, tf.int64), stateful=False)
        indices = tf.reshape(indices, (local,))
        return fetch(indices), indices, tf.fill((local,), epoch)

    # Not Dataset.from_generator: on Python 3.11 its kernel calls mallopt(M_MMAP_THRESHOLD, 128 KiB)
    # for the whole process, after which every larger buffer XLA's CPU convolutions allocate is a
    # fresh mmap, paid for in page faults at every step (docs/benchmarks.md).
    ds = tf.data.Dataset.counter(start_step).map(records_of).unbatch()
    # The Inception crop decodes only its window of a JPEG, from the encoded file.
    encoded = preprocess.augment == "inception" and source.stores_files

    def example(record, index, epoch):
        image, label = source.encoded(record) if encoded else source.decode(record)
        example_seed = tf.stack([tf.constant(seed, tf.int64) * 1_000_003 + epoch, index])
        image, shift = augment.train_augment(image, preprocess.image_size, preprocess.augment, example_seed,
                                             preprocess.resize_ratio, preprocess.auto_augment, source.channels)
        if preprocess.augment == "alexnet" and preprocess.auto_augment == "none":
            return {"image": image, "label": label, "lighting": shift}
        return {"image": image, "label": label}

    ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(local, drop_remainder=True)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(dataset_options())


def eval_dataset(
    source: Source,
    preprocess: Preprocess,
    *,
    global_batch: int,
    ten_crop: bool = False,
    process_index: int = 0,
    process_count: int = 1,
    limit: int | None = None,
) -> tuple[tf.data.Dataset, int]:
    """Batches {'image', 'label', 'mask'} covering each example once; returns (dataset, steps).

    With ``ten_crop`` images are (b, 10, s, s, C). ``limit`` evaluates the first ``limit``
    examples only. Every process yields the same number of batches.
    """
    count = len(source) if limit is None else min(limit, len(source))
    local = global_batch // process_count
    per_process = math.ceil(count / process_count)
    steps = max(1, math.ceil(per_process / local))
    begin = process_index * per_process
    mine = np.arange(begin, min(begin + per_process, count), dtype=np.int64)
    indices = np.full(steps * local, -1, np.int64)
    indices[: len(mine)] = mine
    fetch = _fetch_fn(source)

    ds = tf.data.Dataset.from_tensor_slices(indices.reshape(steps, local))
    ds = ds.map(lambda idx: (fetch(idx), idx)).unbatch()

    def example(record, index):
        if source.stores_files:  # decoded as PIL decodes (torchvision's evaluation): the accurate inverse DCT
            data, label = source.encoded(record)
            image = augment.decode(data, source.channels, accurate=True)
        else:
            image, label = source.decode(record)
        if ten_crop:
            view = augment.ten_crop(image, preprocess.image_size, preprocess.resize_ratio)
        else:
            view = augment.eval_view(image, preprocess.image_size, preprocess.eval_crop, preprocess.resize_ratio)
        return {"image": augment.to_uint8(view), "label": label, "mask": tf.cast(index >= 0, tf.float32)}

    ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(local, drop_remainder=True).prefetch(tf.data.AUTOTUNE).with_options(dataset_options())
    return ds, steps


def numpy_batches(ds: tf.data.Dataset) -> Iterator[dict[str, np.ndarray]]:
    return ds.as_numpy_iterator()
