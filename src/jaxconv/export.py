"""Inference export: BatchNorm folded into the convolutions, optional bfloat16, SavedModel and StableHLO.

``export_model`` writes into ``out_dir``:

    saved_model/      a TensorFlow SavedModel made with jax2tf (native serialization: the
                      StableHLO runs in TensorFlow's XlaCallModule op); signature
                      'serving_default': images -> logits
    model.jax_export  the same function serialized with ``jax.export`` (StableHLO, weights
                      embedded); ``load_exported(out_dir)`` or ``jax.export.deserialize``
    export.json       what was exported: model, input shape, dtype, folding, platforms, checks

An export is written whole or not at all: into a hidden folder beside ``out_dir``
(``.NAME.partial-PID``), renamed onto ``out_dir`` once complete and checked, so a process
stopped midway (SIGTERM, SIGKILL, a full disk) leaves no half-export that loads as a good
one; the next export to the same place removes what a dead process left there.

Both take float32 images (N, H, W, C), already normalized as in training, for any batch
size N, and return float32 logits (N, classes). With ``dtype='bfloat16'`` the weights are
stored and the network computed in bfloat16 (inputs are cast on entry, logits back to
float32 on exit); BatchNorm is folded in float32 first. jax2tf still ships with JAX 0.10
(only its native-serialization path; TensorFlow runs the embedded StableHLO), so the
SavedModel runs where TensorFlow has XLA: CPU, CUDA GPU, TPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import json
import math
import os
import pathlib
import shutil
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxconv.errors import UserError

FORMATS = ("saved_model", "jax_export")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
JAX_EXPORT_FILE = "model.jax_export"
SAVED_MODEL_DIR = "saved_model"
MANIFEST_FILE = "export.json"
CHECK_TOLERANCE = {"float32": 1e-4, "bfloat16": 5e-2}  # relative to the largest logit; measured 3e-7 and 5e-3
STAGING_SUFFIX = ".partial-"  # .NAME.partial-PID: an export being written beside NAME



class ExportError(UserError, ValueError):
    """An export that cannot be made as asked (a dtype, format or shape, a model that does not fold)."""


class ExportTargetExists(UserError, FileExistsError):
    """The output directory is not new or empty."""


class ExportSourceMissing(UserError, FileNotFoundError):
    """The run or export to read is not there."""


def inference_function(model, variables: Mapping[str, Any], *, input_shape: Sequence[int], fold_bn: bool = True,
                       dtype: str = "float32") -> tuple[Callable, dict, dict]:
    """``(predict, weights, facts)``: ``predict(weights, images) -> float32 logits``, ready to export.

    ``input_shape`` (N, H, W, C) is any input the model takes (used to trace which
    convolution each BatchNorm follows). With ``fold_bn`` every BatchNorm is folded into its
    convolution (``jaxconv.analysis.fold_batchnorm``); a model without BatchNorm is exported
    as it is. ``dtype`` 'bfloat16' casts the weights (BatchNorm statistics, when not folded,
    stay float32) and sets the model's compute dtype. ``facts`` records what was done.
    """
    if dtype not in DTYPES:
        raise ExportError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    variables = {k: v for k, v in variables.items() if k in ("params", "batch_stats")}
    folded = 0
    if fold_bn and variables.get("batch_stats"):
        from jaxconv.analysis import fold_batchnorm

        folded = len(jax.tree_util.tree_leaves(variables["batch_stats"])) // 2  # mean and var per BatchNorm
        try:
            model, variables = fold_batchnorm(model, variables, tuple(input_shape))
        except ValueError as e:
            raise ExportError(f"cannot fold BatchNorm of {type(model).__name__}: {e}; "
                              "export it unfolded (jaxconv export --no-fold-bn, or fold_bn=False)") from None
    compute = DTYPES[dtype]
    if "dtype" in {f.name for f in dataclasses.fields(model)}:
        model = model.clone(dtype=compute)
    weights = {"params": jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32).astype(compute),
                                                variables["params"])}
    if "batch_stats" in variables:
        weights["batch_stats"] = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), variables["batch_stats"])

    def predict(weights, images):
        return model.apply(weights, images.astype(compute), train=False).astype(jnp.float32)

    return predict, weights, {"dtype": dtype, "batchnorm_folded": folded}


def export_model(model, variables: Mapping[str, Any], out_dir: str | pathlib.Path, *, input_shape: Sequence[int],
                 fold_bn: bool = True, dtype: str = "float32", formats: Sequence[str] = FORMATS,
                 platforms: Sequence[str] = ("cpu", "cuda", "tpu"), dynamic_batch: bool = True,
                 metadata: Mapping[str, Any] | None = None, check: bool = True) -> dict:
    """Exports ``model`` with ``variables`` for inference into ``out_dir``; returns what export.json records.

    ``input_shape`` (N, H, W, C): the image size and channels the export takes; with
    ``dynamic_batch`` any N is accepted, else exactly N. ``formats``: 'saved_model'
    (TensorFlow, via jax2tf) and/or 'jax_export' (serialized StableHLO), a name or a sequence. ``platforms``: where
    the export may run (any of cpu, cuda, rocm, tpu; lowered for each). ``metadata``
    (model name, preprocessing, ...) is stored in export.json. With ``check``, each export is
    reloaded and run on two random images; the largest difference from the float32,
    un-folded JAX model, relative to the largest logit, is recorded under 'max_relative_error', and an export
    off by more than ``CHECK_TOLERANCE`` (1e-4 in float32, 5e-2 in bfloat16) is refused (ExportError), leaving nothing.
    ``out_dir`` must not exist or be empty; it appears when the export is complete and checked.
    """
    # one name as a string ('jax_export') is one item, not its letters
    formats, platforms = ((x,) if isinstance(x, str) else tuple(x) for x in (formats, platforms))
    unknown = [f for f in formats if f not in FORMATS] + [p for p in platforms if p not in PLATFORMS]
    if unknown or not formats or not platforms:
        raise ExportError(f"formats {formats} / platforms {platforms}: formats are {', '.join(FORMATS)}, "
                          f"platforms {', '.join(PLATFORMS)} (at least one of each)")
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) != 4:
        raise ExportError(f"input_shape {input_shape}: expected (N, H, W, C)")
    out = pathlib.Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportTargetExists(f"{out} exists and is not an empty directory; choose a new output directory")
    predict, weights, facts = inference_function(model, variables, input_shape=input_shape, fold_bn=fold_bn,
                                                 dtype=dtype)
    with _written_whole(out) as staging:
        return _write_export(staging, model, variables, predict, weights, facts, input_shape, formats, platforms,
                             dynamic_batch, metadata, check)


def _write_export(out: pathlib.Path, model, variables, predict, weights, facts, input_shape, formats, platforms,
                  dynamic_batch, metadata, check) -> dict:
    batch = None if dynamic_batch else input_shape[0]
    record: dict[str, Any] = {
        **dict(metadata or {}),
        "input": {"name": "images", "shape": [batch, *input_shape[1:]], "dtype": "float32"},
        "output": {"name": "logits", "dtype": "float32"},
        **facts,
        "platforms": list(platforms),
        "files": {},
        "jax_version": jax.__version__,
    }
    if "jax_export" in formats:
        (out / JAX_EXPORT_FILE).write_bytes(_jax_export(predict, weights, input_shape, dynamic_batch, platforms))
        record["files"]["jax_export"] = JAX_EXPORT_FILE
    if "saved_model" in formats:
        record["tensorflow_version"] = _saved_model(predict, weights, input_shape, dynamic_batch, platforms,
                                                    out / SAVED_MODEL_DIR)
        record["files"]["saved_model"] = SAVED_MODEL_DIR
    if check:
        shape = (2 if dynamic_batch else input_shape[0], *input_shape[1:])
        record["max_relative_error"] = errors = check_export(out, model, variables, shape, formats=formats)
        tolerance = CHECK_TOLERANCE[facts["dtype"]]
        worst = max(errors, key=errors.get)
        if not errors[worst] <= tolerance:  # NaN fails too
            raise ExportError(
                f"export check failed: the reloaded {worst}'s logits differ from the JAX model's by "
                f"{errors[worst]:.1e} of the largest logit ({facts['dtype']} allows {tolerance:.0e}), so nothing was "
                f"written; if BatchNorm folding is the cause, export unfolded (--no-fold-bn, or fold_bn=False)")
    (out / MANIFEST_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record


@contextlib.contextmanager
def _written_whole(out: pathlib.Path):
    """A new hidden folder beside ``out`` to write the export into, renamed onto ``out`` (absent, or an
    empty folder, which rename(2) replaces atomically) when the block ends normally, else removed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out)
    staging = out.parent / f".{out.name}{STAGING_SUFFIX}{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)  # an earlier export of this process that was stopped
    staging.mkdir()
    try:
        yield staging
        try:
            os.rename(staging, out)
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise
            raise ExportTargetExists(f"{out}: something else was written there while this export was made; "
                                     f"kept it and dropped this export (choose a new output directory)") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def remove_stale_staging(out: str | pathlib.Path) -> list[pathlib.Path]:
    """Removes the unfinished exports to ``out`` whose process is gone (killed midway); returns them."""
    out = pathlib.Path(out)
    removed = []
    if not out.parent.is_dir():
        return removed
    prefix = f".{out.name}{STAGING_SUFFIX}"
    for path in out.parent.iterdir():
        pid = path.name[len(prefix):]
        if path.name.startswith(prefix) and pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _input_spec(input_shape: tuple[int, ...], dynamic_batch: bool) -> jax.ShapeDtypeStruct:
    if not dynamic_batch:
        return jax.ShapeDtypeStruct(input_shape, jnp.float32)
    (batch,) = jax.export.symbolic_shape("batch")
    return jax.ShapeDtypeStruct((batch, *input_shape[1:]), jnp.float32)


