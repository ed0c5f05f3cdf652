"""`jaxconv train` and `jaxconv eval`: the loop, top to bottom.

    config -> data -> model -> state (fresh, or restored from WORKDIR/checkpoints) ->
    for each step: train step; every log_every_steps fetch metrics; every eval_every_steps
    evaluate; every checkpoint_every_steps save -> final eval, checkpoint, summary.

Nothing is fetched from the devices between logging points: the steps run ahead while the
host prepares the next batches. SIGTERM (preemption) finishes the current step, saves a
checkpoint and returns normally.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import pathlib
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator
from functools import partial

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxconv.analysis.gradients import kernel_paths, layer_name
from jaxconv.checkpoint import Checkpoints
from jaxconv.data import pipeline
from jaxconv.data.sources import DatasetSpec, Source, open_dataset
from jaxconv.errors import RunFailure
from jaxconv.parallel import AXIS, DataParallel, on_first_process
from jaxconv.models import get_model, runtime_options
from jaxconv.train import transfer
from jaxconv.train.optim import build_optimizer, learning_rate_schedule
from jaxconv.train.report import MetricsWriter, Progress
from jaxconv.train.config import ConfigChanged, ConfigError, check_resume
from jaxconv.train.state import TrainState, create_state
from jaxconv.train.steps import StepOptions, eval_step, train_step
from jaxconv.train.workdir import (LOCK, RunLock, WorkdirBusy, WorkdirError, append_line, atomic_write_text,
                                   ensure_writable, read_records, settle_metrics)

__all__ = ["ConfigChanged", "ConfigError", "TrainingDiverged", "WorkdirBusy", "WorkdirError", "evaluate", "evaluate_checkpoint",
           "train"]


class TrainingDiverged(RunFailure, RuntimeError):
    """The loss became NaN or infinite."""


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
    schedule = learning_rate_schedule(config, steps_per_epoch, total_steps)
    preprocess = pipeline.Preprocess(
        image_size=config.image_size,
        mean=spec.mean,
        std=spec.std,
        augment=config.augment,
        eval_crop=config.eval_crop,
        dtype="bfloat16" if config.dtype == "bfloat16" else "float32",
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
        axis_name=AXIS,
        layer_paths=layer_paths,
    )
    tx, apply_fn = build_optimizer(config, schedule), model.apply
    if config.freeze:
        frozen = transfer.frozen_paths(config.freeze, model, (1, config.image_size, config.image_size, spec.channels))
        tx, apply_fn = transfer.freezing_optimizer(tx, frozen), transfer.freezing_apply(model.apply, frozen)
    return Experiment(config, spec, sources, model, DataParallel(config.parallel), steps_per_epoch, total_steps,
                      schedule, tx, preprocess, options, apply_fn)


def _input_shape(exp: Experiment) -> tuple[int, int, int, int]:
    return (1, exp.config.image_size, exp.config.image_size, exp.spec.channels)


def _state_factory(exp: Experiment) -> tuple[Callable, jax.Array]:
    def create(rng, variables=None):
        state = create_state(exp.model, exp.tx, rng, _input_shape(exp), ema=exp.config.ema_decay is not None)
        if variables is not None:  # pretrained weights (transfer.initial_variables)
            state = transfer.with_variables(state, variables)
        return state.replace(apply_fn=exp.apply_fn or exp.model.apply)

    return create, jax.random.PRNGKey(exp.config.seed)


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


def checkpoint_meta(exp: Experiment, step: int) -> dict:
    return {
        "step": step,
        "epoch": step / exp.steps_per_epoch,
        "model": exp.config.model,
        "dataset": exp.config.dataset,
        "num_classes": exp.spec.num_classes,
        "image_size": exp.config.image_size,
        "seed": exp.config.seed,
        "global_batch": exp.config.batch_size,
        "input_position": {"step": step, "note": "the data of step s is a function of (seed, s)"},
    }


class DeviceBatches:
    """Host batches -> device arrays, a few steps ahead, on a background thread."""

    _DONE = object()

    def __init__(self, exp: Experiment, dataset, prefetch: int = 2):
        self._queue: list = []
        self._lock = threading.Condition()
        self._stopped = False
        self._prefetch = prefetch
        self._exp = exp
        self._iterator = pipeline.numpy_batches(dataset)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._produce, daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        try:
            for batch in self._iterator:
                arrays = self._exp.parallel.shard_batch(batch)
                with self._lock:
                    while len(self._queue) >= self._prefetch and not self._stopped:
                        self._lock.wait()
                    if self._stopped:
                        return
                    self._queue.append(arrays)
                    self._lock.notify_all()
        except BaseException as e:  # surfaced to the consumer
            self._error = e
        with self._lock:
            self._queue.append(self._DONE)
            self._lock.notify_all()

    def __iter__(self):
        return self

    def __next__(self):
        with self._lock:
            while not self._queue:
                self._lock.wait()
            item = self._queue.pop(0)
            self._lock.notify_all()
        if item is self._DONE:
            if self._error is not None:
                raise self._error
            raise StopIteration
        return item

    def close(self) -> None:
        with self._lock:
            self._stopped = True
            self._queue.clear()
            self._lock.notify_all()


def evaluate(exp: Experiment, state, *, ten_crop: bool = False, limit: int | None = None,
             compiled: Callable | None = None, progress: Progress | None = None) -> dict:
    """Loss, top-1/top-5 accuracy and error over every example of the evaluation split, exactly once."""
    dataset, steps = pipeline.eval_dataset(
        exp.sources["eval"],
        exp.preprocess,
        global_batch=exp.config.eval_batch_size,
        ten_crop=ten_crop,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        limit=limit,
    )
    step_fn = compiled or exp.parallel.compile(partial(eval_step, options=exp.options), donate_state=False,
                                               returns_state=False)
    totals = None
    for i, batch in enumerate(pipeline.numpy_batches(dataset)):
        metrics = step_fn(state, exp.parallel.shard_batch(batch))
        totals = metrics if totals is None else jax.tree_util.tree_map(jnp.add, totals, metrics)
        if progress is not None:
            progress.eval_tick(i + 1, steps)
    totals = exp.parallel.first(totals)
    count = float(totals["count"])
    result = {
        "loss": float(totals["loss"]) / count,
        "top1": float(totals["top1"]) / count,
        "top5": float(totals["top5"]) / count,
        "examples": int(round(count)),
    }
    result["error1"], result["error5"] = 1 - result["top1"], 1 - result["top5"]
    return result


@dataclasses.dataclass
class StopRequest:
    """A request to stop early: SIGTERM (preemption) or a first Ctrl-C.

    ``at_step(step)``: whether to save a checkpoint and stop after ``step``. ``before_training()``:
    whether one came while the run was still preparing (nothing to save then). ``reason`` names it.
    """

    at_step: Callable[[int], bool]
    before_training: Callable[[], bool]
    reason: Callable[[], str]


@contextlib.contextmanager
def stop_signals(log: Callable[[str], None] = print):
    """Yields a StopRequest, for the whole run, preparation included.

    One process: SIGTERM, or a first Ctrl-C, sets a flag (the run finishes its step, saves a
    checkpoint and returns normally); a second Ctrl-C ends the process at once, with a line and
    without a traceback (a checkpoint write it cuts short is never restored: see checkpoint.py).
    Several processes: JAX's preemption service (which owns SIGTERM then) makes every process agree
    on the same step, so that they all save the same checkpoint.
    """
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        yield StopRequest(multihost_utils.reached_preemption_sync_point, lambda: False, lambda: "SIGTERM")
        return
    flag, reason = threading.Event(), []
    request = StopRequest(lambda step: flag.is_set(), flag.is_set, lambda: reason[0] if reason else "SIGTERM")
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def on_term(*_):
        reason.append("SIGTERM")
        flag.set()

    def on_interrupt(*_):
        if flag.is_set():
            print("\njaxconv: interrupted again: stopped at once; the last complete checkpoint is kept",
                  file=sys.stderr, flush=True)
            os._exit(130)
        reason.append("Ctrl-C")
        flag.set()
        print("\njaxconv: Ctrl-C: stopping after this step and saving a checkpoint "
              "(Ctrl-C again to stop at once, without saving)", file=sys.stderr, flush=True)

    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield request
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])


@contextlib.contextmanager
def holding(workdir: pathlib.Path, log: Callable[[str], None]):
    """The workdir, locked for this run (by process 0 for all); a second run on it is refused.

    A workdir this call created is removed again when the run fails before writing anything to
    it, so that a mistake caught late leaves nothing behind.
    """
    created = not workdir.exists()
    is_main = jax.process_index() == 0
    lock, error = None, None
    if is_main:
        lock = RunLock(workdir, processes=jax.process_count(), log=log)
        try:
            ensure_writable(workdir)
            lock.acquire()
        except WorkdirError as e:
            lock, error = None, e
    if jax.process_count() > 1:  # every process learns whether process 0 holds the workdir
        from jax.experimental import multihost_utils

        held = bool(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
        if not held and error is None:
            error = WorkdirBusy(f"workdir {workdir}: process 0 could not lock it (see its output)")
    if error is not None:
        raise error
    try:
        yield
    except BaseException:
        if lock is not None:
            lock.release()
            lock = None
            if created and _holds_nothing(workdir):
                shutil.rmtree(workdir, ignore_errors=True)
        raise
    finally:
        if lock is not None:
            lock.release()


def _holds_nothing(workdir: pathlib.Path) -> bool:
    """Only the lock and an empty checkpoints/ folder: what a run that failed before its first step leaves."""
    for path in workdir.iterdir():
        if path.name == LOCK or (path.name == "checkpoints" and path.is_dir() and not any(path.iterdir())):
            continue
        return False
    return True


def _has_checkpoints(workdir: pathlib.Path) -> bool:
    directory = workdir / "checkpoints"
    if directory.exists() and not directory.is_dir():
        raise WorkdirError(f"workdir {workdir}: checkpoints is a file, not the run's checkpoint folder; move it away")
    return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


def _check_resumed_config(config: ml_collections.ConfigDict, workdir: pathlib.Path,
                          allow_changes: Collection[str]) -> dict:
    """The changes this resume makes to the run's config.json (ConfigChanged for those not allowed)."""
    path = workdir / "config.json"
    if not path.exists():
        return {}
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(stored, dict):
            raise ValueError(f"it holds a {type(stored).__name__}")
    except (OSError, ValueError) as e:
        if "all" in allow_changes:
            return {}
        raise ConfigChanged(f"{path} is unreadable ({e}), so this config cannot be checked against the run's; "
                            f"continue with it anyway with --allow-change all") from None
    return check_resume(stored, config, allow_changes, where=f"workdir {workdir}")


