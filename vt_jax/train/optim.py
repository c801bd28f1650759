"""Learning-rate schedule and optimizer from a config's recipe (vt_jax.config_lib.recipes)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax


def steps_per_epoch(config: ml_collections.ConfigDict, num_train_examples: int) -> int:
  """Whole global batches in one pass over the train split (>= 1)."""
  if num_train_examples < config.batch_size:
    raise ValueError(
        f"batch_size={config.batch_size} is larger than the train split "
        f"({num_train_examples} examples); lower config.batch_size")
  return num_train_examples // config.batch_size


def total_steps(config: ml_collections.ConfigDict, num_train_examples: int) -> int:
  if config.num_train_steps > 0:
    return int(config.num_train_steps)
  return max(1, int(round(config.num_epochs * steps_per_epoch(config, num_train_examples))))


def lr_schedule(config: ml_collections.ConfigDict, spe: int) -> optax.Schedule:
  """The recipe's lr as a function of the step (formula: recipes module docstring)."""
  s = config.schedule
  scale = config.batch_size / s.lr_batch_ref
  warmup_steps = s.warmup_epochs * spe
  decay_steps = s.decay_every_epochs * spe

  fractions = tuple(s.get("decay_at_fractions", ()) or ())
  if fractions:  # steps of the whole run (num_train_steps or num_epochs of spe-step epochs)
    total = (config.num_train_steps if config.num_train_steps > 0
             else max(1, int(round(config.num_epochs * spe))))
    boundaries = jnp.asarray([f * total for f in fractions], jnp.float32)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    warm = s.init_lr + (s.peak_lr - s.init_lr) * step / max(warmup_steps, 1e-9)
    if fractions:
      after = s.peak_lr * s.decay_factor ** jnp.sum(step >= boundaries)
    else:
      after = s.peak_lr * s.decay_factor ** jnp.floor((step - warmup_steps) / decay_steps)
    return scale * jnp.where(step < warmup_steps, warm, after)

  return schedule


def decay_mask(params) -> dict:
  """True for kernels (ndim > 1): biases and BN scales/offsets get no weight decay."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(config: ml_collections.ConfigDict, spe: int) -> optax.GradientTransformation:
  """clip (optional) -> masked L2 weight decay added to the gradient -> SGD / RMSProp."""
  o = config.optimizer
  lr = lr_schedule(config, spe)
  parts = []
  if o.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(o.grad_clip_norm))
  if o.weight_decay > 0:
    # Added to the gradient before momentum, as TF/PyTorch SGD weight decay does.
    parts.append(optax.masked(optax.add_decayed_weights(o.weight_decay), decay_mask))
  if o.name == "sgd":
    parts.append(optax.sgd(lr, momentum=o.momentum or None, nesterov=o.nesterov))
  elif o.name == "rmsprop":
    # TensorFlow RMSProp: eps inside the sqrt, accumulator initialised to 1, momentum on
    # the scaled update (optax applies momentum after scaling, as TF does).
    parts.append(optax.rmsprop(lr, decay=o.rmsprop_decay, eps=o.rmsprop_eps,
                               initial_scale=o.rmsprop_initial_scale, eps_in_sqrt=True,
                               momentum=o.momentum or None, nesterov=o.nesterov))
  else:
    raise ValueError(f"config.optimizer.name={o.name!r}; choose 'sgd' or 'rmsprop'")
  return optax.chain(*parts)
