"""Per-layer statistics from one abstract trace of a model: no array is ever computed.

The model is traced with ``jax.make_jaxpr`` on ShapeDtypeStructs. A Flax method
interceptor records every module call (its path, class and output shapes), runs it under a
named scope, and marks its outputs with ``checkpoint_name`` so that the module's outputs can
be found in the jaxpr. Walking the jaxpr then gives:

* MACs: each ``conv_general_dilated`` and ``dot_general`` of the image with a parameter (or
  of the image with itself, attention) contributes output elements x contraction length,
  attributed to the innermost leaf module whose scope it runs in, or to a row of its own
  outside one; scan bodies count once per iteration, the larger branch of a cond;
* receptive field and jump: propagated through every primitive from the input image,
  r_out = r_in + (k - 1) * d * j_in and j_out = j_in * s for each window op (conv,
  pooling, strided slice), through reshapes that split or merge a spatial axis (upsampling,
  pixel shuffle, space-to-depth) and resampling; where branches meet (add, concatenate,
  multiply) the largest field wins, except that a statistic of the whole map (a norm's
  mean, squeeze-excitation's gate) is not a window; an op that collapses the spatial axes
  (flatten into a dense layer, global pooling) acts as a window as large as the whole map.

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
    """One module call seen by the interceptor, or one operation outside a leaf module (``index`` -1)."""

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
    runs: int = 0  # times the traced program runs it (a scan body's module runs once per iteration)
    order: int = -1  # when the walk first reached its output


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


# Primitives that call a sub-jaxpr on their own operands (unlike reduce_window, whose sub-jaxpr
# is a per-element reducer); scan, while and cond are walked by their own rules.
_CALLS = ("jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
          "custom_vjp_call_jaxpr", "checkpoint", "remat", "remat2", "named_call")

# Window reductions and multiply-accumulating operations outside a leaf module get a row of their own.
_OP_LABELS = {"reduce_window_max": "max_pool", "reduce_window_min": "min_pool", "reduce_window_sum": "sum_pool",
              "reduce_window": "pool", "conv_general_dilated": "conv", "dot_general": "dot_general"}

_NOTHING = (None, False)  # (geometry, parameter-derived) of a value that depends on neither image nor parameters


def _jaxpr(value):
    return value.jaxpr if isinstance(value, jex_core.ClosedJaxpr) else value


def _sub_jaxprs(eqn) -> list:
    """Sub-jaxprs whose outputs line up with the equation's: calls, loop bodies, cond branches."""
    values = []
    for value in eqn.params.values():
        values += list(value) if isinstance(value, tuple) else [value]
    jaxprs = [_jaxpr(v) for v in values if isinstance(_jaxpr(v), jex_core.Jaxpr)]
    return [j for j in jaxprs if len(j.outvars) == len(eqn.outvars)]


def parameter_vars(jaxpr, marked: set) -> set:
    """The variables, in ``jaxpr`` and the sub-jaxprs that compute them, that hold the values in ``marked``.

    The traced ``init`` returns every parameter, so its output variables are the parameters;
    an equation's output j is its sub-jaxpr's output j (calls, scan, while and cond bodies).
    """
    found = set(marked)
    for eqn in reversed(jaxpr.eqns):
        for sub in _sub_jaxprs(eqn):
            inner = {s for s, v in zip(sub.outvars, eqn.outvars) if v in found and not isinstance(s, jex_core.Literal)}
            found |= parameter_vars(sub, inner)
    return found


def _collapse(geometry: _Geometry, shape: Sequence[int], axes: Sequence[int]) -> _Geometry:
    """The geometry after a window that spans the whole extent of the given spatial axes."""
    field, jump = list(geometry.field), list(geometry.jump)
    for i, axis in enumerate(geometry.axes or ()):
        if axis in axes:
            extent = shape[axis]
            field[i] += (extent - 1) * jump[i]
            jump[i] *= extent
    return _Geometry(None, tuple(field), tuple(jump))


