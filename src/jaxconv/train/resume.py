"""What a resumed run checks first: that its config still describes the run in the workdir."""

from __future__ import annotations

import json
import os
import pathlib
import time
from collections.abc import Callable, Collection
from typing import Any

import ml_collections

from jaxconv.errors import UserError
from jaxconv.train.config import base_config, flat, upgrade
from jaxconv.train.keys import RESUMABLE_KEYS, RUN_DEFINING_KEYS
from jaxconv.train.workdir import append_line


class ConfigChanged(UserError, ValueError):
    """A resume with a config that changes what the run is."""


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def config_changes(stored: dict, config: ml_collections.ConfigDict) -> dict[str, tuple[Any, Any]]:
    """``{key: (the run's value, the new value)}`` for every key that differs (dotted: ``optimizer.name``;
    model options as ``model_options.NAME``). Keys the stored config lacks (an older jaxconv's) count
    at their default."""
    defaults = _plain(flat(base_config().to_dict()))
    old, new = _plain(flat(upgrade(stored))), _plain(flat(config.to_dict()))
    changes = {}
    for key in sorted(set(defaults) | set(old) | set(new)):
        before, after = old.get(key, defaults.get(key)), new.get(key, defaults.get(key))
        if key == "model_options" and isinstance(before, dict) and isinstance(after, dict):
            for name in sorted(set(before) | set(after)):
                if before.get(name) != after.get(name):
                    changes[f"model_options.{name}"] = (before.get(name), after.get(name))
        elif key == "folder" and isinstance(before, str) and isinstance(after, str):
            if os.path.realpath(os.path.expanduser(before)) != os.path.realpath(os.path.expanduser(after)):
                changes[key] = (before, after)  # the same folder spelled otherwise is no change
        elif before != after:
            changes[key] = (before, after)
    return changes


def check_resume(stored: dict, config: ml_collections.ConfigDict, allow: Collection[str] = (), *,
                 where: str = "the workdir") -> dict[str, tuple[Any, Any]]:
    """The changes a resume makes to the run's config; raises ConfigChanged for those that change what
    the run is, unless ``allow`` names them (or is ``{'all'}``)."""
    changes = config_changes(stored, config)
    for key, (before, after) in changes.items():
        reason = _reshapes_optimizer_state(key, before, after, config)
        if reason:
            run = where.removeprefix("workdir ") if where.startswith("workdir ") else "THE_RUN"
            raise ConfigChanged(
                f"{where} holds a run trained with config.{key} {_short(before)}, and a resume cannot change it to "
                f"{_short(after)} ({reason}: the checkpoint's optimizer state cannot continue); keep it, or start a "
                f"new run from this one's weights with --config.init_weights={run} in another --workdir")
    refused = {key: values for key, values in changes.items()
               if key not in RESUMABLE_KEYS and "all" not in allow
               and key not in allow and key.partition(".")[0] not in allow}
    if refused:
        listed = ", ".join(f"{key} {_short(before)} -> {_short(after)}" for key, (before, after) in refused.items())
        raise ConfigChanged(
            f"{where} holds a run trained with other values: {listed}; these change what the run is, so resume "
            f"without them, give a new run another --workdir, or continue with them anyway with "
            f"--allow-change {','.join(refused)} (recorded in config_changes.jsonl)")
    return changes


def _reshapes_optimizer_state(key: str, before: Any, after: Any, config: ml_collections.ConfigDict) -> str | None:
    """Why changing ``key`` from ``before`` to ``after`` gives the optimizer state another structure (the
    checkpoint's would not restore into it), or None when the state keeps its structure."""
    from jaxconv.train.freezing import parse_freeze

    switched = (before is None) != (after is None)
    plain = config.optimizer.name != "adamw"  # AdamW's decay is part of its one transformation
    if key == "optimizer.name":
        return "another optimizer keeps other state"
    if key == "optimizer.grad_clip_norm" and switched:
        return "clipping on or off adds or removes a step of the optimizer"
    if key == "optimizer.weight_decay" and plain and bool(before) != bool(after):
        return "weight decay on or off adds or removes a step of the optimizer"
    if key == "optimizer.momentum" and plain and bool(before) != bool(after):
        return "momentum on or off adds or removes its state"
    if key == "ema_decay" and switched:
        return "the weights' moving average is kept only when ema_decay is set"
    if key == "freeze" and parse_freeze(before) != parse_freeze(after):
        return "frozen parameters keep no optimizer state"
    return None


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def changes_on_resume(config: ml_collections.ConfigDict, workdir: pathlib.Path,
                          allow_changes: Collection[str]) -> dict:
    """The changes this resume makes to the run's config.json (ConfigChanged for those not allowed)."""
    path = workdir / "config.json"
    if not path.exists():
        return {}
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(stored, dict):
            raise ValueError(f"it holds a {type(stored).__name__}")
        missing = [key for key in RUN_DEFINING_KEYS if key not in stored]
        if missing:
            raise ValueError(f"it has no {', '.join(missing)}, which every run records")
    except (OSError, ValueError) as e:
        if "all" in allow_changes:
            return {}
        raise ConfigChanged(f"{path} is unreadable ({e}), so this config cannot be checked against the run's; "
                            f"continue with it anyway with --allow-change all") from None
    return check_resume(stored, config, allow_changes, where=f"workdir {workdir}")


