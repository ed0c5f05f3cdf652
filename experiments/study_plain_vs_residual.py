"""Study (a): plain vs residual networks — the ResNet paper's Fig. 6 (CIFAR-10) and Table 2 (ImageNet).

Deeper plain networks train worse (plain-56 has higher training error than plain-20), deeper
residual networks train better. Runs: plain20/56 and resnet20/56 (quick), plain20/32/44/56 and
resnet20/32/44/56 (full: also plain18/34 and resnet18/34 on ImageNet, the paper's Table 2).

    python scripts/sweep.py experiments/study_plain_vs_residual.py --report docs/results/plain_vs_residual

quick (issue 22, chosen before any of its runs): the built-in shapes dataset at 32 px, 1,000 steps
of 32 (1.6 epochs; the default experiment's budget, in which ResNet-20 reaches ~95%), depths 20
and 56. The degradation is read from the training loss and accuracy, where the paper's Fig. 6
shows it; plain-20 and plain-56 run with seeds 0, 1 and 2 so that the gap can be set against the
run-to-run spread (the residual networks with seed 0). Planned at about 45 minutes on a 2-core CPU.
Before issue 22 it ran 400 steps at 16 px, where no depth effect showed (docs/results).
full: CIFAR-10 with the paper's recipe (experiments/cifar10_resnet20.py), 64k iterations, and
ImageNet with experiments/imagenet_resnet50.py's recipe.
"""

import pathlib

from jaxconv.train.config import load_config

VARIANTS = ("quick", "full")
HERE = pathlib.Path(__file__).parent
CIFAR_DEPTHS = (20, 32, 44, 56)
QUICK_DEPTHS = (20, 56)  # the shallowest and the deepest: all four with seeds do not fit the hour
QUICK_SEEDS = (0, 1, 2)  # for the plain networks, whose gap is the finding


def get_config(variant="quick"):
    if variant == "full":
        return load_config(HERE / "cifar10_resnet20.py")
    config = load_config(HERE / "default.py")  # 32 px, 1,000 steps of 32, SGD 0.05 cosine
    config.eval_every_steps = 500
    config.checkpoint_every_steps = 500
    config.log_every_steps = 25
    return config


def get_runs(variant="quick"):
    depths = CIFAR_DEPTHS if variant == "full" else QUICK_DEPTHS
    runs = {f"{kind}{depth}": {"model": f"{kind}{depth}"} for kind in ("plain", "resnet") for depth in depths}
    if variant == "quick":
        for seed in QUICK_SEEDS[1:]:
            runs.update({f"plain{depth}_seed{seed}": {"model": f"plain{depth}", "seed": seed} for depth in depths})
    if variant == "full":
        imagenet = str(HERE / "imagenet_resnet50.py")
        for name in ("plain18", "plain34", "resnet18", "resnet34"):
            runs[f"imagenet_{name}"] = {"model": name, "_experiment": imagenet}
    return runs
