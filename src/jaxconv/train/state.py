"""The training state: everything a step reads and writes, and all a checkpoint needs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


class TrainState(flax.struct.PyTreeNode):
    """Parameters, BatchNorm running statistics, optimizer state, step and RNG.

    ``rng`` is a raw uint32 key; per-step randomness is ``fold_in(rng, step)``, so a run
    resumed from a checkpoint draws the same dropout masks as one that never stopped.
    ``ema_params`` is an exponential moving average of ``params`` and ``ema_batch_stats`` one of the BatchNorm
    running statistics (None when disabled): an evaluation reads both, as torchvision's and timm's EMA models do.
    ``lr_scale`` multiplies every update (lowered after a NaN rollback); ``rollbacks`` counts them.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array
    lr_scale: jax.Array
    rollbacks: jax.Array
    ema_params: Any = None
    ema_batch_stats: Any = None
    apply_fn: Callable = flax.struct.field(pytree_node=False, default=None)
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False, default=None)

    def eval_variables(self) -> dict:
        """The variables an evaluation uses: the moving averages when kept."""
        if self.ema_params is None:
            return {"params": self.params, "batch_stats": self.batch_stats}
        stats = self.batch_stats if self.ema_batch_stats is None else self.ema_batch_stats
        return {"params": self.ema_params, "batch_stats": stats}


def create_state(model, tx, rng: jax.Array, input_shape: tuple[int, ...], *, ema: bool) -> TrainState:
    """Initialises parameters and BatchNorm statistics (in evaluation mode) and the optimizer."""
    init_rng, state_rng = jax.random.split(rng)
    variables = model.init({"params": init_rng}, jnp.zeros(input_shape, jnp.float32), train=False)
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        rng=state_rng,
        lr_scale=jnp.ones((), jnp.float32),
        rollbacks=jnp.zeros((), jnp.int32),
        ema_params=jax.tree_util.tree_map(jnp.copy, params) if ema else None,
        ema_batch_stats=jax.tree_util.tree_map(jnp.copy, variables.get("batch_stats", {})) if ema else None,
        apply_fn=model.apply,
        tx=tx,
    )
