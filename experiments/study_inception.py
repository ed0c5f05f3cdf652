"""Study (c): the naive Inception module vs the one with 1x1 reductions — MACs and accuracy.

The lectures count, at 28x28x256 input, 854M ops for the naive module and 358M with 1x1
"bottleneck" reductions (`jaxconv summary` reproduces both; docs/analysis.md). Here a small
network of four modules (archs/inception_small.py), same branch widths either way: the naive
one has ~4x the MACs and ~5x the parameters, since its pooling branch lets channels pile up.

    python scripts/sweep.py experiments/study_inception.py --report docs/results/inception

The published finding: the 1x1 reductions cut the module's cost (the lectures: 854M vs 358M ops)
"without a blow-up in computational complexity" and without costing accuracy (Szegedy et al. 2015,
§4); so the reduced network should train at least as well as the naive one at a quarter of its
MACs.

quick (issue 22, chosen before any of its runs): built-in shapes at 16 px (at 32 px the naive
network costs ten ResNet-20s), 1,000 steps of 32, seeds 0, 1 and 2 of both. Planned at about 40
minutes on a 2-core CPU. Before issue 22: 300 steps, one seed.
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
        config.num_train_steps = 1_000
        config.eval_every_steps = 500
        config.checkpoint_every_steps = 500
        config.log_every_steps = 25
    config.model = "inception_small"
    return config


def get_runs(variant="quick"):
    runs = {}
    for seed in (0, 1, 2) if variant == "quick" else (0,):
        suffix, extra = (f"_seed{seed}", {"seed": seed}) if seed else ("", {})
        runs[f"reduced{suffix}"] = {"model": "inception_small", **extra}
        runs[f"naive{suffix}"] = {"model": "inception_small_naive", **extra}
    return runs
