"""Study (d): BatchNorm vs none — does BatchNorm let a network train at learning rates that stop it without?

The lectures: BatchNorm "makes deep networks much easier to train, allows higher learning rates,
faster convergence" (Ioffe & Szegedy 2015, §3.3 and the BN-x5 / BN-x30 runs of §4.2; Bjorck et
al. 2018, Fig. 1: without BN only small rates train, with BN rates 10-1000x larger do). A run
whose loss turns NaN stops (the default nan_policy): that rate diverged.

    python scripts/sweep.py experiments/study_batchnorm.py --report docs/results/batchnorm --x learning_rate

quick, eighth design (session 29, chosen before any of its runs, after reading the seventh's curves):
the sixth design (1,000 steps of 32, the default 188-step warm-up) with the rate held constant after
the warm-up instead of decayed, and three seeds (0, 1, 2) at every rate of the grid. Why: in the sixth
and seventh designs every run at a high rate sat on the uniform guess's plateau until the cosine decay
had brought its rate down, and left it at a rate of its own (seventh: with BatchNorm at 0.27 and 0.098,
without at 0.031 and 0.025, logged at the step each left) - under a decaying rate every run is in the
end tested at small rates, so "trains at 0.3" measured the schedule as much as the rate. A constant
rate tests each rate itself, as Ioffe & Szegedy's and Bjorck et al.'s comparisons of rates do. The
seventh's curves suggest which way it may go; the page says so. The rule is unchanged: a network
"trains" at a rate when every run of it at that rate ends at a test top-1 of at least 30%;
reproduced if the largest rate at which the BatchNorm network trains is at least 10x (two grid steps)
the largest at which the network without it trains; partly if one step larger; not if not larger.
30 runs; planned at about 35 minutes.
Result (2026-12-05, 29 min): partly, a third time - with BatchNorm every seed trains up to 0.03
(43-50%), at 0.1 two of three (26.5, 30.7, 37.5%); without it every seed at 0.01 only (0.03: 25.2,
56.6, 33.4%); above 0.03 no seed without BatchNorm left chance, while with it every seed at 0.1 and
one at 0.3 did (docs/results/batchnorm).
seventh design (session 29, commit 5dd0a34, chosen before any of its runs): the sixth design with one change,
its length: 2,000 steps of 32 instead of 1,000 (3.2 epochs; the warm-up stays the default 0.3 epoch,
188 steps, and the cosine decay spans the 2,000). Why: the sixth design used 26 of the hour the
issue gives a quick variant, and its page listed "a longer budget" as untested; at 0.3 the BatchNorm
network left the uniform guess's plateau only after step 500 and its loss was still falling at step
1,000 (1.62-1.82), and one seed without BatchNorm at 0.1 began to leave the plateau in its last steps
(2.15) - both networks get the same longer budget. Rates, seeds, networks, data and the rule are the
sixth design's, unchanged. Planned at about 40 minutes.
Result (2026-12-05, 54 min shared): partly, as the sixth - with BatchNorm every seed trains at 0.1
(63.7-67.5%), without it two of three (seed 1 at chance); at 0.3 two BatchNorm seeds of three, none
without; neither at 1.0 (docs/results/batchnorm).
sixth design (session 23, commit a417b78, chosen before any of its runs): the fourth design's network and
data (the half-width AlexNet of study (f), widths 48-128-192-192-128, FC-512, no dropout, no LRN;
with BatchNorm after every layer but the last, or none; the built-in shapes at 67 px, 1,000 steps
of 32, SGD momentum 0.9, weight decay 1e-4, flips, cosine decay), with one change: the default
experiment's linear warm-up (0.3 epoch, 188 of the 1,000 steps) for both networks. Every earlier
design removed it, so that the rate itself was under test from the first step; but the published
high-rate BatchNorm recipes warm up (Goyal et al. 2017 train a BatchNorm ResNet-50 at 3.2 after a
5-epoch warm-up), and in the third and fourth designs the BatchNorm network at 0.1-0.3 ended at the
uniform guess's loss without diverging, as a network whose first large steps left it dead would.
Rates 0.01, 0.03, 0.1, 0.3, 1.0; seeds 1 and 2 repeat both networks at 0.1, 0.3 and 1.0 (the rates
that decide the verdict). The rule is the fourth and fifth designs': a network "trains" at a rate
when every run of it at that rate ends at a test top-1 of at least 30%; reproduced if the largest
rate at which the BatchNorm network trains is at least 10x (two grid steps) the largest at which
the network without it trains; partly if one step larger; not if not larger; if the network
without BatchNorm trains at no rate, "higher rates" stays untested. Planned at about 35 minutes.
Result (2026-12-04, 25.6 min): partly — with BatchNorm every seed trains at 0.1 (35-44%), without
it none (10-20%); both at 0.01-0.03, neither at 1.0 (docs/results/batchnorm).
fifth design (session 22, commit d072647): ResNet-20 (Bjorck et al.'s network family) with
BatchNorm or none at 32 px, rates 0.0003-1.0 without warm-up: without BatchNorm it trained at no
rate (10-16.5%; diverged at 0.1-1.0), with it at 0.003-0.03 (0.1: two seeds of three); higher
rates untested.
fourth design (session 21, commit 08d98e8): the sixth's networks without warm-up, seeds 1 and 2 at
0.1 and 0.3: both trained at 0.01-0.03, neither at 0.1 (one BatchNorm seed of three 37.6%); not
reproduced.
third design (session 19, commit 39ee0df): the same AlexNet with BatchNorm after the convolutions
only, without warm-up, rates 0.01-1.0, seeds 1 and 2 at 0.1: both trained at 0.01-0.03 and
neither at 0.1.
second design (issue 22, commit 7232423): plain-20 and plain-8 at 32 px, 600 steps, rates
0.01-1.0; without BatchNorm no network left chance at any rate.
full: CIFAR-10, 20k iterations of 128 per run with a cosine schedule, ResNet-110 (Bjorck et al.'s
network) with and without BN.
"""

