"""Host batches to device arrays, a few steps ahead of the training loop, on a background thread.

Flax's examples use ``flax.jax_utils.prefetch_to_device``, which works for pmap only and runs on
the caller's thread; here the transfer (``put``: pmap or shard_map placement) overlaps the step,
and an error in the input pipeline reaches the loop as the error it was.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable


class DeviceBatches:
    """Iterates ``put(batch)`` for each batch of ``batches``, at most ``ahead`` of them ready."""

    _DONE = object()

    def __init__(self, batches: Iterable, put: Callable, ahead: int = 2):
        self._queue: list = []
        self._lock = threading.Condition()
        self._stopped = False
        self._ahead = ahead
        self._put = put
        self._iterator = iter(batches)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._produce, daemon=True, name="jaxconv-prefetch")
        self._thread.start()

    def _produce(self) -> None:
        try:
            for batch in self._iterator:
                arrays = self._put(batch)
                with self._lock:
                    while len(self._queue) >= self._ahead and not self._stopped:
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

    def close(self, timeout: float = 10.0) -> None:
        """Stops the producer and releases the input's iterator now, on this thread, rather than
        whenever the last reference goes: at worst during the interpreter's exit, where a tf.data
        iterator with an autotuning thread waited for it (`jaxconv train` sat 23-45 s after its
        last line; docs/benchmarks.md). A producer still busy after ``timeout`` seconds (a stuck
        input) keeps its iterator; it is a daemon thread.
        """
        with self._lock:
            self._stopped = True
            self._queue.clear()
            self._lock.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self._iterator = None


__all__ = ["DeviceBatches"]
