"""`jaxconv summary`: a per-layer table of shapes, parameters, MACs, activations and receptive fields."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxconv.analysis.trace import own_parameter_count, parameter_count, trace_model
from jaxconv.models import check_contract, get_model, list_models, model_info

FORMATS = ("table", "md", "csv", "json")
DTYPES = {"float32": (jnp.float32, 4), "bfloat16": (jnp.bfloat16, 2), "float16": (jnp.float16, 2)}
PARAM_BYTES = 4  # parameters, gradients and optimizer state stay float32


@dataclasses.dataclass(frozen=True)
class LayerSummary:
    """One leaf layer. ``macs`` and ``activations`` are per image; ``output_shape`` has the batch."""

    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    macs: int
    activations: int
    receptive_field: int | tuple[int, int] | None
    jump: int | float | tuple | None


@dataclasses.dataclass(frozen=True)
class ModelSummary:
    """Totals and rows for one model at one input size.

    ``params`` are trainable parameters (BatchNorm running statistics are state, not
    parameters). ``macs`` are the multiply-accumulates of convolutions and dense layers per
    image (what torchvision reports as "GFLOPS"). ``activations`` counts the values of the
    input and of every layer's output per image, as the lectures' VGG16 table does.
    """

    model: str
    input_shape: tuple[int, ...]
    dtype: str
    layers: tuple[LayerSummary, ...]
    params: int
    macs: int
    activations: int
    bytes_per_activation: int

    @property
    def batch_size(self) -> int:
        return self.input_shape[0]

    @property
    def forward_activation_bytes(self) -> int:
        """Bytes of all activations of one image's forward pass."""
        return self.activations * self.bytes_per_activation

    @property
    def training_memory_bytes(self) -> int:
        """Estimate for one training step on the whole batch: the forward activations kept for
        the backward pass, plus parameters x 3 (weights, gradients, momentum) in float32."""
        return self.batch_size * self.forward_activation_bytes + 3 * self.params * PARAM_BYTES

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "input_shape": list(self.input_shape),
            "batch_size": self.batch_size,
            "dtype": self.dtype,
            "params": self.params,
            "macs": self.macs,
            "activations": self.activations,
            "forward_activation_bytes": self.forward_activation_bytes,
            "training_memory_bytes": self.training_memory_bytes,
            "layers": [
                {**dataclasses.asdict(layer), "output_shape": list(layer.output_shape)} for layer in self.layers
            ],
        }


def _tidy(value: float) -> int | float:
    return int(value) if float(value).is_integer() else round(float(value), 4)


def _pair_or_int(pair: tuple[float, float] | None):
    if pair is None:
        return None
    h, w = (_tidy(v) for v in pair)
    return h if h == w else (h, w)


