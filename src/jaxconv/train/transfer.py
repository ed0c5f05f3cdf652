"""Transfer learning: start a run from pretrained weights, freeze part of the network, extract features.

What the training loop uses (``config.init_weights``, ``config.freeze``):

- ``initial_variables``: a fresh run's parameters and BatchNorm statistics, read from a
  torchvision state dict (.pth / .safetensors, converted by ``jaxconv.pretrained``), from a
  published weight set by tag ('IMAGENET1K_V1', fetched and hash-checked), or from another
  jaxconv run's checkpoint. The classifier head is re-initialised when the class count
  differs; any other difference is an error naming the entries. A resumed run never reads
  them: it restores its own checkpoint.
- ``check_init_weights``: ``init_weights`` checked before a run starts.

Freezing part of the network (``config.freeze``) is ``jaxconv.train.freezing``.

And for users: ``extract_features``, any stage's activations for a batch, jitted.
"""

from __future__ import annotations

import functools
import inspect
import json
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from jaxconv.errors import UserError

COLLECTIONS = ("params", "batch_stats")
TORCH_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
BACKBONE = "backbone"


class TransferError(UserError, ValueError):
    """Initial weights that cannot be used, or a freeze pattern that matches nothing; names the config key."""

    def __init__(self, key: str, value: Any, reason: str):
        super().__init__(f"config.{key}={value!r}: {reason}")
        self.key, self.value, self.reason = key, value, reason


def join_path(path: tuple) -> str:
    return "/".join(str(getattr(k, "key", k)) for k in path)


def variable_shapes(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, dict[str, tuple[int, ...]]]:
    """{'params': {'stem/conv/kernel': shape, ...}, 'batch_stats': {...}} of ``model`` at ``input_shape``.

    Traced abstractly (``jax.eval_shape``): nothing is computed.
    """
    abstract = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                              jax.ShapeDtypeStruct(input_shape, jnp.float32))
    return {c: {"/".join(k): tuple(v.shape) for k, v in flatten_dict(dict(abstract.get(c, {}))).items()}
            for c in COLLECTIONS}


def head_parameters(model: nn.Module, input_shape: tuple[int, ...]) -> frozenset[str]:
    """Paths of the parameters whose shape follows ``num_classes``: the classifier head(s), e.g. 'head/kernel'."""
    if not hasattr(model, "num_classes"):
        return frozenset()
    ours = variable_shapes(model, input_shape)["params"]
    other = variable_shapes(model.clone(num_classes=model.num_classes + 1), input_shape)["params"]
    return frozenset(k for k, shape in ours.items() if other.get(k) != shape)


# --- initial weights ------------------------------------------------------------------------------


def source_kind(source: str) -> str:
    """'torchvision' (a .pth/.safetensors file or a published tag) or 'run' (a jaxconv workdir), from the text."""
    if source.lower().endswith(TORCH_FILE_SUFFIXES):
        return "torchvision"
    if pathlib.Path(source).expanduser().is_dir():
        return "run"
    return "torchvision"


def check_source(source: str, model_name: str) -> None:
    """Fails early, before any data is prepared, when ``source`` names nothing usable.

    A published tag is fetched here (downloaded when missing, hash-checked).
    """
    path = pathlib.Path(source).expanduser()
    if path.exists():
        return
    if _published_tag(source, model_name):
        _fetch(source, model_name)
        return
    if source.lower().endswith(TORCH_FILE_SUFFIXES):
        raise TransferError("init_weights", source, "no such file")
    tags = _tags(model_name)
    known = f"; published tags of {model_name}: {', '.join(tags)}" if tags else ""
    raise TransferError("init_weights", source, "neither a weights file (.pth or .safetensors), a jaxconv workdir "
                                                f"nor a published weight tag{known}")


def check_init_weights(init_weights: str | None, model_name: str) -> None:
    """The check ``validate`` makes of ``init_weights`` without reading a file: a source the model can load."""
    if init_weights is None:
        return
    if not init_weights.strip():
        raise TransferError("init_weights", init_weights, "must name a weights file, a published tag or a "
                                                          "jaxconv workdir (or be None)")
    from jaxconv.models import model_info
    from jaxconv.pretrained.convert import SUPPORTED

    if source_kind(init_weights) == "torchvision" and model_info(model_name).torchvision is None:
        raise TransferError("init_weights", init_weights,
                            f"not a directory, so torchvision weights, which convert only to "
                            f"{', '.join(SUPPORTED)}; {model_name} can start from another run's workdir")


