"""Freezing part of a network: parameters that stay fixed while the rest trains (``config.freeze``).

``freeze`` is 'backbone' (all but the classifier head) or path patterns such as 'stem,stage1'.
Frozen parameters get zero updates (``optax.multi_transform`` with ``optax.set_to_zero``, so
weight decay and momentum never move them), no gradient is computed for them, and the
BatchNorm layers among them run in inference mode: they normalise with the pretrained running
statistics and do not update them. This is Keras's rule for a frozen BatchNorm
(``trainable=False`` implies inference mode); updating statistics under fixed weights would
shift the inputs of every layer after them. (With ``bn_mode='local'`` the loop averages all
statistics over the devices after each step; for frozen ones, equal on every device, that
average can differ from them in the last bit.)
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import optax

from jaxconv.train.transfer import BACKBONE, TransferError, head_parameters, join_path, variable_shapes


def parse_freeze(text: str | None) -> tuple[str, ...]:
    """'backbone' or comma-separated path patterns ('stem, stage1') -> the patterns; None or '' -> ()."""
    if not text:
        return ()
    return tuple(p.strip().strip("/") for p in str(text).split(",") if p.strip())


def _matches(path: str, pattern: str) -> bool:
    """A pattern names a module or a parameter: 'stage1' covers 'stage1/block0/conv1/kernel'."""
    return fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(path, pattern + "/*")


def frozen_paths(freeze: str | None, model: nn.Module, input_shape: tuple[int, ...]) -> frozenset[str]:
    """The frozen variable paths ('params/stem/conv/kernel', 'batch_stats/stem/norm/mean') for ``freeze``.

    'backbone' freezes every parameter but the classifier head; otherwise each
    comma-separated shell pattern ('stem', 'stage[12]', '*/norm*') freezes the parameters
    under the modules (or the parameters) it matches. A BatchNorm whose scale and bias are
    both frozen has its statistics frozen too. Raises TransferError for a pattern that matches nothing, or
    when nothing would be left to train.
    """
    patterns = parse_freeze(freeze)
    if not patterns and freeze is not None and str(freeze).strip():  # ',' trained every parameter
        raise TransferError("freeze", freeze, "names no pattern; give module patterns like 'stem,stage1', "
                                              "or 'backbone'")
    if not patterns:
        return frozenset()
    shapes = variable_shapes(model, input_shape)
    params = list(shapes["params"])
    frozen: set[str] = set()
    for pattern in patterns:
        if pattern == BACKBONE:
            head = head_parameters(model, input_shape)
            hit = {p for p in params if p not in head}
        else:
            hit = {p for p in params if _matches(p, pattern)}
        if not hit:
            top = sorted({p.split("/")[0] for p in params})
            raise TransferError("freeze", freeze, f"{pattern!r} matches no parameter; the model's modules are "
                                                  f"{', '.join(top)} (patterns like 'stem,stage1', or 'backbone')")
        frozen |= hit
    if len(frozen) == len(params):
        raise TransferError("freeze", freeze, "freezes every parameter: nothing would be trained")
    module_of = {p: p.rsplit("/", 1)[0] for p in params}
    modules = {m for m in set(module_of.values()) if all(p in frozen for p, n in module_of.items() if n == m)}
    stats = {f"batch_stats/{s}" for s in shapes["batch_stats"] if s.rsplit("/", 1)[0] in modules}
    return frozenset({f"params/{p}" for p in frozen} | stats)


def _frozen_labels(params, frozen: frozenset[str]):
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "frozen" if f"params/{join_path(path)}" in frozen else "trainable", params)


def freezing_optimizer(tx: optax.GradientTransformation, frozen: frozenset[str]) -> optax.GradientTransformation:
    """``tx`` for the trainable parameters, ``optax.set_to_zero()`` for the frozen ones (no optimizer state)."""
    return optax.multi_transform({"trainable": tx, "frozen": optax.set_to_zero()},
                                 functools.partial(_frozen_labels, frozen=frozen))


def freezing_apply(apply_fn: Callable, frozen: frozenset[str]) -> Callable:
    """``model.apply`` with no gradient into the frozen parameters and their BatchNorms in inference mode."""
    norms = frozenset(p.removeprefix("batch_stats/").rsplit("/", 1)[0] for p in frozen if p.startswith("batch_stats/"))

    def inference_norms(next_fun, args, kwargs, context):
        module = context.module
        if not (context.method_name == "__call__" and isinstance(module, nn.BatchNorm)
                and "/".join(module.scope.path) in norms):
            return next_fun(*args, **kwargs)
        if module.use_running_average is None:  # the mode is given at the call
            if len(args) > 1:  # use_running_average given positionally
                args = (args[0], True, *args[2:])
            else:
                kwargs = {**kwargs, "use_running_average": True}
            return next_fun(*args, **kwargs)
        # The model bound the mode into the layer (norm_factory): Flax refuses it a second time at
        # the call, so this bound copy of the layer is switched to inference for the call alone.
        bound_mode = module.use_running_average
        object.__setattr__(module, "use_running_average", True)
        try:
            return next_fun(*args, **kwargs)
        finally:
            object.__setattr__(module, "use_running_average", bound_mode)

    def apply(variables, *args, **kwargs):
        variables = dict(variables)
        variables["params"] = jax.tree_util.tree_map_with_path(
            lambda path, p: jax.lax.stop_gradient(p) if f"params/{join_path(path)}" in frozen else p,
            variables["params"])
        with nn.intercept_methods(inference_norms):
            return apply_fn(variables, *args, **kwargs)

    return apply


__all__ = ["freezing_apply", "freezing_optimizer", "frozen_paths", "parse_freeze"]
