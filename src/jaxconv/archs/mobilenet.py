"""MobileNetV2 (Sandler et al. 2018): inverted residuals with linear bottlenecks, ReLU6.

Each block expands its input t times with a 1x1 convolution, filters it with a depthwise 3x3
convolution and projects it back with a linear 1x1 (no activation); the input is added back
when the shape allows. That is EfficientNet's MBConv without squeeze-and-excitation, so the
network is an ``EfficientNet`` configuration. Built as torchvision builds it (width 1.0).

Features: 'stem', 'stage1'...'stage7', 'head' (the 1x1 conv's output), 'pre_logits'.
"""

from __future__ import annotations

from functools import partial

from jaxconv.archs.efficientnet import EfficientNet
from jaxconv.declarations import TorchvisionKeys, torchvision_figures, torchvision_weights
from jaxconv.layers import relu6
from jaxconv.registry import register

# The paper's Table 2 as (expansion t, kernel, first stride s, output channels c, blocks n).
V2_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 3, 2, 32, 3), (6, 3, 2, 64, 4), (6, 3, 1, 96, 3),
             (6, 3, 2, 160, 3), (6, 3, 1, 320, 1))


def torchvision_prefix(module: tuple[str, ...], params) -> str:
    """jaxconv module path -> torchvision's: ('stage2', 'block1', 'depthwise', 'norm') -> 'features.3.conv.1.1'.

    torchvision's `features` is one Sequential: the stem, every block in order, the head conv.
    """
    unit = {"conv": "0", "norm": "1"}
    if module[0] == "head":
        return "classifier.1"

    def blocks_before(stage: int) -> int:
        return sum(len(params[f"stage{s}"]) for s in range(1, stage))

    if module[0] == "stem":
        return f"features.0.{unit[module[1]]}"
    if module[0] == "head_conv":
        return f"features.{1 + blocks_before(len(V2_STAGES) + 1)}.{unit[module[1]]}"
    stage, block, part, layer = module
    index = 1 + blocks_before(int(stage.removeprefix("stage"))) + int(block.removeprefix("block"))
    parts = [name for name in ("expand", "depthwise") if name in params[stage][block]]
    if part != "project":
        return f"features.{index}.conv.{parts.index(part)}.{unit[layer]}"
    return f"features.{index}.conv.{len(parts) + (layer == 'norm')}"


register(
    "mobilenet_v2",
    partial(EfficientNet, stages=V2_STAGES, se_ratio=0.0, act=relu6, dropout=0.2, drop_path_rate=0.0),
    image_size=224,
    family="mobilenet",
    description="MobileNetV2 (inverted residuals, linear bottlenecks, ReLU6; torchvision's)",
    published=torchvision_figures(3_504_872, 0.301),
    weights=[torchvision_weights("IMAGENET1K_V1", "mobilenet_v2-b0353104.pth", 71.878, 90.286),
             torchvision_weights("IMAGENET1K_V2", "mobilenet_v2-7ebf99e0.pth", 72.154, 90.822, resize=232)],
    # Parity at 67 px: PyTorch's floor on odd sizes at every stride-2 depthwise convolution.
    torchvision=TorchvisionKeys(torchvision_prefix, parity_size=67),
)
