"""Normalisation layers: BatchNorm with running statistics, and AlexNet's local response norm."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
from jax import lax


class BatchNorm(nn.BatchNorm):
    """Batch normalisation over (N, H, W) per channel, with running statistics.

    Call it as ``norm(x, use_running_average=not train)``: in training it normalises with
    the batch statistics and updates ``batch_stats`` (mean, var) by an exponential moving
    average; in evaluation it uses them, and is then a per-channel affine map that
    ``jaxconv.analysis.fold_batchnorm`` folds into the preceding convolution.

    Defaults follow torchvision: ``momentum=0.9`` here is PyTorch's ``momentum=0.1``
    (flax keeps the fraction of the old statistic), ``epsilon=1e-5``. With ``axis_name``
    set (inside pmap/shard_map), mean and E[x^2] are averaged over that device axis, so the
    statistics are those of the global batch (variance = E[x^2] - E[x]^2).
    Running variance is the biased batch variance (PyTorch stores the unbiased one).
    """

    momentum: float = 0.9
    epsilon: float = 1e-5


class LocalResponseNorm(nn.Module):
    """Local response normalisation across channels (Krizhevsky et al. 2012, §3.3).

        b[c] = a[c] / (k + alpha * sum_{c' in window(c)} a[c']^2) ** beta

    over the ``size`` channels centred on c. AlexNet uses k=2, n=5, alpha=1e-4, beta=0.75.
    This is the paper's formula; PyTorch's and Caffe's LRN divide alpha by ``size``, so
    their ``alpha`` equals ``size`` times this one.
    """

    size: int = 5
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 2.0

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        squares = jnp.square(x.astype(jnp.float32))
        half = self.size // 2
        window_sum = lax.reduce_window(
            squares,
            0.0,
            lax.add,
            (1, 1, 1, self.size),
            (1, 1, 1, 1),
            ((0, 0), (0, 0), (0, 0), (half, self.size - 1 - half)),
        )
        scale = (self.k + self.alpha * window_sum) ** (-self.beta)
        return (x * scale).astype(x.dtype)
