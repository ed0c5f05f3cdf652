"""`jaxconv train`: an experiment file (or a workdir's own config), overrides, and the run."""

from __future__ import annotations

import argparse
import difflib
import os
import pathlib
import sys
from collections.abc import Sequence

from jaxconv.cli.common import (EXIT_FAILURE, REPO_ROOT, UsageError, check_recorded_folder, given_twice, log,
                                log_enabled, positive_int, set_log_enabled, stored_config)
from jaxconv.cli.startup import enable_compilation_cache, ignore_late_storage_callbacks, quiet_backends, terminated
from jaxconv.user_modules import import_modules, merge


def start_processes(args: argparse.Namespace) -> None:
    """Joins a multi-process run when launched as one (flags, JAXCONV_* variables, SLURM, TPU pod)."""
    import jax

    from jaxconv.parallel import JoinTimeout, LaunchError, initialize_distributed

    try:
        launch = initialize_distributed(args.coordinator, args.num_processes, args.process_id,
                                        heartbeat_timeout=args.heartbeat_timeout, log=log)
    except LaunchError as e:
        raise UsageError(str(e)) from None
    except JoinTimeout as e:  # the join, blocked in C++, cannot be cancelled: leave without waiting for it
        print(f"jaxconv: stopped: {e}", file=sys.stderr, flush=True)
        os._exit(1)
    set_log_enabled(jax.process_index() == 0)
    if jax.process_count() > 1:
        log(f"multi-process run: {launch}")


def default_experiment() -> pathlib.Path | None:
    """experiments/default.py of the working directory, or of the checkout jaxconv runs from."""
    for root in (pathlib.Path.cwd(), REPO_ROOT):
        candidate = root / "experiments" / "default.py"
        if candidate.is_file():
            return candidate
    return None


def config_overrides(extra: list[str]) -> dict[str, str]:
    """--config.KEY=VALUE and --config.KEY VALUE arguments."""
    overrides, i = {}, 0
    while i < len(extra):
        arg = extra[i]
        if not arg.startswith("--config."):
            raise UsageError(f"unrecognised argument {arg!r} (config values are given as --config.KEY=VALUE)")
        key = arg[len("--config."):]
        if "=" in key:
            key, value = key.split("=", 1)
        elif i + 1 < len(extra):
            i += 1
            value = extra[i]
        else:
            raise UsageError(f"{arg} needs a value (--config.KEY=VALUE)")
        if overrides.get(key, value) != value:
            given_twice(f"--config.{key}", overrides[key], value)
        overrides[key] = value
        i += 1
    return overrides


def resolved_config(source, overrides: dict[str, str], imports: Sequence[str] = ()):
    """The validated config of an experiment file (or base config, or a stored ConfigDict) with overrides.

    ``imports`` (what --import brought in) go first in ``config.imports``, which the run records.
    """
    import jax
    import ml_collections

    from jaxconv.train.config import ConfigError, apply_overrides, base_config, load_config, validate

    try:
        if isinstance(source, ml_collections.ConfigDict):
            config = source
        else:
            config = load_config(source) if source is not None else base_config()
        config = apply_overrides(config, overrides)
        if imports:
            config.imports = tuple(merge(imports, config.get("imports", ())))
        config = validate(config, device_count=jax.device_count(), process_count=jax.process_count(), log=log)
    except ConfigError as e:
        given = {key.split(".")[0] for key in overrides}
        if isinstance(source, ml_collections.ConfigDict) and e.key.split(".")[0] not in given:
            raise UsageError(f"the run's config.json holds {e}") from None  # damaged, or edited by hand: say where
        raise UsageError(str(e)) from None
    if "num_epochs" in overrides and "num_train_steps" not in overrides and config.num_train_steps:
        origin = ("the run's config.json" if isinstance(source, ml_collections.ConfigDict)
                  else f"experiment file {source}" if source is not None else "the base config")
        raise UsageError(f"--config.num_epochs={overrides['num_epochs']}: config.num_train_steps="
                         f"{config.num_train_steps} (from {origin}) takes precedence, so it would change nothing; to "
                         f"train by epochs give --config.num_train_steps=None as well")
    return config


