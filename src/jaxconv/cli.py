"""The `jaxconv` command. Thin: it parses arguments and calls the library.

User mistakes (an unknown model, an image size the network cannot take, a bad flag) end
with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
from collections.abc import Sequence

EXIT_USAGE = 2
EXIT_FAILURE = 1
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


class UsageError(Exception):
    """A mistake in what the user asked for; reported in one line with exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + error
        raise UsageError(f"{self.prog}: {message}")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _image_size(text: str) -> int | tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) > 2:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}")
    sizes = tuple(_positive_int(p) for p in parts)
    return sizes[0] if len(sizes) == 1 else sizes  # type: ignore[return-value]


def cmd_summary(args: argparse.Namespace) -> int:
    from jaxconv.analysis import format_summary, summary
    from jaxconv.layers import GeometryError
    from jaxconv.registry import UnknownModelError, model_info

    try:
        info = model_info(args.model)
    except UnknownModelError as e:
        raise UsageError(str(e)) from None
    size = args.image_size or info.image_size
    try:
        result = summary(
            args.model,
            image_size=size,
            batch_size=args.batch_size,
            in_channels=args.in_channels,
            num_classes=args.num_classes,
            dtype=args.dtype,
        )
    except GeometryError as e:
        size_text = size if isinstance(size, int) else "x".join(map(str, size))
        raise UsageError(
            f"{args.model} cannot take {size_text} px inputs: {e} (its default size is {info.image_size})"
        ) from None
    sys.stdout.write(format_summary(result, args.format))
    return 0


