"""Study (d): BatchNorm vs none — does BatchNorm let a network train at learning rates that stop it without?

The lectures: BatchNorm "makes deep networks much easier to train, allows higher learning rates,
faster convergence" (Ioffe & Szegedy 2015, §3.3 and the BN-x5 / BN-x30 runs of §4.2; Bjorck et
al. 2018, Fig. 1: without BN only small rates train, with BN rates 10-1000x larger do). Runs: the
CIFAR plain networks (no shortcuts, so that nothing but BatchNorm keeps the signal well scaled)
with and without BatchNorm, at learning rates 0.01, 0.05, 0.2, 0.5 and 1.0. Without BatchNorm
the convolutions carry biases. A run whose loss turns NaN stops (the default nan_policy): that
rate diverged.

    python scripts/sweep.py experiments/study_batchnorm.py --report docs/results/batchnorm --x learning_rate

quick (issue 22, chosen before any of its runs): the built-in shapes at 32 px, 600 steps of 32
(about one epoch), SGD momentum 0.9, cosine schedule without warm-up (the rate itself is under
test); plain-20 and plain-8 (one block per stage: the same network, shallow enough that it may
train without BatchNorm at small rates). Seeds 1 and 2 repeat plain-20 at 0.05 and 0.5, with and
without BatchNorm. Planned at about 45 minutes on a 2-core CPU. Before issue 22 it ran plain-20
only, 300 steps at 16 px, where no network without BatchNorm moved at any rate.
full: CIFAR-10, 20k iterations of 128 per run with a cosine schedule.
"""

import pathlib

from jaxconv.train.config import load_config

VARIANTS = ("quick", "full")
HERE = pathlib.Path(__file__).parent
LEARNING_RATES = (0.01, 0.05, 0.2, 0.5, 1.0)
NETWORKS = {"plain20": {}, "plain8": {"model_options.depths": (1, 1, 1)}}  # quick; full: plain20
REPEATED = ((0.05, 1), (0.05, 2), (0.5, 1), (0.5, 2))  # (rate, seed) of plain-20's repeats


def get_config(variant="quick"):
    if variant == "full":
        config = load_config(HERE / "cifar10_resnet20.py")
        config.num_train_steps = 20_000
        config.schedule = "cosine"
        config.eval_every_steps = 2_000
    else:
        config = load_config(HERE / "default.py")  # 32 px, SGD momentum 0.9, cosine
        config.num_train_steps = 600
        config.eval_every_steps = 600
        config.checkpoint_every_steps = 300
        config.log_every_steps = 25
    config.model = "plain20"
    config.warmup_epochs = 0.0  # the learning rate itself is under test
    return config


def _run(network: str, norm: str, lr: float, seed: int = 0) -> dict:
    run = {"model": "plain20", "learning_rate": lr, **NETWORKS[network]}
    if norm == "none":
        run["model_options.norm"] = None
    if seed:
        run["seed"] = seed
    return run


def get_runs(variant="quick"):
    networks = NETWORKS if variant == "quick" else {"plain20": {}}
    runs = {}
    for network in networks:
        for norm in ("bn", "none"):
            for lr in LEARNING_RATES:
                prefix = "" if network == "plain20" else f"{network}_"
                runs[f"{prefix}{norm}_lr{lr}"] = _run(network, norm, lr)
    if variant == "quick":
        for lr, seed in REPEATED:
            for norm in ("bn", "none"):
                runs[f"{norm}_lr{lr}_seed{seed}"] = _run("plain20", norm, lr, seed)
    return runs
