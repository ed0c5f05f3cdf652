"""Layer scale (Touvron et al. 2021, CaiT): a learned per-channel factor on a residual branch."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


class LayerScale(nn.Module):
    """Multiplies (..., C) inputs by a learned (C,) vector ``scale``, initialised to ``init_value``.

    Started near zero (ConvNeXt: 1e-6), each residual branch begins close to the identity and the
    network learns how much of it to let in. The scale is cast to the input's dtype, so the branch
    computes in the model's compute dtype while the parameter stays float32.
    """

    init_value: float = 1e-6

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        scale = self.param("scale", nn.initializers.constant(self.init_value), (x.shape[-1],), jnp.float32)
        return x * scale.astype(x.dtype)
