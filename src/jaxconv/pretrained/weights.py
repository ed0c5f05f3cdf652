"""The published weight sets: where each file is, how to check it, how to preprocess for it.

Facts come from torchvision's weights metadata (``torchvision.models.*_Weights``: URL,
transforms, ``_metrics``, ``num_params``) and, for the safetensors republications, from
timm's pretrained configs (hf_hub_id 'timm/<model>.<tag>').

Hashes: torchvision names each file ``<model>-<first 8 hex digits of its SHA-256>.pth`` and
checks that prefix when it downloads (``check_hash=True``). jaxconv stores that prefix and
checks it the same way; no full digest is stored that was not verified. The safetensors
republications carry no hash here: they load through ``load_pretrained`` (no check).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import shutil
import tempfile
import urllib.error
import urllib.request
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION_URL = "https://download.pytorch.org/models/"
TIMM_URL = "https://huggingface.co/timm/{}/resolve/main/model.safetensors"


class WeightsNotFoundError(FileNotFoundError):
    """A published weight file is not in the weights directory and could not be downloaded."""


class WeightsHashError(ValueError):
    """A weight file's SHA-256 does not match the published one."""


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """Evaluation preprocessing of a weight set, as torchvision's ``ImageClassification``.

    Resize the shorter side to ``resize`` (the longer one to ``int(resize * long / short)``)
    with ``interpolation`` (antialiased), center-crop ``crop`` x ``crop``, scale to [0, 1],
    subtract ``mean`` and divide by ``std`` per RGB channel.
    """

    resize: int
    crop: int
    interpolation: str = "bilinear"  # 'bilinear' or 'bicubic'
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


@dataclasses.dataclass(frozen=True)
class WeightSet:
    """One published set of ImageNet weights for a jaxconv model.

    ``sha256`` is the full hex digest when known, else the prefix the file name carries
    (checked as a prefix, as torchvision does). ``top1``/``top5`` are the published
    ImageNet-1k validation accuracies (%) at ``preprocessing``.
    """

    model: str
    tag: str
    url: str
    sha256: str
    preprocessing: Preprocessing
    top1: float
    top5: float
    num_params: int
    source: str = "torchvision"
    safetensors_url: str | None = None  # timm's republication of the same weights, when there is one
    note: str = ""

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["file_name"] = self.file_name
        return data


def _tv(model, tag, file, top1, top5, params, resize=256, crop=224, interpolation="bilinear", timm=None, note=""):
    prefix = file.rsplit("-", 1)[-1].removesuffix(".pth")
    return WeightSet(
        model=model,
        tag=tag,
        url=TORCHVISION_URL + file,
        sha256=prefix,
        preprocessing=Preprocessing(resize, crop, interpolation),
        top1=top1,
        top5=top5,
        num_params=params,
        safetensors_url=TIMM_URL.format(timm) if timm else None,
        note=note,
    )


