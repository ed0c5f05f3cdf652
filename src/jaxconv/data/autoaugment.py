"""TrivialAugment and RandAugment, as torchvision defines them, in TensorFlow for the input pipeline.

TrivialAugmentWide (Müller & Hutter 2021; torchvision's ``TrivialAugmentWide``, the IMAGENET1K_V2
recipe's): one operation per image, drawn uniformly from 14, at a magnitude drawn uniformly from
31 bins. RandAugment (Cubuk et al. 2020; torchvision's ``RandAugment()`` defaults): two operations
per image, each drawn uniformly, at the fixed magnitude 9 of 31 bins. Signed operations flip
their sign with probability 1/2. The operations follow torchvision's tensor functions on uint8
images: blends truncate to integers, geometric ones sample the nearest pixel and fill with black.

Written here rather than imported: the libraries that have them (tf-models-official, KerasCV)
would bring a second model zoo as a dependency for 150 lines of image operations.

Every draw is stateless: it is a function of the example's seed, so a resumed run augments
exactly as an uninterrupted one.
"""

from __future__ import annotations

import math

import tensorflow as tf

OPS = ("identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color",
       "contrast", "sharpness", "posterize", "solarize", "autocontrast", "equalize")
SIGNED = {"shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color", "contrast",
          "sharpness"}
BINS = 31


def magnitudes(policy: str, size: int) -> dict[str, list[float]]:
    """Each operation's 31 magnitude bins (torchvision's ``_augmentation_space``) for ``size`` px images."""
    def linspace(low: float, high: float) -> list[float]:
        return [low + (high - low) * i / (BINS - 1) for i in range(BINS)]

    if policy == "trivial":  # TrivialAugmentWide
        shear, translate, rotate, enhance, posterize_bits = 0.99, 32.0, 135.0, 0.99, 6
    elif policy == "rand":
        shear, translate, rotate, enhance, posterize_bits = 0.3, 150.0 / 331.0 * size, 30.0, 0.9, 4
    else:
        raise ValueError(f"auto_augment must be 'trivial' or 'rand', got {policy!r}")
    table = {name: [0.0] * BINS for name in ("identity", "autocontrast", "equalize")}
    table |= {"shear_x": linspace(0, shear), "shear_y": linspace(0, shear), "translate_x": linspace(0, translate),
              "translate_y": linspace(0, translate), "rotate": linspace(0, rotate),
              "solarize": linspace(255.0, 0.0)}
    table |= {name: linspace(0, enhance) for name in ("brightness", "color", "contrast", "sharpness")}
    table["posterize"] = [float(8 - round(i / ((BINS - 1) / posterize_bits))) for i in range(BINS)]
    return {name: table[name] for name in OPS}


# -- the operations, on float32 (H, W, C) images holding integers in [0, 255] --------------------------

