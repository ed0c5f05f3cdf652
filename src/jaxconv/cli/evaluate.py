"""`jaxconv eval --workdir RUN`: a run's latest (or given) checkpoint on a split."""

from __future__ import annotations

import argparse
import json
import pathlib

from jaxconv.cli.common import UsageError, check_recorded_folder, log, positive_int, stored_config
from jaxconv.cli.startup import enable_compilation_cache, ignore_late_storage_callbacks, quiet_backends


def run(args: argparse.Namespace, extra: list[str]) -> int:
    if extra:
        raise UsageError(f"unrecognised arguments: {' '.join(extra)}")
    quiet_backends()
    ignore_late_storage_callbacks()  # a checkpoint that cannot be read leaves TensorStore's reads behind
    import jax

    from jaxconv.train.config import ConfigError, validate
    from jaxconv.train.evaluate import evaluate_checkpoint

    enable_compilation_cache()
    workdir = pathlib.Path(args.workdir)
    stored = stored_config(workdir)
    check_recorded_folder(stored, workdir, "eval")
    devices = jax.device_count()
    batch = stored.get("eval_batch_size")
    if isinstance(batch, int) and not isinstance(batch, bool) and batch > 0:  # fit this machine's devices
        stored.eval_batch_size = -(-stored.eval_batch_size // devices) * devices
    try:
        config = validate(stored, device_count=devices, process_count=jax.process_count(), log=log, training=False)
    except ConfigError as e:
        raise UsageError(f"{workdir / 'config.json'}: {e}") from None
    result = evaluate_checkpoint(config, workdir, step=args.step, split=args.split, ten_crop=args.ten_crop, log=log)
    if config.eval_examples and result["examples"] > config.eval_examples:
        log(f"note: the run's own evaluations read the first {config.eval_examples} examples (its eval_examples); "
            f"this one reads all {result['examples']}")
    if args.format == "json":
        print(json.dumps(result, indent=2))
    else:
        print(f"step {result['step']} on {result['split']}{' (10 crops)' if result['ten_crop'] else ''}: "
              f"top-1 {100 * result['top1']:.2f}%  top-5 {100 * result['top5']:.2f}%  loss {result['loss']:.4f}  "
              f"({result['examples']} examples)")
    return 0


def register(sub, common) -> None:
    p = sub.add_parser("eval", parents=[common], help="evaluate a training run's latest (or given) checkpoint")
    p.add_argument("--workdir", required=True, help="a `jaxconv train` workdir")
    p.add_argument("--step", type=positive_int, help="the checkpoint's step (default: the latest)")
    p.add_argument("--split", help="the split to evaluate (default: the dataset's evaluation split)")
    p.add_argument("--ten-crop", action=argparse.BooleanOptionalAction, default=None,
                   help="AlexNet's 10-crop evaluation (softmax averaged); default: as the run evaluated (config.ten_crop)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=run, takes_extra=True)
