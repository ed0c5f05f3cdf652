"""`jaxconv compare`: the ILSVRC architectures side by side — ours, measured, and published.

Every row holds what jaxconv computes from the model itself (parameters, GMACs, forward
activation memory per image), what was measured on this machine (inference and training
images/s, when asked), the accuracy of the user's own runs of that model, and — in columns
labelled as such — what was published.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence

from jaxconv.declarations import gmacs_text
from jaxconv.compare.published import ILSVRC_MODELS, published
from jaxconv.compare.runs import Run

FORMATS = ("md", "csv", "json")

# measure(model, mode, batch_size, image_size) -> images per second; mode is 'eval' or 'train'.
Measure = Callable[[str, str, int, int], float]


def _stock(run: Run) -> bool:
    """Whether the run trained the registered architecture as it is (no model options changing it)."""
    return not run.config.get("model_options")


def compared_dataset(runs: Sequence[Run]) -> str | None:
    """The one dataset whose runs fill "your top-1": the one most of the evaluated runs trained on (a top-1 of
    25% on 4 classes, chance, is not better than 11% on 10)."""
    counts: dict[str, int] = {}
    for run in runs:
        if run.best_eval is not None:
            counts[run.dataset] = counts.get(run.dataset, 0) + 1
    return min(counts, key=lambda name: (-counts[name], name)) if counts else None


def _best_run(runs: Sequence[Run], model: str) -> Run | None:
    dataset = compared_dataset(runs)
    candidates = [r for r in runs if r.model == model and _stock(r) and r.best_eval is not None
                  and r.dataset == dataset]
    return max(candidates, key=lambda r: r.best_eval["top1"]) if candidates else None


def uncompared_runs(models: Sequence[str], runs: Sequence[Run]) -> list[str]:
    """Why each run that fills no row's "your top-1" does not: its model is not compared, it changed the
    architecture with model options (a ResNet-20 with depths (1, 1, 1) is not ResNet-20), or it has no
    evaluation yet, or it trained on another dataset than most."""
    notes, dataset = [], compared_dataset(runs)
    for run in runs:
        if run.model not in models:
            notes.append(f"{run.path}: a run of {run.model}, which is not among the models compared (name it: "
                         f"jaxconv compare {run.model} ...)")
        elif not _stock(run):
            options = ", ".join(f"{k}={v!r}" for k, v in sorted(run.config["model_options"].items()))
            notes.append(f"{run.path}: trained {run.model} with model options ({options}), another network than "
                         f"the {run.model} compared; left out")
        elif run.best_eval is None:
            notes.append(f"{run.path}: no evaluation yet; left out")
        elif run.dataset != dataset:
            notes.append(f"{run.path}: trained on {run.dataset}, and most runs given on {dataset}: "
                         f"top-1s on other classes do not compare; left out (give its runs alone to compare them)")
    return notes


def compare_rows(
    models: Sequence[str] = ILSVRC_MODELS,
    *,
    runs: Sequence[Run] = (),
    measure: Measure | None = None,
    batch_size: int = 8,
    image_size: int | None = None,
    summarize=None,
) -> list[dict]:
    """One dict per model (keys as in ``COLUMNS``); None where a figure does not exist.

    ``image_size`` overrides every model's default input size for our figures (published
    ones keep the size they were published at). ``measure`` times inference and training
    at ``batch_size``; without it the speed columns are None. ``summarize(name, image_size)``
    defaults to ``jaxconv.summary``.
    """
    from jaxconv.analysis import summary
    from jaxconv.layers import GeometryError
    from jaxconv.models import model_info

    summarize = summarize or (lambda name, size: summary(name, image_size=size))
    rows = []
    for name in models:
        info = model_info(name)
        size = image_size or info.image_size
        try:
            ours = summarize(name, size)
        except GeometryError as e:
            raise GeometryError(f"{name}: {e}") from None
        pub = published(name)
        run = _best_run(runs, name)
        best = run.best_eval if run else None
        row = {
            "model": name,
            "image_size": size,
            "params": ours.params,
            "gmacs": ours.macs / 1e9,
            "activation_mib": ours.forward_activation_bytes / 2**20,
            "eval_images_per_sec": None,
            "train_images_per_sec": None,
            "speed_batch_size": None,
            "your_top1": 100 * best["top1"] if best else None,
            "your_top5": 100 * best["top5"] if best and "top5" in best else None,
            "your_run": str(run.path) if run else None,
            "your_dataset": run.dataset if run else None,
            "your_image_size": (run.config.get("image_size") or info.image_size) if run else None,
            "published_params": pub.params,
            "published_gmacs": pub.gmacs,
            "published_top1": pub.top1,
            "published_top5": pub.top5,
            "published_image_size": pub.image_size if pub.top1 is not None else None,
            "published_source": pub.accuracy_source,
            "ilsvrc_entry": pub.ilsvrc_entry,
            "ilsvrc_top5_error": pub.ilsvrc_top5_error,
        }
        if measure is not None:
            row["eval_images_per_sec"] = measure(name, "eval", batch_size, size)
            row["train_images_per_sec"] = measure(name, "train", batch_size, size)
            row["speed_batch_size"] = batch_size
        rows.append(row)
    return rows


def your_chart_rows(rows: Sequence[dict], runs: Sequence[Run]) -> tuple[list[dict], int | None, list[str]]:
    """The rows with a run's top-1, for the chart of your accuracy: each at the parameters and GMACs of the network
    its run trained (its input size and class count, as `jaxconv report` draws it), not at the size compared; the
    class count of the runs' dataset (None when they differ), for the chance line; and a note for each run whose
    model cannot be measured now, left out."""
    from jaxconv.compare.plots import dataset_classes
    from jaxconv.compare.runs import run_cost

    by_path = {str(run.path): run for run in runs}
    chart, drawn, notes = [], [], []
    for row in rows:
        run = by_path.get(row["your_run"]) if row["your_top1"] is not None else None
        if run is None:
            continue
        cost = run_cost(run)
        if isinstance(cost, str):
            notes.append(f"{run.path}: left out of your_accuracy_vs_gmacs.png: {cost}")
            continue
        chart.append({**row, **cost})
        drawn.append(run)
    return chart, dataset_classes(drawn), notes


def _number(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def format_markdown(rows: Sequence[dict], *, device: str | None = None) -> str:
    """The comparison as markdown: our figures and measurements, then the published ones, then the notes."""
    speed = any(r["eval_images_per_sec"] is not None for r in rows)
    yours = any(r["your_top1"] is not None for r in rows)
    head = ["model", "input", "params (M)", "GMACs", "activations / image (MiB)"]
    if speed:
        head += ["inference img/s", "training img/s"]
    if yours:
        head += ["your top-1 %", "your top-5 %", "dataset"]
    head += ["published top-1 %", "published top-5 %", "ILSVRC top-5 error %"]
    align = ["---" if h in ("model", "dataset") else "---:" for h in head]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    for r in rows:
        cells = [r["model"], str(r["image_size"]), f"{r['params'] / 1e6:.2f}", gmacs_text(r['gmacs']),
                 f"{r['activation_mib']:.1f}"]
        if speed:
            cells += [_number(r["eval_images_per_sec"], ".1f"), _number(r["train_images_per_sec"], ".1f")]
        if yours:
            dataset = r["your_dataset"] or "—"
            if r["your_image_size"] not in (None, r["image_size"]):
                dataset += f" (at {r['your_image_size']} px)"
            cells += [_number(r["your_top1"], ".2f"), _number(r["your_top5"], ".2f"), dataset]
        top1 = _number(r["published_top1"], ".3f")
        if r["published_image_size"] not in (None, r["image_size"]):
            top1 += f" (at {r['published_image_size']})"
        cells += [top1, _number(r["published_top5"], ".3f"), _number(r["ilsvrc_top5_error"], ".2f")]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [
        "",
        "params and GMACs (multiply-accumulates of conv and dense layers) are computed by jaxconv from the models; "
        "activations are the float32 values of every layer's output for one image's forward pass.",
    ]
    mismatched = [r["model"] for r in rows if r["published_params"] not in (None, r["params"])]
    if mismatched:
        notes.append(f"Parameter counts that differ from the published ones: {', '.join(mismatched)}.")
    if speed:
        batch = rows[0]["speed_batch_size"]
        notes.append(f"Measured on {device or 'this machine'}, batch {batch}: median images/s after warm-up "
                     "(training: forward, backward and an SGD update).")
    if yours:
        notes.append("Your top-1/top-5: the best evaluation of your runs of that model, on the dataset named.")
    sources = sorted({r["published_source"] for r in rows if r["published_source"]})
    notes += [f"Published top-1/top-5: {s}." for s in sources]
    if any(r["ilsvrc_entry"] for r in rows):
        entries = ", ".join(f"{r['model']}: {r['ilsvrc_entry']}" for r in rows if r["ilsvrc_entry"])
        notes.append(f"ILSVRC top-5 error: the winning entries as the lectures chart them (ensembles, test set) — {entries}.")
    return "\n".join(lines + notes) + "\n"


def format_csv(rows: Sequence[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def format_rows(rows: Sequence[dict], fmt: str, *, device: str | None = None) -> str:
    """The rows as 'md', 'csv' or 'json'."""
    if fmt == "md":
        return format_markdown(rows, device=device)
    if fmt == "csv":
        return format_csv(rows)
    if fmt == "json":
        return json.dumps({"device": device, "rows": list(rows)}, indent=2) + "\n"
    raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