def _blend(image: tf.Tensor, other: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    return tf.floor(tf.clip_by_value(factor * image + (1.0 - factor) * other, 0.0, 255.0))


def _gray(image: tf.Tensor) -> tf.Tensor:
    if image.shape[-1] == 1:
        return image
    weights = tf.constant([0.2989, 0.587, 0.114])
    return tf.floor(tf.reduce_sum(image * weights, axis=-1, keepdims=True))


def _transform(image: tf.Tensor, matrix: tf.Tensor) -> tf.Tensor:
    """Samples the nearest input pixel at ``matrix`` (3 x 3, output (x, y, 1) -> input), black outside."""
    flat = tf.reshape(matrix / matrix[2, 2], (-1,))[:8]
    shape = tf.shape(image)[:2]
    out = tf.raw_ops.ImageProjectiveTransformV3(images=image[None], transforms=flat[None], output_shape=shape,
                                                fill_value=0.0, interpolation="NEAREST", fill_mode="CONSTANT")
    return out[0]


def _affine(image: tf.Tensor, a, b, c, d, centre, shift=(0.0, 0.0)) -> tf.Tensor:
    """torchvision's inverse affine map: output pixel centre P -> input point M (P - T - C) + C, with
    M = [[a, b], [c, d]], C the centre and T the shift in continuous coordinates (pixel i spans [i, i+1])."""
    (cx, cy), (tx, ty) = centre, shift
    zero, one = tf.constant(0.0), tf.constant(1.0)
    # In pixel indices (p = P - 0.5, q = Q - 0.5): q = M p + M (0.5 - T - C) + C - 0.5.
    ox = a * (0.5 - tx - cx) + b * (0.5 - ty - cy) + cx - 0.5
    oy = c * (0.5 - tx - cx) + d * (0.5 - ty - cy) + cy - 0.5
    return _transform(image, tf.stack([tf.stack([a, b, ox]), tf.stack([c, d, oy]), tf.stack([zero, zero, one])]))


def _apply(image: tf.Tensor, name: str, m: tf.Tensor) -> tf.Tensor:
    height, width = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
    one, zero = tf.constant(1.0), tf.constant(0.0)
    if name == "identity":
        return image
    if name == "shear_x":  # torchvision: shear about the top-left corner, x_in = x + m y
        return _affine(image, one, m, zero, one, (zero, zero))
    if name == "shear_y":
        return _affine(image, one, zero, m, one, (zero, zero))
    if name in ("translate_x", "translate_y"):  # by int(m) pixels, as torchvision (towards zero)
        pixels = tf.cast(tf.cast(m, tf.int32), tf.float32)
        shift = (pixels, zero) if name == "translate_x" else (zero, pixels)
        return _affine(image, one, zero, zero, one, (zero, zero), shift)
    if name == "rotate":  # counter-clockwise by m degrees about the centre
        t = m * math.pi / 180.0
        return _affine(image, tf.cos(t), -tf.sin(t), tf.sin(t), tf.cos(t), (width / 2, height / 2))
    if name == "brightness":
        return _blend(image, tf.zeros_like(image), 1.0 + m)
    if name == "color":
        return _blend(image, _gray(image), 1.0 + m)
    if name == "contrast":
        return _blend(image, tf.reduce_mean(_gray(image)), 1.0 + m)
    if name == "sharpness":
        kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
        kernel = tf.tile(kernel[:, :, None, None], (1, 1, image.shape[-1], 1))
        smooth = tf.round(tf.nn.depthwise_conv2d(image[None], kernel, (1, 1, 1, 1), "VALID")[0])
        inner = tf.pad(tf.ones_like(smooth), ((1, 1), (1, 1), (0, 0)))  # the border keeps its pixels
        degenerate = tf.where(inner > 0, tf.pad(smooth, ((1, 1), (1, 1), (0, 0))), image)
        return _blend(image, degenerate, 1.0 + m)
    if name == "posterize":
        step = tf.pow(2.0, 8.0 - m)
        return tf.floor(image / step) * step
    if name == "solarize":
        return tf.where(image >= m, 255.0 - image, image)
    if name == "autocontrast":
        low = tf.reduce_min(image, axis=(0, 1), keepdims=True)
        high = tf.reduce_max(image, axis=(0, 1), keepdims=True)
        flat = high == low
        scale = tf.where(flat, 1.0, 255.0 / tf.where(flat, 1.0, high - low))
        return tf.floor(tf.clip_by_value((image - tf.where(flat, 0.0, low)) * scale, 0.0, 255.0))
    if name == "equalize":
        return tf.stack([_equalize_channel(image[..., c]) for c in range(image.shape[-1])], axis=-1)
    raise ValueError(f"unknown operation {name!r}")


def _equalize_channel(channel: tf.Tensor) -> tf.Tensor:
    """PIL's (and torchvision's) histogram equalization of one channel."""
    pixels = tf.cast(channel, tf.int32)
    histogram = tf.math.bincount(tf.reshape(pixels, (-1,)), minlength=256, maxlength=256, dtype=tf.float32)
    nonzero = tf.boolean_mask(histogram, histogram > 0)
    step = tf.floor((tf.reduce_sum(nonzero) - nonzero[-1]) / 255.0)
    lut = tf.floor((tf.cumsum(histogram) + tf.floor(step / 2.0)) / tf.maximum(step, 1.0))
    lut = tf.clip_by_value(tf.concat([[0.0], lut[:-1]], axis=0), 0.0, 255.0)
    return tf.where(step > 0, tf.gather(lut, pixels), channel)


def auto_augment(image: tf.Tensor, policy: str, seed: tf.Tensor) -> tf.Tensor:
    """One example: float32 (H, W, C) in [0, 255] -> the same, augmented by ``policy`` ('trivial' or 'rand')."""
    size = int(image.shape[1]) if image.shape[1] is not None else 224
    table = magnitudes(policy, size)
    count, fixed_bin = (1, None) if policy == "trivial" else (2, 9)
    image = tf.floor(tf.clip_by_value(image, 0.0, 255.0))  # uint8 values, as torchvision's ops take them
    for op_seed in tf.unstack(tf.random.experimental.stateless_split(seed, count)):
        pick_seed, bin_seed, sign_seed = tf.unstack(tf.random.experimental.stateless_split(op_seed, 3))
        op = tf.random.stateless_uniform((), pick_seed, 0, len(OPS), dtype=tf.int32)
        level = (tf.constant(fixed_bin) if fixed_bin is not None
                 else tf.random.stateless_uniform((), bin_seed, 0, BINS, dtype=tf.int32))
        negative = tf.random.stateless_uniform((), sign_seed) < 0.5

        def branch(name: str):
            def run():
                m = tf.gather(tf.constant(table[name]), level)
                if name in SIGNED:
                    m = tf.where(negative, -m, m)
                return _apply(image, name, m)
            return run

        image = tf.switch_case(op, [branch(name) for name in OPS])
    return image
