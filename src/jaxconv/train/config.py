"""Experiment configs: the keys every experiment has, loading, command-line overrides, validation.

An experiment is a Python file defining ``get_config()`` that returns an ml_collections
ConfigDict, usually ``base_config()`` with a few values changed. Every value is validated
before anything is compiled or written; a bad one raises ConfigError naming the key, the
value and what is allowed.
"""

from __future__ import annotations

import ast
import difflib
import functools
import inspect
import json
import os
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import ml_collections
from ml_collections import config_dict

from jaxconv.models import option_value
from jaxconv.train.keys import BY_NAME, KEYS, MOVED, ConfigError, default_value



def base_config() -> ml_collections.ConfigDict:
    """Every key an experiment has, with its default (a ResNet-20 on the built-in dataset); see keys.KEYS."""
    c = ml_collections.ConfigDict()
    for key in KEYS:
        *groups, field = key.name.split(".")
        node = c
        for group in groups:
            if group not in node:
                node[group] = ml_collections.ConfigDict()
            node = node[group]
        if key.default is None:
            node[field] = config_dict.placeholder(key.check.python_type)
        elif isinstance(key.default, dict):
            node[field] = ml_collections.ConfigDict(key.default)
        else:
            node[field] = key.default
    return c


def flat(config: Mapping) -> dict[str, Any]:
    """``{dotted key: value}`` for every declared key a config (or a config.json's dict) holds."""
    values = {}
    for key in KEYS:
        node, present = config, True
        for part in key.name.split("."):
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            else:
                present = False
                break
        if present:
            values[key.name] = node
    return values


def unknown_keys(config: Mapping) -> list[str]:
    """Keys of ``config`` that are not declared (dotted), besides model_options' free fields."""
    groups = {key.name.split(".")[0] for key in KEYS if "." in key.name}
    found = []
    for name, value in config.items():
        if name in groups and isinstance(value, Mapping):
            found += [f"{name}.{sub}" for sub in value if f"{name}.{sub}" not in BY_NAME]
        elif name not in BY_NAME and name not in groups:
            found.append(name)
    return sorted(found)


