"""Folding BatchNorm into the preceding convolution (or dense layer) for inference.

In evaluation mode BatchNorm is the per-channel affine map y = gamma * (x - mean) /
sqrt(var + eps) + beta. After a convolution x = W * u + b it can be absorbed:

    W' = W * s,   b' = (b - mean) * s + beta,   s = gamma / sqrt(var + eps)

(scaling the output-channel axis of W; a dense layer's kernel the same way). The folded network has no BatchNorm, one fewer
memory pass per convolution, and the same outputs up to float rounding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.extend.core as jax_core
import jax.numpy as jnp
from flax.traverse_util import flatten_dict, unflatten_dict
from jax.ad_checkpoint import checkpoint_name

from jaxconv.layers import Conv


@dataclasses.dataclass
class _Pair:
    conv: tuple[str, ...]
    norm: tuple[str, ...]
    epsilon: float
    use_scale: bool
    use_bias: bool


_CONV_MARK, _NORM_MARK = "jaxconv_fold_conv:", "jaxconv_fold_norm:"


def _find_pairs(model: nn.Module, variables: Mapping, input_shape: tuple[int, ...]
                ) -> tuple[list[_Pair], list[str], list[str]]:
    """Traces the model's initialisation abstractly; pairs each BatchNorm with the Conv or Dense whose output it reads.

    Returns ``(pairs, orphans, shared)``: ``orphans`` are BatchNorms whose input is no conv's output; ``shared`` are the
    convolutions whose output is read by something beside their BatchNorm (``act(norm(y)) + y``), which folding would
    change. Each conv output and each BatchNorm input is marked with an identity (``checkpoint_name``) in the trace,
    so the readers of a conv's output can be counted in the jaxpr.
    """
    conv_outputs: dict[int, tuple[str, ...]] = {}
    pairs: list[_Pair] = []
    orphans: list[str] = []
    paths: list[tuple[str, ...]] = []

    def interceptor(next_fun, args, kwargs, context):
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        module = context.module
        path = tuple(module.scope.path)
        if isinstance(module, nn.BatchNorm) and args:
            source = conv_outputs.get(id(args[0]))
            if source is None:
                orphans.append("/".join(path))
            else:
                pairs.append(_Pair(source, path, module.epsilon, module.use_scale, module.use_bias))
                args = (checkpoint_name(args[0], f"{_NORM_MARK}{paths.index(source)}"), *args[1:])
            return next_fun(*args, **kwargs)
        out = next_fun(*args, **kwargs)
        if isinstance(module, (Conv, nn.Dense)):
            paths.append(path)
            out = checkpoint_name(out, f"{_CONV_MARK}{len(paths) - 1}")
            conv_outputs[id(out)] = path
        return out

    # Traced as initialisation for evaluation, which builds every module the variables hold: also those that only
    # run in training (Inception v3's auxiliary head, whose BatchNorms are folded with the rest).
    def build(x):
        with nn.intercept_methods(interceptor):
            return model.init(jax.random.key(0), x, train=False)

    jaxpr = jax.make_jaxpr(build)(jax.ShapeDtypeStruct(input_shape, jnp.float32))
    paired = {paths.index(pair.conv) for pair in pairs}
    shared = sorted({"/".join(paths[i]) for i in _read_elsewhere(jaxpr.jaxpr) if i in paired})
    return pairs, orphans, shared


def _read_elsewhere(jaxpr) -> set[int]:
    """The marked conv outputs (by index) that something other than their own BatchNorm's mark reads."""
    found: set[int] = set()
    marked: dict[Any, int] = {}
    readers: dict[Any, list] = {}
    for eqn in jaxpr.eqns:
        for var in eqn.invars:
            if not isinstance(var, jax_core.Literal):
                readers.setdefault(var, []).append(eqn)
        name = eqn.params.get("name") if eqn.primitive.name == "name" else None
        if isinstance(name, str) and name.startswith(_CONV_MARK):
            marked[eqn.outvars[0]] = int(name[len(_CONV_MARK):])
        for sub in jax_core.jaxprs_in_params(eqn.params):
            found |= _read_elsewhere(sub)
    returned = {v for v in jaxpr.outvars if not isinstance(v, jax_core.Literal)}
    for var, index in marked.items():
        own = f"{_NORM_MARK}{index}"
        others = [e for e in readers.get(var, []) if not (e.primitive.name == "name" and e.params.get("name") == own)]
        if others or var in returned:
            found.add(index)
    return found


