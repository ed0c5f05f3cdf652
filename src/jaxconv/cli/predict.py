"""`jaxconv predict IMAGE…`: top-k ImageNet classes with pretrained weights."""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from jaxconv.cli.common import UsageError, positive_int
from jaxconv.cli.startup import quiet_backends


def run(args: argparse.Namespace) -> int:
    quiet_backends()
    from jaxconv.pretrained import convert, predict, weights
    from jaxconv.models import model_info

    if bool(args.weights) == bool(args.workdir):
        raise UsageError("give either --weights TAG_OR_FILE (ImageNet weights, with --model) or --workdir RUN "
                         "(a training run's checkpoint, with its own model, classes and preprocessing)")
    _check_inputs(args, predict)
    if args.workdir:
        return _from_run(args, predict)
    if args.step is not None:
        raise UsageError("--step selects a checkpoint of --workdir")
    args.model = args.model or "resnet50"
    model_info(args.model)
    published = weights.weight_sets(args.model)
    if model_info(args.model).torchvision is None:
        raise UsageError(f"--model {args.model}: no ImageNet weights convert to it; models with weights: "
                         f"{', '.join(weights.WEIGHTS)}")
    path = pathlib.Path(args.weights).expanduser()
    is_tag = args.weights in published and not path.exists()
    if not is_tag and not path.is_file():
        raise UsageError(f"--weights {args.weights}: neither a file nor a published tag of {args.model} "
                         f"({', '.join(published)})")
    if args.weights_tag is not None and args.weights_tag not in published:
        raise UsageError(f"--weights-tag {args.weights_tag}: {args.model}'s published weights are "
                         f"{', '.join(published)}")
    if is_tag and args.weights_tag not in (None, args.weights):
        raise UsageError("--weights-tag is for a --weights file; a published tag brings its own preprocessing")
    args.top = args.top or 5
    if args.top > 1000:
        raise UsageError(f"--top {args.top}: there are 1000 ImageNet classes; give at most 1000")
    if args.weights_dir is not None and pathlib.Path(args.weights_dir).expanduser().exists() and \
            not pathlib.Path(args.weights_dir).expanduser().is_dir():
        raise UsageError(f"--weights-dir {args.weights_dir}: is a file; give the folder the weights are kept in")
    if is_tag:
        weight_set, chosen = published[args.weights], "given"
    else:
        weight_set, chosen = weights.weight_set_of_file(args.model, path, args.weights_tag)
        if chosen == "assumed":
            print(f"jaxconv: note: {path.name} is not named as a published file of {args.model}: it is preprocessed as "
                  f"{weight_set.tag} (give --weights-tag for another)", file=sys.stderr)
    tag = weight_set.tag
    if is_tag:
        path = weights.fetch(args.model, tag, args.weights_dir, download=not args.no_download)
    model, variables = convert.load_pretrained(args.model, path)  # not found, hash, mismatch: UserErrors

    pre = weight_set.preprocessing
    return _print_predictions(args, predict, model, variables, pre, weights=str(path), shown={
        "tag": tag, "resize": pre.resize, "crop": pre.crop, "interpolation": pre.interpolation, "mean": pre.mean,
        "std": pre.std})


def _check_inputs(args: argparse.Namespace, predict) -> None:
    missing = [name for name in args.inputs if not pathlib.Path(name).expanduser().exists()]
    if len(missing) == len(args.inputs):  # before any weights are read: nothing to predict
        raise UsageError(f"{', '.join(missing)}: no such file or folder; give image files, or folders of them")
    if not predict.expand_inputs(args.inputs):
        raise UsageError(f"{', '.join(args.inputs)}: holds no file (hidden ones are skipped); give image files, "
                         f"or folders of them")


