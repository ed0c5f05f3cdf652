"""Parameters and MACs of every built-in model at its default input, counted once and kept in
counts.json with its family, classes and description, so that `jaxconv list` answers without
tracing 50 networks (and, when no module of the user's is imported, without importing JAX at
all: jaxconv.cli.listing reads the file itself, since importing this package imports Flax).

``scripts/update_readme.py`` writes the file from ``jaxconv.summary``; the tests recount every
model and fail when the file is stale. A model the file does not hold (yours, or one registered
with other defaults) is traced as before.
"""

from __future__ import annotations

import functools
import json
import pathlib

PATH = pathlib.Path(__file__).with_name("counts.json")


@functools.cache
def _stored() -> dict[str, dict]:
    try:
        return json.loads(PATH.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing or damaged: every model is traced
        return {}


def counts(name: str) -> tuple[int, int]:
    """(parameters, MACs) of a registered model at its defaults (one image, its own input size)."""
    from jaxconv.models import model_info

    info = model_info(name)
    stored = _stored().get(name)
    if info.builtin and stored is not None and stored.get("image_size") == info.image_size:
        return stored["params"], stored["macs"]
    from jaxconv.analysis.summary import summary

    result = summary(name)
    return result.params, result.macs


def snapshot(summarize) -> dict[str, dict]:
    """What counts.json holds: every built-in model, counted by ``summarize(name)``."""
    from jaxconv.models import list_models, model_info

    table = {}
    for name in list_models():
        info = model_info(name)
        if info.builtin:
            result = summarize(name)
            table[name] = {"params": result.params, "macs": result.macs, "image_size": info.image_size,
                           "family": info.family, "num_classes": info.num_classes, "description": info.description}
    return table


def render(table: dict[str, dict]) -> str:
    return json.dumps(table, indent=1, sort_keys=True) + "\n"
