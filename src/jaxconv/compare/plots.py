"""The comparison's figures as PNG files (matplotlib, no display needed).

* accuracy against GMACs with bubble area proportional to parameters (Canziani et al. 2017,
  "An analysis of deep neural network models for practical applications", as the lectures show);
* one network's parameters and activations layer by layer (for VGG16: "most memory is in the
  early convolutions, most parameters in the late FC layers");
* training curves of runs (loss and evaluation top-1 against steps).
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402

from jaxconv.compare.runs import Run  # noqa: E402


def _save(fig, path: str | pathlib.Path) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_accuracy_vs_gmacs(rows: Sequence[dict], path: str | pathlib.Path, *, accuracy: str = "published",
                           title: str | None = None) -> pathlib.Path | None:
    """Top-1 against GMACs, one bubble per model with area proportional to its parameters.

    ``accuracy`` picks 'published' or 'your' top-1 from compare_rows; models without that
    figure are left out. Returns the path, or None when no model has the figure.
    """
    key = f"{accuracy}_top1"
    points = [r for r in rows if r.get(key) is not None]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(8, 5.5))
    largest = max(r["params"] for r in points)
    for r in points:
        ax.scatter(r["gmacs"], r[key], s=2000 * r["params"] / largest + 20, alpha=0.45, edgecolors="black")
        ax.annotate(r["model"], (r["gmacs"], r[key]), textcoords="offset points", xytext=(6, 6), fontsize=9)
    ax.set_xscale("log")
    ax.set_xlabel("GMACs per image (log scale)")
    ax.set_ylabel(f"{accuracy} top-1 accuracy (%)")
    ax.grid(True, which="both", alpha=0.3)
    smallest = min(r["params"] for r in points)
    ax.set_title(title or f"Accuracy vs compute; bubble area ∝ parameters ({smallest / 1e6:.1f}M to {largest / 1e6:.0f}M)")
    return _save(fig, path)


def plot_layer_profile(summary, path: str | pathlib.Path) -> pathlib.Path:
    """Parameters and activations of every layer that has either, in forward order (one ModelSummary)."""
    layers = [layer for layer in summary.layers if layer.params or layer.kind in ("Input", "Conv", "Dense", "MaxPool")]
    names = [layer.name for layer in layers]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(8, 0.42 * len(layers)), 7), sharex=True)
    top.bar(names, [layer.activations / 1e6 for layer in layers], color="tab:blue")
    top.set_ylabel("activations (millions per image)")
    top.set_title(f"{summary.model}: memory is in the early layers, parameters in the late ones")
    bottom.bar(names, [layer.params / 1e6 for layer in layers], color="tab:orange")
    bottom.set_ylabel("parameters (millions)")
    bottom.tick_params(axis="x", labelrotation=90)
    for axis in (top, bottom):
        axis.grid(True, axis="y", alpha=0.3)
    return _save(fig, path)


def plot_training_curves(runs: Sequence[Run], path: str | pathlib.Path, *, title: str | None = None) -> pathlib.Path | None:
    """Training loss and evaluation top-1 against steps, one line per run. None when no run logged."""
    runs = [r for r in runs if r.train or r.evals]
    if not runs:
        return None
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    for run in runs:
        if run.train:
            loss_ax.plot([r["step"] for r in run.train], [r["loss"] for r in run.train], label=run.name)
        if run.evals:
            acc_ax.plot([r["step"] for r in run.evals], [100 * r["top1"] for r in run.evals], marker="o", label=run.name)
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("training loss")
    acc_ax.set_xlabel("step")
    acc_ax.set_ylabel("evaluation top-1 (%)")
    for axis in (loss_ax, acc_ax):
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def layer_norm_snapshots(run: Run, count: int = 4) -> list[dict]:
    """Up to ``count`` training records with per-layer gradient norms, spread from the first to the last."""
    logged = [r for r in run.train if r.get("layer_grad_norms")]
    if len(logged) <= count:
        return logged
    picks = sorted({round(i * (len(logged) - 1) / (count - 1)) for i in range(count)})
    return [logged[i] for i in picks]


def plot_layer_gradient_norms(runs: Sequence[Run], path: str | pathlib.Path, *,
                              title: str | None = None) -> pathlib.Path | None:
    """Per-layer gradient norms (log scale) against depth, one panel per run, one line per logged step.

    Reads the 'layer_grad_norms' of runs trained with config.log_layer_grad_norms; None when no run has them.
    Vanishing gradients show as lines falling towards the input (layer 1).
    """
    runs = [run for run in runs if layer_norm_snapshots(run)]
    if not runs:
        return None
    columns = min(3, len(runs))
    rows = -(-len(runs) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.6 * rows), squeeze=False, sharey=True,
                             layout="constrained")
    for ax, run in zip(axes.flat, runs):
        snapshots = layer_norm_snapshots(run)
        colours = plt.cm.viridis([i / max(1, len(snapshots) - 1) for i in range(len(snapshots))])
        for colour, record in zip(colours, snapshots):
            norms = list(record["layer_grad_norms"].values())
            ax.plot(range(1, len(norms) + 1), [max(n, 1e-30) for n in norms], color=colour, marker=".",
                    label=f"step {record['step']}")
        ax.set_yscale("log")
        ax.set_title(run.name, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("gradient norm of the kernel")
    for ax in list(axes.flat)[len(runs):]:
        ax.set_visible(False)
    fig.supxlabel("layer (input → output)")
    if title:
        fig.suptitle(title)
    return _save(fig, path)
