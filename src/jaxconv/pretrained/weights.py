"""The published weight sets: where each file is, how to check it, how to preprocess for it.

Each family's file declares its models' weight sets (``register(..., weights=[...])``, records of
``jaxconv.declarations``); this module finds, downloads and verifies them. Facts come from
torchvision's weights metadata (``torchvision.models.*_Weights``: URL,
transforms, ``_metrics``, ``num_params``) and, for the safetensors republications, from
timm's pretrained configs (hf_hub_id 'timm/<model>.<tag>').

Hashes: torchvision names each file ``<model>-<first 8 hex digits of its SHA-256>.pth`` and
checks that prefix when it downloads (``check_hash=True``). jaxconv stores that prefix and
checks it the same way; no full digest is stored that was not verified. The safetensors
republications carry no hash here: they load through ``load_pretrained`` (no check).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import shutil
import tempfile
import urllib.error
import urllib.request
from typing import Any

import jaxconv.archs  # noqa: F401 -- registers the built-in models, whose declarations hold the weights
from jaxconv.declarations import Preprocessing, WeightSet
from jaxconv.errors import UserError
from jaxconv.registry import list_models, model_info

__all__ = ["WEIGHTS", "Preprocessing", "UnknownWeightsError", "WeightSet", "fetch", "load_published", "weight_sets", "weights_info"]


class WeightsNotFoundError(UserError, FileNotFoundError):
    """A published weight file is not in the weights directory and could not be downloaded."""


class WeightsHashError(UserError, ValueError):
    """A weight file's SHA-256 does not match the published one."""


class UnknownWeightsError(UserError, ValueError, KeyError):
    """A model without published weights, or a tag it does not have (a ValueError, as for an unknown model;
    a KeyError too, for code that looked tags up as keys)."""

    def __str__(self) -> str:  # KeyError's would quote the whole message
        return str(self.args[0]) if self.args else ""


def published_weights() -> dict[str, dict[str, WeightSet]]:
    """model -> tag -> WeightSet, from every built-in model's declaration.

    The first tag of a model is its default (as torchvision's DEFAULT for single-tag models; for
    ResNet-50/101/152 and EfficientNet-B1, V1 comes first and V2 is the better one).
    """
    return {name: {w.tag: w for w in info.weights} for name in list_models()
            if (info := model_info(name)).weights and info.builtin}


WEIGHTS: dict[str, dict[str, WeightSet]] = published_weights()  # the built-in models' (which cannot change)


def weight_sets(name: str) -> dict[str, WeightSet]:
    """tag -> WeightSet of model ``name``: a built-in one's, or a user model's as registered now (empty: none)."""
    if name in WEIGHTS:
        return WEIGHTS[name]
    return {w.tag: w for w in model_info(name).weights}  # an unknown name raises UnknownModelError


def weights_info(name: str, tag: str | None = None) -> WeightSet:
    """The published weight set ``tag`` of model ``name`` (default: its first one)."""
    tags = weight_sets(name)
    if not tags:
        raise UnknownWeightsError(f"no published weights for {name!r}; models with weights: {', '.join(WEIGHTS)}")
    if tag is None:
        return next(iter(tags.values()))
    if tag not in tags:
        raise UnknownWeightsError(f"{name} has no weights {tag!r}; its weights: {', '.join(tags)}")
    return tags[tag]


def weight_set_of_file(name: str, path: str | os.PathLike, tag: str | None = None) -> tuple[WeightSet, str]:
    """The published weight set whose preprocessing a weights file of model ``name`` takes, and how it was
    chosen: ``tag`` when given ('given'), the set whose file has this name ('file name': torchvision's
    resnet50-11ad3fa6.pth is IMAGENET1K_V2), else the model's first ('assumed')."""
    if tag is not None:
        return weights_info(name, tag), "given"
    by_name = next((w for w in weight_sets(name).values() if w.file_name == pathlib.Path(path).name), None)
    if by_name is not None:
        return by_name, "file name"
    return weights_info(name), "assumed"


