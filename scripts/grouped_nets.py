"""Two benchmark networks for grouped convolutions: a ResNeXt-style CIFAR net and its groups=1 twin.

    jaxconv bench resnext_cifar_g8 --import scripts/grouped_nets.py --batch-size 32
    jaxconv bench resnext_cifar_g1 --import scripts/grouped_nets.py --batch-size 32

docs/extending.md's example network with two blocks a stage (2-2-2 bottlenecks of 64-128-256
channels, the 3x3 convolution grouped), with 8 groups and with 1: on XLA:CPU, grouped convolutions ran
80-2,200x slower per MAC than dense ones before jaxconv's CPU formulation (docs/benchmarks.md).
"""

from functools import partial

import jaxconv
from jaxconv.blocks import ResidualBlock
from jaxconv.models import CifarStem, ResNet


class GroupedBottleneck(ResidualBlock):
    """1x1 reduce -> grouped 3x3 (stride here) -> 1x1 expand, plus the shortcut."""

    groups: int = 8
    reduction: int = 2

    def branch(self, x, train):
        width = self.features // self.reduction
        y = self.activate(self.normalize(self.conv(width, 1, name="conv1")(x), "norm1", train))
        y = self.conv(width, 3, self.stride, padding=1, groups=self.groups, name="conv2")(y)
        y = self.activate(self.normalize(y, "norm2", train))
        return self.last_norm(self.conv(self.features, 1, name="conv3")(y), "norm3", train)


for _groups in (8, 1):
    jaxconv.register(
        f"resnext_cifar_g{_groups}",
        partial(ResNet, block=partial(GroupedBottleneck, groups=_groups), depths=(2, 2, 2), widths=(64, 128, 256),
                stem=CifarStem, stem_width=32),
        image_size=32,
        num_classes=10,
        description=f"ResNeXt-style CIFAR net, {_groups} group(s) in every 3x3",
    )
