"""`jaxconv list [PATTERN]`: every registered model with its parameters, GMACs and input size."""

from __future__ import annotations

import argparse
import fnmatch
import json
import pathlib
import re
import sys

from jaxconv.declarations import gmacs_figure, gmacs_text
from jaxconv.cli.common import UsageError


def registry_rows(pattern: str = "*", summarize=None) -> list[dict]:
    """Name, family, parameters, GMACs and default size of every registered model.

    The counts come from ``summarize(name)`` (an object with ``params`` and ``macs``) when given,
    else from the counts kept for the built-in models (jaxconv.analysis.counts), tracing the rest.
    """
    from jaxconv.analysis.counts import counts
    from jaxconv.errors import UserError
    from jaxconv.models import list_models, model_info

    rows = []
    for name in list_models(pattern):
        info = model_info(name)
        problem = None
        try:
            if summarize is not None:
                result = summarize(name)
                params, macs = result.params, result.macs
            else:
                params, macs = counts(name)
        except UserError as e:  # a user's model that breaks jaxconv's contract is listed with why, not a crash
            if info.builtin:
                raise
            params, macs, problem = None, None, str(e)
        rows.append(
            {
                "name": name,
                "family": info.family,
                "params": params,
                "gmacs": None if macs is None else gmacs_figure(macs),
                "image_size": info.image_size,
                "num_classes": info.num_classes,
                "description": info.description,
                **({"problem": problem} if problem else {}),
            }
        )
    return rows


def builtin_rows(pattern: str = "*") -> list[dict] | None:
    """The rows of the built-in models matching ``pattern``, from jaxconv/analysis/counts.json alone (read
    here by path: importing jaxconv.analysis imports Flax), in the registry's natural order; None when the
    file cannot say (missing, damaged, or written by an older jaxconv)."""
    path = pathlib.Path(__file__).resolve().parents[1] / "analysis" / "counts.json"
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    fields = ("params", "macs", "image_size", "family", "num_classes", "description")
    if not isinstance(table, dict) or not table or not all(
            isinstance(entry, dict) and all(f in entry for f in fields) for entry in table.values()):
        return None

    def natural(name: str) -> list:
        return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]

    names = sorted((n for n in table if fnmatch.fnmatchcase(n, pattern)), key=natural)
    return [{"name": n, "family": table[n]["family"], "params": table[n]["params"],
             "gmacs": gmacs_figure(table[n]["macs"]), "image_size": table[n]["image_size"],
             "num_classes": table[n]["num_classes"], "description": table[n]["description"]} for n in names]


def _figure(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _gmacs(value) -> str:
    return "-" if value is None else gmacs_text(value)


def _description(row: dict) -> str:
    return f"cannot be used: {row['problem']}" if row.get("problem") else row["description"]


def registry_markdown(rows: list[dict]) -> str:
    lines = ["| model | params | GMACs | input | classes | description |", "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(
            f"| {r['name']} | {_figure(r['params'], ',')} | {_gmacs(r['gmacs'])} | {r['image_size']} "
            f"| {r['num_classes']} | {_description(r)} |"
        )
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    # The built-in models alone (no module of the user's imported, none registered in this process by
    # the Python API): their rows are kept, no JAX needed.
    registry = sys.modules.get("jaxconv.registry")
    others = registry is not None and any(not registry.model_info(n).builtin for n in registry.list_models())
    def matching(pattern: str) -> list[dict]:
        rows = builtin_rows(pattern) if not args.imports and not others else None
        if rows is None:
            from jaxconv.models import list_models

            rows = registry_rows(pattern) if list_models(pattern) else []
        return rows

    rows = matching(args.pattern)
    if not rows:
        wider = f"*{args.pattern.lower().strip('*')}*"  # 'resnet', 'RESNET5*': a part of a name, in lower case
        near = [r["name"] for r in matching(wider)] if wider != args.pattern else []
        hint = (f"; patterns match whole names, in lower case: {wider!r} matches {', '.join(near[:6])}"
                f"{' …' if len(near) > 6 else ''}" if near else "; `jaxconv list` shows them all")
        raise UsageError(f"no model matches {args.pattern!r}{hint}")
    if args.format == "json":
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    elif args.format == "md":
        sys.stdout.write(registry_markdown(rows))
    else:
        width = max(len(r["name"]) for r in rows)
        sys.stdout.write(f"{'model'.ljust(width)}  {'params':>12}  {'GMACs':>7}  {'input':>5}  description\n")
        for r in rows:
            sys.stdout.write(
                f"{r['name'].ljust(width)}  {_figure(r['params'], ','):>12}  {_gmacs(r['gmacs']):>7}  "
                f"{r['image_size']:>5}  {_description(r)}\n"
            )
    return 0


def register(sub, common) -> None:
    p = sub.add_parser("list", parents=[common], help="every registered model with parameters, GMACs and default input size")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnet*'")
    p.add_argument("--format", choices=("table", "md", "json"), default="table")
    p.set_defaults(func=run)