def _window(geometry: _Geometry, window: Sequence[int], strides: Sequence[int], dilation: Sequence[int] | None):
    field, jump = list(geometry.field), list(geometry.jump)
    for i, axis in enumerate(geometry.axes):
        d = dilation[axis] if dilation is not None else 1
        field[i] += (window[axis] - 1) * d * jump[i]
        jump[i] *= strides[axis]
    return tuple(field), tuple(jump)


def _move_axes(geometry, moved) -> _Geometry | None:
    """``moved(axis)`` is the axis's new position, or None where the op removes it (collapsing the map)."""
    if geometry is None or geometry.axes is None:
        return geometry
    axes = tuple(moved(a) for a in geometry.axes)
    return geometry._replace(axes=None) if None in axes else geometry._replace(axes=axes)


def _reshape_blocks(in_shape: Sequence[int], out_shape: Sequence[int]) -> list[tuple[list[int], list[int]]]:
    """Groups the dims (size-1 dims left out) into consecutive blocks of equal products: (in dims, out dims)."""
    ins = [a for a, n in enumerate(in_shape) if n != 1]
    outs = [a for a, n in enumerate(out_shape) if n != 1]
    blocks, i, j = [], 0, 0
    while i < len(ins) and j < len(outs):
        block_in, block_out = [ins[i]], [outs[j]]
        size_in, size_out = in_shape[ins[i]], out_shape[outs[j]]
        i, j = i + 1, j + 1
        while size_in != size_out and i <= len(ins) and j <= len(outs):
            if size_in < size_out and i < len(ins):
                size_in *= in_shape[ins[i]]
                block_in.append(ins[i])
                i += 1
            elif size_out < size_in and j < len(outs):
                size_out *= out_shape[outs[j]]
                block_out.append(outs[j])
                j += 1
            else:
                break
        blocks.append((block_in, block_out))
    return blocks


def _reshape(geometry: _Geometry, in_shape: Sequence[int], out_shape: Sequence[int]) -> _Geometry:
    """A spatial axis that is the outermost dim of its block becomes the block's outermost output dim.

    Merging it with inner dims (``jnp.repeat``, pixel shuffle) makes more positions: the jump
    shrinks by the ratio. Splitting it (space-to-depth) gathers ratio neighbours into one
    position: the jump grows by the ratio and the field by the neighbours'. A spatial axis
    merged into an outer dim, or both spatial axes in one block (tokens), collapse the map.
    """
    w = geometry.axes[1]
    if tuple(out_shape[: w + 1]) == tuple(in_shape[: w + 1]):
        return geometry
    blocks = _reshape_blocks(in_shape, out_shape)
    axes, field, jump = [], list(geometry.field), list(geometry.jump)
    for i, axis in enumerate(geometry.axes):
        block = next((b for b in blocks if axis in b[0]), None)
        if block is None or block[0][0] != axis or set(geometry.axes) <= set(block[0]):
            return _collapse(geometry, in_shape, geometry.axes)
        ratio = in_shape[axis] / out_shape[block[1][0]]
        field[i] += max(ratio - 1, 0) * jump[i]
        jump[i] *= ratio
        axes.append(block[1][0])
    return _Geometry(tuple(axes), tuple(field), tuple(jump))


def _gather(geometry: _Geometry, eqn) -> _Geometry:
    """Indexing one spatial axis with a vector of n indices (nearest-neighbour resizing) resamples
    it to n positions; an axis taken whole moves to its output position; anything else collapses."""
    dims, sizes = eqn.params["dimension_numbers"], eqn.params["slice_sizes"]
    operand, indices, out = (v.aval.shape for v in (eqn.invars[0], eqn.invars[1], eqn.outvars[0]))
    kept = [a for a in range(len(operand)) if a not in dims.collapsed_slice_dims and a not in dims.operand_batching_dims]
    batch_positions = [a for a in range(len(out)) if a not in dims.offset_dims]
    axes, jump = [], list(geometry.jump)
    for i, axis in enumerate(geometry.axes):
        if axis not in dims.start_index_map and axis in kept and sizes[axis] == operand[axis]:
            axes.append(dims.offset_dims[kept.index(axis)])
        elif tuple(dims.start_index_map) == (axis,) and axis in dims.collapsed_slice_dims and len(batch_positions) == 1:
            jump[i] *= operand[axis] / out[batch_positions[0]]
            axes.append(batch_positions[0])
        else:
            return _collapse(geometry, operand, geometry.axes)
    return _Geometry(tuple(axes), geometry.field, tuple(jump))


