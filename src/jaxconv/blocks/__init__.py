"""Blocks: one shared signature, layers injected. See ``jaxconv.blocks.base.Block``."""

from jaxconv.blocks.base import Block, ConvNormAct, ModuleDef
from jaxconv.blocks.inception import (
    Inception,
    InceptionA,
    InceptionB,
    InceptionC,
    InceptionD,
    InceptionE,
    InceptionNaive,
)
from jaxconv.blocks.mbconv import FusedMBConv, MBConv, MobileNetV3Block, make_divisible
from jaxconv.blocks.residual import (
    BasicBlock,
    Bottleneck,
    PlainBasicBlock,
    PlainBottleneck,
    RegNetBottleneck,
    ResidualBlock,
)
from jaxconv.blocks.shufflenet import ShuffleNetV2Unit

__all__ = [
    "BasicBlock",
    "Block",
    "Bottleneck",
    "ConvNormAct",
    "FusedMBConv",
    "Inception",
    "InceptionA",
    "InceptionB",
    "InceptionC",
    "InceptionD",
    "InceptionE",
    "InceptionNaive",
    "MBConv",
    "MobileNetV3Block",
    "ModuleDef",
    "PlainBasicBlock",
    "PlainBottleneck",
    "RegNetBottleneck",
    "ResidualBlock",
    "ShuffleNetV2Unit",
    "make_divisible",
]
