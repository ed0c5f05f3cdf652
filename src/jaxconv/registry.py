"""Models by name: ``register``, ``model_info``, ``list_models``, ``build_model``.

The registry is a leaf: it imports nothing from the rest of jaxconv except the declaration
records (``jaxconv.declarations``) and the error base classes (``jaxconv.errors``). The families register into it when ``jaxconv.archs`` is
imported; ``jaxconv.models`` (and ``jaxconv.get_model``, ``jaxconv.register``) import the
families first, so look models up through them.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import functools
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn

from jaxconv.declarations import Published, TorchvisionKeys, WeightSet
from jaxconv.errors import UserError


class UnknownModelError(UserError, ValueError):
    """No model is registered under the requested name."""


class ModelContractError(UserError, ValueError):
    """A user's model that does not do what jaxconv needs of it (``jaxconv.models.check_contract``)."""


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
    published: Published | None = None  # figures others published for it
    weights: tuple[WeightSet, ...] = ()  # its published weight sets, the default first
    torchvision: TorchvisionKeys | None = None  # how torchvision's state dicts load into it

    @property
    def builtin(self) -> bool:
        return self.source_module.startswith("jaxconv.")

    @property
    def module_class(self) -> type[nn.Module]:
        factory = self.factory
        while isinstance(factory, functools.partial):
            factory = factory.func
        return factory  # type: ignore[return-value]

    def option_default(self, option: str) -> Any:
        """The value ``option`` takes when a config leaves it unset: the factory's (a partial's
        keyword first, then the module's field default); KeyError when it has none."""
        factory = self.factory
        while isinstance(factory, functools.partial):
            if option in factory.keywords:
                return factory.keywords[option]
            factory = factory.func
        for field in dataclasses.fields(factory):
            if field.name == option and field.default is not dataclasses.MISSING:
                return field.default
            if field.name == option and field.default_factory is not dataclasses.MISSING:
                return field.default_factory()
        raise KeyError(option)

    @property
    def options(self) -> tuple[str, ...]:
        """The keyword overrides get_model accepts for this model."""
        skip = {"parent", "name"}
        return tuple(f.name for f in dataclasses.fields(self.module_class) if f.init and f.name not in skip)


