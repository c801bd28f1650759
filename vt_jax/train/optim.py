"""Learning-rate schedule and optimizer from a config's recipe (vt_jax.config_lib.recipes)."""

from __future__ import annotations

import math

import jax
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
  """The recipe's lr as a function of the step (formula: recipes module docstring).

  optax's pieces: a linear warm-up (`linear_schedule`), joined (`join_schedules`) at the
  first step past the warm-up to a staircase decay (`exponential_decay(staircase=True)`)
  or, with schedule.decay_at_fractions, to steps at fractions of the run
  (`piecewise_constant_schedule`).
  """
  s = config.schedule
  scale = config.batch_size / s.lr_batch_ref
  warmup_steps = s.warmup_epochs * spe  # may be fractional: warm while step < warmup_steps
  first_after = math.ceil(warmup_steps)  # the first (integer) step past the warm-up
  peak = scale * s.peak_lr

  fractions = tuple(s.get("decay_at_fractions", ()) or ())
  if fractions:  # steps of the whole run (num_train_steps or num_epochs of spe-step epochs)
    total = (config.num_train_steps if config.num_train_steps > 0
             else max(1, int(round(config.num_epochs * spe))))
    # Decayed from the first step >= f * total (rounded to 1e-6 first: 8/9 * 554400 is
    # 492799.99999999994 in floating point); join_schedules counts from first_after.
    boundaries = [math.ceil(round(f * total, 6)) - first_after for f in fractions]
    scales = {}
    for b in boundaries:  # equal boundaries multiply
      scales[b] = scales.get(b, 1.0) * s.decay_factor
    after = optax.piecewise_constant_schedule(peak, scales)
  else:
    decay = optax.exponential_decay(peak, s.decay_every_epochs * spe, s.decay_factor,
                                    staircase=True)
    # join_schedules passes step - first_after; the staircase counts from warmup_steps.
    offset = first_after - warmup_steps
    after = decay if offset == 0 else (lambda count: decay(count + offset))
  if first_after == 0:
    return after
  warm = optax.linear_schedule(scale * s.init_lr, peak, warmup_steps)
  return optax.join_schedules([warm, after], [first_after])


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
