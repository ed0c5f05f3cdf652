"""Orbax checkpoints of the training state under WORKDIR/checkpoints, and what to do when one breaks.

Saving: asynchronous and atomic — Orbax writes into a temporary directory and renames it
when complete, so an interrupted save (SIGKILL, full disk) never becomes a checkpoint.
Once a save has finished, jaxconv *seals* it: a manifest with the size and SHA-256 of every
file (``jaxconv_manifest.json`` inside the step directory). The training loop seals a save as
soon as it has finished (``seal_finished``), so a run killed later leaves it sealed.

Keeping: the last ``keep`` checkpoints, the best one by evaluation top-1, and every save of
this run not sealed yet — so a good checkpoint is never deleted to make room while a newer one
is unproven. (A checkpoint a killed run wrote but did not seal is kept or dropped like any other.)

Restoring: the newest checkpoint whose files match its manifest and that Orbax can read. A
broken one (truncated, corrupted, unreadable) is reported in one line, moved aside to
WORKDIR/broken_checkpoints/ for inspection — never deleted — and the previous one is used. A
checkpoint without a manifest (its run was killed before sealing it) must also hold only finite
values, as every saved state does; a run that restores one seals it.

Every process calls save and restore (they are collective in multi-process runs); sealing
and moving aside are done by process 0 on the shared checkpoint directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import inspect
import os
import pathlib
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from jaxconv.errors import UserError
from jaxconv.logs import without_absl_messages
from jaxconv.manifest import MANIFEST, screen_step, verify_manifest, write_manifest
from jaxconv.train.workdir import RunWriteError, best_rank, write_failure

class NoCheckpoint(UserError, FileNotFoundError):
    """A run has no (usable) checkpoint, or not the step asked for."""


class BrokenCheckpoint(UserError, ValueError):
    """The checkpoint asked for by its step is damaged."""


class CheckpointMismatch(UserError, ValueError):
    """A checkpoint does not fit the model it is restored into."""


class CheckpointWriteError(RunWriteError):
    """A checkpoint could not be written (full disk, lost permissions, ...)."""


def _top1(metrics: dict) -> float:
    return float(metrics["top1"])


@dataclasses.dataclass
class KeepSealed(checkpoint_managers.PreservationPolicy):
    """Keep every save of this run not sealed yet (``pending``), and of the others the last ``keep``
    and the best."""

    keep: int
    pending: Callable[[int], bool]

    def should_preserve(self, checkpoints: Sequence[Any], *, context: Any) -> Sequence[bool]:
        settled = [info for info in checkpoints if not self.pending(info.step)]
        latest = {info.step for info in sorted(settled, key=lambda info: info.step)[-self.keep:]}
        scored = [info for info in settled if info.metrics is not None and "top1" in info.metrics]
        best = {max(scored, key=lambda info: best_rank(_top1(info.metrics), info.step)).step} if scored else set()
        return [self.pending(info.step) or info.step in latest or info.step in best for info in checkpoints]


_SINGLE_WRITER = False


def _single_writer_arrays() -> None:
    """In a one-process run, writes each replicated array whole rather than in per-replica slices.

    Orbax's replica-parallel saving lets several hosts share the writing of a replicated array;
    in one process it only adds a compiled slice per array shape (seconds on a CPU) for nothing.
    (Registered in Orbax's global type-handler registry: jaxconv owns the process it trains in.)
    """
    global _SINGLE_WRITER
    if jax.process_count() == 1 and not _SINGLE_WRITER:
        _SINGLE_WRITER = True
        with without_absl_messages("Type handler registry type"):
            ocp.type_handlers.register_type_handler(
                jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True)


class Checkpoints:
    """Save, seal, verify and restore {state, meta} checkpoints with an Orbax CheckpointManager."""

    def __init__(self, workdir: str | pathlib.Path, keep: int = 3, *, read_only: bool = False,
                 log: Callable[[str], None] = print):
        self.workdir = pathlib.Path(workdir).absolute()
        self.directory = self.workdir / "checkpoints"
        self.broken_directory = self.workdir / "broken_checkpoints"
        self.keep = keep
        self.read_only = read_only
        self.log = log
        self._unsealed: list[int] = []
        self._failed: int | None = None  # the step whose save failed (and said so): closing does not raise it again
        self.skipped: dict[int, str] = {}  # read-only: steps left out, and why
        self._screen()
        self.manager = self._manager()

    def _screen(self) -> None:
        """Sets aside (read-only: leaves out) what in checkpoints/ is not a usable checkpoint, before
        Orbax looks: a user's file is moved, never overwritten; a symlink loop is not followed."""
        bad = {}
        if self.directory.is_dir() and (jax.process_index() == 0 or self.read_only):
            for path in sorted(self.directory.iterdir(), key=lambda p: p.name):
                if path.name.isdigit():
                    problem = screen_step(path)
                    if problem is not None:
                        bad[int(path.name)] = problem
        if self.read_only:  # said by available(), in its error when there is one: one line, not two
            self.skipped = bad
            return
        for step, problem in bad.items():
            moved = self._move(step)
            self.log(f"checkpoint {step} is unusable ({problem}); moved it to {moved}")
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("jaxconv_screened")

    def _manager(self) -> ocp.CheckpointManager:
        _single_writer_arrays()
        options = ocp.CheckpointManagerOptions(
            preservation_policy=KeepSealed(self.keep, lambda step: step in self._unsealed),
            best_fn=_top1,  # also makes Orbax store each checkpoint's metrics, so a resumed run keeps the best
            best_mode="max",
            create=not self.read_only,
            read_only=self.read_only,
            enable_async_checkpointing=True,
            cleanup_tmp_directories=not self.read_only,  # what an interrupted save left behind
            lightweight_initialize=self.read_only,  # a reader does not need every checkpoint's metrics
        )
        handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
        return ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

    def step_directory(self, step: int) -> pathlib.Path:
        return self.directory / str(step)

    def is_sealed(self, step: int) -> bool:
        return (self.step_directory(step) / MANIFEST).exists()

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(set(self.manager.all_steps()) - set(self.skipped))

    def best_step(self) -> int | None:
        """The kept checkpoint with the highest evaluation top-1."""
        return self.manager.best_step()

    # --- saving ---------------------------------------------------------------------------------

    def save(self, step: int, state: Any, meta: dict, metrics: dict | None = None) -> None:
        """Starts saving ``step``; returns before the files are written (see ``wait``)."""
        self._finish_pending()
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        try:
            self.manager.save(step, args=args, metrics=metrics, force=True)
        except Exception as e:
            raise self._write_error(step, e) from e
        self._unsealed.append(step)

    def wait(self) -> None:
        """Waits for the pending save and seals it."""
        self._finish_pending()

    def seal_finished(self, *, collective: bool = True) -> None:
        """Seals the pending save if it has finished, without waiting for it (called after each step).

        With several processes the choice must be the same on each: only where ``collective`` (a point
        every process reaches, such as a logging step) does process 0's view decide, broadcast.
        """
        in_progress = getattr(self.manager, "is_saving_in_progress", None)  # Orbax >= 0.11.x
        if not self._unsealed or in_progress is None:
            return
        finished = not in_progress()
        if jax.process_count() > 1:
            if not collective:
                return
            from jax.experimental import multihost_utils

            finished = bool(multihost_utils.broadcast_one_to_all(np.int32(finished)))
        if finished:
            self._finish_pending()

    def _finish_pending(self) -> None:
        try:
            self.manager.wait_until_finished()
        except Exception as e:
            step = self._unsealed[-1] if self._unsealed else None
            self._unsealed.clear()
            raise self._write_error(step, e) from e
        if jax.process_index() == 0:
            for step in self._unsealed:
                directory = self.step_directory(step)
                if directory.is_dir():
                    try:
                        write_manifest(directory)
                    except OSError as e:
                        raise self._write_error(step, e) from e
        if jax.process_count() > 1 and self._unsealed:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("jaxconv_sealed")
        if self._unsealed:
            self._unsealed.clear()
            self._prune()

    def _prune(self) -> None:
        """Now that every checkpoint is sealed: drops those beyond the last ``keep`` and the best."""
        steps = self.all_steps()
        keep = set(steps[-self.keep:]) | {self.best_step()}
        for step in steps:
            if step not in keep:
                self.manager.delete(step)

    def _write_error(self, step: int | None, error: Exception) -> CheckpointWriteError:
        if step is not None:
            self._failed = step
            self._discard_partial(step)
        kept = [s for s in self.all_steps() if s != step and self.is_sealed(s)]
        last = f"the last good checkpoint ({max(kept)}) is kept" if kept else "there is no earlier checkpoint"
        return CheckpointWriteError(f"could not write checkpoint {step} in {self.directory}: "
                                    f"{write_failure(error, self.directory)}; {last}")

    def _discard_partial(self, step: int) -> None:
        """Process 0 removes what a failed save of ``step`` left: Orbax's temporary folder, or the step's
        folder if it was never sealed. On a full disk that is the space the user is about to look for; a
        resume would only have cleaned it up (Orbax) or moved it aside as unsealed. Done when the failure
        is reported, and again on closing: Orbax's other writer threads may still be creating files when
        the first one's error arrives."""
        if jax.process_index() != 0:
            return
        for path in self.directory.glob(f"{step}.orbax-checkpoint-tmp*"):
            shutil.rmtree(path, ignore_errors=True)
        directory = self.step_directory(step)
        if directory.is_dir() and not directory.is_symlink() and not self.is_sealed(step):
            shutil.rmtree(directory, ignore_errors=True)

    # --- restoring ------------------------------------------------------------------------------

    def restore(self, step: int, target: Any) -> tuple[Any, dict]:
        """Restores ``step`` into the structure, shapes and shardings of ``target``.

        Raises CheckpointMismatch naming the missing, unexpected and differently shaped entries.
        """
        if hasattr(target, "ema_batch_stats") and not _has_field(self.manager.item_metadata(step)["state"],
                                                                  "ema_batch_stats"):
            # A checkpoint of a jaxconv whose state had no ema_batch_stats (it averaged only the weights): restored
            # as the fields it has, the statistics' average (when kept) starting from the run's statistics.
            fields = {f.name: getattr(target, f.name) for f in dataclasses.fields(target)
                      if f.metadata.get("pytree_node", True) and f.name != "ema_batch_stats"}
            restored, meta = self.restore(step, fields)
            averaged = (jax.tree_util.tree_map(jnp.copy, restored["batch_stats"])
                        if target.ema_batch_stats is not None else None)
            return target.replace(**restored, ema_batch_stats=averaged), meta
        self.check_compatible(step, target)
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
        restored = self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
        )
        return restored["state"], dict(restored["meta"])

    def _seal_restored(self, step: int, state: Any) -> None:
        """A checkpoint without a manifest, just read whole: its values must all be finite (a run never
        saves a state whose loss was not finite); a writer then seals it, as its killed run did not."""
        if self.is_sealed(step):
            return
        if not _all_finite(state):
            raise ValueError("it holds NaN or infinite values, and no manifest to check its files against")
        if not self.read_only and jax.process_index() == 0:
            with contextlib.suppress(OSError):  # sealing is a safeguard; a full disk must not stop the resume
                write_manifest(self.step_directory(step))

    def available(self, step: int | None = None, *, hint: str = "") -> list[int]:
        """The steps held, with NoCheckpoint when there is none (or ``step`` is not among them), and
        BrokenCheckpoint when ``step``'s is damaged; each naming the damaged ones and why."""
        steps = self.all_steps()
        if step is not None and step in self.skipped:
            others = f"there are {', '.join(map(str, steps))}" if steps else "no other is usable"
            raise BrokenCheckpoint(f"checkpoint {step} in {self.directory} is unusable ({self.skipped[step]}); {others}")
        if not steps and self.skipped:  # the reasons, not only the log lines before
            reasons = "; ".join(f"{s}: {why}" for s, why in sorted(self.skipped.items(), reverse=True))
            raise NoCheckpoint(f"no usable checkpoint in {self.directory}: every one is damaged ({reasons})")
        if not steps:
            raise NoCheckpoint(f"no usable checkpoint in {self.directory}{hint}")
        if step is not None and step not in steps:
            raise NoCheckpoint(f"no checkpoint for step {step} in {self.directory}; "
                               f"there are {', '.join(map(str, steps))}")
        for skipped, problem in self.skipped.items() if step is None else ():
            self.log(f"checkpoint {skipped} in {self.directory} is unusable ({problem}); left out")
        return steps

    def restore_available(self, target: Any, *, step: int | None = None) -> tuple[Any, dict, int]:
        """``restore_latest``, with NoCheckpoint when every checkpoint is broken."""
        restored = self.restore_latest(target, step=step)
        if restored is None:
            raise NoCheckpoint(f"no readable checkpoint in {self.directory}: every one is broken")
        return restored

    def restore_latest(self, target: Any, *, step: int | None = None) -> tuple[Any, dict, int] | None:
        """Restores the newest good checkpoint (or exactly ``step``); None if there is none.

        Broken checkpoints on the way are reported, moved to WORKDIR/broken_checkpoints and
        skipped. A checkpoint that is intact but does not fit ``target`` raises CheckpointMismatch.
        """
        tried: set[int] = set()
        while True:
            candidates = [step] if step is not None else [s for s in reversed(self.all_steps()) if s not in tried]
            if not candidates or len(tried) > 100:
                return None
            candidate = candidates[0]
            tried.add(candidate)
            problem = verify_manifest(self.step_directory(candidate))
            if problem is None:
                try:
                    with _quiet_unraisable():
                        state, meta = self.restore(candidate, target)
                        self._seal_restored(candidate, state)
                    return state, meta, candidate
                except CheckpointMismatch:
                    raise
                except Exception as e:  # unreadable: truncated or corrupted files, bad metadata
                    first = str(e).splitlines()[0].split(" See full TensorStore details")[0] if str(e) else ""
                    problem = f"unreadable: {type(e).__name__}: {first}"
                    if step is None and not self.step_directory(candidate).exists():
                        # deleted while it was read: the run training in this workdir pruned it
                        self.manager.reload()
                        continue
            if step is not None:
                raise BrokenCheckpoint(f"checkpoint {candidate} in {self.directory} is broken ({problem})")
            if self.read_only:
                self.log(f"checkpoint {candidate} is broken ({problem}); using the previous one")
                continue
            moved = self.move_aside(candidate)
            self.log(f"checkpoint {candidate} is broken ({problem}); moved it to {moved}; trying the previous one")
        return None

    def _move(self, step: int) -> pathlib.Path:
        """Process 0 moves checkpoints/<step> (whatever it is; a symlink itself, not its target) aside."""
        target = self.broken_directory / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
        if jax.process_index() == 0:
            self.broken_directory.mkdir(parents=True, exist_ok=True)
            suffix = 1
            while target.exists() or target.is_symlink():
                target = target.with_name(f"{step}-{time.strftime('%Y%m%d-%H%M%S')}-{suffix}")
                suffix += 1
            os.rename(self.step_directory(step), target)  # same filesystem: atomic, and never follows a link
        return target

    def move_aside(self, step: int) -> pathlib.Path:
        """Moves a broken checkpoint out of the manager's way, keeping it for inspection."""
        target = self._move(step)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"jaxconv_moved_{step}")
        self.manager.close()
        self.manager = self._manager()
        return target

    def check_compatible(self, step: int, target: Any) -> None:
        stored = self.manager.item_metadata(step)["state"]
        if stored is None:
            raise ValueError("no state metadata")
        check_fits(self.step_directory(step), stored, target)

    def close(self) -> None:
        try:
            self.manager.close()  # waits for every writer thread
        except Exception:  # Orbax raises a failed save's error again on closing: it was already said once
            if self._failed is None:
                raise
        finally:
            if self._failed is not None:
                self._discard_partial(self._failed)