def _jax_export(predict, weights, input_shape, dynamic_batch, platforms) -> bytearray:
    """Serialized StableHLO of ``images -> logits`` with the weights embedded as constants."""
    exported = jax.export.export(jax.jit(functools.partial(predict, weights)), platforms=platforms)(
        _input_spec(input_shape, dynamic_batch))
    return exported.serialize()


def _saved_model(predict, weights, input_shape, dynamic_batch, platforms, path: pathlib.Path) -> str:
    """A TensorFlow SavedModel whose weights are tf.Variables and whose computation is the StableHLO."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    from jax.experimental import jax2tf

    image_dims = ", ".join(str(s) for s in input_shape[1:])
    converted = jax2tf.convert(
        predict,
        with_gradient=False,
        polymorphic_shapes=[None, f"(batch, {image_dims})" if dynamic_batch else None],
        native_serialization_platforms=platforms,
    )
    module = tf.Module()
    module.weights = tf.nest.map_structure(lambda a: tf.Variable(a, trainable=False), weights)
    signature = tf.TensorSpec((None if dynamic_batch else input_shape[0], *input_shape[1:]), tf.float32, name="images")

    @tf.function(input_signature=[signature], autograph=False)
    def serve(images):
        return {"logits": converted(module.weights, images)}

    module.serve = serve
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})
    return tf.__version__


def from_run(workdir: str | pathlib.Path, step: int | None = None, *,
             log: Callable[[str], None] = print) -> tuple[Any, dict, tuple[int, ...], dict]:
    """``(model, variables, input_shape, metadata)`` of a `jaxconv train` run's latest (or given) checkpoint.

    The model and input size come from WORKDIR/config.json and the checkpoint; the weights
    are the ones evaluation uses (the moving average when the run kept one). Damaged
    checkpoints are read past as `jaxconv eval` does, each named in ``log`` with why.
    """
    from jaxconv.checkpoint import check_fits
    from jaxconv.data.catalog import DATASETS, RESIZE_RATIO
    from jaxconv.models import get_model
    from jaxconv.pretrained.predict import run_labels
    from jaxconv.train.transfer import checkpoint_variables, pretrained_options
    from jaxconv.user_modules import import_run_modules

    workdir = pathlib.Path(workdir)
    config_path = workdir / "config.json"
    if not config_path.is_file():
        raise ExportSourceMissing(f"{workdir}: no config.json there (is it a `jaxconv train` workdir?)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if not isinstance(config, dict) or not isinstance(config.get("model"), str):
            raise ValueError("it names no model")
    except (OSError, ValueError) as e:
        raise ExportError(f"{config_path}: unreadable ({e}); the run's config is damaged") from None
    import_run_modules(config, where=str(workdir))
    variables, meta = checkpoint_variables(workdir, step, log=log)
    if config.get("dataset") not in DATASETS:
        raise ExportError(f"{config_path}: dataset {config.get('dataset')!r} is not one jaxconv knows; the run's "
                          f"config is damaged")
    spec = DATASETS[config["dataset"]]
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in (config.get("model_options") or {}).items()}
    options = {**pretrained_options(config["model"], config.get("init_weights")), **options}
    model = get_model(config["model"], num_classes=meta.get("num_classes", spec.num_classes), **options)
    size = int(meta.get("image_size") or config["image_size"])
    # the model's file may have changed since the run trained (its widths, say): one line, as eval and resume say
    expected = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                              jax.ShapeDtypeStruct((1, size, size, spec.channels), jnp.float32))
    collections = ("params", "batch_stats")
    check_fits(workdir.absolute() / "checkpoints" / str(meta.get("step")),
               {c: variables.get(c) or {} for c in collections}, {c: expected.get(c) or {} for c in collections})
    crop = config.get("eval_crop") or "resize"
    view = ({"eval_crop": "center", "resize_shorter_side": math.ceil(size * RESIZE_RATIO), "center_crop": size}
            if crop == "center" else {"eval_crop": "resize", "resize": [size, size]})
    metadata = {
        "model": config["model"],
        "source": f"{workdir.absolute()} (checkpoint step {meta.get('step')})",
        "num_classes": model.num_classes,
        "dataset": config["dataset"],
        "preprocessing": {"image_size": size, **view, "interpolation": "bilinear, antialiased",
                          "mean": list(spec.mean), "std": list(spec.std),
                          "note": "pixel values 0..255: (x - mean) / std per channel"},
    }
    labels = run_labels(workdir, config)
    if labels is not None and len(labels) == model.num_classes:  # the logits' order: what a served model needs
        metadata["class_names"] = labels
    return model, variables, (1, size, size, spec.channels), metadata


def from_weights(name: str, source: str, image_size: int | None = None,
                 weights_tag: str | None = None) -> tuple[Any, dict, tuple[int, ...], dict]:
    """``(model, variables, input_shape, metadata)`` of torchvision weights: a .pth/.safetensors file or a tag.

    A tag ('IMAGENET1K_V1') is fetched into the weights directory and hash-checked. The input
    size defaults to the weight set's crop size (else the model's own). A file takes the preprocessing of
    ``weights_tag``, else of the published set it is named as, else of the model's first (said in export.json).
    """
    from jaxconv.pretrained.convert import load_pretrained
    from jaxconv.pretrained.weights import fetch, weight_set_of_file, weight_sets
    from jaxconv.models import model_info

    info = model_info(name)
    published = weight_sets(name)
    path = pathlib.Path(source).expanduser()
    chosen = "given"
    if not path.exists() and source in published:
        weight_set, path = published[source], fetch(name, source)
    elif published:
        weight_set, chosen = weight_set_of_file(name, path, weights_tag)
    else:
        weight_set = None
    model, variables = load_pretrained(name, path)
    size = image_size or (weight_set.preprocessing.crop if weight_set else info.image_size)
    metadata: dict[str, Any] = {"model": name, "source": str(path), "num_classes": model.num_classes}
    if weight_set is not None:
        preprocessing = dataclasses.asdict(weight_set.preprocessing)
        note = "pixel values 0..1: resize, center crop, (x - mean) / std per channel"
        if chosen == "assumed":
            note += (f"; {path.name} is not named as a published file, so {weight_set.tag}'s preprocessing is assumed "
                     f"(jaxconv export --weights-tag chooses another)")
        metadata.update(weights=weight_set.tag, preprocessing={**preprocessing, "note": note})
    if model.num_classes == 1000:  # torchvision's ImageNet-1k weights: its class names, in the logits' order
        from jaxconv.pretrained.predict import imagenet_classes

        metadata["class_names"] = list(imagenet_classes())
    return model, variables, (1, size, size, info.in_channels), metadata


def load_exported(out_dir: str | pathlib.Path) -> Callable[[Any], jax.Array]:
    """The exported ``images -> logits`` function of ``out_dir``/model.jax_export, runnable from JAX."""
    _check_finished(out_dir)
    return _load_jax_export(out_dir)


def _check_finished(out_dir: str | pathlib.Path) -> None:
    """An export is finished once its export.json is written, last: anything else is a stopped one."""
    out = pathlib.Path(out_dir)
    if not out.is_dir():
        raise ExportSourceMissing(f"{out_dir}: {'not a directory' if out.exists() else 'no such directory'} "
                                  f"(give the folder `jaxconv export --out` wrote)")
    if not (out / MANIFEST_FILE).is_file():
        raise ExportSourceMissing(f"{out_dir}: not a finished export (no {MANIFEST_FILE}, which an export writes "
                                  f"last; it was stopped or is not an export); export it again")


def _load_jax_export(out_dir: str | pathlib.Path) -> Callable[[Any], jax.Array]:
    path = pathlib.Path(out_dir) / JAX_EXPORT_FILE
    if not path.is_file():
        raise ExportSourceMissing(f"no {JAX_EXPORT_FILE} in {out_dir} (was it exported with format 'jax_export'?)")
    return jax.export.deserialize(bytearray(path.read_bytes())).call


def load_saved_model(out_dir: str | pathlib.Path) -> Callable[[Any], np.ndarray]:
    """The 'serving_default' signature of ``out_dir``/saved_model as ``images (numpy) -> logits (numpy)``."""
    _check_finished(out_dir)
    return _load_saved_model(out_dir)


def _load_saved_model(out_dir: str | pathlib.Path) -> Callable[[Any], np.ndarray]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    path = pathlib.Path(out_dir) / SAVED_MODEL_DIR
    if not path.is_dir():
        raise ExportSourceMissing(f"no {SAVED_MODEL_DIR}/ in {out_dir} (was it exported with format 'saved_model'?)")
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    return lambda images: serve(images=tf.constant(np.asarray(images, np.float32)))["logits"].numpy()


def check_export(out_dir: str | pathlib.Path, model, variables: Mapping[str, Any], input_shape: Sequence[int], *,
                 formats: Sequence[str] = FORMATS, seed: int = 0) -> dict[str, float]:
    """max |export - JAX| / max |JAX| of each format's logits on random images of ``input_shape`` (N, H, W, C).

    The reference is ``model.apply(variables, images, train=False)``: float32, BatchNorm not folded.
    """
    images = np.random.default_rng(seed).standard_normal(tuple(input_shape), dtype=np.float32)  # not float64 first
    variables = {k: v for k, v in variables.items() if k in ("params", "batch_stats")}
    expected = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images), np.float32)
    scale = float(np.max(np.abs(expected))) or 1.0
    loaders = {"jax_export": _load_jax_export, "saved_model": _load_saved_model}  # also before export.json is written
    return {f: float(np.max(np.abs(np.asarray(loaders[f](out_dir)(images)) - expected))) / scale for f in formats}


__all__ = ["FORMATS", "ExportError", "ExportSourceMissing", "ExportTargetExists", "check_export", "export_model", "from_run", "from_weights", "inference_function", "load_exported",
           "load_saved_model", "remove_stale_staging"]
