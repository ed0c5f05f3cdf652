"""`jaxconv train`: the driver, top to bottom.

    train(config, workdir)
      hold the workdir (one run at a time) and take SIGTERM / Ctrl-C as "stop after this step"
      prepare: check a resume's config, build the experiment (data, model, optimizer), restore
               the latest checkpoint or create the state
      run the steps; after each one, the periodic actions that are due, in this order:
        LogMetrics      every log_every_steps, at the end and before any checkpoint: fetch the
                        metrics, check them for NaN/Inf, log them
        RollBack        when LogMetrics finds NaN/Inf: the last good checkpoint, a lower learning rate
        Evaluate        every eval_every_steps and at the end
        SaveCheckpoint  every checkpoint_every_steps, at the end, and when asked to stop
      write summary.json

Nothing is fetched from the devices between logging points: the steps run ahead while the
host prepares the next batches. The actions are written here rather than with clu's
``periodic_actions``, whose step counter may not go back (a rollback does).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
import time
from collections.abc import Callable, Collection
from functools import partial

import jax
import ml_collections
import numpy as np

from jaxconv.analysis.gradients import layer_name
from jaxconv.checkpoint import Checkpoints
from jaxconv.data.prefetch import DeviceBatches
from jaxconv.errors import RunFailure
from jaxconv.parallel import check_same_on_every_process
from jaxconv.train.config import ConfigError, flat
from jaxconv.train.evaluate import best_eval, evaluate, evaluate_checkpoint
from jaxconv.train.experiment import (Experiment, abstract_state, build, checkpoint_meta, initial_state, param_count,
                                      rebase, resumed_offset, train_batches)
from jaxconv.train.optim import check_decay_epochs, schedule_warnings
from jaxconv.train.report import MetricsWriter, Progress
from jaxconv.train.resume import ConfigChanged, changes_on_resume, check_dataset, record_changes, record_dataset
from jaxconv.train.signals import StopRequest, stop_signals
from jaxconv.train.state import TrainState
from jaxconv.train.steps import eval_step, train_step
from jaxconv.train.workdir import WorkdirBusy, WorkdirError, atomic_write_text, has_checkpoints, holding, \
    read_records, read_summary, settle_metrics

__all__ = ["ConfigChanged", "ConfigError", "TrainingDiverged", "WorkdirBusy", "WorkdirError", "evaluate",
           "evaluate_checkpoint", "train"]


class DataReadFailure(RunFailure, RuntimeError):
    """The input pipeline could not read an example that it could when the run started."""


class TrainingDiverged(RunFailure, RuntimeError):
    """The loss became NaN or infinite at ``step``."""

    def __init__(self, message: str, step: int | None = None):
        super().__init__(message)
        self.step = step


def train(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *, log: Callable[[str], None] = print,
          progress_stream=None, allow_changes: Collection[str] = ()) -> dict:
    """Trains (or resumes) the experiment in ``workdir``; returns the closing summary.

    ``config`` must be validated (``jaxconv.train.config.validate``). A resume whose config
    changes what the run is raises ConfigChanged unless ``allow_changes`` names the keys
    (or is ``{'all'}``); the changes it makes are recorded in WORKDIR/config_changes.jsonl.
    Another run holding ``workdir`` raises WorkdirBusy.
    """
    workdir = pathlib.Path(workdir)
    started = time.time()
    settings = {k: v for k, v in flat(config.to_dict()).items() if k != "data_dir"}  # a data copy per host is fine
    # --allow-change decides what a resume refuses: one process refusing alone left the others waiting for it
    check_same_on_every_process({**settings, "workdir": str(workdir.absolute()),
                                 "--allow-change": sorted(allow_changes)})
    with holding(workdir, log), stop_signals(log) as stop:
        prepared = _prepare(config, workdir, log, allow_changes, stop)
        if isinstance(prepared, dict):  # stopped, or nothing left to do
            return prepared
        run = prepared
        run.started = started
        try:
            run.status = _run_steps(run, stop, log, progress_stream)
        except TrainingDiverged as error:
            run.status, run.failure = "diverged", error
            raise
        except Exception as error:
            tf = sys.modules.get("tensorflow")  # the input pipelines' errors: a file gone or changed meanwhile
            if (tf is None or not isinstance(error, tf.errors.OpError)
                    or isinstance(error, tf.errors.ResourceExhaustedError)):  # out of memory: cli.main's one line
                raise
            first = str(getattr(error, "message", "") or error).strip().splitlines()
            raise DataReadFailure(
                f"reading the data failed at step {run.step} ({type(error).__name__}: {first[0] if first else ''}): "
                f"a file changed or went away while the run read it; the last checkpoint is kept, and the same "
                f"command resumes once the data is whole") from None
        finally:
            run.close()
            if run.status == "diverged":  # recorded, so that a report can tell "diverged" from "killed"
                _summary(run, workdir, started)
        return _summary(run, workdir, started)


# -- the run state -------------------------------------------------------------------------------

EMPTY_WINDOW = {"loss": 0.0, "top1": 0.0, "top5": 0.0, "count": 0.0}


@dataclasses.dataclass
class Run:
    """What the loop changes as it goes: the state and its step, the input, metrics not yet fetched."""

    exp: Experiment
    state: TrainState
    step: int
    checkpoints: Checkpoints
    writer: MetricsWriter
    progress: Progress | None = None
    batches: DeviceBatches | None = None
    pending: list[tuple[int, dict]] = dataclasses.field(default_factory=list)  # (step, metrics on the devices)
    logged_step: int = 0
    window_start: float = 0.0  # images/s is measured from here: the last logging point or evaluation
    window_images: int = 0
    # The summed metrics of the steps since the last training record, each step added in order: a checkpoint
    # keeps them, so that a resumed run logs the same windows, to the bit, as one that never stopped.
    window: dict = dataclasses.field(default_factory=lambda: dict(EMPTY_WINDOW))
    window_last: dict | None = None  # the window's last step's metrics (its gradient norms are logged)
    last_eval: dict | None = None
    started: float = 0.0  # when this session started (time.time())
    earlier_wall_time_s: float | None = 0.0  # the earlier sessions' time, up to the checkpoint resumed (None: unknown)
    lr_scale: float = 1.0  # the state's learning-rate scale (lowered by each rollback), kept here to log the rate applied
    status: str = "failed"  # until the steps end: "completed", "preempted" or "diverged"
    failure: TrainingDiverged | None = None  # why, and at which step, it diverged

    def completed_step(self) -> int:
        """The last step the devices have finished, asked without waiting for them."""
        for step, metrics in reversed(list(self.pending)):
            if all(leaf.is_ready() for leaf in jax.tree_util.tree_leaves(metrics) if hasattr(leaf, "is_ready")):
                return step
        return self.logged_step

    def wall_time_s(self) -> float | None:
        """The run's wall time so far: this session's and the earlier sessions' up to the checkpoint it resumed."""
        return None if self.earlier_wall_time_s is None else self.earlier_wall_time_s + time.time() - self.started

    def restart_input(self, step: int) -> None:
        if self.batches is not None:
            self.batches.close()
        self.batches = train_batches(self.exp, step)
        self.window_start, self.window_images = time.time(), 0

    def close(self) -> None:
        failed = self.status in ("failed", "diverged")
        if self.batches is not None:
            self.batches.close()
        if self.progress is not None:
            self.progress.close()
        try:
            self.checkpoints.wait()
        except Exception:
            if not failed:
                raise
        finally:
            self.checkpoints.close()
            self.writer.close()


