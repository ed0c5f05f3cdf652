"""Experiment configs: the keys every experiment has, loading, command-line overrides, validation.

An experiment is a Python file defining ``get_config()`` that returns an ml_collections
ConfigDict, usually ``base_config()`` with a few values changed. Every value is validated
before anything is compiled or written; a bad one raises ConfigError naming the key, the
value and what is allowed.
"""

from __future__ import annotations

import ast
import json
import math
import pathlib
from collections.abc import Collection
from typing import Any

import ml_collections
from ml_collections import config_dict

from jaxconv.errors import UserError

OPTIMIZERS = ("sgd", "rmsprop", "adamw")
SCHEDULES = ("constant", "step", "cosine")
PARALLEL = ("shard_map", "pmap")
BN_MODES = ("sync", "local")
DTYPES = ("float32", "bfloat16")
NAN_POLICIES = ("stop", "rollback")
MAX_IMAGE_SIZE = 4096  # larger than any classification network is trained at; beyond it, a typo
MAX_SHAPES_EXAMPLES = 5_000_000


# What a resumed run may change without being told to: when it logs, evaluates and checkpoints, how
# long it goes on, where its files and data live, how it is parallelised. Every other key changes
# what the run computes (the model, data, batch, augmentation, optimizer, schedule, seed, ...) or
# what its evaluations mean, and is refused unless allowed by name (`jaxconv train --allow-change`).
RESUMABLE_KEYS = frozenset({
    "num_train_steps", "num_epochs", "log_every_steps", "eval_every_steps", "checkpoint_every_steps",
    "keep_checkpoints", "eval_batch_size", "log_layer_grad_norms", "nan_policy", "max_rollbacks",
    "rollback_lr_factor", "parallel", "data_dir", "imports", "init_weights",
})


