"""MobileNetV3 (Howard et al. 2019): MobileNetV2's inverted residuals, searched per block, with hard swish.

Each block (``jaxconv.blocks.MobileNetV3Block``) has its own kernel size (3 or 5), expansion (a
channel count), activation (ReLU or hard swish) and optional squeeze-and-excitation with a
hard-sigmoid gate; the network found by the search is a table of such blocks. A 3x3/2 stem with
hard swish; after the blocks, a 1x1 convolution to 6x the last width, global average pool, a
linear layer (1280 large, 1024 small), hard swish, dropout and the classifier. BatchNorm eps 1e-3,
PyTorch momentum 0.01. Built as torchvision builds it (width 1.0 unless ``width`` says otherwise).

Blocks are grouped into stages by resolution: a stage opens at every stride-2 block, so the blocks
of a stage share an output size but not their settings (hence a stage here is a list of blocks,
not a ``StageSpec``).

Features: 'stem', 'stage1'...'stage5' (large) or 'stage4' (small), 'head' (the 1x1 conv's output),
'pre_logits' (the classifier's input: the hidden linear layer's output after hard swish).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxconv.archs.common import classifier_output
from jaxconv.blocks import ConvNormAct, MobileNetV3Block, make_divisible
from jaxconv.blocks.base import ModuleDef
from jaxconv.declarations import TorchvisionKeys, torchvision_figures, torchvision_weights
from jaxconv.layers import BatchNorm, Conv, Dropout, GlobalAvgPool, hard_swish, relu
from jaxconv.layers.norm import norm_factory
from jaxconv.registry import register

# torchvision's settings (the paper's Tables 1 and 2) per block: (kernel, expanded channels, output channels,
# squeeze-excite, activation: 'RE' ReLU or 'HS' hard swish, stride). Both start from a 16-channel stem.
LARGE = (
    (3, 16, 16, False, "RE", 1),
    (3, 64, 24, False, "RE", 2),
    (3, 72, 24, False, "RE", 1),
    (5, 72, 40, True, "RE", 2),
    (5, 120, 40, True, "RE", 1),
    (5, 120, 40, True, "RE", 1),
    (3, 240, 80, False, "HS", 2),
    (3, 200, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 480, 112, True, "HS", 1),
    (3, 672, 112, True, "HS", 1),
    (5, 672, 160, True, "HS", 2),
    (5, 960, 160, True, "HS", 1),
    (5, 960, 160, True, "HS", 1),
)
SMALL = (
    (3, 16, 16, True, "RE", 2),
    (3, 72, 24, False, "RE", 2),
    (3, 88, 24, False, "RE", 1),
    (5, 96, 40, True, "HS", 2),
    (5, 240, 40, True, "HS", 1),
    (5, 240, 40, True, "HS", 1),
    (5, 120, 48, True, "HS", 1),
    (5, 144, 48, True, "HS", 1),
    (5, 288, 96, True, "HS", 2),
    (5, 576, 96, True, "HS", 1),
    (5, 576, 96, True, "HS", 1),
)
ACTIVATIONS = {"RE": relu, "HS": hard_swish}
# torchvision initialises linear layers with N(0, 0.01) (convolutions with He fan-out, jaxconv's default).
LINEAR_INIT = nn.initializers.normal(stddev=0.01)

Row = tuple[int, int, int, bool, str, int]


def stages_by_resolution(blocks: Sequence[Row]) -> list[list[Row]]:
    """Splits the block table into stages: a new stage at each stride-2 block (and at the first block)."""
    stages: list[list[Row]] = []
    for row in blocks:
        if not stages or row[-1] != 1:
            stages.append([])
        stages[-1].append(row)
    return stages


class BlockList(nn.Module):
    """One stage: the given blocks (each a Block partial with its own settings) in order, named block0, block1, ..."""

    blocks: Sequence[ModuleDef]

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        for i, block in enumerate(self.blocks):
            x = block(name=f"block{i}")(x, train)
        return x


class MobileNetV3(nn.Module):
    """Stem 3x3/2 conv -> MobileNetV3 blocks -> 1x1 conv to 6x the last width -> pool -> linear -> hard swish ->
    dropout -> linear.

    ``blocks`` are (kernel, expanded channels, output channels, squeeze-excite, 'RE' or 'HS', stride) per block
    (torchvision's large table by default); ``hidden_width`` is the classifier's hidden layer (1280 large,
    1024 small). ``width`` multiplies every channel count (rounded to multiples of 8, as torchvision's
    width_mult). BatchNorm eps 1e-3 and PyTorch momentum 0.01 (0.99 here), as torchvision's.

    Features: 'stem', 'stage1'... (one per resolution), 'head' (the 1x1 conv's output), 'pre_logits'.
    """

    blocks: Sequence[Row] = LARGE
    hidden_width: int = 1280
    stem_width: int = 16
    width: float = 1.0
    num_classes: int = 1000
    dropout: float = 0.2
    norm: ModuleDef | None = partial(BatchNorm, epsilon=1e-3, momentum=0.99)
    dtype: Any = jnp.float32
    axis_name: str | None = None  # sync BatchNorm over this device axis (set by the training system)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, return_features: bool = False):
        # torchvision pads (k - 1)/2 symmetrically and drops the remainder at stride 2.
        conv = partial(Conv, use_bias=self.norm is None, fit="floor", dtype=self.dtype)
        dense = partial(nn.Dense, dtype=self.dtype, kernel_init=LINEAR_INIT)
        norm = norm_factory(self.norm, train=train, dtype=self.dtype, axis_name=self.axis_name)
        channels = partial(make_divisible, divisor=8)
        features: dict[str, jnp.ndarray] = {}
        x = ConvNormAct(channels(self.stem_width * self.width), 2, conv=conv, norm=norm, act=hard_swish,
                        kernel_size=3, name="stem")(x, train)
        features["stem"] = x
        for index, rows in enumerate(stages_by_resolution(self.blocks), start=1):
            blocks = [partial(MobileNetV3Block, channels(out * self.width), stride, conv=conv, norm=norm,
                              act=ACTIVATIONS[act], hidden=channels(expanded * self.width), kernel_size=kernel,
                              squeeze_excite=se)
                      for kernel, expanded, out, se, act, stride in rows]
            x = BlockList(blocks, name=f"stage{index}")(x, train)
            features[f"stage{index}"] = x
        x = ConvNormAct(6 * x.shape[-1], conv=conv, norm=norm, act=hard_swish, kernel_size=1, name="head_conv")(
            x, train)
        features["head"] = x
        x = GlobalAvgPool(name="pool")(x)
        x = hard_swish(dense(channels(self.hidden_width * self.width), name="head_hidden")(x))
        features["pre_logits"] = x
        x = Dropout(self.dropout, name="dropout")(x, deterministic=not train)
        logits = dense(self.num_classes, name="head")(x)
        return classifier_output(logits, features, return_features)


def torchvision_prefix(module: tuple[str, ...], params) -> str:
    """jaxconv module path -> torchvision's: ('stage2', 'block1', 'depthwise', 'norm') -> 'features.3.block.1.1'.

    torchvision's `features` is one Sequential: the stem, every block in order, the 1x1 head conv; a block's
    Sequential holds its expansion (when there is one), depthwise conv, squeeze-excite (fc1, fc2; when there is
    one) and projection, each conv-norm unit as (conv 0, norm 1); `classifier` is (linear 0, hard swish,
    dropout, linear 3).
    """
    unit = {"conv": "0", "norm": "1"}
    if module[0] == "head_hidden":
        return "classifier.0"
    if module[0] == "head":
        return "classifier.3"
    if module[0] == "stem":
        return f"features.0.{unit[module[1]]}"
    stages = sorted(int(key.removeprefix("stage")) for key in params if key.startswith("stage"))

    def blocks_before(stage: int) -> int:
        return sum(len(params[f"stage{s}"]) for s in stages if s < stage)

    if module[0] == "head_conv":
        return f"features.{1 + blocks_before(len(stages) + 1)}.{unit[module[1]]}"
    stage, block, part, layer = module
    index = 1 + blocks_before(int(stage.removeprefix("stage"))) + int(block.removeprefix("block"))
    parts = [name for name in ("expand", "depthwise", "se", "project") if name in params[stage][block]]
    base = f"features.{index}.block.{parts.index(part)}"
    return f"{base}.{layer}" if part == "se" else f"{base}.{unit[layer]}"


# torchvision's weights metadata: num_params, _ops (GMACs at 224 px) and each weight file with its _metrics
# (acc@1, acc@5) and the shorter side it resizes to before the 224 px centre crop (bilinear).
register(
    "mobilenet_v3_large",
    partial(MobileNetV3, blocks=LARGE, hidden_width=1280),
    image_size=224,
    family="mobilenetv3",
    description="MobileNetV3-Large (searched inverted residuals, SE, hard swish; torchvision's)",
    published=torchvision_figures(5_483_032, 0.217),
    weights=[torchvision_weights("IMAGENET1K_V1", "mobilenet_v3_large-8738ca79.pth", 74.042, 91.340),
             torchvision_weights("IMAGENET1K_V2", "mobilenet_v3_large-5c1a4163.pth", 75.274, 92.566, resize=232)],
    # Parity at 67 px: PyTorch's floor on odd sizes at the stem and the stride-2 depthwise convolutions (34, 17, 9,
    # 5, 3).
    torchvision=TorchvisionKeys(torchvision_prefix, parity_size=67),
)
register(
    "mobilenet_v3_small",
    partial(MobileNetV3, blocks=SMALL, hidden_width=1024),
    image_size=224,
    family="mobilenetv3",
    description="MobileNetV3-Small (searched inverted residuals, SE, hard swish; torchvision's)",
    published=torchvision_figures(2_542_856, 0.057),
    weights=[torchvision_weights("IMAGENET1K_V1", "mobilenet_v3_small-047dcff4.pth", 67.668, 87.402)],
    torchvision=TorchvisionKeys(torchvision_prefix),
)
