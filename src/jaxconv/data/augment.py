"""Training augmentations and evaluation crops, as in the lectures and the papers.

All randomness is stateless: each example's augmentation is a function of a seed derived
from (run seed, epoch, example index), so a resumed run — or a run on a different number
of processes — draws exactly the same crops, flips and colour noise.

Images arrive as (H, W, C) uint8, or as the encoded file itself (a scalar string tensor), which lets
the Inception crop decode only its window of a JPEG. The geometric functions return float32 in
[0, 255]; ``to_uint8`` rounds the finished view to 8 bits, as torchvision's PIL pipeline does, and
batches leave the host as uint8: ``normalize`` (and AlexNet's lighting shift) run on the devices,
in the compiled step (jaxconv.train.steps.model_inputs).
"""

from __future__ import annotations

import math

import tensorflow as tf

from jaxconv.data.catalog import AUGMENTATIONS, EVAL_CROPS, RESIZE_RATIO

# ImageNet RGB principal components, on [0, 1]-scaled pixels (Krizhevsky et al. 2012, §4.1;
# the values of fb.resnet.torch and the Flax/TF references).
PCA_EIGENVALUES = (0.2175, 0.0188, 0.0045)
PCA_EIGENVECTORS = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)


MAX_ASPECT = 16  # a longer image keeps its middle part this long before its shorter side is resized


def resize_shorter_side(image: tf.Tensor, size: int) -> tf.Tensor:
    """Rescales so that the shorter side is ``size`` (bilinear, antialiased), keeping the aspect.

    An image longer than MAX_ASPECT times its width (or wider than that times its height) keeps only its
    middle MAX_ASPECT : 1 part first: a 1 x 60,000 px strip would resize to 256 x 15,360,000 px (46 GB as
    float32). The crops taken from the middle are the same (but for the resampling's last bits)."""
    shape = tf.shape(image)
    keep_height = tf.minimum(shape[0], MAX_ASPECT * shape[1])
    keep_width = tf.minimum(shape[1], MAX_ASPECT * shape[0])
    top, left = (shape[0] - keep_height) // 2, (shape[1] - keep_width) // 2
    image = image[top : top + keep_height, left : left + keep_width]
    shape = tf.cast(tf.shape(image)[:2], tf.int64)
    # torchvision's Resize(size): the longer side int(size * long / short), cut, not rounded (exact in integers)
    new = tf.maximum(size * shape // tf.reduce_min(shape), size)
    return tf.image.resize(image, tf.cast(new, tf.int32), method="bilinear", antialias=True)


def centre_offset(length: tf.Tensor, size: int) -> tf.Tensor:
    """torchvision's CenterCrop offset, int(round((length - size) / 2)): a half rounded to even."""
    excess = length - size
    half = excess // 2
    return half + (excess % 2) * (half % 2)


def center_crop(image: tf.Tensor, size: int) -> tf.Tensor:
    shape = tf.shape(image)
    top, left = centre_offset(shape[0], size), centre_offset(shape[1], size)
    return image[top : top + size, left : left + size]


def random_crop(image: tf.Tensor, size: int, seed: tf.Tensor) -> tf.Tensor:
    channels = image.shape[-1]
    return tf.image.stateless_random_crop(image, (size, size, channels), seed=seed)


def random_flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    return tf.image.stateless_random_flip_left_right(image, seed=seed)


def lighting_shift(seed: tf.Tensor, stddev: float = 0.1) -> tf.Tensor:
    """AlexNet's colour augmentation, the (3,) shift added to every pixel: sum_i alpha_i * lambda_i * p_i,
    alpha_i ~ N(0, stddev), along the ImageNet RGB eigenvectors p_i (pixels in [0, 255])."""
    alpha = tf.random.stateless_normal((3,), seed=seed, stddev=stddev)
    eigenvalues = tf.constant(PCA_EIGENVALUES)
    eigenvectors = tf.constant(PCA_EIGENVECTORS)
    return tf.linalg.matvec(eigenvectors, alpha * eigenvalues) * 255.0


def to_uint8(image: tf.Tensor) -> tf.Tensor:
    """A float view in [0, 255] rounded to 8 bits (at most half a grey level from its value)."""
    if image.dtype == tf.uint8:
        return image
    return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)


JPEG_MARGIN = 8  # pixels decoded around a JPEG crop: twice the widest chroma subsampling's sample


