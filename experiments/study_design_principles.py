"""Study (h): the lectures' design principles side by side — parameters, MACs and accuracy.

  - all-convolutional with global average pooling, no FC layers: All-CNN-C (allcnn_c);
  - a VGG-style stack of 3x3 convs with an FC head (FC-256 x2 after flattening);
  - the same stack with global average pooling instead of the FC head (pool_to=1: the
    classifier sees one vector per image, the FC layers shrink to 128-wide);
  - repeated residual blocks of 3x3 convs behind a small 3x3 stem: ResNet-20;
  - a wide strided first layer (7x7/2 conv + max pool, ImageNet's stem) on the same kind of
    network: ResNet-18, which at 32 px leaves 8x8 maps after its stem.

    python scripts/sweep.py experiments/study_design_principles.py --report docs/results/design_principles

The published findings: a global-average-pooling head instead of FC layers removes most of the
parameters at no cost in accuracy (Lin et al. 2014, Network in Network, §4.6: CIFAR-10 error 10.41%
with global pooling against 10.88% with an FC head and dropout, 11.59% without); the small 3x3 stem
is what the CIFAR ResNets use in place of ImageNet's 7x7/2 + pooling (He et al. 2016, §4.2).

quick (issue 22, second design, chosen before any of its runs): built-in shapes at 32 px, 1,000
steps of 32, seeds 0, 1 and 2 of four networks: the small VGG with its FC head and with its pooled
head, both without dropout (the first design kept VGG's dropout 0.5, which held both heads at
chance); and ResNet-20 with its 3x3 stem against the same ResNet-20 with ImageNet's 7x7/2 + max
pool stem (the first design compared ResNet-18 with ResNet-20, which differ in more than the stem).
Planned at about 40 minutes on a 2-core CPU. The first design (bbe62bc): the heads with dropout 0.5,
ResNet-20 and ResNet-18 with seed 0. Before issue 22: 300 steps, all five networks, one seed, where
only ResNet-20 left chance. All-CNN-C runs in the full variant only (271M MACs at 32 px, 6.6
ResNet-20s: 1,000 steps would take half the hour).
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
        config = load_config(HERE / "default.py")  # 32 px, 1,000 steps of 32, SGD 0.05 cosine
        config.eval_every_steps = 500
        config.checkpoint_every_steps = 500
        config.log_every_steps = 25
    return config


def get_runs(variant="quick"):
    if variant == "full":
        return {"allconv_gap": {"model": "allcnn_c"},
                "vgg_fc_head": {**VGG_SMALL, "model_options.classifier_width": 256, "model_options.pool_to": None},
                "vgg_gap_head": {**VGG_SMALL, "model_options.classifier_width": 128, "model_options.pool_to": 1},
                "resnet20_small_stem": {"model": "resnet20"}, "resnet18_strided_stem": {"model": "resnet18"}}
    no_dropout = {**VGG_SMALL, "model_options.dropout": 0.0}
    networks = {
        "vgg_fc_head": {**no_dropout, "model_options.classifier_width": 256, "model_options.pool_to": None},
        "vgg_gap_head": {**no_dropout, "model_options.classifier_width": 128, "model_options.pool_to": 1},
        "resnet20_small_stem": {"model": "resnet20"},
        "resnet20_strided_stem": {"model": "resnet20", "model_options.stem": "imagenet"},
    }
    return {name + (f"_seed{seed}" if seed else ""): {**run, **({"seed": seed} if seed else {})}
            for seed in (0, 1, 2) for name, run in networks.items()}
