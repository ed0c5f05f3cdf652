"""Study (d): BatchNorm vs none — does BatchNorm let a network train at learning rates that stop it without?

The lectures: BatchNorm "makes deep networks much easier to train, allows higher learning rates,
faster convergence" (Ioffe & Szegedy 2015, §3.3 and the BN-x5 / BN-x30 runs of §4.2; Bjorck et
al. 2018, Fig. 1: without BN only small rates train, with BN rates 10-1000x larger do). A run
whose loss turns NaN stops (the default nan_policy): that rate diverged.

    python scripts/sweep.py experiments/study_batchnorm.py --report docs/results/batchnorm --x learning_rate

quick, fifth design (session 22, chosen before any of its runs): the network of Bjorck et al.'s
Fig. 1, a CIFAR ResNet (ResNet-20 here, theirs 110 layers), with BatchNorm after every convolution
or none (the convolutions then carry biases), on the built-in shapes at 32 px (all 20,000
training images), 1,000 steps of 32, SGD momentum 0.9, weight decay 1e-4, flips, cosine schedule
without warm-up. Without BatchNorm each residual block adds its branch's variance to the input's,
so the signal grows with depth and only small rates can train it: the grid runs half-decades from
0.0003 to 1.0, the lower four new, since the earlier designs started at 0.01 (and in the second
design plain-20 without BatchNorm left chance at none of 0.01-1.0). Seeds 1 and 2 repeat both
networks at 0.1 and 0.3. A network "trains" at a rate when every run of it at that rate ends at a
test top-1 of at least 30% (three times chance). Verdict, fixed before the runs: reproduced if
the largest rate at which the BatchNorm network trains is at least 10x (two grid steps) the
largest at which the network without it trains; partly if one step larger; not if not larger;
if the network without BatchNorm trains at no rate of the grid, "higher rates" stays untested.
Planned at about 45 minutes on a 2-core CPU.
fourth design (session 21, commit 08d98e8): the third design's AlexNet with BatchNorm also in FC6
and FC7 (`classifier_norm`), seeds 1 and 2 at 0.1 and 0.3: both trained at 0.01-0.03, neither
at 0.1 (one BatchNorm seed of three 37.6%); not reproduced.
third design (session 19, commit 39ee0df): the half-width AlexNet of study (f) (widths
48-128-192-192-128, FC-512, no dropout, no LRN; the only difference BatchNorm after each
convolution) on the built-in shapes at 67 px (all 20,000 training images), 1,000 steps of 32,
SGD momentum 0.9, cosine schedule without warm-up, with and without BatchNorm at rates 0.01,
0.03, 0.1, 0.3 and 1.0, seeds 1 and 2 at 0.1: both trained at 0.01-0.03 and neither at 0.1.
second design (issue 22, commit 7232423): plain-20 and plain-8 at 32 px, 600 steps, rates
0.01-1.0; without BatchNorm no network left chance at any rate.
full: CIFAR-10, 20k iterations of 128 per run with a cosine schedule, ResNet-110 (Bjorck et al.'s
network) with and without BN.
"""

import pathlib

from jaxconv.train.config import load_config

VARIANTS = ("quick", "full")
HERE = pathlib.Path(__file__).parent
LEARNING_RATES = {"quick": (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0), "full": (0.01, 0.05, 0.2, 0.5, 1.0)}
REPEATED = {"quick": ((0.1, 1), (0.1, 2), (0.3, 1), (0.3, 2)), "full": ()}  # (rate, seed) repeated with and without BatchNorm


def get_config(variant="quick"):
    if variant == "full":
        config = load_config(HERE / "cifar10_resnet20.py")
        config.model = "resnet110"
        config.num_train_steps = 20_000
        config.schedule = "cosine"
        config.eval_every_steps = 2_000
    else:
        config = load_config(HERE / "default.py")  # ResNet-20, 32 px, 1,000 steps of 32, SGD momentum 0.9, cosine, flips
        config.eval_every_steps = 500
        config.checkpoint_every_steps = 500
        config.log_every_steps = 25
    config.warmup_epochs = 0.0  # the learning rate itself is under test
    return config


def _run(norm: str, lr: float, seed: int, variant: str) -> dict:
    run = {"learning_rate": lr}
    if norm == "none":
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
