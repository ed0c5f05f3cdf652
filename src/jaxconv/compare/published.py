"""Figures other people published for the ILSVRC architectures, with where each comes from.

Two kinds, never mixed in one column:

* single-model ImageNet validation accuracy of torchvision's published weights (224 centre
  crop), for the architectures jaxconv builds exactly as torchvision does; and
* the top-5 error of each ILSVRC classification winner as the lectures chart it
  (competition entries: ensembles, test set), which measures the lineage, not one network.

Parameter counts and GMACs are those of /shared/REFERENCE.md: torchvision's weights metadata,
or counted from the papers' layer lists.
"""

from __future__ import annotations

import dataclasses

TORCHVISION = "torchvision weights metadata (single model, 224 centre crop, ImageNet val)"
PAPER_COUNT = "counted from the paper's layer list"
ILSVRC_SOURCE = "ILSVRC classification winners as charted in the lectures (ensembles, test set)"


@dataclasses.dataclass(frozen=True)
class Published:
    """What was published for one model.

    ``top1``/``top5`` are percentages, ``ilsvrc_top5_error`` the competition entry's top-5 error
    in percent (``ilsvrc_entry`` names it and its year). None where nothing was published.
    """

    params: int | None = None
    gmacs: float | None = None
    top1: float | None = None
    top5: float | None = None
    accuracy_source: str | None = None
    count_source: str | None = None
    ilsvrc_entry: str | None = None
    ilsvrc_top5_error: float | None = None
    image_size: int = 224  # the evaluation size the accuracy and GMACs were published at


def _tv(params: int, gmacs: float, top1: float, top5: float, **extra) -> Published:
    return Published(params, gmacs, top1, top5, TORCHVISION, "torchvision weights metadata", **extra)


PUBLISHED: dict[str, Published] = {
    # The paper variants: only the competition figure was published for these exact networks.
    "alexnet": Published(62_378_344, None, count_source=PAPER_COUNT + " (ungrouped)",
                         ilsvrc_entry="AlexNet, ILSVRC 2012", ilsvrc_top5_error=16.4),
    "zfnet": Published(62_357_608, None, count_source=PAPER_COUNT,
                       ilsvrc_entry="ZFNet, ILSVRC 2013", ilsvrc_top5_error=11.7),
    "googlenet": Published(6_998_552, None, count_source=PAPER_COUNT + " (without auxiliary heads)",
                           ilsvrc_entry="GoogLeNet, ILSVRC 2014", ilsvrc_top5_error=6.7),
    # torchvision's own variants of AlexNet and GoogLeNet.
    "alexnet_tv": _tv(61_100_840, 0.714, 56.522, 79.066),
    "googlenet_tv": _tv(6_624_904, 1.498, 69.778, 89.530),
    "vgg11": _tv(132_863_336, 7.609, 69.020, 88.628),
    "vgg11_bn": _tv(132_868_840, 7.609, 70.370, 89.810),
    "vgg13": _tv(133_047_848, 11.308, 69.928, 89.246),
    "vgg16": _tv(138_357_544, 15.470, 71.592, 90.382, ilsvrc_entry="VGG, ILSVRC 2014 (2nd)", ilsvrc_top5_error=7.3),
    "vgg16_bn": _tv(138_365_992, 15.470, 73.360, 91.516),
    "vgg19": _tv(143_667_240, 19.632, 72.376, 90.876, ilsvrc_entry="VGG, ILSVRC 2014 (2nd)", ilsvrc_top5_error=7.3),
    "vgg19_bn": _tv(143_678_248, 19.632, 74.218, 91.842),
    "resnet18": _tv(11_689_512, 1.814, 69.758, 89.078),
    "resnet34": _tv(21_797_672, 3.664, 73.314, 91.420),
    "resnet50": _tv(25_557_032, 4.089, 76.130, 92.862),  # IMAGENET1K_V1; V2's recipe reaches 80.858
    "resnet101": _tv(44_549_160, 7.801, 77.374, 93.546),
    "resnet152": _tv(60_192_808, 11.514, 78.312, 94.046, ilsvrc_entry="ResNet, ILSVRC 2015", ilsvrc_top5_error=3.57),
    "efficientnet_b0": _tv(5_288_548, 0.386, 77.692, 93.532),
    "efficientnet_b1": _tv(7_794_184, 0.687, 78.642, 94.186, image_size=240),
    "efficientnet_b2": _tv(9_109_994, 1.088, 80.608, 95.310, image_size=288),
    "efficientnet_b3": _tv(12_233_232, 1.827, 82.008, 96.054, image_size=300),
    "efficientnet_b4": _tv(19_341_616, 4.394, 83.384, 96.594, image_size=380),
    "efficientnet_b5": _tv(30_389_784, 10.266, 83.444, 96.628, image_size=456),
    "efficientnet_b6": _tv(43_040_704, 19.068, 84.008, 96.916, image_size=528),
    "efficientnet_b7": _tv(66_347_960, 37.746, 84.122, 96.908, image_size=600),
}

# The lectures' lineage, in the order `jaxconv compare` lists it by default.
ILSVRC_MODELS = (
    "alexnet", "zfnet", "vgg16", "vgg19", "googlenet",
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "efficientnet_b0",
)


def published(name: str) -> Published:
    """The published figures for ``name``; an empty record for a model nobody published."""
    return PUBLISHED.get(name, Published())
