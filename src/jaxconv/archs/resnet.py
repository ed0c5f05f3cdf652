"""ResNet (He et al. 2016): ImageNet ResNet-18...152, the CIFAR ResNets of §4.2, plain twins.

Any block with the shared signature can be staged: ``ResNet(block=MyBlock, depths=(2, 2))``
builds a network of the user's own blocks behind the chosen stem.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxconv.archs.common import CifarStem, ImageNetStem, classifier_output, pooled_head
from jaxconv.blocks import BasicBlock, Bottleneck, PlainBasicBlock, PlainBottleneck
from jaxconv.blocks.base import Activation, ModuleDef
from jaxconv.declarations import TorchvisionKeys, WeightSet, torchvision_figures, torchvision_weights
from jaxconv.layers import BatchNorm, Conv, relu
from jaxconv.layers.norm import norm_factory
from jaxconv.registry import register
from jaxconv.stages import StageSpec, build_stages


def block_expansion(block: ModuleDef) -> int:
    """A block's output/inner width ratio (Bottleneck: 4), looking through partials."""
    keywords = {}
    while isinstance(block, partial):
        keywords = {**block.keywords, **keywords}
        block = block.func
    expansion = keywords.get("expansion", getattr(block, "expansion", 1))
    return expansion if isinstance(expansion, int) else 1


# The stems by name, for configs (model_options.stem='imagenet'); get_model checks the name.
STEMS = {"imagenet": ImageNetStem, "cifar": CifarStem}


def _has_field(block: ModuleDef, name: str) -> bool:
    """Whether the block class (under any functools.partial) has the dataclass field ``name``; True when unknown."""
    while isinstance(block, partial):
        block = block.func
    if not (isinstance(block, type) and dataclasses.is_dataclass(block)):
        return True
    return name in {f.name for f in dataclasses.fields(block)}


