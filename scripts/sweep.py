"""Run a sweep of training runs one after another on this machine, or emit it as a SLURM array job.

    python scripts/sweep.py experiments/study_plain_vs_residual.py                # the quick variant, in turn
    python scripts/sweep.py experiments/study_plain_vs_residual.py --variant full --slurm sweep.sbatch
    python scripts/sweep.py experiments/default.py experiments/cifar10_resnet20.py --set num_train_steps=100
    python scripts/sweep.py experiments/study_batchnorm.py --only bn_lr0.1 --dry-run
    python scripts/sweep.py experiments/default.py --import my_nets.py --set model=my_net

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
import signal
import subprocess
import sys
import time

from jaxconv.train.sweep import SweepError, changed_settings, plan, slurm_array
from jaxconv.train.workdir import read_summary
from jaxconv.user_modules import ENV_VAR, UserModuleError, env_specs, import_modules, merge


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
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE_OR_FILE",
                        help=f"your module or .py file with models (as every jaxconv command takes it; also "
                             f"${ENV_VAR}): every run imports and records it; repeatable")
    args = parser.parse_args(argv)
    try:
        runs_dir = pathlib.Path(args.runs_dir)
        if runs_dir.exists() and not runs_dir.is_dir():
            raise SweepError(f"--runs-dir {runs_dir}: is a file; give a folder for the runs' workdirs")
        overrides = _overrides(args.set)
        specs = merge(env_specs(), args.imports)
        if specs:
            if "imports" in overrides:
                raise SweepError("give your modules either with --import (or $JAXCONV_IMPORT) or with --set imports=…")
            try:  # as the runs will record them: absolute, so that each run finds them from its own workdir
                overrides["imports"] = ",".join(import_modules(specs))
            except UserModuleError as e:
                raise SweepError(str(e)) from None
        runs = plan(args.experiments, runs_dir=args.runs_dir, variant=args.variant, only=args.only,
                    overrides=overrides)
        if not runs:
            raise SweepError("no run selected")
        if args.slurm:
            script = pathlib.Path(args.slurm)
            try:
                script.write_text(slurm_array(runs, sbatch_options=args.sbatch_option))
            except OSError as e:
                raise SweepError(f"--slurm {script}: cannot write it ({e.strerror or e})") from None
            print(f"wrote {args.slurm} ({len(runs)} array tasks); submit it with: sbatch {args.slurm}")
            return 0
        _check_report(args, runs)
    except SweepError as e:
        print(f"sweep: error: {e}", file=sys.stderr)
        return 2
    failed = []
    for index, run in enumerate(runs, start=1):
        summary = read_summary(run.workdir)
        if summary is not None and summary.get("status") == "completed":
            differ = changed_settings(run)
            if not differ:
                print(f"[{index}/{len(runs)}] {run.name}: completed before, skipped", flush=True)
                continue
            print(f"[{index}/{len(runs)}] {run.name}: completed before with {differ}; `jaxconv train` decides "
                  f"whether that resumes it", flush=True)
        print(f"[{index}/{len(runs)}] {run.command()}", flush=True)
        if args.dry_run:
            continue
        started = time.time()
        code, interrupted = _train(run)
        if interrupted:
            print(f"sweep: stopped by {interrupted} during {run.name} (it saved a checkpoint if it could); run the "
                  f"same command to go on", file=sys.stderr)
            return 130
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
    reported = 0
    if args.report and not args.dry_run:
        dirs = sorted({str(run.workdir.parent) for run in runs})
        reported = subprocess.call([sys.executable, "-m", "jaxconv.cli", "report", *dirs, "--out", args.report,
                                    *(["--x", args.x] if args.x else [])])
    if failed:
        print(f"sweep: {len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return reported


def _train(run) -> tuple[int, str | None]:
    """Runs one `jaxconv train` to its end; Ctrl-C (which the terminal sends to it too) and SIGTERM (passed on)
    let it save a checkpoint and stop before the sweep stops: (exit status, the signal's name or None)."""
    child = subprocess.Popen(run.argv())
    received: list[str] = []

    def on_signal(signum, _frame):
        received.append(signal.Signals(signum).name)
        if signum == signal.SIGTERM:
            child.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return code, (received[0] if received else None)


def _check_report(args, runs) -> None:
    """--report DIR and --x KEY, checked before hours of training rather than after."""
    if args.x and not args.report:
        raise SweepError("--x goes with --report DIR")
    if args.report:
        out = pathlib.Path(args.report)
        if out.exists() and not out.is_dir():
            raise SweepError(f"--report {out}: is a file; give a folder for the report")
    if args.x:
        keys = {key for run in runs for key, _ in run.overrides}
        varied = sorted(key for key in keys if len({dict(run.overrides).get(key) for run in runs}) > 1)
        if args.x not in varied:
            raise SweepError(f"--x {args.x}: the sweep's runs differ in {', '.join(varied) or 'no key'}; give one of "
                             f"them")


if __name__ == "__main__":
    sys.exit(main())
