"""AlexNet (Krizhevsky et al. 2012), torchvision's AlexNet variant, and ZFNet (Zeiler & Fergus 2014)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxconv.archs.common import classifier_output
from jaxconv.blocks.base import Activation, ModuleDef
from jaxconv.declarations import PAPER_COUNT, Published, TorchvisionKeys, torchvision_figures, torchvision_weights
from jaxconv.layers import AdaptiveAvgPool, Conv, Dropout, LocalResponseNorm, MaxPool, relu
from jaxconv.layers.norm import norm_factory
from jaxconv.registry import register


def _classifier(x, *, width, num_classes, dropout, dropout_first, act, train, dtype, features, norm=None):
    """FC6 -> FC7 -> FC8 with dropout on FC6/FC7 (before them in torchvision, after in the paper).

    ``norm`` (a bound norm factory or None) normalises FC6 and FC7 before their activation, in
    place of their biases.
    """
    x = x.reshape(x.shape[0], -1)
    for name in ("fc6", "fc7"):
        if dropout_first:
            x = Dropout(dropout, name=f"{name}_dropout")(x, deterministic=not train)
        x = nn.Dense(width, use_bias=norm is None, dtype=dtype, name=name)(x)
        if norm is not None:
            x = norm(name=f"{name}_norm")(x)
        x = act(x)
        if not dropout_first:
            x = Dropout(dropout, name=f"{name}_dropout")(x, deterministic=not train)
    features["pre_logits"] = x
    return nn.Dense(num_classes, dtype=dtype, name="head")(x)


def _classifier_norm(classifier_norm: bool, norm):
    """The norm FC6 and FC7 take: the model's own when ``classifier_norm``, else none."""
    if classifier_norm and norm is None:
        raise ValueError("classifier_norm=True normalises FC6 and FC7 with the model's norm, but norm is None; "
                         "give norm='batch' (or 'group', 'layer') with it")
    return norm if classifier_norm else None


def _unit(x, features, kernel, stride=1, *, index, conv, norm, act, **options):
    """conv{index} -> [norm{index}] -> act: every convolution of the AlexNet family."""
    x = conv(features, kernel, stride, name=f"conv{index}", **options)(x)
    if norm is not None:
        x = norm(name=f"norm{index}")(x)
    return act(x)


class AlexNet(nn.Module):
    """The 2012 network on 227x227 inputs (the paper's "224" does not fit 11x11/4 convs).

    conv1 96x11x11/4 -> ReLU -> LRN -> 3x3/2 max pool (overlapping) -> conv2 256x5x5 -> LRN
    -> pool -> conv3 384x3x3 -> conv4 384 -> conv5 256 -> pool -> FC6 4096 -> FC7 4096 -> FC8,
    with dropout 0.5 on FC6 and FC7 and LRN k=2, n=5, alpha=1e-4, beta=0.75.

    ``groups=2`` reproduces the two-GPU split: conv2, conv4 and conv5 see only the half of
    the previous layer's channels that lived on their GPU (60,965,224 parameters vs
    62,378,344 ungrouped).

    Features: 'conv1'...'conv5' (after pooling where there is one), 'pre_logits'.
    """

    num_classes: int = 1000
    widths: Sequence[int] = (96, 256, 384, 384, 256)
    groups: int = 1
    lrn: bool = True
    classifier_width: int = 4096
    dropout: float = 0.5
    norm: ModuleDef | None = None  # none in 2012; 'batch', 'group', 'layer' or a module after every conv
    classifier_norm: bool = False  # also normalise FC6 and FC7 with `norm` (BN-Inception's every layer)
    act: Activation = relu
    dtype: Any = jnp.float32
    axis_name: str | None = None  # sync BatchNorm over this device axis (set by the training system)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, return_features: bool = False):
        norm = norm_factory(self.norm, train=train, dtype=self.dtype, axis_name=self.axis_name)
        classifier_norm = _classifier_norm(self.classifier_norm, norm)
        unit = partial(_unit, conv=partial(Conv, dtype=self.dtype), act=self.act, norm=norm)
        w1, w2, w3, w4, w5 = self.widths
        features: dict[str, jnp.ndarray] = {}

        def norm_pool(x, i):
            if self.lrn:
                x = LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0, name=f"lrn{i}")(x)
            return MaxPool(3, 2, name=f"pool{i}")(x)

        x = norm_pool(unit(x, w1, 11, 4, index=1), 1)
        features["conv1"] = x
        x = norm_pool(unit(x, w2, 5, 1, index=2, padding=2, groups=self.groups), 2)
        features["conv2"] = x
        x = unit(x, w3, 3, 1, index=3, padding=1)
        features["conv3"] = x
        x = unit(x, w4, 3, 1, index=4, padding=1, groups=self.groups)
        features["conv4"] = x
        x = unit(x, w5, 3, 1, index=5, padding=1, groups=self.groups)
        x = MaxPool(3, 2, name="pool5")(x)
        features["conv5"] = x
        logits = _classifier(
            x,
            width=self.classifier_width,
            num_classes=self.num_classes,
            dropout=self.dropout,
            dropout_first=False,
            act=self.act,
            train=train,
            dtype=self.dtype,
            features=features,
            norm=classifier_norm,
        )
        return classifier_output(logits, features, return_features)


