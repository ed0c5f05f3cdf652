"""The train and eval steps, written once as per-device code in the pmap programming model.

Each function sees its device's share of the batch and communicates over the mesh axis
``axis_name`` with lax.pmean / lax.psum; ``jaxconv.parallel`` runs it under jax.shard_map
(inside jit) or jax.pmap. Gradients are averaged over devices, so parameters and optimizer
state stay identical everywhere.

BatchNorm: in 'sync' mode the model's BatchNorm layers carry ``axis_name`` and normalise
with the statistics of the global batch (mean and E[x^2] averaged over devices). In 'local'
mode each device normalises with its own statistics, as the original ResNet was trained; the
running averages are then averaged over devices after every step, which equals averaging the
per-device running statistics before evaluation (the update is linear).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jaxconv.analysis.gradients import kernel_gradient_norms
from jaxconv.train import mixing
from jaxconv.train.state import TrainState


@dataclasses.dataclass(frozen=True)
class StepOptions:
    num_classes: int
    label_smoothing: float = 0.0
    aux_loss_weight: float = 0.3
    bn_mode: str = "sync"
    ema_decay: float | None = None
    # Steps the moving average copies the weights instead of averaging them (torchvision's reference resets it
    # through the learning-rate warm-up): it does not carry the random initialisation into the run.
    ema_warmup_steps: int = 0
    axis_name: str = "data"
    # Kernel paths in forward order: the step also returns each one's gradient norm (config.log_layer_grad_norms).
    layer_paths: tuple[tuple[str, ...], ...] | None = None
    accumulation_steps: int = 1  # micro-batches per device share, their gradients averaged before one update
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    random_erasing: float = 0.0
    # uint8 images (the input pipeline's) become (x - mean) / std in ``input_dtype`` inside the step.
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    input_dtype: str = "float32"


def model_inputs(batch: dict, options: StepOptions) -> jax.Array:
    """The model's input for a batch: uint8 images (plus AlexNet's per-example colour shift,
    ``batch['lighting']``) normalised with the dataset's mean and std, in ``options.input_dtype``.
    Float images are taken as already normalised."""
    images = batch["image"]
    if images.dtype != jnp.uint8:
        return images
    if options.mean is None or options.std is None:
        raise ValueError("uint8 images need StepOptions.mean and std to be normalised")
    x = images.astype(jnp.float32)
    if "lighting" in batch:
        x = x + batch["lighting"][:, None, None, :]
    x = (x - jnp.asarray(options.mean, jnp.float32)) / jnp.asarray(options.std, jnp.float32)
    return x.astype(options.input_dtype)


def cross_entropy(logits: jax.Array, labels: jax.Array, num_classes: int, smoothing: float) -> jax.Array:
    """Per-example softmax cross-entropy with optional label smoothing (float32)."""
    return soft_cross_entropy(logits, one_hot_targets(labels, num_classes, smoothing))


def one_hot_targets(labels: jax.Array, num_classes: int, smoothing: float) -> jax.Array:
    targets = jax.nn.one_hot(labels, num_classes)
    return optax.smooth_labels(targets, smoothing) if smoothing else targets


def soft_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def correct_counts(probabilities_or_logits: jax.Array, labels: jax.Array, weights: jax.Array):
    """Weighted numbers of top-1 and top-5 hits."""
    k = min(5, probabilities_or_logits.shape[-1])
    top = lax.top_k(probabilities_or_logits, k)[1]
    hits = top == labels[:, None]
    return jnp.sum(hits[:, 0] * weights), jnp.sum(jnp.any(hits, axis=-1) * weights)


def train_step(state: TrainState, batch: dict, options: StepOptions) -> tuple[TrainState, dict]:
    """One SGD step on this device's share of the global batch; returns summed metrics.

    With ``accumulation_steps`` k > 1 the share is cut into k micro-batches run one after the
    other (a scan: one micro-batch's activations in memory at a time); their mean gradient makes
    one update, as the whole share would (BatchNorm sees each micro-batch on its own). Micro-batch j
    takes every k-th example from the j-th, so that over the devices it is the same set of the global
    batch however many devices share it (sync BatchNorm normalises it as one device would).
    Mixup, CutMix and random erasing act on the global batch (``mixing``); dropout draws per device.
    """
    axis = options.axis_name
    step_key = jax.random.fold_in(state.rng, state.step)
    step_rng = jax.random.fold_in(step_key, lax.axis_index(axis))  # dropout's, per device
    images, labels = model_inputs(batch, options), batch["label"]
    targets = one_hot_targets(labels, options.num_classes, options.label_smoothing)
    if options.mixup_alpha or options.cutmix_alpha or options.random_erasing:
        # the same key on every device (device 0's: a one-device run draws as it always did)
        mix_key, erase_key = jax.random.split(jax.random.fold_in(jax.random.fold_in(step_key, 0), 0x313))
        images = mixing.erase(erase_key, images, options.random_erasing, axis_name=axis)
        images, targets = mixing.mix(mix_key, images, targets, options.mixup_alpha, options.cutmix_alpha,
                                     axis_name=axis)

    def loss_fn(params, batch_stats, images, targets, rng):
        variables = {"params": params, "batch_stats": batch_stats}
        logits, updates = state.apply_fn(
            variables, images, train=True, mutable=["batch_stats", "aux_logits"], rngs={"dropout": rng}
        )
        losses = soft_cross_entropy(logits, targets)
        loss = losses.mean()
        for aux in jax.tree_util.tree_leaves(updates.get("aux_logits", {})):
            loss += options.aux_loss_weight * soft_cross_entropy(aux, targets).mean()
        return loss, (logits, losses, updates.get("batch_stats", {}))

    gradient = jax.value_and_grad(loss_fn, has_aux=True)
    k = options.accumulation_steps
    if k == 1:
        (_, (logits, losses, batch_stats)), grads = gradient(state.params, state.batch_stats, images, targets,
                                                             step_rng)
    else:
        def micro_step(carry, micro):
            grad_sum, stats = carry
            index, micro_images, micro_targets = micro
            (_, (micro_logits, micro_losses, stats)), grads = gradient(
                state.params, stats, micro_images, micro_targets, jax.random.fold_in(step_rng, index))
            return (jax.tree_util.tree_map(jnp.add, grad_sum, grads), stats), (micro_logits, micro_losses)

        # (n, ...) -> (k, n / k, ...), micro-batch j = rows j, j + k, j + 2k, ...
        split = lambda x: jnp.swapaxes(x.reshape((x.shape[0] // k, k, *x.shape[1:])), 0, 1)  # noqa: E731
        zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
        (grad_sum, batch_stats), (logits, losses) = lax.scan(
            micro_step, (zeros, state.batch_stats), (jnp.arange(k), split(images), split(targets)))
        grads = jax.tree_util.tree_map(lambda g: g / k, grad_sum)
        logits, losses = jnp.swapaxes(logits, 0, 1).reshape((-1, logits.shape[-1])), jnp.swapaxes(losses, 0, 1).reshape(-1)
    grads = lax.pmean(grads, axis)
    if options.bn_mode == "local":
        batch_stats = lax.pmean(batch_stats, axis)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    updates = jax.tree_util.tree_map(lambda u: u * state.lr_scale.astype(u.dtype), updates)
    params = optax.apply_updates(state.params, updates)
    ema_params, ema_batch_stats = state.ema_params, state.ema_batch_stats
    if options.ema_decay is not None:
        decay = jnp.where(state.step < options.ema_warmup_steps, 0.0, options.ema_decay)
        average = lambda e, p: (decay * e + (1 - decay) * p).astype(p.dtype)  # noqa: E731
        ema_params = jax.tree_util.tree_map(average, ema_params, params)
        if ema_batch_stats is not None:
            ema_batch_stats = jax.tree_util.tree_map(average, ema_batch_stats, batch_stats)
    new_state = state.replace(
        step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state, ema_params=ema_params,
        ema_batch_stats=ema_batch_stats,
    )
    top1, top5 = correct_counts(logits, labels, jnp.ones_like(losses))
    metrics = {
        "loss": lax.psum(jnp.sum(losses), axis),
        "top1": lax.psum(top1, axis),
        "top5": lax.psum(top5, axis),
        "count": lax.psum(jnp.asarray(losses.shape[0], jnp.float32), axis),
        "grad_norm": optax.tree.norm(grads),
    }
    if options.layer_paths:
        metrics["layer_grad_norms"] = kernel_gradient_norms(grads, list(options.layer_paths))
    return new_state, metrics


def eval_step(state: TrainState, batch: dict, options: StepOptions) -> dict:
    """Summed loss, top-1 and top-5 hits over this device's share, masking padded examples.

    Images of shape (b, 10, H, W, C) are AlexNet's 10 crops: softmax outputs are averaged.
    """
    axis = options.axis_name
    images, labels, mask = model_inputs(batch, options), batch["label"], batch["mask"]
    variables = state.eval_variables()
    if images.ndim == 5:
        crops = images.shape[1]
        logits = state.apply_fn(variables, images.reshape((-1, *images.shape[2:])), train=False)
        probabilities = jax.nn.softmax(logits.astype(jnp.float32)).reshape(images.shape[0], crops, -1).mean(axis=1)
        losses = -jnp.log(jnp.take_along_axis(probabilities, labels[:, None], axis=-1)[:, 0] + 1e-12)
        scores = probabilities
    else:
        logits = state.apply_fn(variables, images, train=False)
        losses = cross_entropy(logits, labels, options.num_classes, 0.0)
        scores = logits
    top1, top5 = correct_counts(scores, labels, mask)
    return {
        "loss": lax.psum(jnp.sum(losses * mask), axis),
        "top1": lax.psum(top1, axis),
        "top5": lax.psum(top5, axis),
        "count": lax.psum(jnp.sum(mask), axis),
    }
