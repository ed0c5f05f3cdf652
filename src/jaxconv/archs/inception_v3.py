"""Inception v3 (Szegedy et al. 2016, "Rethinking the Inception Architecture"), as torchvision builds it.

A stem of plain convolutions and two max pools (299 -> 35: 3x3/2, 3x3, 3x3 padded, 3x3/2 pool, 1x1, 3x3,
3x3/2 pool), then Inception modules (``jaxconv.blocks.InceptionA``...``E``) in three grids: three 35x35
modules (Mixed_5b-d), a grid reduction to 17x17 and four modules with factorised 7x7 convolutions
(Mixed_6a-e), a reduction to 8x8 and two modules with expanded outputs (Mixed_7a-c); global average pool,
dropout 0.5 and the classifier. Every convolution is bias-free and followed by BatchNorm (eps 1e-3) and
ReLU (torchvision's BasicConv2d). Unpadded strided convolutions and pools round down, so the network takes
75 px and up (torchvision's min_size).

The auxiliary classifier (``aux_logits``, on by default as in torchvision) reads the 17x17 grid: 5x5/3
average pool, 1x1 conv 128, 5x5 conv 768, global average pool, linear. As in torchvision it runs in training
only: with ``train=True`` its logits are sown into the 'aux_logits' collection as 'aux_logits' (torchvision
returns them as InceptionOutputs.aux_logits), and the training system adds ``aux_loss_weight`` (0.3 by
default) times their cross-entropy to the loss, as for GoogLeNet's heads. In evaluation it costs nothing and
the model returns the logits alone. Its parameters are part of the model either way (torchvision's count,
27,161,264, and its published file include them); ``aux_logits=False`` drops them, and the published file's
AuxLogits entries are then ignored on loading.

``transform_input=True`` re-normalises ImageNet-normalised images to (x - 0.5) / 0.5 per channel, which the
published weights (ported from TensorFlow) expect; loading them turns it on, as torchvision does.

Features: 'stem' (35x35 at 299 px), 'stage5', 'stage6', 'stage7' (the outputs of Mixed_5d, 6e, 7c: 35, 17
and 8 px), 'pre_logits' (pooled).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxconv.archs.common import classifier_output, transform_input
from jaxconv.blocks import ConvNormAct, InceptionA, InceptionB, InceptionC, InceptionD, InceptionE
from jaxconv.blocks.base import Activation, ModuleDef
from jaxconv.declarations import TorchvisionKeys, torchvision_figures, torchvision_weights
from jaxconv.layers import AvgPool, BatchNorm, Conv, Dropout, GeometryError, GlobalAvgPool, MaxPool, relu
from jaxconv.layers.norm import norm_factory
from jaxconv.registry import register

# torchvision's modules in order: (name, block, branch widths). The name's digit is the grid (5: 35x35, 6: 17x17,
# 7: 8x8) and its stage; each later grid opens with its reduction (6a, 7a).
MIXED = (
    ("5b", InceptionA, (64, 48, 64, 64, 96, 32)),
    ("5c", InceptionA, (64, 48, 64, 64, 96, 64)),
    ("5d", InceptionA, (64, 48, 64, 64, 96, 64)),
    ("6a", InceptionB, (384, 64, 96)),
    ("6b", InceptionC, (192, 128, 192, 128, 192, 192)),
    ("6c", InceptionC, (192, 160, 192, 160, 192, 192)),
    ("6d", InceptionC, (192, 160, 192, 160, 192, 192)),
    ("6e", InceptionC, (192, 192, 192, 192, 192, 192)),
    ("7a", InceptionD, (192, 320, 192, 192)),
    ("7b", InceptionE, (320, 384, 384, 448, 384, 192)),
    ("7c", InceptionE, (320, 384, 384, 448, 384, 192)),
)
# The stem's convolutions: jaxconv's names and torchvision's.
STEM_KEYS = {"conv1a": "Conv2d_1a_3x3", "conv2a": "Conv2d_2a_3x3", "conv2b": "Conv2d_2b_3x3",
             "conv3b": "Conv2d_3b_1x1", "conv4a": "Conv2d_4a_3x3"}

# torchvision initialises every convolution and linear layer from N(0, 0.1) (truncated at +-2: 20 sigma, so
# untruncated in effect), the auxiliary head's 5x5 conv from N(0, 0.01) and its linear layer from N(0, 0.001);
# linear biases keep PyTorch's default (uniform within 1/sqrt(fan in)), here zero.
INIT = nn.initializers.normal(0.1)
AUX_CONV_INIT = nn.initializers.normal(0.01)
AUX_LINEAR_INIT = nn.initializers.normal(0.001)


class InceptionAux(nn.Module):
    """The auxiliary classifier: 5x5/3 average pool -> 1x1 conv ``widths[0]`` -> 5x5 conv ``widths[1]`` (unpadded)
    -> global average pool -> linear. (N, 17, 17, C) -> (N, num_classes); it takes maps of 17 px and up."""

    num_classes: int
    widths: tuple[int, int] = (128, 768)
    conv: ModuleDef = Conv
    norm: ModuleDef | None = None
    act: Activation = relu
    dtype: Any = jnp.float32

    smallest_input = 17  # pooled to 5x5, which the 5x5 convolution reduces to 1x1

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        unit = partial(ConvNormAct, norm=self.norm, act=self.act)
        x = AvgPool(5, 3, fit="floor", name="pool")(x)
        x = unit(self.widths[0], conv=self.conv, kernel_size=1, name="conv0")(x, train)
        x = unit(self.widths[1], conv=partial(self.conv, kernel_init=AUX_CONV_INIT), kernel_size=5, padding=0,
                 name="conv1")(x, train)
        x = GlobalAvgPool(name="global_pool")(x)
        return nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=AUX_LINEAR_INIT, name="fc")(x)


class Inception3(nn.Module):
    """Stem (five conv-norm-ReLU units, two 3x3/2 max pools) -> Inception modules (``blocks``) -> global average
    pool -> dropout -> linear; with ``aux_logits`` the auxiliary classifier on the last-but-one stage.

    ``blocks`` lists (name, block class, branch widths) in order (``MIXED``: torchvision's); a name's first
    character is its stage. ``stem_widths`` are the stem convolutions' channels, ``aux_widths`` those of the
    auxiliary head's two convolutions. ``transform_input`` re-normalises ImageNet-normalised inputs to
    (x - 0.5) / 0.5 (the published weights'). ``norm`` is BatchNorm with eps 1e-3, or any other norm or None
    (the convolutions then carry biases); ``axis_name`` synchronises BatchNorm statistics over a device axis.

    Features: 'stem', 'stage5', 'stage6', 'stage7' (a stage per grid), 'pre_logits' (pooled).
    """

    blocks: Sequence[tuple[str, ModuleDef, tuple[int, ...]]] = MIXED
    stem_widths: Sequence[int] = (32, 32, 64, 80, 192)
    aux_logits: bool = True
    aux_widths: tuple[int, int] = (128, 768)
    transform_input: bool = False
    dropout: float = 0.5
    num_classes: int = 1000
    norm: ModuleDef | None = partial(BatchNorm, epsilon=1e-3)
    dtype: Any = jnp.float32
    axis_name: str | None = None  # sync BatchNorm over this device axis (set by the training system)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, return_features: bool = False):
        conv = partial(Conv, use_bias=self.norm is None, fit="floor", dtype=self.dtype, kernel_init=INIT)
        norm = norm_factory(self.norm, train=train, dtype=self.dtype, axis_name=self.axis_name)
        unit = partial(ConvNormAct, conv=conv, norm=norm, act=relu)
        features: dict[str, jnp.ndarray] = {}
        height, width = x.shape[1:3]
        if self.transform_input:
            x = transform_input(x)
        conv1a, conv2a, conv2b, conv3b, conv4a = self.stem_widths
        x = unit(conv1a, 2, kernel_size=3, padding=0, name="conv1a")(x, train)
        x = unit(conv2a, kernel_size=3, padding=0, name="conv2a")(x, train)
        x = unit(conv2b, kernel_size=3, padding=1, name="conv2b")(x, train)
        x = MaxPool(3, 2, fit="floor", name="pool1")(x)
        x = unit(conv3b, kernel_size=1, name="conv3b")(x, train)
        x = unit(conv4a, kernel_size=3, padding=0, name="conv4a")(x, train)
        x = MaxPool(3, 2, fit="floor", name="pool2")(x)
        features["stem"] = x

        for name, block, widths in self.blocks:
            x = block(widths, conv=conv, norm=norm, act=relu, name=f"mixed{name}")(x, train)
            features[f"stage{name[0]}"] = x

        if self.aux_logits and (train or self.is_initializing()):
            stages = [key for key in features if key.startswith("stage")]
            if len(stages) < 2:
                raise ValueError(f"the auxiliary head reads the last-but-one stage, and blocks {self.blocks!r} make "
                                 f"only {len(stages)}: give blocks of two stages or more, or aux_logits=False")
            tap = features[stages[-2]]
            side = InceptionAux.smallest_input
            if train and min(tap.shape[1:3]) < side:
                raise GeometryError(
                    f"the auxiliary head needs a map of at least {side}x{side} ({stages[-2]} is {tap.shape[1]}x"
                    f"{tap.shape[2]} for {height}x{width} images): train at 299 px and up (torchvision's head has "
                    f"the same limit) or with aux_logits=False")
            if not train:
                # Initialising for evaluation, where the head never runs: build it on a zero map of the size it
                # takes, outside the image's graph, so that the model has the parameters torchvision's files
                # carry at any input size the rest takes (the analysis counts no MACs for it).
                tap = jnp.zeros((tap.shape[0], side, side, tap.shape[-1]), tap.dtype)
            aux = InceptionAux(self.num_classes, self.aux_widths, conv=conv, norm=norm, dtype=self.dtype,
                               name="aux")(tap, train)
            if train:
                self.sow("aux_logits", "aux_logits", aux)

        x = GlobalAvgPool(name="pool")(x)
        features["pre_logits"] = x
        x = Dropout(self.dropout, name="dropout")(x, deterministic=not train)
        logits = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=INIT, name="head")(x)
        return classifier_output(logits, features, return_features)


def torchvision_prefix(module: tuple[str, ...], params) -> str:
    """jaxconv module path -> torchvision's: ('mixed6b', 'branch7x7_2', 'norm') -> 'Mixed_6b.branch7x7_2.bn',
    ('conv1a', 'conv') -> 'Conv2d_1a_3x3.conv', ('aux', 'conv1', 'conv') -> 'AuxLogits.conv1.conv'."""
    layer = {"conv": "conv", "norm": "bn"}
    if module[0] == "head":
        return "fc"
    if module[0] == "aux":
        return "AuxLogits.fc" if module[1] == "fc" else f"AuxLogits.{module[1]}.{layer[module[2]]}"
    if module[0] in STEM_KEYS:
        return f"{STEM_KEYS[module[0]]}.{layer[module[1]]}"
    return f"Mixed_{module[0].removeprefix('mixed')}.{module[1]}.{layer[module[2]]}"


# torchvision's weights metadata: num_params (with the auxiliary head), _ops (GMACs at 299 px, evaluation: no
# auxiliary head), and the IMAGENET1K_V1 file (ported from TensorFlow) with its _metrics, evaluated at resize 342
# and a 299 px centre crop (bilinear).
register(
    "inception_v3",
    Inception3,
    image_size=299,
    family="inception_v3",
    description="Inception v3 (factorised Inception modules, auxiliary head; torchvision's)",
    published=torchvision_figures(27_161_264, 5.713, image_size=299),
    weights=[torchvision_weights(
        "IMAGENET1K_V1", "inception_v3_google-0cc3c7bd.pth", 77.294, 93.450, resize=342, crop=299,
        note="trained on (x - 0.5) / 0.5 inputs: loaded with transform_input=True, so it takes ImageNet-normalized "
             "images like the others; the file's auxiliary head loads with aux_logits=True (the default) and is "
             "ignored with aux_logits=False")],
    # torchvision loads these weights with transform_input=True and keeps the auxiliary head (AuxLogits.*), which
    # aux_logits=False models ignore. Parity at 117 px: PyTorch's floor at the first max pool (56 -> 27) and at the
    # 35 -> 17 grid reduction's unpadded stride-2 convolutions and pool (12 -> 5); the last grid is 2x2.
    torchvision=TorchvisionKeys(torchvision_prefix, ignored=("AuxLogits.*",), load_options={"transform_input": True},
                                builder_options={"aux_logits": True, "transform_input": True, "init_weights": False},
                                parity_size=117),
)