class AlexNetTorchvision(nn.Module):
    """torchvision's AlexNet: 64-192-384-256-256 channels, no LRN, adaptive 6x6 pooling.

    Its conv1 (11x11/4, pad 2) on 224 relies on PyTorch dropping the remainder:
    (224 - 11 + 4)/4 + 1 = 55.25 -> 55, declared here with fit='floor'.
    Features: 'conv1'...'conv5', 'pre_logits'.
    """

    num_classes: int = 1000
    dropout: float = 0.5
    norm: ModuleDef | None = None  # torchvision's has none; 'batch', 'group', 'layer' or a module after every conv
    act: Activation = relu
    dtype: Any = jnp.float32
    axis_name: str | None = None  # sync BatchNorm over this device axis (set by the training system)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, return_features: bool = False):
        unit = partial(_unit, conv=partial(Conv, dtype=self.dtype), act=self.act,
                       norm=norm_factory(self.norm, train=train, dtype=self.dtype, axis_name=self.axis_name))
        features: dict[str, jnp.ndarray] = {}
        x = MaxPool(3, 2, name="pool1")(unit(x, 64, 11, 4, index=1, padding=2, fit="floor"))
        features["conv1"] = x
        x = MaxPool(3, 2, name="pool2")(unit(x, 192, 5, 1, index=2, padding=2))
        features["conv2"] = x
        x = unit(x, 384, 3, 1, index=3, padding=1)
        features["conv3"] = x
        x = unit(x, 256, 3, 1, index=4, padding=1)
        features["conv4"] = x
        x = unit(x, 256, 3, 1, index=5, padding=1)
        x = AdaptiveAvgPool(6, name="adaptive_pool")(MaxPool(3, 2, name="pool5")(x))
        features["conv5"] = x
        logits = _classifier(
            x,
            width=4096,
            num_classes=self.num_classes,
            dropout=self.dropout,
            dropout_first=True,
            act=self.act,
            train=train,
            dtype=self.dtype,
            features=features,
        )
        return classifier_output(logits, features, return_features)


