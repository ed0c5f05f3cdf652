"""`jaxconv compare`: the ILSVRC architectures side by side, and the plots."""

from __future__ import annotations

import argparse
import contextlib
import pathlib
import sys

from jaxconv.cli.common import UsageError, log, output_directory, positive_int
from jaxconv.cli.startup import enable_compilation_cache, quiet_backends


def _speed_measure(args: argparse.Namespace):
    """measure(model, mode, batch_size, image_size) -> images/s, timed with `jaxconv bench`'s code."""
    from jaxconv import bench

    def measure(name: str, mode: str, batch_size: int, image_size: int) -> float:
        log(f"timing {name} ({mode}, batch {batch_size}, {image_size} px)")
        timer = bench.measure_train if mode == "train" else bench.measure_eval
        return timer(name, batch_size=batch_size, image_size=image_size, steps=args.steps, warmup=1)["images_per_sec"]

    return measure


def run(args: argparse.Namespace) -> int:
    from jaxconv.compare import ILSVRC_MODELS, MODERN_MODELS, find_runs
    from jaxconv.compare.table import uncompared_runs
    from jaxconv.models import model_info

    models = list(dict.fromkeys(args.models)) or list(ILSVRC_MODELS)  # a model named twice is one row
    if args.modern:
        models += [name for name in MODERN_MODELS if name not in models]
    for name in models:
        model_info(name)
    left_out: list[str] = []
    runs = find_runs(args.runs, left_out=left_out) if args.runs else []
    for note in left_out + [n for run in runs for n in run.notes] + uncompared_runs(models, runs):
        log(f"jaxconv: note: {note}")
    out = pathlib.Path(args.out) if args.out else None
    if out is not None and out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory")
    device = None
    if args.speed:
        quiet_backends()
        enable_compilation_cache()
        import jax

        device = f"{jax.devices()[0].device_kind} x{jax.device_count()} ({jax.default_backend()})"
    with output_directory(out) if out is not None else contextlib.nullcontext():  # --out: checked first
        _compare(args, models, runs, out, device)
    return 0


def _compare(args, models, runs, out, device) -> None:
    from jaxconv.analysis import summary
    from jaxconv.compare import ILSVRC_MODELS, compare_rows, format_rows
    from jaxconv.compare import plots
    from jaxconv.compare.table import your_chart_rows
    from jaxconv.layers import GeometryError

    try:
        rows = compare_rows(models, runs=runs, measure=_speed_measure(args) if args.speed else None,
                            batch_size=args.batch_size, image_size=args.image_size)
    except GeometryError as e:
        raise UsageError(f"--image-size {args.image_size}: {e}") from None
    text = format_rows(rows, args.format, device=device)
    sys.stdout.write(text)
    if out is not None:
        for fmt in ("md", "csv", "json"):
            (out / f"compare.{fmt}").write_text(format_rows(rows, fmt, device=device), encoding="utf-8")
        written = [out / "compare.md", out / "compare.csv", out / "compare.json"]
        written.append(plots.plot_accuracy_vs_gmacs(rows, out / "accuracy_vs_gmacs.png", lineage=ILSVRC_MODELS))
        yours, classes, notes = your_chart_rows(rows, runs)  # at the size and class count each run trained
        for note in notes:
            log(f"jaxconv: note: {note}")
        written.append(plots.plot_accuracy_vs_gmacs(yours, out / "your_accuracy_vs_gmacs.png", accuracy="your",
                                                    num_classes=classes))
        written += [plots.plot_layer_profile(summary(name), out / f"{name}_layers.png") for name in models]
        log("wrote " + ", ".join(str(p) for p in written if p is not None))


def register(sub, common) -> None:

    p = sub.add_parser("compare", parents=[common], help="the ILSVRC architectures side by side: params, GMACs, memory, speed, accuracy")
    p.add_argument("models", nargs="*", help="registered names (default: alexnet zfnet vgg16 vgg19 googlenet "
                                             "resnet18..152 efficientnet_b0)")
    p.add_argument("--modern", action="store_true",
                   help="add what came after ILSVRC (2016-2022), one or two variants per family: Inception v3, "
                        "DenseNet, ResNeXt, Wide ResNet, MobileNetV2/V3, ShuffleNet V2, MNASNet, RegNetY, "
                        "EfficientNet-B4/V2-S, ConvNeXt")
    p.add_argument("--format", choices=("md", "csv", "json"), default="md")
    p.add_argument("--out", help="also write compare.md/.csv/.json and the plots (PNG) into this directory")
    p.add_argument("--runs", nargs="+", metavar="DIR", help="training workdirs (or their parents) whose best "
                                                             "evaluation fills the 'your top-1' columns")
    p.add_argument("--no-speed", dest="speed", action="store_false",
                   help="skip timing inference and training on this device (static figures only)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="batch for the timings (default 8)")
    p.add_argument("--steps", type=positive_int, default=5, help="timed steps per measurement (default 5)")
    p.add_argument("--image-size", type=positive_int, help="one input size for all (default: each model's own)")
    p.set_defaults(func=run)
