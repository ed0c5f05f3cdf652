"""Study (d): BatchNorm vs none — how fast each trains, and the largest learning rate that still trains.

The same plain-20 network (no shortcuts, so that nothing but BatchNorm keeps the signal
well scaled) with and without BatchNorm, each at learning rates 0.01, 0.05, 0.2 and 0.8.
Without BatchNorm the convolutions carry biases. A run whose loss turns NaN stops (the
default nan_policy), which marks the learning rate as too large.

    python scripts/sweep.py experiments/study_batchnorm.py --report docs/results/batchnorm

quick: the built-in shapes dataset at 16 px, 300 steps of 32 per run (2-core CPU, ~12 min).
full: CIFAR-10, 20k iterations of 128 per run with a cosine schedule.
"""

import pathlib

from jaxconv.train.config import load_config

VARIANTS = ("quick", "full")
HERE = pathlib.Path(__file__).parent
LEARNING_RATES = (0.01, 0.05, 0.2, 0.8)


def get_config(variant="quick"):
    if variant == "full":
        config = load_config(HERE / "cifar10_resnet20.py")
        config.num_train_steps = 20_000
        config.schedule = "cosine"
        config.eval_every_steps = 2_000
    else:
        config = load_config(HERE / "default.py")
        config.image_size = 16
        config.num_train_steps = 300
        config.eval_every_steps = 150
        config.checkpoint_every_steps = 150
    config.model = "plain20"
    config.warmup_epochs = 0.0  # the learning rate itself is under test
    return config


def get_runs(variant="quick"):
    runs = {}
    for norm in ("bn", "none"):
        for lr in LEARNING_RATES:
            runs[f"{norm}_lr{lr}"] = {"learning_rate": lr, **({"model_options.norm": None} if norm == "none" else {})}
    return runs
