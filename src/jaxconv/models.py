"""The model zoo by name: ``get_model``, ``list_models``, ``register``, ``model_info``.

Importing this module registers every built-in family (``jaxconv.archs``), so lookups here
see them all, and a user's ``register`` cannot take a built-in name.

    >>> from jaxconv import models
    >>> models.list_models("resnet*")[:3]
    ['resnet18', 'resnet20', 'resnet32']
    >>> model = models.get_model("resnet50", num_classes=10)
"""

from __future__ import annotations

from typing import Any

from jaxconv.archs import (
    VGG,
    AlexNet,
    AlexNetTorchvision,
    AllConvNet,
    CifarStem,
    EfficientNet,
    GoogLeNet,
    ImageNetStem,
    LeNet5,
    ResNet,
    ZFNet,
)
from jaxconv.layers.activations import get_activation
from jaxconv.registry import (
    ModelInfo,
    UnknownModelError,
    build_model,
    list_models,
    model_info,
    register,
    runtime_options,
)
from jaxconv.stages import Stage, StageSpec


def get_model(
    name: str,
    num_classes: int | None = None,
    *,
    weights: str | None = None,
    weights_dir: Any = None,
    download: bool = True,
    **overrides: Any,
) -> Any:
    """Builds the registered model ``name``.

    ``num_classes`` defaults to the model's (1000 for ImageNet models); other keyword
    arguments override the model's fields (e.g. ``dtype=jnp.bfloat16``, ``variant='v1'``,
    ``norm='group'``, ``act='swish'``). An override the model does not have raises ValueError
    listing the ones it has.

    With ``weights='IMAGENET1K_V2'`` (a tag of ``model_info(name).weights``) it returns
    ``(model, variables)`` with the published weights, read from ``weights_dir`` (default
    $JAXCONV_WEIGHTS_DIR or ~/.cache/jaxconv/weights) after checking their SHA-256, and
    downloaded there first when missing and ``download`` is true.
    """
    if weights is not None:
        from jaxconv.pretrained.weights import load_published  # weight I/O only when asked for

        return load_published(
            name, weights, weights_dir=weights_dir, download=download, num_classes=num_classes, **overrides
        )
    if isinstance(overrides.get("act"), str):  # configs name activations: act="tanh"
        overrides["act"] = get_activation(overrides["act"])
    return build_model(name, num_classes, **overrides)


__all__ = [
    "VGG",
    "AlexNet",
    "AlexNetTorchvision",
    "AllConvNet",
    "CifarStem",
    "EfficientNet",
    "GoogLeNet",
    "ImageNetStem",
    "LeNet5",
    "ModelInfo",
    "ResNet",
    "Stage",
    "StageSpec",
    "UnknownModelError",
    "ZFNet",
    "get_model",
    "list_models",
    "model_info",
    "register",
    "runtime_options",
]
