"""Training augmentations and evaluation crops, as in the lectures and the papers.

All randomness is stateless: each example's augmentation is a function of a seed derived
from (run seed, epoch, example index), so a resumed run — or a run on a different number
of processes — draws exactly the same crops, flips and colour noise.

Images arrive as (H, W, C) uint8; functions return float32 in [0, 255] until ``normalize``.
"""

from __future__ import annotations

import math

import tensorflow as tf

from jaxconv.data.catalog import AUGMENTATIONS, EVAL_CROPS

# ImageNet RGB principal components, on [0, 1]-scaled pixels (Krizhevsky et al. 2012, §4.1;
# the values of fb.resnet.torch and the Flax/TF references).
PCA_EIGENVALUES = (0.2175, 0.0188, 0.0045)
PCA_EIGENVECTORS = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)


def resize_shorter_side(image: tf.Tensor, size: int) -> tf.Tensor:
    """Rescales so that the shorter side is ``size`` (bilinear, antialiased), keeping the aspect."""
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    scale = tf.cast(size, tf.float32) / tf.minimum(height, width)
    new = tf.cast(tf.round(tf.stack([height * scale, width * scale])), tf.int32)
    new = tf.maximum(new, size)
    return tf.image.resize(image, new, method="bilinear", antialias=True)


def center_crop(image: tf.Tensor, size: int) -> tf.Tensor:
    shape = tf.shape(image)
    top, left = (shape[0] - size) // 2, (shape[1] - size) // 2
    return image[top : top + size, left : left + size]


def random_crop(image: tf.Tensor, size: int, seed: tf.Tensor) -> tf.Tensor:
    channels = image.shape[-1]
    return tf.image.stateless_random_crop(image, (size, size, channels), seed=seed)


def random_flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    return tf.image.stateless_random_flip_left_right(image, seed=seed)


def pca_lighting(image: tf.Tensor, seed: tf.Tensor, stddev: float = 0.1) -> tf.Tensor:
    """AlexNet's colour augmentation: add sum_i alpha_i * lambda_i * p_i to every pixel,
    alpha_i ~ N(0, stddev), along the ImageNet RGB eigenvectors p_i (pixels in [0, 255])."""
    alpha = tf.random.stateless_normal((3,), seed=seed, stddev=stddev)
    eigenvalues = tf.constant(PCA_EIGENVALUES)
    eigenvectors = tf.constant(PCA_EIGENVECTORS)
    shift = tf.linalg.matvec(eigenvectors, alpha * eigenvalues) * 255.0
    return image + shift


def inception_crop(image: tf.Tensor, size: int, seed: tf.Tensor,
                   area: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tf.Tensor:
    """Random-resized crop (Szegedy et al. 2015): a random area and aspect, resized to size x size."""
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=ratio,
        area_range=area,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, crop_size)
    return tf.image.resize(crop, (size, size), method="bilinear", antialias=True)


def _seeds(seed: tf.Tensor, count: int) -> list[tf.Tensor]:
    return list(tf.unstack(tf.random.experimental.stateless_split(seed, count)))


def train_augment(image: tf.Tensor, size: int, recipe: str, seed: tf.Tensor, resize_ratio: float = 256 / 224,
                  auto_augment: str = "none"):
    """One training example: uint8 (H, W, C) -> float32 (size, size, C) in [0, 255].

    alexnet:   shorter side to size * 256/224, random size x size crop, horizontal flip, PCA
               lighting noise (sigma 0.1) — Krizhevsky et al. 2012.
    inception: random-resized crop (8%-100% of the area, aspect 3/4-4/3), flip.
    cifar:     pad 4 pixels, random crop, flip — He et al. 2016, §4.2 (images resized to size first).
    flip:      resize to size, flip.
    none:      resize to size.

    ``auto_augment`` ('trivial' or 'rand', jaxconv.data.autoaugment) then transforms the crop, from
    a seed of its own (so that the crops and flips of a run without it are unchanged).
    """
    crop_seed, flip_seed, colour_seed = _seeds(seed, 3)
    image = tf.cast(image, tf.float32)
    if recipe == "alexnet":
        image = resize_shorter_side(image, int(math.ceil(size * resize_ratio)))
        image = random_flip(random_crop(image, size, crop_seed), flip_seed)
        image = pca_lighting(image, colour_seed)
    elif recipe == "inception":
        image = random_flip(inception_crop(image, size, crop_seed), flip_seed)
    elif recipe == "cifar":
        image = tf.image.resize(image, (size, size), antialias=True) if image.shape[0] != size else image
        image = tf.pad(image, ((4, 4), (4, 4), (0, 0)))
        image = random_flip(random_crop(image, size, crop_seed), flip_seed)
    elif recipe == "flip":
        image = random_flip(tf.image.resize(image, (size, size), antialias=True), flip_seed)
    elif recipe == "none":
        image = tf.image.resize(image, (size, size), antialias=True)
    else:
        raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}, got {recipe!r}")
    if auto_augment != "none":
        from jaxconv.data.autoaugment import auto_augment as transform

        image = transform(image, auto_augment, tf.random.experimental.stateless_fold_in(seed, 0xA0A))
    return tf.ensure_shape(image, (size, size, image.shape[-1]))


def eval_view(image: tf.Tensor, size: int, crop: str, resize_ratio: float = 256 / 224) -> tf.Tensor:
    """The evaluation view: 'center' (shorter side to size * 256/224, centre crop) or 'resize'."""
    image = tf.cast(image, tf.float32)
    if crop == "center":
        image = center_crop(resize_shorter_side(image, int(math.ceil(size * resize_ratio))), size)
    elif crop == "resize":
        image = tf.image.resize(image, (size, size), antialias=True)
    else:
        raise ValueError(f"eval_crop must be one of {', '.join(EVAL_CROPS)}, got {crop!r}")
    return tf.ensure_shape(image, (size, size, image.shape[-1]))


def ten_crop(image: tf.Tensor, size: int, resize_ratio: float = 256 / 224) -> tf.Tensor:
    """AlexNet's test-time views: the 4 corner and the centre crops, and their mirrors -> (10, s, s, C)."""
    image = resize_shorter_side(tf.cast(image, tf.float32), int(math.ceil(size * resize_ratio)))
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    corners = [(0, 0), (0, width - size), (height - size, 0), (height - size, width - size),
               ((height - size) // 2, (width - size) // 2)]
    crops = [image[top : top + size, left : left + size] for top, left in corners]
    crops += [tf.image.flip_left_right(c) for c in crops]
    return tf.ensure_shape(tf.stack(crops), (10, size, size, image.shape[-1]))


def normalize(image: tf.Tensor, mean, std) -> tf.Tensor:
    """Per-channel mean subtraction and division by the standard deviation (pixels in [0, 255])."""
    return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
