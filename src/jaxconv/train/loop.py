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
import pathlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxconv.checkpoint import Checkpoints
from jaxconv.data import pipeline
from jaxconv.data.sources import DatasetSpec, Source, open_dataset
from jaxconv.parallel import AXIS, DataParallel
from jaxconv.registry import get_model
from jaxconv.train.optim import build_optimizer, learning_rate_schedule
from jaxconv.train.report import MetricsWriter, Progress
from jaxconv.train.state import TrainState, create_state
from jaxconv.train.steps import StepOptions, eval_step, train_step


class TrainingDiverged(RuntimeError):
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


def with_batchnorm_axis(model, axis_name: str):
    """The model with its BatchNorm layers synchronised over ``axis_name`` (sync BN mode)."""
    norm = getattr(model, "norm", None)
    if norm is None:
        return model
    return model.clone(norm=partial(norm, axis_name=axis_name))


def build(config: ml_collections.ConfigDict, log: Callable[[str], None] = print) -> Experiment:
    """Opens the dataset (preparing it if needed) and builds the model and optimizer."""
    spec, sources = open_dataset(
        config.dataset,
        data_dir=config.data_dir,
        image_size=config.image_size,
        folder=config.folder,
        shapes_examples=(config.shapes_train_examples, config.shapes_test_examples),
        log=log,
    )
    dtype = jnp.bfloat16 if config.dtype == "bfloat16" else jnp.float32
    model = get_model(config.model, num_classes=spec.num_classes, dtype=dtype, **dict(config.model_options))
    if config.bn_mode == "sync":
        model = with_batchnorm_axis(model, AXIS)
    steps_per_epoch = len(sources["train"]) // config.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"the training split has {len(sources['train'])} examples, fewer than one batch")
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
    options = StepOptions(
        num_classes=spec.num_classes,
        label_smoothing=config.label_smoothing,
        aux_loss_weight=config.aux_loss_weight,
        bn_mode=config.bn_mode,
        ema_decay=config.ema_decay,
        axis_name=AXIS,
    )
    return Experiment(config, spec, sources, model, DataParallel(config.parallel), steps_per_epoch, total_steps,
                      schedule, build_optimizer(config, schedule), preprocess, options)


def initial_state(exp: Experiment) -> TrainState:
    """A fresh state, created directly as mesh-replicated arrays."""
    shape = (1, exp.config.image_size, exp.config.image_size, exp.spec.channels)
    create = partial(create_state, exp.model, exp.tx, input_shape=shape, ema=exp.config.ema_decay is not None)
    rng = jax.random.PRNGKey(exp.config.seed)
    abstract = jax.eval_shape(create, rng)
    shardings = jax.tree_util.tree_map(lambda _: exp.parallel.replicated, abstract)
    return jax.jit(create, out_shardings=shardings)(rng)


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


def device_batches(exp: Experiment, dataset, prefetch: int = 2) -> Iterator:
    """Host batches -> device arrays, a few steps ahead, on a background thread."""
    queue: list = []
    lock = threading.Condition()
    done = object()
    iterator = pipeline.numpy_batches(dataset)

    def producer():
        for batch in iterator:
            arrays = exp.parallel.shard_batch(batch)
            with lock:
                while len(queue) >= prefetch:
                    lock.wait()
                queue.append(arrays)
                lock.notify_all()
        with lock:
            queue.append(done)
            lock.notify_all()

    thread = threading.Thread(target=producer, daemon=True)
    thread.start()
    while True:
        with lock:
            while not queue:
                lock.wait()
            item = queue.pop(0)
            lock.notify_all()
        if item is done:
            return
        yield item


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