def _from_run(args: argparse.Namespace, predict) -> int:
    """A run's checkpoint (the weights its evaluation uses), its classes' names and its evaluation view."""
    from jaxconv import export
    from jaxconv.cli.common import log

    given = [flag for flag, value in (("--model", args.model), ("--weights-tag", args.weights_tag),
                                      ("--weights-dir", args.weights_dir), ("--no-download", args.no_download))
             if value]
    if given:
        raise UsageError(f"{', '.join(given)}: for --weights; a run brings its own model and preprocessing "
                         f"(drop {'them' if len(given) > 1 else 'it'})")
    model, variables, _, metadata = export.from_run(args.workdir, args.step, log=log)
    config = json.loads((pathlib.Path(args.workdir) / "config.json").read_text(encoding="utf-8"))
    classes = model.num_classes
    if args.top is not None and args.top > classes:
        raise UsageError(f"--top {args.top}: the run's model has {classes} classes; give at most {classes}")
    args.top = args.top or min(5, classes)
    labels = predict.run_labels(args.workdir, config)
    if labels is not None and len(labels) != classes:
        labels = None
    return _print_predictions(args, predict, model, variables, predict.run_preprocessing(config),
                              weights=metadata["source"], labels=labels, model_name=metadata["model"],
                              shown={"dataset": config["dataset"], "image_size": int(config["image_size"]),
                                             "eval_crop": config.get("eval_crop") or "resize",
                                             **{k: metadata["preprocessing"][k] for k in ("mean", "std")}})


def _print_predictions(args: argparse.Namespace, predict, model, variables, preprocessing, *, weights: str,
                       shown: dict, labels=None, model_name: str | None = None) -> int:
    """Classifies the inputs and prints each one's top classes (``shown``: the preprocessing, in the JSON)."""
    results, skipped = [], []
    for item in predict.predict_files(args.inputs, model, variables, preprocessing, top_k=args.top,
                                      batch_size=args.batch_size, labels=labels):
        if isinstance(item, predict.Skipped):
            skipped.append(item.reason)
            print(f"jaxconv: skipped {item.reason}", file=sys.stderr)
            continue
        results.append(item)
        if args.format == "text":
            print(item.file)
            for index, label, probability in item.top:
                print(f"  {100 * probability:6.2f}%  {label} ({index})")
    if args.format == "json":
        print(json.dumps({
            "model": model_name or args.model,
            "weights": weights,
            "preprocessing": shown,
            "results": [r.as_dict() for r in results],
            "skipped": len(skipped),
        }, indent=2))
    if not results:
        first = f" ({skipped[0]}{', ...' if len(skipped) > 1 else ''})" if skipped else ""
        raise UsageError(f"none of the {len(skipped)} input(s) is an image that could be read{first}")
    return 0


def register(sub, common) -> None:
    p = sub.add_parser("predict", parents=[common], help="top-k ImageNet classes of images with pretrained weights")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files, or folders of them")
    p.add_argument("--model", help="a model with ImageNet weights (default resnet50), with --weights")
    p.add_argument("--weights", metavar="TAG_OR_FILE",
                   help="a published tag (IMAGENET1K_V2) or a torchvision .pth/.safetensors file")
    p.add_argument("--workdir", metavar="RUN", help="instead of --weights: a `jaxconv train` run's checkpoint, with "
                   "its classes' names and its evaluation view (a model fine-tuned on a folder dataset)")
    p.add_argument("--step", type=positive_int, help="with --workdir: the checkpoint's step (default: the latest)")
    p.add_argument("--weights-tag", metavar="TAG", help="with a file: whose preprocessing to use "
                                                          "(default: the published set whose file has this name, "
                                                          "else the model's first)")
    p.add_argument("--weights-dir", help="where published weights are kept "
                                         "(default $JAXCONV_WEIGHTS_DIR or ~/.cache/jaxconv/weights)")
    p.add_argument("--no-download", action="store_true", help="never download; say what to download instead")
    p.add_argument("--top", type=positive_int, help="classes per image (default 5, or the run's classes if fewer)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="images per forward pass (default 16)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=run)
