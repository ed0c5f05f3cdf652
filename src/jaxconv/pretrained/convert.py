"""torchvision state dicts -> jaxconv variables: one key mapping per family, checked entry by entry.

The layout is derived from the jaxconv model itself (``jax.eval_shape`` of its
initialisation), so the converter and the model cannot drift apart: every jaxconv
variable names the torchvision entry it comes from and how its array is rearranged:

- convolution kernels: torch (O, I/groups, kh, kw) -> flax (kh, kw, I/groups, O);
- linear layers: torch (out, in) -> flax Dense (in, out);
- the first classifier layer of AlexNet and VGG: torch flattens (C, H, W), jaxconv (H, W, C),
  so its input rows are permuted;
- BatchNorm: weight -> scale, bias -> bias, running_mean -> mean, running_var -> var
  (``num_batches_tracked`` is ignored);
- a per-channel tensor torch stores as (C, 1, 1) (ConvNeXt's layer scale): -> (C,).

DenseNet's published files keep the key names of torchvision's first version ('norm.1',
'conv.1', ...), which its loader rewrites to today's ('norm1', 'conv1'); jaxconv maps onto the
published names and first turns today's names into them (the declaration's ``published_key``).

timm's republication of torchvision's VGG weights stores the classifier as convolutions
(pre_logits.fc1 as (4096, 512, 7, 7), pre_logits.fc2, head.fc); those keys are mapped back
to torchvision's names first, so both files load.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import math
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import jaxconv.archs  # noqa: F401 -- registers the built-in models, whose declarations say how torchvision's keys map
from jaxconv.declarations import TorchvisionKeys
from jaxconv.errors import UserError
from jaxconv.pretrained import torchfile
from jaxconv.pretrained.torchfile import WeightsFormatError
from jaxconv.registry import build_model as _build, list_models, model_info

# The built-in models torchvision's state dicts load into: those whose family declares the key mapping
# (a user's family that declares one loads them too).
SUPPORTED = tuple(name for name in list_models()
                  if model_info(name).torchvision is not None and model_info(name).builtin)
# Entries of every torchvision file that have no jaxconv counterpart and are dropped.
ALWAYS_IGNORED = ("*.num_batches_tracked",)


class WeightsFileNotFound(UserError, FileNotFoundError):
    """The weights file given does not exist."""


class WeightsMismatchError(UserError, ValueError):
    """A state dict does not fit the model: missing, unexpected or wrongly shaped entries.

    ``classifier_classes``: the file's class count when only the classifier differs (else None)."""

    def __init__(self, message: str, classifier_classes: int | None = None):
        super().__init__(message)
        self.classifier_classes = classifier_classes


@dataclasses.dataclass(frozen=True)
class Entry:
    """One jaxconv variable and the torchvision state-dict entry it comes from."""

    collection: str  # 'params' or 'batch_stats'
    path: tuple[str, ...]  # module path and leaf name inside the collection
    torch_key: str
    kind: str  # 'copy', 'conv', 'dense', 'dense_chw' or 'channel'
    shape: tuple[int, ...]  # the jaxconv shape
    chw: tuple[int, int, int] | None = None  # (C, H, W) of the flattened input, for 'dense_chw'

    @property
    def torch_shape(self) -> tuple[int, ...]:
        if self.kind == "conv":
            kh, kw, cin, cout = self.shape
            return (cout, cin, kh, kw)
        if self.kind in ("dense", "dense_chw"):
            fan_in, fan_out = self.shape
            return (fan_out, fan_in)
        if self.kind == "channel":
            return (*self.shape, 1, 1)
        return self.shape

    def to_jax(self, array: np.ndarray) -> np.ndarray:
        """Rearranges a torch array (already shape-checked) into this variable's layout."""
        array = np.asarray(array, dtype=np.float32)
        if self.kind == "conv":
            return np.ascontiguousarray(array.transpose(2, 3, 1, 0))
        if self.kind == "dense":
            return np.ascontiguousarray(array.T)
        if self.kind == "channel":
            return array.reshape(self.shape)
        if self.kind == "dense_chw":
            channels, height, width = self.chw  # type: ignore[misc]
            out = array.shape[0]
            return np.ascontiguousarray(
                array.reshape(out, channels, height, width).transpose(2, 3, 1, 0).reshape(-1, out)
            )
        return array