def unknown_key_hint(name: str) -> str:
    """What to say about an undeclared key: where it moved, or the nearest declared one."""
    if name in MOVED:
        return f"it is config.{MOVED[name]} now"
    close = difflib.get_close_matches(name, list(BY_NAME) + list(MOVED), n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean {MOVED.get(close[0], close[0])}? (`jaxconv train --help` lists every key)"
    return "unknown key (`jaxconv train --help` lists every key)"


def upgrade(stored: dict) -> dict:
    """A config.json written before the optimizer's settings were grouped, with them grouped."""
    if not any(old in stored and not isinstance(stored[old], Mapping) for old in MOVED):
        return stored
    stored = dict(stored)
    group = dict(stored["optimizer"]) if isinstance(stored.get("optimizer"), Mapping) else {}
    for old, new in MOVED.items():
        if old in stored and not (old == "optimizer" and isinstance(stored[old], Mapping)):
            group[new.split(".", 1)[1]] = stored.pop(old)
    stored["optimizer"] = group
    return stored


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
    from jaxconv.user_modules import UserModuleError, error_cause, import_file

    try:  # its folder becomes importable, so that it can `import my_blocks` from beside it
        module = import_file(path, what=f"experiment file {path}", name=f"jaxconv_experiment_{path.stem}", fresh=True)
    except UserModuleError as e:
        raise ConfigError("file", str(path), str(e).split(": ", 1)[1]) from None
    if not hasattr(module, "get_config"):
        raise ConfigError("file", str(path), "an experiment file must define get_config()")
    try:
        config = _call_get_config(module, path, variant)
    except ConfigError:
        raise
    except (Exception, SystemExit) as e:  # the user's code failed: what, and on which line of their file
        if isinstance(e, SystemExit):  # sys.exit() in get_config ended `jaxconv train` silently, even with status 0
            raise ConfigError("file", str(path), f"get_config() called sys.exit({e.code!r}) ({error_cause(e, path)}); "
                                                 f"it must return a ConfigDict") from None
        if isinstance(e, TypeError) and "Could not override field" in str(e):  # ml_collections: another type
            if "field 'optimizer'" in str(e):
                raise ConfigError("file", str(path), "get_config() sets config.optimizer, a group of settings now: set "
                                                     "config.optimizer.name (and optimizer.momentum, .weight_decay, ...)"
                                  ) from None
            raise ConfigError("file", str(path), f"get_config() sets a value of the wrong type: "
                                                 f"{str(e).splitlines()[0]}") from None
        raise ConfigError("file", str(path), f"get_config() failed: {error_cause(e, path)}") from None
    if isinstance(config, ml_collections.FrozenConfigDict):  # jaxconv fills in and records values: thawed
        config = ml_collections.ConfigDict(config)
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
            inspect.signature(module.get_config).bind(variant)
        except TypeError:
            raise ConfigError("file", f"{path}:{variant}", "this experiment has no variants (get_config() takes none)") from None
        return module.get_config(variant)


def _checked_keys(config: ml_collections.ConfigDict, path: pathlib.Path) -> ml_collections.ConfigDict:
    unknown = unknown_keys(config)
    if unknown:
        raise ConfigError(unknown[0], _get(config, unknown[0]), unknown_key_hint(unknown[0]))
    if "imports" in config and isinstance(config.imports, (tuple, list)):  # files relative to the experiment's folder
        from jaxconv.user_modules import is_file_spec

        config.imports = tuple(str((path.parent / spec).resolve()) if isinstance(spec, str) and is_file_spec(spec)
                               and not pathlib.Path(spec).expanduser().is_absolute() else spec
                               for spec in config.imports)
    return config


def _get(config: Mapping, name: str) -> Any:
    for part in name.split("."):
        config = config[part]
    return config


def _parse(name: str, text: str) -> Any:
    """``--config.NAME=TEXT`` as a value of the key's type."""
    key = BY_NAME[name]
    target = key.check.python_type
    lowered = text.strip().lower()
    # 'none' unsets a nullable key (init_weights, optimizer.grad_clip_norm, ...); augment=none is a value.
    if lowered in ("none", "null") and key.nullable:
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
        if name == "imports":  # module names and paths, unquoted: --config.imports=my_blocks,lib/nets.py
            return tuple(part.strip() for part in text.split(",") if part.strip())
        if target is tuple:
            return tuple(ast.literal_eval(text if text.strip().startswith(("(", "[")) else f"({text},)"))
        if target is str:
            return text
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        kind = {bool: "true or false", int: "an integer", float: "a number", tuple: "a list like 30,60,80",
                str: "a string"}.get(target, "a Python literal")
        raise ConfigError(name, text, f"expected {kind}") from None


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, str]) -> ml_collections.ConfigDict:
    """Applies ``--config.KEY=VALUE`` overrides (``--config.optimizer.name=adamw``), typed by the key.

    Unknown keys raise ConfigError with a "did you mean"; ``model_options.NAME`` may add model overrides.
    """
    config = ml_collections.ConfigDict(upgrade(config.to_dict()))
    for name, text in overrides.items():
        parts = name.split(".")
        if parts[0] == "model_options" and len(parts) == 2:
            value = option_value(text)
            try:
                config.model_options[parts[1]] = value
            except TypeError:
                current = config.model_options[parts[1]]
                raise ConfigError(name, text, f"must be like the current {current!r} "
                                              f"({type(current).__name__})") from None
            continue
        if name not in BY_NAME:
            raise ConfigError(name, text, unknown_key_hint(name))
        value = _parse(name, text)
        *groups, field = name.split(".")
        node = config
        for group in groups:
            if group not in node or not isinstance(node[group], ml_collections.ConfigDict):
                node[group] = ml_collections.ConfigDict()
            node = node[group]
        if BY_NAME[name].check.python_type is float and isinstance(value, int):
            value = float(value)
        try:
            node[field] = value
        except TypeError as e:
            raise ConfigError(name, text, f"of the wrong type ({str(e).splitlines()[0]})") from None
    return config


