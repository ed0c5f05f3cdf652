"""Study (g): EfficientNet's compound scaling vs scaling depth, width or resolution alone, at (nominally) matched MACs.

From a small base (EfficientNet-B0's stages at 32 px), each run nominally doubles the MACs one way:
depth x2 (d=2.0), width x1.41 (w=1.4: MACs grow ~w²), resolution x1.41 (45 px), or all three
with the paper's coefficients α=1.2, β=1.1, γ=1.15 at φ=1 (α·β²·γ² ≈ 2): d=1.2, w=1.1, 37 px.
The paper (Fig. 3, 4): single-dimension scaling saturates; compound scaling gains most per MAC.

The multipliers are nominal: EfficientNet rounds stage repeats up, and small maps round up
under "same" padding, so the measured MACs differ (docs/results/scaling: at 224 px depth
2.03x, width 1.93x, resolution 2.02x, compound 2.57x; at the quick variant's 32 px compound
is 4.43x). Check `jaxconv summary` before reading accuracy per MAC off these runs.

    python scripts/sweep.py experiments/study_scaling.py --report docs/results/scaling

quick: built-in shapes, 300 steps of 32 per run (2-core CPU).
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


def get_runs(variant="quick"):
    base = 224 if variant == "full" else 32
    scaled = {"base": (1.0, 1.0, 1.0), "depth": (2.0, 1.0, 1.0), "width": (1.0, 1.4, 1.0),
              "resolution": (1.0, 1.0, 1.41), "compound": (1.2, 1.1, 1.15)}
    return {
        name: {"model_options.depth": depth, "model_options.width": width, "image_size": round(base * resolution)}
        for name, (depth, width, resolution) in scaled.items()
    }
