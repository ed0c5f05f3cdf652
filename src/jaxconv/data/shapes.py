"""The built-in dataset: procedurally drawn shapes, generated offline by a TFDS builder.

Ten classes, each a shape (disk, ring, triangle, square, star, cross, crescent, bowtie, L, T),
drawn at a random position, rotation and size on a cluttered, textured background. Everything
except the outline is drawn from the same distribution for every class:

* the shape's area (not its scale) is sampled from one distribution, so the fraction of the
  image it covers — and with it the mean intensity — says nothing about the class;
* foreground, background and clutter colours are independent uniform colours;
* the clutter (thin strokes and small blobs) and pixel noise are class-independent.

A classifier must therefore learn shape; `tests/test_data.py` checks that colour and
intensity statistics alone stay near chance. Generation is deterministic (each example's
random stream is seeded by (seed, split, index)) and works at any resolution; the builder
writes ArrayRecord files under the TFDS data dir on first use, keyed by resolution and size.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable

import tensorflow_datasets as tfds

from jaxconv.data.procedural import CLASS_NAMES, example_rng, render

_ON_EXAMPLE: list[Callable[[], None]] = []  # called for each example generated (a progress counter)


@contextlib.contextmanager
def reporting(callback: Callable[[], None]):
    """Calls ``callback()`` for each example generated while inside."""
    _ON_EXAMPLE.append(callback)
    try:
        yield
    finally:
        _ON_EXAMPLE.remove(callback)

@dataclasses.dataclass
class ShapesConfig(tfds.core.BuilderConfig):
    """Resolution and size of a generated copy; its name is derived from them."""

    resolution: int = 32
    train_examples: int = 20_000
    test_examples: int = 2_000
    seed: int = 0


def shapes_config(resolution: int, train_examples: int = 20_000, test_examples: int = 2_000, seed: int = 0):
    if resolution < 8:
        raise ValueError(f"shapes resolution must be at least 8 pixels, got {resolution}")
    name = f"{resolution}px_{train_examples}_{test_examples}" + (f"_seed{seed}" if seed else "")
    return ShapesConfig(
        name=name,
        description=f"{resolution}x{resolution}, {train_examples} train / {test_examples} test examples",
        resolution=resolution,
        train_examples=train_examples,
        test_examples=test_examples,
        seed=seed,
    )


class JaxconvShapes(tfds.core.GeneratorBasedBuilder):
    """jaxconv's built-in dataset: ten shapes on cluttered backgrounds (see the module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [shapes_config(32)]

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.resolution
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(size, size, 3), encoding_format="png"),
                    "label": tfds.features.ClassLabel(names=CLASS_NAMES),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://github.com/jaxconv/jaxconv",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # generated, nothing to download
        config = self.builder_config
        return {
            "train": self._generate_examples("train", config.train_examples),
            "test": self._generate_examples("test", config.test_examples),
        }

    def _generate_examples(self, split: str, count: int):
        config = self.builder_config
        for index in range(count):
            label = index % len(CLASS_NAMES)
            for callback in _ON_EXAMPLE:
                callback()
            yield index, {"image": render(label, example_rng(config.seed, split, index), config.resolution),
                          "label": label}