def record_changes(config, workdir: pathlib.Path, step: int, changes: dict, log: Callable[[str], None]) -> None:
    for key, (before, after) in changes.items():
        decides = key == "num_train_steps" or (key == "num_epochs" and not config.num_train_steps)
        note = ""
        if key == "num_epochs" and not decides:
            note = f" (config.num_train_steps={config.num_train_steps} decides the run's length: this changes nothing)"
        elif decides and config.schedule != "constant":
            note = f" (the {config.schedule} learning-rate schedule now spans the new length)"
        log(f"resuming with config.{key} {json.dumps(before)} -> {json.dumps(after)}{note}")
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "step": step,
              "changes": {key: list(values) for key, values in changes.items()}}
    append_line(workdir / "config_changes.jsonl", json.dumps(record))


__all__ = ["ConfigChanged", "changes_on_resume", "check_resume", "config_changes", "record_changes"]


# -- the data a run was started on -------------------------------------------------------------------------------------

DATASET_RECORD = "dataset.json"


class DatasetChanged(UserError, ValueError):
    """A resume (or an evaluation) of a run whose dataset's classes are not the ones it was trained on."""


def dataset_record(sources: dict) -> dict:
    """What a run records about its data when it starts: the class names (a folder dataset's) and the sizes."""
    classes = getattr(sources["train"], "classes", None)
    return {"classes": list(classes) if classes is not None else None,
            "train_examples": len(sources["train"]), "eval_examples": len(sources["eval"])}


def recorded_dataset(workdir: pathlib.Path) -> dict | None:
    """WORKDIR/dataset.json as the run wrote it; None for a run of an older jaxconv, or one not started yet."""
    try:
        recorded = json.loads((workdir / DATASET_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return recorded if isinstance(recorded, dict) else None


def check_dataset(workdir: pathlib.Path, sources: dict, log: Callable[[str], None], *, what: str = "a resume") -> None:
    """Refuses a run whose classes are not those it started with (renaming a class folder swapped the labels
    silently; adding one met the checkpoint as a shape mismatch); says so when the sizes changed."""
    recorded = recorded_dataset(workdir)
    if recorded is None:
        return
    now = dataset_record(sources)
    before, after = recorded.get("classes"), now["classes"]
    if before is not None and after is not None and before != after:
        gone, new = [c for c in before if c not in after], [c for c in after if c not in before]
        change = "; ".join(part for part in (f"gone: {', '.join(gone)}" if gone else "",
                                             f"new: {', '.join(new)}" if new else "") if part) or "their order"
        raise DatasetChanged(
            f"the dataset's classes changed since the run in {workdir} started ({len(before)} then, {len(after)} now; "
            f"{change}): {what} would read its labels as other classes; restore the class folders, or start a new "
            f"workdir")
    for split in ("train", "eval"):
        key = f"{split}_examples"
        if isinstance(recorded.get(key), int) and recorded[key] != now[key]:
            log(f"warning: the {split} split had {recorded[key]} examples when the run started and has {now[key]} "
                f"now: the batches after this point differ from those an uninterrupted run would have seen")


def record_dataset(workdir: pathlib.Path, sources: dict) -> None:
    """Writes WORKDIR/dataset.json once, when the run starts (a resume keeps the first one)."""
    from jaxconv.train.workdir import atomic_write_text

    if not (workdir / DATASET_RECORD).exists():
        atomic_write_text(workdir / DATASET_RECORD, json.dumps(dataset_record(sources), indent=2) + "\n")
