"""Redraws a study report's accuracy_vs_gmacs.png from the runs table of its own report.md.

For pages whose run folders are gone (`jaxconv report` needs the runs): one bubble per setting (run
names without their `_seedN` suffix), at the mean of its seeds' best top-1 with a bar to their lowest
and highest, and the chance line of the runs' dataset — what `jaxconv report` draws since 2026-12-03.
GMACs are those the table prints (three decimals). Usage:

    python scripts/redraw_accuracy_charts.py docs/results/*/report.md
"""

import pathlib
import re
import sys

from jaxconv.compare import plots
from jaxconv.data.catalog import DATASETS


def _fail(message: str) -> None:
    """A user's mistake: one line, exit status 2."""
    print(message, file=sys.stderr)
    sys.exit(2)


def settings(report: pathlib.Path) -> tuple[list[dict], str]:
    """The chart's rows and the runs' dataset, from the report's '| run | model | …' table."""
    try:
        lines = report.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        _fail(f"{report}: cannot read it ({error.strerror if isinstance(error, OSError) else error}); "
                         "give a report.md that `jaxconv report` wrote")
    head = next((i for i, line in enumerate(lines) if line.startswith("| run | model |")), None)
    if head is None:
        _fail(f"{report}: no '| run | model |' table; give a report.md that `jaxconv report` wrote")
    columns = [c.strip() for c in lines[head].strip("|").split("|")]
    groups: dict[str, list[tuple]] = {}
    datasets = set()
    for line in lines[head + 2:]:
        if not line.startswith("|"):
            break
        cells = dict(zip(columns, (c.strip() for c in line.strip("|").split("|"))))
        best = cells["best top-1 % (step)"]
        if best in ("—", ""):  # diverged before its first evaluation
            continue
        datasets.add(cells["dataset"])
        groups.setdefault(re.sub(r"_seed\d+$", "", cells["run"]), []).append(
            (cells["run"], int(cells["params"].replace(",", "")), float(cells["GMACs"]), float(best.split()[0])))
    rows = []
    for members in groups.values():
        best = [m[3] for m in members]
        rows.append({"model": members[0][0] if len(best) == 1 else f"{members[0][0]} ({len(best)} seeds)",
                     "params": members[0][1], "gmacs": members[0][2], "your_top1": sum(best) / len(best),
                     "your_top1_range": (min(best), max(best)) if len(best) > 1 else None})
    if len(datasets) != 1:
        _fail(f"{report}: runs on {sorted(datasets) or 'no dataset'}; one dataset expected")
    return rows, datasets.pop()


def main() -> None:
    for report in map(pathlib.Path, sys.argv[1:]):
        rows, dataset = settings(report)
        out = plots.plot_accuracy_vs_gmacs(rows, report.parent / "accuracy_vs_gmacs.png", accuracy="your",
                                           num_classes=DATASETS[dataset].num_classes,
                                           title="Best top-1 vs GMACs; bubble area ∝ parameters")
        print(f"{out}: {len(rows)} settings on {dataset}")


if __name__ == "__main__":
    main()
