"""Study (d): BatchNorm vs none — does BatchNorm let a network train at learning rates that stop it without?

The lectures: BatchNorm "makes deep networks much easier to train, allows higher learning rates,
faster convergence" (Ioffe & Szegedy 2015, §3.3 and the BN-x5 / BN-x30 runs of §4.2; Bjorck et
al. 2018, Fig. 1: without BN only small rates train, with BN rates 10-1000x larger do). A run
whose loss turns NaN stops (the default nan_policy): that rate diverged.

    python scripts/sweep.py experiments/study_batchnorm.py --report docs/results/batchnorm --x learning_rate

quick, third design (session 19, chosen before any of its runs): the finding needs a network
that trains *without* BatchNorm at some rate within the budget. The second design's plain-20 and
plain-8 never left chance without it, nor did ResNet-20 (with or without zero-initialised
branches) in probes; the half-width AlexNet of study (f) did, at 0.01, within 500 steps. So:
that AlexNet (widths 48-128-192-192-128, FC-512, no dropout, no LRN, so that the only difference
is BatchNorm after each convolution) on the built-in shapes at 67 px (all 20,000 training
images), 1,000 steps of 32, SGD momentum 0.9, cosine schedule without warm-up (the rate itself is
under test), with and without BatchNorm at rates 0.01, 0.03, 0.1, 0.3 and 1.0; seeds 1 and 2
repeat both at 0.1. A network "trains" at a rate when its final test top-1 is at least 30%
(three times chance). Verdict, fixed before the runs: reproduced if the largest rate at which
the BatchNorm network trains is at least 10x (two steps of the grid) the largest at which the
network without it trains; partly if it is larger by one step; not if it is not larger.
Planned at about 45 minutes on a 2-core CPU.
second design (issue 22, commit 7232423): plain-20 and plain-8 at 32 px, 600 steps, rates
0.01-1.0; without BatchNorm no network left chance at any rate.
full: CIFAR-10, 20k iterations of 128 per run with a cosine schedule, plain-20 with and without BN.
"""

import pathlib

from jaxconv.train.config import load_config

VARIANTS = ("quick", "full")
HERE = pathlib.Path(__file__).parent
LEARNING_RATES = {"quick": (0.01, 0.03, 0.1, 0.3, 1.0), "full": (0.01, 0.05, 0.2, 0.5, 1.0)}
REPEATED = {"quick": ((0.1, 1), (0.1, 2)), "full": ()}  # (rate, seed) repeated with and without BatchNorm
ALEXNET_HALF = {"widths": (48, 128, 192, 192, 128), "classifier_width": 512, "dropout": 0.0, "lrn": False}


def get_config(variant="quick"):
    if variant == "full":
        config = load_config(HERE / "cifar10_resnet20.py")
        config.model = "plain20"
        config.num_train_steps = 20_000
        config.schedule = "cosine"
        config.eval_every_steps = 2_000
    else:
        config = load_config(HERE / "default.py")  # SGD momentum 0.9, cosine, weight decay 1e-4, flips
        config.model = "alexnet"
        config.image_size = 67  # AlexNet's 11x11/4 stem: 67 -> 15 -> 7 -> 3 -> 1
        config.num_train_steps = 1_000
        config.eval_every_steps = 500
        config.checkpoint_every_steps = 500
        config.log_every_steps = 25
        config.model_options.update(ALEXNET_HALF)
    config.warmup_epochs = 0.0  # the learning rate itself is under test
    return config


def _run(norm: str, lr: float, seed: int, variant: str) -> dict:
    run = {"learning_rate": lr}
    if norm == "bn" and variant == "quick":
        run["model_options.norm"] = "batch"
    if norm == "none" and variant == "full":
        run["model_options.norm"] = None
    if seed:
        run["seed"] = seed
    return run


def get_runs(variant="quick"):
    runs = {}
    for norm in ("bn", "none"):
        for lr in LEARNING_RATES[variant]:
            runs[f"{norm}_lr{lr}"] = _run(norm, lr, 0, variant)
        for lr, seed in REPEATED[variant]:
            runs[f"{norm}_lr{lr}_seed{seed}"] = _run(norm, lr, seed, variant)
    return runs
