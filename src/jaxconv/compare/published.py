"""Figures other people published for the ILSVRC architectures, read from the models' declarations.

Two kinds, never mixed in one column:

* single-model ImageNet validation accuracy of torchvision's published weights (224 centre
  crop), for the architectures jaxconv builds exactly as torchvision does; and
* the top-5 error of each ILSVRC classification winner as the lectures chart it
  (competition entries: ensembles, test set), which measures the lineage, not one network.

Each family's file declares them beside its variants (``register(..., published=...)``); this
module only reads them.
"""

from __future__ import annotations

from jaxconv.declarations import ILSVRC_SOURCE, PAPER_COUNT, TORCHVISION, Published
from jaxconv.models import list_models, model_info

# The lectures' lineage, in the order `jaxconv compare` lists it by default.
ILSVRC_MODELS = (
    "alexnet", "zfnet", "vgg16", "vgg19", "googlenet",
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "efficientnet_b0",
)

# What came after (2016-2022), one or two variants per family, for `jaxconv compare --modern`: the
# accuracy-vs-GMACs frontier that the lineage led to, each with torchvision's published weights.
MODERN_MODELS = (
    "inception_v3", "densenet121", "resnext50_32x4d", "wide_resnet50_2", "mobilenet_v2", "shufflenet_v2_x1_0",
    "mnasnet1_0", "mobilenet_v3_large", "regnet_y_400mf", "regnet_y_8gf", "efficientnet_b4", "efficientnet_v2_s",
    "convnext_tiny", "convnext_base",
)


def published(name: str) -> Published:
    """The published figures for ``name``; an empty record for a model nobody published."""
    return model_info(name).published or Published()


def published_models() -> dict[str, Published]:
    """Every registered model with published figures, by name."""
    return {name: model_info(name).published for name in list_models() if model_info(name).published}


__all__ = ["ILSVRC_MODELS", "ILSVRC_SOURCE", "MODERN_MODELS", "PAPER_COUNT", "TORCHVISION", "Published", "published",
           "published_models"]
