"""Mixup, CutMix and random erasing on the device: what they do to images and targets, and that they
are a function of the step's key alone."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxconv.train import mixing


def batch(count=16, size=12, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    images = jnp.asarray(rng.standard_normal((count, size, size, 3)), jnp.float32)
    targets = jax.nn.one_hot(jnp.arange(count) % classes, classes)
    return images, targets


def test_mixup_mixes_each_image_with_the_next_as_it_mixes_their_targets():
    images, targets = batch()
    mixed, mixed_targets = mixing.mix(jax.random.key(3), images, targets, mixup_alpha=0.2, cutmix_alpha=0.0)
    lam = float(mixed_targets[1, 1])  # image 1 (class 1) is mixed with image 0 (class 0)
    assert 0 <= lam <= 1
    np.testing.assert_allclose(mixed, lam * images + (1 - lam) * jnp.roll(images, 1, axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mixed_targets.sum(axis=1), 1.0, rtol=1e-6)
    again = mixing.mix(jax.random.key(3), images, targets, mixup_alpha=0.2, cutmix_alpha=0.0)
    assert all(np.array_equal(a, b) for a, b in zip(again, (mixed, mixed_targets)))  # the key decides everything


def test_cutmix_targets_weigh_each_image_by_the_area_it_keeps():
    images, targets = batch(size=16)
    for seed in range(5):
        mixed, mixed_targets = mixing.mix(jax.random.key(seed), images, targets, mixup_alpha=0.0, cutmix_alpha=1.0)
        from_neighbour = np.asarray(jnp.all(mixed == jnp.roll(images, 1, axis=0), axis=-1)
                                    & jnp.any(mixed != images, axis=-1))
        pasted = from_neighbour[1].mean()  # image 1 (class 1) receives a box of image 0 (class 0)
        assert float(mixed_targets[1, 0]) == pytest.approx(pasted, abs=1e-6)
        assert float(mixed_targets[1, 1]) == pytest.approx(1 - pasted, abs=1e-6)
        rows, cols = np.nonzero(from_neighbour[1])
        if rows.size:  # one rectangle
            assert rows.size == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)


def test_with_both_alphas_each_step_picks_mixup_or_cutmix():
    images, targets = batch()
    kinds = set()
    for seed in range(12):
        mixed, _ = mixing.mix(jax.random.key(seed), images, targets, mixup_alpha=0.2, cutmix_alpha=1.0)
        whole_images = np.asarray(jnp.all((mixed == images) | (mixed == jnp.roll(images, 1, axis=0)), axis=(1, 2, 3)))
        kinds.add("cutmix" if whole_images.all() else "mixup")
    assert kinds == {"cutmix", "mixup"}


def test_random_erasing_zeroes_one_box_in_about_p_of_the_images():
    images, _ = batch(count=2000, size=20)
    images = images + 10.0  # no zero in the input
    erased = mixing.erase(jax.random.key(0), images, probability=0.25)
    zeroed = np.asarray(jnp.all(erased == 0, axis=-1))
    touched = zeroed.any(axis=(1, 2))
    assert touched.mean() == pytest.approx(0.25, abs=0.03)
    areas = zeroed[touched].mean(axis=(1, 2))
    assert areas.min() >= 0.01 and areas.max() <= 0.34  # 2-33% of the image, rounded to whole pixels
    np.testing.assert_array_equal(erased[~touched], images[~touched])
    assert np.array_equal(mixing.erase(jax.random.key(0), images, probability=0.25), erased)