@contextlib.contextmanager
def preemption_signal():
    """Yields a flag set by SIGTERM; the loop saves a checkpoint and stops when it is set."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: flag.set())
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)


def train(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *, log: Callable[[str], None] = print,
          progress_stream=None) -> dict:
    """Trains (or resumes) the experiment in ``workdir``; returns the closing summary.

    ``config`` must be validated (``jaxconv.train.config.validate``).
    """
    started = time.time()
    workdir = pathlib.Path(workdir)
    is_main = jax.process_index() == 0
    exp = build(config, log=log)
    checkpoints = Checkpoints(workdir, keep=config.keep_checkpoints)
    state = initial_state(exp)
    start_step = 0
    latest = checkpoints.latest_step()
    if latest is not None:
        try:
            state, meta = checkpoints.restore(latest, state)
        except Exception:
            checkpoints.close()
            raise
        start_step = int(jax.device_get(state.step))
        log(f"resuming from step {start_step} (epoch {meta.get('epoch', 0):.2f}) in {checkpoints.directory}")
    if is_main:  # only once the checkpoint (if any) is known to fit this config
        (workdir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    writer = MetricsWriter(workdir, enabled=is_main)
    total = exp.total_steps
    summary_path = workdir / "summary.json"
    if start_step >= total:
        log(f"already trained for {total} steps; nothing to do (see {summary_path})")
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {"steps": start_step}
        checkpoints.close()
        return summary

    p_train = exp.parallel.compile(partial(train_step, options=exp.options), donate_state=True, returns_state=True)
    p_eval = exp.parallel.compile(partial(eval_step, options=exp.options), donate_state=False, returns_state=False)
    train_ds = pipeline.train_dataset(
        exp.sources["train"],
        exp.preprocess,
        global_batch=config.batch_size,
        seed=config.seed,
        start_step=start_step,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    batches = device_batches(exp, train_ds)
    progress = Progress(total, start_step, exp.steps_per_epoch, enabled=is_main, stream=progress_stream)
    state = exp.parallel.replicate(state)
    pending: list[tuple[int, dict]] = []
    last_eval: dict | None = None
    best = {"top1": -1.0, "step": None}
    status = "completed"
    window_start, window_images = time.time(), 0

    def flush(step: int) -> None:
        nonlocal window_start, window_images
        fetched = [(s, exp.parallel.first(m)) for s, m in pending]
        pending.clear()
        for s, m in fetched:
            if not (np.isfinite(m["loss"]) and np.isfinite(m["grad_norm"])):
                raise TrainingDiverged(
                    f"the training loss became {'NaN' if np.isnan(m['loss']) else 'infinite'} at step {s}"
                    f" (learning rate {float(exp.schedule(s - 1)):.4g})"
                )
        totals = {k: sum(float(m[k]) for _, m in fetched) for k in ("loss", "top1", "top5", "count")}
        elapsed = time.time() - window_start
        record = {
            "step": step,
            "split": "train",
            "epoch": step / exp.steps_per_epoch,
            "loss": totals["loss"] / totals["count"],
            "top1": totals["top1"] / totals["count"],
            "top5": totals["top5"] / totals["count"],
            "learning_rate": float(exp.schedule(step - 1)),
            "grad_norm": float(fetched[-1][1]["grad_norm"]),
            "images_per_sec": window_images / elapsed if elapsed > 0 else 0.0,
        }
        writer.write(record)
        progress.update(step, record)
        window_start, window_images = time.time(), 0

    try:
        with preemption_signal() as preempted:
            for step in range(start_step + 1, total + 1):
                state, metrics = p_train(state, next(batches))
                pending.append((step, metrics))
                window_images += config.batch_size
                last = step == total
                if step % config.log_every_steps == 0 or last or preempted.is_set():
                    flush(step)
                evaluated = None
                if step % config.eval_every_steps == 0 or last:
                    progress.pause()
                    evaluated = evaluate(exp, state, ten_crop=config.ten_crop, limit=config.eval_examples,
                                         compiled=p_eval, progress=progress)
                    evaluated = {"step": step, "split": "eval", "epoch": step / exp.steps_per_epoch, **evaluated}
                    writer.write(evaluated)
                    progress.report_eval(evaluated)
                    last_eval = evaluated
                    if evaluated["top1"] > best["top1"]:
                        best = {"top1": evaluated["top1"], "step": step}
                    window_start = time.time()
                if step % config.checkpoint_every_steps == 0 or last or preempted.is_set():
                    if pending:  # never checkpoint a state whose loss has not been checked
                        flush(step)
                    metrics_for_ckpt = {"top1": evaluated["top1"]} if evaluated else None
                    checkpoints.save(step, exp.parallel.canonical(state), checkpoint_meta(exp, step), metrics_for_ckpt)
                if preempted.is_set() and not last:
                    status = "preempted"
                    progress.close()
                    log(f"SIGTERM: stopped at step {step} and saved a checkpoint; run the same command to resume")
                    break
    finally:
        progress.close()
        checkpoints.wait()
        checkpoints.close()
        writer.close()

    final_step = int(exp.parallel.first(state.step))
    best = best_eval(workdir) or (best if best["step"] is not None else None)
    summary = {
        "status": status,
        "model": config.model,
        "dataset": config.dataset,
        "steps": final_step,
        "epochs": final_step / exp.steps_per_epoch,
        "final_eval": last_eval,
        "best_eval": best,
        "wall_time_s": time.time() - started,
        "devices": exp.parallel.device_count,
        "processes": jax.process_count(),
        "workdir": str(workdir.absolute()),
        "checkpoints": str(checkpoints.directory),
        "metrics": str((workdir / "metrics.jsonl").absolute()),
    }
    if is_main and status == "completed":
        summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def best_eval(workdir: pathlib.Path) -> dict | None:
    """The best evaluation top-1 recorded in WORKDIR/metrics.jsonl, over every (resumed) session."""
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return None
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    evals = [r for r in records if r.get("split") == "eval"]
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
    checkpoints = Checkpoints(workdir, keep=config.keep_checkpoints, read_only=True)
    try:
        steps = checkpoints.all_steps()
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {checkpoints.directory}")
        step = steps[-1] if step is None else step
        if step not in steps:
            raise FileNotFoundError(f"no checkpoint for step {step} in {checkpoints.directory}; "
                                    f"there are {', '.join(map(str, steps))}")
        state, _ = checkpoints.restore(step, initial_state(exp))
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