def _has_field(stored: Any, field: str) -> bool:
    """Whether a checkpoint's state metadata has the entry ``field`` (None or empty included)."""
    tree = stored.tree if hasattr(stored, "tree") else stored
    return field in tree if isinstance(tree, Mapping) else hasattr(tree, field)


def check_fits(step_directory: pathlib.Path, stored: Any, target: Any) -> None:
    """CheckpointMismatch naming the missing, unexpected and differently shaped entries of ``stored``
    (a checkpoint's tree, or part of it) against ``target`` (what the model needs)."""
    stored_shapes = _shapes(stored)
    target_shapes = _shapes(target)

    def order(key):  # parameters first: they are what a reader recognises
        return (0 if key.startswith("params") else 1 if key.startswith("batch_stats") else 2, key)

    missing = sorted(set(target_shapes) - set(stored_shapes), key=order)
    unexpected = sorted(set(stored_shapes) - set(target_shapes), key=order)
    different = [
        f"{k} {stored_shapes[k]} in the checkpoint vs {target_shapes[k]} in the model"
        for k in sorted(set(stored_shapes) & set(target_shapes), key=order)
        if stored_shapes[k] != target_shapes[k]
    ]
    if missing or unexpected or different:
        parts = []
        for label, entries in (("missing", missing), ("unexpected", unexpected), ("wrongly shaped", different)):
            if entries:
                shown = ", ".join(entries[:6]) + (f" and {len(entries) - 6} more" if len(entries) > 6 else "")
                parts.append(f"{label}: {shown}")
        raise CheckpointMismatch(
            f"checkpoint {step_directory} does not fit this model ({'; '.join(parts)})"
        )


