#!/usr/bin/env python3
"""Regenerates the model table in README.md from the registry (`--check`: exit 1 if it is stale).

    python scripts/update_readme.py          # rewrite the table
    python scripts/update_readme.py --check  # what the test suite does
"""

from __future__ import annotations

import argparse
import pathlib
import sys

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- models:start -->", "<!-- models:end -->"


def render(summarize=None) -> str:
    from jaxconv.cli.listing import registry_markdown, registry_rows

    return registry_markdown(registry_rows(summarize=summarize))


def replace_table(text: str, table: str) -> str:
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table}{END}{tail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md's table is stale")
    args = parser.parse_args()
    text = README.read_text()
    updated = replace_table(text, render())
    if args.check:
        if updated != text:
            print("README.md's model table is stale: run python scripts/update_readme.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
