"""What the data layer offers, by name: the datasets and the augmentations. No TensorFlow here, so
that config validation and `jaxconv train --help` can name them without starting it."""

from __future__ import annotations

import dataclasses

AUGMENTATIONS = ("alexnet", "inception", "cifar", "flip", "none")
EVAL_CROPS = ("center", "resize")
RESIZE_RATIO = 256 / 224  # the shorter side before a centre crop, to the crop: torchvision's Resize(256) for 224
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What jaxconv knows about a dataset it can train on."""

    name: str
    tfds_name: str | None
    train_split: str
    eval_split: str
    num_classes: int
    channels: int
    native_size: int | None  # None: images of varying size
    mean: tuple[float, ...]
    std: tuple[float, ...]
    default_augment: str
    download_host: str | None = None  # probed before a download, so that no network means a message
    manual_files: tuple[str, ...] = ()  # files the user must place in the manual download dir
    manual_source: str = ""


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("shapes", "jaxconv_shapes", "train", "test", 10, 3, None, (127.5,) * 3, (64.0,) * 3, "cifar"),
        DatasetSpec("mnist", "mnist", "train", "test", 10, 1, 28, (33.32,), (78.57,), "none",
                    download_host="storage.googleapis.com"),
        DatasetSpec("fashion_mnist", "fashion_mnist", "train", "test", 10, 1, 28, (72.94,), (90.02,), "flip",
                    download_host="fashion-mnist.s3-website.eu-central-1.amazonaws.com"),
        DatasetSpec("cifar10", "cifar10", "train", "test", 10, 3, 32, (125.31, 122.95, 113.87),
                    (62.99, 62.09, 66.70), "cifar", download_host="www.cs.toronto.edu"),
        DatasetSpec("cifar100", "cifar100", "train", "test", 100, 3, 32, (129.30, 124.07, 112.43),
                    (68.17, 65.39, 70.42), "cifar", download_host="www.cs.toronto.edu"),
        DatasetSpec("imagenette", "imagenette/320px-v2", "train", "validation", 10, 3, None, IMAGENET_MEAN,
                    IMAGENET_STD, "inception", download_host="s3.amazonaws.com"),
        DatasetSpec("imagenet2012", "imagenet2012", "train", "validation", 1000, 3, None, IMAGENET_MEAN,
                    IMAGENET_STD, "inception",
                    manual_files=("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"),
                    manual_source="https://image-net.org/download-images.php (free account; 'Training images "
                                  "(Task 1 & 2)' and 'Validation images (all tasks)')"),
        DatasetSpec("imagenet_resized_32", "imagenet_resized/32x32", "train", "validation", 1000, 3, 32,
                    IMAGENET_MEAN, IMAGENET_STD, "cifar", download_host="image-net.org"),
        DatasetSpec("imagenet_resized_64", "imagenet_resized/64x64", "train", "validation", 1000, 3, 64,
                    IMAGENET_MEAN, IMAGENET_STD, "cifar", download_host="image-net.org"),
        DatasetSpec("folder", None, "train", "eval", 0, 3, None, IMAGENET_MEAN, IMAGENET_STD, "inception"),
    )
}
