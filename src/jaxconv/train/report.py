"""What a run shows and leaves behind: a progress line, metrics.jsonl and TensorBoard events."""

from __future__ import annotations

import pathlib
import sys
import time


class MetricsWriter:
    """Appends one JSON object per logged point to WORKDIR/metrics.jsonl and writes TensorBoard
    scalars under WORKDIR/tensorboard. Only the main process writes."""

    def __init__(self, workdir: pathlib.Path, enabled: bool = True):
        self.enabled = enabled
        if not enabled:
            return
        import tensorflow as tf

        from jaxconv.train.workdir import MetricsFile

        self._tf = tf
        workdir.mkdir(parents=True, exist_ok=True)
        self._file = MetricsFile(workdir)
        self._summary = tf.summary.create_file_writer(str(workdir / "tensorboard"))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self._file.write(record)
        with self._summary.as_default():
            for key, value in record.items():
                if key not in ("step", "split") and isinstance(value, (int, float)):
                    self._tf.summary.scalar(f"{record['split']}/{key}", value, step=record["step"])
        self._summary.flush()

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            self._summary.close()


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


class Progress:
    """A one-line progress bar on a terminal (step, epoch, loss, top-1, images/s, ETA);
    a plain line per logging point otherwise."""

    def __init__(self, total: int, start: int, steps_per_epoch: int, *, enabled: bool = True, stream=None):
        self.total, self.start, self.steps_per_epoch = total, start, steps_per_epoch
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.began = time.time()
        self._line = False

    def _emit(self, text: str, final: bool) -> None:
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r\033[K" + text + ("\n" if final else ""))
            self._line = not final
        elif final:
            self.stream.write(text + "\n")
        self.stream.flush()

    def update(self, step: int, record: dict) -> None:
        done = step - self.start
        rate = done / max(time.time() - self.began, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else 0.0
        width = 24
        filled = int(width * step / self.total)
        bar = "#" * filled + "." * (width - filled)
        text = (
            f"[{bar}] step {step}/{self.total} epoch {record['epoch']:.2f} | loss {record['loss']:.4f} "
            f"top1 {100 * record['top1']:.1f}% | {record['images_per_sec']:.0f} img/s | ETA {_duration(eta)}"
        )
        self._emit(text, final=not self.tty)

    def eval_tick(self, done: int, total: int) -> None:
        if self.tty:
            self._emit(f"evaluating {done}/{total}", final=False)

    def report_eval(self, result: dict) -> None:
        self._emit(
            f"eval @ step {result['step']} (epoch {result['epoch']:.2f}): loss {result['loss']:.4f} "
            f"top1 {100 * result['top1']:.2f}% top5 {100 * result['top5']:.2f}% ({result['examples']} examples)",
            final=True,
        )

    def pause(self) -> None:
        if self.tty and self._line:
            self.stream.write("\r\033[K")
            self._line = False

    def close(self) -> None:
        if self.tty and self._line:
            self.stream.write("\n")
            self._line = False
            self.stream.flush()
