"""Study (g): EfficientNet's compound scaling vs scaling depth, width or resolution alone, at matched MACs.

The paper (Fig. 3, 4): single-dimension scaling saturates; compound scaling gains most per MAC.
Each scaled run should cost about twice the base's MACs, as measured by the analyzer — not as
the nominal multipliers promise: EfficientNet rounds each stage's repeats up (d = 1.2 turns
B0's 16 blocks into 23), and small maps round up under "same" padding.

full (224 px base): depth 2.0 (2.03x the base's MACs), width 1.45 (2.00x), 316 px (2.02x), and
compound with the paper's alpha=1.2, beta=1.1, gamma=1.15 at phi=0.6 rather than 1 (d=1.116,
w=1.059, 244 px: 2.05x; phi=1 would cost 2.57x) — chosen from `jaxconv.analysis.summary`'s MACs
(tests/test_compare.py checks them).
quick (32 px base): the nominal multipliers (depth 2.0, width 1.4, 45 px, and phi=1: 1.2, 1.1,
37 px). At 32 px the last stages' maps are 1-2 pixels, so no resolution step can be matched:
any larger input costs at least 2.4x and compound at least 4.0x (docs/results/scaling); read
its runs for the pipeline, not for accuracy per MAC.

    python scripts/sweep.py experiments/study_scaling.py --report docs/results/scaling

quick: built-in shapes, 300 steps of 32 per run (2-core CPU, 22 min).
full: ImageNet, experiments/imagenet_resnet50.py's schedule with EfficientNet-B0 at 224 as the base.
"""

import pathlib

from jaxconv.train.config import load_config

VARIANTS = ("quick", "full")
HERE = pathlib.Path(__file__).parent


def get_config(variant="quick"):
    if variant == "full":
        config = load_config(HERE / "imagenet_resnet50.py")
        config.image_size = 224
    else:
        config = load_config(HERE / "default.py")
        config.image_size = 32
        config.num_train_steps = 300
        config.eval_every_steps = 150
        config.checkpoint_every_steps = 150
    config.model = "efficientnet_b0"
    return config


# (depth, width, resolution multiplier) per run; see the docstring for how they were chosen.
FULL = {"base": (1.0, 1.0, 1.0), "depth": (2.0, 1.0, 1.0), "width": (1.0, 1.45, 1.0),
        "resolution": (1.0, 1.0, 316 / 224), "compound": (1.2**0.6, 1.1**0.6, 244 / 224)}
QUICK = {"base": (1.0, 1.0, 1.0), "depth": (2.0, 1.0, 1.0), "width": (1.0, 1.4, 1.0),
         "resolution": (1.0, 1.0, 1.41), "compound": (1.2, 1.1, 1.15)}


def get_runs(variant="quick"):
    base, scaled = (224, FULL) if variant == "full" else (32, QUICK)
    return {
        name: {"model_options.depth": round(depth, 3), "model_options.width": round(width, 3),
               "image_size": round(base * resolution)}
        for name, (depth, width, resolution) in scaled.items()
    }
