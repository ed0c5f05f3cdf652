"""Study (e): activations in a deep plain network — vanishing gradients, layer by layer, and accuracy.

plain-20 (no shortcuts) with sigmoid, tanh, ReLU, leaky ReLU and swish, each with and without
BatchNorm (without it the convolutions carry biases). Every run logs the gradient norm of each
kernel at every log step (config.log_layer_grad_norms), so `jaxconv report` plots them against
depth as training goes on; the evaluation top-1 gives the accuracy side. The norms at
initialization alone, for many activations at once: scripts/gradient_norms.py.

    python scripts/sweep.py experiments/study_activations.py --report docs/results/activations/training

The published findings: sigmoid networks' gradients shrink towards the input (Glorot & Bengio
2010, Fig. 7 and §4; the lectures' "sigmoid kills gradients"), and ReLU networks train several
times faster than saturating ones (Krizhevsky et al. 2012, Fig. 1: a 4-layer CNN reaches 25%
CIFAR-10 training error six times faster with ReLU than with tanh).

quick (issue 22, chosen before any of its runs): the built-in shapes at 32 px, 1,000 steps of 32
(the default experiment's budget), learning rate 0.05; ten runs, plus seeds 1 and 2 of ReLU and
sigmoid with BatchNorm, whose gap is the accuracy finding. Planned at about 55 minutes on a
2-core CPU. Before issue 22: 400 steps at 16 px, where accuracy did not separate.
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
        config = load_config(HERE / "default.py")  # 32 px, 1,000 steps of 32, SGD 0.05 cosine
        config.log_every_steps = 50
        config.eval_every_steps = 500
        config.checkpoint_every_steps = 500
    config.model = "plain20"
    config.log_layer_grad_norms = True
    return config


def get_runs(variant="quick"):
    runs = {}
    for norm in ("bn", "nobn"):
        for act in ACTIVATIONS:
            runs[f"{act}_{norm}"] = {"model_options.act": act, **({"model_options.norm": None} if norm == "nobn" else {})}
    if variant == "quick":
        for seed in (1, 2):
            for act in ("relu", "sigmoid"):
                runs[f"{act}_bn_seed{seed}"] = {"model_options.act": act, "seed": seed}
    return runs