def _dot_general(eqn, values) -> _Geometry | None:
    """Output = batch dims, lhs free dims, rhs free dims. A spatial axis contracted with a parameter
    (a dense layer over the map) or with the image collapses the map; contracted with a constant
    matrix with one free dim (``jax.image.resize``'s interpolation weights) it is resampled to
    that dim, read as linear interpolation (two taps when enlarging, 2 x ratio when shrinking)."""
    contract, batch = eqn.params["dimension_numbers"]  # (lhs, rhs) each
    shapes = [v.aval.shape for v in eqn.invars[:2]]
    free = [[a for a in range(len(shapes[k])) if a not in contract[k] and a not in batch[k]] for k in (0, 1)]

    def position(k, a):
        if a in batch[k]:
            return list(batch[k]).index(a)
        return len(batch[k]) + (len(free[0]) if k else 0) + free[k].index(a)

    results = []
    for k in (0, 1):
        geometry = values[k][0]
        if geometry is None or geometry.axes is None:
            if geometry is not None:
                results.append(geometry)
            continue
        other_geometry, other_parameter = values[1 - k]
        axes, field, jump = [], list(geometry.field), list(geometry.jump)
        for i, a in enumerate(geometry.axes):
            if a not in contract[k]:
                axes.append(position(k, a))
            elif other_geometry is None and not other_parameter and len(contract[k]) == 1 and len(free[1 - k]) == 1:
                ratio = shapes[k][a] / shapes[1 - k][free[1 - k][0]]
                field[i] += (max(2 * ratio, 2) - 1) * jump[i]
                jump[i] *= ratio
                axes.append(position(1 - k, free[1 - k][0]))
            else:
                axes = None
                break
        if axes is None:
            results.append(_collapse(geometry, shapes[k], contract[k])._replace(axes=None))
        else:
            results.append(_Geometry(tuple(axes), tuple(field), tuple(jump)))
    return _merge(results) if results else None


def _macs(eqn, values) -> int:
    """Multiply-accumulates of a convolution or dot product whose operands are the image and a
    parameter, or the image twice (attention); constants (patch extraction, resizing) do not count."""
    name = eqn.primitive.name
    if name not in ("conv_general_dilated", "dot_general"):
        return 0
    (lhs, lhs_parameter), (rhs, rhs_parameter) = values[:2]
    if not ((lhs is not None and (rhs is not None or rhs_parameter)) or (rhs is not None and lhs_parameter)):
        return 0
    if name == "dot_general":
        (lhs_contract, _), _ = eqn.params["dimension_numbers"]
        lhs_shape = eqn.invars[0].aval.shape
        return math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs_shape[a] for a in lhs_contract)
    dims = eqn.params["dimension_numbers"]
    lhs_shape, rhs_shape = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
    per_output = math.prod(rhs_shape[a] for a in dims.rhs_spec[1:])  # input channels per group x kernel taps
    if any(d > 1 for d in eqn.params["lhs_dilation"]):
        # A transposed convolution: only the taps on real input count, as fvcore and ptflops count it,
        # batch x input positions x kernel taps x input channels per group x output channels.
        positions = lhs_shape[dims.lhs_spec[0]] * math.prod(lhs_shape[a] for a in dims.lhs_spec[2:])
        return positions * per_output * rhs_shape[dims.rhs_spec[0]]
    return math.prod(eqn.outvars[0].aval.shape) * per_output


