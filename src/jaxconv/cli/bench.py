"""`jaxconv bench MODEL`: step, layer and input-pipeline throughput."""

from __future__ import annotations

import argparse
import json
import sys

from jaxconv.cli.common import UsageError, log, positive_int
from jaxconv.cli.startup import enable_compilation_cache, quiet_backends


def run(args: argparse.Namespace) -> int:
    if args.mode == "data" and args.dtype is not None:
        raise UsageError(f"--dtype {args.dtype}: --mode data times the input pipeline alone, whose batches are uint8 "
                         f"(the model computes nothing); drop --dtype, or time a step with --mode train or eval")
    if args.mode != "data" and args.recipe is not None:
        raise UsageError(f"--recipe {args.recipe}: only --mode data reads a recipe (the input pipeline); "
                         f"--mode {args.mode} times the model on synthetic batches, so drop --recipe")
    if args.mode == "data":
        quiet_backends()
    else:  # no TensorFlow to quieten (or to wait for while it imports)
        import warnings

        warnings.filterwarnings("ignore", message="Some donated buffers were not usable")
    enable_compilation_cache()
    from jaxconv import bench

    request = bench.Request(args.model, args.mode, args.batch_size, args.image_size, args.dtype or "float32", args.steps,
                            args.warmup, recipe=args.recipe)
    from jaxconv.bench.common import check_request, requested_model

    check_request(request)
    requested_model(args.model)
    result = bench.run(request, progress=log)  # says "compiling ..." once the model is found to take the input
    sys.stdout.write(json.dumps(result, indent=2) + "\n" if args.format == "json" else bench.format_text(result))
    return 0


def register(sub, common) -> None:
    p = sub.add_parser("bench", parents=[common], help="training / inference / input-pipeline throughput, compile time, FLOP/s, MFU")
    p.add_argument("model", help="a registered model name (see `jaxconv list`)")
    p.add_argument("--mode", choices=("train", "eval", "data", "layers"), default="train",
                   help="train step, eval (forward) step, the input pipeline alone, or each convolution "
                        "alone (forward, input and kernel gradient; --steps timings each) (default train)")
    p.add_argument("--batch-size", type=positive_int, default=128, help="global batch (default 128)")
    p.add_argument("--image-size", type=positive_int, help="input size (default: the model's own)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), help="compute dtype (default float32; not --mode data)")
    p.add_argument("--steps", type=positive_int, default=20, help="timed steps (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps after compiling (default 3)")
    p.add_argument("--recipe", choices=("imagenet", "imagenet-photo", "cifar"),
                   help="--mode data: ImageNet-sized synthetic JPEGs + Inception crop, the same on a real "
                        "photograph (matplotlib's grace_hopper.jpg), or 32 px PNG + pad-and-crop "
                        "(default: imagenet for inputs of 64 px and more)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=run)