class ResNet(nn.Module):
    """stem -> stages of ``block`` -> global average pool -> linear head.

    Attributes:
      block: the block of every stage (BasicBlock, Bottleneck, their plain twins, or yours).
      depths: blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50.
      widths: output channels per stage; defaults to 64 * 2^i times the block's expansion.
      strides: the first block's stride in each stage; defaults to (1, 2, 2, ...).
      stem / stem_width: ImageNetStem (7x7/2 + max pool) or CifarStem (one 3x3), or their names
        'imagenet' / 'cifar' (what a config file can hold).
      variant: 'v1' or 'v1.5' for bottleneck blocks (None keeps the block's default, v1.5); the same network
        either way for basic blocks (accepted, so that one option fits every depth).
      shortcut: 'A', 'B' or 'C' (None keeps the block's default, 'B').
      norm: the normalisation (None for none: convolutions then carry biases).
      zero_init_last: start each block's last norm scale at zero (without a norm, its last convolution).
      drop_path_rate: stochastic depth, rising linearly to this rate over the blocks.
      (A plain network, PlainBasicBlock or PlainBottleneck, refuses shortcut, zero_init_last and drop_path_rate:
      each acts through the shortcut it lacks.)
      dtype: compute dtype (parameters stay float32).

    Features: 'stem', 'stage1'... and 'pre_logits'.
    """

    block: ModuleDef
    depths: Sequence[int]
    num_classes: int = 1000
    widths: Sequence[int] | None = None
    strides: Sequence[int] | None = None
    stem: ModuleDef | str = ImageNetStem
    stem_width: int = 64
    variant: str | None = None
    shortcut: str | None = None
    norm: ModuleDef | None = BatchNorm
    act: Activation = relu
    zero_init_last: bool = False
    dropout: float = 0.0
    drop_path_rate: float = 0.0
    dtype: Any = jnp.float32
    axis_name: str | None = None  # sync BatchNorm over this device axis (set by the training system)

    def __post_init__(self):
        super().__post_init__()
        block = self.block
        while isinstance(block, partial):
            block = block.func
        if not _has_field(block, "variant"):
            # v1 / v1.5 differ only in where a bottleneck strides: for other blocks both name the same network.
            if self.variant not in (None, "v1", "v1.5"):
                raise ValueError(f"variant must be 'v1' or 'v1.5', got {self.variant!r}")
        if isinstance(block, type) and issubclass(block, (PlainBasicBlock, PlainBottleneck)):
            # Options that act through the shortcut: a plain network would take them and do nothing, or worse.
            why = {
                "zero_init_last": "its blocks would start at zero, and with no shortcut to carry the signal every "
                                  "output and gradient would be zero",
                "shortcut": "it has no shortcuts",
                "drop_path_rate": "stochastic depth drops a block's branch, and a plain block is all branch",
            }
            for option, reason in why.items():
                value = getattr(self, option)
                if value not in (None, False, 0, 0.0):
                    raise ValueError(f"{block.__name__} network (plain, no shortcuts): {option}={value!r} cannot "
                                     f"apply: {reason}; leave it out, or use the residual twin (resnet*)")

    def stage_specs(self) -> list[StageSpec]:
        block = self.block
        options = {"variant": self.variant, "shortcut": self.shortcut}
        options = {k: v for k, v in options.items() if v is not None}
        if "variant" in options and not _has_field(block, "variant"):
            del options["variant"]  # a basic block strides its first 3x3 in v1 and v1.5 alike
        if self.zero_init_last:
            options["zero_init_last"] = True
        if options:
            block = partial(block, **options)
        widths = self.widths or [self.stem_width * 2**i * block_expansion(block) for i in range(len(self.depths))]
        strides = self.strides or [1] + [2] * (len(self.depths) - 1)
        if not len(widths) == len(strides) == len(self.depths):
            raise ValueError(
                f"depths, widths and strides need one entry per stage: {tuple(self.depths)}, "
                f"{tuple(widths)}, {tuple(strides)}"
            )
        return [StageSpec(block, d, w, s) for d, w, s in zip(self.depths, widths, strides)]

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, return_features: bool = False):
        # torchvision's geometry: every stride-2 layer on an even size drops its last padding
        # row ((56 - 3 + 2)/2 + 1 = 28.5 -> 28), hence fit='floor'.
        conv = partial(Conv, use_bias=self.norm is None, fit="floor", dtype=self.dtype)
        norm = norm_factory(self.norm, train=train, dtype=self.dtype, axis_name=self.axis_name)
        features: dict[str, jnp.ndarray] = {}
        stem = STEMS[self.stem] if isinstance(self.stem, str) else self.stem
        x = stem(self.stem_width, conv=conv, norm=norm, act=self.act, name="stem")(x, train)
        features["stem"] = x
        x = build_stages(
            x,
            self.stage_specs(),
            train=train,
            conv=conv,
            norm=norm,
            act=self.act,
            drop_path_rate=self.drop_path_rate,
            features=features,
        )
        logits = pooled_head(
            x, features, num_classes=self.num_classes, dropout=self.dropout, train=train, dtype=self.dtype
        )
        return classifier_output(logits, features, return_features)


IMAGENET_DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def torchvision_prefix(module: tuple[str, ...], params) -> str:
    """jaxconv module path -> torchvision's ResNet module: ('stage1', 'block0', 'norm1') -> 'layer1.0.bn1'."""
    if module[0] == "stem":
        return {"conv": "conv1", "norm": "bn1"}[module[1]]
    if module[0] == "head":
        return "fc"
    stage, block, layer = module
    base = f"layer{int(stage.removeprefix('stage'))}.{int(block.removeprefix('block'))}"
    renamed = {"shortcut_conv": "downsample.0", "shortcut_norm": "downsample.1"}
    if layer in renamed:
        return f"{base}.{renamed[layer]}"
    if layer.startswith("norm"):
        return f"{base}.bn{layer.removeprefix('norm')}"
    return f"{base}.{layer}"


