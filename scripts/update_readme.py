#!/usr/bin/env python3
"""Regenerates README.md's model table (from the registry) and config key table (from jaxconv.train.keys),
and the counts `jaxconv list` reads (src/jaxconv/analysis/counts.json).

`--check`: exit 1 if either is stale.

    python scripts/update_readme.py          # rewrite the table
    python scripts/update_readme.py --check  # what the test suite does
"""

from __future__ import annotations

import argparse
import pathlib
import sys

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- models:start -->", "<!-- models:end -->"
KEYS_START, KEYS_END = "<!-- config-keys:start -->", "<!-- config-keys:end -->"


def render(summarize=None) -> str:
    from jaxconv.cli.listing import registry_markdown, registry_rows

    return registry_markdown(registry_rows(summarize=summarize))


def render_keys() -> str:
    from jaxconv.train.keys import key_table

    return key_table(markdown=True)


def replace_table(text: str, table: str, start: str = START, end: str = END) -> str:
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{table}{end}{tail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md's table is stale")
    args = parser.parse_args()
    text = README.read_text()
    from jaxconv.analysis import counts, summary

    updated = replace_table(replace_table(text, render(summarize=summary)), render_keys(), KEYS_START, KEYS_END)
    stored = counts.render(counts.snapshot(summary))
    if args.check:
        if updated != text or not counts.PATH.is_file() or counts.PATH.read_text() != stored:
            print("README.md's tables or jaxconv/analysis/counts.json are stale: run python scripts/update_readme.py",
                  file=sys.stderr)
            return 1
        return 0
    README.write_text(updated)
    counts.PATH.write_text(stored)
    return 0


if __name__ == "__main__":
    sys.exit(main())
