"""Optax optimizers and learning-rate schedules from a config."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax


def learning_rate_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    """The learning rate at each step: optional linear warm-up, then constant, step or cosine decay.

    'step' multiplies the rate by ``decay_factor`` at each of ``decay_epochs`` (÷10 at epochs
    30, 60, 80 for ResNet on ImageNet); 'cosine' decays to zero at the last step.
    """
    base = config.learning_rate
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    if config.schedule == "constant":
        main = optax.constant_schedule(base)
    elif config.schedule == "step":
        boundaries = {int(round(e * steps_per_epoch)) - warmup: config.decay_factor for e in config.decay_epochs}
        main = optax.piecewise_constant_schedule(base, {b: f for b, f in boundaries.items() if b > 0})
    elif config.schedule == "cosine":
        main = optax.cosine_decay_schedule(base, max(1, total_steps - warmup))
    else:
        raise ValueError(f"unknown schedule {config.schedule!r}")
    if warmup <= 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, base, warmup), main], [warmup])


def check_decay_epochs(config: ml_collections.ConfigDict, steps_per_epoch: int) -> None:
    """Raises ConfigError for a step-schedule decay that would not happen: one at or inside the warm-up (the
    schedule starts after it), or two that fall on the same step (one ÷10 instead of two)."""
    from jaxconv.train.keys import ConfigError

    if config.schedule != "step":
        return
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    seen: dict[int, float] = {}
    for epochs in config.decay_epochs:
        step = int(round(epochs * steps_per_epoch))
        if step <= warmup:
            where = (f"inside the warm-up of {warmup} steps (warmup_epochs={config.warmup_epochs:g})" if warmup
                     else "the first step")
            raise ConfigError("decay_epochs", tuple(config.decay_epochs),
                              f"the decay at epoch {epochs:g} falls on step {step}, {where}, where it would not "
                              f"happen; put each decay after {warmup / steps_per_epoch:g} epochs "
                              f"({steps_per_epoch} steps per epoch){' or lower learning_rate' if not warmup else ''}")
        if step in seen:
            raise ConfigError("decay_epochs", tuple(config.decay_epochs),
                              f"the decays at epochs {seen[step]:g} and {epochs:g} both fall on step {step} "
                              f"({steps_per_epoch} steps per epoch), which would make one decay of them; space "
                              f"them at least {1 / steps_per_epoch:.3g} epochs apart")
        seen[step] = epochs


def schedule_warnings(config: ml_collections.ConfigDict, schedule: optax.Schedule, steps_per_epoch: int,
                      total_steps: int) -> list[str]:
    """Why the learning rate would not follow the schedule asked for: a warm-up as long as the run or longer
    (it never reaches its peak), step decays after the run's end (they never happen)."""
    warnings = []
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    if warmup >= total_steps:
        peak = float(schedule(total_steps - 1))
        warnings.append(f"the warm-up (config.warmup_epochs={config.warmup_epochs:g}, {warmup} steps) is not "
                        f"shorter than the run ({total_steps} steps): the learning rate peaks at {peak:.4g}, "
                        f"{peak / config.learning_rate:.0%} of config.learning_rate={config.learning_rate:g}; "
                        f"shorten the warm-up or lengthen the run")
    if config.schedule == "step":
        late = [e for e in config.decay_epochs if int(round(e * steps_per_epoch)) >= total_steps]
        if late:
            rate = float(schedule(total_steps - 1))
            warnings.append(f"config.decay_epochs: the decay{'s' if len(late) > 1 else ''} at epoch"
                            f"{'s' if len(late) > 1 else ''} {', '.join(f'{e:g}' for e in late)} "
                            f"{'come' if len(late) > 1 else 'comes'} after the run's last step ({total_steps} steps, "
                            f"{total_steps / steps_per_epoch:.4g} epochs of {steps_per_epoch} steps): "
                            f"{'they do' if len(late) > 1 else 'it does'} not happen, and the learning rate ends at "
                            f"{rate:.4g}; move the decays inside the run or lengthen it")
    return warnings


def decay_mask(params) -> object:
    """True for the weights weight decay applies to: kernels (ndim > 1), not biases, norm parameters or
    per-channel scales (ConvNeXt's layer scale, a (C,) vector here)."""
    return jax.tree_util.tree_map(lambda p: jnp.ndim(p) > 1, params)


def build_optimizer(config: ml_collections.ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
    """SGD (optionally Nesterov), RMSprop or AdamW, with masked weight decay and optional clipping.

    For SGD and RMSprop the decay is added to the gradient (L2, as in the papers and PyTorch);
    AdamW decouples it (Loshchilov & Hutter).
    """
    opt = config.optimizer
    parts = []
    if opt.grad_clip_norm is not None:
        parts.append(optax.clip_by_global_norm(opt.grad_clip_norm))
    if opt.name == "adamw":
        parts.append(optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.epsilon, weight_decay=opt.weight_decay,
                                 mask=decay_mask))
        return optax.chain(*parts)
    if opt.weight_decay:
        parts.append(optax.add_decayed_weights(opt.weight_decay, mask=decay_mask))
    if opt.name == "sgd":
        parts.append(optax.sgd(schedule, momentum=opt.momentum or None, nesterov=opt.nesterov))
    elif opt.name == "rmsprop":
        parts.append(optax.rmsprop(schedule, decay=opt.decay, eps=opt.epsilon, momentum=opt.momentum or None))
    else:
        raise ValueError(f"unknown optimizer {opt.name!r}")
    return optax.chain(*parts)
