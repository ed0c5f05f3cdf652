"""Study (b): stacks of 3x3 convolutions vs one larger kernel with the same receptive field.

The lectures: two 3x3 convolutions see 5x5 with 18C² parameters instead of 25C²; three see
7x7 with 27C² instead of 49C², and put more non-linearities in between. A small VGG (three
stages of constant width 64 so that every conv maps C -> C, as in the lecture's count;
BatchNorm; 2x2 pooling after each stage; FC-256, FC-256 head) with, per stage, either a stack
of 3x3 convs or one conv of the equal receptive field:

    3x3x2 vs 5x5x1 (receptive field 5 per stage), 3x3x3 vs 7x7x1 (7 per stage)

    python scripts/sweep.py experiments/study_kernel_size.py --report docs/results/kernel_size

The published finding: VGG (Simonyan & Zisserman 2015, §4.1) replaced each pair of 3x3 layers of
its net B by one 5x5 layer and measured 7% higher top-1 error — at equal receptive field the stack
is better, with fewer parameters.

quick (issue 22, chosen before any of its runs): built-in shapes at 32 px, 1,000 steps of 32,
stages of width 32 (so that the 7x7 network costs no more than a ResNet-20 at 32 px), no dropout
in the head (the question is not regularization; the earlier quick runs with dropout 0.5 stayed
at chance), seeds 0, 1 and 2 for each of the four networks. Planned at about 50 minutes on a
2-core CPU. Before issue 22: width 64, 300 steps at 16 px, where no network left chance.
full: CIFAR-10 at 32 px, 30k iterations of 128 (cosine), width 64, dropout 0.5.
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
        config = load_config(HERE / "default.py")  # 32 px, 1,000 steps of 32, SGD 0.05 cosine
        config.eval_every_steps = 500
        config.checkpoint_every_steps = 500
        config.log_every_steps = 25
    config.model = "vgg11_bn"
    config.model_options.widths = (32, 32, 32) if variant == "quick" else (64, 64, 64)
    if variant == "quick":
        config.model_options.dropout = 0.0
    config.model_options.classifier_width = 256
    config.model_options.pool_to = None
    return config


def get_runs(variant="quick"):
    runs = {}
    for seed in (0, 1, 2) if variant == "quick" else (0,):
        for name, (kernel, depth) in STACKS.items():
            run = {"model_options.kernel_size": kernel, "model_options.depths": (depth,) * 3}
            runs[name + (f"_seed{seed}" if seed else "")] = run | ({"seed": seed} if seed else {})
    return runs
