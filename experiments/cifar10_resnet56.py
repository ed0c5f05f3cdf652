"""ResNet-56 on CIFAR-10 as in He et al. 2016, §4.2 (6.97% error in the paper).

The recipe of cifar10_resnet20.py, unchanged but for the depth: batch 128, SGD momentum 0.9,
weight decay 1e-4, learning rate 0.1 ÷10 at 32k and 48k iterations, 64k iterations, pad-4
crops and flips.
"""

import pathlib

from jaxconv.train.config import load_config


def get_config():
    config = load_config(pathlib.Path(__file__).with_name("cifar10_resnet20.py"))
    config.model = "resnet56"
    return config
