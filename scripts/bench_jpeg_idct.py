"""What libjpeg's accurate inverse DCT costs against TensorFlow's default, the fast integer one.

Evaluation views and `jaxconv predict` decode JPEGs with the accurate IDCT (PIL's pixels, as
torchvision's pipeline has them); training keeps TensorFlow's default. Both are timed here on
ImageNet-sized quality-90 JPEGs (a photograph and a noisy copy, three sizes), decoded whole,
in alternating rounds (run it pinned to one core: `taskset -c 1 python scripts/bench_jpeg_idct.py`).
"""

from __future__ import annotations

import io
import os
import time

import matplotlib
import numpy as np
import tensorflow as tf
from PIL import Image

SIZES = ((500, 375), (500, 333), (640, 427))


def sample_files() -> list[bytes]:
    rng = np.random.default_rng(0)
    photo = Image.open(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")).convert("RGB")
    files = []
    for width, height in SIZES:
        resized = photo.resize((width, height), Image.BICUBIC)
        noisy = np.clip(np.asarray(resized).astype(int) + rng.normal(0, 20, (height, width, 3)), 0, 255)
        for image in (resized, Image.fromarray(noisy.astype(np.uint8))):
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=90)
            files.append(buffer.getvalue())
    return files


def main(rounds: int = 7, repeats: int = 40) -> None:
    data = [tf.constant(f) for f in sample_files()]
    decoders = {"fast": tf.function(lambda d: tf.io.decode_jpeg(d, channels=3)),
                "accurate": tf.function(lambda d: tf.io.decode_jpeg(d, channels=3, dct_method="INTEGER_ACCURATE"))}
    for decode in decoders.values():  # traced and warm
        for d in data:
            decode(d)
    times: dict[str, list[float]] = {name: [] for name in decoders}
    for r in range(rounds):
        for name in (list(decoders) if r % 2 == 0 else list(reversed(decoders))):
            start = time.perf_counter()
            for _ in range(repeats):
                for d in data:
                    decoders[name](d)
            times[name].append((time.perf_counter() - start) / (repeats * len(data)) * 1e3)
    for name, values in times.items():
        print(f"{name:8s} ms per decode, rounds: {' '.join(f'{v:.3f}' for v in values)}; median {np.median(values):.3f}")
    print(f"accurate / fast, median of the rounds' ratios: "
          f"{np.median(np.asarray(times['accurate']) / np.asarray(times['fast'])):.3f}")


if __name__ == "__main__":
    main()
