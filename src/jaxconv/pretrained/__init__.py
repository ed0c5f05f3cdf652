"""Pretrained ImageNet weights: torchvision state dicts converted to jaxconv models, and prediction.

    >>> from jaxconv.pretrained import load_pretrained, weights_info
    >>> model, variables = load_pretrained("resnet50", "resnet50-11ad3fa6.pth")
    >>> logits = model.apply(variables, images, train=False)  # (N, 224, 224, 3), normalized

Modules: ``convert`` (state dict -> variables, per family), ``torchfile`` (PyTorch .pth files
read without torch, tensors only: no pickled code runs), ``weights`` (the published
weight sets: URL, hash, preprocessing, accuracy; cache and download), ``predict``
(image files -> top-k classes), ``synthetic`` (seeded weights for parity tests, numpy only).
Attributes load on first use, so ``jaxconv.pretrained.synthetic`` imports without JAX.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "load_pretrained": "convert",
    "convert_state_dict": "convert",
    "read_state_dict": "convert",
    "torch_layout": "convert",
    "SUPPORTED": "convert",
    "WeightsMismatchError": "convert",
    "WeightsFormatError": "torchfile",
    "WEIGHTS": "weights",
    "WeightSet": "weights",
    "Preprocessing": "weights",
    "weights_info": "weights",
    "load_published": "weights",
    "fetch": "weights",
    "WeightsNotFoundError": "weights",
    "WeightsHashError": "weights",
    "preprocess": "predict",
    "predict_files": "predict",
    "imagenet_classes": "predict",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'jaxconv.pretrained' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"jaxconv.pretrained.{_LAZY[name]}"), name)
    globals()[name] = value
    return value
