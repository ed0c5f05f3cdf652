"""Study (c): the naive Inception module vs the one with 1x1 reductions — MACs and accuracy.

The lectures count, at 28x28x256 input, 854M ops for the naive module and 358M with 1x1
"bottleneck" reductions (`jaxconv summary` reproduces both; docs/analysis.md). Here a small
network of four modules (archs/inception_small.py), same branch widths either way: the naive
one has ~4x the MACs and ~5x the parameters, since its pooling branch lets channels pile up.

    python scripts/sweep.py experiments/study_inception.py --report docs/results/inception

quick: built-in shapes at 16 px, 300 steps of 32 per run (2-core CPU).
full: CIFAR-10 at 32 px, 30k iterations of 128 (cosine).
"""

import pathlib

from jaxconv.train.config import load_config

VARIANTS = ("quick", "full")
HERE = pathlib.Path(__file__).parent


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
    config.model = "inception_small"
    return config


def get_runs(variant="quick"):
    return {"reduced": {"model": "inception_small"}, "naive": {"model": "inception_small_naive"}}