class _Walker:
    """Propagates geometry and counts MACs through a jaxpr and its sub-jaxprs.

    A value is (geometry, parameter-derived): geometry is None for values that do not depend
    on the image; parameter-derived marks values computed from parameters alone.
    """

    def __init__(self, calls: list[ModuleCall], parameters: set):
        self.calls = calls
        self.parameters = parameters
        self.ops: dict[tuple, ModuleCall] = {}  # rows for operations outside leaf modules, by call site
        self._sites: tuple = ()
        self._order = 0

    def run(self, jaxpr, values: list, owner: int | None, times: int = 1) -> list:
        """Walks ``jaxpr`` on the given input values ``times`` times over; returns its output values."""
        env = {var: value for var, value in zip(jaxpr.invars, values)}
        named = set()
        for eqn in jaxpr.eqns:
            found = _MARK_RE.findall(str(eqn.source_info.name_stack))
            here = int(found[-1]) if found else owner
            inputs = [_NOTHING if isinstance(v, jex_core.Literal) else env.get(v, _NOTHING) for v in eqn.invars]
            geometries = [g for g, _ in inputs]
            image = any(g is not None for g in geometries)
            macs = _macs(eqn, inputs) * times if image else 0
            outputs = self._outputs(eqn, inputs, here, times)
            if not image:  # computed from parameters alone (a cast kernel) stays a parameter
                derived = any(p for _, p in inputs)
                outputs = [(None, derived) for _ in eqn.outvars]
            for var, (geometry, derived) in zip(eqn.outvars, outputs):
                env[var] = (geometry, derived or var in self.parameters)
            if image and (macs or eqn.primitive.name.startswith("reduce_window")):
                self._count(eqn, here, macs, outputs[0][0], times)
            if eqn.primitive.name == "name":
                match = _MARK_RE.fullmatch(str(eqn.params.get("name", "")))
                if match and int(match.group(1)) not in named:  # the first output of a module call
                    named.add(int(match.group(1)))
                    self._reached(self.calls[int(match.group(1))], inputs[0][0], times)
        return [_NOTHING if isinstance(v, jex_core.Literal) else env.get(v, _NOTHING) for v in jaxpr.outvars]

    def _reached(self, call: ModuleCall, geometry: _Geometry | None, times: int) -> None:
        call.runs += times
        if call.order < 0:
            call.order, self._order = self._order, self._order + 1
        if geometry is not None:  # the last run's (a scan's last iteration)
            call.field, call.jump = geometry.field, geometry.jump

    def _count(self, eqn, owner: int | None, macs: int, geometry, times: int) -> None:
        """MACs go to the innermost leaf module; outside one, the operation is a row of its own."""
        if owner is not None and self.calls[owner].leaf:
            self.calls[owner].macs += macs
            return
        key = (self._sites, id(eqn))
        if key not in self.ops:
            parent = self.calls[owner] if owner is not None else None
            label = _OP_LABELS.get(eqn.primitive.name, eqn.primitive.name)
            prefix = f"{parent.path}/" if parent is not None else ""
            taken = sum(1 for op in self.ops.values() if op.path.startswith(prefix + label))
            scope = parent.scope if parent is not None else ()  # its first row shows the module's own parameters
            self.ops[key] = ModuleCall(-1, prefix + label + (f"_{taken}" if taken else ""), scope, eqn.primitive.name,
                                       [tuple(eqn.outvars[0].aval.shape)])
        op = self.ops[key]
        op.macs += macs
        self._reached(op, geometry, times)

    def _outputs(self, eqn, inputs: list, owner: int | None, times: int) -> list:
        name = eqn.primitive.name
        subs = _sub_jaxprs(eqn)
        self._sites, sites = self._sites + (id(eqn),), self._sites
        try:
            if name in _CALLS and subs and len(subs[0].invars) == len(inputs):
                return self.run(subs[0], inputs, owner, times)
            if name == "scan":
                return self._scan(eqn, inputs, owner, times)
            if name == "while":
                # The trip count is not known from shapes: the body is counted once.
                body, skip = _jaxpr(eqn.params["body_jaxpr"]), eqn.params["cond_nconsts"]
                return self.run(body, inputs[skip:], owner, times)
            if name == "cond":
                return self._cond(eqn, inputs, owner, times)
        finally:
            self._sites = sites
        return [(g, False) for g in self._propagate(eqn, inputs)]

    def _scan(self, eqn, inputs: list, owner: int | None, times: int) -> list:
        """The body runs ``length`` times, its carry's geometry fed back; MACs count every iteration."""
        body, length = _jaxpr(eqn.params["jaxpr"]), eqn.params["length"]
        consts, carry = eqn.params["num_consts"], eqn.params["num_carry"]
        slices = [(_move_axes(g, lambda a: a - 1 if a else None), p) for g, p in inputs[consts + carry:]]
        state, previous, done, outputs = inputs[consts:consts + carry], None, 0, []
        while done < length:
            repeat = length - done if state == previous else 1  # a fixed point: the rest repeat this one
            previous = state
            outputs = self.run(body, inputs[:consts] + state + slices, owner, times * repeat)
            state, done = outputs[:carry], done + repeat
        stacked = [(_move_axes(g, lambda a: a + 1), p) for g, p in outputs[carry:]] or [_NOTHING] * (len(eqn.outvars) - carry)
        return state + stacked

    def _snapshot(self):
        return ([(c.macs, c.runs) for c in self.calls], {k: (op, op.macs, op.runs) for k, op in self.ops.items()})

    def _restore(self, snapshot) -> None:
        calls, ops = snapshot
        for call, (macs, runs) in zip(self.calls, calls):
            call.macs, call.runs = macs, runs
        self.ops = {k: op for k, (op, _, _) in ops.items()}
        for op, macs, runs in ops.values():
            op.macs, op.runs = macs, runs

    def _cond(self, eqn, inputs: list, owner: int | None, times: int) -> list:
        """The branch with the most MACs counts; the geometries of all branches merge."""
        before, best, best_macs, branch_outputs = self._snapshot(), None, -1, []
        for branch in eqn.params["branches"]:
            self._restore(before)
            branch_outputs.append(self.run(_jaxpr(branch), inputs[1:], owner, times))
            macs = sum(c.macs for c in self.calls) + sum(op.macs for op in self.ops.values())
            if macs > best_macs:
                best, best_macs = self._snapshot(), macs
        self._restore(best)
        merged = []
        for outs in zip(*branch_outputs):
            known = [g for g, _ in outs if g is not None]
            merged.append((_merge(known) if known else None, any(p for _, p in outs)))
        return merged

    def _propagate(self, eqn, inputs: list) -> list:
        name = eqn.primitive.name
        params = eqn.params
        outs = eqn.outvars
        geometries = [g for g, _ in inputs]
        first = geometries[0] if geometries else None
        in_shape = eqn.invars[0].aval.shape if eqn.invars and hasattr(eqn.invars[0].aval, "shape") else ()

        if name == "conv_general_dilated":
            if first is None or first.axes is None:
                return [first]
            dims = params["dimension_numbers"]
            lhs_spatial, out_spatial = list(dims.lhs_spec[2:]), list(dims.out_spec[2:])
            rhs_shape = eqn.invars[1].aval.shape
            field, jump, axes = [], [], []
            for i, axis in enumerate(first.axes):
                if axis not in lhs_spatial:
                    return [_collapse(first, in_shape, first.axes)]
                k = lhs_spatial.index(axis)
                effective = (rhs_shape[dims.rhs_spec[2 + k]] - 1) * params["rhs_dilation"][k] + 1
                # With input dilation (a transposed convolution) the taps are lhs_dilation apart on the input.
                step = first.jump[i] / params["lhs_dilation"][k]
                field.append(first.field[i] + (effective - 1) * step)
                jump.append(step * params["window_strides"][k])
                axes.append(out_spatial[k])
            return [_Geometry(tuple(axes), tuple(field), tuple(jump))]

        if name.startswith("reduce_window"):
            results = []
            for geometry in geometries[: len(outs)]:
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
            if first.axes is not None and any(a in reduced for a in first.axes):
                return [_collapse(first, in_shape, reduced)] * len(outs)
            return [_move_axes(first, lambda a: a - sum(r < a for r in reduced))] * len(outs)

        if first is not None and first.axes is None and name in ("reshape", "squeeze", "broadcast_in_dim",
                                                                 "transpose", "gather", "slice", "pad"):
            return [first]

        if name == "reshape" and first is not None:
            return [_reshape(first, in_shape, outs[0].aval.shape)]

        if name == "squeeze" and first is not None:
            dropped = tuple(params["dimensions"])
            if any(a in dropped for a in first.axes):
                return [_collapse(first, in_shape, first.axes)]
            return [_move_axes(first, lambda a: a - sum(d < a for d in dropped))]

        if name == "broadcast_in_dim" and first is not None:
            return [_move_axes(first, lambda a: params["broadcast_dimensions"][a])]

        if name == "transpose" and first is not None:
            return [_move_axes(first, list(params["permutation"]).index)]

        if name == "gather" and first is not None:
            return [_gather(first, eqn)]

        if name == "slice" and first is not None and params.get("strides"):
            strides = params["strides"]
            return [first._replace(jump=tuple(j * strides[a] for j, a in zip(first.jump, first.axes)))]

        if name == "pad" and first is not None:
            config = params["padding_config"]
            return [first._replace(jump=tuple(j / (config[a][2] + 1) for j, a in zip(first.jump, first.axes)))]

        if name == "dot_general":
            return [_dot_general(eqn, inputs)]

        known = [(g, v) for g, v in zip(geometries, eqn.invars) if g is not None]
        if not known:
            return [None] * len(outs)
        results = []
        for out in outs:
            out_ndim = getattr(out.aval, "ndim", 0)
            candidates = []
            for g, var in known:
                if g.axes is not None and var.aval.ndim != out_ndim:
                    g = _collapse(g, var.aval.shape, g.axes)
                candidates.append(g)
            results.append(_merge(candidates))
        return results