def _tags(model_name: str) -> list[str]:
    from jaxconv.pretrained.weights import weight_sets

    return list(weight_sets(model_name))


def _published_tag(source: str, model_name: str) -> bool:
    return "/" not in source and source in _tags(model_name)


def _fetch(tag: str, model_name: str) -> pathlib.Path:
    """The local file of a published weight set (see ``jaxconv.pretrained.fetch``)."""
    from jaxconv.pretrained.weights import fetch

    try:
        return fetch(model_name, tag)
    except (OSError, ValueError) as e:  # not found and no network, wrong hash
        raise TransferError("init_weights", tag, f"{e} (or give a local file as config.init_weights=PATH)") from None


def pretrained_options(model_name: str, source: str | None, _depth: int = 0) -> dict[str, Any]:
    """Model options torchvision's weights need (GoogLeNet's ``transform_input``) when starting from them, or
    from a run that started from them (its own ``init_weights``, followed back), or that set them itself."""
    from jaxconv.models import model_info

    if not source:
        return {}
    keys = model_info(model_name).torchvision
    needed = dict(keys.load_options) if keys is not None else {}
    if source_kind(source) == "torchvision":
        return needed
    config = _run_config(source)
    if not needed or config is None or _depth > 16:
        return {}
    inherited = pretrained_options(model_name, config.get("init_weights"), _depth + 1)
    given = {k: v for k, v in (config.get("model_options") or {}).items() if k in needed}
    return {**inherited, **given}


def _run_config(source: str) -> dict | None:
    """The config.json of the run a workdir source (the workdir, its checkpoints/ or a step folder) belongs to."""
    path = pathlib.Path(source).expanduser()
    for folder in (path, path.parent, path.parent.parent):
        try:
            config = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError):
            continue
        return config if isinstance(config, dict) else None
    return None


def load_variables(source: str, model_name: str, model_options: Mapping[str, Any],
                   log: Callable[[str], None] = print) -> tuple[dict, str]:
    """Reads {'params', 'batch_stats'} (numpy) from ``source``; returns them and a description of the source.

    ``source``: a torchvision state dict file, a published tag of ``model_name`` (fetched into
    the weights directory and hash-checked; see ``jaxconv.pretrained.fetch``), or a jaxconv
    workdir / its checkpoints directory / one step directory (the latest readable checkpoint;
    its EMA weights when the run kept them).
    """
    path = pathlib.Path(source).expanduser()
    tag = not path.exists() and _published_tag(source, model_name)
    if not path.exists() and not tag:
        check_source(source, model_name)  # raises, saying what the text could have been
    options = {k: v for k, v in model_options.items() if k not in ("dtype", "num_classes")}
    if path.is_dir():
        try:
            variables, meta = checkpoint_variables(source, log=log)  # says which broken ones it skipped
        except (FileNotFoundError, ValueError) as e:  # no checkpoint there, or a broken one
            raise TransferError("init_weights", source, str(e)) from None
        if meta.get("model") not in (None, model_name):
            raise TransferError("init_weights", source, f"a {meta['model']} run, not {model_name}")
        return variables, f"{source} (jaxconv checkpoint, step {meta.get('step')})"
    from jaxconv.pretrained.convert import WeightsMismatchError, load_pretrained

    description = f"{source} (torchvision state dict)"
    if tag:
        path = _fetch(source, model_name)
        description = f"{model_name} {source} ({path})"
    try:
        try:
            _, variables = load_pretrained(model_name, path, **options)
        except WeightsMismatchError as e:
            if not e.classifier_classes:
                raise
            # a model fine-tuned on other classes: its backbone is what is wanted, and its head fits or is re-made
            _, variables = load_pretrained(model_name, path, **options, num_classes=e.classifier_classes)
    except (ValueError, KeyError, OSError) as e:  # mismatch, format, hash, not found
        reason = str(e).strip("'\"")
        raise TransferError("init_weights", source, reason.removeprefix(f"{path}: ")) from None
    return {c: variables.get(c, {}) for c in COLLECTIONS}, description


