"""The comparison's figures as PNG files (matplotlib, no display needed).

* accuracy against GMACs with bubble area proportional to parameters (Canziani et al. 2017,
  "An analysis of deep neural network models for practical applications", as the lectures show);
* one network's parameters and activations layer by layer (for VGG16: "most memory is in the
  early convolutions, most parameters in the late FC layers");
* training curves of runs (training and evaluation loss and top-1, the learning rate).

Axes do not exaggerate: accuracy runs from 0 to 100% with the chance line, loss from 0.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from jaxconv.compare.runs import Run  # noqa: E402


def _literal(text: str) -> str:
    """Titles, run names, keys and labels drawn as written: a '$' in them started matplotlib's TeX parser, whose
    error ('Unknown symbol: \\lr' for `--title '$\\lr$ sweep'`) was a traceback. Escaped here, text by text, so
    that the log axes' tick labels ($10^{-1}$) are still drawn as mathematics (turning the parser off for the
    whole figure printed them as raw TeX)."""
    return str(text).replace("$", r"\$")


def _save(fig, path: str | pathlib.Path) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def millions(count: float) -> str:
    """0.27M, 4.2M, 61M, 138M: two significant figures below 10M."""
    value = count / 1e6
    return f"{value:.2g}M" if value < 10 else f"{value:.0f}M"


def _chance_line(ax, num_classes: int | None, *, scale: float = 100.0, label: str = "chance") -> None:
    if num_classes and num_classes > 1:
        ax.axhline(scale / num_classes, color="grey", linestyle=":", linewidth=1.2,
                   label=f"{label} ({scale / num_classes:.3g}{'%' if scale == 100 else ''})")


def _label_without_overlap(ax, points: Sequence[tuple[float, float, str]], fontsize: int = 9) -> None:
    """Names beside their points, right or left of them, moved up or down in steps until each overlaps no other
    label; a name moved away from its point gets a thin line to it."""
    ax.figure.canvas.draw()
    placed = []
    candidates = [(side, shift) for shift in (6, -12, 18, -24, 30, -36, 42, 54) for side in (1, -1)]
    for x, y, text in sorted(points, key=lambda p: (p[1], p[0])):
        for side, shift in candidates:
            label = ax.annotate(text, (x, y), textcoords="offset points", xytext=(6 * side, shift),
                                ha="left" if side > 0 else "right", fontsize=fontsize)
            box = label.get_window_extent()
            if not any(box.overlaps(other) for other in placed):
                break
            label.remove()
        else:
            side, shift = 1, 6
            label = ax.annotate(text, (x, y), textcoords="offset points", xytext=(6, 6), fontsize=fontsize)
            box = label.get_window_extent()
        if abs(shift) > 6:
            label.remove()
            label = ax.annotate(text, (x, y), textcoords="offset points", xytext=(6 * side, shift),
                                ha="left" if side > 0 else "right", fontsize=fontsize,
                                arrowprops={"arrowstyle": "-", "color": "grey", "linewidth": 0.5})
        placed.append(box)


def plot_accuracy_vs_gmacs(rows: Sequence[dict], path: str | pathlib.Path, *, accuracy: str = "published",
                           title: str | None = None, num_classes: int | None = 1000,
                           lineage: Sequence[str] = ()) -> pathlib.Path | None:
    """Top-1 against GMACs, one bubble per model with area proportional to its parameters.

    ``accuracy`` picks 'published' or 'your' top-1 from compare_rows; models without that
    figure are left out. A row with ``<accuracy>_top1_range`` (low, high) gets a bar over it: the
    spread of a setting's seeds around their mean. The accuracy axis runs from 0 to 100% with the chance line (1 in
    ``num_classes``), so that differences look as large as they are. Returns the path, or None
    when no model has the figure. Where some models are in ``lineage`` (the ILSVRC winners) and
    others not, the two sets get their own colour and legend entry.
    """
    key = f"{accuracy}_top1"
    points = [r for r in rows if r.get(key) is not None]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(8, 5.5) if len(points) <= 15 else (11, 7))
    largest = max(r["params"] for r in points)
    groups = {"ILSVRC lineage (2012-2015)": [r for r in points if r["model"] in lineage],
              "after ILSVRC (2016-2022)": [r for r in points if r["model"] not in lineage]}
    two = all(groups.values())
    for (label, members), colour in zip(groups.items(), ("tab:blue", "tab:orange")):
        if members:
            ax.scatter([r["gmacs"] for r in members], [r[key] for r in members], alpha=0.45, edgecolors="black",
                       s=[2000 * r["params"] / largest for r in members], color=colour,
                       label=label if two else None)
    ranged = [r for r in points if r.get(f"{key}_range")]  # seeds of one setting: their mean, a bar to min and max
    if ranged:
        ax.errorbar([r["gmacs"] for r in ranged], [r[key] for r in ranged], fmt="none", ecolor="black", capsize=4,
                    linewidth=1, yerr=[[r[key] - r[f"{key}_range"][0] for r in ranged],
                                       [r[f"{key}_range"][1] - r[key] for r in ranged]], label="seeds: min–max")
    ax.set_xscale("log")
    ax.margins(x=0.12)  # room for the bubbles and names at either end
    ax.set_ylim(0, 100)
    _chance_line(ax, num_classes)
    ax.set_xlabel("GMACs per image (log scale)")
    ax.set_ylabel(f"{accuracy} top-1 accuracy (%)")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # (nothing labelled: no empty legend, nor matplotlib's warning)
        legend = ax.legend(loc="lower right", fontsize=8)
        for handle in legend.legend_handles:  # one marker size in the legend, whatever the bubbles' sizes
            if hasattr(handle, "set_sizes"):
                handle.set_sizes([60])
    smallest = min(r["params"] for r in points)
    ax.set_title(_literal(title) if title else f"Accuracy vs compute; bubble area ∝ parameters ({millions(smallest)} to {millions(largest)})")
    _label_without_overlap(ax, [(r["gmacs"], r[key], _literal(r["model"])) for r in points], fontsize=9 if len(points) <= 15 else 8)
    return _save(fig, path)


def plot_layer_profile(summary, path: str | pathlib.Path) -> pathlib.Path:
    """Parameters and activations of every layer that has either, in forward order (one ModelSummary)."""
    layers = [layer for layer in summary.layers if layer.params or layer.kind in ("Input", "Conv", "Dense", "MaxPool")]
    names = [_literal(layer.name) for layer in layers]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(8, 0.42 * len(layers)), 7), sharex=True)
    top.bar(names, [layer.activations / 1e6 for layer in layers], color="tab:blue")
    top.set_ylabel("activations (millions per image)")
    top.set_title(f"{_literal(summary.model)}: memory is in the early layers, parameters in the late ones")
    bottom.bar(names, [layer.params / 1e6 for layer in layers], color="tab:orange")
    bottom.set_ylabel("parameters (millions)")
    bottom.tick_params(axis="x", labelrotation=90)
    for axis in (top, bottom):
        axis.grid(True, axis="y", alpha=0.3)
    return _save(fig, path)


def run_labels(runs: Sequence[Run], names: Sequence[str] | None = None) -> list[str]:
    """What to call each run in a legend: its model, with its folder and name (or ``names``' entry) where two
    runs share a model."""
    models = [run.model for run in runs]
    names = names or [run.name for run in runs]
    return [run.model if models.count(run.model) == 1 else f"{run.model} ({run.path.parent.name}/{name})"
            for run, name in zip(runs, names)]


def dataset_classes(runs: Sequence[Run]) -> int | None:
    """The class count of the runs' dataset (None when they differ, or for a folder dataset)."""
    from jaxconv.data.catalog import DATASETS

    counts = {DATASETS[run.dataset].num_classes for run in runs if run.dataset in DATASETS}
    counts.discard(0)  # a folder dataset: its class count is its own
    return counts.pop() if len(counts) == 1 else None


def _diverged(run: Run) -> bool:
    return (run.summary or {}).get("status") == "diverged"


# A loss axis reaches at most this many times the loss of a uniform guess: a run whose loss blew up to 10^4
# and came back (it finished, so it is not marked diverged) flattened every other curve to the floor.
LOSS_AXIS_GUESSES = 4


def _loss_top(losses: Sequence[float], classes: int | None) -> float:
    """The top of a loss axis: a little above the largest finite loss of the runs that did not diverge and the
    loss of a uniform guess (a diverged run's 5e13 flattened every other curve to the floor), but not above
    LOSS_AXIS_GUESSES times that guess's loss; what lies above is marked on the top edge by the caller."""
    import math

    guess = [math.log(classes)] if classes and classes > 1 else []
    finite = [v for v in losses if _is_number(v) and math.isfinite(v)]
    top = max(finite + guess + [1.0]) * 1.15
    return min(top, LOSS_AXIS_GUESSES * guess[0]) if guess else top


def _first_above(records: Sequence[dict], top: float) -> tuple[int, float] | None:
    """(step, loss) of the first record whose loss is above ``top`` (or not finite), and the highest finite loss."""
    import math

    above = [r for r in records if _is_number(r.get("loss")) and not r["loss"] <= top]
    if not above:
        return None
    finite = [r["loss"] for r in above if math.isfinite(r["loss"])]
    return above[0]["step"], max(finite, default=math.inf)


def seed_band(seeds: Sequence[Sequence[dict]], key: str) -> tuple[list, list, list, list]:
    """(steps, mean, min, max) of ``key`` over the seeds' records, at each step that every seed still running
    logged it (a seed that stopped early, e.g. diverged, leaves the later steps to the others; seeds logging
    every 5 and every 8 steps meet every 40, where a mean over the seeds that happened to log would zig-zag
    between them)."""
    values: dict[int, list[float]] = {}
    logged = [{r["step"]: r[key] for r in records if r.get(key) is not None} for records in seeds]
    logged = [by_step for by_step in logged if by_step]
    for step in sorted(set().union(*logged)):
        running = [by_step for by_step in logged if max(by_step) >= step]
        if all(step in by_step for by_step in running):
            values[step] = [by_step[step] for by_step in running]
    steps = sorted(values)
    return (steps, [sum(values[s]) / len(values[s]) for s in steps], [min(values[s]) for s in steps],
            [max(values[s]) for s in steps])


def plot_training_curves(runs: Sequence[Run], path: str | pathlib.Path, *, title: str | None = None) -> pathlib.Path | None:
    """Loss (training and evaluation), accuracy (training and evaluation top-1) and the learning
    rate against steps, one colour per setting. A setting run with several seeds is drawn as the mean over
    its seeds with a band from their lowest to their highest value (so that a seed at chance is not hidden
    under one that learned). Accuracy runs from 0 to 100% with the chance line, loss from 0 with the loss of
    a uniform guess, so that noise at chance does not read as a trend. None when no run logged."""
    import math

    from jaxconv.compare.runs import group_name, repeats

    runs = [r for r in runs if r.train or r.evals]
    if not runs:
        return None
    fig, (loss_ax, acc_ax, lr_ax) = plt.subplots(1, 3, figsize=(16, 4.5), layout="constrained")
    groups = repeats(runs)  # the seeds of one setting share a colour and a legend entry
    colours = plt.cm.tab10.colors if len(groups) <= 10 else plt.cm.tab20.colors
    names = run_labels([group[0] for group in groups], [group_name(group) for group in groups])
    keys = []  # the legend, below the panels: one entry per setting, then what the line styles mean
    diverged, rates = [], []  # (last logged step, colour) of each diverged run; each setting's highest rate

    def records_of(group):
        return [record for run in group for record in run.train]

    for i, group in enumerate(groups):
        label = _literal(names[i]) + (f" ({len(group)} seeds: mean, band min–max)" if len(group) > 1 else "")
        colour = colours[i % len(colours)]
        keys.append(Line2D([], [], color=colour, linewidth=2, label=label))
        eval_style = {"color": colour, "linestyle": "--", "marker": "o", "markersize": 4}
        for axis, records, key, scale, kind, style in (
                (loss_ax, "train", "loss", 1, "train", {"color": colour}),
                (acc_ax, "train", "top1", 100, "train", {"color": colour, "alpha": 0.6}),
                (lr_ax, "train", "learning_rate", 1, None, {"color": colour}),
                (loss_ax, "evals", "loss", 1, "eval", eval_style),
                (acc_ax, "evals", "top1", 100, "eval", eval_style)):
            steps, mean, low, high = seed_band([getattr(run, records) for run in group], key)
            if not steps:
                continue
            axis.plot(steps, [scale * v for v in mean], label=f"{label} {kind}" if kind else label, **style)
            if len(group) > 1:
                axis.fill_between(steps, [scale * v for v in low], [scale * v for v in high], color=colour,
                                  alpha=0.15, linewidth=0)
        diverged += [(run.train[-1]["step"], colour) for run in group if _diverged(run) and run.train]
        rates.append(max((r["learning_rate"] for r in records_of(group) if _is_number(r.get("learning_rate"))),
                         default=None))
    classes = dataset_classes(runs)
    _chance_line(acc_ax, classes)
    if classes and classes > 1:
        loss_ax.axhline(math.log(classes), color="grey", linestyle=":", linewidth=1.2,
                        label=f"uniform guess (ln {classes} = {math.log(classes):.2f})")
    # The others' losses readable: a diverged run is marked where its curve leaves the axis, and so is a run
    # whose loss rose above LOSS_AXIS_GUESSES uniform guesses but finished.
    top = _loss_top([r.get("loss") for run in runs if not _diverged(run) for r in run.train + run.evals], classes)
    loss_ax.set_ylim(0, top)
    for step, colour in diverged:
        loss_ax.scatter([step], [top], marker="x", color=colour, s=50, clip_on=False, zorder=5)
    if diverged:
        keys.append(Line2D([], [], color="black", marker="x", linestyle="none",
                           label=f"diverged ({len(diverged)} of {len(runs)} runs): its last logged step, on the "
                                 f"top edge"))
    above = [(_first_above(run.train + run.evals, top), colours[i % len(colours)]) for i, group in enumerate(groups)
             for run in group if not _diverged(run)]
    above = [(found, colour) for found, colour in above if found]
    for (step, _), colour in above:
        loss_ax.scatter([step], [top], marker="^", color=colour, s=50, clip_on=False, zorder=5)
    if above:
        highest = max(loss for (_, loss), _ in above)
        keys.append(Line2D([], [], color="black", marker="^", linestyle="none",
                           label=f"loss above the axis ({len(above)} of {len(runs)} runs, up to {highest:.3g}): "
                                 f"where it first leaves, on the top edge"))
    acc_ax.set_ylim(0, 100)
    positive = [rate for rate in rates if rate is not None and rate > 0]
    if len(positive) > 1 and max(positive) / min(positive) >= 100:  # one rate dwarfs the others: log scale
        lr_ax.set_yscale("log")
    else:
        lr_ax.set_ylim(bottom=0)
    for axis, name in ((loss_ax, "loss"), (acc_ax, "top-1 accuracy (%)"), (lr_ax, "learning rate" + (" (log scale)" if lr_ax.get_yscale() == "log" else ""))):
        axis.set_xlabel("step")
        axis.set_ylabel(name)
        axis.grid(True, alpha=0.3)
    # Outside the panels, so that no legend hides a curve; the reference lines are named where they are drawn.
    keys += [Line2D([], [], color="black", label="training (logged windows)"),
             Line2D([], [], color="black", linestyle="--", marker="o", markersize=4, label="evaluation")]
    keys += [line for axis in (loss_ax, acc_ax) for line in axis.get_lines() if line.get_linestyle() == ":"]
    fig.legend(handles=keys, loc="outside lower center", ncols=min(3, len(keys)), fontsize=8, frameon=False)
    if title:
        fig.suptitle(_literal(title))
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
    for ax, run, label in zip(axes.flat, runs, run_labels(runs)):
        snapshots = layer_norm_snapshots(run)
        colours = plt.cm.viridis([i / max(1, len(snapshots) - 1) for i in range(len(snapshots))])
        for colour, record in zip(colours, snapshots):
            norms = list(record["layer_grad_norms"].values())
            ax.plot(range(1, len(norms) + 1), [max(n, 1e-30) for n in norms], color=colour, marker=".",
                    label=f"step {record['step']}")
        ax.set_yscale("log")
        ax.set_title(_literal(label), fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("gradient norm of the kernel")
    for ax in list(axes.flat)[len(runs):]:
        ax.set_visible(False)
    fig.supxlabel("layer (input → output)")
    if title:
        fig.suptitle(_literal(title))
    return _save(fig, path)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def plot_final_against(runs: Sequence[Run], key: str, path: str | pathlib.Path, *,
                       title: str | None = None) -> pathlib.Path | None:
    """Each setting's final training loss and final evaluation top-1 against one config key.

    One line per combination of the other keys the runs differ in; every seed is a dot, the line
    joins their means, bars span their range. A run that diverged has no final values: it is an
    × on the loss panel's top edge. None when no run has a final value.
    """
    import math

    from jaxconv.compare.runs import differing_keys, repeats, setting, setting_label

    others = [k for k in differing_keys(runs) if k != key]
    groups = repeats(runs)
    xs = [setting(group[0]).get(key) for group in groups]
    numeric = all(_is_number(x) for x in xs)
    categories = list(dict.fromkeys(repr(x) for x in xs))
    position = (lambda x: x) if numeric else (lambda x: categories.index(repr(x)))
    lines: dict[str, list[tuple[float, tuple[Run, ...]]]] = {}
    for x, group in zip(xs, groups):
        lines.setdefault(_literal(setting_label(group[0], others) if others else key), []).append((position(x), group))
    if not any(run.train or run.evals for run in runs):
        return None
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(13, 4.8), layout="constrained")
    colours = plt.cm.tab10.colors if len(lines) <= 10 else plt.cm.tab20.colors
    diverged_x = []
    for i, (label, points) in enumerate(lines.items()):
        colour = colours[i % len(colours)]
        points.sort(key=lambda p: p[0])
        for ax, final, scale in ((loss_ax, lambda r: r.train[-1]["loss"] if r.train and r.completed else None, 1),
                                 (acc_ax, lambda r: r.final_eval["top1"] if r.final_eval and r.completed else None, 100)):
            means, positions = [], []
            for x, group in points:
                values = [scale * v for v in map(final, group) if v is not None and math.isfinite(v)]
                ax.scatter([x] * len(values), values, color=colour, s=14, alpha=0.7)
                if values:
                    mean = sum(values) / len(values)
                    positions.append(x)
                    means.append(mean)
                    if len(values) > 1:
                        ax.errorbar([x], [mean], yerr=[[mean - min(values)], [max(values) - mean]], color=colour,
                                    capsize=3, linewidth=1)
            ax.plot(positions, means, color=colour, marker="o", markersize=4, label=label)
        diverged_x += [x for x, group in points for run in group
                       if (run.summary or {}).get("status") == "diverged"]
    classes = dataset_classes(runs)
    _chance_line(acc_ax, classes)
    top = _loss_top([r.train[-1]["loss"] for r in runs if r.train and not _diverged(r)], classes)
    if classes and classes > 1:
        loss_ax.axhline(math.log(classes), color="grey", linestyle=":", linewidth=1.2,
                        label=f"uniform guess (ln {classes} = {math.log(classes):.2f})")
    if diverged_x:
        loss_ax.scatter(diverged_x, [top] * len(diverged_x), marker="x", color="red", s=50, clip_on=False,
                        label=f"diverged ({len(diverged_x)} runs): no final value")
    above = [(x, run.train[-1]["loss"]) for _, points in lines.items() for x, group in points for run in group
             if run.train and run.completed and _is_number(run.train[-1]["loss"]) and not run.train[-1]["loss"] <= top]
    if above:
        loss_ax.scatter([x for x, _ in above], [top] * len(above), marker="^", color="red", s=50, clip_on=False,
                        label=f"final loss above the axis ({len(above)} runs, up to {max(v for _, v in above):.3g})")
    loss_ax.set_ylim(0, top)
    acc_ax.set_ylim(0, 100)
    positive = numeric and all(x > 0 for x in xs)
    for axis, name in ((loss_ax, "final training loss (last logged window)"), (acc_ax, "final evaluation top-1 (%)")):
        if positive and max(xs) / min(xs) >= 10:
            axis.set_xscale("log")
        if not numeric:
            axis.set_xticks(range(len(categories)), [_literal(c.strip("'")) for c in categories], rotation=30)
        axis.set_xlabel(_literal(key))
        axis.set_ylabel(name)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7)
    if title:
        fig.suptitle(_literal(title))
    return _save(fig, path)
