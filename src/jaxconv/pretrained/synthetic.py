"""Deterministic pseudo-random weights in a torchvision state-dict layout (numpy only).

The parity fixtures are made by scripts/make_parity_fixtures.py in a torch environment
without JAX, and checked by the tests without torch: both fill the same key -> shape
listing with this generator, so this module imports nothing but numpy.

Each tensor is drawn from its own stream, seeded by (seed, crc32(key)), so it does not
depend on the order of the keys or on which other keys exist. Scales keep activations
O(1) through deep networks in evaluation mode, so that a relative error of the logits
means something:

- conv / linear weights (ndim >= 2): normal, variance 1 / fan_in (fan_in = in x kh x kw).
  He's 2 / fan_in would double the residual stream at every block, because these BN
  statistics do not track the activations (ResNet-50's logits reach std ~500); with
  1 / fan_in the six parity models' logits have std 0.17 to 1.4;
- biases: normal, std 0.05;
- BatchNorm weight U(0.5, 1.5), bias N(0, 0.1), running_mean N(0, 0.2), running_var U(0.5, 2):
  non-trivial statistics, so that a BN converted with the wrong eps, or with mean and
  variance swapped, changes the logits;
- num_batches_tracked: an int64 scalar, as torch stores it (converters ignore it).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence

import numpy as np

BN_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def _batchnorm_prefixes(keys: Sequence[str]) -> set[str]:
    """Module prefixes that are BatchNorms (they have a running_var)."""
    return {k.rsplit(".", 1)[0] for k in keys if k.endswith(".running_var")}


def random_state_dict(layout: Mapping[str, Sequence[int]], seed: int = 0) -> dict[str, np.ndarray]:
    """A state dict with the keys and shapes of ``layout`` (key -> shape), float32, from ``seed``."""
    norms = _batchnorm_prefixes(list(layout))
    state: dict[str, np.ndarray] = {}
    for key, shape in layout.items():
        shape = tuple(int(s) for s in shape)
        prefix, leaf = key.rsplit(".", 1) if "." in key else ("", key)
        rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
        if leaf == "num_batches_tracked":
            state[key] = np.asarray(1000, dtype=np.int64).reshape(shape)
            continue
        if prefix in norms:
            if leaf == "weight":
                value = rng.uniform(0.5, 1.5, shape)
            elif leaf == "bias":
                value = rng.normal(0.0, 0.1, shape)
            elif leaf == "running_mean":
                value = rng.normal(0.0, 0.2, shape)
            elif leaf == "running_var":
                value = rng.uniform(0.5, 2.0, shape)
            else:
                raise ValueError(f"{key}: unexpected BatchNorm entry {leaf!r}")
        elif len(shape) >= 2:
            fan_in = math.prod(shape[1:])
            value = rng.standard_normal(shape, dtype=np.float32) * np.float32(math.sqrt(1.0 / fan_in))
        else:
            value = rng.normal(0.0, 0.05, shape)
        state[key] = np.asarray(value, dtype=np.float32)
    return state


def random_images(shape: Sequence[int], seed: int = 0) -> np.ndarray:
    """Standard-normal float32 images of ``shape`` (the normalized-input scale), from ``seed``."""
    return np.random.default_rng([seed, 7]).standard_normal(tuple(shape)).astype(np.float32)


def checksum(arrays: Mapping[str, np.ndarray] | np.ndarray) -> float:
    """A float64 fingerprint to detect a changed random stream: sum of |x| over ~1,000 evenly
    spaced entries of each array (all of a small one), over the arrays in key order."""

    def sample_sum(x: np.ndarray) -> float:
        flat = np.asarray(x).reshape(-1)
        return float(np.abs(flat[:: max(1, flat.size // 1000)]).sum(dtype=np.float64))

    if isinstance(arrays, np.ndarray):
        return sample_sum(arrays)
    return float(sum(sample_sum(arrays[k]) for k in sorted(arrays)))
