"""Batch augmentations that run on the device, inside the train step: Mixup, CutMix, random erasing.

They act on the batch after normalisation, as torchvision's reference recipe applies them
(``RandomMixup``/``RandomCutmix`` on the collated batch, ``RandomErasing`` on the normalised
tensor); their randomness comes from the step's key, so that a step's batch is a function of
(seed, step) and a resumed run sees exactly what an uninterrupted one did. Inside a data-parallel
step (``axis_name``) they act on the *global* batch, each device on its share: an image is paired
with the one before it in the global batch (across a device boundary too), one λ and one box per
step, each image's erasing drawn by its place in the global batch — so that 8 devices mix and
erase as 1 does (torchvision's recipe mixes within each process's batch, so its runs differ with
the number of processes, and a share of one image is not mixed at all).

* Mixup (Zhang et al. 2018): ``x = λ·x + (1-λ)·roll(x)``, targets alike, λ ~ Beta(α, α).
* CutMix (Yun et al. 2019): a box of area ``1-λ`` from ``roll(x)`` pasted into ``x``; the targets
  are mixed by the box's actual (clipped) area.
* With both α > 0 each step picks one of them with probability 1/2 (torchvision's RandomChoice).
* Random erasing (Zhong et al. 2020): with probability ``p`` per image, a box of 2-33% of the
  area and aspect ratio 0.3-3.3 set to zero (the mean, after normalisation); a box taller or
  wider than the image is cut to it (torchvision draws again, up to 10 times).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _previous(x: jax.Array, axis_name: str | None) -> jax.Array:
    """Each row's predecessor in the global batch, cyclically: ``jnp.roll(x, 1)`` over the devices' shares
    laid end to end (the last row of device d - 1 comes first on device d)."""
    if axis_name is None:
        return jnp.roll(x, 1, axis=0)
    devices = jax.lax.axis_size(axis_name)
    last = jax.lax.ppermute(x[-1:], axis_name, [(d, (d + 1) % devices) for d in range(devices)])
    return jnp.concatenate([last, x[:-1]], axis=0)


def _mixup(images, targets, lam, axis_name=None):
    rolled_images, rolled_targets = _previous(images, axis_name), _previous(targets, axis_name)
    mixed = lam * images.astype(jnp.float32) + (1 - lam) * rolled_images.astype(jnp.float32)
    return mixed.astype(images.dtype), lam * targets + (1 - lam) * rolled_targets


def _cutmix(rng, images, targets, lam, axis_name=None):
    height, width = images.shape[1:3]
    cy_key, cx_key = jax.random.split(rng)
    cut = jnp.sqrt(1.0 - lam)
    box_h, box_w = (cut * height).astype(jnp.int32), (cut * width).astype(jnp.int32)
    cy = jax.random.randint(cy_key, (), 0, height)
    cx = jax.random.randint(cx_key, (), 0, width)
    top, bottom = jnp.clip(cy - box_h // 2, 0, height), jnp.clip(cy + box_h // 2, 0, height)
    left, right = jnp.clip(cx - box_w // 2, 0, width), jnp.clip(cx + box_w // 2, 0, width)
    rows, cols = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
    inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
    mixed = jnp.where(inside[None, :, :, None], _previous(images, axis_name), images)
    kept = 1.0 - ((bottom - top) * (right - left)) / (height * width)  # the area left after clipping
    return mixed, kept * targets + (1 - kept) * _previous(targets, axis_name)


def mix(rng: jax.Array, images: jax.Array, targets: jax.Array, mixup_alpha: float,
        cutmix_alpha: float, axis_name: str | None = None) -> tuple[jax.Array, jax.Array]:
    """Mixup or CutMix of a batch (N, H, W, C) and its targets (N, classes); unchanged when both α are 0.
    With ``axis_name``, of the global batch whose share this device holds (``rng`` the same on every device)."""
    if not (mixup_alpha or cutmix_alpha):
        return images, targets
    choice_key, lam_key, box_key = jax.random.split(rng, 3)
    if mixup_alpha and cutmix_alpha:
        use_cutmix = jax.random.bernoulli(choice_key)
        lam_mixup = jax.random.beta(lam_key, mixup_alpha, mixup_alpha)
        lam_cutmix = jax.random.beta(jax.random.fold_in(lam_key, 1), cutmix_alpha, cutmix_alpha)
        return jax.lax.cond(use_cutmix, lambda: _cutmix(box_key, images, targets, lam_cutmix, axis_name),
                            lambda: _mixup(images, targets, lam_mixup, axis_name))
    if mixup_alpha:
        return _mixup(images, targets, jax.random.beta(lam_key, mixup_alpha, mixup_alpha), axis_name)
    return _cutmix(box_key, images, targets, jax.random.beta(lam_key, cutmix_alpha, cutmix_alpha), axis_name)


def erase(rng: jax.Array, images: jax.Array, probability: float, scale=(0.02, 0.33),
          ratio=(0.3, 3.3), axis_name: str | None = None) -> jax.Array:
    """Random erasing: each image, with ``probability``, gets one box set to zero. With ``axis_name``, the
    draws are those of the global batch (``rng`` the same on every device), this device's share of them."""
    if not probability:
        return images
    count, height, width = images.shape[:3]
    keys = jax.random.split(rng, 5)
    devices = 1 if axis_name is None else jax.lax.axis_size(axis_name)
    first = 0 if axis_name is None else jax.lax.axis_index(axis_name) * count

    def draw(sample):  # the global batch's draws, this share's part
        return jax.lax.dynamic_slice_in_dim(sample((count * devices,)), first, count)

    apply = draw(lambda shape: jax.random.bernoulli(keys[0], probability, shape))
    area = draw(lambda shape: jax.random.uniform(keys[1], shape, minval=scale[0], maxval=scale[1])) * height * width
    aspect = jnp.exp(draw(lambda shape: jax.random.uniform(keys[2], shape, minval=jnp.log(ratio[0]),
                                                           maxval=jnp.log(ratio[1]))))
    box_h = jnp.clip(jnp.round(jnp.sqrt(area * aspect)), 1, height).astype(jnp.int32)
    box_w = jnp.clip(jnp.round(jnp.sqrt(area / aspect)), 1, width).astype(jnp.int32)
    top = (draw(lambda shape: jax.random.uniform(keys[3], shape)) * (height - box_h + 1)).astype(jnp.int32)
    left = (draw(lambda shape: jax.random.uniform(keys[4], shape)) * (width - box_w + 1)).astype(jnp.int32)
    rows = jnp.arange(height)[None, :, None]
    cols = jnp.arange(width)[None, None, :]
    inside = ((rows >= top[:, None, None]) & (rows < (top + box_h)[:, None, None])
              & (cols >= left[:, None, None]) & (cols < (left + box_w)[:, None, None]) & apply[:, None, None])
    return jnp.where(inside[..., None], jnp.zeros((), images.dtype), images)


__all__ = ["erase", "mix"]
