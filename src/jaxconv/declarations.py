"""What is known about a model besides how to build it: the records a family's file declares.

A family's file (``jaxconv/archs/<family>.py``) registers each variant with everything known
about it — published figures (``Published``), published weight sets (``WeightSet`` with their
evaluation ``Preprocessing``), and how torchvision's state-dict keys map onto its modules
(``TorchvisionKeys``) — in the spirit of timm's ``default_cfgs`` and torchvision's weights
enums. The tests, the README's model table, ``jaxconv compare`` and the parity-fixture script
all read these declarations; nothing else stores the figures.

This module imports nothing from the rest of jaxconv.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION_URL = "https://download.pytorch.org/models/"
TIMM_URL = "https://huggingface.co/timm/{}/resolve/main/model.safetensors"

TORCHVISION = "torchvision weights metadata (single model, centre crop at the weights' evaluation size, ImageNet val)"
TORCHVISION_COUNT = "torchvision weights metadata"
PAPER_COUNT = "counted from the paper's layer list"
ILSVRC_SOURCE = "ILSVRC classification winners as charted in the lectures (ensembles, test set)"


@dataclasses.dataclass(frozen=True)
class Published:
    """What others published for one model.

    ``params`` and ``gmacs`` (multiply-accumulates, torchvision's "GFLOPS") at ``image_size``;
    ``top1``/``top5`` are single-model ImageNet validation accuracies in percent;
    ``ilsvrc_top5_error`` the competition entry's top-5 error in percent (``ilsvrc_entry``
    names it and its year). None where nothing was published.
    """

    params: int | None = None
    gmacs: float | None = None
    top1: float | None = None
    top5: float | None = None
    accuracy_source: str | None = None
    count_source: str | None = None
    ilsvrc_entry: str | None = None
    ilsvrc_top5_error: float | None = None
    image_size: int = 224  # the evaluation size the accuracy and GMACs were published at

    @property
    def from_torchvision(self) -> bool:
        return self.count_source == TORCHVISION_COUNT


def torchvision_figures(params: int, gmacs: float, **extra: Any) -> Published:
    """The counts of torchvision's weights metadata (``num_params``, ``_ops``); ``register`` adds
    the accuracy (``_metrics``) of the model's first weight set."""
    return Published(params, gmacs, None, None, TORCHVISION, TORCHVISION_COUNT, **extra)


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
    ImageNet-1k validation accuracies (%) at ``preprocessing``. ``model`` and ``num_params``
    are filled in by ``register``.
    """

    tag: str
    url: str
    sha256: str
    preprocessing: Preprocessing
    top1: float
    top5: float
    num_params: int | None = None  # filled in by ``register`` from the model's published count
    model: str = ""
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


def torchvision_weights(tag: str, file: str, top1: float, top5: float, *, resize: int = 256,
                        crop: int = 224, interpolation: str = "bilinear", timm: str | None = None,
                        note: str = "", mean: tuple[float, float, float] = IMAGENET_MEAN,
                        std: tuple[float, float, float] = IMAGENET_STD) -> WeightSet:
    """A torchvision weight file ``<model>-<8 hex digits of its SHA-256>.pth`` and its metadata;
    ``timm`` names timm's safetensors republication ('resnet50.tv2_in1k') when there is one;
    ``mean``/``std`` where the weights were trained with other than ImageNet's (EfficientNetV2-L's 0.5)."""
    return WeightSet(
        tag=tag,
        url=TORCHVISION_URL + file,
        sha256=file.rsplit("-", 1)[-1].removesuffix(".pth"),
        preprocessing=Preprocessing(resize, crop, interpolation, mean, std),
        top1=top1,
        top5=top5,
        safetensors_url=TIMM_URL.format(timm) if timm else None,
        note=note,
    )


@dataclasses.dataclass(frozen=True)
class TorchvisionKeys:
    """How a torchvision state dict's keys map onto a jaxconv model's variables.

    ``prefix(module_path, params)`` gives the torchvision module prefix of a jaxconv module
    path (('stage1', 'block0', 'conv1') -> 'layer1.0.conv1'; ``params`` is the model's
    parameter tree, for families whose torchvision indices depend on it); it raises
    ValueError for a module torchvision's files do not have. ``flattened_input`` names the
    Dense layer whose input is a flattened (H, W, C) map (torchvision flattens (C, H, W)).
    ``ignored`` are patterns of file entries dropped on purpose where the model has no such
    entry (Inception v3's AuxLogits load into its auxiliary head and are dropped without it),
    ``load_options`` the model options the published weights need, ``builder`` torchvision's
    builder when its name differs.
    ``channel_parameters`` names jaxconv modules (a ``LayerScale``) whose one (C,) parameter
    torchvision holds as a (C, 1, 1) tensor of the enclosing module, under the same name
    (ConvNeXt's ``CNBlock.layer_scale``): key ``prefix(enclosing path) + '.' + name``.
    ``published_key`` turns a key of torchvision's model as built today into the published
    file's, where they differ (DenseNet's files say 'norm.1' where its modules now say
    'norm1'); the converter applies it to every file's keys, so both forms load.

    For ``scripts/make_parity_fixtures.py``: ``builder_options`` build torchvision's model as
    its published file was saved, ``parity_options`` as jaxconv's twin runs (default: the
    same); ``parity_size`` is set on the one model per family whose logits the tests compare
    with torchvision's, at that input size.
    """

    prefix: Callable[[tuple[str, ...], Mapping], str]
    flattened_input: str | None = None
    ignored: tuple[str, ...] = ()
    load_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    builder: str | None = None
    channel_parameters: tuple[str, ...] = ()
    published_key: Callable[[str], str] | None = None
    builder_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    parity_options: Mapping[str, Any] | None = None
    parity_size: int | None = None


def gmacs_figure(macs: float) -> float:
    """MACs in G: three decimals, or three significant digits below 0.1 G (LeNet-5's 0.000417, not 0.000)."""
    gmacs = macs / 1e9
    return round(gmacs, 3) if gmacs >= 0.1 else float(f"{gmacs:.3g}")


def gmacs_text(gmacs: float) -> str:
    return f"{gmacs:.3f}" if gmacs >= 0.1 or gmacs == 0 else f"{gmacs:.3g}"
