"""Run a sweep of training runs one after another on this machine, or emit it as a SLURM array job.

    python scripts/sweep.py experiments/study_plain_vs_residual.py                # the quick variant, in turn
    python scripts/sweep.py experiments/study_plain_vs_residual.py --variant full --slurm sweep.sbatch
    python scripts/sweep.py experiments/default.py experiments/cifar10_resnet20.py --set num_train_steps=100
    python scripts/sweep.py experiments/study_batchnorm.py --only bn_lr0.1 --dry-run

Each run trains in RUNS_DIR/<experiment>/<variant>/<run> (resuming it when it was interrupted; a
completed run is skipped). Every finished run appends a line with its wall time, machine and
command to RUNS_DIR/<experiment>/<variant>/sweep.jsonl; --report DIR then gathers the runs with
`jaxconv report`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

from jaxconv.train.sweep import SweepError, plan, slurm_array


def _overrides(pairs: list[str]) -> dict[str, str]:
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SweepError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set num_train_steps=100")
        result[key] = value
    return result


def _machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiments", nargs="+", help="experiment files (FILE.py or FILE.py:VARIANT)")
    parser.add_argument("--variant", help="the variant of files given without one (default: each file's first)")
    parser.add_argument("--only", nargs="+", default=[], metavar="RUN", help="run only these runs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override for every run")
    parser.add_argument("--runs-dir", default="runs", help="where workdirs go (default: runs/)")
    parser.add_argument("--slurm", metavar="FILE", help="write an sbatch array script instead of running")
    parser.add_argument("--sbatch-option", action="append", default=[], metavar="OPTION",
                        help="an extra #SBATCH line, e.g. --sbatch-option=--gres=gpu:1")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    parser.add_argument("--report", metavar="DIR", help="afterwards, write `jaxconv report` of the sweep's runs to DIR")
    parser.add_argument("--x", metavar="KEY", help="with --report: also plot final values against this swept key")
    args = parser.parse_args(argv)
    try:
        runs = plan(args.experiments, runs_dir=args.runs_dir, variant=args.variant, only=args.only,
                    overrides=_overrides(args.set))
        if not runs:
            raise SweepError("no run selected")
        if args.slurm:
            pathlib.Path(args.slurm).write_text(slurm_array(runs, sbatch_options=args.sbatch_option))
            print(f"wrote {args.slurm} ({len(runs)} array tasks); submit it with: sbatch {args.slurm}")
            return 0
    except SweepError as e:
        print(f"sweep: error: {e}", file=sys.stderr)
        return 2
    failed = []
    for index, run in enumerate(runs, start=1):
        summary = run.workdir / "summary.json"
        if summary.is_file() and json.loads(summary.read_text()).get("status") == "completed":
            print(f"[{index}/{len(runs)}] {run.name}: completed before, skipped", flush=True)
            continue
        print(f"[{index}/{len(runs)}] {run.command()}", flush=True)
        if args.dry_run:
            continue
        started = time.time()
        code = subprocess.call(run.argv())
        record = {
            "run": run.name, "workdir": str(run.workdir), "exit_code": code,
            "wall_time_s": round(time.time() - started, 1), "machine": _machine(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"), "command": run.command(),
        }
        run.workdir.parent.mkdir(parents=True, exist_ok=True)
        with open(run.workdir.parent / "sweep.jsonl", "a", encoding="utf-8") as log:
            log.write(json.dumps(record) + "\n")
        if code != 0:
            failed.append(run.name)
    if args.report and not args.dry_run:
        dirs = sorted({str(run.workdir.parent) for run in runs})
        subprocess.call([sys.executable, "-m", "jaxconv.cli", "report", *dirs, "--out", args.report,
                         *(["--x", args.x] if args.x else [])])
    if failed:
        print(f"sweep: {len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
