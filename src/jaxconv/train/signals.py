"""Stopping a run early and cleanly: SIGTERM (preemption), SIGHUP (a closed terminal) and Ctrl-C."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import threading
from collections.abc import Callable

import jax


@dataclasses.dataclass
class StopRequest:
    """A request to stop early: SIGTERM (preemption) or a first Ctrl-C.

    ``at_step(step)``: whether to save a checkpoint and stop after ``step``. ``before_training()``:
    whether one came while the run was still preparing (nothing to save then). ``reason`` names it.
    """

    at_step: Callable[[int], bool]
    before_training: Callable[[], bool]
    reason: Callable[[], str]
    preparing: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext


@contextlib.contextmanager
def stop_signals(log: Callable[[str], None] = print):
    """Yields a StopRequest, for the whole run, preparation included.

    One process: SIGTERM, or a first Ctrl-C, sets a flag (the run finishes its step, saves a
    checkpoint and returns normally); a second Ctrl-C ends the process at once, with a line and
    without a traceback (a checkpoint write it cuts short is never restored: see checkpoint.py).
    While a dataset is being generated, downloaded or scanned (``jaxconv.data.source.preparing_data``:
    nothing to save, and possibly hours to go), either signal stops at once with KeyboardInterrupt,
    so that what was half-prepared is removed on the way out, and inside ``request.preparing()`` a
    preparation does not start after one; elsewhere in the start (opening a prepared dataset,
    building the model) the start finishes and the run stops before its first step, exit status 0,
    as a preempted run should.
    Several processes: JAX's preemption service (which owns SIGTERM then) makes every process agree
    on the same step, so that they all save the same checkpoint.
    """
    if jax.process_count() > 1:
        with _interrupt_as_preemption() as interrupted:
            yield _preemption_request(lambda: "Ctrl-C" if interrupted else "SIGTERM")
        return
    from jaxconv.data import source

    flag, reason = threading.Event(), []

    def stop_preparing(name: str) -> None:
        raise KeyboardInterrupt(f"{name} while the dataset was prepared: stopped at once; nothing of it is kept")

    def stopped_already() -> None:  # a dataset's preparation starts after a stop request: it does not start
        if flag.is_set():
            stop_preparing(reason[0] if reason else "SIGTERM")

    request = StopRequest(lambda step: flag.is_set(), flag.is_set, lambda: reason[0] if reason else "SIGTERM",
                          lambda: source.stop_before_preparing(stopped_already))
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def on_term(signum, _frame):  # SIGTERM; SIGHUP (a closed terminal or a dropped ssh) the same way
        name = signal.Signals(signum).name
        reason.append(name)
        flag.set()
        if source.data_being_prepared():
            stop_preparing(name)

    def on_interrupt(*_):
        if source.data_being_prepared():
            stop_preparing("Ctrl-C")
        if flag.is_set():
            print("\njaxconv: interrupted again: stopped at once; the last complete checkpoint is kept",
                  file=sys.stderr, flush=True)
            os._exit(130)
        reason.append("Ctrl-C")
        flag.set()
        print("\njaxconv: Ctrl-C: stopping after this step and saving a checkpoint "
              "(Ctrl-C again to stop at once, without saving)", file=sys.stderr, flush=True)

    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield request
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _preemption_request(reason: Callable[[], str]) -> StopRequest:
    from jax.experimental import multihost_utils

    return StopRequest(multihost_utils.reached_preemption_sync_point, lambda: False, reason)


@contextlib.contextmanager
def _interrupt_as_preemption():
    """Several processes: a first Ctrl-C is a SIGTERM to this process, which JAX's preemption service tells
    every process of, so that all save the same step and stop; a second stops this one at once. (Python's
    KeyboardInterrupt in one process left the others waiting in a collective for ever, and it with them.)"""
    asked: list[bool] = []  # yielded: whether this process was interrupted
    if threading.current_thread() is not threading.main_thread():
        yield asked
        return

    def on_interrupt(*_):
        if asked:
            print("\njaxconv: interrupted again: this process stopped at once; the others stop within "
                  "--heartbeat-timeout; the last complete checkpoint is kept", file=sys.stderr, flush=True)
            os._exit(130)
        asked.append(True)
        print("\njaxconv: Ctrl-C: every process stops after the same step and saves a checkpoint (Ctrl-C again to "
              "stop this one at once, without saving)", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)

    def on_hangup(*_):  # a closed terminal: as SIGTERM, which JAX's preemption service owns here
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.signal(signal.SIGINT, on_interrupt), signal.signal(signal.SIGHUP, on_hangup)
    try:
        yield asked
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGHUP, previous[1])


__all__ = ["StopRequest", "stop_signals"]
