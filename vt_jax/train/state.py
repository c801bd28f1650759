"""TrainState: everything a resumed run needs, as one pytree (checkpointed whole)."""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

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


class ShardedInit(NamedTuple):
  """What placing a new TrainState on a mesh needs, computed once.

  init(rng) -> TrainState, jitted so each leaf is created directly on its devices;
  shardings: the NamedSharding pytree (also the train/eval steps' in/out shardings);
  shapes: the abstract state (jax.ShapeDtypeStruct leaves), e.g. for checkpoint restore.
  """
  init: Callable[[jax.Array], TrainState]
  shardings: Any
  shapes: Any


def sharded_init(model, tx, image_shape, mesh, rules) -> ShardedInit:
  """The one place that builds a sharded TrainState (the loop, benchmarks and tests use it).

  image_shape: (H, W, C) of one example; mesh: from sharding.make_mesh; rules:
  config.mesh.rules (which leaves are FSDP-sharded over the mesh's 'model' axis).
  """
  from vt_jax.train import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
  fn = functools.partial(create, model, tx, image_shape=tuple(image_shape))
  shapes = jax.eval_shape(fn, jax.random.PRNGKey(0))
  shardings = sharding_lib.state_shardings(shapes, mesh, rules)
  return ShardedInit(jax.jit(fn, out_shardings=shardings), shardings, shapes)