class ZFNet(nn.Module):
    """ZFNet: AlexNet with conv1 7x7/2 and conv2 5x5/2, on 224x224 inputs.

    The paper's sizes (224 -> 110 -> 55 -> 26 -> 13 -> 6) come from Caffe's rounding: conv1
    (pad 1) drops its remainder (fit='floor') and the 3x3/2 max pools round up (fit='ceil').
    ``widths=(96, 256, 512, 1024, 512)`` is the lecture's variant of conv3-5.
    Features: 'conv1'...'conv5', 'pre_logits'.
    """

    num_classes: int = 1000
    widths: Sequence[int] = (96, 256, 384, 384, 256)
    lrn: bool = True
    classifier_width: int = 4096
    dropout: float = 0.5
    norm: ModuleDef | None = None  # none in 2013; 'batch', 'group', 'layer' or a module after every conv
    classifier_norm: bool = False  # also normalise FC6 and FC7 with `norm` (BN-Inception's every layer)
    act: Activation = relu
    dtype: Any = jnp.float32
    axis_name: str | None = None  # sync BatchNorm over this device axis (set by the training system)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, return_features: bool = False):
        norm = norm_factory(self.norm, train=train, dtype=self.dtype, axis_name=self.axis_name)
        classifier_norm = _classifier_norm(self.classifier_norm, norm)
        unit = partial(_unit, conv=partial(Conv, dtype=self.dtype), act=self.act, norm=norm)
        w1, w2, w3, w4, w5 = self.widths
        features: dict[str, jnp.ndarray] = {}

        def pool_norm(x, i):
            x = MaxPool(3, 2, fit="ceil", name=f"pool{i}")(x)
            if self.lrn:
                x = LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0, name=f"lrn{i}")(x)
            return x

        x = pool_norm(unit(x, w1, 7, 2, index=1, padding=1, fit="floor"), 1)
        features["conv1"] = x
        x = pool_norm(unit(x, w2, 5, 2, index=2), 2)
        features["conv2"] = x
        x = unit(x, w3, 3, 1, index=3, padding=1)
        features["conv3"] = x
        x = unit(x, w4, 3, 1, index=4, padding=1)
        features["conv4"] = x
        x = unit(x, w5, 3, 1, index=5, padding=1)
        x = MaxPool(3, 2, name="pool5")(x)
        features["conv5"] = x
        logits = _classifier(
            x,
            width=self.classifier_width,
            num_classes=self.num_classes,
            dropout=self.dropout,
            dropout_first=False,
            act=self.act,
            train=train,
            dtype=self.dtype,
            features=features,
            norm=classifier_norm,
        )
        return classifier_output(logits, features, return_features)


def torchvision_prefix(module: tuple[str, ...], params) -> str:
    """jaxconv module path -> torchvision's AlexNet module: ('conv2',) -> 'features.3'."""
    names = {
        "conv1": "features.0",
        "conv2": "features.3",
        "conv3": "features.6",
        "conv4": "features.8",
        "conv5": "features.10",
        "fc6": "classifier.1",
        "fc7": "classifier.4",
        "head": "classifier.6",
    }
    return names[module[0]]


register(
    "alexnet",
    AlexNet,
    image_size=227,
    family="alexnet",
    description="AlexNet 2012 (LRN, overlapping pooling; groups=2 for the two-GPU split)",
    # Only the competition figure was published for this exact network.
    published=Published(62_378_344, count_source=PAPER_COUNT + " (ungrouped)", ilsvrc_entry="AlexNet, ILSVRC 2012",
                        ilsvrc_top5_error=16.4),
)
register(
    "alexnet_tv",
    AlexNetTorchvision,
    image_size=224,
    family="alexnet",
    description="torchvision's AlexNet (64-192-384-256-256, no LRN)",
    published=torchvision_figures(61_100_840, 0.714),
    weights=[torchvision_weights("IMAGENET1K_V1", "alexnet-owt-7be5be79.pth", 56.522, 79.066)],
    # 95 px: AlexNet ends on a 2x2 map, so its adaptive pool and flatten order see distinct values.
    torchvision=TorchvisionKeys(torchvision_prefix, flattened_input="fc6", builder="alexnet", parity_size=95),
)
register(
    "zfnet",
    ZFNet,
    image_size=224,
    family="alexnet",
    description="ZFNet 2013 (7x7/2 conv1; widths=(96, 256, 512, 1024, 512) for the lecture's variant)",
    published=Published(62_357_608, count_source=PAPER_COUNT, ilsvrc_entry="ZFNet, ILSVRC 2013",
                        ilsvrc_top5_error=11.7),
)
