"""Models by name: register, get_model, list_models, model_info."""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import functools
import importlib
import re
import sys
from collections.abc import Callable
from typing import Any

import flax.linen as nn


class UnknownModelError(ValueError):
    """No model is registered under the requested name."""


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a model besides how to build it."""

    name: str
    factory: Callable[..., nn.Module]
    image_size: int
    num_classes: int = 1000
    in_channels: int = 3
    family: str = ""
    description: str = ""
    source_module: str = ""  # the module that registered it ('jaxconv.archs.resnet', 'my_blocks', '__main__')
    source_file: str | None = None  # that module's file, when it has one

    @property
    def builtin(self) -> bool:
        return self.source_module.startswith("jaxconv.")

    @property
    def module_class(self) -> type[nn.Module]:
        factory = self.factory
        while isinstance(factory, functools.partial):
            factory = factory.func
        return factory  # type: ignore[return-value]

    @property
    def options(self) -> tuple[str, ...]:
        """The keyword overrides get_model accepts for this model."""
        skip = {"parent", "name"}
        return tuple(f.name for f in dataclasses.fields(self.module_class) if f.init and f.name not in skip)


_REGISTRY: dict[str, ModelInfo] = {}
_BUILTINS_LOADED = False


def _load_builtins() -> None:
    """Imports the built-in architectures (which register themselves) on the first lookup."""
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        importlib.import_module("jaxconv.archs")


def register(
    name: str,
    factory: Callable[..., nn.Module],
    *,
    image_size: int,
    num_classes: int = 1000,
    in_channels: int = 3,
    family: str = "",
    description: str = "",
) -> Callable[..., nn.Module]:
    """Registers ``factory`` (a Module class or partial) under ``name``; returns the factory.

    ``factory(num_classes=..., **options)`` must build a Flax module called as
    ``model.apply(variables, x, train=...)`` on (N, H, W, C) images; its dataclass fields are
    the options ``get_model`` accepts (a ``dtype`` field receives the compute dtype, an
    ``axis_name`` field the data-parallel axis that synchronises its BatchNorm).
    ``image_size`` is the default input resolution, ``num_classes`` the default head size.
    A name registered by other code raises ValueError; the same code registering it again
    (a module run twice, a notebook cell re-run) replaces its own entry.
    """
    if not name or not isinstance(name, str):
        raise ValueError(f"model name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise ValueError(f"register({name!r}, ...): the factory must be a Flax module class or a partial of one, "
                         f"got {type(factory).__name__}")
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise ValueError(f"register({name!r}, ...): image_size must be a positive int, got {image_size!r}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"register({name!r}, ...): num_classes must be a positive int, got {num_classes!r}")
    caller = sys._getframe(1).f_globals
    source_module, source_file = caller.get("__name__", ""), caller.get("__file__")
    if not source_module.startswith("jaxconv."):
        _load_builtins()  # so that a user's model cannot take a built-in name first
    previous = _REGISTRY.get(name)
    if previous is not None and (previous.builtin or (previous.source_module, previous.source_file) != (
            source_module, source_file)):
        where = "jaxconv" if previous.builtin else (previous.source_file or previous.source_module)
        raise ValueError(f"a model named {name!r} is already registered ({previous.module_class.__name__}, "
                         f"by {where}); choose another name")
    _REGISTRY[name] = ModelInfo(name, factory, image_size, num_classes, in_channels, family, description,
                                source_module, source_file)
    return factory


def model_info(name: str) -> ModelInfo:
    """The registry entry for ``name``; raises UnknownModelError with the closest names."""
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=4, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `jaxconv list` shows them all"
        hint += " (a model of your own: --import MODULE_OR_FILE, or $JAXCONV_IMPORT)"
        raise UnknownModelError(f"unknown model {name!r}{hint}") from None


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style ``pattern`` ('resnet*', '*_bn'), sorted naturally."""
    _load_builtins()

    def natural(name: str) -> list:
        return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]

    return sorted((n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern)), key=natural)


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
    arguments override the model's fields (e.g. ``dtype=jnp.bfloat16``, ``variant='v1'``).
    An override the model does not have raises ValueError listing the ones it has.

    With ``weights='IMAGENET1K_V2'`` (a tag of ``jaxconv.pretrained.WEIGHTS[name]``) it returns
    ``(model, variables)`` with the published weights, read from ``weights_dir`` (default
    $JAXCONV_WEIGHTS_DIR or ~/.cache/jaxconv/weights) after checking their SHA-256, and
    downloaded there first when missing and ``download`` is true.
    """
    if weights is not None:
        from jaxconv.pretrained.weights import load_published  # weight I/O only when asked for

        return load_published(
            name, weights, weights_dir=weights_dir, download=download, num_classes=num_classes, **overrides
        )
    info = model_info(name)
    unknown = sorted(set(overrides) - set(info.options))
    if unknown:
        raise ValueError(
            f"{name} has no option {', '.join(map(repr, unknown))}; its options are: {', '.join(info.options)}"
        )
    if isinstance(overrides.get("act"), str):  # configs name activations: act="tanh"
        from jaxconv.layers.activations import get_activation

        overrides["act"] = get_activation(overrides["act"])
    num_classes = info.num_classes if num_classes is None else num_classes
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return info.factory(num_classes=num_classes, **overrides)



def runtime_options(name: str, *, dtype: Any = None, axis_name: str | None = None) -> dict[str, Any]:
    """The fields the training system (and bench) sets on model ``name``: the one documented path.

    ``dtype``: the compute dtype, given to a ``dtype`` field (a model without one computes in
    float32; asking it for another dtype raises ValueError). ``axis_name``: the data-parallel
    device axis, given to an ``axis_name`` field (every built-in family has one; a user's model
    opts in by declaring ``axis_name: str | None = None`` and passing it to its ``nn.BatchNorm``
    layers), whose BatchNorm statistics are then those of the global batch (sync BatchNorm).
    A model without the field normalises each device's share of the batch (local BatchNorm):
    ``"axis_name" in result`` tells which.
    """
    options = model_info(name).options
    result: dict[str, Any] = {}
    if dtype is not None:
        if "dtype" in options:
            result["dtype"] = dtype
        elif getattr(dtype, "__name__", str(dtype)) != "float32":
            raise ValueError(f"{name} has no dtype field, so it cannot compute in {getattr(dtype, '__name__', dtype)}; "
                             f"give the module a `dtype: Any = jnp.float32` field and pass it to its layers")
    if axis_name is not None and "axis_name" in options:
        result["axis_name"] = axis_name
    return result
