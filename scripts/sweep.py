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
import functools
import json
import os
import pathlib
import platform
import shlex
import signal
import subprocess
import sys
import time

from jaxconv.cli.common import given_twice
from jaxconv.train.config import ConfigError, split_variant
from jaxconv.train.sweep import SweepError, changed_settings, is_sweep_script, plan, run_configs, slurm_array
from jaxconv.train.workdir import read_summary
from jaxconv.user_modules import ENV_VAR, UserModuleError, env_specs, import_modules, merge


def _overrides(pairs: list[str]) -> dict[str, str]:
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SweepError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set num_train_steps=100")
        if key in result and result[key] != value:  # as `jaxconv` says of an option given twice
            given_twice(f"--set {key}", result[key], value, program="sweep")
        result[key] = value
    return result


def _check_slurm(args) -> pathlib.Path:
    """--slurm FILE: a new file, or a script this tool wrote before -- never an experiment file, a .py, or any
    other file it would overwrite."""
    script = pathlib.Path(args.slurm)
    experiments = {split_variant(given)[0].resolve() for given in args.experiments}
    if script.suffix == ".py" or script.resolve() in experiments:
        which = " (an experiment of this sweep)" if script.resolve() in experiments else ""
        raise SweepError(f"--slurm {script}: that is a Python file{which}; give a new file for the sbatch script, "
                         f"e.g. --slurm sweep.sbatch")
    if script.is_dir():
        raise SweepError(f"--slurm {script}: is a folder; give a file for the sbatch script, e.g. --slurm sweep.sbatch")
    if script.exists() and not is_sweep_script(script):
        raise SweepError(f"--slurm {script}: exists and is not an sbatch script this tool wrote; give a new file "
                         f"(or remove that one yourself)")
    if args.report or args.x:
        raise SweepError(f"--{'report' if args.report else 'x'} runs after a sweep that runs here, not after an "
                         f"array job; when its tasks have finished, run `jaxconv report RUNS_DIR/... --out DIR`")
    return script


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
            script = _check_slurm(args)
            text = slurm_array(runs, sbatch_options=args.sbatch_option)
            if args.dry_run:
                print(text, end="")
                print(f"(--dry-run: {script} not written; {len(runs)} array tasks)", file=sys.stderr)
                return 0
            if not script.parent.is_dir():
                raise SweepError(f"--slurm {script}: cannot write it (no folder {script.parent})")
            try:
                script.write_text(text)
            except OSError as e:
                raise SweepError(f"--slurm {script}: cannot write it ({e.strerror or e})") from None
            print(f"wrote {script} ({len(runs)} array tasks, each runs from {pathlib.Path.cwd()}); submit it with: "
                  f"sbatch {shlex.quote(str(script))} (resubmitting it resumes the unfinished runs)")
            return 0
        _check_report(args, runs)
    except (SweepError, ConfigError) as e:
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
            return 128 + signal.Signals[interrupted].value  # 130 after Ctrl-C, 143 after SIGTERM, as a shell says
        if code < 0:  # killed (SIGKILL: the out-of-memory killer, a job's time limit): it could not say so itself
            name = signal.Signals(-code).name if -code in signal.valid_signals() else "?"
            name += ", as the out-of-memory killer does" if -code == signal.SIGKILL else ""
            print(f"sweep: run {run.name} was killed by signal {-code} ({name}); rerunning the sweep resumes it "
                  f"from its last checkpoint", file=sys.stderr, flush=True)
        record = {
            "run": run.name, "workdir": str(run.workdir), "exit_code": code,
            **({"killed_by_signal": -code} if code < 0 else {}),
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
    child = subprocess.Popen(run.argv(), preexec_fn=functools.partial(die_with_parent, os.getpid())
                             if sys.platform == "linux" else None)
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


def die_with_parent(parent: int) -> None:
    """In the child, before it runs `jaxconv train`: SIGTERM when the sweep dies, even by SIGKILL, so that the
    run saves and stops instead of training on as an orphan that holds its workdir (Linux's PR_SET_PDEATHSIG)."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # an ignored SIGTERM (inherited) would make the line below moot
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the sweep died before the line above took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _check_report(args, runs) -> None:
    """--report DIR and --x KEY, checked before hours of training rather than after."""
    if args.x and not args.report:
        raise SweepError("--x goes with --report DIR")
    if args.report:
        out = pathlib.Path(args.report)
        if out.exists() and not out.is_dir():
            raise SweepError(f"--report {out}: is a file; give a folder for the report")
    if args.x:  # as `jaxconv report --x` will judge it
        from jaxconv.compare.runs import differing_config_keys, x_axis_problem

        problem = x_axis_problem(args.x, differing_config_keys(run_configs(runs)))
        if problem:
            raise SweepError(f"--x {args.x}: " + problem.replace("the runs", "the sweep's runs"))


if __name__ == "__main__":
    sys.exit(main())
