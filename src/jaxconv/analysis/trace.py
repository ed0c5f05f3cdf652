"""Per-layer statistics from one abstract trace of a model: no array is ever computed.

The model is traced with ``jax.make_jaxpr`` on ShapeDtypeStructs. A Flax method
interceptor records every module call (its path, class and output shapes), runs it under a
named scope, and marks its outputs with ``checkpoint_name`` so that the module's outputs can
be found in the jaxpr. Walking the jaxpr then gives:

* MACs: each ``conv_general_dilated`` and ``dot_general`` contributes output elements x
  contraction length, attributed to the innermost module whose scope it runs in;
* receptive field and jump: propagated through every primitive from the input image,
  r_out = r_in + (k - 1) * d * j_in and j_out = j_in * s for each window op (conv,
  pooling, strided slice); where branches meet (add, concatenate, multiply) the largest
  field wins; an op that collapses the spatial axes (flatten into a dense layer, global
  pooling) acts as a window as large as the whole map.

Because it reads the jaxpr, it needs no knowledge of the blocks: a user's own block is
analysed exactly like the built-in ones.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import numpy as np
from jax.ad_checkpoint import checkpoint_name
from jax.extend import core as jex_core

from jaxconv.layers.conv import reference_convolutions

_MARK = "jaxconv_layer"
_MARK_RE = re.compile(rf"{_MARK}(\d+)")


class _Geometry(NamedTuple):
    """Where a value's spatial axes are and what part of the input image each position sees."""

    axes: tuple[int, int] | None  # the (H, W) axes, or None once they have been collapsed
    field: tuple[float, float]  # receptive field (H, W) in input pixels
    jump: tuple[float, float]  # input pixels between neighbouring positions


@dataclasses.dataclass
class ModuleCall:
    """One module call seen by the interceptor."""

    index: int
    path: str
    scope: tuple[str, ...]
    kind: str
    output_shapes: list[tuple[int, ...]]
    leaf: bool = True
    identity: bool = False  # returned its input unchanged (dropout in eval mode, ...)
    macs: int = 0
    field: tuple[float, float] | None = None
    jump: tuple[float, float] | None = None


class _Recorder:
    """A flax method interceptor that records module calls and marks their outputs."""

    def __init__(self):
        self.calls: list[ModuleCall] = []
        self._stack: list[ModuleCall] = []

    def __call__(self, next_fun, args, kwargs, context):
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        module = context.module
        scope = tuple(module.scope.path) if module.scope is not None else ()
        kind = type(module).__name__
        call = ModuleCall(len(self.calls), "/".join(scope) or kind, scope, kind, [])
        self.calls.append(call)
        if self._stack:
            self._stack[-1].leaf = False
        self._stack.append(call)
        try:
            with jax.named_scope(f"{_MARK}{call.index}"):
                out = next_fun(*args, **kwargs)
        finally:
            self._stack.pop()
        call.identity = bool(args) and out is args[0]
        leaves = [leaf for leaf in jax.tree_util.tree_leaves(out) if isinstance(leaf, jax.Array)]
        call.output_shapes = [tuple(leaf.shape) for leaf in leaves]
        return jax.tree_util.tree_map(
            lambda leaf: checkpoint_name(leaf, f"{_MARK}{call.index}") if isinstance(leaf, jax.Array) else leaf, out
        )


# Primitives that call a sub-jaxpr on their own operands (unlike reduce_window, scan or cond,
# whose sub-jaxprs are per-element reducers or loop bodies).
_CALLS = ("jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
          "custom_vjp_call_jaxpr", "checkpoint", "remat", "remat2", "named_call")


