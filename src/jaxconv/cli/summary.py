"""`jaxconv summary MODEL`: per-layer shapes, parameters, MACs, activations, receptive fields."""

from __future__ import annotations

import argparse
import sys

from jaxconv.cli.common import UsageError, image_size_arg, model_option, positive_int


def run(args: argparse.Namespace) -> int:
    from jaxconv.analysis import format_summary, summary
    from jaxconv.layers import GeometryError, LayoutError
    from jaxconv.models import ModelContractError, model_info

    info = model_info(args.model)
    size = args.image_size or info.image_size
    options = dict(args.options)
    for key, flag in (("num_classes", "--num-classes"), ("dtype", "--dtype"), ("image_size", "--image-size"),
                      ("batch_size", "--batch-size"), ("in_channels", "--in-channels")):
        if key in options:
            raise UsageError(f"--option {key}={options[key]!r}: give it as {flag}, not as a model option")
    try:
        result = summary(
            args.model,
            image_size=size,
            batch_size=args.batch_size,
            in_channels=args.in_channels,
            num_classes=args.num_classes,
            dtype=args.dtype,
            **options,
        )
    except GeometryError as e:
        size_text = size if isinstance(size, int) else "x".join(map(str, size))
        raise UsageError(
            f"{args.model} cannot take {size_text} px inputs: {e} (its default size is {info.image_size})"
        ) from None
    except LayoutError as e:
        size_text = size if isinstance(size, int) else "x".join(map(str, size))
        given = f"--image-size {size_text}" + (f" --in-channels {args.in_channels}" if args.in_channels else "")
        raise UsageError(f"{args.model} cannot take these inputs ({given}): {e}") from None
    except ModelContractError:  # the model itself, not the options given to it
        raise
    except (TypeError, ValueError, ArithmeticError) as e:  # ArithmeticError: widths of 0 reach a division
        if not options:
            raise
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        detail = detail.removeprefix(f"{args.model}: ")  # get_model's own checks name the model too
        raise UsageError(f"--option {' '.join(f'{k}={v!r}' for k, v in options.items())}: {args.model} refuses it: "
                         f"{detail}") from None
    sys.stdout.write(format_summary(result, args.format))
    return 0


def register(sub, common) -> None:
    p = sub.add_parser("summary", parents=[common], help="per-layer shapes, parameters, MACs, activations, receptive fields")
    p.add_argument("model", help="a registered model name (see `jaxconv list`)")
    p.add_argument("--image-size", type=image_size_arg, help="N or HxW (default: the model's own)")
    p.add_argument("--batch-size", type=positive_int, default=1, help="for shapes and the memory estimate")
    p.add_argument("--in-channels", type=positive_int, help="input channels (default: the model's own)")
    p.add_argument("--num-classes", type=positive_int, help="classifier size (default: the model's own)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    p.add_argument("--option", dest="options", type=model_option, action="append", default=[], metavar="NAME=VALUE",
                   help="a model option, as config.model_options takes it (e.g. groups=2, norm=group); repeatable")
    p.add_argument("--format", choices=("table", "md", "csv", "json"), default="table")
    p.set_defaults(func=run)