def registry_rows(pattern: str = "*", summarize=None) -> list[dict]:
    """Name, family, parameters, GMACs and default size of every registered model.

    ``summarize(name)`` defaults to ``jaxconv.summary`` at the model's defaults.
    """
    from jaxconv.analysis import summary
    from jaxconv.registry import list_models, model_info

    summarize = summarize or summary
    rows = []
    for name in list_models(pattern):
        info = model_info(name)
        s = summarize(name)
        rows.append(
            {
                "name": name,
                "family": info.family,
                "params": s.params,
                "gmacs": round(s.macs / 1e9, 3),
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


def cmd_list(args: argparse.Namespace) -> int:
    from jaxconv.registry import list_models

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


def _quiet_backends() -> None:
    """Keeps TensorFlow's C++ logging and TFDS's progress bars out of the user's terminal."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # TensorFlow only decodes and augments images here; its oneDNN notice is noise to the user.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import logging
    import warnings

    import absl.logging
    import tensorflow_datasets as tfds

    absl.logging.set_verbosity(absl.logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)
    tfds.disable_progress_bar()
    warnings.filterwarnings("ignore", message="Some donated buffers were not usable")


_LOG_ENABLED = True  # off on every process but the first of a multi-process run


def _log(message: str) -> None:
    if _LOG_ENABLED:
        print(message, file=sys.stderr, flush=True)


def _enable_compilation_cache() -> None:
    """Keeps compiled steps in JAX's persistent cache, so that a resumed or repeated run skips compiling.

    The cache is $JAX_COMPILATION_CACHE_DIR when set, else ~/.cache/jaxconv/xla
    (under $XDG_CACHE_HOME when set); JAXCONV_COMPILATION_CACHE=0 turns it off.
    """
    if os.environ.get("JAXCONV_COMPILATION_CACHE", "1") == "0" or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    import jax

    cache_home = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache"))
    jax.config.update("jax_compilation_cache_dir", str(cache_home / "jaxconv" / "xla"))


def _start_processes(args: argparse.Namespace) -> None:
    """Joins a multi-process run when launched as one (flags, JAXCONV_* variables, SLURM, TPU pod)."""
    global _LOG_ENABLED
    import jax

    from jaxconv.parallel import LaunchError, initialize_distributed

    try:
        launch = initialize_distributed(args.coordinator, args.num_processes, args.process_id,
                                        heartbeat_timeout=args.heartbeat_timeout)
    except LaunchError as e:
        raise UsageError(str(e)) from None
    _LOG_ENABLED = jax.process_index() == 0
    if jax.process_count() > 1:
        _log(f"multi-process run: {launch}")


def default_experiment() -> pathlib.Path | None:
    """experiments/default.py of the working directory, or of the checkout jaxconv runs from."""
    for root in (pathlib.Path.cwd(), REPO_ROOT):
        candidate = root / "experiments" / "default.py"
        if candidate.is_file():
            return candidate
    return None


def _config_overrides(extra: list[str]) -> dict[str, str]:
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
        overrides[key] = value
        i += 1
    return overrides


def _resolved_config(path: pathlib.Path | None, overrides: dict[str, str]):
    import jax

    from jaxconv.train.config import ConfigError, apply_overrides, base_config, load_config, validate

    try:
        config = load_config(path) if path is not None else base_config()
        config = apply_overrides(config, overrides)
        return validate(config, device_count=jax.device_count(), process_count=jax.process_count())
    except ConfigError as e:
        raise UsageError(str(e)) from None


def cmd_train(args: argparse.Namespace, extra: list[str]) -> int:
    _quiet_backends()
    from jaxconv.checkpoint import CheckpointMismatch, CheckpointWriteError
    from jaxconv.data.sources import DatasetUnavailable
    from jaxconv.train.loop import TrainingDiverged, WorkdirError, train

    overrides = _config_overrides(extra)
    _enable_compilation_cache()
    _start_processes(args)
    path = pathlib.Path(args.config) if args.config else default_experiment()
    if path is not None and not path.is_file():
        raise UsageError(f"--config {args.config}: no such experiment file (see experiments/)")
    config = _resolved_config(path, overrides)
    name = path.stem if path is not None else "default"
    workdir = pathlib.Path(args.workdir or pathlib.Path("runs") / name)
    if workdir.exists() and not workdir.is_dir():
        raise UsageError(f"--workdir {workdir}: exists and is not a directory")
    _log(f"experiment {path or 'base config'} -> workdir {workdir.absolute()}")
    try:
        summary = train(config, workdir, log=_log)
    except (DatasetUnavailable, CheckpointMismatch, WorkdirError) as e:
        raise UsageError(str(e)) from None
    except TrainingDiverged as e:
        _log(f"jaxconv: training stopped: {e}; the last good checkpoint is kept in {workdir / 'checkpoints'}")
        return EXIT_FAILURE
    except CheckpointWriteError as e:
        print(f"jaxconv: training stopped: {e}", file=sys.stderr)
        return EXIT_FAILURE
    if _LOG_ENABLED:
        print(format_train_summary(summary))
    return 0


def format_train_summary(summary: dict) -> str:
    lines = [f"{summary.get('status', 'completed')}: {summary.get('model')} on {summary.get('dataset')}, "
             f"{summary.get('steps')} steps ({summary.get('epochs', 0):.2f} epochs) "
             f"in {summary.get('wall_time_s', 0) / 60:.1f} min"]
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


def cmd_eval(args: argparse.Namespace, extra: list[str]) -> int:
    if extra:
        raise UsageError(f"unrecognised arguments: {' '.join(extra)}")
    _quiet_backends()
    import jax

    from jaxconv.checkpoint import CheckpointMismatch
    from jaxconv.data.sources import DatasetUnavailable
    from jaxconv.train.config import ConfigError, validate
    from jaxconv.train.loop import evaluate_checkpoint

    _enable_compilation_cache()
    workdir = pathlib.Path(args.workdir)
    config_path = workdir / "config.json"
    if not config_path.is_file():
        raise UsageError(f"--workdir {workdir}: no config.json there (is it a `jaxconv train` workdir?)")
    import ml_collections

    stored = json.loads(config_path.read_text())
    devices = jax.device_count()
    stored["eval_batch_size"] = -(-stored.get("eval_batch_size") // devices) * devices
    try:
        config = validate(ml_collections.ConfigDict(stored), device_count=devices, process_count=jax.process_count())
    except ConfigError as e:
        raise UsageError(f"{config_path}: {e}") from None
    try:
        result = evaluate_checkpoint(config, workdir, step=args.step, split=args.split, ten_crop=args.ten_crop,
                                     log=_log)
    except (DatasetUnavailable, CheckpointMismatch, FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
    if args.format == "json":
        print(json.dumps(result, indent=2))
    else:
        print(f"step {result['step']} on {result['split']}{' (10 crops)' if result['ten_crop'] else ''}: "
              f"top-1 {100 * result['top1']:.2f}%  top-5 {100 * result['top5']:.2f}%  loss {result['loss']:.4f}  "
              f"({result['examples']} examples)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jaxconv", description="Convolutional networks in JAX/Flax.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")

    p = sub.add_parser("summary", help="per-layer shapes, parameters, MACs, activations, receptive fields")
    p.add_argument("model", help="a registered model name (see `jaxconv list`)")
    p.add_argument("--image-size", type=_image_size, help="N or HxW (default: the model's own)")
    p.add_argument("--batch-size", type=_positive_int, default=1, help="for shapes and the memory estimate")
    p.add_argument("--in-channels", type=_positive_int, help="input channels (default: the model's own)")
    p.add_argument("--num-classes", type=_positive_int, help="classifier size (default: the model's own)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    p.add_argument("--format", choices=("table", "md", "csv", "json"), default="table")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("train", help="train an experiment (default: experiments/default.py); resumes a workdir")
    p.add_argument("--config", help="an experiment file defining get_config() (default: experiments/default.py)")
    p.add_argument("--workdir", help="where checkpoints, metrics and the summary go (default: runs/<experiment>)")
    launch = p.add_argument_group("multi-process runs (SLURM `srun` and Cloud TPU pods are detected by themselves)")
    launch.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address (or JAXCONV_COORDINATOR)")
    launch.add_argument("--num-processes", type=_positive_int, metavar="N", help="or JAXCONV_NUM_PROCESSES")
    launch.add_argument("--process-id", type=int, metavar="K", help="0..N-1 (or JAXCONV_PROCESS_ID)")
    launch.add_argument("--heartbeat-timeout", type=_positive_int, default=100, metavar="SECONDS",
                        help="stop with an error when another process has been silent this long (default 100)")
    p.epilog = "Any config value can be overridden with --config.KEY=VALUE, e.g. --config.num_train_steps=100."
    p.set_defaults(func=cmd_train, takes_extra=True)

    p = sub.add_parser("eval", help="evaluate a training run's latest (or given) checkpoint")
    p.add_argument("--workdir", required=True, help="a `jaxconv train` workdir")
    p.add_argument("--step", type=_positive_int, help="the checkpoint's step (default: the latest)")
    p.add_argument("--split", help="the split to evaluate (default: the dataset's evaluation split)")
    p.add_argument("--ten-crop", action="store_true", help="AlexNet's 10-crop evaluation (softmax averaged)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_eval, takes_extra=True)

    p = sub.add_parser("list", help="every registered model with parameters, GMACs and default input size")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnet*'")
    p.add_argument("--format", choices=("table", "md", "json"), default="table")
    p.set_defaults(func=cmd_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        if getattr(args, "takes_extra", False):
            return args.func(args, extra)
        if extra:
            raise UsageError(f"unrecognised arguments: {' '.join(extra)}")
        return args.func(args)
    except UsageError as e:
        print(f"jaxconv: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("jaxconv: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