def summary(
    model: str | nn.Module,
    *,
    image_size: int | tuple[int, int] | None = None,
    batch_size: int = 1,
    in_channels: int | None = None,
    num_classes: int | None = None,
    dtype: str = "float32",
    **overrides: Any,
) -> ModelSummary:
    """Analyses ``model`` (a registered name or a Module) at the given input size, from shapes only.

    Defaults come from the registry for a name (image size, channels, classes); for a Module, from the
    registered models of its class when they agree (AlexNet's 227), else ``image_size`` 224 and
    ``in_channels`` 3. Raises ValueError for
    an unknown model or format and GeometryError for an image size the network cannot take.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch size must be a positive integer, got {batch_size!r}")
    registered = model if isinstance(model, str) else None
    if isinstance(model, str):
        info = model_info(model)
        name = model
        image_size = info.image_size if image_size is None else image_size
        in_channels = info.in_channels if in_channels is None else in_channels
        model = get_model(name, num_classes=num_classes, **overrides)
    elif isinstance(model, nn.Module):
        if overrides or num_classes is not None:
            raise ValueError("num_classes and overrides apply to registered names; configure the Module itself")
        name = type(model).__name__
        if image_size is None or in_channels is None:  # the registered models of its class, when they agree
            infos = [info for info in map(model_info, list_models()) if info.module_class is type(model)]
            sizes = {info.image_size for info in infos}
            channels = {info.in_channels for info in infos}
            if image_size is None:
                image_size = sizes.pop() if len(sizes) == 1 else 224
            if in_channels is None:
                in_channels = channels.pop() if len(channels) == 1 else 3
    else:
        raise TypeError(f"model must be a registered model's name (a str, see jaxconv.list_models()) or a Flax "
                        f"Module, got {type(model).__name__} {model!r}")
    sizes = (image_size, image_size) if isinstance(image_size, int) else image_size
    if (not isinstance(sizes, (tuple, list)) or len(sizes) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in sizes)):
        raise ValueError(f"image_size must be an int or an (height, width) pair of ints, got {image_size!r}")
    height, width = sizes
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {image_size!r}")
    for key, value in (("batch_size", batch_size), ("in_channels", in_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive int, got {value!r}")
    compute_dtype, nbytes = DTYPES[dtype]
    input_shape = (batch_size, height, width, in_channels)
    if registered is not None:  # a user's model: what jaxconv needs of it, in one line (built-ins pass at once)
        check_contract(registered, model, input_shape, dtype=compute_dtype)
    trace = trace_model(model, input_shape, compute_dtype)

    layers = [LayerSummary("input", "Input", input_shape, 0, 0, height * width * in_channels, 1, 1)]
    counted = set()  # a module called twice (shared weights) shows its parameters on its first row
    for call in trace.layers:
        if call.identity or not call.output_shapes:
            continue
        per_image = sum(math.prod(s) for s in call.output_shapes) // batch_size
        layers.append(
            LayerSummary(
                name=call.path,
                kind=call.kind if call.runs == 1 else f"{call.kind} x{call.runs}",
                output_shape=call.output_shapes[0],
                params=0 if call.scope in counted else own_parameter_count(trace.params, call.scope),
                macs=call.macs // batch_size,
                activations=per_image * call.runs,
                receptive_field=_pair_or_int(call.field),
                jump=_pair_or_int(call.jump),
            )
        )
        counted.add(call.scope)
    total_macs = sum(c.macs for c in trace.layers) // batch_size
    return ModelSummary(
        model=name,
        input_shape=input_shape,
        dtype=dtype,
        layers=tuple(layers),
        params=parameter_count(trace.params),
        macs=total_macs,
        activations=sum(layer.activations for layer in layers),
        bytes_per_activation=nbytes,
    )


def human(value: float, unit: str = "") -> str:
    """1234567 -> '1.23M'; keeps three significant digits."""
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}{unit}"
    return f"{value:.3g}{unit}" if isinstance(value, float) else f"{value}{unit}"


def human_bytes(value: float) -> str:
    for scale, suffix in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if value >= scale:
            return f"{value / scale:.1f} {suffix}"
    return f"{int(value)} B"


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def _rows(s: ModelSummary, exact: bool) -> tuple[list[str], list[list[str]]]:
    header = ["layer", "kind", "output", "params", "MACs", "activations", "RF", "jump"]
    rows = []
    for layer in s.layers:
        rows.append(
            [
                layer.name,
                layer.kind,
                _shape_text(layer.output_shape),
                f"{layer.params:,}" if not exact else str(layer.params),
                (human(layer.macs) if layer.macs else "-") if not exact else str(layer.macs),
                human(layer.activations) if not exact else str(layer.activations),
                "-" if layer.receptive_field is None else str(layer.receptive_field),
                "-" if layer.jump is None else str(layer.jump),
            ]
        )
    return header, rows


def _totals(s: ModelSummary) -> list[tuple[str, str]]:
    return [
        ("input", f"{_shape_text(s.input_shape)} ({s.dtype})"),
        ("parameters", f"{s.params:,} ({human(s.params)})"),
        ("MACs per image", f"{s.macs:,} ({human(s.macs)})"),
        ("activations per image", f"{s.activations:,} ({human(s.activations)})"),
        ("forward activation memory per image", human_bytes(s.forward_activation_bytes)),
        (
            f"training memory estimate (batch {s.batch_size})",
            f"{human_bytes(s.training_memory_bytes)} = activations kept for backward + parameters x 3",
        ),
    ]


def format_summary(s: ModelSummary, fmt: str = "table") -> str:
    """Renders a summary as an aligned text table, Markdown, CSV or JSON."""
    if not isinstance(s, ModelSummary):
        raise TypeError(f"format_summary takes what summary() returns, e.g. format_summary(summary({s!r})), "
                        f"got {type(s).__name__}")
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "json":
        return json.dumps(s.to_dict(), indent=2)
    if fmt == "csv":
        header, rows = _rows(s, exact=True)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        return out.getvalue()
    header, rows = _rows(s, exact=False)
    if fmt == "md":
        lines = [f"### {s.model}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines += ["", "| total | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in _totals(s)]
        return "\n".join(lines) + "\n"
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    right = {3, 4, 5, 6, 7}

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    rule = "-" * len(line(header))
    lines = [f"{s.model}", rule, line(header), rule] + [line(r) for r in rows] + [rule]
    key_width = max(len(k) for k, _ in _totals(s))
    lines += [f"{k.ljust(key_width)}  {v}" for k, v in _totals(s)]
    return "\n".join(lines) + "\n"
