"""Grain against jaxconv's tf.data pipeline, on the ImageNet training recipe.

Both pipelines read the same synthetic ImageNet-sized JPEGs (jaxconv.bench.data.EncodedImageSource:
64 distinct images, shorter side 300-500 px, quality 90) and make uint8 batches of 128 Inception
crops (8%-100% of the area, aspect 3/4-4/3, bilinear antialiased resize to 224) with random
horizontal flips.

tf.data: jaxconv's own pipeline, timed by jaxconv.bench.data.measure_data (so it follows that
code as it changes). Grain: MapDataset over the raw JPEG bytes and labels (taken out of the
tf.train.Example records once, in this process; no TensorFlow in the workers), shuffled and
repeated; each example is decoded with PIL (the whole image: Pillow has no cropped decode like
the one jaxconv's Inception crop uses, and Image.draft's DCT scaling changes the pixels),
cropped as torchvision's RandomResizedCrop samples crops (log-uniform aspect, 10 tries, then a
centre crop; close to, not the same as, tf.image.sample_distorted_bounding_box), resized with
PIL's bilinear filter (which is antialiased) and flipped; batches are made in --cores worker
processes (mp_prefetch) and reach this process through shared memory.

The process is pinned to --cores CPUs, so that both pipelines get the same ones. The two are
measured alternately for --rounds rounds, each after --warmup batches, over --steps batches;
one JSON line per measurement, then the median over the rounds of the ratio grain/tfdata.

    /work/grainenv/bin/python scripts/bench_grain.py [--cores N] [--rounds 3] [--steps 50]

(Grain is not a jaxconv dependency: use a virtual environment holding jaxconv and grain.)
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import statistics
import time

import grain
import numpy as np
from absl import flags
from PIL import Image

BATCH = 128
SIZE = 224
AREA = (0.08, 1.0)
ASPECT = (3 / 4, 4 / 3)


def crop_box(width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of an Inception crop, sampled as torchvision's RandomResizedCrop."""
    log_aspect = np.log(ASPECT)
    for _ in range(10):
        area = width * height * rng.uniform(*AREA)
        aspect = math.exp(rng.uniform(*log_aspect))
        w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < w <= width and 0 < h <= height:
            left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    w, h = width, height  # the centre crop of the whole image, clipped to the aspect range
    if width / height < ASPECT[0]:
        h = round(width / ASPECT[0])
    elif width / height > ASPECT[1]:
        w = round(height * ASPECT[1])
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def inception_example(element: tuple[bytes, int], rng: np.random.Generator) -> dict:
    """JPEG bytes and label -> {'image': uint8 (224, 224, 3), 'label': int32}."""
    data, label = element
    image = Image.open(io.BytesIO(data))
    if image.mode != "RGB":
        image = image.convert("RGB")
    image = image.resize((SIZE, SIZE), Image.Resampling.BILINEAR, box=crop_box(*image.size, rng))
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return {"image": np.asarray(image), "label": np.int32(label)}


def jpeg_records() -> list[tuple[bytes, int]]:
    """The JPEG bytes and labels of the records measure_data reads (same images, same seed)."""
    import jaxconv.data.pipeline  # noqa: F401  (first: it keeps TensorFlow off the accelerators)
    import tensorflow as tf
    from jaxconv.bench.data import EncodedImageSource

    source = EncodedImageSource(64, image_format="jpeg", size=None, num_classes=1000)
    examples = [tf.train.Example.FromString(r).features.feature for r in source.fetch(np.arange(len(source)))]
    return [(f["image"].bytes_list.value[0], f["label"].int64_list.value[0]) for f in examples]


def time_batches(batches, steps: int, warmup: int) -> dict:
    """Images/s in steady state: the first batch and ``warmup`` more are not timed."""
    started = time.perf_counter()
    next(batches)
    first_batch_s = time.perf_counter() - started
    for _ in range(warmup):
        next(batches)
    started = time.perf_counter()
    for _ in range(steps):
        next(batches)
    return {"images_per_sec": BATCH * steps / (time.perf_counter() - started), "first_batch_s": first_batch_s}


def measure_grain(records, cores: int, steps: int, warmup: int) -> dict:
    ds = grain.MapDataset.source(records).seed(0).shuffle().repeat().random_map(inception_example)
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=BATCH))
    ds = ds.batch(BATCH, drop_remainder=True)  # last before mp_prefetch: batches go in shared memory
    batches = iter(ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=cores)))
    try:
        return {**time_batches(batches, steps, warmup), "workers": cores, "dtype": "uint8"}
    finally:
        batches.close()


def measure_tfdata(steps: int, warmup: int) -> dict:
    from jaxconv.bench.data import measure_data

    result = measure_data("imagenet", batch_size=BATCH, steps=steps, warmup=warmup)
    return {"images_per_sec": result["images_per_sec"], "first_batch_s": result["compile_s"],
            "dtype": result.get("dtype")}


def main() -> None:
    available = sorted(os.sched_getaffinity(0))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cores", type=int, default=len(available),
                        help="CPUs to pin this process to, and Grain's worker processes (default: all available)")
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each pipeline, alternating")
    parser.add_argument("--steps", type=int, default=50, help="timed batches per measurement")
    parser.add_argument("--warmup", type=int, help="untimed batches after the first (default: 3 per core)")
    args = parser.parse_args()
    if not 1 <= args.cores <= len(available):
        parser.error(f"--cores {args.cores}: this process may use 1 to {len(available)} CPUs")
    warmup = 3 * args.cores if args.warmup is None else args.warmup
    os.sched_setaffinity(0, available[: args.cores])  # before TensorFlow sizes its thread pools
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # Grain reads absl flags when JAX is installed, and fails unless they count as parsed (google/grain#1355).
    flags.FLAGS.mark_as_parsed()

    records = jpeg_records()
    ratios = []
    measures = {"tfdata": lambda: measure_tfdata(args.steps, warmup),
                "grain": lambda: measure_grain(records, args.cores, args.steps, warmup)}
    for round_ in range(args.rounds):
        rates = {}
        for pipeline, measure in measures.items():
            result = measure()
            rates[pipeline] = result["images_per_sec"]
            print(json.dumps({"pipeline": pipeline, "round": round_, **result,
                              "per_core": result["images_per_sec"] / args.cores, "cores": args.cores,
                              "batch": BATCH, "steps": args.steps, "warmup": warmup}), flush=True)
        ratios.append(rates["grain"] / rates["tfdata"])
    print(json.dumps({"ratio_grain_over_tfdata_median": statistics.median(ratios), "ratios": ratios}))


if __name__ == "__main__":
    main()
