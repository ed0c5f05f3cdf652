"""Study (a): plain vs residual networks — the ResNet paper's Fig. 6 (CIFAR-10) and Table 2 (ImageNet).

Deeper plain networks train worse (plain-56 has higher training error than plain-20), deeper
residual networks train better. Runs: plain20/56 and resnet20/56 (quick), plain20/32/44/56 and
resnet20/32/44/56 (full: also plain18/34 and resnet18/34 on ImageNet, the paper's Table 2).

    python scripts/sweep.py experiments/study_plain_vs_residual.py --report docs/results/plain_vs_residual

quick: the built-in shapes dataset at 16 px, 400 steps of 32 per network, depths 20 and 56 only
(2-core CPU: about 10 minutes; all four depths take 22).
full: CIFAR-10 with the paper's recipe (experiments/cifar10_resnet20.py), 64k iterations, and
ImageNet with experiments/imagenet_resnet50.py's recipe.
"""

import pathlib

from jaxconv.train.config import load_config

VARIANTS = ("quick", "full")
HERE = pathlib.Path(__file__).parent
CIFAR_DEPTHS = (20, 32, 44, 56)
QUICK_DEPTHS = (20, 56)  # the shallowest and the deepest: all four do not fit the 15-minute budget


def get_config(variant="quick"):
    if variant == "full":
        return load_config(HERE / "cifar10_resnet20.py")
    config = load_config(HERE / "default.py")
    config.image_size = 16
    config.num_train_steps = 400
    config.warmup_epochs = 0.1
    config.eval_every_steps = 200
    config.checkpoint_every_steps = 200
    return config


def get_runs(variant="quick"):
    depths = CIFAR_DEPTHS if variant == "full" else QUICK_DEPTHS
    runs = {f"{kind}{depth}": {"model": f"{kind}{depth}"} for kind in ("plain", "resnet") for depth in depths}
    if variant == "full":
        imagenet = str(HERE / "imagenet_resnet50.py")
        for name in ("plain18", "plain34", "resnet18", "resnet34"):
            runs[f"imagenet_{name}"] = {"model": name, "_experiment": imagenet}
    return runs