def _record_changes(config, workdir: pathlib.Path, step: int, changes: dict, log: Callable[[str], None]) -> None:
    for key, (before, after) in changes.items():
        stretched = key in ("num_train_steps", "num_epochs") and config.schedule != "constant"
        note = f" (the {config.schedule} learning-rate schedule now spans the new length)" if stretched else ""
        log(f"resuming with config.{key} {json.dumps(before)} -> {json.dumps(after)}{note}")
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "step": step,
              "changes": {key: list(values) for key, values in changes.items()}}
    append_line(workdir / "config_changes.jsonl", json.dumps(record))


def train(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *, log: Callable[[str], None] = print,
          progress_stream=None, allow_changes: Collection[str] = ()) -> dict:
    """Trains (or resumes) the experiment in ``workdir``; returns the closing summary.

    ``config`` must be validated (``jaxconv.train.config.validate``). A resume whose config
    changes what the run is raises ConfigChanged unless ``allow_changes`` names the keys
    (or is ``{'all'}``); the changes it makes are recorded in WORKDIR/config_changes.jsonl.
    Another run holding ``workdir`` raises WorkdirBusy.
    """
    workdir = pathlib.Path(workdir)
    with holding(workdir, log), stop_signals(log) as stop:
        return _train(config, workdir, log=log, progress_stream=progress_stream, allow_changes=allow_changes,
                      stop=stop)