import pathlib

from jaxconv.train.config import load_config

VARIANTS = ("quick", "full")
HERE = pathlib.Path(__file__).parent
LEARNING_RATES = {"quick": (0.01, 0.03, 0.1, 0.3, 1.0), "full": (0.01, 0.05, 0.2, 0.5, 1.0)}
# (rate, seed) repeated with and without BatchNorm
REPEATED = {"quick": tuple((lr, seed) for lr in LEARNING_RATES["quick"] for seed in (1, 2)), "full": ()}
ALEXNET_HALF = {"widths": (48, 128, 192, 192, 128), "classifier_width": 512, "dropout": 0.0, "lrn": False}


def get_config(variant="quick"):
    if variant == "full":
        config = load_config(HERE / "cifar10_resnet20.py")
        config.model = "resnet110"
        config.num_train_steps = 20_000
        config.schedule = "cosine"
        config.eval_every_steps = 2_000
        config.warmup_epochs = 0.0
    else:
        config = load_config(HERE / "default.py")  # 1,000 steps of 32, SGD momentum 0.9, cosine, 0.3-epoch warm-up, flips
        config.model = "alexnet"
        config.image_size = 67  # AlexNet's 11x11/4 stem: 67 -> 15 -> 7 -> 3 -> 1
        config.schedule = "constant"  # the eighth design: after the warm-up; the sixth and seventh decayed (cosine)
        config.eval_every_steps = 500
        config.checkpoint_every_steps = 500
        config.log_every_steps = 25
        config.model_options.update(ALEXNET_HALF)
    return config


def _run(norm: str, lr: float, seed: int, variant: str) -> dict:
    run = {"learning_rate": lr}
    if norm == "bn" and variant == "quick":
        run["model_options.norm"] = "batch"
        run["model_options.classifier_norm"] = True
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
