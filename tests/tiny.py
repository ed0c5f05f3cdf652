"""The tiny training run the loop, fault and multi-process tests share.

A ResNet-8 (depths 1, 1, 1) on 16-pixel built-in shapes, batch 32, at a constant learning
rate: the compiled steps do not depend on the number of steps, the logging or checkpoint
intervals, so runs that differ only in those reuse one compilation (through the session's
persistent compilation cache, see conftest.py) — in this process and in the ones it starts.
"""

from __future__ import annotations

import pathlib

import ml_collections

from jaxconv.train.config import base_config

VALUES = {
    "image_size": 16, "shapes_train_examples": 256, "shapes_test_examples": 40, "batch_size": 32,
    "num_train_steps": 8, "log_every_steps": 2, "eval_every_steps": 8, "checkpoint_every_steps": 2,
    "learning_rate": 0.05, "schedule": "constant", "warmup_epochs": 0.0, "augment": "flip",
}
DEPTHS = (1, 1, 1)


def tiny_config(data_dir, **changes) -> ml_collections.ConfigDict:
    """The shared config (not validated) with ``changes`` applied."""
    config = base_config()
    config.update(data_dir=str(data_dir), **VALUES)
    config.model_options = ml_collections.ConfigDict({"depths": DEPTHS})
    config.update(changes)
    return config


def write_experiment(path: pathlib.Path, data_dir, **changes) -> pathlib.Path:
    """The shared config as an experiment file, for `jaxconv train --config` in a subprocess."""
    values = {"data_dir": str(data_dir), **VALUES, **changes}
    lines = ["import ml_collections", "from jaxconv.train.config import base_config", "", "",
             "def get_config():", "    c = base_config()"]
    lines += [f"    c.{key} = {value!r}" for key, value in values.items()]
    lines += [f"    c.model_options = ml_collections.ConfigDict({{'depths': {DEPTHS!r}}})", "    return c", ""]
    path.write_text("\n".join(lines))
    return path