_V1_TIMM = "timm's {} republishes torchvision's first upload of these weights ({})"


def _v1(depth: int, file: str, top1: float, top5: float, first_upload: str) -> WeightSet:
    timm = f"resnet{depth}.tv_in1k"
    return torchvision_weights("IMAGENET1K_V1", file, top1, top5, timm=timm, note=_V1_TIMM.format(timm, first_upload))


def _v2(depth: int, file: str, top1: float, top5: float) -> WeightSet:
    return torchvision_weights("IMAGENET1K_V2", file, top1, top5, resize=232, timm=f"resnet{depth}.tv2_in1k")


# torchvision's weights metadata: parameters, GMACs, the V1 (and V2) weights with their ImageNet accuracy;
# V1 comes first (torchvision's DEFAULT is V2, the better recipe: 80.858% for ResNet-50).
IMAGENET_RESNETS = {
    18: (torchvision_figures(11_689_512, 1.814),
         [_v1(18, "resnet18-f37072fd.pth", 69.758, 89.078, "resnet18-5c106cde.pth")]),
    34: (torchvision_figures(21_797_672, 3.664),
         [_v1(34, "resnet34-b627a593.pth", 73.314, 91.420, "resnet34-333f7ec4.pth")]),
    50: (torchvision_figures(25_557_032, 4.089),
         [_v1(50, "resnet50-0676ba61.pth", 76.130, 92.862, "resnet50-19c8e357.pth"),
          _v2(50, "resnet50-11ad3fa6.pth", 80.858, 95.434)]),
    101: (torchvision_figures(44_549_160, 7.801),
          [_v1(101, "resnet101-63fe2227.pth", 77.374, 93.546, "resnet101-5d3b4d8f.pth"),
           _v2(101, "resnet101-cd907fc2.pth", 81.886, 95.780)]),
    152: (torchvision_figures(60_192_808, 11.514, ilsvrc_entry="ResNet, ILSVRC 2015",
                              ilsvrc_top5_error=3.57),
          [_v1(152, "resnet152-394f9c45.pth", 78.312, 94.046, "resnet152-b121ed2d.pth"),
           _v2(152, "resnet152-f82ba261.pth", 82.284, 96.002)]),
}

for _depth, _stages in IMAGENET_DEPTHS.items():
    _block = BasicBlock if _depth < 50 else Bottleneck
    _published, _weights = IMAGENET_RESNETS[_depth]
    register(
        f"resnet{_depth}",
        partial(ResNet, block=_block, depths=_stages),
        image_size=224,
        family="resnet",
        description=(f"ResNet-{_depth} (v1.5 bottlenecks as torchvision; variant='v1' for the paper's)" if _depth >= 50
                     else f"ResNet-{_depth} (basic blocks: variant 'v1' and 'v1.5' are the same network)"),
        published=_published,
        weights=_weights,
        # Parity for resnet18 (basic blocks) at 64 px and resnet50 (bottlenecks) at 67 px: PyTorch's floor on odd sizes.
        torchvision=TorchvisionKeys(torchvision_prefix, parity_size={18: 64, 50: 67}.get(_depth)),
    )