class ConfigError(UserError, ValueError):
    """A config value that cannot be used; the message names the key, the value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str):
        super().__init__(f"config.{key}={value!r}: {allowed}")
        self.key, self.value, self.allowed = key, value, allowed


def base_config() -> ml_collections.ConfigDict:
    """Every key an experiment has, with defaults (a ResNet-20 on the built-in dataset)."""
    c = ml_collections.ConfigDict()
    # What to train.
    c.model = "resnet20"
    c.model_options = ml_collections.ConfigDict()  # keyword overrides for get_model, e.g. variant="v1"
    # Modules or .py files to import before the model is looked up (your own models). A run records
    # here what it imported, the file that registered its model included.
    c.imports = ()
    c.dataset = "shapes"
    c.data_dir = config_dict.placeholder(str)  # TFDS data dir; default $TFDS_DATA_DIR or ~/tensorflow_datasets
    c.folder = config_dict.placeholder(str)  # the 'folder' dataset's root: root/<class>/<image>
    c.shapes_train_examples = 20_000
    c.shapes_test_examples = 2_000
    c.image_size = config_dict.placeholder(int)  # default: the model's own input size
    # How long, in what batches.
    c.batch_size = 128  # global: summed over every device of every process
    c.eval_batch_size = config_dict.placeholder(int)  # default: batch_size
    c.num_epochs = 10.0
    c.num_train_steps = config_dict.placeholder(int)  # overrides num_epochs when set
    # Optimizer and schedule.
    c.optimizer = "sgd"  # sgd | rmsprop | adamw
    c.learning_rate = 0.1  # for the global batch; no implicit scaling
    c.momentum = 0.9  # sgd, rmsprop
    c.nesterov = False  # sgd
    c.rmsprop_decay = 0.9
    c.adam_b1 = 0.9
    c.adam_b2 = 0.999
    c.epsilon = 1e-8  # rmsprop, adamw
    c.weight_decay = 1e-4  # skips biases and normalisation parameters
    c.schedule = "cosine"  # constant | step | cosine
    c.decay_epochs = (30.0, 60.0, 80.0)  # step schedule: multiply by decay_factor at these epochs
    c.decay_factor = 0.1
    c.warmup_epochs = 0.0  # linear warm-up from 0
    c.label_smoothing = 0.0
    c.grad_clip_norm = config_dict.placeholder(float)
    c.ema_decay = config_dict.placeholder(float)  # evaluate an exponential moving average of the weights
    c.aux_loss_weight = 0.3  # GoogLeNet's auxiliary classifiers, when the model has them
    # Transfer learning (jaxconv.train.transfer). A fresh run starts from init_weights; a resumed one ignores them.
    c.init_weights = config_dict.placeholder(str)  # .pth/.safetensors file, published tag (IMAGENET1K_V1) or workdir
    c.freeze = config_dict.placeholder(str)  # 'backbone' (all but the head) or module patterns, e.g. 'stem,stage1'
    # Data augmentation and evaluation.
    c.augment = "cifar"  # alexnet | inception | cifar | flip | none
    c.eval_crop = "resize"  # center (shorter side to size*256/224, centre crop) | resize
    c.ten_crop = False  # evaluate with AlexNet's 10 crops
    c.eval_examples = config_dict.placeholder(int)  # evaluate on the first N only
    # Bookkeeping.
    c.seed = 0
    c.log_every_steps = 50
    c.log_layer_grad_norms = False  # also log every kernel's gradient norm (metrics.jsonl 'layer_grad_norms')
    c.eval_every_steps = 1000
    c.checkpoint_every_steps = 1000
    c.keep_checkpoints = 3  # the last N, plus the best by top-1
    c.nan_policy = "stop"  # stop | rollback (to the last checkpoint, with the learning rate x rollback_lr_factor)
    c.max_rollbacks = 3
    c.rollback_lr_factor = 0.5
    # Hardware.
    c.parallel = "shard_map"  # shard_map (jit over a mesh of all devices) | pmap
    c.bn_mode = "sync"  # sync: statistics of the global batch | local: per device
    c.dtype = "float32"  # float32 | bfloat16 (compute; parameters and BN statistics stay float32)
    return c


def split_variant(path: str | pathlib.Path) -> tuple[pathlib.Path, str | None]:
    """'experiments/x.py:full' -> (Path('experiments/x.py'), 'full'); no suffix -> (path, None)."""
    text = str(path)
    head, sep, variant = text.rpartition(":")
    if sep and head.endswith(".py") and variant and "/" not in variant:
        return pathlib.Path(head), variant
    return pathlib.Path(text), None


def load_config(path: str | pathlib.Path) -> ml_collections.ConfigDict:
    """Runs ``get_config()`` from an experiment file. Configs are code: load only files you trust.

    ``FILE.py:VARIANT`` calls ``get_config(VARIANT)`` (a study's 'quick' or 'full' variant, say).
    """
    path, variant = split_variant(path)
    if not path.is_file():
        raise ConfigError("file", str(path), "no such experiment file (see experiments/)")
    from jaxconv.user_modules import UserModuleError, import_file

    try:  # its folder becomes importable, so that it can `import my_blocks` from beside it
        module = import_file(path, what=f"experiment file {path}", name=f"jaxconv_experiment_{path.stem}", fresh=True)
    except UserModuleError as e:
        raise ConfigError("file", str(path), str(e).split(": ", 1)[1]) from None
    if not hasattr(module, "get_config"):
        raise ConfigError("file", str(path), "an experiment file must define get_config()")
    try:
        config = _call_get_config(module, path, variant)
    except TypeError as e:  # ml_collections refuses a value of another type than the key's
        if "Could not override field" not in str(e):
            raise
        raise ConfigError("file", str(path), f"get_config() sets a value of the wrong type: {str(e).splitlines()[0]}") from None
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError("file", str(path), "get_config() must return an ml_collections.ConfigDict")
    return _checked_keys(config, path)


def _call_get_config(module, path: pathlib.Path, variant: str | None):
    if variant is None:
        return module.get_config()
    else:
        variants = getattr(module, "VARIANTS", None)
        if variants is not None and variant not in variants:
            raise ConfigError("file", f"{path}:{variant}", f"unknown variant; {path.name} has {', '.join(variants)}")
        try:
            return module.get_config(variant)
        except TypeError as e:
            if "Could not override field" in str(e):
                raise
            raise ConfigError("file", f"{path}:{variant}", "this experiment has no variants (get_config() takes none)") from None


def _checked_keys(config: ml_collections.ConfigDict, path: pathlib.Path) -> ml_collections.ConfigDict:
    unknown = sorted(set(config.keys()) - set(base_config().keys()))
    if unknown:
        raise ConfigError(unknown[0], config[unknown[0]], f"unknown key; the keys are {', '.join(base_config().keys())}")
    if "imports" in config and isinstance(config.imports, (tuple, list)):  # files relative to the experiment's folder
        from jaxconv.user_modules import is_file_spec

        config.imports = tuple(str((path.parent / spec).resolve()) if isinstance(spec, str) and is_file_spec(spec)
                               and not pathlib.Path(spec).expanduser().is_absolute() else spec
                               for spec in config.imports)
    return config


def _parse(key: str, text: str, current: Any, field_type: type | None) -> Any:
    target = field_type or (type(current) if current is not None else None)
    lowered = text.strip().lower()
    # 'none' unsets a nullable key (default None: init_weights, grad_clip_norm, ...); augment=none is a value.
    if lowered in ("none", "null") and base_config()[key] is None:
        return None
    try:
        if target is bool:
            if lowered in ("true", "1", "yes"):
                return True
            if lowered in ("false", "0", "no"):
                return False
            raise ValueError
        if target is int:
            value = ast.literal_eval(text)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError
            return value
        if target is float:
            return float(text)
        if key == "imports":  # module names and paths, unquoted: --config.imports=my_blocks,lib/nets.py
            return tuple(part.strip() for part in text.split(",") if part.strip())
        if target in (tuple, list):
            value = ast.literal_eval(text if text.strip().startswith(("(", "[")) else f"({text},)")
            return target(value)
        if target is str:
            return text
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        kind = {bool: "true or false", int: "an integer", float: "a number", tuple: "a list like 30,60,80",
                list: "a list like 30,60,80", str: "a string"}.get(target, "a Python literal")
        raise ConfigError(key, text, f"expected {kind}") from None


def _field_type(config: ml_collections.ConfigDict, key: str) -> type | None:
    """The declared type of ``config.key`` (None where it has none: a plain None read back from config.json)."""
    try:
        return config.get_ref(key).get_type() if key in config else None
    except ValueError:
        return None


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, str]) -> ml_collections.ConfigDict:
    """Applies ``--config.KEY=VALUE`` overrides, typed by the key's current value.

    Unknown keys raise ConfigError; ``model_options.NAME`` may add model overrides.
    """
    config = config_dict.ConfigDict(config.to_dict(preserve_field_references=True))
    known = set(base_config().keys())
    for key, text in overrides.items():
        parts = key.split(".")
        if parts[0] == "model_options" and len(parts) == 2:
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                value = text
            try:
                config.model_options[parts[1]] = value
            except TypeError:
                current = config.model_options[parts[1]]
                raise ConfigError(key, text, f"must be like the current {current!r} "
                                             f"({type(current).__name__})") from None
            continue
        if len(parts) != 1 or parts[0] not in known:
            raise ConfigError(key, text, f"unknown key; the keys are {', '.join(sorted(known))}")
        field_type = _field_type(config, key) or _field_type(base_config(), key)
        current = config[key] if key in config else base_config()[key]
        value = _parse(key, text, current, field_type)
        if field_type is float and isinstance(value, int):
            value = float(value)
        try:
            config[key] = value
        except TypeError as e:
            raise ConfigError(key, text, f"of the wrong type ({str(e).splitlines()[0]})") from None
    return config


def _positive_int(c, key, allow_none=False):
    value = c[key]
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(key, value, "must be a positive integer" + (" or None" if allow_none else ""))


def _number(c, key, low=None, high=None, low_open=False, high_open=False, allow_none=False):
    value = c[key]
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(key, value, "must be a finite number" + (" or None" if allow_none else ""))
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and (value >= high if high_open else value > high)
    if bad_low or bad_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        raise ConfigError(key, value, f"must be in {left}{low if low is not None else '-inf'}, "
                                      f"{high if high is not None else 'inf'}{right}")


def _choice(c, key, choices):
    if c[key] not in choices:
        raise ConfigError(key, c[key], f"must be one of {', '.join(choices)}")


def validate(config: ml_collections.ConfigDict, *, device_count: int, process_count: int = 1) -> ml_collections.ConfigDict:
    """Checks every value and fills the defaults that depend on others; returns the resolved config.

    Nothing is compiled or written. Checks the architecture's geometry at the image size by
    tracing its shapes.
    """
    from jaxconv.data.augment import AUGMENTATIONS, EVAL_CROPS
    from jaxconv.data.sources import DATASETS
    from jaxconv.models import model_info
    from jaxconv.user_modules import source_spec

    c = config_dict.ConfigDict(config.to_dict())
    unknown = sorted(set(c.keys()) - set(base_config().keys()))
    if unknown:
        raise ConfigError(unknown[0], c[unknown[0]], "unknown key")
    for key in base_config().keys():  # a config written for an older jaxconv gets the new keys' defaults
        if key not in c:
            c[key] = base_config()[key]
    c.imports = _import_user_modules(c.imports)
    if not isinstance(c.model, str) or not c.model:
        raise ConfigError("model", c.model, "must be a registered model's name, e.g. 'resnet20' (see `jaxconv list`)")
    if not isinstance(c.model_options, (dict, ml_collections.ConfigDict)):
        raise ConfigError("model_options", c.model_options, "must be a mapping of model fields, e.g. {'depths': (3, 3, 3)}")
    for key in ("data_dir", "folder", "init_weights", "freeze"):  # (what a blank one means: their own checks)
        if c[key] is not None and (not isinstance(c[key], str) or (key in ("data_dir", "folder") and not c[key].strip())):
            raise ConfigError(key, c[key], "must be a non-empty string or None")
    _check_directory(c, "data_dir")
    try:
        info = model_info(c.model)
    except ValueError as e:
        raise ConfigError("model", c.model, str(e).split("; ", 1)[-1]) from None
    source = source_spec(info.source_module, info.source_file)
    if source is not None and source not in c.imports:  # so that eval, export and resume find the model again
        c.imports = (*c.imports, source)
    _choice(c, "dataset", tuple(DATASETS))
    if c.dataset == "folder" and not c.folder:
        raise ConfigError("folder", c.folder, "dataset 'folder' needs the root of the class subfolders")
    if isinstance(c.max_rollbacks, bool) or not isinstance(c.max_rollbacks, int) or c.max_rollbacks < 0:
        raise ConfigError("max_rollbacks", c.max_rollbacks, "must be a non-negative integer")
    for key in ("shapes_train_examples", "shapes_test_examples", "batch_size", "log_every_steps",
                "eval_every_steps", "checkpoint_every_steps", "keep_checkpoints"):
        _positive_int(c, key)
    for key in ("eval_batch_size", "num_train_steps", "eval_examples", "image_size"):
        _positive_int(c, key, allow_none=True)
    for key in ("num_train_steps", "batch_size", "eval_batch_size", "checkpoint_every_steps", "eval_every_steps",
                "log_every_steps"):
        if c[key] is not None and c[key] > 2**31 - 1:
            raise ConfigError(key, c[key], f"must be at most {2**31 - 1:,}")
    if c.dataset == "shapes" and c.image_size is not None and c.image_size < 8:
        raise ConfigError("image_size", c.image_size, "the built-in shapes dataset is drawn at 8 pixels or more")
    if c.image_size is not None and c.image_size > MAX_IMAGE_SIZE:
        raise ConfigError("image_size", c.image_size, f"must be at most {MAX_IMAGE_SIZE} pixels (one such image in "
                                                      f"float32 is {c.image_size**2 * 12 / 2**30:,.0f} GiB)")
    for key in ("shapes_train_examples", "shapes_test_examples"):
        if c[key] > MAX_SHAPES_EXAMPLES:
            raise ConfigError(key, c[key], f"must be at most {MAX_SHAPES_EXAMPLES:,} (the built-in dataset is "
                                           f"generated on this machine)")
    if c.dataset == "shapes" and c.batch_size > c.shapes_train_examples:
        raise ConfigError("batch_size", c.batch_size, f"must be at most the {c.shapes_train_examples} training "
                                                      f"examples of the built-in dataset (shapes_train_examples)")
    _number(c, "num_epochs", 0, low_open=True)
    _number(c, "learning_rate", 0, low_open=True)
    _number(c, "momentum", 0, 1, high_open=True)
    _number(c, "rmsprop_decay", 0, 1, high_open=True)
    _number(c, "adam_b1", 0, 1, high_open=True)
    _number(c, "adam_b2", 0, 1, high_open=True)
    _number(c, "epsilon", 0, low_open=True)
    _number(c, "weight_decay", 0)
    _number(c, "decay_factor", 0, 1, low_open=True)
    _number(c, "warmup_epochs", 0)
    _number(c, "label_smoothing", 0, 1, high_open=True)
    _number(c, "grad_clip_norm", 0, low_open=True, allow_none=True)
    _number(c, "ema_decay", 0, 1, low_open=True, high_open=True, allow_none=True)
    _number(c, "aux_loss_weight", 0)
    if not isinstance(c.seed, int) or isinstance(c.seed, bool) or c.seed < 0:
        raise ConfigError("seed", c.seed, "must be a non-negative integer")
    if not isinstance(c.nesterov, bool):
        raise ConfigError("nesterov", c.nesterov, "must be true or false")
    for key in ("ten_crop", "log_layer_grad_norms"):
        if not isinstance(c[key], bool):
            raise ConfigError(key, c[key], "must be true or false")
    if not isinstance(c.decay_epochs, (tuple, list)):
        raise ConfigError("decay_epochs", c.decay_epochs, "must be increasing positive epochs, e.g. 30,60,80")
    decay = tuple(c.decay_epochs)
    if any(isinstance(e, bool) or not isinstance(e, (int, float)) or e <= 0 for e in decay) or list(decay) != sorted(decay):
        raise ConfigError("decay_epochs", decay, "must be increasing positive epochs, e.g. 30,60,80")
    c.decay_epochs = tuple(float(e) for e in decay)
    _choice(c, "optimizer", OPTIMIZERS)
    _choice(c, "nan_policy", NAN_POLICIES)
    _number(c, "rollback_lr_factor", 0, 1, low_open=True, high_open=True)
    _choice(c, "schedule", SCHEDULES)
    _choice(c, "parallel", PARALLEL)
    _choice(c, "bn_mode", BN_MODES)
    _choice(c, "dtype", DTYPES)
    _choice(c, "augment", AUGMENTATIONS)
    _choice(c, "eval_crop", EVAL_CROPS)
    if c.eval_batch_size is None:
        c.eval_batch_size = c.batch_size
    for key in ("batch_size", "eval_batch_size"):
        if c[key] % device_count:
            raise ConfigError(key, c[key], f"must be divisible by the {device_count} devices")
        if c[key] % process_count:
            raise ConfigError(key, c[key], f"must be divisible by the {process_count} processes")
    if c.image_size is None:
        c.image_size = info.image_size
    spec = DATASETS[c.dataset]
    if c.augment == "alexnet" and spec.channels != 3:
        raise ConfigError("augment", c.augment, f"PCA lighting needs RGB images; {c.dataset} has {spec.channels} channel")
    _check_model(c, spec.channels)
    return c


def _check_directory(c: ml_collections.ConfigDict, key: str) -> None:
    """A directory path that exists as a directory, or can be created (its nearest existing parent is one)."""
    if c[key] is None:
        return
    path = pathlib.Path(c[key]).expanduser()
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        where = "is a file" if existing == path else f"is below {existing}, which is a file"
        raise ConfigError(key, c[key], f"{where}; give a directory")


def _import_user_modules(specs: Any) -> tuple[str, ...]:
    """Imports ``config.imports``; returns them as the run records them (absolute paths for files)."""
    from jaxconv.user_modules import UserModuleError, import_modules

    if isinstance(specs, str) or not isinstance(specs, (tuple, list)) or not all(isinstance(s, str) for s in specs):
        raise ConfigError("imports", specs, "must be a list of module names or .py files, e.g. ('my_blocks.py',)")
    try:
        return tuple(import_modules(specs, source="config.imports"))
    except UserModuleError as e:
        raise ConfigError("imports", tuple(specs), str(e).split(": ", 1)[1]) from None


def _check_model(c: ml_collections.ConfigDict, channels: int) -> None:
    """Builds the model with its options and traces its shapes at the image size (no compute)."""
    import jax
    import jax.numpy as jnp

    from jaxconv.layers import GeometryError
    from jaxconv.models import get_model

    options = dict(c.model_options)
    for key, owner in (("axis_name", "bn_mode"), ("dtype", "dtype"), ("num_classes", "dataset")):
        if key in options:
            raise ConfigError("model_options", options, f"{key} is set by the training system from config.{owner}, "
                                                        f"not as a model option; drop model_options.{key}")
    try:
        model = get_model(c.model, num_classes=10, **options)
    except (ValueError, TypeError) as e:
        raise ConfigError("model_options", options, str(e)) from None
    x = jax.ShapeDtypeStruct((1, c.image_size, c.image_size, channels), jnp.float32)
    try:
        jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
    except GeometryError as e:
        raise ConfigError("image_size", c.image_size, f"{c.model} cannot take it: {e}") from None
    except (ValueError, TypeError) as e:  # an option the model refuses once it is built (norm='grop', shortcut='Z')
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if options:
            raise ConfigError("model_options", options, f"{c.model} refuses them: {reason}") from None
        raise ConfigError("model", c.model, f"tracing it on {x.shape} images failed: {reason}") from None
    if c.init_weights is not None or c.freeze is not None:
        from jaxconv.train.transfer import TransferError, check_config

        try:
            check_config(c.init_weights, c.freeze, model, c.model, x.shape)
        except TransferError as e:
            raise ConfigError(e.key, c[e.key], e.reason) from None


class ConfigChanged(UserError, ValueError):
    """A resume with a config that changes what the run is."""


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def config_changes(stored: dict, config: ml_collections.ConfigDict) -> dict[str, tuple[Any, Any]]:
    """``{key: (the run's value, the new value)}`` for every key that differs; model options as
    ``model_options.NAME``. Keys the stored config lacks (an older jaxconv's) count at their default."""
    defaults = _plain(base_config().to_dict())
    old, new = _plain(stored), _plain(config.to_dict())
    changes = {}
    for key in sorted(set(defaults) | set(old) | set(new)):
        before, after = old.get(key, defaults.get(key)), new.get(key, defaults.get(key))
        if key == "model_options" and isinstance(before, dict) and isinstance(after, dict):
            for name in sorted(set(before) | set(after)):
                if before.get(name) != after.get(name):
                    changes[f"model_options.{name}"] = (before.get(name), after.get(name))
        elif before != after:
            changes[key] = (before, after)
    return changes


def check_resume(stored: dict, config: ml_collections.ConfigDict, allow: Collection[str] = (), *,
                 where: str = "the workdir") -> dict[str, tuple[Any, Any]]:
    """The changes a resume makes to the run's config; raises ConfigChanged for those that change what
    the run is, unless ``allow`` names them (or is ``{'all'}``)."""
    changes = config_changes(stored, config)
    refused = {key: values for key, values in changes.items()
               if key.partition(".")[0] not in RESUMABLE_KEYS and "all" not in allow
               and key not in allow and key.partition(".")[0] not in allow}
    if refused:
        listed = ", ".join(f"{key} {_short(before)} -> {_short(after)}" for key, (before, after) in refused.items())
        raise ConfigChanged(
            f"{where} holds a run trained with other values: {listed}; these change what the run is, so resume "
            f"without them, give a new run another --workdir, or continue with them anyway with "
            f"--allow-change {','.join(refused)} (recorded in config_changes.jsonl)")
    return changes


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."
