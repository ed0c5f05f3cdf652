"""ConvNeXt (Liu et al. 2022): a ResNet modernised step by step towards the vision Transformers.

A 4x4/4 "patchify" stem; four stages of CNBlocks, each a depthwise 7x7 convolution, a LayerNorm
over the channels, a 4x expanding linear layer, GELU and a linear layer back, scaled per channel
by a layer scale started at 1e-6 and added to the input, with stochastic depth; between stages a
LayerNorm and a 2x2/2 convolution; global average pool, LayerNorm, linear classifier. Every norm
is a LayerNorm (eps 1e-6), so there are no batch statistics and no sync BatchNorm: ``axis_name``
is used only with ``norm='batch'``. Built as torchvision builds it.

Features: 'stem', 'stage1'...'stage4', 'pre_logits' (pooled and normalised: the classifier's input).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxconv.archs.common import classifier_output
from jaxconv.blocks import ConvNormAct
from jaxconv.blocks.base import Activation, Block, ModuleDef
from jaxconv.declarations import TorchvisionKeys, torchvision_figures, torchvision_weights
from jaxconv.layers import Conv, DropPath, GlobalAvgPool, LayerNorm, LayerScale, gelu
from jaxconv.layers.norm import norm_factory
from jaxconv.registry import register
from jaxconv.stages import Stage, StageSpec

# torchvision initialises every convolution and linear layer by trunc_normal_(std=0.02); its cut at
# +-2 is absolute (100 standard deviations), so this is a normal distribution.
INIT = nn.initializers.normal(stddev=0.02)


class CNBlock(Block):
    """depthwise 7x7 conv -> norm -> linear to 4x -> act -> linear back -> layer scale -> drop path, + input.

    With ``stride`` > 1 or a change of width, the block first downsamples its input as ConvNeXt does
    between stages: norm -> ``stride`` x ``stride`` convolution of stride ``stride`` (submodule
    'downsample'), outside the residual branch. ``dense`` builds the linear layers (applied to
    every position of the (N, H, W, C) map).
    """

    act: Activation | None = gelu
    kernel_size: int = 7
    expansion: int = 4
    layer_scale: float = 1e-6
    drop_path: float = 0.0
    dense: ModuleDef = nn.Dense

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if self.stride != 1 or x.shape[-1] != self.features:
            x = self.normalize(x, "downsample_norm", train)
            x = self.conv(self.features, self.stride, self.stride, fit="floor", name="downsample")(x)
        y = self.conv(self.features, self.kernel_size, padding=self.kernel_size // 2, groups=self.features,
                      name="depthwise")(x)
        y = self.normalize(y, "norm", train)
        y = self.activate(self.dense(self.expansion * self.features, name="expand")(y))
        y = self.dense(self.features, name="project")(y)
        y = LayerScale(self.layer_scale, name="layer_scale")(y)
        y = DropPath(self.drop_path, name="drop_path")(y, deterministic=not train)
        return x + y


def drop_path_rates(depths: Sequence[int], rate: float) -> list[tuple[float, ...]]:
    """Per stage, each block's stochastic-depth rate: rate * i / (blocks - 1) over all blocks i.

    torchvision's ConvNeXt rule: the first block is never dropped, the last at ``rate``
    (EfficientNet's rule, ``jaxconv.stages.drop_path_schedule``, stops one block short of it).
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"drop_path_rate must be in [0, 1), got {rate}")
    total = sum(depths)
    rates = [rate * i / max(1, total - 1) for i in range(total)]
    starts = [sum(depths[:s]) for s in range(len(depths))]
    return [tuple(rates[start:start + depth]) for start, depth in zip(starts, depths)]


