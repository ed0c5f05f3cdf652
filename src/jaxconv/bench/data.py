"""The input pipeline alone, on synthetic records encoded as TFDS stores ImageNet and CIFAR."""

from __future__ import annotations

import os
import pathlib
import time

import numpy as np

from jaxconv.bench.common import RECIPES, BenchError, Request, check_request


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
    ``distinct`` images are encoded once and repeated up to ``length`` records; ``files`` (encoded
    images, e.g. real photographs) replace the synthetic ones.
    """

    channels = 3
    stores_files = True

    def __init__(self, length: int, *, image_format: str, size: tuple[int, int] | None, num_classes: int,
                 distinct: int = 64, files: list[bytes] | None = None, name: str | None = None):
        import tensorflow as tf

        self.name = name or f"synthetic_{image_format}"
        self.num_classes = num_classes
        self._length = length
        if files is None:
            encode = tf.io.encode_jpeg if image_format == "jpeg" else tf.io.encode_png
            files = [(encode(image, quality=90) if image_format == "jpeg" else encode(image)).numpy()
                     for image in synthetic_images(min(distinct, length), size=size)]
        records = []
        for i, encoded in enumerate(files):
            features = {
                "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % num_classes])),
            }
            records.append(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())
        self._records = np.array(records, dtype=object)
        self.mean_record_bytes = float(np.mean([len(r) for r in records]))

    def __len__(self) -> int:
        return self._length

    def fetch(self, indices: np.ndarray) -> np.ndarray:
        return self._records[np.asarray(indices) % len(self._records)]

    def encoded(self, record):
        import tensorflow as tf

        parsed = tf.io.parse_single_example(record, {
            "image": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([], tf.int64),
        })
        return parsed["image"], tf.cast(parsed["label"], tf.int32)

    def decode(self, record):
        import tensorflow as tf

        data, label = self.encoded(record)
        return tf.io.decode_image(data, channels=3, expand_animations=False), label


def photograph() -> bytes:
    """A real photograph as a package ships it: matplotlib's grace_hopper.jpg (512 x 600, 4:2:0)."""
    import matplotlib

    path = pathlib.Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not path.is_file():  # some distributions strip matplotlib's sample data
        raise BenchError(f"recipe 'imagenet-photo' reads matplotlib's sample photograph {path}, which this "
                         f"installation lacks; use --recipe imagenet")
    return path.read_bytes()


def measure_data(recipe: str = "imagenet", batch_size: int = 128, image_size: int | None = None,
                 steps: int = 20, warmup: int = 3, source=None) -> dict:
    """Images/s of the training input pipeline alone: fetch, decode, augment, normalise, batch.

    'imagenet': ImageNet-sized JPEG records, Inception crop + flip to ``image_size`` (224).
    'imagenet-photo': the same on a real photograph (``photograph()``) in every record.
    'cifar': 32 x 32 PNG records, pad-4 random crop + flip (He et al.) to ``image_size`` (32).
    ``source`` replaces the synthetic records with a real Source (e.g. a prepared dataset's
    training split). Batches are pulled as numpy arrays, as the training loop pulls them: uint8
    images, normalised later on the devices.
    """
    if recipe not in RECIPES:
        raise BenchError(f"recipe {recipe!r}: choose one of {', '.join(RECIPES)}")
    check_request(Request("data", "data", batch_size, image_size, "float32", steps, warmup))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from jaxconv.data import pipeline
    from jaxconv.data.catalog import IMAGENET_MEAN, IMAGENET_STD

    imagenet = recipe.startswith("imagenet")
    size = image_size or (224 if imagenet else 32)
    augment = "inception" if imagenet else "cifar"
    length = max(batch_size * (steps + warmup + 2), 1024)
    if source is None and recipe == "imagenet-photo":
        source = EncodedImageSource(length, image_format="jpeg", size=None, num_classes=1000, files=[photograph()],
                                    name="photograph_jpeg")
    if source is None:
        source = EncodedImageSource(length, image_format="jpeg" if recipe == "imagenet" else "png",
                                    size=None if recipe == "imagenet" else (32, 32),
                                    num_classes=1000 if recipe == "imagenet" else 10)
    preprocess = pipeline.Preprocess(image_size=size, mean=IMAGENET_MEAN, std=IMAGENET_STD, augment=augment)
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
    host_cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    result = {
        "mode": "data",
        "recipe": recipe,
        "augment": augment,
        "batch_size": batch_size,
        "image_size": size,
        "dtype": "uint8",  # of the images leaving the host
        "steps": steps,
        "warmup": warmup,
        "host_cpus": host_cpus,
        # Batches arrive from a prefetching pipeline, so the mean over the run is the rate;
        # the median of single pulls would flatter it.
        "images_per_sec": batch_size * steps / total,
        "images_per_sec_per_core": batch_size * steps / total / host_cpus,
        "step_time_s": total / steps,
        "step_time_min_s": min(times),
        "step_time_max_s": max(times),
        "compile_s": first_batch_s,  # building tf.data's graph and the first batch
        "source": getattr(source, "name", type(source).__name__),
        "mean_record_bytes": getattr(source, "mean_record_bytes", None),
    }
    return result