def _stopped_before_training(config, workdir: pathlib.Path, step: int, stop: StopRequest,
                             log: Callable[[str], None]) -> dict:
    log(f"{stop.reason()} before the first step: stopped{f' (the checkpoint of step {step} is kept)' if step else ''}; "
        f"run the same command to {'resume' if step else 'start'}")
    return {"status": "preempted", "model": config.model, "dataset": config.dataset, "steps": step, "epochs": 0.0,
            "workdir": str(workdir.absolute())}


def _train(config, workdir: pathlib.Path, *, log, progress_stream, allow_changes, stop: StopRequest) -> dict:
    started = time.time()
    is_main = jax.process_index() == 0
    resuming = _has_checkpoints(workdir)
    changes = _check_resumed_config(config, workdir, allow_changes) if resuming else {}
    if config.init_weights and not resuming:
        transfer.check_source(config.init_weights, config.model)  # a fresh run: before anything is prepared
    exp = build(config, log=log)
    if stop.before_training():  # while the dataset was prepared
        return _stopped_before_training(config, workdir, 0, stop, log)
    checkpoints = Checkpoints(workdir, keep=config.keep_checkpoints, log=log)
    try:
        restored = checkpoints.restore_latest(abstract_state(exp))
    except Exception:
        checkpoints.close()
        raise
    if restored is None:
        try:
            state, start_step = initial_state(exp, log=log), 0
        except Exception:
            checkpoints.close()
            raise
        if resuming:
            log(f"no readable checkpoint is left in {checkpoints.directory} (the broken ones are in "
                f"{checkpoints.broken_directory}): starting over from step 0")
    else:
        state, meta, start_step = restored
        log(f"resuming from step {start_step} (epoch {meta.get('epoch', 0):.2f}) in {checkpoints.directory}")
    if is_main:  # only once the checkpoint (if any) is known to fit this config
        if restored is not None and changes:
            _record_changes(config, workdir, start_step, changes, log)
        atomic_write_text(workdir / "config.json", json.dumps(config.to_dict(), indent=2) + "\n")
        settle_metrics(workdir, start_step, log)
    if stop.before_training():
        checkpoints.close()
        return _stopped_before_training(config, workdir, start_step, stop, log)
    writer = MetricsWriter(workdir, enabled=is_main)
    total = exp.total_steps
    summary_path = workdir / "summary.json"
    if start_step >= total:
        log(f"already trained for {total} steps; nothing to do (see {summary_path})")
        checkpoints.close()
        writer.close()
        return _read_summary(summary_path) or {"steps": start_step}

    p_train = exp.parallel.compile(partial(train_step, options=exp.options), donate_state=True, returns_state=True)
    p_eval = exp.parallel.compile(partial(eval_step, options=exp.options), donate_state=False, returns_state=False)

    def batches_from(step: int) -> DeviceBatches:
        dataset = pipeline.train_dataset(
            exp.sources["train"], exp.preprocess, global_batch=config.batch_size, seed=config.seed, start_step=step,
            process_index=jax.process_index(), process_count=jax.process_count(),
        )
        return DeviceBatches(exp, dataset)

    progress = Progress(total, start_step, exp.steps_per_epoch, enabled=is_main, stream=progress_stream)
    state = exp.parallel.replicate(state)
    batches = batches_from(start_step)
    pending: list[tuple[int, dict]] = []
    last_eval: dict | None = None
    status = "completed"
    window = {"start": time.time(), "images": 0}

    def flush(step: int) -> None:
        """Fetches the pending metrics: checks them for NaN/Inf, logs them."""
        fetched = [(s, exp.parallel.first(m)) for s, m in pending]
        pending.clear()
        for s, m in fetched:
            if not (np.isfinite(m["loss"]) and np.isfinite(m["grad_norm"])):
                raise TrainingDiverged(
                    f"the training loss became {'NaN' if np.isnan(m['loss']) else 'infinite'} at step {s}"
                    f" (learning rate {float(exp.schedule(s - 1)):.4g})"
                )
        totals = {k: sum(float(m[k]) for _, m in fetched) for k in ("loss", "top1", "top5", "count")}
        elapsed = time.time() - window["start"]
        record = {
            "step": step,
            "split": "train",
            "epoch": step / exp.steps_per_epoch,
            "loss": totals["loss"] / totals["count"],
            "top1": totals["top1"] / totals["count"],
            "top5": totals["top5"] / totals["count"],
            "learning_rate": float(exp.schedule(step - 1)),
            "grad_norm": float(fetched[-1][1]["grad_norm"]),
            "images_per_sec": window["images"] / elapsed if elapsed > 0 else 0.0,
        }
        if exp.options.layer_paths:  # the last step's, as grad_norm
            norms = fetched[-1][1]["layer_grad_norms"]
            record["layer_grad_norms"] = {layer_name(p): float(n) for p, n in zip(exp.options.layer_paths, norms)}
        writer.write(record)
        progress.update(step, record)
        window.update(start=time.time(), images=0)

    def roll_back(error: TrainingDiverged) -> int:
        """Restores the last good checkpoint with a lower learning rate; returns its step."""
        nonlocal state, batches
        # Counted on the live state: the checkpoint rolled back to predates every rollback after it.
        rollbacks = int(exp.parallel.first(state.rollbacks))
        lr_scale = float(exp.parallel.first(state.lr_scale)) * config.rollback_lr_factor
        if config.nan_policy != "rollback" or rollbacks >= config.max_rollbacks:
            if config.nan_policy == "rollback":
                raise TrainingDiverged(f"{error} after {rollbacks} rollbacks (max_rollbacks={config.max_rollbacks})")
            raise error
        batches.close()
        checkpoints.wait()
        restored = checkpoints.restore_latest(abstract_state(exp))
        if restored is None:
            raise TrainingDiverged(f"{error}, and there is no checkpoint to roll back to")
        good, _, good_step = restored
        good = good.replace(**exp.parallel.put_replicated({
            "lr_scale": np.asarray(lr_scale, good.lr_scale.dtype),
            "rollbacks": np.asarray(rollbacks + 1, good.rollbacks.dtype),
        }))
        progress.pause()
        log(f"{error}: rolled back to step {good_step} with the learning rate x{lr_scale:.3g} "
            f"(rollback {rollbacks + 1} of at most {config.max_rollbacks})")
        writer.write({"step": good_step, "split": "rollback", "lr_scale": lr_scale, "rollbacks": rollbacks + 1})
        state = exp.parallel.replicate(good)
        batches = batches_from(good_step)
        return good_step

    failed = True
    try:
        step = start_step
        while step < total:
            step += 1
            state, metrics = p_train(state, next(batches))
            pending.append((step, metrics))
            window["images"] += config.batch_size
            last = step == total
            stopping = stop.at_step(step)
            save = step % config.checkpoint_every_steps == 0 or last or stopping
            try:
                if step % config.log_every_steps == 0 or last or (save and pending):
                    flush(step)  # never checkpoint a state whose loss has not been checked
            except TrainingDiverged as e:
                step = roll_back(e)
                continue
            evaluated = None
            if step % config.eval_every_steps == 0 or last:
                progress.pause()
                evaluated = evaluate(exp, state, ten_crop=config.ten_crop, limit=config.eval_examples,
                                     compiled=p_eval, progress=progress)
                evaluated = {"step": step, "split": "eval", "epoch": step / exp.steps_per_epoch, **evaluated}
                writer.write(evaluated)
                progress.report_eval(evaluated)
                last_eval = evaluated
                window["start"] = time.time()
            if save:
                metrics_for_ckpt = {"top1": evaluated["top1"]} if evaluated else None
                checkpoints.save(step, exp.parallel.canonical(state), checkpoint_meta(exp, step), metrics_for_ckpt)
            if stopping and not last:
                status = "preempted"
                progress.close()
                log(f"{stop.reason()}: stopped at step {step} and saved a checkpoint; run the same command to "
                    f"resume")
                break
        failed = False
    finally:
        batches.close()
        progress.close()
        try:
            checkpoints.wait()
        except Exception:
            if not failed:
                raise
        finally:
            checkpoints.close()
            writer.close()

    final_step = int(exp.parallel.first(state.step))
    summary = {
        "status": status,
        "model": config.model,
        "dataset": config.dataset,
        "steps": final_step,
        "epochs": final_step / exp.steps_per_epoch,
        "final_eval": last_eval,
        "best_eval": best_eval(workdir) if is_main else None,
        "rollbacks": int(exp.parallel.first(state.rollbacks)),
        "wall_time_s": time.time() - started,
        "devices": exp.parallel.device_count,
        "processes": jax.process_count(),
        "workdir": str(workdir.absolute()),
        "checkpoints": str(checkpoints.directory),
        "metrics": str((workdir / "metrics.jsonl").absolute()),
    }
    if is_main and status == "completed":
        atomic_write_text(summary_path, json.dumps(summary, indent=2) + "\n")
    return summary