# -- before the first step ------------------------------------------------------------------------

def _prepare(config, workdir: pathlib.Path, log, allow_changes, stop: StopRequest) -> Run | dict:
    """The experiment and its state, fresh or restored; a summary instead when there is nothing to train."""
    is_main = jax.process_index() == 0
    resuming = has_checkpoints(workdir)
    changes = changes_on_resume(config, workdir, allow_changes) if resuming else {}
    if config.init_weights and not resuming:
        from jaxconv.train import transfer

        transfer.check_source(config.init_weights, config.model)  # a fresh run: before anything is prepared
    with stop.preparing():  # a signal stops the dataset's preparation at once
        exp = build(config, log=log)
    if stop.before_training():  # while the model was built
        return _stopped_before_training(config, workdir, 0, stop, log)
    check_decay_epochs(config, exp.steps_per_epoch)
    if resuming:
        check_dataset(workdir, exp.sources, log)
    checkpoints = Checkpoints(workdir, keep=config.keep_checkpoints, log=log)
    try:
        began = time.time()
        restored = checkpoints.restore_latest(abstract_state(exp))
        earlier_wall_time_s, meta = 0.0, None
        if restored is None:
            state, start_step = initial_state(exp, log=log), 0
            if resuming:
                log(f"no readable checkpoint is left in {checkpoints.directory} (the broken ones are in "
                    f"{checkpoints.broken_directory}): starting over from step 0")
        else:
            state, meta, start_step = restored
            earlier_wall_time_s = meta.get("wall_time_s")  # None from a checkpoint of an older jaxconv
            log(f"resuming from step {start_step} (epoch {meta.get('epoch', 0):.2f}) in {checkpoints.directory} "
                f"(restored in {time.time() - began:.1f} s)")
            exp = rebase(exp, resumed_offset(exp, meta))
            state = state.replace(tx=exp.tx, apply_fn=exp.apply_fn)
            if meta.get("global_batch", config.batch_size) != config.batch_size:
                log(f"batch_size {meta['global_batch']} -> {config.batch_size}: the run goes on from epoch "
                    f"{meta['epoch']:.2f} of its data and schedule, as a run of batch {config.batch_size} at its step "
                    f"{start_step + exp.step_offset} would ({exp.total_steps} steps in all now)")
        length = [key for key in ("num_train_steps", "num_epochs") if key in changes]
        if restored is not None and length and exp.total_steps < start_step:
            key = "num_train_steps" if config.num_train_steps else "num_epochs"
            raise ConfigError(key, config[key], f"is {exp.total_steps} steps, and the run in {workdir} is at step "
                                                f"{start_step} already: a resume keeps or lengthens a run; give "
                                                f"{start_step} steps or more (jaxconv eval --step evaluates an earlier "
                                                f"checkpoint)")
        if is_main:  # only once the checkpoint (if any) is known to fit this config
            if restored is not None and changes:
                record_changes(config, workdir, start_step, changes, log)
            atomic_write_text(workdir / "config.json", json.dumps(config.to_dict(), indent=2) + "\n")
            record_dataset(workdir, exp.sources)
            settle_metrics(workdir, start_step, log)
    except BaseException:
        checkpoints.close()
        raise
    if stop.before_training():
        checkpoints.close()
        return _stopped_before_training(config, workdir, start_step, stop, log)
    if start_step >= exp.total_steps:
        checkpoints.close()
        summary = read_summary(workdir)
        if summary is None:
            summary = _late_summary(exp, state, workdir, checkpoints.directory, earlier_wall_time_s)
            log(f"the run had finished (checkpoint {start_step}) but stopped before writing its summary; "
                f"wrote {workdir / 'summary.json'} from its records")
        else:
            log(f"already trained for {start_step} steps; nothing to do (see {workdir / 'summary.json'})")
        return summary
    by_position = lambda position: exp.schedule(position - exp.step_offset)
    for warning in schedule_warnings(config, by_position, exp.steps_per_epoch, exp.total_steps + exp.step_offset):
        log(f"warning: {warning}")
    try:
        writer = MetricsWriter(workdir, enabled=is_main, hparams=config.to_dict())
        writer.restart_at(start_step)  # TensorBoard drops an earlier session's steps after the checkpoint
    except BaseException:
        checkpoints.close()
        raise
    run = Run(exp, exp.parallel.replicate(state), start_step, checkpoints, writer, logged_step=start_step,
              earlier_wall_time_s=earlier_wall_time_s, window=logged_window(meta))
    run.lr_scale = float(exp.parallel.first(run.state.lr_scale))
    if run.lr_scale != 1.0:
        rollbacks = int(exp.parallel.first(run.state.rollbacks))
        log(f"the checkpoint keeps its learning-rate scale x{run.lr_scale:.3g} from {rollbacks} NaN rollback(s): "
            f"learning_rate {config.learning_rate:g} applies as {config.learning_rate * run.lr_scale:.4g} "
            f"(the schedule's rates times {run.lr_scale:.3g})")
    return run