def checkpoint_variables(path: str | pathlib.Path, step: int | None = None, *,
                         log: Callable[[str], None] = lambda _: None) -> tuple[dict, dict]:
    """{'params', 'batch_stats'} (host arrays) and the meta of a jaxconv run's latest (or given) checkpoint.

    ``path``: the workdir, its checkpoints/ directory, or one step directory (checkpoints/1000).
    The parameters are the ones evaluation uses: the exponential moving average when kept.
    """
    from jaxconv.checkpoint import Checkpoints

    path = pathlib.Path(path).expanduser()
    if path.name.isdigit() and path.parent.name == "checkpoints":
        workdir, step = path.parent.parent, int(path.name) if step is None else step
    elif path.name == "checkpoints" and not (path / "checkpoints").is_dir():
        workdir = path.parent
    else:
        workdir = path
    checkpoints = Checkpoints(workdir, read_only=True, log=log)
    try:
        steps = checkpoints.available(step, hint=f" (is {path} a `jaxconv train` workdir?)")
        stored = checkpoints.manager.item_metadata(step if step is not None else steps[-1])["state"]
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree_util.tree_map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                                        dict(stored.tree if hasattr(stored, "tree") else stored))
        state, meta, _ = checkpoints.restore_available(target, step=step)
    finally:
        checkpoints.close()
    ema = state.get("ema_params") is not None  # the weights the run evaluated: its moving averages when kept
    params = state["ema_params"] if ema else state["params"]
    stats = (state.get("ema_batch_stats") if ema else None) or state.get("batch_stats") or {}
    return {"params": jax.device_get(params), "batch_stats": jax.device_get(stats)}, meta


def match_variables(loaded: Mapping, expected: Mapping[str, Mapping[str, tuple]], head: frozenset[str],
                    source: str) -> tuple[dict, list[str]]:
    """The loaded entries that fit ``expected`` (flat 'a/b/kernel' -> array) and the head entries to re-initialise.

    ``expected`` is ``variable_shapes`` of the model being trained. Head entries whose shape
    differs (another class count) or that the source lacks are re-initialised; any other
    missing, unexpected or wrongly shaped entry raises TransferError listing them.
    """
    fitting: dict[str, dict[str, np.ndarray]] = {}
    reinitialised, missing, unexpected, wrong = [], [], [], []
    for collection in COLLECTIONS:
        given = {"/".join(k): v for k, v in flatten_dict(dict(loaded.get(collection, {}))).items()}
        wanted = expected.get(collection, {})
        fitting[collection] = {}
        for key, shape in wanted.items():
            is_head = collection == "params" and key in head
            if key not in given:
                if is_head:
                    reinitialised.append(f"{key} (not in the source)")
                else:
                    missing.append(f"{collection}/{key}")
            elif tuple(np.shape(given[key])) != shape:
                if is_head:
                    reinitialised.append(f"{key} {tuple(np.shape(given[key]))} -> {shape}")
                else:
                    source_shape = tuple(np.shape(given[key]))
                    wrong.append(f"{collection}/{key}: {source_shape} in the source, {shape} in the model")
            else:
                fitting[collection][key] = given[key]
        unexpected += [f"{collection}/{k}" for k in given if k not in wanted]
    if missing or unexpected or wrong:
        parts = []
        for label, entries in (("missing", missing), ("unexpected", unexpected), ("wrongly shaped", wrong)):
            if entries:
                shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
                parts.append(f"{len(entries)} {label} ({shown})")
        raise TransferError("init_weights", source, f"does not fit the model: {'; '.join(parts)} "
                                                    "(only the classifier head may differ)")
    return fitting, reinitialised


