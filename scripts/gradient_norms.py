"""Per-layer gradient norms at initialization of one network under several activations (study e).

    python scripts/gradient_norms.py --model plain20 --norm none --out docs/results/activations

For each activation the network is initialized with the same seed and the cross-entropy
gradient of every kernel is measured on one batch of standard-normal images with random
labels (the property under test is the architecture's gradient flow, not the data). Writes
a markdown table (first, middle and last layers, and the first/last ratio) and a plot of
norm against depth, log scale: sigmoid's gradient vanishes towards the input, ReLU's does not.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import jax

from jaxconv.analysis.gradients import layer_gradient_norms
from jaxconv.layers.activations import ACTIVATIONS
from jaxconv.models import get_model, model_info

DEFAULT_ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "swish")


def measure(model_name: str, activations, *, norm: str, image_size: int, batch_size: int, seed: int = 0) -> dict:
    info = model_info(model_name)
    images = jax.random.normal(jax.random.key(seed), (batch_size, image_size, image_size, info.in_channels))
    labels = jax.random.randint(jax.random.key(seed + 1), (batch_size,), 0, info.num_classes)
    results = {}
    for act in activations:
        options = {"act": act} | ({"norm": None} if norm == "none" else {})
        model = get_model(model_name, **options)
        variables = jax.jit(lambda x, m=model: m.init(jax.random.key(seed), x, train=False))(images[:1])
        results[act] = layer_gradient_norms(model, variables, images, labels)
    return results


def markdown(results: dict, title: str) -> str:
    acts = list(results)
    layers = [name for name, _ in next(iter(results.values()))]
    picks = sorted({0, len(layers) // 2, len(layers) - 1})
    lines = [f"## {title}", "", "| layer | " + " | ".join(acts) + " |", "|---|" + "---:|" * len(acts)]
    for i in picks:
        lines.append(f"| {i + 1}: {layers[i]} | " + " | ".join(f"{results[a][i][1]:.3g}" for a in acts) + " |")
    ratio = [results[a][0][1] / max(results[a][-1][1], 1e-30) for a in acts]
    lines.append("| first / last layer | " + " | ".join(f"{r:.3g}" for r in ratio) + " |")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: pathlib.Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for act, norms in results.items():
        ax.plot(range(1, len(norms) + 1), [max(n, 1e-30) for _, n in norms], marker=".", label=act)
    ax.set_yscale("log")
    ax.set_xlabel("layer (input → output)")
    ax.set_ylabel("gradient norm of the kernel")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="plain20")
    parser.add_argument("--acts", nargs="+", default=list(DEFAULT_ACTIVATIONS), choices=sorted(ACTIVATIONS))
    parser.add_argument("--norm", choices=("batchnorm", "none"), default="none")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", help="directory for gradient_norms.md and gradient_norms.png")
    args = parser.parse_args(argv)
    try:
        model_info(args.model)
    except ValueError as e:
        print(f"gradient_norms: error: {e}", file=sys.stderr)
        return 2
    results = measure(args.model, args.acts, norm=args.norm, image_size=args.image_size, batch_size=args.batch_size)
    title = f"{args.model}, norm={args.norm}: gradient norms at initialization"
    text = markdown(results, title)
    print(text)
    if args.out:
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "gradient_norms.md").write_text(text)
        plot(results, out / "gradient_norms.png", title)
    return 0


if __name__ == "__main__":
    sys.exit(main())