def _stopped_before_training(config, workdir: pathlib.Path, step: int, stop: StopRequest,
                             log: Callable[[str], None]) -> dict:
    log(f"{stop.reason()} before the first step: stopped{f' (the checkpoint of step {step} is kept)' if step else ''}; "
        f"run the same command to {'resume' if step else 'start'}")
    return {"status": "preempted", "model": config.model, "dataset": config.dataset, "steps": step, "epochs": 0.0,
            "workdir": str(workdir.absolute())}


# -- the steps ------------------------------------------------------------------------------------

def _run_steps(run: Run, stop: StopRequest, log: Callable[[str], None], progress_stream) -> str:
    """Trains up to the last step, or until asked to stop; returns the run's status."""
    exp, config = run.exp, run.exp.config
    total = exp.total_steps
    run.progress = Progress(total, run.step, exp.steps_per_epoch, step_offset=exp.step_offset,
                            enabled=jax.process_index() == 0,
                            stream=progress_stream)
    p_train = exp.parallel.compile(partial(train_step, options=exp.options), donate_state=True, returns_state=True)
    p_eval = exp.parallel.compile(partial(eval_step, options=exp.options), donate_state=False, returns_state=False)
    log_metrics = LogMetrics(config.log_every_steps)
    roll_back = RollBack(config.nan_policy, config.max_rollbacks, config.rollback_lr_factor, log)
    evaluation = Evaluate(config.eval_every_steps, p_eval, ten_crop=config.ten_crop, limit=config.eval_examples)
    save = SaveCheckpoint(config.checkpoint_every_steps)
    run.restart_input(run.step)
    _first_step(run, p_train)
    while True:
        last, stopping = run.step == total, stop.at_step(run.step)
        # also at every evaluation, so that the best evaluation's checkpoint can be kept (summary.json names it)
        saving = save.due(run.step, last, stopping) or evaluation.due(run.step, last)
        logging_due = log_metrics.due(run.step, last)
        run.checkpoints.seal_finished(collective=logging_due)  # a run killed later keeps it sealed
        try:
            if logging_due:
                log_metrics(run)
            elif saving:
                log_metrics.check(run)  # never checkpoint a state whose loss has not been checked
        except TrainingDiverged as error:
            roll_back(run, error)
            if run.step < total:
                _step(run, p_train)
            continue
        if evaluation.due(run.step, last):
            evaluation(run)
        if saving:
            save(run)
        if last:
            return "completed"
        if stopping:
            run.progress.close()
            run.checkpoints.wait()  # the line says it is saved: a second Ctrl-C before this made the line untrue
            log(f"{stop.reason()}: stopped at step {run.step} and saved a checkpoint; run the same command to resume")
            return "preempted"
        _step(run, p_train)