# ResNeXt (Xie et al. 2017: the bottleneck's 3x3 split into groups) and Wide ResNet (Zagoruyko & Komodakis
# 2016: its inner width doubled), as torchvision builds them: (depth, groups, width per group), then
# torchvision's weights metadata (parameters, GMACs, V1 and V2 weights with their ImageNet accuracy).
WIDER_RESNETS = {
    "resnext50_32x4d": ((50, 32, 4), torchvision_figures(25_028_904, 4.23), [
        torchvision_weights("IMAGENET1K_V1", "resnext50_32x4d-7cdf4587.pth", 77.618, 93.698),
        torchvision_weights("IMAGENET1K_V2", "resnext50_32x4d-1a0047aa.pth", 81.198, 95.340, resize=232)]),
    "resnext101_32x8d": ((101, 32, 8), torchvision_figures(88_791_336, 16.414), [
        torchvision_weights("IMAGENET1K_V1", "resnext101_32x8d-8ba56ff5.pth", 79.312, 94.526),
        torchvision_weights("IMAGENET1K_V2", "resnext101_32x8d-110c445d.pth", 82.834, 96.228, resize=232)]),
    "resnext101_64x4d": ((101, 64, 4), torchvision_figures(83_455_272, 15.46), [
        torchvision_weights("IMAGENET1K_V1", "resnext101_64x4d-173b62eb.pth", 83.246, 96.454, resize=232)]),
    "wide_resnet50_2": ((50, 1, 128), torchvision_figures(68_883_240, 11.398), [
        torchvision_weights("IMAGENET1K_V1", "wide_resnet50_2-95faca4d.pth", 78.468, 94.086),
        torchvision_weights("IMAGENET1K_V2", "wide_resnet50_2-9ba9bcbe.pth", 81.602, 95.758, resize=232)]),
    "wide_resnet101_2": ((101, 1, 128), torchvision_figures(126_886_696, 22.753), [
        torchvision_weights("IMAGENET1K_V1", "wide_resnet101_2-32ee1156.pth", 78.848, 94.284),
        torchvision_weights("IMAGENET1K_V2", "wide_resnet101_2-d733dc28.pth", 82.510, 96.020, resize=232)]),
}
for _name, ((_depth, _groups, _width), _published, _weights) in WIDER_RESNETS.items():
    _kind = f"ResNeXt-{_depth} {_groups}x{_width}d" if _groups > 1 else f"Wide ResNet-{_depth}-2"
    register(
        _name,
        partial(ResNet, block=partial(Bottleneck, groups=_groups, width_per_group=_width),
                depths=IMAGENET_DEPTHS[_depth]),
        image_size=224,
        family="resnet",
        description=f"{_kind} (torchvision's, v1.5 bottlenecks)",
        published=_published,
        weights=_weights,
        # Parity for resnext50_32x4d at 67 px: grouped 3x3 convolutions against PyTorch's.
        torchvision=TorchvisionKeys(torchvision_prefix, parity_size=67 if _name == "resnext50_32x4d" else None),
    )

for _depth in (18, 34):
    register(
        f"plain{_depth}",
        partial(ResNet, block=PlainBasicBlock, depths=IMAGENET_DEPTHS[_depth]),
        image_size=224,
        family="plain",
        description=f"plain-{_depth}: ResNet-{_depth}'s layers without shortcuts (ResNet paper, Table 2)",
    )

# CIFAR-10 networks of §4.2: 6n + 2 layers, stages of 16-32-64 channels at 32, 16, 8 pixels,
# option-A (parameter-free) shortcuts.
cifar_resnet = partial(
    ResNet,
    block=BasicBlock,
    widths=(16, 32, 64),
    stem=CifarStem,
    stem_width=16,
    shortcut="A",
)
for _depth in (20, 32, 44, 56, 110):
    _n = (_depth - 2) // 6
    register(
        f"resnet{_depth}",
        partial(cifar_resnet, depths=(_n, _n, _n)),
        image_size=32,
        num_classes=10,
        family="resnet_cifar",
        description=f"CIFAR ResNet-{_depth} (3 stages x {_n} basic blocks, option-A shortcuts)",
    )
    register(
        f"plain{_depth}",
        partial(cifar_resnet, block=PlainBasicBlock, shortcut=None, depths=(_n, _n, _n)),
        image_size=32,
        num_classes=10,
        family="plain_cifar",
        description=f"CIFAR plain-{_depth}: ResNet-{_depth} without shortcuts",
    )

__all__ = ["IMAGENET_DEPTHS", "PlainBottleneck", "ResNet"]
