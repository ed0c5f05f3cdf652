"""`jaxconv report`: training runs gathered into one markdown page with tables and plots."""

from __future__ import annotations

import datetime
import json
import math
import pathlib
import statistics
from collections.abc import Callable, Sequence

from jaxconv.declarations import gmacs_text
from jaxconv.compare import plots
from jaxconv.compare.published import published
from jaxconv.compare.runs import (Run, RunError, differing_keys, group_name, repeats, run_cost, setting_values,
                                  x_axis_problem)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def _percent(record: dict | None, key: str) -> str:
    return f"{100 * record[key]:.2f}" if record and key in record else "—"


def _published_top1(name: str) -> float | None:
    """The published top-1 of a model, None for one without (or no longer known: its code is gone)."""
    try:
        return published(name).top1
    except (KeyError, ValueError):
        return None


def sweep_records(runs: Sequence[Run]) -> dict[pathlib.Path, list[dict]]:
    """Every sweep.jsonl line (command, machine, date, wall time, exit code) of each run, in the order written: a
    run extended or resumed by a later sweep has one per session (the last alone lost the earlier sessions)."""
    records = {}
    for run in runs:
        log = run.path.parent / "sweep.jsonl"
        lines = []
        if log.is_file():
            lines = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
        records[run.path] = [r for r in lines if r.get("run") == run.name]
    return records


def provenance_section(runs: Sequence[Run]) -> list[str]:
    """How the runs were made: the machines and dates, the runs' wall time in all (summary.json's, which counts
    every session of a resumed or extended run) and every command, with the runs that have none noted; nothing
    when no run was made by scripts/sweep.py."""
    records = sweep_records(runs)
    made = [r for run in runs for r in records[run.path]]
    if not made:
        return []
    timed = [run.wall_time_s for run in runs if _is_number(run.wall_time_s)]
    untimed = len(runs) - len(timed)
    lines = ["## How the runs were made", "",
             f"By scripts/sweep.py on {'; '.join(sorted({str(r.get('machine')) for r in made}))}, "
             f"{', '.join(sorted({str(r.get('date')) for r in made}))}; {_duration(sum(timed))} of training wall "
             f"time in all (each run's summary.json, every session)"
             + (f", not counting {untimed} run(s) that recorded none" if untimed else "") + ".", "", "```"]
    for run in runs:
        lines += [r["command"] + (f"  # exited {r['exit_code']}" if r.get("exit_code") not in (0, None) else "")
                  for r in records[run.path] if r.get("command")]
    lines += ["```", ""]
    missing = [run.name for run in runs if not any(r.get("command") for r in records[run.path])]
    if missing:
        lines += [f"No command recorded for {', '.join(missing)} (not made by scripts/sweep.py, or not in its "
                  f"folder's sweep.jsonl).", ""]
    return lines


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _model_label(run: Run) -> str:
    options = run.config.get("model_options") or {}
    extra = ", ".join(f"{k}={v}" for k, v in sorted(options.items()))
    return f"{run.model} ({extra})" if extra else run.model


def runs_table(runs: Sequence[Run], costs: dict[pathlib.Path, dict | None]) -> str:
    head = ("run", "model", "dataset", "input", "params", "GMACs", "steps", "epochs", "wall time",
            "best top-1 % (step)", "final top-1 %", "final top-5 %", "status")
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|" + "---:|" * (len(head) - 4) + "---|"]
    for run in runs:
        cost = costs.get(run.path)
        best, final = run.best_eval, run.final_eval
        epochs = run.epochs
        cells = [
            run.name, _model_label(run), run.dataset, str(run.config.get("image_size") or "default"),
            f"{cost['params']:,}" if cost else "—", gmacs_text(cost['gmacs']) if cost else "—",
            str(run.steps), f"{epochs:.2f}" if epochs is not None else "—", _duration(run.wall_time_s),
            f"{_percent(best, 'top1')} ({best['step']})" if best else "—",
            _percent(final, "top1"), _percent(final, "top5"),
            _run_status(run),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _spread(values: Sequence[float], digits: int) -> str:
    """One value as it is; several as mean ± sample standard deviation (n - 1) (min–max)."""
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return (f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f} "
            f"({min(values):.{digits}f}–{max(values):.{digits}f})")


def _run_status(run: Run) -> str:
    status = "completed" if run.completed else (run.summary or {}).get("status", "incomplete")
    return f"diverged (step {run.summary.get('diverged_at_step') or run.steps})" if status == "diverged" else status


def _status(group: Sequence[Run]) -> str:
    """'3 completed', '1 completed, 2 diverged (step 40, 55)'."""
    counts: dict[str, list[int]] = {}
    for run in group:
        counts.setdefault(_run_status(run).split(" (")[0], []).append((run.summary or {}).get("diverged_at_step")
                                                                       or run.steps)
    return ", ".join(f"{len(steps)} {status}" + (f" (step {', '.join(map(str, steps))})" if status == "diverged" else "")
                     for status, steps in counts.items())