_REGISTRY: dict[str, ModelInfo] = {}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def register(
    name: str,
    factory: Callable[..., nn.Module],
    *,
    image_size: int,
    num_classes: int = 1000,
    in_channels: int = 3,
    family: str = "",
    description: str = "",
    published: Published | None = None,
    weights: Sequence[WeightSet] = (),
    torchvision: TorchvisionKeys | None = None,
) -> Callable[..., nn.Module]:
    """Registers ``factory`` (a Module class or partial) under ``name``; returns the factory.

    ``factory(num_classes=..., **options)`` must build a Flax module called as
    ``model.apply(variables, x, train=...)`` on (N, H, W, C) images, returning (N, num_classes) logits
    (the whole contract: docs/extending.md; commands check it, ``jaxconv.models.check_contract``); its dataclass fields are
    the options ``get_model`` accepts (a ``dtype`` field receives the compute dtype, an
    ``axis_name`` field the data-parallel axis that synchronises its BatchNorm).
    ``image_size`` is the default input resolution, ``num_classes`` the default head size;
    ``published``, ``weights`` and ``torchvision`` declare what is known about the model
    (``jaxconv.declarations``). A name registered by other code raises ValueError; the same
    code registering it again (a module run twice, a notebook cell re-run) replaces its own entry.
    """
    if not name or not isinstance(name, str):
        raise ValueError(f"model name must be a non-empty string, got {name!r}")
    if not _NAME.fullmatch(name):
        # a name goes on command lines, in patterns (`jaxconv list 'res*'`) and in file names (compare's plots)
        raise ValueError(f"register({name!r}, ...): a model name is letters, digits, '_', '-' and '.', starting "
                         f"with a letter or digit (as resnet50, my_net-v2), so that it can be typed as an argument, "
                         f"matched by a pattern and used in a file name")
    inner = factory
    while isinstance(inner, functools.partial):
        inner = inner.func
    if not (isinstance(inner, type) and issubclass(inner, nn.Module)):  # its fields are the model's options
        got = getattr(inner, "__name__", None) if callable(inner) else None
        raise ValueError(f"register({name!r}, ...): the factory must be a Flax module class or a functools.partial "
                         f"of one, got {type(inner).__name__}{f' {got}' if got else ''}")
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise ValueError(f"register({name!r}, ...): image_size must be a positive int, got {image_size!r}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"register({name!r}, ...): num_classes must be a positive int, got {num_classes!r}")
    if not isinstance(in_channels, int) or isinstance(in_channels, bool) or in_channels < 1:
        raise ValueError(f"register({name!r}, ...): in_channels must be a positive int, got {in_channels!r}")
    caller = sys._getframe(1).f_globals
    source_module, source_file = caller.get("__name__", ""), caller.get("__file__")
    previous = _REGISTRY.get(name)
    same_code = (previous is not None and not previous.builtin and
                 (previous.source_file == source_file if source_file else previous.source_module == source_module))
    if previous is not None and not same_code:
        where = "jaxconv" if previous.builtin else (previous.source_file or previous.source_module)
        raise ValueError(f"a model named {name!r} is already registered ({previous.module_class.__name__}, "
                         f"by {where}); choose another name")
    for w in weights:
        if not (8 <= len(w.sha256) <= 64 and all(c in "0123456789abcdefABCDEF" for c in w.sha256)):
            raise ValueError(f"register({name!r}, ...): weights {w.tag!r} need the file's SHA-256 (at least its first "
                             f"8 hex digits) to be checked when fetched, got {w.sha256!r}")
    tags = [w.tag for w in weights]
    if len(set(tags)) != len(tags):
        raise ValueError(f"register({name!r}, ...): weight tags must be distinct, got {tags}")
    if weights and published is not None and published.top1 is None:  # the default weights' accuracy
        published = dataclasses.replace(published, top1=weights[0].top1, top5=weights[0].top5)
    params = published.params if published is not None else None
    weights = tuple(dataclasses.replace(w, model=name, num_params=w.num_params or params) for w in weights)
    _REGISTRY[name] = ModelInfo(name, factory, image_size, num_classes, in_channels, family, description,
                                source_module, source_file, published, weights, torchvision)
    return factory


def model_info(name: str) -> ModelInfo:
    """The registry entry for ``name``; raises UnknownModelError with the closest names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=4, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `jaxconv list` shows them all"
        hint += " (a model of your own: --import MODULE_OR_FILE, or $JAXCONV_IMPORT)"
        raise UnknownModelError(f"unknown model {name!r}{hint}") from None


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style ``pattern`` ('resnet*', '*_bn'), sorted naturally."""
    if not isinstance(pattern, str):
        raise TypeError(f"list_models takes a shell-style pattern string like 'resnet*', got {pattern!r}")

    def natural(name: str) -> list:
        return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]

    return sorted((n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern)), key=natural)


def build_model(name: str, num_classes: int | None = None, **overrides: Any) -> Any:
    """Builds the registered model ``name`` (see ``jaxconv.models.get_model``, which callers use).

    ``num_classes`` defaults to the model's; other keyword arguments override the model's
    fields. An override the model does not have raises ValueError listing the ones it has.
    """
    info = model_info(name)
    unknown = sorted(set(overrides) - set(info.options))
    if unknown:
        raise ValueError(
            f"{name} has no option {', '.join(map(repr, unknown))}; its options are: {', '.join(info.options)}"
        )
    if "num_classes" not in info.options:  # else Python's "unexpected keyword argument", blaming the caller's options
        raise ModelContractError(
            f"{name}: {info.module_class.__name__} has no num_classes field; jaxconv builds every model as "
            f"{info.module_class.__name__}(num_classes=...) for the dataset's classes: give it a "
            f"`num_classes: int = {info.num_classes}` field and size its last layer with it")
    num_classes = info.num_classes if num_classes is None else num_classes
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
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