def initial_variables(source: str, model_name: str, model_options: Mapping[str, Any], model: nn.Module,
                      input_shape: tuple[int, ...], log: Callable[[str], None] = print) -> dict:
    """The variables a fresh run starts from: {'params': {path: array}, 'batch_stats': {...}}, flat, host arrays.

    Entries absent from the result (the re-initialised head) keep their fresh initial values
    (see ``with_variables``). Logs what was loaded and what was re-initialised.
    """
    loaded, description = load_variables(source, model_name, model_options, log=log)
    expected = variable_shapes(model, input_shape)
    fitting, reinitialised = match_variables(loaded, expected, head_parameters(model, input_shape), source)
    fitting = {c: {k: np.asarray(v, np.float32) for k, v in fitting[c].items()} for c in COLLECTIONS}
    counts = f"{len(fitting['params'])} parameter and {len(fitting['batch_stats'])} BatchNorm statistic arrays"
    log(f"initialised from {description}: {counts} loaded"
        + (f"; re-initialised for {getattr(model, 'num_classes', '?')} classes: {', '.join(reinitialised)}"
           if reinitialised else ""))
    return fitting


def with_variables(state, variables: Mapping[str, Mapping[str, Any]]):
    """``state`` with its parameters and BatchNorm statistics replaced by the flat ``variables`` entries.

    Entries missing from ``variables`` keep their value; the optimizer state is initialised
    again for the new parameters, and the moving average (if any) starts at them.
    """
    def merged(tree, flat):
        tree = flatten_dict(dict(tree))
        tree.update({tuple(k.split("/")): jnp.asarray(v) for k, v in flat.items()})
        return unflatten_dict(tree)

    params = merged(state.params, variables.get("params", {}))
    batch_stats = state.batch_stats
    if batch_stats:
        batch_stats = merged(batch_stats, variables.get("batch_stats", {}))
    return state.replace(
        params=params,
        batch_stats=batch_stats,
        opt_state=state.tx.init(params),
        ema_params=jax.tree_util.tree_map(jnp.copy, params) if state.ema_params is not None else None,
        ema_batch_stats=jax.tree_util.tree_map(jnp.copy, batch_stats) if state.ema_batch_stats is not None else None,
    )


# --- features -------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("model", "stage", "pool"))
def _features(model: nn.Module, variables, images: jax.Array, stage: str, pool: bool) -> jax.Array:
    _, features = model.apply(variables, images, train=False, return_features=True)
    out = features[stage]
    return out.mean(axis=(1, 2)) if pool and out.ndim == 4 else out


@functools.lru_cache(maxsize=64)
def feature_names(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """The features ``model`` returns at ``input_shape`` (N, H, W, C), name -> shape: 'stem', 'stage1', ..."""
    def features(x):
        variables = model.init(jax.random.key(0), x, train=False)
        return model.apply(variables, x, train=False, return_features=True)[1]

    shapes = jax.eval_shape(features, jax.ShapeDtypeStruct(input_shape, jnp.float32))
    return {name: tuple(s.shape) for name, s in shapes.items()}


def extract_features(model: nn.Module, variables: Mapping, images, stage: str = "pre_logits", *,
                     pool: bool = False) -> jax.Array:
    """The activations of ``stage`` for a batch of normalized images (N, H, W, C), in evaluation mode.

    Returns (N, h, w, c) for a spatial stage ('stem', 'stage1', ...) — or (N, c) with
    ``pool=True`` (global average) — and (N, c) for 'pre_logits'. Jitted once per model,
    stage and input shape; the layers after ``stage`` are not computed.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"extract_features takes the model itself (a Flax module: jaxconv.get_model('resnet20')), "
                        f"got {type(model).__name__} {model!r:.40}")
    try:
        parameters = inspect.signature(model.__call__).parameters
    except (TypeError, ValueError):
        parameters = {"return_features": None}  # cannot tell: let the trace say
    if "return_features" not in parameters and not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        raise TypeError(f"extract_features needs a model whose __call__ takes return_features=True and returns "
                        f"(logits, features), as jaxconv's models do; {type(model).__name__} does not")
    images = jnp.asarray(images)
    names = feature_names(model, tuple(images.shape))
    if stage not in names:
        raise ValueError(f"{type(model).__name__} has no feature {stage!r}; it has {', '.join(names)}")
    variables = {c: variables[c] for c in COLLECTIONS if c in variables}
    return _features(model, variables, images, stage, pool)


__all__ = [
    "TransferError", "check_init_weights", "check_source", "checkpoint_variables", "extract_features", "feature_names",
    "head_parameters", "initial_variables", "load_variables",
    "match_variables", "pretrained_options", "variable_shapes", "with_variables",
]
