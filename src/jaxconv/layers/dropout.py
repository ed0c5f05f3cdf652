"""Dropout (Srivastava et al. 2014) and stochastic depth (Huang et al. 2016)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxconv.layers.geometry import layer_name

# Inverted dropout: units are kept with probability 1 - rate and scaled by 1 / (1 - rate)
# during training, so evaluation uses the network unchanged (the lecture's "multiply by
# 0.5 at test time" is the same model, rescaled at the other end).
class Dropout(nn.Dropout):
    """``flax.linen.Dropout`` that refuses a rate outside [0, 1) (1.5 zeroed every unit in training, silently)."""

    def __call__(self, inputs, deterministic: bool | None = None, rng=None):
        rate = self.rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
            raise ValueError(f"{layer_name(self)}: rate={rate!r} must be in [0, 1) (the probability of dropping a unit)")
        return super().__call__(inputs, deterministic=deterministic, rng=rng)


class DropPath(nn.Module):
    """Stochastic depth: drops a residual branch for whole examples with probability ``rate``.

    Applied to the residual branch before the addition. In training, each example's branch
    is zeroed with probability ``rate`` and otherwise scaled by 1 / (1 - rate); in
    evaluation it is the identity. Uses the 'dropout' RNG stream.
    """

    rate: float = 0.0

    @nn.compact
    def __call__(self, x: jnp.ndarray, deterministic: bool = True) -> jnp.ndarray:
        if not 0.0 <= self.rate < 1.0:
            raise ValueError(f"DropPath rate must be in [0, 1), got {self.rate}")
        if deterministic or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
        return jnp.where(mask, x / keep, jnp.zeros_like(x))