def _norm_free_twin(model: nn.Module) -> nn.Module:
    """The model with ``norm=None``, and off every switch that puts `norm` on more layers (``classifier_norm``)."""
    fields = {f.name for f in dataclasses.fields(model)}
    if "norm" not in fields:
        raise ValueError(f"{type(model).__name__} has no `norm` field, so a BatchNorm-free twin cannot be built")
    switches = {name: False for name in fields if name.endswith("_norm") and isinstance(getattr(model, name), bool)}
    return model.clone(norm=None, **switches)


def fold_batchnorm(
    model: nn.Module, variables: Mapping[str, Any], input_shape: tuple[int, ...]
) -> tuple[nn.Module, dict[str, Any]]:
    """Returns ``(folded_model, folded_variables)`` with every BatchNorm folded into its conv (or dense layer).

    ``model`` must take its normalisation as a ``norm`` field (every jaxconv architecture
    does); the folded model is ``model.clone(norm=None)`` (AlexNet's ``classifier_norm`` off too),
    whose convolutions carry the folded biases. ``input_shape`` (N, H, W, C) is any input the model accepts; it is used
    to trace which convolution feeds which BatchNorm. A BatchNorm that does not directly
    follow a convolution or dense layer (pre-activation designs) cannot be folded and raises ValueError, as does a
    convolution whose output is read by something beside its BatchNorm (``act(norm(y)) + y``): folding would change
    what that other reader sees.

    Evaluation outputs match: ``folded_model.apply(folded_variables, x)`` equals
    ``model.apply(variables, x, train=False)`` up to float32 rounding.
    """
    if "batch_stats" not in variables:
        raise ValueError("no batch_stats in the variables: there is no BatchNorm to fold")
    pairs, orphans, shared = _find_pairs(model, variables, input_shape)
    if orphans:
        raise ValueError(
            f"cannot fold BatchNorm layers whose input is not a convolution's or dense layer's output: {', '.join(orphans)}"
        )
    if shared:
        raise ValueError(
            f"cannot fold BatchNorm into layers whose output is also read elsewhere (folding would change that "
            f"reader's input too): {', '.join(shared)}"
        )
    folded_model = _norm_free_twin(model)

    params = flatten_dict(jax.tree_util.tree_map(jnp.asarray, dict(variables["params"])))
    stats = flatten_dict(dict(variables["batch_stats"]))
    folded: dict[tuple[str, ...], jnp.ndarray] = {}
    consumed: set[tuple[str, ...]] = set()
    for pair in pairs:
        mean, var = stats[pair.norm + ("mean",)], stats[pair.norm + ("var",)]
        gamma = params[pair.norm + ("scale",)] if pair.use_scale else jnp.ones_like(mean)
        beta = params[pair.norm + ("bias",)] if pair.use_bias else jnp.zeros_like(mean)
        scale = gamma * jax.lax.rsqrt(var + pair.epsilon)
        kernel = params[pair.conv + ("kernel",)]
        bias = params.get(pair.conv + ("bias",), jnp.zeros_like(mean))
        folded[pair.conv + ("kernel",)] = kernel * scale
        folded[pair.conv + ("bias",)] = (bias - mean) * scale + beta
        consumed.update(k for k in params if k[: len(pair.norm)] == pair.norm)
    for key, value in params.items():
        if key not in consumed and key not in folded:
            folded[key] = value

    expected = jax.eval_shape(lambda x: folded_model.init(jax.random.key(0), x, train=False),
                              jax.ShapeDtypeStruct(input_shape, jnp.float32))
    expected_keys = set(flatten_dict(dict(expected["params"])))
    if expected_keys != set(folded):
        missing = sorted("/".join(k) for k in expected_keys - set(folded))
        extra = sorted("/".join(k) for k in set(folded) - expected_keys)
        raise ValueError(f"folded parameters do not match the BatchNorm-free model: missing {missing}, extra {extra}")
    return folded_model, {"params": unflatten_dict(folded)}


__all__ = ["fold_batchnorm"]
