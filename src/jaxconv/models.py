"""The model zoo by name: ``get_model``, ``list_models``, ``register``, ``model_info``.

Importing this module registers every built-in family (``jaxconv.archs``), so lookups here
see them all, and a user's ``register`` cannot take a built-in name.

    >>> from jaxconv import models
    >>> models.list_models("resnet*")[:3]
    ['resnet18', 'resnet20', 'resnet32']
    >>> model = models.get_model("resnet50", num_classes=10)
"""

from __future__ import annotations

import functools
import inspect
import re
from typing import Any

import flax.errors
import jax
import jax.numpy as jnp

from jaxconv.archs import (
    VGG,
    AlexNet,
    AlexNetTorchvision,
    AllConvNet,
    CifarStem,
    EfficientNet,
    GoogLeNet,
    ImageNetStem,
    LeNet5,
    ResNet,
    ZFNet,
)
from jaxconv.layers.activations import get_activation
from jaxconv.archs.resnet import STEMS
from jaxconv.layers.conv import reference_convolutions
from jaxconv.layers.geometry import GeometryError
from jaxconv.layers.norm import resolve_norm
from jaxconv.registry import (
    ModelContractError,
    ModelInfo,
    UnknownModelError,
    build_model,
    list_models,
    model_info,
    register,
    runtime_options,
)
from jaxconv.stages import Stage, StageSpec


def get_model(
    name: str,
    num_classes: int | None = None,
    *,
    weights: str | None = None,
    weights_dir: Any = None,
    download: bool = True,
    **overrides: Any,
) -> Any:
    """Builds the registered model ``name``.

    ``num_classes`` defaults to the model's (1000 for ImageNet models); other keyword
    arguments override the model's fields (e.g. ``dtype=jnp.bfloat16``, ``variant='v1'``,
    ``norm='group'``, ``act='swish'``). An override the model does not have raises ValueError
    listing the ones it has.

    With ``weights='IMAGENET1K_V2'`` (a tag of ``model_info(name).weights``) it returns
    ``(model, variables)`` with the published weights, read from ``weights_dir`` (default
    $JAXCONV_WEIGHTS_DIR or ~/.cache/jaxconv/weights) after checking their SHA-256, and
    downloaded there first when missing and ``download`` is true.
    """
    if weights is not None:
        from jaxconv.pretrained.weights import load_published  # weight I/O only when asked for

        return load_published(
            name, weights, weights_dir=weights_dir, download=download, num_classes=num_classes, **overrides
        )
    if overrides.get("act") is not None and not callable(overrides["act"]):  # configs name activations: act="tanh"
        overrides["act"] = get_activation(overrides["act"])  # anything else (act=123) is refused here, not in init
    if isinstance(name, str) and model_info(name).builtin:
        check_shared_options(name, overrides)
        overrides = checked_against_defaults(name, overrides)
    return build_model(name, num_classes, **overrides)


# Options that take a module and also accept a name (a config file holds names, not classes).
NAMED_MODULES = {"stem": STEMS}


