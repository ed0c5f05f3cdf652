"""The generic stage builder: a list of StageSpec(block, depth, width, stride) -> stages.

Any block with the shared signature (``jaxconv.blocks.Block``) can be staged, including
one defined in a user's own file:

    specs = [StageSpec(MyBlock, depth=2, width=64), StageSpec(MyBlock, depth=2, width=128, stride=2)]
    x = Stage(specs[0], name="stage1")(x, train)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxconv.blocks.base import Activation, ModuleDef
from jaxconv.layers import BatchNorm, Conv, relu


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """``depth`` blocks of ``block`` with output ``width``; the first one strides by ``stride``.

    ``block`` is a Block subclass or a functools.partial of one carrying its own options,
    e.g. ``partial(MBConv, expand_ratio=6, kernel_size=5)``.
    """

    block: Callable[..., nn.Module]
    depth: int
    width: Any
    stride: int = 1

    def __post_init__(self):
        if not isinstance(self.depth, int) or self.depth < 1:
            raise ValueError(f"StageSpec.depth must be a positive int, got {self.depth!r}")
        if not isinstance(self.stride, int) or self.stride < 1:
            raise ValueError(f"StageSpec.stride must be a positive int, got {self.stride!r}")


def drop_path_schedule(specs: Sequence[StageSpec], rate: float) -> tuple[tuple[float, ...], ...]:
    """Stochastic-depth rates rising linearly with the block index, rate * i / total.

    This is torchvision's EfficientNet rule (the first block is never dropped).
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"drop_path_rate must be in [0, 1), got {rate}")
    total = sum(spec.depth for spec in specs)
    rates, index = [], 0
    for spec in specs:
        rates.append(tuple(rate * (index + i) / total for i in range(spec.depth)))
        index += spec.depth
    return tuple(rates)


class Stage(nn.Module):
    """Builds one stage: blocks named block0, block1, ... with the injected layers."""

    spec: StageSpec
    conv: ModuleDef = Conv
    norm: ModuleDef | None = BatchNorm
    act: Activation | None = relu
    drop_path: Sequence[float] = ()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        spec = self.spec
        for i in range(spec.depth):
            options = {"drop_path": self.drop_path[i]} if self.drop_path else {}
            block = spec.block(
                features=spec.width,
                stride=spec.stride if i == 0 else 1,
                conv=self.conv,
                norm=self.norm,
                act=self.act,
                name=f"block{i}",
                **options,
            )
            x = block(x, train=train)
        return x


def build_stages(
    x: jnp.ndarray,
    specs: Sequence[StageSpec],
    *,
    train: bool,
    conv: ModuleDef,
    norm: ModuleDef | None,
    act: Activation | None,
    drop_path_rate: float = 0.0,
    features: dict[str, jnp.ndarray] | None = None,
) -> jnp.ndarray:
    """Runs stages stage1, stage2, ... (call inside a compact method); records each output."""
    rates = drop_path_schedule(specs, drop_path_rate) if drop_path_rate else ((),) * len(specs)
    for i, (spec, drop_path) in enumerate(zip(specs, rates), start=1):
        x = Stage(spec, conv=conv, norm=norm, act=act, drop_path=drop_path, name=f"stage{i}")(x, train)
        if features is not None:
            features[f"stage{i}"] = x
    return x
