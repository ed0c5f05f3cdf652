"""Image files -> top-k ImageNet classes, with each weight set's own evaluation preprocessing.

Decoding and resizing use TensorFlow (a jaxconv dependency; no PIL): ``tf.io.decode_image``
(JPEG, PNG, GIF's first frame, BMP, WebP), the shorter side resized with antialiasing, rounded
back to 8-bit values as torchvision's PIL pipeline does, center-cropped, then normalized.
JPEGs are decoded with libjpeg's accurate inverse DCT, giving PIL's pixels. The result is close to
torchvision's ``weights.transforms()`` on a PIL image, not bit-identical: the resampling filters
differ slightly (bilinear within 1 grey level; bicubic up to about 10, 0.2 on average).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import os
import pathlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from jaxconv.declarations import Preprocessing
from jaxconv.errors import UserError


class NotAnImageError(UserError, ValueError):
    """A file that TensorFlow cannot decode as an image."""


@functools.cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, in the order of the logits (torchvision's names)."""
    text = importlib.resources.files("jaxconv.pretrained").joinpath("imagenet_classes.txt").read_text("utf-8")
    names = tuple(line for line in text.splitlines() if line)
    if len(names) != 1000:
        raise RuntimeError(f"imagenet_classes.txt holds {len(names)} names, not 1000: the installation is damaged")
    return names


_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"\xff\x0a",
               b"\x00\x00\x00\x0cJXL ")  # JPEG, PNG, GIF, BMP, JPEG XL (and WebP's RIFF....WEBP below)


