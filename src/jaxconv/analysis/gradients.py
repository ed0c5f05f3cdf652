"""Per-layer gradient norms: where the gradient vanishes (or explodes) through a deep network."""

from __future__ import annotations

from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.traverse_util import flatten_dict


def kernel_paths(model: nn.Module, variables: Mapping, images: jax.Array, *, train: bool = True,
                 **apply_kwargs) -> list[tuple[str, ...]]:
    """The parameter paths of every kernel, in the order the forward pass uses them.

    ``variables`` and ``images`` may be abstract (jax.ShapeDtypeStruct): nothing is computed.
    A path is the tuple of names leading to the kernel, e.g. ('stage1', 'block0', 'conv1', 'kernel').
    """
    order: list[tuple[str, ...]] = []

    def record_order(next_fun, args, kwargs, context):
        if context.method_name == "__call__" and tuple(context.module.scope.path) not in order:
            order.append(tuple(context.module.scope.path))
        return next_fun(*args, **kwargs)

    def forward(variables, images):
        return model.apply(variables, images, train=train, mutable=["batch_stats", "aux_logits"],
                           rngs={"dropout": jax.random.key(0)}, **apply_kwargs)

    with nn.intercept_methods(record_order):
        jax.eval_shape(forward, variables, images)
    kernels = [path for path in flatten_dict(dict(variables["params"])) if path[-1] == "kernel"]
    position = {path: i for i, path in enumerate(order)}
    return sorted(kernels, key=lambda path: position.get(path[:-1], len(order)))


def kernel_gradient_norms(grads: Mapping, paths: list[tuple[str, ...]]) -> jax.Array:
    """The L2 norm of each kernel's gradient, stacked in the order of ``paths`` (jit-friendly)."""
    flat = flatten_dict(dict(grads))
    return jnp.stack([jnp.linalg.norm(flat[path].astype(jnp.float32).ravel()) for path in paths])


def layer_name(path: tuple[str, ...]) -> str:
    """('stage1', 'block0', 'conv1', 'kernel') -> 'stage1/block0/conv1'."""
    return "/".join(path[:-1])


def layer_gradient_norms(model: nn.Module, variables: Mapping, images: jax.Array, labels: jax.Array,
                         *, train: bool = True) -> list[tuple[str, float]]:
    """The L2 norm of the cross-entropy loss's gradient for every kernel, in forward order.

    images: (N, H, W, C) float32; labels: (N,) int. ``train=True`` runs BatchNorm on batch
    statistics, as in a training step (dropout off). Returns [(layer path, norm), ...] where the
    path names the module holding the kernel, e.g. 'stage1/block0/conv1'.
    """

    def loss(params):
        rest = {k: v for k, v in variables.items() if k != "params"}
        logits = model.apply({"params": params, **rest}, images, train=train, mutable=["batch_stats"],
                             rngs={"dropout": jax.random.key(0)})[0]
        return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels).mean()

    paths = kernel_paths(model, variables, images, train=train)
    norms = jax.jit(lambda params: kernel_gradient_norms(jax.grad(loss)(params), paths))(variables["params"])
    return [(layer_name(path), float(norm)) for path, norm in zip(paths, norms)]
