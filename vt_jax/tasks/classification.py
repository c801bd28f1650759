"""Image classification: one label per image; top-1/top-5 accuracy; best checkpoint by top1.

Batches hold 'image' [B, H, W, 3], 'label' int [B] and 'valid' [B] (0 for padding rows);
logits are [B, num_classes].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vt_jax.tasks import base
from vt_jax.tasks import losses


def topk_correct(logits, labels, k):
  """1.0 where the label is among the k largest logits: [B, K], [B] -> [B]."""
  topk = jax.lax.top_k(logits.astype(jnp.float32), k)[1]
  return jnp.any(topk == labels[:, None], axis=-1).astype(jnp.float32)


class Classification(base.Task):
  name = "classification"
  train_metric = "top1"
  score_metric = "top1"
  models = ("resnet", "vt_resnet")

  def loss(self, logits, batch, teacher_logits=None):
    labels, weights = batch["label"], batch.get("valid")
    smoothing = float(self.config.loss.label_smoothing)
    if teacher_logits is not None:
      distill = self.config.distill
      return losses.distill_loss(logits, teacher_logits, labels, weight=distill.weight,
                                 temperature=distill.temperature,
                                 label_smoothing=smoothing, weights=weights)
    return losses.cross_entropy(logits, labels, smoothing, weights)

  def train_batch_metric(self, logits, batch):
    labels, weights = batch["label"], batch.get("valid")
    top1 = jnp.sum(topk_correct(logits, labels, 1) * (1.0 if weights is None else weights))
    count = jnp.float32(labels.shape[0]) if weights is None else jnp.sum(weights)
    return top1 / jnp.maximum(count, 1.0)

  def eval_sums(self, logits, batch, ema=False):
    labels = batch["label"]
    valid = batch.get("valid", jnp.ones(labels.shape, jnp.float32))
    if ema:  # the EMA model is reported by its top-1 only
      return {"ema_top1": jnp.sum(topk_correct(logits, labels, 1) * valid)}
    logits = logits.astype(jnp.float32)
    per_example_ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], -1)[:, 0]
    return dict(count=jnp.sum(valid), loss=jnp.sum(per_example_ce * valid),
                top1=jnp.sum(topk_correct(logits, labels, 1) * valid),
                top5=jnp.sum(topk_correct(logits, labels, min(5, logits.shape[-1])) * valid))

  def finish(self, total):
    """-> {loss, top1, top5[, ema_top1]}: means over the valid eval examples."""
    total = dict(jax.device_get(total))
    count = float(total.pop("count"))
    if count == 0:
      raise ValueError("evaluation saw no valid examples; is the eval split empty?")
    return {k: float(v) / count for k, v in total.items()}
