"""What every dataset jaxconv reads is: a random-access Source of records, or DatasetUnavailable."""

from __future__ import annotations

import contextlib
import os
import threading

import numpy as np
import tensorflow as tf

from jaxconv.errors import UserError


_preparing = threading.Event()
_on_preparing: list = []  # checks run as such work starts (see stop_before_preparing)


@contextlib.contextmanager
def preparing_data():
    """Marks work that makes a dataset usable and keeps nothing if cut short: generating or downloading
    it, scanning an image folder. A stop request (SIGTERM, Ctrl-C) ends such work at once, also one
    that came just before it; anywhere else in a run's start it lets the start finish and stops before
    the first step (jaxconv.train.signals)."""
    _preparing.set()
    try:
        for check in list(_on_preparing):
            check()
        yield
    finally:
        _preparing.clear()


def data_being_prepared() -> bool:
    return _preparing.is_set()


@contextlib.contextmanager
def stop_before_preparing(check):
    """Inside it, ``check()`` runs as each preparation starts, and may raise to keep it from starting."""
    _on_preparing.append(check)
    try:
        yield
    finally:
        _on_preparing.remove(check)


def dataset_options() -> tf.data.Options:
    """The options of every tf.data pipeline jaxconv iterates (training and evaluation input, scans)."""
    options = tf.data.Options()
    options.deterministic = True
    # No autotuning thread: deleting an iterator waits for that thread to wake, and its wake-ups come up
    # to a minute apart late in a run; the wake that cancellation should give is sometimes missed, so the
    # training input's end (or the process's exit) sat 0-60 s (docs/benchmarks.md). AUTOTUNE's maps then
    # run as many calls at once as the process has cores (tf.data's own default stops at 16, short of a
    # GPU host) and prefetch grows its own buffer: the same images/s as with autotuning, measured on the
    # ImageNet and CIFAR recipes, one and two cores.
    options.autotune.enabled = False
    options.autotune.initial_parallelism = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else (os.cpu_count() or 1)
    options.threading.max_intra_op_parallelism = 1
    return options


class DatasetUnavailable(UserError):
    """The dataset is not prepared and cannot be prepared here; the message says what to do."""


class Source:
    """Random access to one split: ``len(source)`` examples, read by index.

    ``fetch(indices)`` (numpy, in the input pipeline's Python thread) returns what
    ``decode(record)`` (TensorFlow, in parallel tf.data workers) turns into an
    (H, W, C) uint8 image and an int32 label. A source whose records hold image files
    (``stores_files``) also gives ``encoded(record)``: the file's bytes and the label, from which
    the Inception crop decodes only its window of a JPEG.
    """

    num_classes: int
    channels: int
    name: str
    stores_files: bool = False

    def __len__(self) -> int:
        raise NotImplementedError

    def fetch(self, indices: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def decode(self, record: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        raise NotImplementedError

    def encoded(self, record: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} records hold no image files")
