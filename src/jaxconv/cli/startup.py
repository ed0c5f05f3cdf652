"""Settings made once when `jaxconv` starts: XLA flags, malloc, the compilation cache, quiet back ends."""

from __future__ import annotations

import os
import pathlib
import sys

from jaxconv.cli.common import log


def quiet_backends() -> None:
    """Keeps TensorFlow's C++ logging and TFDS's progress bars out of the user's terminal."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # TensorFlow only decodes and augments images here; its oneDNN notice is noise to the user.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import logging
    import warnings

    import absl.logging
    import tensorflow_datasets as tfds

    absl.logging.set_verbosity(absl.logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)
    # Orbax logs each failed write of a save with its traceback (hundreds of lines for one full disk);
    # jaxconv reports every checkpoint failure itself, in one line, from the exception Orbax raises.
    logging.getLogger("absl").addFilter(_not_from_orbax)
    tfds.disable_progress_bar()
    warnings.filterwarnings("ignore", message="Some donated buffers were not usable")


def _not_from_orbax(record) -> bool:
    return f"{os.sep}orbax{os.sep}" not in (record.pathname or "")


def ignore_late_storage_callbacks() -> None:
    """After a failed checkpoint write, TensorStore completes the save's outstanding writes into the
    asyncio loop Orbax has already closed; each prints a `RuntimeError: Event loop is closed` traceback
    (through sys.excepthook or sys.unraisablehook, depending on the thread). The failure itself is
    reported, in one line, from the exception Orbax raises."""
    import logging
    import traceback

    def late(value, tb) -> bool:
        frames = traceback.extract_tb(tb)
        return (isinstance(value, RuntimeError) and str(value) == "Event loop is closed" and bool(frames)
                and frames[0].name == "call_soon_threadsafe")

    previous_hook, previous_unraisable = sys.excepthook, sys.unraisablehook

    def hook(kind, value, tb):
        if not late(value, tb):
            previous_hook(kind, value, tb)

    def unraisable_hook(unraisable):
        if not late(unraisable.exc_value, unraisable.exc_traceback):
            previous_unraisable(unraisable)

    sys.excepthook, sys.unraisablehook = hook, unraisable_hook
    # ... and asyncio logs the same failed writes again ("exception was never retrieved"); jaxconv itself
    # runs no asyncio code.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)


# XLA's CPU backend (jaxlib 0.10) hands convolutions to YNNPACK, where the weight-gradient
# convolutions of a training step run 4-7x slower than on XLA's own (Eigen) convolutions:
# 1.5-1.7x on a whole ResNet training step, 1.4x on inference (docs/benchmarks.md). The flag
# only concerns computations on the CPU backend; GPU and TPU hosts are unaffected.
DEFAULT_XLA_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",)


def apply_default_xla_flags() -> None:
    """Adds DEFAULT_XLA_FLAGS to $XLA_FLAGS before JAX starts; a flag the user set wins.

    JAXCONV_XLA_DEFAULTS=0 leaves XLA_FLAGS alone. Does nothing once JAX is imported (XLA
    reads the variable when it starts, and a caller that imported JAX chose its flags).
    """
    if os.environ.get("JAXCONV_XLA_DEFAULTS", "1") == "0" or "jax" in sys.modules:
        return
    flags = os.environ.get("XLA_FLAGS", "")
    for flag in DEFAULT_XLA_FLAGS:
        if flag.split("=")[0] not in flags:
            flags = f"{flags} {flag}".strip()
    os.environ["XLA_FLAGS"] = flags


# glibc's malloc hands XLA:CPU's large per-step buffers (a ResNet-50 step at batch 8 has 1.3 GB
# of temporaries) to fresh mmaps or to thread-arena heaps it gives back after the step, so every
# step faults them in again, page by page. JAXCONV_MALLOC_TUNING=1 asks for one arena that
# neither maps nor trims, so the buffers are reused: ResNet-50 training on 2 cores ran
# 1.2-1.3x faster. It is not the default because memory freed at the top of that one heap is
# never given back: EfficientNet-B0 at batch 32 peaked at 16.5 GB of RSS against 8.5 without,
# and tf.data's decoding threads, sharing the arena, ran ~12% slower (docs/benchmarks.md).
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
MALLOC_TUNING = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))  # -1: never trim (mallopt(3))


def apply_malloc_tuning() -> bool:
    """Sets MALLOC_TUNING with mallopt(3) when JAXCONV_MALLOC_TUNING=1; True if it did.

    Only on glibc, only before JAX and TensorFlow start their threads (the arena limit binds
    threads created later), and never over the user's own malloc settings (MALLOC_* variables,
    glibc.malloc tunables).
    """
    if os.environ.get("JAXCONV_MALLOC_TUNING", "0") != "1" or "jax" in sys.modules or "tensorflow" in sys.modules:
        return False
    if any(k.startswith("MALLOC_") for k in os.environ) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        return all(libc.mallopt(option, value) == 1 for option, value in MALLOC_TUNING)
    except (OSError, AttributeError):
        return False


def enable_compilation_cache() -> None:
    """Keeps compiled steps in JAX's persistent cache, so that a resumed or repeated run skips compiling.

    The cache is $JAX_COMPILATION_CACHE_DIR when set, else ~/.cache/jaxconv/xla
    (under $XDG_CACHE_HOME when set); JAXCONV_COMPILATION_CACHE=0 turns it off.
    """
    if os.environ.get("JAXCONV_COMPILATION_CACHE", "1") == "0" or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    import jax

    cache_home = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache"))
    jax.config.update("jax_compilation_cache_dir", str(cache_home / "jaxconv" / "xla"))


def terminated(signum, frame):
    """SIGTERM before the run has installed its own handler: nothing has been written yet, so stop now.
    (Raising here instead could land in a callback of JAX's garbage collector, which swallows it.)"""
    log("SIGTERM while starting, before anything was written: stopped; run the same command to start")
    os._exit(0)


class Terminated(KeyboardInterrupt):
    """SIGTERM to a command other than train: stopped as Ctrl-C stops it (what it was writing is removed),
    reported as `jaxconv: terminated` with exit status 143."""


def stop_on_sigterm() -> None:
    """SIGTERM raises Terminated in the main thread. Where Python cannot raise (a callback of JAX's garbage
    collector, a __del__), the exception would be printed as ignored and lost: it is sent again instead."""
    import signal
    import threading

    def raise_terminated(signum, frame):
        raise Terminated("terminated")

    previous = sys.unraisablehook

    def again(unraisable):
        if not isinstance(unraisable.exc_value, Terminated):
            previous(unraisable)
            return
        timer = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM))
        timer.daemon = True
        timer.start()

    sys.unraisablehook = again
    signal.signal(signal.SIGTERM, raise_terminated)


class ClosedPipeProof:
    """A text stream that goes quiet once its reader has gone (``jaxconv train 2>&1 | head``, a log pipe whose
    reader died): Python raises BrokenPipeError from the write, which in a training run ended it between two
    checkpoints, its steps lost. The run now goes on to its end, writing its checkpoints and metrics as ever."""

    def __init__(self, stream):
        self._stream = stream
        self.reader_gone = False

    def write(self, text: str) -> int:
        if not self.reader_gone:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self.reader_gone = True
        return len(text)

    def flush(self) -> None:
        if not self.reader_gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self.reader_gone = True

    def __getattr__(self, name):  # isatty, fileno, encoding, ...: the stream's own
        return getattr(self._stream, name)


def survive_closed_pipes() -> None:
    """stdout and stderr as ClosedPipeProof streams (the program only: a library leaves them alone)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, ClosedPipeProof):
            setattr(sys, name, ClosedPipeProof(stream))
