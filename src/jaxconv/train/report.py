"""What a run shows and leaves behind: a progress line, metrics.jsonl and TensorBoard events."""

from __future__ import annotations

import contextlib
import json
import pathlib
import sys
import threading
import time
from collections.abc import Callable, Mapping

from jaxconv.progress import duration


class MetricsWriter:
    """Appends one JSON object per logged point to WORKDIR/metrics.jsonl and writes TensorBoard
    scalars under WORKDIR/tensorboard. Only the main process writes.

    The events are written with TensorBoard's own writer and protos (no TensorFlow in the
    training process): scalars as ``simple_value``, which both TensorBoard's dashboard and
    ``EventAccumulator.Scalars()`` read, and the run's hyper-parameters for the HParams tab.
    """

    def __init__(self, workdir: pathlib.Path, enabled: bool = True, hparams: Mapping | None = None):
        self.enabled = enabled
        if not enabled:
            return
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        from jaxconv.train.workdir import MetricsFile

        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self._file = MetricsFile(workdir)
        self._events = EventFileWriter(str(workdir / "tensorboard"), flush_secs=30)
        if hparams:
            from tensorboard.plugins.hparams import summary_v2

            self._add(summary_v2.hparams_pb(_hparam_values(hparams), start_time_secs=int(time.time())), step=0)

    def _add(self, summary, step: int) -> None:
        from tensorboard.compat.proto import event_pb2

        self._events.add_event(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        from tensorboard.compat.proto import summary_pb2

        self._file.write(record)
        values = [summary_pb2.Summary.Value(tag=f"{record['split']}/{key}", simple_value=float(value))
                  for key, value in record.items()
                  if key not in ("step", "split") and isinstance(value, (int, float)) and not isinstance(value, bool)]
        if values:
            self._add(summary_pb2.Summary(value=values), record["step"])
            self._events.flush()

    def set_aside_after(self, step: int, log: Callable[[str], None]) -> None:
        """Moves the records of steps after ``step`` to metrics_superseded.jsonl, as a resume does: a rollback
        redoes those steps, and metrics.jsonl holds each step once; TensorBoard is told to drop them."""
        if not self.enabled:
            return
        from jaxconv.train.workdir import MetricsFile, settle_metrics

        self._file.close()  # settle_metrics replaces the file: the next records go to the new one
        try:
            settle_metrics(self.workdir, step, log)
        finally:
            self._file = MetricsFile(self.workdir)
        self.restart_at(step)

    def restart_at(self, step: int) -> None:
        """Tells TensorBoard the run (re)starts after ``step``: a SessionLog START event, on which its readers
        drop the events of later steps (those a resume or a rollback redoes)."""
        if not self.enabled:
            return
        from tensorboard.compat.proto import event_pb2

        start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
        self._events.add_event(event_pb2.Event(wall_time=time.time(), step=int(step) + 1, session_log=start))
        self._events.flush()

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            self._events.close()


def _hparam_values(config: Mapping) -> dict:
    """A config flattened to what the HParams plugin takes: numbers, booleans and strings."""
    values = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            values.update({f"{key}.{k}": v for k, v in _hparam_values(value).items()})
        elif isinstance(value, (bool, int, float, str)):
            values[key] = value
        elif value is not None:
            values[key] = json.dumps(value, default=str)
    return values


class Progress:
    """What a person watching the run sees.

    On a terminal: one line, redrawn at least once a second by a background thread — the step
    the devices have finished (``completed()``, asked without waiting for them), the epoch, the
    last logged loss and top-1, images/s and an ETA measured over training time only
    (compilation and evaluations left out), or the phase in progress ("compiling the train
    step… 6 s"). Elsewhere (a log file), a plain line per logging point, evaluation and phase.
    """

    def __init__(self, total: int, start: int, steps_per_epoch: int, *, step_offset: int = 0, enabled: bool = True,
                 stream=None, clock: Callable[[], float] = time.monotonic, refresh_s: float = 1.0):
        self.total, self.start, self.steps_per_epoch, self.step_offset = total, start, steps_per_epoch, step_offset
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self._clock, self._refresh_s = clock, refresh_s
        self._lock = threading.RLock()
        self._line = False
        self._phase: tuple[str, float] | None = None
        self._record: dict | None = None
        self._completed: Callable[[], int] | None = None
        self._images_per_step = 0
        self._trained_s = 0.0  # time spent training, up to _since
        self._since: float | None = None  # when training last (re)started; None while paused
        self._trained_from = start
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.tty:
            self._thread = threading.Thread(target=self._refresh_loop, daemon=True, name="jaxconv-progress")
            self._thread.start()

    # -- drawing --------------------------------------------------------------------------------
    def _emit(self, text: str, final: bool) -> None:
        if not self.enabled:
            return
        with self._lock:
            if self.tty:
                self.stream.write("\r\033[K" + text + ("\n" if final else ""))
                self._line = not final
            elif final:
                self.stream.write(text + "\n")
            self.stream.flush()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self._refresh_s):
            try:
                self.refresh()
            except Exception:  # a closed stream: nothing left to draw on
                return

    def refresh(self) -> None:
        """Redraws the live line (the background thread calls this every ``refresh_s``)."""
        with self._lock:
            if self._phase is not None:
                what, began = self._phase
                self._emit(f"{what}… {self._clock() - began:.0f} s", final=False)
            elif self._since is not None:
                self._emit(self.training_line(), final=False)

    def training_line(self) -> str:
        step = self._completed() if self._completed else self.start
        step = max(step, self._record["step"] if self._record else self.start)
        width = 24
        filled = int(width * min(step, self.total) / self.total)
        text = f"[{'#' * filled}{'.' * (width - filled)}] step {step}/{self.total} epoch {(step + self.step_offset) / self.steps_per_epoch:.2f}"
        if self._record:
            text += f" | loss {self._record['loss']:.4f} top1 {100 * self._record['top1']:.1f}%"
        rate = self.steps_per_second(step)
        if rate:
            text += f" | {rate * self._images_per_step:.0f} img/s | ETA {duration((self.total - step) / rate)}"
        return text

    def steps_per_second(self, step: int) -> float | None:
        """Steps finished per second of training time, compilation and evaluations left out."""
        trained = self._trained_s + (self._clock() - self._since if self._since is not None else 0.0)
        done = step - self._trained_from
        return done / trained if done > 0 and trained > 0 else None

    # -- what the loop reports ------------------------------------------------------------------
    @contextlib.contextmanager
    def phase(self, what: str, done: str | None = None):
        """A phase with no step count (compiling): shown live, then as "DONE in N s"."""
        self.pause()
        with self._lock:
            self._phase = (what, self._clock())
        self.refresh()
        try:
            yield
        finally:
            with self._lock:
                began = self._phase[1]
                self._phase = None
            self._emit(f"{done or what} in {self._clock() - began:.1f} s", final=True)

    def training(self, completed: Callable[[], int], images_per_step: int) -> None:
        """Training (re)starts: ``completed()`` tells the step the devices have finished."""
        with self._lock:
            self._completed, self._images_per_step = completed, images_per_step
            if self._since is None:
                self._since = self._clock()
        self.refresh()

    def pause(self) -> None:
        """Training stops for a while (an evaluation, a checkpoint, a rollback): the clock stops."""
        with self._lock:
            if self._since is not None:
                self._trained_s += self._clock() - self._since
                self._since = None
            if self.tty and self._line:
                self.stream.write("\r\033[K")
                self.stream.flush()
                self._line = False

    def restart(self, step: int) -> None:
        """After a rollback: the rate is measured afresh from ``step``."""
        with self._lock:
            self._trained_s, self._trained_from, self._record = 0.0, step, None

    def update(self, step: int, record: dict) -> None:
        """A logging point: ``record`` holds the loss, top-1 and images/s of the steps since the last one."""
        with self._lock:
            self._record = record
            if self.tty:
                self.refresh()
                return
        rate = self.steps_per_second(step)
        eta = f" | ETA {duration((self.total - step) / rate)}" if rate else ""
        speed = f" | {record['images_per_sec']:.0f} img/s" if record["images_per_sec"] is not None else ""
        self._emit(f"step {step}/{self.total} epoch {record['epoch']:.2f} | loss {record['loss']:.4f} "
                   f"top1 {100 * record['top1']:.1f}%{speed}{eta}", final=True)

    def eval_tick(self, done: int, total: int) -> None:
        if self.tty:
            self._emit(f"evaluating {done}/{total}", final=False)

    def report_eval(self, result: dict) -> None:
        self._emit(
            f"eval @ step {result['step']} (epoch {result['epoch']:.2f}): loss {result['loss']:.4f} "
            f"top1 {100 * result['top1']:.2f}% top5 {100 * result['top5']:.2f}% ({result['examples']} examples)",
            final=True,
        )

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            if self.tty and self._line:
                self.stream.write("\n")
                self.stream.flush()
                self._line = False
