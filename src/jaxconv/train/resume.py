"""What a resumed run checks first: that its config still describes the run in the workdir."""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Callable, Collection

import ml_collections

from jaxconv.train.config import ConfigChanged, check_resume
from jaxconv.train.keys import RUN_DEFINING_KEYS
from jaxconv.train.workdir import append_line


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
        stretched = key in ("num_train_steps", "num_epochs") and config.schedule != "constant"
        note = f" (the {config.schedule} learning-rate schedule now spans the new length)" if stretched else ""
        log(f"resuming with config.{key} {json.dumps(before)} -> {json.dumps(after)}{note}")
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "step": step,
              "changes": {key: list(values) for key, values in changes.items()}}
    append_line(workdir / "config_changes.jsonl", json.dumps(record))


__all__ = ["changes_on_resume", "record_changes"]