def _step(run: Run, p_train) -> None:
    run.state, metrics = p_train(run.state, next(run.batches))
    run.step += 1
    run.pending.append((run.step, metrics))
    run.window_images += run.exp.config.batch_size


def _first_step(run: Run, p_train) -> None:
    """The first step of this session, which compiles the train step (its time is shown, and left out of img/s)."""
    batch = next(run.batches)
    with run.progress.phase("compiling the train step", "compiled the train step"):
        run.state, metrics = p_train(run.state, batch)
    run.step += 1
    run.pending.append((run.step, metrics))
    run.window_start, run.window_images = time.time(), 0
    run.progress.training(run.completed_step, run.exp.config.batch_size)


# -- the periodic actions -------------------------------------------------------------------------

class Periodic:
    """Due every ``every`` steps and at the last one."""

    def __init__(self, every: int):
        self.every = every

    def due(self, step: int, last: bool, stopping: bool = False) -> bool:
        return step % self.every == 0 or last


class LogMetrics(Periodic):
    """Fetches the pending metrics, checks them for NaN/Inf (TrainingDiverged) and logs them: one training
    record every ``every`` steps and at the last, over the steps since the one before."""

    def check(self, run: Run) -> None:
        """Fetches and checks the pending metrics and adds them to the window (before a checkpoint is saved)."""
        exp = run.exp
        fetched = [(s, exp.parallel.first(m)) for s, m in run.pending]
        run.pending.clear()
        for s, m in fetched:
            if not (np.isfinite(m["loss"]) and np.isfinite(m["grad_norm"])):
                raise TrainingDiverged(
                    f"the training loss became {'NaN' if np.isnan(m['loss']) else 'infinite'} at step {s}"
                    f" (learning rate {applied_rate(run, s):.4g})", step=s)
        for _, m in fetched:
            for key in EMPTY_WINDOW:
                run.window[key] += float(m[key])
        if fetched:
            run.window_last = fetched[-1][1]

    def __call__(self, run: Run) -> None:
        self.check(run)
        exp, totals, last = run.exp, run.window, run.window_last
        elapsed = time.time() - run.window_start
        record = {
            "step": run.step,
            "split": "train",
            "epoch": exp.epoch(run.step),
            "loss": totals["loss"] / totals["count"],
            "top1": totals["top1"] / totals["count"],
            "top5": totals["top5"] / totals["count"],
            "learning_rate": applied_rate(run, run.step),  # the schedule's rate times the rollbacks' scale
            "grad_norm": float(last["grad_norm"]),
            # None when the window held only the step that compiled (its time is not a rate)
            "images_per_sec": run.window_images / elapsed if run.window_images and elapsed > 0 else None,
        }
        if exp.options.layer_paths:  # the last step's, as grad_norm
            norms = last["layer_grad_norms"]
            record["layer_grad_norms"] = {layer_name(p): float(n) for p, n in zip(exp.options.layer_paths, norms)}
        if run.lr_scale != 1.0:
            record["lr_scale"] = run.lr_scale
        run.writer.write(record)
        run.progress.update(run.step, record)
        run.logged_step = run.step
        run.window, run.window_last = dict(EMPTY_WINDOW), None
        run.window_start, run.window_images = time.time(), 0


