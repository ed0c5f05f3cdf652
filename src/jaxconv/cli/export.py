"""`jaxconv export`: a run's checkpoint or pretrained weights as a SavedModel / StableHLO."""

from __future__ import annotations

import argparse
import pathlib

from jaxconv.cli.common import UsageError, comma_choices, log, output_directory, positive_int
from jaxconv.cli.startup import ignore_late_storage_callbacks, quiet_backends


def run(args: argparse.Namespace) -> int:
    quiet_backends()
    ignore_late_storage_callbacks()  # a checkpoint that cannot be read leaves TensorStore's reads behind
    from jaxconv import export

    if bool(args.workdir) == bool(args.weights):
        raise UsageError("give either --workdir RUN (a training run's checkpoint) or --model NAME --weights FILE_OR_TAG")
    if args.weights and not args.model:
        raise UsageError(f"--weights {args.weights} needs --model NAME (the jaxconv model the weights are for)")
    if args.workdir and (args.model or args.image_size):
        raise UsageError("--model and --image-size come from the run's config.json with --workdir; drop them")
    if args.step and not args.workdir:
        raise UsageError("--step selects a checkpoint of --workdir")
    if args.weights_tag is not None:
        from jaxconv.pretrained.weights import weight_sets

        published = weight_sets(args.model) if args.model else {}
        if not args.weights or args.weights_tag not in published:
            raise UsageError(f"--weights-tag {args.weights_tag}: it names the published weights whose preprocessing a "
                             f"--weights file takes; {args.model or 'the model'}'s are {', '.join(published) or 'none'}")
    formats = comma_choices("--format", args.format, export.FORMATS)
    platforms = comma_choices("--platforms", args.platforms, export.PLATFORMS)
    if not args.out.strip():
        raise UsageError("--out is empty; give a new (or empty) directory for the export")
    out = pathlib.Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {out}: exists and is not an empty directory; choose a new one")
    # the library writes the export beside OUT and renames it onto OUT when complete: only OUT's parents
    # are made (and removed on failure) here, so that a killed export leaves no empty OUT
    with output_directory(out.parent, flag=f"--out {out}"):
        record, metadata = _export(args, export, out, formats, platforms)
    folded = f"{record['batchnorm_folded']} BatchNorms folded" if record["batchnorm_folded"] else "no BatchNorm folded"
    batch = record["input"]["shape"][0] or "N"  # None: any batch size
    print(f"exported {metadata['model']} ({folded}, {record['dtype']}) to {out}: images "
          f"({batch}, {', '.join(map(str, record['input']['shape'][1:]))}) float32 -> logits "
          f"({batch}, {metadata['num_classes']}) float32")
    for kind, name in record["files"].items():
        error = record.get("max_relative_error", {}).get(kind)
        check = f"  max |export - JAX| / max |JAX| = {error:.2g}" if error is not None else ""
        print(f"  {out / name}{check}")
    return 0


def _export(args, export, out: pathlib.Path, formats, platforms) -> tuple[dict, dict]:
    from jaxconv.models import model_info

    if args.workdir:
        model, variables, shape, metadata = export.from_run(args.workdir, args.step, log=log)
    else:
        model_info(args.model)
        model, variables, shape, metadata = export.from_weights(args.model, args.weights, args.image_size,
                                                                args.weights_tag)
    shape = (args.batch_size or shape[0], *shape[1:])
    record = export.export_model(model, variables, out, input_shape=shape, fold_bn=args.fold_bn, dtype=args.dtype,
                                 formats=formats, platforms=platforms, dynamic_batch=args.batch_size is None,
                                 metadata=metadata, check=args.check)
    return record, metadata


def register(sub, common) -> None:
    p = sub.add_parser("export", parents=[common], help="export a run's checkpoint or pretrained weights for inference "
                                      "(TensorFlow SavedModel, StableHLO)")
    p.add_argument("--out", required=True, help="a new (or empty) directory for the export")
    p.add_argument("--workdir", help="a `jaxconv train` workdir: its latest (or --step) checkpoint")
    p.add_argument("--step", type=positive_int, help="the checkpoint's step (default: the latest)")
    p.add_argument("--model", help="a registered model name, with --weights")
    p.add_argument("--weights", help="a torchvision .pth/.safetensors file or a published tag (IMAGENET1K_V1)")
    p.add_argument("--weights-tag", metavar="TAG", help="with a --weights file: whose preprocessing export.json records "
                   "(default: the published set whose file has this name, else the model's first)")
    p.add_argument("--image-size", type=positive_int, help="input size (default: the weights' crop size)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="weights and compute")
    p.add_argument("--no-fold-bn", dest="fold_bn", action="store_false", help="keep BatchNorm layers as they are")
    p.add_argument("--format", default="saved_model,jax_export", help="saved_model and/or jax_export")
    p.add_argument("--platforms", default="cpu,cuda,tpu", help="where the export may run: cpu, cuda, rocm, tpu")
    p.add_argument("--batch-size", type=positive_int, help="a fixed batch size (default: any)")
    p.add_argument("--no-check", dest="check", action="store_false",
                   help="skip running the export against the JAX model on two random images")
    p.set_defaults(func=run)
