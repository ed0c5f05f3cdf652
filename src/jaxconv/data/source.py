"""What every dataset jaxconv reads is: a random-access Source of records, or DatasetUnavailable."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from jaxconv.errors import UserError


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