def _sub_jaxprs(eqn) -> list:
    """Sub-jaxprs of a call-like equation whose inputs and outputs line up with the equation's."""
    if eqn.primitive.name not in _CALLS:
        return []
    found = []
    for value in eqn.params.values():
        jaxpr = value.jaxpr if isinstance(value, jex_core.ClosedJaxpr) else value
        if isinstance(jaxpr, jex_core.Jaxpr):
            if len(jaxpr.invars) == len(eqn.invars) and len(jaxpr.outvars) == len(eqn.outvars):
                found.append(jaxpr)
    return found


def _collapse(geometry: _Geometry, shape: Sequence[int], axes: Sequence[int]) -> tuple[list, list]:
    """Field and jump after a window that spans the whole extent of the given spatial axes."""
    field, jump = list(geometry.field), list(geometry.jump)
    for i, axis in enumerate(geometry.axes or ()):
        if axis in axes:
            extent = shape[axis]
            field[i] += (extent - 1) * jump[i]
            jump[i] *= extent
    return field, jump


def _window(geometry: _Geometry, window: Sequence[int], strides: Sequence[int], dilation: Sequence[int] | None):
    field, jump = list(geometry.field), list(geometry.jump)
    for i, axis in enumerate(geometry.axes):
        d = dilation[axis] if dilation is not None else 1
        field[i] += (window[axis] - 1) * d * jump[i]
        jump[i] *= strides[axis]
    return tuple(field), tuple(jump)