def validate(config: ml_collections.ConfigDict, *, device_count: int, process_count: int = 1,
             log: Callable[[str], None] | None = None, training: bool = True) -> ml_collections.ConfigDict:
    """Checks every value and fills the defaults that depend on others; returns the resolved config.

    Each key is checked as keys.KEYS declares it; then what relates several keys. Nothing is
    compiled or written; the architecture's geometry at the image size is checked by tracing
    its shapes. ``training=False`` (an evaluation of a run): the training batch need not fit the devices.
    """
    from jaxconv.data.catalog import DATASETS
    from jaxconv.models import model_info
    from jaxconv.user_modules import source_spec

    given = upgrade(config.to_dict())
    unknown = unknown_keys(given)
    if unknown:
        raise ConfigError(unknown[0], _get(given, unknown[0]), unknown_key_hint(unknown[0]))
    values = {**{key.name: default_value(key.name) for key in KEYS}, **flat(given)}  # an older config: new keys' defaults
    values["imports"] = _import_user_modules(values["imports"], values["model"], log)
    for key in KEYS:
        values[key.name] = key.validate(values[key.name])
    c = base_config()
    for name, value in values.items():
        *groups, field = name.split(".")
        node = c
        for group in groups:
            node = node[group]
        node[field] = ml_collections.ConfigDict(dict(value)) if name == "model_options" else value
    _check_optimizer_settings(c)
    _check_schedule_settings(c, log)
    _check_directory(c, "data_dir")
    try:
        info = model_info(c.model)
    except ValueError as e:
        hint = str(e).split("; ", 1)[-1]  # "did you mean ...", else where to look
        raise ConfigError("model", c.model, hint if hint.startswith("did you mean") else f"no such model; {hint}") from None
    source = source_spec(info.source_module, info.source_file)
    if source is not None and source not in c.imports:  # so that eval, export and resume find the model again
        c.imports = (*c.imports, source)
    if c.folder and c.dataset != "folder":  # it was ignored: the run trained on the dataset named
        raise ConfigError("folder", c.folder, f"only dataset 'folder' reads it, and config.dataset is {c.dataset!r}; "
                                              f"drop it or give --config.dataset=folder")
    if c.dataset == "folder" and not c.folder:
        raise ConfigError("folder", c.folder, "dataset 'folder' needs the root of the class subfolders")
    if c.folder:  # recorded absolute, so that eval and a resume from another directory find it
        c.folder = os.path.abspath(os.path.expanduser(c.folder))
    if c.dataset == "shapes" and c.image_size is not None and c.image_size < 8:
        raise ConfigError("image_size", c.image_size, "the built-in shapes dataset is drawn at 8 pixels or more")
    if c.dataset == "shapes" and c.batch_size > c.shapes_train_examples:
        raise ConfigError("batch_size", c.batch_size, f"must be at most the {c.shapes_train_examples} training "
                                                      f"examples of the built-in dataset (shapes_train_examples)")
    if c.eval_batch_size is None:
        c.eval_batch_size = c.batch_size
    share = c.batch_size // device_count
    if training and c.batch_size % device_count == 0 and share % c.grad_accumulation_steps:
        raise ConfigError("grad_accumulation_steps", c.grad_accumulation_steps,
                          f"must divide each device's share of the batch ({c.batch_size} / {device_count} devices "
                          f"= {share})")
    for key in ("batch_size", "eval_batch_size") if training else ("eval_batch_size",):
        if c[key] % device_count:
            raise ConfigError(key, c[key], f"must be divisible by the {device_count} devices")
        if c[key] % process_count:
            raise ConfigError(key, c[key], f"must be divisible by the {process_count} processes")
    if c.image_size is None:
        c.image_size = info.image_size
    spec = DATASETS[c.dataset]
    if c.augment == "alexnet" and spec.channels != 3:
        raise ConfigError("augment", c.augment, f"PCA lighting needs RGB images; {c.dataset} has {spec.channels} channel")
    _check_model(c, spec.channels, spec.num_classes)
    return c