def decode(data: tf.Tensor, channels: int, accurate: bool = False) -> tf.Tensor:
    """An encoded image file (JPEG, PNG, GIF, BMP, WebP) -> uint8 (H, W, channels).

    ``accurate``: a JPEG's inverse DCT is libjpeg's accurate one, as PIL's (torchvision's) decode, the same
    pixels; otherwise TensorFlow's default, the fast integer DCT (up to ~20 grey levels off, about 1 on
    average; training's augmentation reads it, the evaluation views and ``predict`` the accurate one)."""
    def whole():
        if accurate:
            return tf.cond(tf.io.is_jpeg(data),
                           lambda: tf.io.decode_jpeg(data, channels=channels, dct_method="INTEGER_ACCURATE"),
                           lambda: tf.io.decode_image(data, channels=channels, expand_animations=False))
        return tf.io.decode_image(data, channels=channels, expand_animations=False)

    return tf.ensure_shape(tf.cond(_is_palette_bmp(data), lambda: _palette_bmp(data, channels), whole),
                           (None, None, channels))


def _is_palette_bmp(data: tf.Tensor) -> tf.Tensor:
    """An 8-bit BMP: TensorFlow's decoder returns its palette indices as grey levels."""
    head = tf.strings.join([tf.strings.substr(data, 0, 30), b"\0" * 30])  # a file shorter than 30 bytes is no BMP
    return tf.logical_and(tf.equal(tf.strings.substr(head, 0, 2), b"BM"),
                          tf.equal(tf.strings.substr(head, 28, 2, unit="BYTE"), b"\x08\x00"))


def _palette_bmp(data: tf.Tensor, channels: int) -> tf.Tensor:
    """An 8-bit BMP's colours: its indices (as TensorFlow decodes them) looked up in its palette."""
    header = tf.cast(tf.io.decode_raw(tf.strings.substr(data, 0, 54), tf.uint8), tf.int32)

    def u32(offset):
        return sum(header[offset + i] * 256**i for i in range(4))

    count = tf.where(tf.equal(u32(46), 0), 256, u32(46))  # colours used; 0 means all 2^8
    entries = tf.io.decode_raw(tf.strings.substr(data, 14 + u32(14), 4 * count), tf.uint8)
    palette = tf.reshape(entries, (-1, 4))[:, 2::-1]  # B, G, R, 0 -> R, G, B
    indices = tf.io.decode_bmp(data, channels=3)[..., 0]  # the index, repeated in each channel
    rgb = tf.gather(palette, tf.minimum(tf.cast(indices, tf.int32), tf.shape(palette)[0] - 1))
    if channels == 1:
        return tf.cast(tf.round(tf.image.rgb_to_grayscale(tf.cast(rgb, tf.float32))), tf.uint8)
    if channels == 4:
        return tf.concat([rgb, tf.fill(tf.concat([tf.shape(rgb)[:2], [1]], 0), tf.constant(255, tf.uint8))], -1)
    return rgb


def crop_window(image: tf.Tensor, window, channels: int | None = None) -> tf.Tensor:
    """The crop ``window(shape) -> (begin, size)`` of an image, decoded or encoded.

    A JPEG file is decoded only as far as the window needs (libjpeg's cropped decoding: the
    same pixels as decoding it all and slicing); other files are decoded whole, then sliced.
    """
    if image.dtype != tf.string:
        begin, size = window(tf.shape(image))
        return tf.slice(image, begin, size)

    def jpeg():
        shape = tf.image.extract_jpeg_shape(image)
        begin, size = window(tf.stack([shape[0], shape[1], channels]))
        # libjpeg upsamples chroma from the neighbouring samples, which a cropped decode lacks at
        # the crop's edges: decode a margin around the window and cut it off (then the pixels
        # are those of the whole image's decode, tested for every chroma subsampling).
        top, left = tf.maximum(begin[0] - JPEG_MARGIN, 0), tf.maximum(begin[1] - JPEG_MARGIN, 0)
        bottom = tf.minimum(begin[0] + size[0] + JPEG_MARGIN, shape[0])
        right = tf.minimum(begin[1] + size[1] + JPEG_MARGIN, shape[1])
        decoded = tf.image.decode_and_crop_jpeg(image, tf.stack([top, left, bottom - top, right - left]),
                                                channels=channels)
        return decoded[begin[0] - top : begin[0] - top + size[0], begin[1] - left : begin[1] - left + size[1]]

    def other():
        whole = decode(image, channels)
        begin, size = window(tf.shape(whole))
        return tf.slice(whole, begin, size)

    return tf.ensure_shape(tf.cond(tf.io.is_jpeg(image), jpeg, other), (None, None, channels))


