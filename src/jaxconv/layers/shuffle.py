"""Channel shuffle (Zhang et al. 2018, ShuffleNet): lets information cross channel groups."""

from __future__ import annotations

import jax.numpy as jnp


def channel_shuffle(x: jnp.ndarray, groups: int) -> jnp.ndarray:
    """Interleaves the ``groups`` channel groups of (..., C) inputs: group g's j-th channel goes to j * groups + g.

    The channels, read as a (groups, C / groups) matrix, are transposed and flattened back, as
    torchvision's ``channel_shuffle`` does to (N, C, H, W). After a split into groups (or a
    concatenation of branches), each new group then holds channels of every old one.
    """
    channels = x.shape[-1]
    if groups < 1 or channels % groups:
        raise ValueError(f"channel_shuffle: groups={groups} must be a positive divisor of the {channels} channels")
    grouped = x.reshape(*x.shape[:-1], groups, channels // groups)
    return jnp.swapaxes(grouped, -1, -2).reshape(x.shape)