def _all_finite(tree: Any) -> bool:
    """Whether every floating-point value in ``tree`` is finite: one compiled reduction, the same answer
    on every process of a multi-process run."""
    leaves = [leaf for leaf in jax.tree_util.tree_leaves(tree)
              if hasattr(leaf, "dtype") and jax.numpy.issubdtype(leaf.dtype, jax.numpy.inexact)]
    if not leaves:
        return True
    check = jax.jit(lambda xs: jax.numpy.stack([jax.numpy.isfinite(x).all() for x in xs]).all())
    return bool(check(leaves))


@contextlib.contextmanager
def _quiet_unraisable():
    """Drops what an abandoned read leaves to the garbage collector: a checkpoint Orbax cannot read
    makes its unawaited read coroutines each print a traceback (hundreds) when they are collected."""
    previous = sys.unraisablehook

    def hook(unraisable):
        if not inspect.iscoroutine(unraisable.object):
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        gc.collect()
        sys.unraisablehook = previous


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: x is None)[0]
    shapes = {}
    for path, leaf in flat:
        if leaf is None:
            continue
        key = "/".join(_key_name(k) for k in path)
        shapes[key] = tuple(getattr(leaf, "shape", np.shape(leaf)))
    return shapes


def _key_name(key) -> str:
    for attribute in ("key", "name", "idx"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)
