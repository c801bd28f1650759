"""TrainState: everything a resumed run needs, as one pytree (checkpointed whole)."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class TrainState:
  step: jax.Array            # int32 scalar: updates applied so far (= data position)
  params: Any
  batch_stats: Any
  opt_state: Any
  ema_params: Any            # == params when EMA is off (ema_decay = 0)
  ema_batch_stats: Any
  rng: jax.Array             # root key; step keys are fold_in(rng, step)


def create(model, tx, rng: jax.Array, image_shape) -> TrainState:
  """Initialises a model on a [1, *image_shape] zero batch. Pure: jit it with out_shardings."""
  init_rng, dropout_rng, train_rng = jax.random.split(rng, 3)
  variables = model.init({"params": init_rng, "dropout": dropout_rng},
                         jnp.zeros((1, *image_shape), jnp.float32), train=False)
  params = variables["params"]
  batch_stats = variables.get("batch_stats", {})
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=tx.init(params), ema_params=params, ema_batch_stats=batch_stats,
                    rng=train_rng)
