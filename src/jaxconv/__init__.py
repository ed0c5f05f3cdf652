"""jaxconv: convolutional networks in JAX/Flax.

    >>> import jaxconv
    >>> model = jaxconv.get_model("resnet50", num_classes=10)
    >>> print(jaxconv.format_summary(jaxconv.summary("vgg16")))

Attributes are imported on first use, so `import jaxconv.data.procedural` (in data worker
processes) does not pay for JAX and Flax.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "get_model": "jaxconv.models",
    "list_models": "jaxconv.models",
    "model_info": "jaxconv.models",
    "register": "jaxconv.models",
    "summary": "jaxconv.analysis",
    "format_summary": "jaxconv.analysis",
    "fold_batchnorm": "jaxconv.analysis",
    "load_pretrained": "jaxconv.pretrained",
    "export_model": "jaxconv.export",
    "extract_features": "jaxconv.train.transfer",
}
_SUBMODULES = (
    "analysis", "archs", "blocks", "cli", "data", "export", "layers", "models", "pretrained", "registry", "stages",
    "train",
)

__all__ = sorted(_LAZY) + list(_SUBMODULES)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"jaxconv.{name}")
    else:
        raise AttributeError(f"module 'jaxconv' has no attribute {name!r}")
    globals()[name] = value
    return value
