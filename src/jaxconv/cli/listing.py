"""`jaxconv list [PATTERN]`: every registered model with its parameters, GMACs and input size."""

from __future__ import annotations

import argparse
import json
import sys

from jaxconv.cli.common import UsageError


def registry_rows(pattern: str = "*", summarize=None) -> list[dict]:
    """Name, family, parameters, GMACs and default size of every registered model.

    The counts come from ``summarize(name)`` (an object with ``params`` and ``macs``) when given,
    else from the counts kept for the built-in models (jaxconv.analysis.counts), tracing the rest.
    """
    from jaxconv.analysis.counts import counts
    from jaxconv.models import list_models, model_info

    rows = []
    for name in list_models(pattern):
        info = model_info(name)
        if summarize is not None:
            result = summarize(name)
            params, macs = result.params, result.macs
        else:
            params, macs = counts(name)
        rows.append(
            {
                "name": name,
                "family": info.family,
                "params": params,
                "gmacs": round(macs / 1e9, 3),
                "image_size": info.image_size,
                "num_classes": info.num_classes,
                "description": info.description,
            }
        )
    return rows


def registry_markdown(rows: list[dict]) -> str:
    lines = ["| model | params | GMACs | input | classes | description |", "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['params']:,} | {r['gmacs']:.3f} | {r['image_size']} | {r['num_classes']} "
            f"| {r['description']} |"
        )
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    from jaxconv.models import list_models

    if not list_models(args.pattern):
        raise UsageError(f"no model matches {args.pattern!r}; `jaxconv list` shows them all")
    rows = registry_rows(args.pattern)
    if args.format == "json":
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    elif args.format == "md":
        sys.stdout.write(registry_markdown(rows))
    else:
        width = max(len(r["name"]) for r in rows)
        sys.stdout.write(f"{'model'.ljust(width)}  {'params':>12}  {'GMACs':>7}  {'input':>5}  description\n")
        for r in rows:
            sys.stdout.write(
                f"{r['name'].ljust(width)}  {r['params']:>12,}  {r['gmacs']:>7.3f}  {r['image_size']:>5}  "
                f"{r['description']}\n"
            )
    return 0


def register(sub, common) -> None:
    p = sub.add_parser("list", parents=[common], help="every registered model with parameters, GMACs and default input size")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnet*'")
    p.add_argument("--format", choices=("table", "md", "json"), default="table")
    p.set_defaults(func=run)
