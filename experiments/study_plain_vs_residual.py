"""Study (a): plain vs residual networks — the ResNet paper's Fig. 6 (CIFAR-10) and Table 2 (ImageNet).

Deeper plain networks train worse (plain-56 has higher training error than plain-20), deeper
residual networks train better. Runs: plain20/56 and resnet20/56 (quick), plain20/32/44/56 and
resnet20/32/44/56 (full: also plain18/34 and resnet18/34 on ImageNet, the paper's Table 2).

    python scripts/sweep.py experiments/study_plain_vs_residual.py --report docs/results/plain_vs_residual

quick, second design (issue 22, chosen before any of its runs, 2026-12-03): the first design's
data, budget and recipe (the built-in shapes at 32 px, 1,000 steps of 32, SGD momentum with
warm-up and cosine decay) at the paper's learning rate scaled to our batch: 0.1 at 128 (§4.2) is
0.025 at 32, where the first design ran 0.05 (the default experiment's), twice the paper's rate per
image. Runs: ResNet-20 and ResNet-56 with seeds 0, 1 and 2 first (the half the first design did
not show: ResNet-56 was at 41% where ResNet-20 was at 94%, one seed each), then plain-20 and
plain-56 with seed 0 (does the degradation hold at this rate?), about 55 minutes on a 2-core CPU.
Verdict rule, fixed now, on the final training top-1 (mean of the last 25 steps): shortcuts remove
the degradation if ResNet-56's mean over its seeds is not below ResNet-20's by more than the larger
of their two standard deviations; the deeper residual network trains better, as in Fig. 6, if its
mean is above by that margin. The first design (0.05; plain-20/56 with seeds 0-2, ResNet-20/56
with seed 0) is this file at 47e9e89; its results stay on the page. Before issue 22 it ran 400
steps at 16 px, where no depth effect showed (docs/results).
full: CIFAR-10 with the paper's recipe (experiments/cifar10_resnet20.py), 64k iterations, and
ImageNet with experiments/imagenet_resnet50.py's recipe.
"""

import pathlib

from jaxconv.train.config import load_config

VARIANTS = ("quick", "full")
HERE = pathlib.Path(__file__).parent
CIFAR_DEPTHS = (20, 32, 44, 56)
QUICK_DEPTHS = (20, 56)  # the shallowest and the deepest: all four with seeds do not fit the hour
QUICK_SEEDS = (0, 1, 2)  # for the residual networks (second design)
QUICK_LEARNING_RATE = 0.025  # the paper's 0.1 at batch 128, scaled linearly to batch 32


def get_config(variant="quick"):
    if variant == "full":
        return load_config(HERE / "cifar10_resnet20.py")
    config = load_config(HERE / "default.py")  # 32 px, 1,000 steps of 32, SGD 0.05 cosine
    config.learning_rate = QUICK_LEARNING_RATE
    config.eval_every_steps = 500
    config.checkpoint_every_steps = 500
    config.log_every_steps = 25
    return config


def get_runs(variant="quick"):
    if variant == "quick":  # the residual networks with their seeds first, then the plain pair
        runs = {}
        for seed in QUICK_SEEDS:
            runs.update({f"resnet{depth}" + (f"_seed{seed}" if seed else ""): {"model": f"resnet{depth}"} |
                         ({"seed": seed} if seed else {}) for depth in QUICK_DEPTHS})
        return runs | {f"plain{depth}": {"model": f"plain{depth}"} for depth in QUICK_DEPTHS}
    runs = {f"{kind}{depth}": {"model": f"{kind}{depth}"} for kind in ("plain", "resnet") for depth in CIFAR_DEPTHS}
    imagenet = str(HERE / "imagenet_resnet50.py")
    for name in ("plain18", "plain34", "resnet18", "resnet34"):
        runs[f"imagenet_{name}"] = {"model": name, "_experiment": imagenet}
    return runs
