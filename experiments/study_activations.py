"""Study (e): activations in a deep plain network — vanishing gradients, layer by layer, and accuracy.

plain-20 (no shortcuts) with sigmoid, tanh, ReLU, leaky ReLU and swish, each with and without
BatchNorm (without it the convolutions carry biases). Every run logs the gradient norm of each
kernel at every log step (config.log_layer_grad_norms), so `jaxconv report` plots them against
depth as training goes on; the evaluation top-1 gives the accuracy side. The norms at
initialization alone, for many activations at once: scripts/gradient_norms.py.

    python scripts/sweep.py experiments/study_activations.py --report docs/results/activations/training

quick: the built-in shapes dataset at 16 px, 400 steps of 32 per run, learning rate 0.05 as
in experiments/default.py (2-core CPU).
full: CIFAR-10 with the ResNet paper's CIFAR recipe (experiments/cifar10_resnet20.py), 32k iterations.
"""

import pathlib

from jaxconv.train.config import load_config

VARIANTS = ("quick", "full")
HERE = pathlib.Path(__file__).parent
ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "swish")


def get_config(variant="quick"):
    if variant == "full":
        config = load_config(HERE / "cifar10_resnet20.py")
        config.num_train_steps = 32_000
        config.log_every_steps = 500
        config.eval_every_steps = 4_000
    else:
        config = load_config(HERE / "default.py")
        config.image_size = 16
        config.num_train_steps = 400
        config.log_every_steps = 50
        config.eval_every_steps = 200
        config.checkpoint_every_steps = 200
    config.model = "plain20"
    config.log_layer_grad_norms = True
    return config


def get_runs(variant="quick"):
    runs = {}
    for norm in ("bn", "nobn"):
        for act in ACTIVATIONS:
            runs[f"{act}_{norm}"] = {"model_options.act": act, **({"model_options.norm": None} if norm == "nobn" else {})}
    return runs
