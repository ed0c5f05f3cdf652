"""DenseNet-BC (Huang et al. 2017): every layer of a block sees the concatenation of all maps before it.

A dense layer is pre-activation: norm -> ReLU -> 1x1 conv to ``bn_size`` x growth channels (the
bottleneck) -> norm -> ReLU -> 3x3 conv to ``growth`` channels, whose output is concatenated to its
input; a block of L layers so adds L x growth channels. Between blocks a transition (norm -> ReLU
-> 1x1 conv halving the channels -> 2x2/2 average pool) compresses and downsamples. ResNet's stem
(7x7/2 conv, norm, ReLU, 3x3/2 max pool); after the last block a norm and ReLU, global average pool
and a linear classifier. Built as torchvision builds it (BatchNorm eps 1e-5, PyTorch momentum 0.1).

Stages by resolution: stage 1 is the first dense block, stages 2-4 open with the transition before
their block, so 'stage1'...'stage4' are at strides 4, 8, 16, 32. Concatenation grows the map one
layer at a time (XLA frees what it no longer needs; torchvision's memory_efficient checkpointing is
not reproduced).

Features: 'stem', 'stage1'...'stage4', 'pre_logits' (pooled: the classifier's input).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxconv.archs.common import ImageNetStem, classifier_output
from jaxconv.blocks.base import Block, ModuleDef
from jaxconv.declarations import TorchvisionKeys, torchvision_figures, torchvision_weights
from jaxconv.layers import AvgPool, BatchNorm, Conv, Dropout, GlobalAvgPool, relu
from jaxconv.layers.norm import norm_factory
from jaxconv.registry import register

# torchvision initialises convolutions by kaiming_normal_ (fan in, gain sqrt 2, not truncated) and linear biases
# to 0; its linear weights keep PyTorch's default, uniform within 1/sqrt(fan in) (flax's lecun_uniform x 1/3 var).
CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
LINEAR_INIT = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


class DenseLayer(Block):
    """norm -> act -> 1x1 conv to ``bottleneck`` -> norm -> act -> 3x3 conv to ``features`` (the growth rate),
    concatenated after the input: the output has input + ``features`` channels. ``drop_rate`` drops the new
    channels only (torchvision's drop_rate, 0 in its models)."""

    bottleneck: int = 128
    drop_rate: float = 0.0

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        y = self.activate(self.normalize(x, "norm1", train))
        y = self.conv(self.bottleneck, 1, name="conv1")(y)
        y = self.activate(self.normalize(y, "norm2", train))
        y = self.conv(self.features, 3, padding=1, name="conv2")(y)
        y = Dropout(self.drop_rate, name="dropout")(y, deterministic=not train)
        return jnp.concatenate([x, y.astype(x.dtype)], axis=-1)


class Transition(Block):
    """norm -> act -> 1x1 conv to ``features`` -> 2x2/2 average pool (floor, as PyTorch's AvgPool2d)."""

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = self.activate(self.normalize(x, "norm", train))
        x = self.conv(self.features, 1, name="conv")(x)
        return AvgPool(2, 2, fit="floor", name="pool")(x)


class DenseStage(nn.Module):
    """One stage: a transition halving the channels (``transition``: stages 2-4), then ``depth`` dense layers."""

    depth: int
    growth: int
    bottleneck: int
    transition: bool
    conv: ModuleDef = Conv
    norm: ModuleDef | None = BatchNorm
    drop_rate: float = 0.0

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if self.transition:
            x = Transition(x.shape[-1] // 2, conv=self.conv, norm=self.norm, name="transition")(x, train)
        for i in range(self.depth):
            x = DenseLayer(self.growth, conv=self.conv, norm=self.norm, bottleneck=self.bottleneck,
                           drop_rate=self.drop_rate, name=f"block{i}")(x, train)
        return x


class DenseNet(nn.Module):
    """Stem (7x7/2 conv, norm, ReLU, 3x3/2 max pool) -> dense blocks with transitions between them -> norm -> ReLU
    -> pool -> linear.

    ``depths`` are the dense layers per block (DenseNet-121: (6, 12, 24, 16)), ``growth`` the channels each layer
    adds (k: 32; 48 for DenseNet-161), ``stem_width`` the stem's channels (2k: 64; 96), ``bn_size`` the bottleneck
    as a multiple of k (4). Transitions halve the channels (compression 0.5, the "-BC"). ``drop_rate`` is
    dropout on each layer's new channels. ``norm`` is BatchNorm with PyTorch's defaults, or any other norm or
    None (the convolutions then carry biases); ``axis_name`` synchronises BatchNorm statistics over a device axis.

    Features: 'stem', 'stage1'...'stage4', 'pre_logits' (pooled).
    """

    depths: Sequence[int] = (6, 12, 24, 16)
    growth: int = 32
    stem_width: int = 64
    bn_size: int = 4
    drop_rate: float = 0.0
    num_classes: int = 1000
    norm: ModuleDef | None = BatchNorm
    dtype: Any = jnp.float32
    axis_name: str | None = None  # sync BatchNorm over this device axis (set by the training system)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, return_features: bool = False):
        # torchvision's geometry: the stride-2 stem conv and max pool, and the 2x2/2 pools, round down.
        conv = partial(Conv, use_bias=self.norm is None, fit="floor", dtype=self.dtype, kernel_init=CONV_INIT)
        dense = partial(nn.Dense, dtype=self.dtype, kernel_init=LINEAR_INIT)
        norm = norm_factory(self.norm, train=train, dtype=self.dtype, axis_name=self.axis_name)
        features: dict[str, jnp.ndarray] = {}
        x = ImageNetStem(self.stem_width, conv=conv, norm=norm, act=relu, name="stem")(x, train)
        features["stem"] = x
        for index, depth in enumerate(self.depths, start=1):
            x = DenseStage(depth, self.growth, self.bn_size * self.growth, transition=index > 1, conv=conv, norm=norm,
                           drop_rate=self.drop_rate, name=f"stage{index}")(x, train)
            features[f"stage{index}"] = x
        if norm is not None:
            x = norm(name="head_norm")(x)
        x = GlobalAvgPool(name="pool")(relu(x))
        features["pre_logits"] = x
        logits = dense(self.num_classes, name="head")(x)
        return classifier_output(logits, features, return_features)


def torchvision_prefix(module: tuple[str, ...], params) -> str:
    """jaxconv module path -> the published file's key prefix.

    ('stage2', 'block0', 'norm1') -> 'features.denseblock2.denselayer1.norm.1';
    ('stage2', 'transition', 'conv') -> 'features.transition1.conv'.

    torchvision's `features` holds conv0, norm0, then denseblock1, transition1, ..., denseblock4 and norm5; a dense
    layer's modules are norm1, conv1, norm2, conv2, which its published files (ported from LuaTorch) call 'norm.1',
    'conv.1', 'norm.2', 'conv.2' (torchvision renames them on loading; see ``published_key``).
    """
    if module[0] == "stem":
        return {"conv": "features.conv0", "norm": "features.norm0"}[module[1]]
    if module[0] == "head_norm":
        return "features.norm5"
    if module[0] == "head":
        return "classifier"
    stage = int(module[0].removeprefix("stage"))
    if module[1] == "transition":
        return f"features.transition{stage - 1}.{module[2]}"
    layer = int(module[1].removeprefix("block")) + 1
    return f"features.denseblock{stage}.denselayer{layer}.{module[2][:-1]}.{module[2][-1]}"


# torchvision's _load_state_dict pattern, turned around: its current key -> the published file's.
_CURRENT = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def published_key(key: str) -> str:
    """torchvision's current key -> its published file's: '...denselayer1.norm1.weight' -> '...norm.1.weight'.

    Only the entries torchvision's loader renames (weight, bias, running_mean, running_var); a key already in the
    published form is returned unchanged, so state dicts of either form load. 'num_batches_tracked' keeps today's
    name: torchvision's loader does not rename it, and jaxconv ignores it.
    """
    return _CURRENT.sub(r"\1.\2", key)


# torchvision's weights metadata: growth rate, layers per block and stem width of its builder, num_params, _ops
# (GMACs at 224 px), and the IMAGENET1K_V1 file (ported from LuaTorch) with its _metrics (acc@1, acc@5), evaluated
# at the default resize 256 and 224 px centre crop.
VARIANTS = {
    121: (32, (6, 12, 24, 16), 64, 7_978_856, 2.834, "densenet121-a639ec97.pth", 74.434, 91.972),
    161: (48, (6, 12, 36, 24), 96, 28_681_000, 7.728, "densenet161-8d451a50.pth", 77.138, 93.560),
    169: (32, (6, 12, 32, 32), 64, 14_149_480, 3.36, "densenet169-b2777c0a.pth", 75.600, 92.806),
    201: (32, (6, 12, 48, 32), 64, 20_013_928, 4.291, "densenet201-c1103571.pth", 76.896, 93.370),
}

for _depth, (_growth, _depths, _stem, _params, _gmacs, _file, _top1, _top5) in VARIANTS.items():
    register(
        f"densenet{_depth}",
        partial(DenseNet, depths=_depths, growth=_growth, stem_width=_stem),
        image_size=224,
        family="densenet",
        description=f"DenseNet-{_depth} (dense blocks, growth {_growth}, bottleneck and compression; torchvision's)",
        published=torchvision_figures(_params, _gmacs),
        weights=[torchvision_weights("IMAGENET1K_V1", _file, _top1, _top5)],
        # Parity at 76 px: PyTorch's floor at the stem conv (38) and max pool (19) and at the 2x2/2 average pools
        # (9, 4, 2).
        torchvision=TorchvisionKeys(torchvision_prefix, published_key=published_key,
                                    parity_size=76 if _depth == 121 else None),
    )
