"""TrivialAugment and RandAugment: torchvision's operations reproduced, its magnitude spaces, stateless draws."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import tensorflow as tf

from jaxconv.data import augment, autoaugment

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "autoaugment.npz"
GEOMETRIC = {"shear_x", "shear_y", "translate_x", "translate_y", "rotate"}


def cases():
    with np.load(FIXTURE) as data:
        return [key for key in data.files if "|" in key]


@pytest.mark.parametrize("case", cases())
def test_each_operation_matches_torchvisions(case):
    """torchvision's outputs (scripts/make_autoaugment_fixture.py) on a 32 x 40 image: pixel for pixel,
    except where nearest-pixel sampling meets a pixel boundary exactly (rounding of the map's last bits)."""
    name, magnitude = case.split("|")
    with np.load(FIXTURE) as data:
        image, expected = data["image"], data[case].astype(np.float32)
    ours = autoaugment._apply(tf.constant(image, tf.float32), name, tf.constant(float(magnitude))).numpy()
    differing = np.mean(np.any(ours != expected, axis=-1))
    assert differing <= (0.01 if name in GEOMETRIC else 0.0), f"{case}: {differing:.1%} of the pixels differ"


def test_the_magnitude_spaces_are_torchvisions():
    trivial, rand = autoaugment.magnitudes("trivial", 224), autoaugment.magnitudes("rand", 224)
    assert trivial["rotate"][-1] == 135.0 and trivial["translate_x"][-1] == 32.0 and trivial["shear_x"][-1] == 0.99
    assert trivial["posterize"][0] == 8 and trivial["posterize"][-1] == 2 and trivial["solarize"][0] == 255.0
    assert rand["rotate"][9] == pytest.approx(9.0) and rand["shear_y"][9] == pytest.approx(0.09)
    assert rand["translate_y"][-1] == pytest.approx(150 / 331 * 224) and rand["posterize"][-1] == 4
    assert all(len(bins) == 31 for bins in trivial.values())
    with pytest.raises(ValueError, match="auto_augment must be 'trivial' or 'rand'"):
        autoaugment.magnitudes("auto", 224)


@pytest.mark.parametrize("policy", ["trivial", "rand"])
def test_draws_are_a_function_of_the_example_seed(policy):
    """A resumed run augments as an uninterrupted one: same seed, same image; other seeds, other images."""
    with np.load(FIXTURE) as data:
        image = tf.constant(data["image"][:, :32], tf.float32)
    draw = [augment.train_augment(image, 32, "none", tf.constant([seed, 7], tf.int64), auto_augment=policy)[0].numpy()
            for seed in (1, 1, 2, 3, 4, 5)]
    assert np.array_equal(draw[0], draw[1]) and draw[0].shape == (32, 32, 3)
    assert len({d.tobytes() for d in draw[1:]}) >= 4  # one op of 14 (trivial) or two (rand): rarely alike
    assert all(d.dtype == np.uint8 for d in draw)