def inception_window(shape: tf.Tensor, seed: tf.Tensor, area: tuple[float, float] = (0.08, 1.0),
                     ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[tf.Tensor, tf.Tensor]:
    """The random-resized crop's window of an image of ``shape`` (H, W, C): (begin, size)."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=ratio,
        area_range=area,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    return begin, size


def inception_crop(image: tf.Tensor, size: int, seed: tf.Tensor, channels: int | None = None) -> tf.Tensor:
    """Random-resized crop (Szegedy et al. 2015): a random area and aspect, resized to size x size.

    ``image`` may be the encoded file (give ``channels``): a JPEG is then decoded only within the crop.
    """
    crop = crop_window(image, lambda shape: inception_window(shape, seed), channels)
    return tf.image.resize(crop, (size, size), method="bilinear", antialias=True)


def _seeds(seed: tf.Tensor, count: int) -> list[tf.Tensor]:
    return list(tf.unstack(tf.random.experimental.stateless_split(seed, count)))


def train_augment(image: tf.Tensor, size: int, recipe: str, seed: tf.Tensor, resize_ratio: float = RESIZE_RATIO,
                  auto_augment: str = "none", channels: int | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """One training example: uint8 (H, W, C) -> (uint8 (size, size, C) view, float32 (C,) colour shift).

    alexnet:   shorter side to size * 256/224, random size x size crop, horizontal flip, PCA
               lighting noise (sigma 0.1) — Krizhevsky et al. 2012.
    inception: random-resized crop (8%-100% of the area, aspect 3/4-4/3), flip.
    cifar:     pad 4 pixels, random crop, flip — He et al. 2016, §4.2 (images resized to size first).
    flip:      resize to size, flip.
    none:      resize to size.

    ``auto_augment`` ('trivial' or 'rand', jaxconv.data.autoaugment) then transforms the view, from
    a seed of its own (so that the crops and flips of a run without it are unchanged).

    The view is rounded to 8 bits; the colour shift (AlexNet's lighting; zero for the other recipes)
    is added to it on the device, before normalisation — except under ``auto_augment``, whose
    operations take the shifted image (then applied here; the returned shift is zero).
    ``image`` may be the encoded file (a scalar string; give ``channels``) for the 'inception'
    recipe, which then decodes only the crop of a JPEG.
    """
    crop_seed, flip_seed, colour_seed = _seeds(seed, 3)
    channels = channels or image.shape[-1]
    shift = tf.zeros((channels,), tf.float32)
    if recipe == "inception":
        image = random_flip(inception_crop(image, size, crop_seed, channels=channels), flip_seed)
    else:
        if image.dtype == tf.string:
            image = decode(image, channels)
        image = tf.cast(image, tf.float32)
    if recipe == "alexnet":
        image = resize_shorter_side(image, int(math.ceil(size * resize_ratio)))
        image = random_flip(random_crop(image, size, crop_seed), flip_seed)
        shift = lighting_shift(colour_seed)
    elif recipe == "cifar":
        image = tf.image.resize(image, (size, size), antialias=True) if image.shape[0] != size else image
        image = tf.pad(image, ((4, 4), (4, 4), (0, 0)))
        image = random_flip(random_crop(image, size, crop_seed), flip_seed)
    elif recipe == "flip":
        image = random_flip(tf.image.resize(image, (size, size), antialias=True), flip_seed)
    elif recipe == "none":
        image = tf.image.resize(image, (size, size), antialias=True)
    elif recipe != "inception":
        raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}, got {recipe!r}")
    if auto_augment != "none":
        from jaxconv.data.autoaugment import auto_augment as transform

        image = transform(image + shift, auto_augment, tf.random.experimental.stateless_fold_in(seed, 0xA0A))
        shift = tf.zeros_like(shift)
    return tf.ensure_shape(to_uint8(image), (size, size, channels)), shift


def eval_view(image: tf.Tensor, size: int, crop: str, resize_ratio: float = RESIZE_RATIO) -> tf.Tensor:
    """The evaluation view: 'center' (shorter side to size * 256/224, centre crop) or 'resize'."""
    image = tf.cast(image, tf.float32)
    if crop == "center":
        image = center_crop(resize_shorter_side(image, int(math.ceil(size * resize_ratio))), size)
    elif crop == "resize":
        image = tf.image.resize(image, (size, size), antialias=True)
    else:
        raise ValueError(f"eval_crop must be one of {', '.join(EVAL_CROPS)}, got {crop!r}")
    return tf.ensure_shape(image, (size, size, image.shape[-1]))


def ten_crop(image: tf.Tensor, size: int, resize_ratio: float = RESIZE_RATIO) -> tf.Tensor:
    """AlexNet's test-time views: the 4 corner and the centre crops, and their mirrors -> (10, s, s, C)."""
    image = resize_shorter_side(tf.cast(image, tf.float32), int(math.ceil(size * resize_ratio)))
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    corners = [(0, 0), (0, width - size), (height - size, 0), (height - size, width - size),
               (centre_offset(height, size), centre_offset(width, size))]
    crops = [image[top : top + size, left : left + size] for top, left in corners]
    crops += [tf.image.flip_left_right(c) for c in crops]
    return tf.ensure_shape(tf.stack(crops), (10, size, size, image.shape[-1]))