def logged_window(meta: dict | None) -> dict:
    """The training-log window a checkpoint kept (an older jaxconv's checkpoints: none, the window restarts)."""
    kept = (meta or {}).get("log_window")
    return {key: float(kept[key]) for key in EMPTY_WINDOW} if isinstance(kept, dict) else dict(EMPTY_WINDOW)


def applied_rate(run: Run, step: int) -> float:
    """The learning rate step ``step`` trained with: the schedule's (at step - 1, as optax counts) times the scale
    the rollbacks left (train_step multiplies the updates by ``state.lr_scale``)."""
    return float(run.exp.schedule(step - 1)) * run.lr_scale


class RollBack:
    """On NaN/Inf with nan_policy='rollback': the last good checkpoint, the learning rate times ``factor``."""

    def __init__(self, policy: str, max_rollbacks: int, factor: float, log: Callable[[str], None]):
        self.policy, self.max_rollbacks, self.factor, self.log = policy, max_rollbacks, factor, log

    def __call__(self, run: Run, error: TrainingDiverged) -> None:
        exp = run.exp
        # Counted on the live state: the checkpoint rolled back to predates every rollback after it.
        rollbacks = int(exp.parallel.first(run.state.rollbacks))
        lr_scale = float(exp.parallel.first(run.state.lr_scale)) * self.factor
        if self.policy != "rollback":
            raise error
        if rollbacks >= self.max_rollbacks:
            raise TrainingDiverged(f"{error} after {rollbacks} rollbacks (max_rollbacks={self.max_rollbacks})",
                                   error.step)
        run.progress.pause()
        run.batches.close()
        run.checkpoints.wait()
        restored = run.checkpoints.restore_latest(abstract_state(exp))
        if restored is None:
            raise TrainingDiverged(f"{error}, and there is no checkpoint to roll back to", error.step)
        good, meta, good_step = restored
        good = good.replace(**exp.parallel.put_replicated({
            "lr_scale": np.asarray(lr_scale, good.lr_scale.dtype),
            "rollbacks": np.asarray(rollbacks + 1, good.rollbacks.dtype),
        }))
        run.lr_scale = lr_scale
        self.log(f"{error}: rolled back to step {good_step} with the learning rate x{lr_scale:.3g} "
                 f"(now {applied_rate(run, good_step + 1):.4g}; rollback {rollbacks + 1} of at most "
                 f"{self.max_rollbacks})")
        run.writer.set_aside_after(good_step, self.log)
        run.writer.write({"step": good_step, "split": "rollback", "lr_scale": lr_scale, "rollbacks": rollbacks + 1})
        run.state, run.step, run.logged_step = exp.parallel.replicate(good), good_step, good_step
        run.window, run.window_last = logged_window(meta), None
        run.restart_input(good_step)
        run.progress.restart(good_step)
        run.progress.training(run.completed_step, exp.config.batch_size)