class ConvNeXt(nn.Module):
    """Stem 4x4/4 conv -> norm -> four stages of CNBlocks (norm + 2x2/2 conv before stages 2-4) -> pool ->
    norm -> linear.

    ``depths`` and ``widths`` are the blocks and channels per stage (ConvNeXt-T: (3, 3, 9, 3),
    (96, 192, 384, 768)). Stochastic depth rises linearly from 0 at the first block to
    ``drop_path_rate`` at the last. ``norm`` is a LayerNorm over the channels with eps 1e-6,
    or 'batch', 'group', 'layer' (eps 1e-5) or a module; ``axis_name`` synchronises BatchNorm
    statistics over a device axis and so matters only with ``norm='batch'``.

    Features: 'stem', 'stage1'...'stage4', 'pre_logits' (pooled and normalised).
    """

    depths: Sequence[int] = (3, 3, 9, 3)
    widths: Sequence[int] = (96, 192, 384, 768)
    num_classes: int = 1000
    drop_path_rate: float = 0.1
    layer_scale: float = 1e-6
    kernel_size: int = 7  # of the depthwise convolutions (the paper's section 2.5 compares 3 to 11)
    norm: ModuleDef | None = partial(LayerNorm, epsilon=1e-6)
    act: Activation = gelu
    dtype: Any = jnp.float32
    axis_name: str | None = None  # sync BatchNorm over this device axis: only with norm='batch'

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, return_features: bool = False):
        if len(self.depths) != len(self.widths):
            raise ValueError(f"depths {tuple(self.depths)} and widths {tuple(self.widths)} must have one entry per "
                             f"stage")
        if isinstance(self.kernel_size, bool) or not isinstance(self.kernel_size, int) or self.kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be an odd positive int (the map keeps its size), got {self.kernel_size!r}")
        conv = partial(Conv, dtype=self.dtype, kernel_init=INIT)
        dense = partial(nn.Dense, dtype=self.dtype, kernel_init=INIT)
        norm = norm_factory(self.norm, train=train, dtype=self.dtype, axis_name=self.axis_name)
        features: dict[str, jnp.ndarray] = {}
        x = ConvNormAct(self.widths[0], 4, conv=partial(conv, fit="floor"), norm=norm, act=None, kernel_size=4,
                        padding=0, name="stem")(x, train)
        features["stem"] = x
        block = partial(CNBlock, kernel_size=self.kernel_size, layer_scale=self.layer_scale, dense=dense)
        rates = drop_path_rates(self.depths, self.drop_path_rate)
        for index, (depth, width, drop_path) in enumerate(zip(self.depths, self.widths, rates), start=1):
            spec = StageSpec(block, depth=depth, width=width, stride=1 if index == 1 else 2)
            x = Stage(spec, conv=conv, norm=norm, act=self.act, drop_path=drop_path, name=f"stage{index}")(x, train)
            features[f"stage{index}"] = x
        x = GlobalAvgPool(name="pool")(x)
        if norm is not None:
            x = norm(name="head_norm")(x)
        features["pre_logits"] = x
        logits = dense(self.num_classes, name="head")(x)
        return classifier_output(logits, features, return_features)


STEM_LAYERS = {"conv": 0, "norm": 1}
DOWNSAMPLE_LAYERS = {"downsample_norm": 0, "downsample": 1}
BLOCK_LAYERS = {"depthwise": 0, "norm": 2, "expand": 3, "project": 5}


def torchvision_prefix(module: tuple[str, ...], params) -> str:
    """jaxconv module path -> torchvision's: ('stage2', 'block0', 'expand') -> 'features.3.0.block.3'.

    torchvision's `features` is one Sequential: the stem, then stage 1, and for each later stage its
    downsampling (norm, conv) followed by its blocks; a block's Sequential holds the depthwise conv (0),
    a permutation, the norm (2), the linear layers (3, 5) around GELU (4), a permutation back.
    """
    if module[0] == "stem":
        return f"features.0.{STEM_LAYERS[module[1]]}"
    if module[0] == "head_norm":
        return "classifier.0"
    if module[0] == "head":
        return "classifier.2"
    stage, block = int(module[0].removeprefix("stage")), int(module[1].removeprefix("block"))
    index = 2 * stage - 1  # stem, stage 1, downsampling 2, stage 2, ...
    if len(module) == 2:  # the block itself: its layer scale
        return f"features.{index}.{block}"
    if module[2] in DOWNSAMPLE_LAYERS:
        return f"features.{index - 1}.{DOWNSAMPLE_LAYERS[module[2]]}"
    return f"features.{index}.{block}.block.{BLOCK_LAYERS[module[2]]}"


# torchvision's weights metadata: blocks and widths per stage, stochastic depth of its training recipe,
# num_params, _ops (GMACs at 224 px), and the IMAGENET1K_V1 file with its _metrics (acc@1, acc@5) and the
# shorter side it resizes to before the 224 px centre crop (bilinear).
VARIANTS = {
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768), 0.1, 28_589_128, 4.456,
             "convnext_tiny-983f1562.pth", 82.520, 96.146, 236),
    "small": ((3, 3, 27, 3), (96, 192, 384, 768), 0.4, 50_223_688, 8.684,
              "convnext_small-0c510722.pth", 83.616, 96.650, 230),
    "base": ((3, 3, 27, 3), (128, 256, 512, 1024), 0.5, 88_591_464, 15.355,
             "convnext_base-6075fbad.pth", 84.062, 96.870, 232),
    "large": ((3, 3, 27, 3), (192, 384, 768, 1536), 0.5, 197_767_336, 34.361,
              "convnext_large-ea097f82.pth", 84.414, 96.976, 232),
}

for _variant, (_depths, _widths, _drop_path, _params, _gmacs, _file, _top1, _top5, _resize) in VARIANTS.items():
    register(
        f"convnext_{_variant}",
        partial(ConvNeXt, depths=_depths, widths=_widths, drop_path_rate=_drop_path),
        image_size=224,
        family="convnext",
        description=f"ConvNeXt-{_variant[0].upper()} (depthwise 7x7, LayerNorm, GELU, layer scale; torchvision's)",
        published=torchvision_figures(_params, _gmacs),
        weights=[torchvision_weights("IMAGENET1K_V1", _file, _top1, _top5, resize=_resize)],
        # Parity at 63 px: PyTorch's floor at the stem (63 / 4) and at every 2x2/2 downsampling (15, 7, 3).
        torchvision=TorchvisionKeys(torchvision_prefix, channel_parameters=("layer_scale",),
                                    parity_size=63 if _variant == "tiny" else None),
    )