def run(args: argparse.Namespace, extra: list[str]) -> int:
    import signal

    signal.signal(signal.SIGTERM, terminated)  # until the run installs its own handler (train.signals.stop_signals)
    try:
        return _train_command(args, extra)
    finally:  # the run is over: a SIGTERM or a late second Ctrl-C now would only turn its exit status into
        # 143 or -2 (a KeyboardInterrupt raised while the interpreter shuts down kills it with SIGINT)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _train_command(args: argparse.Namespace, extra: list[str]) -> int:
    quiet_backends()
    from jaxconv.train.loop import TrainingDiverged, train
    from jaxconv.train.workdir import RunWriteError

    ignore_late_storage_callbacks()
    overrides = config_overrides(extra)
    allow_changes = allowed_changes(args.allow_change)
    enable_compilation_cache()
    start_processes(args)
    imported = import_modules(args.imports)
    from jaxconv.train.config import split_variant

    if args.config is None and args.workdir and (pathlib.Path(args.workdir) / "config.json").is_file():
        # `jaxconv train --workdir RUN`: resume the run as it was configured (its own imports included)
        workdir = pathlib.Path(args.workdir)
        stored = stored_config(workdir)
        check_recorded_folder(stored, workdir, "train", overrides)
        config = resolved_config(stored, overrides, imported)
        log(f"resuming {workdir.absolute()} with its config.json")
    else:
        path, variant = split_variant(args.config) if args.config else (default_experiment(), None)
        if path is not None and not path.is_file():
            raise UsageError(f"--config {args.config}: no such experiment file (see experiments/)")
        config = resolved_config(args.config or path, overrides, imported)
        name = (path.stem + (f"_{variant}" if variant else "")) if path is not None else "default"
        workdir = pathlib.Path(args.workdir or pathlib.Path("runs") / name)
        log(f"experiment {path or 'base config'} -> workdir {workdir.absolute()}")
    if workdir.exists() and not workdir.is_dir():
        raise UsageError(f"--workdir {workdir}: exists and is not a directory")
    try:
        summary = train(config, workdir, log=log, allow_changes=allow_changes)
    except TrainingDiverged as e:
        from jaxconv.train.workdir import has_checkpoints

        kept = (f"the last good checkpoint is kept in {workdir / 'checkpoints'}" if has_checkpoints(workdir)
                else "no checkpoint had been written yet")
        log(f"jaxconv: training stopped: {e}; {kept}")
        return EXIT_FAILURE
    except RunWriteError as e:  # a checkpoint, metrics.jsonl, config.json, ...
        print(f"jaxconv: training stopped: {e}", file=sys.stderr)
        return EXIT_FAILURE
    if log_enabled():
        print(format_train_summary(summary))
    return 0


def allowed_changes(values: Sequence[str]) -> frozenset[str]:
    """--allow-change KEY[,KEY...] (repeatable), or 'all': config keys a resume may change."""
    from jaxconv.train.config import base_config

    known = set(base_config().keys())
    keys = {key.strip() for value in values for key in value.split(",") if key.strip()}
    for key in sorted(keys):
        if key != "all" and key.partition(".")[0] not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise UsageError(f"--allow-change {key}: not a config key; {hint}give config keys "
                             f"(e.g. batch_size,learning_rate) or 'all'")
    return frozenset(keys)


def _session_time(summary: dict) -> str:
    """A resumed run's last session, where its time differs from the run's (which counts every session)."""
    total, session = summary.get("wall_time_s"), summary.get("session_wall_time_s")
    if session is None or (total is not None and f"{total / 60:.1f}" == f"{session / 60:.1f}"):
        return ""
    return f" (this session {session / 60:.1f} min)"


def format_train_summary(summary: dict) -> str:
    lines = [f"{summary.get('status', 'completed')}: {summary.get('model')} on {summary.get('dataset')}, "
             f"{summary.get('steps')} steps ({summary.get('epochs', 0):.2f} epochs) "
             + (f"in {summary['wall_time_s'] / 60:.1f} min" if summary.get("wall_time_s") is not None
                else "(wall time unknown)")
             + _session_time(summary)]
    final = summary.get("final_eval")
    if final:
        lines.append(f"  final eval: top-1 {100 * final['top1']:.2f}%  top-5 {100 * final['top5']:.2f}%  "
                     f"loss {final['loss']:.4f}  ({final['examples']} examples)")
    best = summary.get("best_eval")
    if best:
        lines.append(f"  best eval:  top-1 {100 * best['top1']:.2f}% at step {best['step']}")
    for key in ("workdir", "checkpoints", "metrics"):
        if key in summary:
            lines.append(f"  {key}: {summary[key]}")
    return "\n".join(lines)


def register(sub, common) -> None:
    from jaxconv.train.keys import key_table

    p = sub.add_parser("train", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="train an experiment (default: experiments/default.py); resumes a workdir")
    p.add_argument("--config", help="an experiment file defining get_config() (default: experiments/default.py)")
    p.add_argument("--workdir", help="where checkpoints, metrics and the summary go (default: runs/<experiment>)")
    p.add_argument("--allow-change", action="append", default=[], metavar="KEY[,KEY...]",
                   help="on resume, continue with new values of these config keys (or 'all') although they change "
                        "what the run is (batch size, learning rate, seed, ...); recorded in config_changes.jsonl")
    launch = p.add_argument_group("multi-process runs (SLURM `srun` and Cloud TPU pods are detected by themselves)")
    launch.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address (or JAXCONV_COORDINATOR)")
    launch.add_argument("--num-processes", type=positive_int, metavar="N", help="or JAXCONV_NUM_PROCESSES")
    launch.add_argument("--process-id", type=int, metavar="K", help="0..N-1 (or JAXCONV_PROCESS_ID)")
    launch.add_argument("--heartbeat-timeout", type=positive_int, default=100, metavar="SECONDS",
                        help="stop with an error when another process has been silent this long (default 100)")
    p.epilog = ("Any config key can be overridden with --config.KEY=VALUE, e.g. --config.num_train_steps=100 or "
                "--config.optimizer.name=adamw.\n\nConfig keys (default, what it is; what it takes):\n" + key_table())
    p.set_defaults(func=run, takes_extra=True)