def settings_table(runs: Sequence[Run]) -> str:
    """One row per setting (its seeds together): the keys the runs differ in, the final training loss
    and top-1 (the last logged window) and the final evaluation top-1, as mean ± sd (min–max)
    over the completed seeds."""
    keys = differing_keys(runs)
    head = (*(keys or ["run"]), "seeds", "final train loss", "final train top-1 %", "final eval top-1 %", "runs")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(keys or ["run"]) + "---:|" * 4 + "---|"]
    for group in repeats(runs):
        done = [run for run in group if run.completed]
        train = [run.train[-1] for run in done if run.train and math.isfinite(run.train[-1]["loss"])]
        cells = setting_values(group[0], keys) if keys else [group[0].name]
        cells += [
            ", ".join(str(run.config.get("seed", 0)) for run in group),
            _spread([r["loss"] for r in train], 3),
            _spread([100 * r["top1"] for r in train], 1),
            _spread([100 * run.final_eval["top1"] for run in done if run.final_eval], 1),
            _status(group),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def layer_norm_table(runs: Sequence[Run]) -> str:
    """First-layer over last-layer gradient norm, at the first and the last logged step of each run."""
    lines = ["| run | layers | first / last layer, first logged step | same, last logged step |", "|---|---:|---:|---:|"]
    for run in runs:
        logged = [r for r in run.train if r.get("layer_grad_norms")]
        if not logged:
            continue
        ratios = []
        for record in (logged[0], logged[-1]):
            norms = list(record["layer_grad_norms"].values())
            ratios.append(f"{norms[0] / norms[-1]:.3g} (step {record['step']})" if norms[-1] > 0 else "n/a")
        lines.append(f"| {run.name} | {len(logged[0]['layer_grad_norms'])} | {ratios[0]} | {ratios[1]} |")
    return "\n".join(lines)


def write_report(runs: Sequence[Run], out: str | pathlib.Path, *, title: str = "jaxconv report",
                 command: str | None = None, x: str | None = None,
                 log: Callable[[str], None] | None = None) -> pathlib.Path:
    """Writes OUT/report.md with the runs table, the published figures of their models, training
    curves (OUT/curves.png), per-layer gradient norms of runs that logged them
    (OUT/layer_grad_norms.png) and accuracy against GMACs (OUT/accuracy_vs_gmacs.png).
    With several runs, a table of their settings (seeds together, with their spread); with ``x``,
    a config key the runs differ in, their final values against it (OUT/final_vs_X.png).
    Returns the report's path; raises RunError when the runs do not differ in ``x``."""
    keys = differing_keys(runs)
    problem = x_axis_problem(x, keys) if x is not None else None
    if problem:
        raise RunError(f"report --x {x}: {problem}")
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    costs = {run.path: run_cost(run) for run in runs}
    unknown = {run.name: cost for run in runs if isinstance(cost := costs[run.path], str)}
    costs = {path: cost for path, cost in costs.items() if not isinstance(cost, str)}
    parts = [f"# {title}", ""]
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts.append(f"Generated {stamp}" + (f" by `{command}`" if command else "") + f" from {len(runs)} run(s).")
    parts += ["", "## Runs", "", runs_table(runs, costs)]
    if unknown:
        notes = [f"parameters and GMACs not shown for {name}: {why}" for name, why in unknown.items()]
        parts += [note[0].upper() + note[1:] + "." for note in notes] + [""]
        for note in notes if log else ():
            log(note)

    if len(runs) > 1:
        parts += ["## Settings", "", "Runs that differ only in their seed are one row; a spread reads mean ± "
                  "sample standard deviation (n − 1) (min–max) over the completed seeds.", "", settings_table(runs)]
    if x is not None:
        final = plots.plot_final_against(runs, x, out / f"final_vs_{x}.png", title=title)
        if final:
            parts += [f"## Final values against {x}", "", f"![final values against {x}]({final.name})", ""]

    datasets = sorted({run.dataset for run in runs})
    models = sorted({run.model for run in runs if _published_top1(run.model) is not None})
    if models:
        parts += ["## Published figures for these models", "",
                  "| model | published top-1 % | published top-5 % | source |", "|---|---:|---:|---|"]
        for name in models:
            pub = published(name)
            parts.append(f"| {name} | {pub.top1:.3f} | {pub.top5:.3f} | {pub.accuracy_source} |")
        parts += ["", f"The runs above are on {', '.join(datasets)}; published figures are on ImageNet, "
                  "at full scale. Compare the ordering, not the numbers.", ""]

    curves = plots.plot_training_curves(runs, out / "curves.png", title=title)
    if curves:
        parts += ["## Training curves", "", f"![training curves]({curves.name})", ""]
    gradients = plots.plot_layer_gradient_norms(runs, out / "layer_grad_norms.png",
                                                title="Per-layer gradient norms during training")
    if gradients:
        parts += ["## Gradient norms layer by layer", "", layer_norm_table(runs), "",
                  f"![per-layer gradient norms]({gradients.name})", ""]
    bubbles = []
    for group in repeats(runs):  # a setting's seeds: one bubble at their mean, a bar to their min and max
        measured = [run for run in group if costs.get(run.path) and run.best_eval]
        if measured:
            best = [100 * run.best_eval["top1"] for run in measured]
            first = measured[0]
            bubbles.append({"model": first.name if len(best) == 1 else f"{group_name(group)} ({len(best)} seeds)",
                            "params": costs[first.path]["params"], "gmacs": costs[first.path]["gmacs"],
                            "your_top1": sum(best) / len(best),
                            "your_top1_range": (min(best), max(best)) if len(best) > 1 else None})
    chart = plots.plot_accuracy_vs_gmacs(bubbles, out / "accuracy_vs_gmacs.png", accuracy="your",
                                         num_classes=plots.dataset_classes(runs),
                                         title="Best top-1 vs GMACs; bubble area ∝ parameters")
    if chart:
        parts += ["## Accuracy against compute", "", f"![accuracy vs GMACs]({chart.name})", ""]
    parts += provenance_section(runs)
    report = out / "report.md"
    report.write_text("\n".join(parts).rstrip() + "\n", encoding="utf-8")
    return report