_LEAVES = {
    ("params", "kernel"): "weight",
    ("params", "bias"): "bias",
    ("params", "scale"): "weight",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}


def torchvision_keys(name: str) -> TorchvisionKeys:
    """How torchvision's state dicts map onto ``name`` (its family's declaration); ValueError if they do not."""
    keys = model_info(name).torchvision  # an unknown name raises UnknownModelError with suggestions
    if keys is None:
        raise WeightsMismatchError(f"no torchvision weights convert to {name!r}; convertible models: "
                                   f"{', '.join(SUPPORTED)}")
    return keys


def build_model(name: str, **model_overrides: Any):
    """jaxconv.get_model(name) with the options torchvision's weights need (e.g. GoogLeNet's transform_input)."""
    return _build(name, **{**torchvision_keys(name).load_options, **model_overrides})


def variable_shapes(name: str, model=None, **model_overrides: Any) -> dict:
    """The jaxconv variables' shapes ({'params': ..., 'batch_stats': ...} of ShapeDtypeStruct), no compute."""
    import jax
    import jax.numpy as jnp

    from jaxconv.layers.conv import reference_convolutions

    info = model_info(name)
    model = model if model is not None else build_model(name, **model_overrides)
    x = jax.ShapeDtypeStruct((1, info.image_size, info.image_size, info.in_channels), jnp.float32)
    with reference_convolutions():  # one convolution primitive per layer: the same shapes, traced faster
        variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
    return {k: v for k, v in variables.items() if k in ("params", "batch_stats")}


def _walk(tree: Mapping, prefix: tuple[str, ...] = ()):
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from _walk(value, prefix + (key,))
        else:
            yield prefix + (key,), value


def conversion_plan(name: str, model=None, **model_overrides: Any) -> tuple[Entry, ...]:
    """Every jaxconv variable of ``name`` with its torchvision key and rearrangement.

    Computed from the model's shapes (a trace, no compute) once per name and options.
    """
    if model is None:
        try:
            return _cached_plan(name, tuple(sorted(model_overrides.items())))
        except TypeError:  # an unhashable option value: no caching
            pass
    return _plan(name, model, **model_overrides)


@functools.lru_cache(maxsize=64)
def _cached_plan(name: str, overrides: tuple) -> tuple[Entry, ...]:
    return _plan(name, None, **dict(overrides))


def _plan(name: str, model=None, **model_overrides: Any) -> tuple[Entry, ...]:
    keys = torchvision_keys(name)
    shapes = variable_shapes(name, model, **model_overrides)
    params = shapes["params"]
    entries = []
    for collection in ("params", "batch_stats"):
        for path, leaf in _walk(shapes.get(collection, {})):
            module, leaf_name = path[:-1], path[-1]
            channel = bool(module) and module[-1] in keys.channel_parameters
            try:
                prefix = keys.prefix(module[:-1] if channel else module, params)
            except ValueError as e:  # a module torchvision's files do not have (GoogLeNet's aux heads)
                raise WeightsFormatError(str(e)) from None
            torch_key = f"{prefix}.{module[-1] if channel else _LEAVES[(collection, leaf_name)]}"
            shape = tuple(leaf.shape)
            kind, chw = "copy", None
            if channel:
                kind = "channel"
            elif leaf_name == "kernel" and len(shape) == 4:
                kind = "conv"
            elif leaf_name == "kernel" and len(shape) == 2:
                kind = "dense"
                if keys.flattened_input == module[0]:
                    kind, chw = "dense_chw", _flattened_chw(params, shape[0])
            entries.append(Entry(collection, path, torch_key, kind, shape, chw))
    return tuple(entries)


