"""The jitted train and eval steps: pure functions of (state, batch) with explicit shardings.

Task-agnostic: the loss, the train-batch metric and the eval sums come from the task
(vt_jax.tasks, chosen by config.task).

The batch is a dict of GLOBAL arrays sharded over the mesh's 'data' axis; under jax.jit the
BatchNorm statistics are therefore computed over the global batch (synchronised BN).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from vt_jax import tasks as tasks_lib
from vt_jax.data import augment_device
from vt_jax.train import optim
from vt_jax.train import sharding as sharding_lib
from vt_jax.train.state import TrainState


def make_train_step(model, tx, config: ml_collections.ConfigDict, spe: int, mesh,
                    state_shardings, teacher=None, task=None) -> Callable:
  """Returns train_step(state, batch) -> (state, metrics), jitted once.

  rng: the step's dropout / stochastic-depth key is fold_in(state.rng, state.step), so a
  resumed run draws the same randomness as an uninterrupted one.
  teacher: None or (teacher_model, teacher_variables) for knowledge distillation.
  task: a vt_jax.tasks.Task (default: config.task's).
  metrics (replicated scalars): loss, the task's train_metric (train batch, before the
  update; classification: top1), lr, grad_norm, nonfinite (1.0 when the loss or gradient
  was not finite; the update was then dropped).
  """
  task = task or tasks_lib.get(config)
  lr_fn = optim.lr_schedule(config, spe)
  ema_decay = float(config.ema_decay)

  def step_fn(state: TrainState, batch, teacher_variables):
    rng = jax.random.fold_in(state.rng, state.step)
    images = batch["image"]
    if augment_device.enabled(config.data):  # uint8 crops: flip + policy + normalise here
      images = augment_device.train_images(batch, config)

    def loss_fn(params):
      logits, new_vars = model.apply(
          {"params": params, "batch_stats": state.batch_stats}, images, train=True,
          rngs={"dropout": rng}, mutable=["batch_stats"])
      teacher_logits = None
      if teacher is not None:
        teacher_logits = jax.lax.stop_gradient(
            teacher[0].apply(teacher_variables, images, train=False))
      loss = task.loss(logits, batch, teacher_logits)
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
    metrics = {"loss": loss, task.train_metric: task.train_batch_metric(logits, batch),
               "lr": lr_fn(state.step), "grad_norm": grad_norm,
               "nonfinite": 1.0 - finite.astype(jnp.float32)}
    return new_state, metrics

  batch_sharding = sharding_lib.batch_sharding(mesh)
  rep = sharding_lib.replicated(mesh)
  teacher_variables = teacher[1] if teacher is not None else None
  jitted = jax.jit(step_fn,
                   in_shardings=(state_shardings, batch_sharding, rep),
                   out_shardings=(state_shardings, rep),
                   donate_argnums=(0,))
  return lambda state, batch: jitted(state, batch, teacher_variables)


def make_eval_step(model, mesh, state_shardings, use_ema: bool, task,
                   data_config=None) -> Callable:
  """Returns eval_step(state, batch) -> the task's eval sums of the batch, jitted.

  Rows with valid=0 (padding of the last eval batch) count nowhere, so summing over all
  batches counts every eval example exactly once. uint8 images (config.data.augment_device)
  are normalised with data_config's mean/std; float ones come normalised.
  """

  def step_fn(state: TrainState, batch):
    images = augment_device.eval_images(batch, data_config)
    logits = model.apply({"params": state.params, "batch_stats": state.batch_stats},
                         images, train=False)
    sums = task.eval_sums(logits, batch)
    if use_ema:
      ema_logits = model.apply({"params": state.ema_params, "batch_stats": state.ema_batch_stats},
                               images, train=False)
      sums.update(task.eval_sums(ema_logits, batch, ema=True))
    return sums

  return jax.jit(step_fn, in_shardings=(state_shardings, sharding_lib.batch_sharding(mesh)),
                 out_shardings=sharding_lib.replicated(mesh))


def make_predict_step(model, mesh, state_shardings, task, num: int,
                      data_config=None) -> Callable:
  """Returns predict(state, batch) -> (first `num` rows of batch, their predictions).

  Outputs are replicated, so every process can read them (pictures on process 0).
  data_config: as make_eval_step's.
  """

  def step_fn(state: TrainState, batch):
    rows = {k: v[:num] for k, v in batch.items()}
    logits = model.apply({"params": state.params, "batch_stats": state.batch_stats},
                         augment_device.eval_images(rows, data_config), train=False)
    return rows, task.prediction(logits)

  return jax.jit(step_fn, in_shardings=(state_shardings, sharding_lib.batch_sharding(mesh)),
                 out_shardings=sharding_lib.replicated(mesh))
