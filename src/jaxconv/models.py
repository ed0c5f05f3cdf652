"""The model zoo by name: ``get_model``, ``list_models``, ``register``, ``model_info``.

    >>> from jaxconv import models
    >>> models.list_models("resnet*")[:3]
    ['resnet18', 'resnet20', 'resnet32']
    >>> model = models.get_model("resnet50", num_classes=10)
"""

from jaxconv.archs import (
    AlexNet,
    AlexNetTorchvision,
    AllConvNet,
    CifarStem,
    EfficientNet,
    GoogLeNet,
    ImageNetStem,
    LeNet5,
    ResNet,
    VGG,
    ZFNet,
)
from jaxconv.registry import ModelInfo, UnknownModelError, get_model, list_models, model_info, register
from jaxconv.stages import Stage, StageSpec

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
]