def _check_optimizer_settings(c: ml_collections.ConfigDict) -> None:
    """A setting the chosen optimizer does not read, changed from its default, is a mistake worth a line."""
    for key in KEYS:
        if key.optimizers and c.optimizer.name not in key.optimizers and _get(c, key.name) != key.default:
            raise ConfigError(key.name, _get(c, key.name),
                              f"only {' and '.join(key.optimizers)} {'read' if len(key.optimizers) > 1 else 'reads'} "
                              f"it, and config.optimizer.name is "
                              f"{c.optimizer.name!r}; drop it or choose one of those optimizers")


def _check_schedule_settings(c: ml_collections.ConfigDict, log: Callable[[str], None] | None) -> None:
    """The step schedule's settings with another schedule are ignored, said in a line (an experiment derived
    from a step-schedule one, switched to cosine, inherits them); Nesterov without momentum is refused."""
    if c.schedule != "step" and log is not None:
        for name in ("decay_epochs", "decay_factor"):
            value = tuple(c[name]) if isinstance(c[name], (list, tuple)) else c[name]
            if value != BY_NAME[name].default:
                log(f"warning: config.{name}={value}: only schedule 'step' reads it, and config.schedule is "
                    f"{c.schedule!r}, so it is ignored (give --config.schedule=step to decay so)")
    if c.optimizer.name == "sgd" and c.optimizer.nesterov and not c.optimizer.momentum:
        raise ConfigError("optimizer.nesterov", True, "Nesterov momentum needs momentum, and "
                                                      "config.optimizer.momentum is 0; drop it or give a momentum")


def _check_directory(c: ml_collections.ConfigDict, key: str) -> None:
    """A directory path that exists as a directory, or can be created (its nearest existing parent is one)."""
    if c[key] is None:
        return
    path = pathlib.Path(c[key]).expanduser()
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        where = "is a file" if existing == path else f"is below {existing}, which is a file"
        raise ConfigError(key, c[key], f"{where}; give a directory")


def _import_user_modules(specs: Any, model: Any, log: Callable[[str], None] | None) -> tuple[str, ...]:
    """Imports ``config.imports``; returns them as the run records them (absolute paths for files).

    A recorded file that is gone (moved since the run trained) is left out when the run's model is known
    without it -- the user gave its new place with --import -- and named otherwise."""
    from jaxconv.models import model_info
    from jaxconv.user_modules import UserModuleError, import_modules, is_file_spec

    if isinstance(specs, str) or not isinstance(specs, (tuple, list)) or not all(isinstance(s, str) for s in specs):
        raise ConfigError("imports", specs, "must be a list of module names or .py files, e.g. ('my_blocks.py',)")
    gone = [s for s in specs if is_file_spec(s) and not pathlib.Path(s).expanduser().exists()]
    try:
        recorded = import_modules([s for s in specs if s not in gone], source="config.imports")
    except UserModuleError as e:
        raise ConfigError("imports", tuple(specs), str(e).split(": ", 1)[1]) from None
    if gone:
        try:
            builtin = model_info(model).builtin
        except (ValueError, TypeError):
            builtin = True
        if builtin:  # a built-in model: nothing shows the file is not needed (it may register blocks)
            raise ConfigError("imports", tuple(specs), "no such file (if a run's file moved since, give its new "
                                                       "place with --import NEW_PATH.py)")
        if log is not None:
            log(f"config.imports: {', '.join(gone)} {'is' if len(gone) == 1 else 'are'} gone; {model} is known "
                f"without {'it' if len(gone) == 1 else 'them'} (--import), so {'it is' if len(gone) == 1 else 'they are'} left out")
    return tuple(recorded)


