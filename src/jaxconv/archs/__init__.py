"""Architectures; importing this package registers every model by name."""

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
