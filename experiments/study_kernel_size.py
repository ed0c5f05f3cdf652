"""Study (b): stacks of 3x3 convolutions vs one larger kernel with the same receptive field.

The lectures: two 3x3 convolutions see 5x5 with 18C² parameters instead of 25C²; three see
7x7 with 27C² instead of 49C², and put more non-linearities in between. A small VGG (three
stages of constant width 64 so that every conv maps C -> C, as in the lecture's count;
BatchNorm; 2x2 pooling after each stage; FC-256, FC-256 head) with, per stage, either a stack
of 3x3 convs or one conv of the equal receptive field:

    3x3x2 vs 5x5x1 (receptive field 5 per stage), 3x3x3 vs 7x7x1 (7 per stage)

    python scripts/sweep.py experiments/study_kernel_size.py --report docs/results/kernel_size

quick: built-in shapes at 16 px, 300 steps of 32 per run (2-core CPU).
full: CIFAR-10 at 32 px, 30k iterations of 128 (cosine).
"""

import pathlib

from jaxconv.train.config import load_config

VARIANTS = ("quick", "full")
HERE = pathlib.Path(__file__).parent
STACKS = {"3x3x2": (3, 2), "5x5x1": (5, 1), "3x3x3": (3, 3), "7x7x1": (7, 1)}


def get_config(variant="quick"):
    if variant == "full":
        config = load_config(HERE / "cifar10_resnet20.py")
        config.num_train_steps = 30_000
        config.schedule = "cosine"
    else:
        config = load_config(HERE / "default.py")
        config.image_size = 16
        config.num_train_steps = 300
        config.eval_every_steps = 150
        config.checkpoint_every_steps = 150
    config.model = "vgg11_bn"
    config.model_options.widths = (64, 64, 64)
    config.model_options.classifier_width = 256
    config.model_options.pool_to = None
    return config


def get_runs(variant="quick"):
    return {
        name: {"model_options.kernel_size": kernel, "model_options.depths": (depth,) * 3}
        for name, (kernel, depth) in STACKS.items()
    }
