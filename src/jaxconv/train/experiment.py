"""An experiment assembled once from its config: data, model, optimizer and parallel runner.

``build(config)`` opens the dataset (preparing it if needed) and makes everything the loop and
an evaluation need; ``initial_state`` and ``abstract_state`` make the training state (fresh, or
the target a checkpoint is restored into); ``train_batches`` is the input from any step on.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import ml_collections

from jaxconv.analysis.gradients import kernel_paths
from jaxconv.data import pipeline
from jaxconv.data.prefetch import DeviceBatches
from jaxconv.data.sources import DatasetSpec, Source, open_dataset
from jaxconv.models import get_model, runtime_options
from jaxconv.parallel import AXIS, DataParallel, on_first_process
from jaxconv.train import freezing, transfer
from jaxconv.train.config import ConfigError
from jaxconv.train.keys import INT32_MAX
from jaxconv.train.optim import build_optimizer, learning_rate_schedule
from jaxconv.train.state import TrainState, create_state
from jaxconv.train.steps import StepOptions


@dataclasses.dataclass
class Experiment:
    """Everything built from a config: data, model, optimizer, parallel runner."""

    config: ml_collections.ConfigDict
    spec: DatasetSpec
    sources: dict[str, Source]
    model: object
    parallel: DataParallel
    steps_per_epoch: int
    total_steps: int
    schedule: Callable
    tx: object
    preprocess: pipeline.Preprocess
    options: StepOptions
    apply_fn: Callable | None = None  # the model's apply; with config.freeze, one that keeps frozen parts fixed
    # Steps of this batch size the run's position is ahead of its step count: non-zero after a resume with
    # another batch_size (``rebase``). Data, schedule, epochs and length follow step + step_offset.
    step_offset: int = 0

    def epoch(self, step: int) -> float:
        """The epochs of training data a run at ``step`` has seen."""
        return (step + self.step_offset) / self.steps_per_epoch


def build(config: ml_collections.ConfigDict, log: Callable[[str], None] = print) -> Experiment:
    """Opens the dataset (preparing it if needed) and builds the model and optimizer."""
    spec, sources = open_dataset(
        config.dataset,
        data_dir=config.data_dir,
        image_size=config.image_size,
        folder=config.folder,
        shapes_examples=(config.shapes_train_examples, config.shapes_test_examples),
        log=log,
        prepare_first=on_first_process if jax.process_count() > 1 else None,
    )
    dtype = jnp.bfloat16 if config.dtype == "bfloat16" else jnp.float32
    options = {**transfer.pretrained_options(config.model, config.init_weights), **dict(config.model_options)}
    runtime = runtime_options(config.model, dtype=dtype, axis_name=AXIS if config.bn_mode == "sync" else None)
    model = get_model(config.model, num_classes=spec.num_classes, **runtime, **options)
    bn_mode = config.bn_mode
    if bn_mode == "sync" and "axis_name" not in runtime:  # a user's model that does not take the axis
        bn_mode = "local"
        images = jax.ShapeDtypeStruct((1, config.image_size, config.image_size, spec.channels), dtype)
        if "batch_stats" in jax.eval_shape(partial(model.init, train=False), jax.random.key(0), images):
            log(f"{config.model} has no axis_name field, so its BatchNorm normalises each device's share of the "
                f"batch (local BatchNorm; running statistics averaged over the devices after each step)")
    steps_per_epoch = len(sources["train"]) // config.batch_size
    if steps_per_epoch < 1:
        raise ConfigError("batch_size", config.batch_size, f"must be at most the {len(sources['train'])} examples "
                                                           f"of {config.dataset}'s training split")
    total_steps = config.num_train_steps or int(math.ceil(config.num_epochs * steps_per_epoch))
    for key, epochs in (("num_epochs", None if config.num_train_steps else config.num_epochs),
                        ("warmup_epochs", config.warmup_epochs),
                        ("decay_epochs", max(config.decay_epochs, default=0) if config.schedule == "step" else None)):
        if epochs is not None and epochs * steps_per_epoch > INT32_MAX:  # steps count in int32
            raise ConfigError(key, config[key], f"is {epochs * steps_per_epoch:.3g} steps of {steps_per_epoch} per "
                                                f"epoch; at most {INT32_MAX:,} steps fit a run")
    schedule = learning_rate_schedule(config, steps_per_epoch, total_steps)
    preprocess = pipeline.Preprocess(
        image_size=config.image_size,
        mean=spec.mean,
        std=spec.std,
        augment=config.augment,
        auto_augment=config.auto_augment,
        eval_crop=config.eval_crop,
    )
    layer_paths = None
    if config.log_layer_grad_norms:  # traced outside the mesh: on the model without its BatchNorm axis
        images = jax.ShapeDtypeStruct((2, config.image_size, config.image_size, spec.channels), dtype)
        local = model.clone(axis_name=None) if "axis_name" in runtime else model
        abstract = jax.eval_shape(partial(local.init, train=False), jax.random.key(0), images)
        layer_paths = tuple(kernel_paths(local, abstract, images))
    options = StepOptions(
        num_classes=spec.num_classes,
        label_smoothing=config.label_smoothing,
        aux_loss_weight=config.aux_loss_weight,
        bn_mode=bn_mode,
        ema_decay=config.ema_decay,
        ema_warmup_steps=int(round(config.warmup_epochs * steps_per_epoch)),
        axis_name=AXIS,
        layer_paths=layer_paths,
        accumulation_steps=config.grad_accumulation_steps,
        mixup_alpha=config.mixup_alpha,
        cutmix_alpha=config.cutmix_alpha,
        random_erasing=config.random_erasing,
        mean=spec.mean,
        std=spec.std,
        input_dtype="bfloat16" if config.dtype == "bfloat16" else "float32",
    )
    tx, apply_fn = _optimizer(config, schedule, model, spec)
    return Experiment(config, spec, sources, model, DataParallel(config.parallel), steps_per_epoch, total_steps,
                      schedule, tx, preprocess, options, apply_fn)


def _optimizer(config: ml_collections.ConfigDict, schedule: Callable, model, spec: DatasetSpec) -> tuple[object, Callable]:
    """The optimizer and the apply function the state trains with (frozen parts kept fixed)."""
    tx, apply_fn = build_optimizer(config, schedule), model.apply
    if config.freeze:
        frozen = freezing.frozen_paths(config.freeze, model, (1, config.image_size, config.image_size, spec.channels))
        tx, apply_fn = freezing.freezing_optimizer(tx, frozen), freezing.freezing_apply(model.apply, frozen)
    return tx, apply_fn


def resumed_offset(exp: Experiment, meta: dict) -> int:
    """The step offset a run restored from a checkpoint with ``meta`` continues with: the checkpoint's own, or,
    when it was written with another batch size, the step of this batch size at the epoch it had reached."""
    if meta.get("global_batch", exp.config.batch_size) == exp.config.batch_size:
        return int(meta.get("step_offset", 0))
    return int(round(meta["epoch"] * exp.steps_per_epoch)) - int(meta["step"])


def rebase(exp: Experiment, offset: int) -> Experiment:
    """``exp`` for a run whose position is ``offset`` steps ahead of its step count (a resume with another
    batch_size): the schedule and the length are those of this batch size, taken from the epoch reached
    (a length in steps stays the run's count of steps; one in epochs is counted in them)."""
    if offset == exp.step_offset:
        return exp
    config = exp.config
    position_total = (config.num_train_steps + offset if config.num_train_steps
                      else int(math.ceil(config.num_epochs * exp.steps_per_epoch)))
    by_position = learning_rate_schedule(config, exp.steps_per_epoch, position_total)
    schedule = lambda count: by_position(count + offset)  # optax counts the run's steps
    tx, apply_fn = _optimizer(config, schedule, exp.model, exp.spec)
    options = dataclasses.replace(exp.options, ema_warmup_steps=int(round(config.warmup_epochs * exp.steps_per_epoch))
                                  - offset)
    return dataclasses.replace(exp, step_offset=offset, total_steps=position_total - offset, schedule=schedule,
                               tx=tx, apply_fn=apply_fn, options=options)


def _input_shape(exp: Experiment) -> tuple[int, int, int, int]:
    return (1, exp.config.image_size, exp.config.image_size, exp.spec.channels)


def _state_factory(exp: Experiment) -> tuple[Callable, jax.Array]:
    def create(rng, variables=None):
        state = create_state(exp.model, exp.tx, rng, _input_shape(exp), ema=exp.config.ema_decay is not None)
        if variables is not None:  # pretrained weights (transfer.initial_variables)
            state = transfer.with_variables(state, variables)
        return state.replace(apply_fn=exp.apply_fn or exp.model.apply)

    return create, jax.random.PRNGKey(exp.config.seed)


def param_count(exp: Experiment) -> int:
    """The number of trainable and frozen parameters of the run's model (BatchNorm statistics not counted)."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(abstract_state(exp).params))


def abstract_state(exp: Experiment) -> TrainState:
    """The shapes, dtypes and (replicated) shardings of the state: the target of a restore, at no compute."""
    create, rng = _state_factory(exp)
    return jax.tree_util.tree_map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=exp.parallel.replicated),
        jax.eval_shape(create, rng),
    )


def initial_state(exp: Experiment, log: Callable[[str], None] = print) -> TrainState:
    """A fresh state, created directly as mesh-replicated arrays; from ``config.init_weights`` when set."""
    create, rng = _state_factory(exp)
    shardings = jax.tree_util.tree_map(lambda _: exp.parallel.replicated, jax.eval_shape(create, rng))
    if not exp.config.init_weights:
        return jax.jit(create, out_shardings=shardings)(rng)
    variables = transfer.initial_variables(exp.config.init_weights, exp.config.model, exp.config.model_options,
                                           exp.model, _input_shape(exp), log=log)
    return jax.jit(create, out_shardings=shardings)(rng, exp.parallel.put_replicated(variables))


def checkpoint_meta(exp: Experiment, step: int, wall_time_s: float | None = None) -> dict:
    """What a checkpoint records beside the state; ``wall_time_s``: the run's time so far, over every session
    (None where an earlier session's is unknown)."""
    return {
        "step": step,
        "wall_time_s": wall_time_s,
        "epoch": exp.epoch(step),
        "step_offset": exp.step_offset,
        "model": exp.config.model,
        "dataset": exp.config.dataset,
        "num_classes": exp.spec.num_classes,
        "image_size": exp.config.image_size,
        "seed": exp.config.seed,
        "global_batch": exp.config.batch_size,
        "input_position": {"step": step + exp.step_offset, "global_batch": exp.config.batch_size,
                           "note": "the data at position p is a function of (seed, p, global_batch)"},
    }


def train_batches(exp: Experiment, step: int) -> DeviceBatches:
    """The training input from ``step`` on, on the devices: the batches an uninterrupted run sees there."""
    dataset = pipeline.train_dataset(
        exp.sources["train"], exp.preprocess, global_batch=exp.config.batch_size, seed=exp.config.seed,
        start_step=step + exp.step_offset, process_index=jax.process_index(), process_count=jax.process_count(),
    )
    return DeviceBatches(pipeline.numpy_batches(dataset), exp.parallel.shard_batch)


__all__ = ["Experiment", "abstract_state", "build", "checkpoint_meta", "initial_state", "rebase", "resumed_offset",
           "train_batches"]
