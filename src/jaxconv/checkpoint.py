"""Orbax checkpoints of the training state under WORKDIR/checkpoints.

Keeps the last ``keep`` checkpoints and the best one by evaluation top-1. Saves are
asynchronous and atomic: Orbax writes into a temporary directory and renames it when
complete, so an interrupted save never becomes the latest checkpoint. Every process calls
save and restore (they are collective in multi-process runs).
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers


class CheckpointMismatch(ValueError):
    """A checkpoint does not fit the model it is restored into."""


def _top1(metrics: dict) -> float:
    return float(metrics["top1"])


class Checkpoints:
    """Save and restore {state, meta} items with a CheckpointManager."""

    def __init__(self, workdir: str | pathlib.Path, keep: int = 3, *, read_only: bool = False):
        self.directory = pathlib.Path(workdir).absolute() / "checkpoints"
        policy = checkpoint_managers.AnyPreservationPolicy(
            [
                checkpoint_managers.LatestN(n=keep),
                checkpoint_managers.BestN(get_metric_fn=_top1, n=1, keep_checkpoints_without_metrics=False),
            ]
        )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy,
            best_fn=_top1,  # also makes Orbax store each checkpoint's metrics, so a resumed run keeps the best
            best_mode="max",
            create=not read_only,
            read_only=read_only,
            enable_async_checkpointing=True,
        )
        handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def best_step(self) -> int | None:
        """The kept checkpoint with the highest evaluation top-1."""
        return self.manager.best_step()

    def save(self, step: int, state: Any, meta: dict, metrics: dict | None = None) -> None:
        """Starts saving; returns before the files are written (see ``wait``)."""
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        self.manager.save(step, args=args, metrics=metrics, force=True)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def restore(self, step: int, target: Any) -> tuple[Any, dict]:
        """Restores ``step`` into the structure, shapes and shardings of ``target``.

        Raises CheckpointMismatch naming the missing, unexpected and differently shaped entries.
        """
        self.check_compatible(step, target)
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
        restored = self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
        )
        return restored["state"], dict(restored["meta"])

    def check_compatible(self, step: int, target: Any) -> None:
        stored = self.manager.item_metadata(step)["state"]
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
                f"checkpoint {self.directory / str(step)} does not fit this model ({'; '.join(parts)})"
            )

    def close(self) -> None:
        self.manager.close()


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