def _flattened_chw(params: Mapping, fan_in: int) -> tuple[int, int, int]:
    """(C, H, W) of the feature map the first classifier layer flattens: C from the last conv."""
    kernels = [leaf for path, leaf in _walk(params) if path[-1] == "kernel" and len(leaf.shape) == 4]
    channels = kernels[-1].shape[-1]
    side = math.isqrt(fan_in // channels)
    if side * side * channels != fan_in:
        raise WeightsMismatchError(f"the classifier's {fan_in} inputs are not a square map of {channels} channels")
    return (channels, side, side)


def torch_layout(name: str, **model_overrides: Any) -> dict[str, tuple[int, ...]]:
    """The torchvision state-dict keys and shapes that ``name`` loads (ignored entries excluded)."""
    return {e.torch_key: e.torch_shape for e in conversion_plan(name, **model_overrides)}


def is_ignored(name: str, key: str) -> bool:
    """Whether ``key`` of a torchvision file for ``name`` is dropped on purpose when the model has no such entry
    (num_batches_tracked, auxiliary heads)."""
    patterns = ALWAYS_IGNORED + torchvision_keys(name).ignored
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def _from_timm_vgg(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """timm's VGG classifier (convolutions) -> torchvision's (linear layers)."""
    renamed = {"pre_logits.fc1": "classifier.0", "pre_logits.fc2": "classifier.3", "head.fc": "classifier.6"}
    out = {}
    for key, value in state_dict.items():
        module, _, leaf = key.rpartition(".")
        if module in renamed:
            if leaf == "weight" and np.ndim(value) == 4:
                value = np.reshape(value, (value.shape[0], -1))  # (O, C, 7, 7) flattens in torch's C, H, W order
            key = f"{renamed[module]}.{leaf}"
        out[key] = value
    return out


_unwrap = torchfile.unwrap  # {'state_dict': ...} / {'model': ...} checkpoints and DataParallel's 'module.' prefix


def _few(items: list[str], limit: int = 4) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def check_state_dict(name: str, state_dict: Mapping[str, Any], plan: Sequence[Entry]) -> None:
    """Raises WeightsMismatchError listing missing, unexpected and wrongly shaped entries."""
    expected = {e.torch_key: e.torch_shape for e in plan}
    # An ignored pattern drops what the model has no place for (Inception v3's AuxLogits without its head).
    given = {k: tuple(np.shape(v)) for k, v in state_dict.items() if k in expected or not is_ignored(name, k)}
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    wrong = [k for k in expected if k in given and given[k] != expected[k]]
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({_few(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({_few(unexpected)})")
    if wrong:
        shapes = [f"{k}: file {given[k]}, {name} needs {expected[k]}" for k in wrong]
        parts.append(f"{len(wrong)} wrongly shaped ({_few(shapes, 3)})")
    message = f"the state dict does not fit {name} ({len(expected)} entries expected): " + "; ".join(parts)
    head = [e.torch_key for e in plan if e.path[0] == "head"]
    classes = None
    if wrong and not (missing or unexpected) and set(wrong) <= set(head):
        classes = given[wrong[0]][0]
        message += f" — only the classifier differs: pass num_classes={classes}"
    elif len(missing) + len(unexpected) + len(wrong) > len(expected) // 2:
        message += " — is it a file for another model?"
    raise WeightsMismatchError(message, classes)


def check_dtypes(name: str, state_dict: Mapping[str, Any], plan: Sequence[Entry]) -> None:
    """Raises WeightsFormatError naming the first entry the model uses that is not floating point.

    An integer tensor where a weight belongs is a quantised (or otherwise encoded) file, whose numbers
    are not the weights; entries the model does not use (num_batches_tracked, an int64) are not checked.
    """
    used = {e.torch_key for e in plan}
    for key, value in state_dict.items():
        dtype = np.dtype(value.dtype if hasattr(value, "dtype") else np.asarray(value).dtype)
        if key in used and dtype.kind in "biu":
            raise WeightsFormatError(
                f"entry {key!r} is {dtype.name}: {name} needs floating-point weights (a quantised file?)"
            )


def convert_state_dict(name: str, state_dict: Mapping[str, Any], **model_overrides: Any) -> dict:
    """A torchvision state dict (key -> array) -> jaxconv variables {'params', 'batch_stats'} (numpy).

    Pure numpy on the weights (no torch). ``model_overrides`` are those of ``get_model``
    (e.g. ``dtype``), added to the options the published weights need. Raises
    WeightsFormatError for an integer (quantised) entry where the model has a weight, and
    WeightsMismatchError listing the missing, unexpected and wrongly shaped entries.
    """
    state_dict = _unwrap(state_dict)
    if any(k.startswith("pre_logits.fc1.") for k in state_dict):
        state_dict = _from_timm_vgg(state_dict)
    published_key = torchvision_keys(name).published_key
    if published_key is not None:
        state_dict = {published_key(key): value for key, value in state_dict.items()}
    plan = conversion_plan(name, **model_overrides)
    check_dtypes(name, state_dict, plan)
    check_state_dict(name, state_dict, plan)
    variables: dict = {}
    for entry in plan:
        node = variables.setdefault(entry.collection, {})
        for key in entry.path[:-1]:
            node = node.setdefault(key, {})
        node[entry.path[-1]] = entry.to_jax(state_dict[entry.torch_key])
    return variables


# ----------------------------------------------------------------------------------------------
# Files.

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


def read_state_dict(path: str | pathlib.Path) -> dict[str, np.ndarray]:
    """Reads a weights file into key -> numpy array (floating tensors as float32); torch is not needed.

    ``.safetensors``: with the safetensors package. ``.pth``/``.pt``/``.bin``/``.ckpt`` (and any file
    that begins as torch.save's zip or legacy format): with ``jaxconv.pretrained.torchfile``, which
    unpickles tensors and nothing else -- a pickle naming any other function or class is refused
    with WeightsFormatError, and nothing in the file is run. A floating entry holding NaN or inf is
    refused (WeightsFormatError naming the first), as a checkpoint's are.
    """
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise TypeError(f"the weights file must be a path (str or os.PathLike), got {path!r}")
    path = pathlib.Path(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix in (*TORCH_SUFFIXES, ".safetensors"))[:3]
        raise WeightsFileNotFound(f"weights file {str(path)!r} is a folder: give the .pth or .safetensors file itself"
                                  + (f" (in it: {', '.join(inside)})" if inside else " (it holds none)"))
    if not path.is_file():
        raise WeightsFileNotFound(f"weights file {str(path)!r} does not exist")
    state = _read_any(path)
    for key, value in state.items():  # checked as a checkpoint is: a NaN would load and run silently
        if value.dtype.kind in "fc" and not np.isfinite(value).all():
            raise WeightsFormatError(f"{path}: entry {key!r} holds non-finite values (NaN or inf), so it cannot be "
                                     f"used; the file is damaged or was saved from a diverged run")
    return state


def _read_any(path: pathlib.Path) -> dict[str, np.ndarray]:
    try:
        with path.open("rb") as f:
            magic = f.read(len(torchfile.LEGACY_PREFIX))
        if path.suffix == ".safetensors" or (
            path.suffix not in TORCH_SUFFIXES and not magic.startswith((b"PK", torchfile.LEGACY_PREFIX))
        ):
            return _read_safetensors(path)
        state = torchfile.read_state_dict(path)
    except OSError as e:  # unreadable (permissions, a device error): the user's file, one line
        raise WeightsFormatError(f"{path}: cannot be read ({e.strerror or e})") from None
    return {key: value.astype(np.float32, copy=False) if value.dtype.kind == "f" else value
            for key, value in state.items()}


def _read_safetensors(path: pathlib.Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return dict(load_file(str(path)))
    except (SafetensorError, ValueError, OSError) as e:
        raise WeightsFormatError(
            f"{path}: not a readable .safetensors file ({e}); jaxconv reads .safetensors and torch .pth state dicts"
        ) from None


def load_pretrained(name: str, path: str | pathlib.Path, **model_overrides: Any):
    """Builds ``name`` and loads a torchvision state dict file into it: returns (model, variables).

    ``path`` is a .pth/.pt file (torch.save's zip or legacy format, tensors only) or a .safetensors
    file; neither needs torch. ``model.apply(variables, images, train=False)`` then gives the
    torchvision model's logits for float32 (N, H, W, 3) images already normalized with the
    weights' mean and std. No hash is required (see ``get_model(name, weights=TAG)`` for the
    published, hash-checked files).
    """
    torchvision_keys(name)
    state_dict = read_state_dict(path)
    model = build_model(name, **model_overrides)
    try:
        variables = convert_state_dict(name, state_dict, **model_overrides)
    except WeightsMismatchError as e:
        raise WeightsMismatchError(f"{path}: {e}", e.classifier_classes) from None
    except WeightsFormatError as e:
        raise type(e)(f"{path}: {e}") from None
    return model, variables
