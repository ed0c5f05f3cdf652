"""Per-layer gradient norms: where the gradient vanishes (or explodes) through a deep network."""

from __future__ import annotations

from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.traverse_util import flatten_dict


def layer_gradient_norms(model: nn.Module, variables: Mapping, images: jax.Array, labels: jax.Array,
                         *, train: bool = True) -> list[tuple[str, float]]:
    """The L2 norm of the cross-entropy loss's gradient for every kernel, in forward order.

    images: (N, H, W, C) float32; labels: (N,) int. ``train=True`` runs BatchNorm on batch
    statistics, as in a training step (dropout off). Returns [(layer path, norm), ...] where the
    path names the module holding the kernel, e.g. 'stage1/block0/conv1'.
    """
    order: list[str] = []

    def record_order(next_fun, args, kwargs, context):
        if context.method_name == "__call__":
            path = "/".join(context.module.scope.path)
            if path not in order:
                order.append(path)
        return next_fun(*args, **kwargs)

    def loss(params):
        rest = {k: v for k, v in variables.items() if k != "params"}
        logits = model.apply({"params": params, **rest}, images, train=train, mutable=["batch_stats"],
                             rngs={"dropout": jax.random.key(0)})[0]
        return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels).mean()

    with nn.intercept_methods(record_order):
        jax.eval_shape(loss, variables["params"])
    grads = jax.jit(jax.grad(loss))(variables["params"])
    kernels = {"/".join(path[:-1]): value for path, value in flatten_dict(grads).items() if path[-1] == "kernel"}
    position = {path: i for i, path in enumerate(order)}
    ordered = sorted(kernels, key=lambda path: position.get(path, len(order)))
    return [(path, float(jnp.linalg.norm(kernels[path].ravel()))) for path in ordered]
