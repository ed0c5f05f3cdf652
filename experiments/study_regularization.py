"""Study (f): dropout on/off in AlexNet's FC layers, and data augmentation on/off.

AlexNet (the paper's layers at half width, FC-512 classifier so that it trains on a CPU) on
the built-in dataset: dropout 0.5 in FC6/FC7 (the paper) or none, crossed with flips and
random crops (the 'cifar' recipe: pad 4 and crop) or no augmentation. The lectures: both fight
overfitting; with little data and many FC parameters, both should narrow the train/test gap.

    python scripts/sweep.py experiments/study_regularization.py --report docs/results/regularization

The published finding: without dropout AlexNet "exhibits substantial overfitting", and without
its augmentation it "suffers from substantial overfitting" (Krizhevsky et al. 2012, §4.1-4.2).

quick (issue 22, chosen before any of its runs): built-in shapes at 67 px (AlexNet's 11x11/4
stem fits 67: 67 -> 15 -> 7 -> 3 -> 1), 1,000 training images and 2,400 steps of 32 (77
epochs), so that the unregularized network can overfit before the budget ends; seeds 0 and 1 of
all four runs. Planned at about 50 minutes on a 2-core CPU. Before issue 22: 2,000 images and
400 steps (6.4 epochs), where every run still underfit.
full: the paper's AlexNet on ImageNet (experiments/imagenet_alexnet.py) with dropout 0.5 / 0.
"""

import pathlib

from jaxconv.train.config import load_config

VARIANTS = ("quick", "full")
HERE = pathlib.Path(__file__).parent


def get_config(variant="quick"):
    if variant == "full":
        return load_config(HERE / "imagenet_alexnet.py")
    config = load_config(HERE / "default.py")
    config.model = "alexnet"
    config.image_size = 67
    config.shapes_train_examples = 1_000
    config.num_train_steps = 2_400
    config.learning_rate = 0.01
    config.eval_every_steps = 400
    config.checkpoint_every_steps = 800
    config.log_every_steps = 50
    config.model_options.widths = (48, 128, 192, 192, 128)
    config.model_options.classifier_width = 512
    return config


def get_runs(variant="quick"):
    augmented = "cifar" if variant == "quick" else "alexnet"
    runs = {}
    for seed in (0, 1) if variant == "quick" else (0,):
        for rate in (0.5, 0.0):
            for augment in (augmented, "none"):
                name = f"dropout{rate}_{'aug' if augment != 'none' else 'noaug'}" + (f"_seed{seed}" if seed else "")
                runs[name] = {"model_options.dropout": rate, "augment": augment, **({"seed": seed} if seed else {})}
    return runs