class Evaluate(Periodic):
    """The evaluation split (or its first ``limit`` examples), logged; training time stops meanwhile."""

    def __init__(self, every: int, compiled: Callable, *, ten_crop: bool, limit: int | None):
        super().__init__(every)
        self.compiled, self.ten_crop, self.limit = compiled, ten_crop, limit

    def __call__(self, run: Run) -> None:
        exp = run.exp
        run.progress.pause()
        result = evaluate(exp, run.state, ten_crop=self.ten_crop, limit=self.limit, compiled=self.compiled,
                          progress=run.progress)
        result = {"step": run.step, "split": "eval", "epoch": exp.epoch(run.step), **result}
        run.writer.write(result)
        run.progress.report_eval(result)
        run.last_eval = result
        run.window_start = time.time()
        run.progress.training(run.completed_step, exp.config.batch_size)


class SaveCheckpoint(Periodic):
    """An (asynchronous) Orbax checkpoint; also when the run is asked to stop."""

    def due(self, step: int, last: bool, stopping: bool = False) -> bool:
        return super().due(step, last) or stopping

    def __call__(self, run: Run) -> None:
        evaluated = run.last_eval if run.last_eval and run.last_eval["step"] == run.step else None
        run.checkpoints.save(run.step, run.exp.parallel.canonical(run.state),
                             {**checkpoint_meta(run.exp, run.step, run.wall_time_s()), "log_window": dict(run.window)},
                             {"top1": evaluated["top1"]} if evaluated else None)


# -- after the last step --------------------------------------------------------------------------

def _late_summary(exp: Experiment, state, workdir: pathlib.Path, checkpoints: pathlib.Path,
                  wall_time_s: float | None) -> dict:
    """The summary of a run stopped (SIGKILL, a lost node) after its last checkpoint, before its summary:
    from the checkpoint and metrics.jsonl, whose final evaluation comes before the last save. Its wall
    time is the one the checkpoint recorded (None from an older jaxconv's)."""
    total = exp.total_steps
    final = None
    if (workdir / "metrics.jsonl").is_file():
        records, _ = read_records(workdir / "metrics.jsonl")
        evals = [r for r in records if r.get("split") == "eval" and r.get("step") == total]
        final = evals[-1] if evals else None
    rollbacks = int(np.asarray(state.rollbacks.addressable_shards[0].data))
    return _write_summary(exp, workdir, checkpoints, status="completed", steps=total, final_eval=final,
                          rollbacks=rollbacks, wall_time_s=wall_time_s,
                          written_late="by a later start: the run stopped after its last checkpoint, before its summary")


def _summary(run: Run, workdir: pathlib.Path, started: float) -> dict:
    exp = run.exp
    failure = {"error": str(run.failure), "diverged_at_step": run.failure.step} if run.failure else {}
    return _write_summary(exp, workdir, run.checkpoints.directory, status=run.status,
                          steps=int(exp.parallel.first(run.state.step)), final_eval=run.last_eval,
                          rollbacks=int(exp.parallel.first(run.state.rollbacks)), wall_time_s=run.wall_time_s(),
                          session_wall_time_s=time.time() - started, **failure)


def _write_summary(exp: Experiment, workdir: pathlib.Path, checkpoints: pathlib.Path, *, status: str, steps: int,
                   final_eval: dict | None, rollbacks: int, wall_time_s: float | None,
                   session_wall_time_s: float | None = None, **extra) -> dict:
    """The run's closing summary; written to WORKDIR/summary.json (by process 0) when the run is over."""
    is_main = jax.process_index() == 0
    config = exp.config
    summary = {
        "status": status, **extra,  # why it diverged, or that the summary was written late
        "model": config.model, "dataset": config.dataset,
        "params": param_count(exp),  # as trained: `report` checks the model's code still builds this
        "steps": steps, "epochs": exp.epoch(steps),
        "final_eval": final_eval,
        "best_eval": best_eval(workdir) if is_main else None,
        "rollbacks": rollbacks,
        "wall_time_s": wall_time_s,  # over every session (each up to the checkpoint the next resumed)
        "session_wall_time_s": session_wall_time_s,  # the last session's (None: it wrote the summary only)
        "devices": exp.parallel.device_count,
        "processes": jax.process_count(),
        "workdir": str(workdir.absolute()),
        "checkpoints": str(checkpoints),
        "metrics": str((workdir / "metrics.jsonl").absolute()),
    }
    if is_main and status in ("completed", "diverged"):
        atomic_write_text(workdir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