def _merge(geometries: list[_Geometry]) -> _Geometry:
    """Where values meet, each output position sees the union of what its inputs saw.

    A value whose spatial axes were reduced away (a norm's mean and variance, squeeze-excitation's
    gate) that meets a map is a statistic of the map, not a window: it does not widen the field.
    """
    spatial = [g for g in geometries if g.axes is not None]
    widest = spatial or geometries
    field = tuple(max(g.field[i] for g in widest) for i in range(2))
    jump = tuple(max(g.jump[i] for g in widest) for i in range(2))
    return _Geometry(spatial[0].axes if spatial else None, field, jump)


@dataclasses.dataclass
class Trace:
    """The rows in the order the program reaches them: leaf module calls, then operations outside one."""

    layers: list[ModuleCall]
    params: Any
    input_shape: tuple[int, ...]


def trace_model(
    model: nn.Module,
    input_shape: tuple[int, ...],
    dtype: Any = np.float32,
    apply_kwargs: dict | None = None,
) -> Trace:
    """Traces ``model.init(key, x, train=False)`` abstractly and returns per-call statistics.

    One trace of ``init`` gives both the parameter shapes and the forward graph. MACs count
    only operations on the image and a parameter (or the image twice), so parameter
    initialisers never count. Module calls the program never runs (``nn.scan`` traces its body
    once more to build its parameters) get no row.
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
        closed, shapes = jax.make_jaxpr(forward, return_shape=True)(image)
    jaxpr, variables = closed.jaxpr, shapes[1]
    leaves = jax.tree_util.tree_flatten_with_path(shapes)[0]
    is_parameter = [path[0].idx == 1 and getattr(path[1], "key", None) == "params" for path, _ in leaves]
    parameters = parameter_vars(jaxpr, {v for v, p in zip(jaxpr.outvars, is_parameter) if p})
    ndim = len(input_shape)
    walker = _Walker(recorder.calls, parameters)
    walker.run(jaxpr, [(_Geometry((ndim - 3, ndim - 2), (1.0, 1.0), (1.0, 1.0)), False)], None)
    reached = [c for c in recorder.calls if c.leaf and c.runs] + list(walker.ops.values())
    return Trace(sorted(reached, key=lambda c: c.order), variables.get("params", {}), tuple(input_shape))


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