_V1_TIMM = "timm's {} republishes torchvision's first upload of these weights ({})"
_ENTRIES = [
    _tv("alexnet_tv", "IMAGENET1K_V1", "alexnet-owt-7be5be79.pth", 56.522, 79.066, 61_100_840),
    _tv("vgg11", "IMAGENET1K_V1", "vgg11-8a719046.pth", 69.020, 88.628, 132_863_336, timm="vgg11.tv_in1k"),
    _tv("vgg11_bn", "IMAGENET1K_V1", "vgg11_bn-6002323d.pth", 70.370, 89.810, 132_868_840, timm="vgg11_bn.tv_in1k"),
    _tv("vgg13", "IMAGENET1K_V1", "vgg13-19584684.pth", 69.928, 89.246, 133_047_848, timm="vgg13.tv_in1k"),
    _tv("vgg13_bn", "IMAGENET1K_V1", "vgg13_bn-abd245e5.pth", 71.586, 90.374, 133_053_736, timm="vgg13_bn.tv_in1k"),
    _tv("vgg16", "IMAGENET1K_V1", "vgg16-397923af.pth", 71.592, 90.382, 138_357_544, timm="vgg16.tv_in1k"),
    _tv("vgg16_bn", "IMAGENET1K_V1", "vgg16_bn-6c64b313.pth", 73.360, 91.516, 138_365_992, timm="vgg16_bn.tv_in1k"),
    _tv("vgg19", "IMAGENET1K_V1", "vgg19-dcbb9e9d.pth", 72.376, 90.876, 143_667_240, timm="vgg19.tv_in1k"),
    _tv("vgg19_bn", "IMAGENET1K_V1", "vgg19_bn-c79401a0.pth", 74.218, 91.842, 143_678_248, timm="vgg19_bn.tv_in1k"),
    _tv(
        "googlenet_tv",
        "IMAGENET1K_V1",
        "googlenet-1378be20.pth",
        69.778,
        89.530,
        6_624_904,
        note="trained on (x - 0.5) / 0.5 inputs: loaded with transform_input=True, so it takes ImageNet-normalized "
        "images like the others; the file's auxiliary heads are dropped",
    ),
    _tv(
        "resnet18", "IMAGENET1K_V1", "resnet18-f37072fd.pth", 69.758, 89.078, 11_689_512, timm="resnet18.tv_in1k",
        note=_V1_TIMM.format("resnet18.tv_in1k", "resnet18-5c106cde.pth"),
    ),
    _tv(
        "resnet34", "IMAGENET1K_V1", "resnet34-b627a593.pth", 73.314, 91.420, 21_797_672, timm="resnet34.tv_in1k",
        note=_V1_TIMM.format("resnet34.tv_in1k", "resnet34-333f7ec4.pth"),
    ),
    _tv(
        "resnet50", "IMAGENET1K_V1", "resnet50-0676ba61.pth", 76.130, 92.862, 25_557_032, timm="resnet50.tv_in1k",
        note=_V1_TIMM.format("resnet50.tv_in1k", "resnet50-19c8e357.pth"),
    ),
    _tv("resnet50", "IMAGENET1K_V2", "resnet50-11ad3fa6.pth", 80.858, 95.434, 25_557_032, resize=232,
        timm="resnet50.tv2_in1k"),
    _tv(
        "resnet101", "IMAGENET1K_V1", "resnet101-63fe2227.pth", 77.374, 93.546, 44_549_160, timm="resnet101.tv_in1k",
        note=_V1_TIMM.format("resnet101.tv_in1k", "resnet101-5d3b4d8f.pth"),
    ),
    _tv("resnet101", "IMAGENET1K_V2", "resnet101-cd907fc2.pth", 81.886, 95.780, 44_549_160, resize=232,
        timm="resnet101.tv2_in1k"),
    _tv(
        "resnet152", "IMAGENET1K_V1", "resnet152-394f9c45.pth", 78.312, 94.046, 60_192_808, timm="resnet152.tv_in1k",
        note=_V1_TIMM.format("resnet152.tv_in1k", "resnet152-b121ed2d.pth"),
    ),
    _tv("resnet152", "IMAGENET1K_V2", "resnet152-f82ba261.pth", 82.284, 96.002, 60_192_808, resize=232,
        timm="resnet152.tv2_in1k"),
    _tv("efficientnet_b0", "IMAGENET1K_V1", "efficientnet_b0_rwightman-7f5810bc.pth", 77.692, 93.532, 5_288_548,
        resize=256, crop=224, interpolation="bicubic"),
    _tv("efficientnet_b1", "IMAGENET1K_V1", "efficientnet_b1_rwightman-bac287d4.pth", 78.642, 94.186, 7_794_184,
        resize=256, crop=240, interpolation="bicubic"),
    _tv("efficientnet_b1", "IMAGENET1K_V2", "efficientnet_b1-c27df63c.pth", 79.838, 94.934, 7_794_184,
        resize=255, crop=240, interpolation="bilinear"),
    _tv("efficientnet_b2", "IMAGENET1K_V1", "efficientnet_b2_rwightman-c35c1473.pth", 80.608, 95.310, 9_109_994,
        resize=288, crop=288, interpolation="bicubic"),
    _tv("efficientnet_b3", "IMAGENET1K_V1", "efficientnet_b3_rwightman-b3899882.pth", 82.008, 96.054, 12_233_232,
        resize=320, crop=300, interpolation="bicubic"),
    _tv("efficientnet_b4", "IMAGENET1K_V1", "efficientnet_b4_rwightman-23ab8bcd.pth", 83.384, 96.594, 19_341_616,
        resize=384, crop=380, interpolation="bicubic"),
    _tv("efficientnet_b5", "IMAGENET1K_V1", "efficientnet_b5_lukemelas-1a07897c.pth", 83.444, 96.628, 30_389_784,
        resize=456, crop=456, interpolation="bicubic"),
    _tv("efficientnet_b6", "IMAGENET1K_V1", "efficientnet_b6_lukemelas-24a108a5.pth", 84.008, 96.916, 43_040_704,
        resize=528, crop=528, interpolation="bicubic"),
    _tv("efficientnet_b7", "IMAGENET1K_V1", "efficientnet_b7_lukemelas-c5b4e57e.pth", 84.122, 96.908, 66_347_960,
        resize=600, crop=600, interpolation="bicubic"),
]

# model -> tag -> WeightSet; the first tag of a model is its default (as torchvision's DEFAULT
# for single-tag models; for ResNet-50/101/152 and EfficientNet-B1 V1 comes first, V2 is the better one).
WEIGHTS: dict[str, dict[str, WeightSet]] = {}
for _entry in _ENTRIES:
    WEIGHTS.setdefault(_entry.model, {})[_entry.tag] = _entry


def weights_info(name: str, tag: str | None = None) -> WeightSet:
    """The published weight set ``tag`` of model ``name`` (default: its first one)."""
    if name not in WEIGHTS:
        from jaxconv.registry import model_info

        model_info(name)  # an unknown model name raises UnknownModelError with suggestions
        raise KeyError(f"no published weights for {name!r}; models with weights: {', '.join(WEIGHTS)}")
    tags = WEIGHTS[name]
    if tag is None:
        return next(iter(tags.values()))
    if tag not in tags:
        raise KeyError(f"{name} has no weights {tag!r}; its weights: {', '.join(tags)}")
    return tags[tag]


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
        f"; without torch, timm's safetensors copy of torchvision's weights, {weight_set.safetensors_url}, "
        f"loads with jaxconv.load_pretrained({name!r}, PATH)"
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
