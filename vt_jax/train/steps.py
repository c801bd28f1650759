"""The jitted train and eval steps: pure functions of (state, batch) with explicit shardings.

The batch is a dict of GLOBAL arrays sharded over the mesh's 'data' axis; under jax.jit the
BatchNorm statistics are therefore computed over the global batch (synchronised BN).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from vt_jax.train import losses
from vt_jax.train import optim
from vt_jax.train import sharding as sharding_lib
from vt_jax.train.state import TrainState


def _topk_correct(logits, labels, k):
  topk = jax.lax.top_k(logits.astype(jnp.float32), k)[1]
  return jnp.any(topk == labels[:, None], axis=-1).astype(jnp.float32)


def make_train_step(model, tx, config: ml_collections.ConfigDict, spe: int, mesh,
                    state_shardings, teacher=None) -> Callable:
  """Returns train_step(state, batch) -> (state, metrics), jitted once.

  rng: the step's dropout / stochastic-depth key is fold_in(state.rng, state.step), so a
  resumed run draws the same randomness as an uninterrupted one.
  teacher: None or (teacher_model, teacher_variables) for knowledge distillation.
  metrics (replicated scalars): loss, top1 (train batch, before the update), lr, grad_norm,
  nonfinite (1.0 when the loss or gradient was not finite; the update was then dropped).
  """
  lr_fn = optim.lr_schedule(config, spe)
  ema_decay = float(config.ema_decay)
  smoothing = float(config.loss.label_smoothing)
  distill = config.distill

  def step_fn(state: TrainState, batch, teacher_variables):
    rng = jax.random.fold_in(state.rng, state.step)
    images, labels = batch["image"], batch["label"]
    weights = batch.get("valid")

    def loss_fn(params):
      logits, new_vars = model.apply(
          {"params": params, "batch_stats": state.batch_stats}, images, train=True,
          rngs={"dropout": rng}, mutable=["batch_stats"])
      if teacher is not None:
        teacher_logits = jax.lax.stop_gradient(
            teacher[0].apply(teacher_variables, images, train=False))
        loss = losses.distill_loss(logits, teacher_logits, labels, weight=distill.weight,
                                   temperature=distill.temperature,
                                   label_smoothing=smoothing, weights=weights)
      else:
        loss = losses.cross_entropy(logits, labels, smoothing, weights)
      return loss, (logits, new_vars.get("batch_stats", {}))

    (loss, (logits, new_batch_stats)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    grad_norm = optax.global_norm(grads)
    updates, new_opt_state = tx.update(grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    if ema_decay > 0:
      # ema <- decay * ema + (1 - decay) * new, for params and BN statistics.
      new_ema_params = optax.incremental_update(new_params, state.ema_params, 1.0 - ema_decay)
      new_ema_stats = optax.incremental_update(new_batch_stats, state.ema_batch_stats,
                                               1.0 - ema_decay)
    else:
      new_ema_params, new_ema_stats = new_params, new_batch_stats
    new_state = state.replace(step=state.step + 1, params=new_params,
                              batch_stats=new_batch_stats, opt_state=new_opt_state,
                              ema_params=new_ema_params, ema_batch_stats=new_ema_stats)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    # A non-finite step never corrupts the state: the loop stops (on_nonfinite_loss=error)
    # or continues from the unchanged state with the step counted (skip).
    new_state = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new_state,
                             state.replace(step=state.step + 1))
    top1 = jnp.sum(_topk_correct(logits, labels, 1) * (1.0 if weights is None else weights))
    count = jnp.float32(labels.shape[0]) if weights is None else jnp.sum(weights)
    metrics = dict(loss=loss, top1=top1 / jnp.maximum(count, 1.0), lr=lr_fn(state.step),
                   grad_norm=grad_norm, nonfinite=1.0 - finite.astype(jnp.float32))
    return new_state, metrics

  batch_sharding = sharding_lib.batch_sharding(mesh)
  rep = sharding_lib.replicated(mesh)
  teacher_variables = teacher[1] if teacher is not None else None
  jitted = jax.jit(step_fn,
                   in_shardings=(state_shardings, batch_sharding, rep),
                   out_shardings=(state_shardings, rep),
                   donate_argnums=(0,))
  return lambda state, batch: jitted(state, batch, teacher_variables)


def make_eval_step(model, mesh, state_shardings, use_ema: bool) -> Callable:
  """Returns eval_step(state, batch) -> sums {count, loss, top1, top5[, ema_top1]}, jitted.

  Rows with valid=0 (padding of the last eval batch) count nowhere, so summing over all
  batches counts every eval example exactly once.
  """

  def step_fn(state: TrainState, batch):
    images, labels = batch["image"], batch["label"]
    valid = batch.get("valid", jnp.ones(labels.shape, jnp.float32))
    logits = model.apply({"params": state.params, "batch_stats": state.batch_stats},
                         images, train=False).astype(jnp.float32)
    per_example_ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], -1)[:, 0]
    sums = dict(count=jnp.sum(valid), loss=jnp.sum(per_example_ce * valid),
                top1=jnp.sum(_topk_correct(logits, labels, 1) * valid),
                top5=jnp.sum(_topk_correct(logits, labels, min(5, logits.shape[-1])) * valid))
    if use_ema:
      ema_logits = model.apply({"params": state.ema_params, "batch_stats": state.ema_batch_stats},
                               images, train=False)
      sums["ema_top1"] = jnp.sum(_topk_correct(ema_logits, labels, 1) * valid)
    return sums

  return jax.jit(step_fn, in_shardings=(state_shardings, sharding_lib.batch_sharding(mesh)),
                 out_shardings=sharding_lib.replicated(mesh))


def finish_eval(sums) -> dict:
  """Sums over all eval batches -> {loss, top1, top5[, ema_top1]} means (host floats)."""
  sums = jax.device_get(sums)
  count = float(sums.pop("count"))
  if count == 0:
    raise ValueError("evaluation saw no valid examples; is the eval split empty?")
  return {k: float(v) / count for k, v in sums.items()}
