"""The model zoo by name: ``get_model``, ``list_models``, ``register``, ``model_info``.

Importing this module registers every built-in family (``jaxconv.archs``), so lookups here
see them all, and a user's ``register`` cannot take a built-in name.

    >>> from jaxconv import models
    >>> models.list_models("resnet*")[:3]
    ['resnet18', 'resnet20', 'resnet32']
    >>> model = models.get_model("resnet50", num_classes=10)
"""

from __future__ import annotations

from typing import Any

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
from jaxconv.layers.norm import resolve_norm
from jaxconv.registry import (
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
    if isinstance(overrides.get("act"), str):  # configs name activations: act="tanh"
        overrides["act"] = get_activation(overrides["act"])
    if isinstance(name, str) and model_info(name).builtin:
        check_shared_options(name, overrides)
        check_named_modules(name, overrides)
    return build_model(name, num_classes, **overrides)


# Options that take a module and also accept a name (a config file holds names, not classes).
NAMED_MODULES = {"stem": STEMS}


def check_named_modules(name: str, overrides: dict[str, Any]) -> None:
    """Each option's value is of its default's kind (_check_type); a string given for an option whose value is
    a module or a function (stem='imagenet') must be one of its names; elsewhere (block='bottleneck') a string
    would fail deep inside ``init`` as "'str' object is not callable"."""
    if not overrides:
        return
    defaults = build_model(name)
    for key, value in overrides.items():
        _check_type(name, key, value, getattr(defaults, key, None))
    strings = {key: value for key, value in overrides.items() if isinstance(value, str) and key not in ("norm", "act", "dtype")}
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
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            wrong = False  # as a config.json of a sweep before 2026-12-04 recorded it (a string, then read as true)
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
    "ModelInfo",
    "ResNet",
    "Stage",
    "StageSpec",
    "UnknownModelError",
    "ZFNet",
    "get_model",
    "list_models",
    "model_info",
    "register",
    "runtime_options",
]
