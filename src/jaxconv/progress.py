"""Progress of a long phase before training: a count, a rate and an ETA.

    with Counter("generating shapes", total=22_000) as counter:
        for example in examples:
            ...
            counter.advance()

On a terminal the line is redrawn at most every ``interval_s`` ("generating shapes 8,400/22,000
images (38%), 1,210/s, ETA 0m11s"); elsewhere (a log file) a line is written every ``log_every_s``
seconds, so that a long phase is never silent. The last line says how long the phase took.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable


def duration(seconds: float) -> str:
    """12m05s, 1h02m."""
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


class Counter:
    def __init__(self, what: str, total: int | None = None, *, stream=None, interval_s: float = 0.5,
                 log_every_s: float = 30.0, clock: Callable[[], float] = time.monotonic, unit: str = "",
                 enabled: bool | None = None):
        self.what, self.total, self.unit = what, total, unit
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        # Only the first process of a multi-process run speaks (they all do the same work).
        self.enabled = _first_process() if enabled is None else enabled
        self.interval_s = interval_s if self.tty else log_every_s
        self.clock = clock
        self.done = 0
        self._lock = threading.Lock()
        self._began = self._shown = clock()
        self._drawn = False

    def __enter__(self) -> Counter:
        return self

    def __exit__(self, kind, value, tb) -> None:
        if not self.enabled:
            return
        if self._drawn and self.tty:
            self.stream.write("\r\033[K")
        if kind is None and (self._drawn or self.clock() - self._began >= 1.0):
            self.stream.write(f"{self.what}: {self.done:,}{self.unit} in {duration(self.clock() - self._began)}\n")
        elif self._drawn and self.tty:
            self.stream.write("\n")
        self.stream.flush()

    def advance(self, count: int = 1) -> None:
        with self._lock:
            self.done += count
            now = self.clock()
            if now - self._shown < self.interval_s or not self.enabled:
                return
            self._shown = now
            self._draw(now)

    def line(self, now: float | None = None) -> str:
        now = self.clock() if now is None else now
        elapsed = max(now - self._began, 1e-9)
        rate = self.done / elapsed
        text = f"{self.what} {self.done:,}"
        text += f"/{self.total:,}{self.unit} ({self.done / self.total:.0%})" if self.total else self.unit
        text += f", {rate:,.0f}/s"
        if self.total and rate > 0:
            text += f", ETA {duration((self.total - self.done) / rate)}"
        return text

    def _draw(self, now: float) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + self.line(now))
        else:
            self.stream.write(self.line(now) + "\n")
        self.stream.flush()
        self._drawn = True


def _first_process() -> bool:
    jax = sys.modules.get("jax")  # never imported here for this: the data layer runs without it
    try:
        return jax is None or jax.process_index() == 0
    except Exception:  # the runtime not started yet
        return True


__all__ = ["Counter", "duration"]