def checked_against_defaults(name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides``, each checked to be of its default's kind (_check_type), 'true'/'false' read as the bools
    an older config.json meant by them. A string given for an option whose value is a module or a function
    (stem='imagenet') must be one of its names; elsewhere (block='bottleneck') a string would fail deep inside
    ``init`` as "'str' object is not callable"."""
    if not overrides:
        return overrides
    defaults = build_model(name)
    checked = {}
    for key, value in overrides.items():
        default = getattr(defaults, key, None)
        if isinstance(default, bool) and isinstance(value, str) and value.strip().lower() in ("true", "false"):
            value = value.strip().lower() == "true"  # a sweep's config.json before 2026-12-04 recorded it so
        _check_type(name, key, value, default)
        checked[key] = value
    strings = {key: value for key, value in checked.items() if isinstance(value, str) and key not in ("norm", "act", "dtype")}
    for key, value in strings.items():
        default = getattr(defaults, key, None)
        if isinstance(default, str) or default is None or not callable(default):
            continue
        names = NAMED_MODULES.get(key)
        if names is None:
            raise ValueError(f"{name}: {key} takes a module or function (its default: "
                             f"{getattr(default, '__name__', type(default).__name__)}), not the string {value!r}")
        if value not in names:
            raise ValueError(f"{name}: {key} must be one of {', '.join(map(repr, names))} (or a module), got {value!r}")
    return checked


def option_value(text: str) -> Any:
    """A model option's value as a command line spells it: a Python literal (2, (3, 3, 3), None), true/false/
    none in any case (as the configs' values are written), or else a string (norm=group)."""
    import ast

    words = {"true": True, "false": False, "none": None, "null": None}
    if text.strip().lower() in words:
        return words[text.strip().lower()]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _check_type(name: str, key: str, value: Any, default: Any) -> None:
    """An option whose default is a bool, a number or a sequence takes one: Python would read the string
    'false' as true (aux_logits='false' built the auxiliary heads) and fail on widths=16 as "object of type
    'int' has no len()"."""
    if value is None:
        return
    if isinstance(default, bool):
        wrong = not isinstance(value, bool)
        kind = "True or False"
    elif isinstance(default, (int, float)):
        wrong = isinstance(value, bool) or not isinstance(value, (int, float))
        kind = "a number"
    elif isinstance(default, (tuple, list)):
        wrong = not isinstance(value, (tuple, list))
        kind = "a sequence"
    else:
        return
    if wrong:
        raise ValueError(f"{name}: {key} takes {kind} (its default: {default!r}), got {value!r}")


def check_shared_options(name: str, overrides: dict[str, Any]) -> None:
    """Values of the options the built-in families share, checked when the model is built: Flax would
    take them and fail deep inside ``init`` (norm='banana'), or never (drop_path_rate=2.0)."""
    choices = {"shortcut": ("A", "B", "C"), "variant": ("v1", "v1.5")}  # ResNet's
    for key, value in overrides.items():
        if key in ("dropout", "drop_path_rate"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"{name}: {key} is a probability, 0 <= {key} < 1, got {value!r}")
        elif key == "dtype":
            try:
                floating = jnp.issubdtype(jnp.dtype(value), jnp.floating)
            except TypeError:
                floating = False
            if not floating:
                raise ValueError(f"{name}: dtype is the compute dtype, a floating type (float32, bfloat16, "
                                 f"float16), got {value!r}")
        elif key == "norm":
            try:
                resolve_norm(value)
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from None
        elif key in choices and value is not None and value not in choices[key]:
            raise ValueError(f"{name}: {key} must be one of {', '.join(map(repr, choices[key]))} or None, "
                             f"got {value!r}")


# What the training step, evaluation, bench and summary need of a model; built-ins are tested, a user's model is
# checked with check_contract before anything is compiled or written.
CALL = "model.apply(variables, images, train=...)"
COLLECTIONS = ("params", "batch_stats")  # what a run trains, saves and restores
SOWN = ("aux_logits",)  # what the step reads beside the logits: GoogLeNet's and Inception's auxiliary heads


def check_contract(name: str, model: Any, input_shape: tuple[int, ...], *, dtype: Any = None) -> None:
    """Raises ModelContractError, in one line, when the user-registered model ``name`` (built as ``model``)
    cannot be used as jaxconv uses it; built-in models pass at once.

    jaxconv initialises it as ``model.init({'params': key}, images, train=False)``, trains it as
    ``model.apply(variables, images, train=True, mutable=['batch_stats', 'aux_logits'], rngs={'dropout': key})``
    and evaluates it as ``model.apply(variables, images, train=False)``, each returning logits, an
    (N, num_classes) floating array; ``variables`` hold 'params' and 'batch_stats' alone. All three are traced
    with jax.eval_shape on two images of ``input_shape[1:]`` (no compute). An image size the model cannot take,
    though its default one works, raises GeometryError. ``dtype``: the compute dtype asked for, which needs a
    ``dtype`` field.
    """
    info = model_info(name)
    if info.builtin:
        return
    if dtype is not None:
        try:
            runtime_options(name, dtype=dtype)
        except ValueError as e:
            raise ModelContractError(str(e)) from None
    _check_call_signature(name, type(model))
    if getattr(model, "axis_name", None) is not None:  # traced outside the device mesh: no axis to reduce over
        model = model.clone(axis_name=None)
    shape = (2, *input_shape[1:])
    try:
        hash(model)
    except TypeError:  # a field holding a list or a dict
        return _check_traced(name, model, shape)
    return _cached_check_traced(name, model, shape)


def _check_call_signature(name: str, module_class: type) -> None:
    """A ``__call__`` that takes no ``train``, or needs an argument besides the images, fails in every command."""
    try:
        signature = inspect.signature(module_class.__call__)
    except (TypeError, ValueError):  # a builtin or a C callable: the trace will tell
        return
    parameters = list(signature.parameters.values())[1:]  # after self
    kinds = inspect.Parameter
    if not parameters or any(p.kind == kinds.VAR_POSITIONAL for p in parameters):
        return
    rest = parameters[1:]  # the first takes the images
    takes_train = any(p.name == "train" or p.kind == kinds.VAR_KEYWORD for p in rest)
    needed = [p.name for p in rest if p.default is p.empty and p.name != "train"
              and p.kind not in (kinds.VAR_POSITIONAL, kinds.VAR_KEYWORD)]
    where = f"{name}: {module_class.__name__}.__call__{str(signature).replace('(self, ', '(')}"
    if needed:
        them = "it" if len(needed) == 1 else "them"
        raise ModelContractError(f"{where} needs {', '.join(needed)}, which jaxconv does not give: it calls {CALL} "
                                 f"with the images alone; give {them} a default")
    if not takes_train:
        raise ModelContractError(f"{where} takes no train argument; jaxconv calls {CALL} with train=True while "
                                 f"training and train=False to evaluate: add `train: bool = False` (and pass "
                                 f"`not train` to Dropout's deterministic and BatchNorm's use_running_average)")


def _check_traced(name: str, model: Any, shape: tuple[int, ...]) -> None:
    from jaxconv.user_modules import error_cause

    info = model_info(name)
    images = jax.ShapeDtypeStruct(shape, jnp.float32)
    key = jax.random.key(0)
    num_classes = getattr(model, "num_classes", info.num_classes)

    extra: list[str] = []  # collections its init makes that a run does not keep

    def failed(error: Exception, train: bool | None) -> ModelContractError:
        cause = re.sub(r" \(https://\S+\)", "", error_cause(error, info.source_file))  # Flax's link to its docs
        if isinstance(error, flax.errors.InvalidRngError) and train is not True:
            return ModelContractError(
                f"{name} draws random numbers with train=False ({cause}); jaxconv initialises and evaluates it "
                f"with train=False and gives a 'dropout' rng only while training: use "
                f"nn.Dropout(rate, deterministic=not train)")
        if isinstance(error, flax.errors.ModifyScopeVariableError) and "batch_stats" in str(error) and train is False:
            return ModelContractError(
                f"{name} updates its batch_stats with train=False ({cause}); jaxconv evaluates with them as "
                f"trained: use nn.BatchNorm(use_running_average=not train)")
        if isinstance(error, (flax.errors.ScopeCollectionNotFound, flax.errors.ScopeVariableNotFoundError,
                              flax.errors.ModifyScopeVariableError)):
            where = f"in {', '.join(map(repr, extra))}" if extra else f"outside {' and '.join(COLLECTIONS)}"
            return ModelContractError(
                f"{name} keeps variables {where} ({cause}); jaxconv trains, saves and restores only "
                f"{' and '.join(map(repr, COLLECTIONS))}: keep its state in 'batch_stats' (and sow auxiliary "
                f"logits into 'aux_logits')")
        call = "init" if train is None else f"train={train}"
        return ModelContractError(f"{name}: tracing it on {shape} images ({call}) failed: {cause}")

    def trace(function, train: bool | None, *arguments):
        try:
            with reference_convolutions():  # one convolution primitive per layer: the same shapes, traced faster
                return jax.eval_shape(function, images, *arguments)
        except GeometryError:
            raise
        except Exception as e:  # noqa: BLE001 -- the user's code: any error is one line
            if shape[1:3] != (info.image_size, info.image_size):  # does the model work at its own size?
                try:
                    _check_traced(name, model, (shape[0], info.image_size, info.image_size, shape[3]))
                except (ModelContractError, GeometryError):
                    pass
                else:
                    raise GeometryError(f"tracing it failed: {error_cause(e, info.source_file)}") from None
            raise failed(e, train) from None

    variables = trace(lambda x: model.init({"params": key}, x, train=False), None)
    if not jax.tree_util.tree_leaves(variables.get("params", {})):
        raise ModelContractError(f"{name} has no parameters (its init makes no 'params'); jaxconv trains a model's "
                                 f"params: give it at least one layer with weights")
    kept = {c: variables[c] for c in COLLECTIONS if c in variables}
    extra += sorted(set(variables) - set(COLLECTIONS) - set(SOWN))
    logits, updates = trace(lambda x, v: model.apply(v, x, train=True, mutable=["batch_stats", *SOWN],
                                                     rngs={"dropout": key}), True, kept)
    _check_logits(name, logits, shape[0], num_classes, "train=True")
    for aux in jax.tree_util.tree_leaves(updates.get("aux_logits", {})):
        _check_logits(name, aux, shape[0], num_classes, "its sown aux_logits")
    _check_logits(name, trace(lambda x, v: model.apply(v, x, train=False), False, kept), shape[0], num_classes,
                  "train=False")


_cached_check_traced = functools.lru_cache(maxsize=256)(_check_traced)


def _check_logits(name: str, output: Any, batch: int, num_classes: int, when: str) -> None:
    needs = (f"jaxconv calls {CALL} and needs logits, an (N, {num_classes}) floating array "
             f"(N images, num_classes={num_classes})")
    if not isinstance(output, jax.ShapeDtypeStruct):
        kind = type(output).__name__
        raise ModelContractError(f"{name} returns a {kind} ({when}); {needs}: return the logits alone (auxiliary "
                                 f"outputs go into the 'aux_logits' collection with self.sow, as GoogLeNet's do)")
    if not jnp.issubdtype(output.dtype, jnp.floating):
        raise ModelContractError(f"{name} returns {output.dtype} values ({when}); {needs}, not class indices")
    if output.shape != (batch, num_classes):
        raise ModelContractError(f"{name} returns an array of shape {output.shape} for {batch} images ({when}); "
                                 f"{needs}: size the last layer with self.num_classes")


__all__ = [
    "VGG",
    "AlexNet",
    "AlexNetTorchvision",
    "AllConvNet",
    "CifarStem",
    "EfficientNet",
    "GoogLeNet",
    "ImageNetStem",
    "LeNet5",
    "ModelContractError",
    "ModelInfo",
    "ResNet",
    "Stage",
    "StageSpec",
    "UnknownModelError",
    "ZFNet",
    "check_contract",
    "get_model",
    "list_models",
    "model_info",
    "register",
    "runtime_options",
]
