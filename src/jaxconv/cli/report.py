"""`jaxconv report RUN…`: training runs gathered into one markdown report with plots."""

from __future__ import annotations

import argparse
import pathlib
import sys

from jaxconv.cli.common import UsageError, output_directory
from jaxconv.cli.startup import quiet_backends


def run(args: argparse.Namespace) -> int:
    quiet_backends()
    from jaxconv.compare import find_runs
    from jaxconv.compare.report import write_report

    left_out: list[str] = []
    runs = find_runs(args.runs, left_out=left_out)
    for note in left_out + [note for found in runs for note in found.notes]:
        print(f"jaxconv: note: {note}", file=sys.stderr)
    out = pathlib.Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory")
    command = "jaxconv report " + " ".join(args.runs) + f" --out {args.out}" + (f" --x {args.x}" if args.x else "")
    with output_directory(out):
        path = write_report(runs, out, title=args.title, command=command, x=args.x,
                            log=lambda note: print(f"jaxconv: note: {note}", file=sys.stderr))
    print(path)
    return 0


def register(sub, common) -> None:
    p = sub.add_parser("report", parents=[common], help="gather training runs into one markdown report with tables and plots")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="training workdirs, or directories holding them")
    p.add_argument("--out", default="report", help="directory for report.md and its plots (default: report/)")
    p.add_argument("--title", default="jaxconv report")
    p.add_argument("--x", metavar="KEY", help="a config key the runs differ in (e.g. learning_rate): also plot "
                   "each setting's final loss and top-1 against it, seeds as dots with their range")
    p.set_defaults(func=run)
