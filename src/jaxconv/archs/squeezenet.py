"""SqueezeNet (Iandola et al. 2016): Fire modules (1x1 squeeze, then 1x1 and 3x3 expand), no FC layer.

AlexNet-level accuracy with 50x fewer parameters: a 1x1 "squeeze" convolution narrows each
module's input before its parallel 1x1 and 3x3 "expand" convolutions, and a 1x1 convolution to
the classes, averaged over the map, replaces the fully connected layers. Version 1.1 (the
SqueezeNet repository's) starts with a 3x3/2 convolution of 64 channels and pools earlier:
2.4x fewer MACs than 1.0 at the same accuracy. Built as torchvision builds them.

Features: 'conv1', 'stage1'...'stage3' (after each pool's Fire modules), 'pre_logits' (the
head convolution's input, pooled).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxconv.archs.common import classifier_output
from jaxconv.blocks.base import Activation, ModuleDef
from jaxconv.declarations import TorchvisionKeys, torchvision_figures, torchvision_weights
from jaxconv.layers import Conv, Dropout, GlobalAvgPool, MaxPool, relu
from jaxconv.layers.norm import norm_factory
from jaxconv.registry import register

# (squeeze, expand) channels of the eight Fire modules; each expand is doubled by the concatenation.
FIRES = ((16, 64), (16, 64), (32, 128), (32, 128), (48, 192), (48, 192), (64, 256), (64, 256))


class Fire(nn.Module):
    """1x1 squeeze -> act -> [1x1 expand, 3x3 expand] -> act, concatenated: 2 x ``expand`` channels."""

    squeeze: int
    expand: int
    conv: ModuleDef = Conv
    norm: ModuleDef | None = None
    act: Activation = relu

    def unit(self, x: jnp.ndarray, features: int, kernel: int, name: str) -> jnp.ndarray:
        x = self.conv(features, kernel, padding=kernel // 2, name=name)(x)
        return self.act(x if self.norm is None else self.norm(name=f"{name}_norm")(x))

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = self.unit(x, self.squeeze, 1, "squeeze")
        return jnp.concatenate([self.unit(x, self.expand, 1, "expand1x1"),
                                self.unit(x, self.expand, 3, "expand3x3")], axis=-1)


class SqueezeNet(nn.Module):
    """conv1 -> [pool -> Fire modules] x 3 -> dropout -> 1x1 conv to the classes -> act -> global average.

    ``stem`` is (channels, kernel) of conv1 (stride 2): (96, 7) for 1.0, (64, 3) for 1.1;
    ``fires_per_stage`` how many of the eight Fire modules follow each of the three 3x3/2 max
    pools (PyTorch's ceil mode): (3, 4, 1) for 1.0, (2, 2, 4) for 1.1.
    """

    stem: tuple[int, int] = (64, 3)
    fires_per_stage: Sequence[int] = (2, 2, 4)
    num_classes: int = 1000
    dropout: float = 0.5
    norm: ModuleDef | None = None  # none as published; 'batch', 'group', 'layer' or a module after every conv
    act: Activation = relu
    dtype: Any = jnp.float32
    axis_name: str | None = None  # sync BatchNorm over this device axis (set by the training system)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, return_features: bool = False):
        if sum(self.fires_per_stage) != len(FIRES) or len(self.fires_per_stage) != 3:
            raise ValueError(f"fires_per_stage must split the {len(FIRES)} Fire modules over 3 stages, "
                             f"got {tuple(self.fires_per_stage)}")
        conv = partial(Conv, dtype=self.dtype)
        norm = norm_factory(self.norm, train=train, dtype=self.dtype, axis_name=self.axis_name)
        features: dict[str, jnp.ndarray] = {}
        width, kernel = self.stem
        x = conv(width, kernel, 2, fit="floor", name="conv1")(x)
        x = self.act(x if norm is None else norm(name="conv1_norm")(x))
        features["conv1"] = x
        fires = iter(FIRES)
        for stage, count in enumerate(self.fires_per_stage, start=1):
            x = MaxPool(3, 2, fit="ceil", name=f"pool{stage}")(x)
            for index in range(count):
                squeeze, expand = next(fires)
                x = Fire(squeeze, expand, conv=conv, norm=norm, act=self.act, name=f"stage{stage}_fire{index}")(x)
            features[f"stage{stage}"] = x
        features["pre_logits"] = x.mean(axis=(1, 2))
        x = Dropout(self.dropout, name="dropout")(x, deterministic=not train)
        # torchvision's normal(0, 0.01) for the classifier convolution: He's init there (std sqrt(2 / classes))
        # started a 10-class network at a cross-entropy of 10.9, ln 10 being 2.3
        x = self.act(conv(self.num_classes, 1, kernel_init=nn.initializers.normal(0.01), name="head")(x))
        return classifier_output(GlobalAvgPool(name="pool")(x), features, return_features)


def torchvision_prefix(module: tuple[str, ...], params) -> str:
    """jaxconv module path -> torchvision's: ('stage2_fire0', 'squeeze') -> 'features.6.squeeze' (1.1)."""
    if module[0] == "conv1":
        return "features.0"
    if module[0] == "head":
        return "classifier.1"
    # torchvision's `features` is one Sequential: conv, ReLU, then per stage a max pool and its Fire modules.
    stage, index = (int(part) for part in module[0].removeprefix("stage").split("_fire"))
    earlier = sum(1 + sum(1 for key in params if key.startswith(f"stage{s}_fire")) for s in range(1, stage))
    return f"features.{2 + earlier + 1 + index}.{module[1]}"


VERSIONS = {  # conv1 (channels, kernel), Fire modules per stage; torchvision's counts, GMACs and weights
    "1_0": ((96, 7), (3, 4, 1), 1_248_424, 0.819, "squeezenet1_0-b66bff10.pth", 58.092, 80.420),
    "1_1": ((64, 3), (2, 2, 4), 1_235_496, 0.349, "squeezenet1_1-b8a52dc0.pth", 58.178, 80.624),
}

for _version_name, (_stem, _stages, _params, _gmacs, _file, _top1, _top5) in VERSIONS.items():
    register(
        f"squeezenet{_version_name}",
        partial(SqueezeNet, stem=_stem, fires_per_stage=_stages),
        image_size=224,
        family="squeezenet",
        description=f"SqueezeNet {_version_name.replace('_', '.')} (Fire modules, no FC layer; torchvision's)",
        published=torchvision_figures(_params, _gmacs),
        weights=[torchvision_weights("IMAGENET1K_V1", _file, _top1, _top5)],
        # Parity at 67 px: odd sizes exercise PyTorch's floor (conv1) and ceil_mode (the pools).
        torchvision=TorchvisionKeys(torchvision_prefix, builder=f"squeezenet{_version_name}",
                                    parity_size=67 if _version_name == "1_1" else None),
    )
