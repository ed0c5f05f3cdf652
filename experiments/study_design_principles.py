"""Study (h): the lectures' design principles side by side — parameters, MACs and accuracy.

  - all-convolutional with global average pooling, no FC layers: All-CNN-C (allcnn_c);
  - a VGG-style stack of 3x3 convs with an FC head (FC-256 x2 after flattening);
  - the same stack with global average pooling instead of the FC head (pool_to=1: the
    classifier sees one vector per image, the FC layers shrink to 128-wide);
  - repeated residual blocks of 3x3 convs behind a small 3x3 stem: ResNet-20;
  - a wide strided first layer (7x7/2 conv + max pool, ImageNet's stem) on the same kind of
    network: ResNet-18, which at 32 px leaves 8x8 maps after its stem.

    python scripts/sweep.py experiments/study_design_principles.py --report docs/results/design_principles

quick: built-in shapes at 32 px, 300 steps of 32 per run (2-core CPU).
full: CIFAR-10 at 32 px, 30k iterations of 128 (cosine).
"""

import pathlib

from jaxconv.train.config import load_config

VARIANTS = ("quick", "full")
HERE = pathlib.Path(__file__).parent
VGG_SMALL = {"model": "vgg11_bn", "model_options.widths": (32, 64, 128), "model_options.depths": (2, 2, 2)}


def get_config(variant="quick"):
    if variant == "full":
        config = load_config(HERE / "cifar10_resnet20.py")
        config.num_train_steps = 30_000
        config.schedule = "cosine"
    else:
        config = load_config(HERE / "default.py")
        config.num_train_steps = 300
        config.eval_every_steps = 150
        config.checkpoint_every_steps = 150
    return config


def get_runs(variant="quick"):
    return {
        "allconv_gap": {"model": "allcnn_c"},
        "vgg_fc_head": {**VGG_SMALL, "model_options.classifier_width": 256, "model_options.pool_to": None},
        "vgg_gap_head": {**VGG_SMALL, "model_options.classifier_width": 128, "model_options.pool_to": 1},
        "resnet20_small_stem": {"model": "resnet20"},
        "resnet18_strided_stem": {"model": "resnet18"},
    }
