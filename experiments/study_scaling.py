"""Study (g): EfficientNet's compound scaling vs scaling depth, width or resolution alone, at matched MACs.

The paper (Fig. 3, 4): single-dimension scaling saturates; compound scaling gains most per MAC.
Each scaled run costs twice the base's MACs to within 5%, as measured by the analyzer — not as
the nominal multipliers promise: EfficientNet rounds each stage's repeats up (d = 1.2 turns
B0's 16 blocks into 23), rounds channels to multiples of 8, and small maps round up under
"same" padding. The settings below were picked from `jaxconv.analysis.summary`'s MACs;
tests/test_compare.py checks them.

full (EfficientNet-B0 at 224 px as the base): depth 2.0 (2.03x the base's MACs), width 1.45
(2.00x), 316 px (2.02x), and compound with the paper's alpha=1.2, beta=1.1, gamma=1.15 at
phi=0.6 (d=1.116, w=1.059, 244 px: 2.05x; phi=1 would cost 2.57x).
quick (B0's stages at width 0.5 and 72 px as the base: at B0's full width a 2-core CPU cannot
afford an input large enough to scale; at 32 px no input size or compound setting can be
matched): depth 2.0 (2.07x), width 0.74 (1.48x the base's: 1.94x), 107 px (1.99x), and compound
at phi=0.8 (d=1.157, width 0.5 x 1.079, 81 px: 2.08x).

    python scripts/sweep.py experiments/study_scaling.py --report docs/results/scaling

quick: built-in shapes (5,000 training images), 100 steps of 32 per run (2-core CPU, under 15
min): it exercises the study end to end and measures what matched MACs cost in time; it is far
too short for accuracy per MAC.
full: ImageNet, experiments/imagenet_resnet50.py's schedule with EfficientNet-B0 at 224 as the base.
"""

import pathlib

from jaxconv.train.config import load_config

VARIANTS = ("quick", "full")
HERE = pathlib.Path(__file__).parent

# run -> (depth, width, image size); see the docstring for how they were chosen.
FULL = {"base": (1.0, 1.0, 224), "depth": (2.0, 1.0, 224), "width": (1.0, 1.45, 224),
        "resolution": (1.0, 1.0, 316), "compound": (1.2**0.6, 1.1**0.6, 244)}
QUICK = {"base": (1.0, 0.5, 72), "depth": (2.0, 0.5, 72), "width": (1.0, 0.74, 72),
         "resolution": (1.0, 0.5, 107), "compound": (1.2**0.8, 0.5 * 1.1**0.8, 81)}
SETTINGS = {"full": FULL, "quick": QUICK}


def get_config(variant="quick"):
    if variant == "full":
        config = load_config(HERE / "imagenet_resnet50.py")
    else:
        config = load_config(HERE / "default.py")
        config.shapes_train_examples = 5_000
        config.shapes_test_examples = 500
        config.num_train_steps = 100
        config.log_every_steps = 25
        config.eval_every_steps = 100
        config.checkpoint_every_steps = 100
    config.model = "efficientnet_b0"
    depth, width, image_size = SETTINGS[variant]["base"]
    config.model_options.depth, config.model_options.width, config.image_size = depth, width, image_size
    return config


def get_runs(variant="quick"):
    return {
        name: {"model_options.depth": round(depth, 3), "model_options.width": round(width, 3),
               "image_size": image_size}
        for name, (depth, width, image_size) in SETTINGS[variant].items()
    }