class _Walker:
    """Propagates geometry and counts MACs through a jaxpr and its sub-jaxprs."""

    def __init__(self, calls: list[ModuleCall]):
        self.calls = calls
        self.unattributed_macs = 0

    def run(self, jaxpr, env: dict, owner: int | None) -> None:
        for eqn in jaxpr.eqns:
            found = _MARK_RE.findall(str(eqn.source_info.name_stack))
            here = int(found[-1]) if found else owner
            inputs = [None if isinstance(v, jex_core.Literal) else env.get(v) for v in eqn.invars]
            if any(g is not None for g in inputs):  # initialisers do not depend on the image
                self._count_macs(eqn, here)
            subs = _sub_jaxprs(eqn)
            if subs:
                inner_env = dict(zip(subs[0].invars, inputs))
                self.run(subs[0], inner_env, here)
                outputs = [inner_env.get(v) if not isinstance(v, jex_core.Literal) else None for v in subs[0].outvars]
            else:
                outputs = self._propagate(eqn, inputs)
            for var, geometry in zip(eqn.outvars, outputs):
                env[var] = geometry
            if eqn.primitive.name == "name":
                match = _MARK_RE.fullmatch(str(eqn.params.get("name", "")))
                if match and inputs[0] is not None:
                    call = self.calls[int(match.group(1))]
                    if call.field is None:  # the first output of a module call
                        call.field, call.jump = inputs[0].field, inputs[0].jump

    def _count_macs(self, eqn, owner: int | None) -> None:
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            rhs_shape = eqn.invars[1].aval.shape
            rhs_spec = eqn.params["dimension_numbers"].rhs_spec
            per_output = rhs_shape[rhs_spec[1]] * math.prod(rhs_shape[a] for a in rhs_spec[2:])
            macs = math.prod(eqn.outvars[0].aval.shape) * per_output
        elif name == "dot_general":
            (lhs_contract, _), _ = eqn.params["dimension_numbers"]
            lhs_shape = eqn.invars[0].aval.shape
            macs = math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs_shape[a] for a in lhs_contract)
        else:
            return
        if owner is None:
            self.unattributed_macs += macs
        else:
            self.calls[owner].macs += macs

    def _propagate(self, eqn, inputs: list) -> list:
        name = eqn.primitive.name
        params = eqn.params
        outs = eqn.outvars
        first = inputs[0] if inputs else None
        in_shape = eqn.invars[0].aval.shape if eqn.invars and hasattr(eqn.invars[0].aval, "shape") else ()

        if name == "conv_general_dilated":
            if first is None:
                return [None]
            if first.axes is None:
                return [first]
            dims = params["dimension_numbers"]
            lhs_spatial, out_spatial = list(dims.lhs_spec[2:]), list(dims.out_spec[2:])
            rhs_shape = eqn.invars[1].aval.shape
            field, jump, axes = [], [], []
            for i, axis in enumerate(first.axes):
                if axis not in lhs_spatial:
                    field_c, jump_c = _collapse(first, in_shape, first.axes)
                    return [_Geometry(None, tuple(field_c), tuple(jump_c))]
                k = lhs_spatial.index(axis)
                effective = (rhs_shape[dims.rhs_spec[2 + k]] - 1) * params["rhs_dilation"][k] + 1
                field.append(first.field[i] + (effective - 1) * first.jump[i])
                jump.append(first.jump[i] * params["window_strides"][k] / params["lhs_dilation"][k])
                axes.append(out_spatial[k])
            return [_Geometry(tuple(axes), tuple(field), tuple(jump))]

        if name.startswith("reduce_window"):
            count = len(outs)
            results = []
            for geometry in inputs[:count]:
                if geometry is None or geometry.axes is None:
                    results.append(geometry)
                    continue
                field, jump = _window(
                    geometry, params["window_dimensions"], params["window_strides"], params.get("window_dilation")
                )
                results.append(_Geometry(geometry.axes, field, jump))
            return results

        if "axes" in params and name.startswith(("reduce_", "argm")) and first is not None:
            reduced = tuple(params["axes"])
            if first.axes is None:
                return [first] * len(outs)
            field, jump = _collapse(first, in_shape, reduced)
            if any(a in reduced for a in first.axes):
                return [_Geometry(None, tuple(field), tuple(jump))] * len(outs)
            shift = tuple(a - sum(r < a for r in reduced) for a in first.axes)
            return [_Geometry(shift, first.field, first.jump)] * len(outs)

        if name in ("reshape", "squeeze") and first is not None:
            if first.axes is None:
                return [first]
            out_shape = outs[0].aval.shape
            h, w = first.axes
            if name == "reshape" and tuple(out_shape[: w + 1]) == tuple(in_shape[: w + 1]):
                return [first]
            if name == "squeeze":
                dropped = tuple(params["dimensions"])
                if h not in dropped and w not in dropped:
                    shift = tuple(a - sum(d < a for d in dropped) for a in first.axes)
                    return [_Geometry(shift, first.field, first.jump)]
            field, jump = _collapse(first, in_shape, first.axes)
            return [_Geometry(None, tuple(field), tuple(jump))]

        if name == "broadcast_in_dim" and first is not None:
            if first.axes is None:
                return [first]
            mapping = params["broadcast_dimensions"]
            return [_Geometry(tuple(mapping[a] for a in first.axes), first.field, first.jump)]

        if name == "transpose" and first is not None:
            if first.axes is None:
                return [first]
            perm = list(params["permutation"])
            return [_Geometry(tuple(perm.index(a) for a in first.axes), first.field, first.jump)]

        if name == "slice" and first is not None and first.axes is not None and params.get("strides"):
            strides = params["strides"]
            jump = tuple(j * strides[a] for j, a in zip(first.jump, first.axes))
            return [_Geometry(first.axes, first.field, jump)]

        if name == "pad" and first is not None and first.axes is not None:
            config = params["padding_config"]
            jump = tuple(j / (config[a][2] + 1) for j, a in zip(first.jump, first.axes))
            return [_Geometry(first.axes, first.field, jump)]

        if name == "dot_general":
            (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = params["dimension_numbers"]
            known = [(g, contract, batch, v) for g, contract, batch, v in
                     zip(inputs[:2], (lhs_contract, rhs_contract), (lhs_batch, rhs_batch), eqn.invars[:2]) if g]
            if not known:
                return [None]
            results = []
            for g, contract, batch, var in known:
                if g.axes is None or any(a in contract for a in g.axes):
                    field, jump = _collapse(g, var.aval.shape, contract) if g.axes else (g.field, g.jump)
                    results.append(_Geometry(None, tuple(field), tuple(jump)))
                elif var is eqn.invars[0]:
                    free = [a for a in range(var.aval.ndim) if a not in contract and a not in batch]
                    order = list(batch) + free
                    results.append(_Geometry(tuple(order.index(a) for a in g.axes), g.field, g.jump))
                else:
                    field, jump = _collapse(g, var.aval.shape, g.axes)
                    results.append(_Geometry(None, tuple(field), tuple(jump)))
            return [_merge(results, outs[0].aval.ndim)]

        known = [(g, v) for g, v in zip(inputs, eqn.invars) if g is not None]
        if not known:
            return [None] * len(outs)
        results = []
        for out in outs:
            out_ndim = getattr(out.aval, "ndim", 0)
            candidates = []
            for g, var in known:
                if g.axes is not None and var.aval.ndim != out_ndim:
                    field, jump = _collapse(g, var.aval.shape, g.axes)
                    g = _Geometry(None, tuple(field), tuple(jump))
                candidates.append(g)
            results.append(_merge(candidates, out_ndim))
        return results


def _merge(geometries: list[_Geometry], ndim: int) -> _Geometry:
    """Where values meet, each output position sees the union of what its inputs saw."""
    spatial = [g for g in geometries if g.axes is not None]
    field = tuple(max(g.field[i] for g in geometries) for i in range(2))
    if spatial:
        jump = tuple(max(g.jump[i] for g in spatial) for i in range(2))
        return _Geometry(spatial[0].axes, field, jump)
    jump = tuple(max(g.jump[i] for g in geometries) for i in range(2))
    return _Geometry(None, field, jump)


@dataclasses.dataclass
class Trace:
    calls: list[ModuleCall]
    params: Any
    input_shape: tuple[int, ...]
    unattributed_macs: int


def trace_model(
    model: nn.Module,
    input_shape: tuple[int, ...],
    dtype: Any = np.float32,
    apply_kwargs: dict | None = None,
) -> Trace:
    """Traces ``model.init(key, x, train=False)`` abstractly and returns per-call statistics.

    One trace of ``init`` gives both the parameter shapes and the forward graph. MACs count
    only operations that depend on the image, so parameter initialisers never count.
    Raises whatever the model raises while tracing (e.g. GeometryError for a size that does
    not fit); nothing is compiled or computed.
    """
    apply_kwargs = {"train": False, **(apply_kwargs or {})}
    image = jax.ShapeDtypeStruct(input_shape, dtype)
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    recorder = _Recorder()

    def forward(x):
        with nn.intercept_methods(recorder):
            return model.init_with_output(rngs, x, **apply_kwargs)

    # One convolution primitive per conv layer, whatever formulation the backend would run.
    with reference_convolutions():
        closed, (_, variables) = jax.make_jaxpr(forward, return_shape=True)(image)
    jaxpr = closed.jaxpr
    ndim = len(input_shape)
    env = {jaxpr.invars[0]: _Geometry((ndim - 3, ndim - 2), (1.0, 1.0), (1.0, 1.0))}
    walker = _Walker(recorder.calls)
    walker.run(jaxpr, env, None)
    return Trace(recorder.calls, variables.get("params", {}), tuple(input_shape), walker.unattributed_macs)


def own_parameter_count(params: Any, scope: Sequence[str]) -> int:
    """Parameters stored directly in the module at ``scope`` (not in its submodules)."""
    node = params
    for part in scope:
        if not isinstance(node, Mapping) or part not in node:
            return 0
        node = node[part]
    if not isinstance(node, Mapping):
        return 0
    return sum(int(np.prod(v.shape)) for v in node.values() if hasattr(v, "shape"))


def parameter_count(params: Any) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(params))


__all__ = ["ModuleCall", "Trace", "own_parameter_count", "parameter_count", "trace_model"]
