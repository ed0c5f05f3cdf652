"""The `jaxconv` command. Thin: it parses arguments and calls the library.

User mistakes (an unknown model, an image size the network cannot take, a bad flag) end
with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

EXIT_USAGE = 2


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

    p = sub.add_parser("list", help="every registered model with parameters, GMACs and default input size")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnet*'")
    p.add_argument("--format", choices=("table", "md", "json"), default="table")
    p.set_defaults(func=cmd_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        return args.func(args)
    except UsageError as e:
        print(f"jaxconv: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("jaxconv: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