def _check_model(c: ml_collections.ConfigDict, channels: int, num_classes: int | None) -> None:
    """Builds the model with its options and traces its shapes at the image size (no compute); a user's model
    is checked against what the training step needs of it (models.check_contract) before the workdir is made.
    ``num_classes``: the dataset's, None (or 0) when only opening it tells (a folder): the model's own then."""
    import jax
    import jax.numpy as jnp

    from jaxconv.layers import GeometryError
    from jaxconv.models import ModelContractError, check_contract, get_model, runtime_options

    options = dict(c.model_options)
    for key, value in options.items():  # the run records them in config.json, for eval, export and a resume
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            what = getattr(value, "__name__", None) or getattr(getattr(value, "func", None), "__name__", None)
            raise ConfigError("model_options", options,
                              f"{key} is {type(value).__name__}{f' {what}' if what else ''}, which config.json cannot "
                              f"record for eval, export and a resume: give a name or value the model takes "
                              f"(act='gelu', norm='group'), or register a model of your own with it built in "
                              f"(docs/extending.md)") from None
    for key, owner in (("axis_name", "bn_mode"), ("dtype", "dtype"), ("num_classes", "dataset")):
        if key in options:
            raise ConfigError("model_options", options, f"{key} is set by the training system from config.{owner}, "
                                                        f"not as a model option; drop model_options.{key}")
    try:
        runtime_options(c.model, dtype=c.dtype)
    except ValueError as e:
        raise ConfigError("dtype", c.dtype, str(e)) from None
    try:
        model = get_model(c.model, num_classes=num_classes or None, **options)
    except ModelContractError as e:  # the model itself, not the options the user gave it
        raise ConfigError("model", c.model, str(e).removeprefix(f"{c.model}: ")) from None
    except (ValueError, TypeError, ArithmeticError) as e:
        raise ConfigError("model_options", options, str(e)) from None
    x = jax.ShapeDtypeStruct((1, c.image_size, c.image_size, channels), jnp.float32)
    try:
        check_contract(c.model, model, x.shape)
        _trace(model, x.shape)
    except ModelContractError as e:
        raise ConfigError("model", c.model, str(e).removeprefix(f"{c.model}: ")) from None
    except GeometryError as e:
        raise ConfigError("image_size", c.image_size, f"{c.model} cannot take it: {e}") from None
    except (ValueError, TypeError, ArithmeticError) as e:  # an option the model refuses once it is built (norm='grop', shortcut='Z')
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if options:
            raise ConfigError("model_options", options, f"{c.model} refuses them: {reason}") from None
        raise ConfigError("model", c.model, f"tracing it on {x.shape} images failed: {reason}") from None
    if c.init_weights is not None or c.freeze is not None:
        from jaxconv.train.freezing import frozen_paths
        from jaxconv.train.transfer import TransferError, check_init_weights

        try:
            check_init_weights(c.init_weights, c.model)
            frozen_paths(c.freeze, model, x.shape)
        except TransferError as e:
            raise ConfigError(e.key, c[e.key], e.reason) from None


def _trace(model, shape: tuple[int, ...]) -> None:
    """Traces ``model.init`` on ``shape`` (no compute), once per equal model and shape in a process:
    a sweep validates dozens of runs that share a few models (modules compare by their fields)."""
    try:
        hash(model)
    except TypeError:  # a field holding a list or a dict
        return _eval_shape(model, shape)
    return _cached_eval_shape(model, shape)


def _eval_shape(model, shape: tuple[int, ...]) -> None:
    import jax
    import jax.numpy as jnp

    from jaxconv.layers.conv import reference_convolutions

    with reference_convolutions():  # one convolution primitive per layer: the same shapes, traced faster
        # train=False as the training state is initialised: a __call__(x, train) with no default takes it too
        jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                       jax.ShapeDtypeStruct(shape, jnp.float32))


_cached_eval_shape = functools.lru_cache(maxsize=256)(_eval_shape)
