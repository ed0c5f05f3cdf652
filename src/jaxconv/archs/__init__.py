"""Architectures; importing this package registers every model by name.

Every module of this package is one family (its architecture, its registered variants and what is
known about them) and is imported here, so a new family is its file alone.
"""

import importlib
import pkgutil

from jaxconv.archs.alexnet import AlexNet, AlexNetTorchvision, ZFNet
from jaxconv.archs.allconv import AllConvNet
from jaxconv.archs.common import CifarStem, ImageNetStem
from jaxconv.archs.efficientnet import EfficientNet
from jaxconv.archs.googlenet import GoogLeNet
from jaxconv.archs.inception_small import SmallInception
from jaxconv.archs.lenet import LeNet5
from jaxconv.archs.resnet import ResNet
from jaxconv.archs.vgg import VGG

__all__ = [
    "AlexNet",
    "AlexNetTorchvision",
    "AllConvNet",
    "CifarStem",
    "EfficientNet",
    "GoogLeNet",
    "ImageNetStem",
    "LeNet5",
    "ResNet",
    "SmallInception",
    "VGG",
    "ZFNet",
]

for _family in pkgutil.iter_modules(__path__):  # every family file, including ones named nowhere else
    importlib.import_module(f"{__name__}.{_family.name}")