def _check_signature(path: str | os.PathLike, data: bytes) -> None:
    """NotAnImageError for a file without an image format's signature, before TensorFlow is asked (whose
    decoder logs a C++ warning beside its error)."""
    if not (data.startswith(_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")):
        raise NotAnImageError(f"{path}: not an image (no JPEG, PNG, GIF, BMP or WebP signature)")


def load_image(path: str | os.PathLike, channels: int = 3) -> np.ndarray:
    """Decodes an image file to (H, W, channels) uint8 (RGB by default), the pixels PIL gives (the accurate
    inverse DCT; 8-bit BMPs by their palettes); raises NotAnImageError if it is not one."""
    return _decoded(path, lambda image: image, channels)


def _decoded(path: str | os.PathLike, then: Callable, channels: int = 3) -> np.ndarray:
    """``then(image)`` of a file's decoded pixels, as a numpy array; NotAnImageError for a file TensorFlow cannot
    decode, in one line."""
    import tensorflow as tf

    from jaxconv.data import augment

    data = pathlib.Path(path).read_bytes()
    _check_signature(path, data)
    try:
        return then(augment.decode(tf.constant(data), channels, accurate=True)).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as e:
        # TF wraps the reason in op details: "{{function_node ...}} Unknown image file format. ... [Op:DecodeImage]"
        reason = re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:\w+\].*", "", getattr(e, "message", "") or type(e).__name__).strip()
        raise NotAnImageError(f"{path}: not an image TensorFlow can decode ({reason})") from None


def resized_size(height: int, width: int, shorter: int) -> tuple[int, int]:
    """torchvision's Resize(int): the shorter side becomes ``shorter``, the longer int(shorter * long / short)."""
    if height <= width:
        return shorter, int(shorter * width / height)
    return int(shorter * height / width), shorter


_KERNELS = {"bilinear": "triangle", "bicubic": "keyscubic"}  # tf.image.resize's kernels for its methods
_WHOLE_RESIZE_PIXELS = 4096 * 4096  # beyond this the whole resized image (float32) is not made


def preprocess(image: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """(H, W, 3) uint8 -> (crop, crop, 3) float32: resize shorter side, center crop, scale, normalize."""
    import tensorflow as tf

    height, width = image.shape[:2]
    new_height, new_width = resized_size(height, width, preprocessing.resize)
    crop = preprocessing.crop
    if new_height < crop or new_width < crop:
        raise ValueError(f"resized to {new_height}x{new_width}, smaller than the {crop}x{crop} crop")
    top = int(round((new_height - crop) / 2.0))
    left = int(round((new_width - crop) / 2.0))
    if new_height * new_width <= _WHOLE_RESIZE_PIXELS:
        resized = tf.image.resize(image, (new_height, new_width), method=preprocessing.interpolation, antialias=True)
        resized = resized[top : top + crop, left : left + crop]
    else:  # a long strip (1 x 1000 px resizes to 256 x 256,000): only the crop, by the same resampling shifted
        # to the crop's offset; equal to cropping the whole resize but for float rounding (<= 1 grey level)
        scale = np.asarray([new_height, new_width], np.float32) / np.asarray([height, width], np.float32)
        resized = tf.raw_ops.ScaleAndTranslate(
            images=tf.cast(image[None], tf.float32), size=[crop, crop], scale=scale,
            translation=np.asarray([-top, -left], np.float32), kernel_type=_KERNELS[preprocessing.interpolation],
            antialias=True)[0]
    patch = tf.clip_by_value(tf.round(resized), 0.0, 255.0).numpy() / 255.0
    mean = np.asarray(preprocessing.mean, np.float32)
    std = np.asarray(preprocessing.std, np.float32)
    return ((patch - mean) / std).astype(np.float32)


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[pathlib.Path]:
    """Files as given, and every file inside each folder (recursively, sorted, hidden ones skipped)."""
    paths = []
    for item in inputs:
        path = pathlib.Path(item)
        if path.is_dir():
            found = (p for p in sorted(path.rglob("*")) if p.is_file())
            paths.extend(p for p in found if not any(part.startswith(".") for part in p.relative_to(path).parts))
        else:
            paths.append(path)
    return paths


@dataclasses.dataclass
class Prediction:
    """The top-k classes of one image: (class index, label, probability), most probable first."""

    file: str
    top: list[tuple[int, str, float]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "top": [{"class": i, "label": label, "probability": p} for i, label, p in self.top],
        }


@dataclasses.dataclass
class Skipped:
    """An input that was not classified, and why."""

    file: str
    reason: str


def _read(paths: Iterable[pathlib.Path], prepare: Callable[[pathlib.Path], np.ndarray]
          ) -> Iterator[tuple[str, np.ndarray | str]]:
    for path in paths:
        if not path.exists():
            yield str(path), f"{path}: no such file or folder"
            continue
        try:
            yield str(path), prepare(path)
        except (NotAnImageError, OSError, ValueError) as e:
            yield str(path), str(e)


def run_preprocessing(config: Mapping[str, Any]) -> Callable[[pathlib.Path], np.ndarray]:
    """A file -> the view a `jaxconv train` run with ``config`` (its config.json) evaluates: its dataset's
    channels, its ``eval_crop`` at its ``image_size`` (the evaluation pipeline's own functions, rounded to 8
    bits), normalised with its dataset's mean and std as the train step does."""
    from jaxconv.data import augment
    from jaxconv.data.catalog import DATASETS

    spec = DATASETS[config["dataset"]]
    size, crop = int(config["image_size"]), config.get("eval_crop") or "resize"
    mean, std = np.asarray(spec.mean, np.float32), np.asarray(spec.std, np.float32)

    def prepare(path: pathlib.Path) -> np.ndarray:
        view = _decoded(path, lambda image: augment.to_uint8(augment.eval_view(image, size, crop)), spec.channels)
        return (view.astype(np.float32) - mean) / std

    return prepare


def run_labels(workdir: str | os.PathLike, config: Mapping[str, Any]) -> list[str] | None:
    """The class names of a run's dataset: a folder dataset's as the run recorded them (dataset.json), the
    built-in dataset's, ImageNet's, or the prepared TFDS dataset's; None where none is known."""
    from jaxconv.train.resume import recorded_dataset

    recorded = recorded_dataset(pathlib.Path(workdir)) or {}
    if isinstance(recorded.get("classes"), list):
        return [str(name) for name in recorded["classes"]]
    if config.get("dataset") == "shapes":
        from jaxconv.data.procedural import CLASS_NAMES

        return list(CLASS_NAMES)
    if config.get("dataset") == "imagenet2012":
        return list(imagenet_classes())
    try:
        from jaxconv.data.catalog import DATASETS
        from jaxconv.data.sources import tfds_builder

        builder = tfds_builder(DATASETS[config["dataset"]], config.get("data_dir"))
        return list(builder.info.features["label"].names) if builder.is_prepared() else None
    except Exception:  # noqa: BLE001 - names are a nicety: without them the classes are shown as numbers
        return None


def predict_files(
    paths: Sequence[str | os.PathLike],
    model,
    variables,
    preprocessing: Preprocessing | Callable[[pathlib.Path], np.ndarray],
    *,
    top_k: int = 5,
    batch_size: int = 16,
    labels: Sequence[str] | None = None,
) -> Iterator[Prediction | Skipped]:
    """Classifies image files (folders are expanded) in batches; yields a Prediction or Skipped per file.

    ``preprocessing``: a weight set's (resize, crop, normalize), or a function of the file (``run_preprocessing``).
    ``labels`` default to the ImageNet class names when the model has 1000 classes, else
    the class indices.
    """
    import jax

    @jax.jit
    def logits_and_probabilities(variables, images):
        logits = model.apply(variables, images, train=False).astype("float32")
        return logits, jax.nn.softmax(logits, axis=-1)

    files = expand_inputs(paths)
    chunk = max(1, min(batch_size, len(files)))  # one batch shape: one compilation
    pending: list[tuple[str, np.ndarray]] = []

    def flush() -> Iterator[Prediction]:
        images = np.stack([image for _, image in pending])
        padded = np.concatenate([images, np.zeros((chunk - len(images), *images.shape[1:]), images.dtype)])
        logits, probs = (np.asarray(a)[: len(images)] for a in logits_and_probabilities(variables, padded))
        names = labels if labels is not None else (imagenet_classes() if probs.shape[-1] == 1000 else None)
        k = min(top_k, probs.shape[-1])
        for (file, _), scores, row in zip(pending, logits, probs):
            # ranked by the logits: probabilities far below the top one underflow to 0 in float32 and tie
            order = np.argsort(-scores, kind="stable")[:k]
            top = [(int(i), names[i] if names is not None else str(i), float(row[i])) for i in order]
            yield Prediction(file, top)
        pending.clear()

    prepare = (preprocessing if callable(preprocessing)
               else lambda path: preprocess(load_image(path), preprocessing))
    for file, item in _read(files, prepare):
        if isinstance(item, str):
            yield Skipped(file, item)
            continue
        pending.append((file, item))
        if len(pending) == chunk:
            yield from flush()
    if pending:
        yield from flush()
