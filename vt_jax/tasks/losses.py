"""Classification losses: label-smoothed cross-entropy and knowledge distillation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0,
                  weights: jax.Array | None = None) -> jax.Array:
  """Mean softmax CE. logits [B, K] (any float dtype), labels int [B], weights [B] or None."""
  num_classes = logits.shape[-1]
  targets = jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  per_example = optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)
  return _mean(per_example, weights)


def distillation(student_logits: jax.Array, teacher_logits: jax.Array,
                 temperature: float = 1.0, weights: jax.Array | None = None) -> jax.Array:
  """Hinton KD: T^2 * KL(softmax(teacher/T) || softmax(student/T)), mean over the batch."""
  t = temperature
  teacher = jax.nn.softmax(teacher_logits.astype(jnp.float32) / t)
  student_logp = jax.nn.log_softmax(student_logits.astype(jnp.float32) / t)
  kl = jnp.sum(teacher * (jnp.log(jnp.clip(teacher, 1e-30)) - student_logp), axis=-1)
  return _mean(kl, weights) * t * t


def distill_loss(student_logits, teacher_logits, labels, *, weight: float, temperature: float,
                 label_smoothing: float = 0.0, weights=None) -> jax.Array:
  """weight * KD + (1 - weight) * CE (the advanced recipe uses weight 0.8)."""
  kd = distillation(student_logits, teacher_logits, temperature, weights)
  ce = cross_entropy(student_logits, labels, label_smoothing, weights)
  return weight * kd + (1.0 - weight) * ce


def _mean(x, weights):
  if weights is None:
    return jnp.mean(x)
  return jnp.sum(x * weights) / jnp.maximum(jnp.sum(weights), 1.0)