def _read_summary(path: pathlib.Path) -> dict | None:
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def best_eval(workdir: pathlib.Path) -> dict | None:
    """The best evaluation top-1 recorded in WORKDIR/metrics.jsonl, over every (resumed) session."""
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return None
    records, _ = read_records(path)
    evals = [r for r in records if r.get("split") == "eval" and isinstance(r.get("top1"), (int, float))]
    if not evals:
        return None
    top = max(evals, key=lambda r: r["top1"])
    return {"top1": top["top1"], "step": top["step"]}


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *, step: int | None = None,
                        split: str | None = None, ten_crop: bool = False, log: Callable[[str], None] = print) -> dict:
    """Evaluates the latest (or given) checkpoint of ``workdir`` on the eval (or given) split."""
    exp = build(config, log=log)
    if split is not None and split != exp.spec.eval_split:
        exp = _with_split(exp, split)
    # Read-only: an evaluation moves and cleans nothing, so it is safe beside a run that is still training.
    checkpoints = Checkpoints(workdir, read_only=True, log=log)
    try:
        steps = checkpoints.all_steps()
        if not steps:
            raise FileNotFoundError(f"no usable checkpoint in {checkpoints.directory}")
        if step is not None and step not in steps:
            raise FileNotFoundError(f"no checkpoint for step {step} in {checkpoints.directory}; "
                                    f"there are {', '.join(map(str, steps))}")
        restored = checkpoints.restore_latest(abstract_state(exp), step=step)
        if restored is None:
            raise FileNotFoundError(f"no readable checkpoint in {checkpoints.directory}: every one is broken")
        state, _, step = restored
    finally:
        checkpoints.close()
    result = evaluate(exp, exp.parallel.replicate(state), ten_crop=ten_crop)
    return {"step": step, "split": split or exp.spec.eval_split, "ten_crop": ten_crop, **result}


def _with_split(exp: Experiment, split: str) -> Experiment:
    from jaxconv.data.sources import TFDSSource, folder_splits, tfds_builder

    config = exp.config
    if config.dataset == "folder":
        sources = folder_splits(config.folder)
        if split not in sources:
            raise ValueError(f"the folder dataset has splits {', '.join(sources)}, not {split!r}")
        return dataclasses.replace(exp, sources={**exp.sources, "eval": sources[split]})
    builder = tfds_builder(exp.spec, config.data_dir, image_size=config.image_size,
                           shapes_examples=(config.shapes_train_examples, config.shapes_test_examples))
    if split not in builder.info.splits:
        raise ValueError(f"{config.dataset} has splits {', '.join(builder.info.splits)}, not {split!r}")
    return dataclasses.replace(exp, sources={**exp.sources, "eval": TFDSSource(builder, split, exp.spec)})