def weights_dir(directory: str | os.PathLike | None = None) -> pathlib.Path:
    """Where published weight files live: ``directory``, else $JAXCONV_WEIGHTS_DIR, else ~/.cache/jaxconv/weights."""
    if directory is not None:
        return pathlib.Path(directory).expanduser()
    env = os.environ.get("JAXCONV_WEIGHTS_DIR")
    return pathlib.Path(env).expanduser() if env else pathlib.Path.home() / ".cache" / "jaxconv" / "weights"


def sha256_of(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: str | os.PathLike, weight_set: WeightSet) -> None:
    """Raises WeightsHashError when the file's SHA-256 does not match (or start with) the published one."""
    actual = sha256_of(path)
    if not actual.startswith(weight_set.sha256.lower()):
        kind = "SHA-256" if len(weight_set.sha256) == 64 else "SHA-256 prefix"
        raise WeightsHashError(
            f"{path}: SHA-256 {actual} does not match the published {kind} {weight_set.sha256} of "
            f"{weight_set.model} {weight_set.tag} ({weight_set.url}); the file is corrupt, truncated or "
            "another file: delete it and download it again"
        )


def _download(url: str, destination: pathlib.Path, weight_set: WeightSet) -> None:
    """Downloads to a temporary file next to ``destination``, verifies it, then renames it into place."""
    created = [p for p in (destination.parent, *destination.parent.parents) if not p.exists()]
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=destination.name + ".", suffix=".partial", dir=destination.parent)
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            shutil.copyfileobj(response, out)
        verify_file(temporary, weight_set)
        os.replace(temporary, destination)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
        if not destination.exists():  # a failed download leaves no folder it made behind
            for folder in created:
                with contextlib.suppress(OSError):
                    folder.rmdir()


def fetch(name: str, tag: str, directory: str | os.PathLike | None = None, download: bool = True) -> pathlib.Path:
    """The verified local path of published weights ``name``/``tag``, downloading them if needed.

    Looks for the torchvision file name in ``weights_dir(directory)``; a file there with the
    wrong hash is refused (WeightsHashError). A missing file is downloaded when ``download``
    and the network allow; otherwise WeightsNotFoundError says which URL to fetch and where
    to put it.
    """
    weight_set = weights_info(name, tag)
    folder = weights_dir(directory)
    path = folder / weight_set.file_name
    if path.is_file():
        verify_file(path, weight_set)
        return path
    reason = "downloading is off"
    if download:
        try:
            _download(weight_set.url, path, weight_set)
            return path
        except (urllib.error.URLError, OSError) as e:
            reason = f"the download failed: {getattr(e, 'reason', e)}"
    alternative = (
        f"; timm's safetensors copy of torchvision's weights, {weight_set.safetensors_url}, "
        f"loads too, with jaxconv.load_pretrained({name!r}, PATH)"
        if weight_set.safetensors_url
        else ""
    )
    raise WeightsNotFoundError(
        f"{name} {tag} weights are not in {folder} and {reason}: download {weight_set.url} and save it as "
        f"{path} (or point weights_dir / $JAXCONV_WEIGHTS_DIR at the folder that holds {weight_set.file_name})"
        f"{alternative}"
    )


def load_published(
    name: str,
    tag: str,
    *,
    weights_dir: str | os.PathLike | None = None,
    download: bool = True,
    num_classes: int | None = None,
    **model_overrides: Any,
):
    """(model, variables) of ``name`` with its published weights ``tag``, hash-checked (see ``fetch``)."""
    from jaxconv.pretrained.convert import load_pretrained

    path = fetch(name, tag, weights_dir, download)
    if num_classes is not None:
        model_overrides["num_classes"] = num_classes
    return load_pretrained(name, path, **model_overrides)
