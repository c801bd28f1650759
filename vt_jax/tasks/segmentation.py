"""Semantic segmentation: a class per pixel; mIoU from one confusion matrix; best by miou.

Batches hold 'image' [B, H, W, 3], 'mask' int [B, H, W] (pixels without a label, padding
included, hold config.data.ignore_label) and 'valid' [B]; logits are [B, H, W, K] at the
input resolution.

Eval sums are a K x K confusion matrix (rows: ground truth, columns: prediction) of the
labelled pixels, computed under jit over the global batch, so it adds every device and host;
`accumulate` adds batches on the host in int64 (a float32 sum would stop counting exactly
past 2^24 pixels per cell, i.e. after ~70 COCO-stuff images of one dominant class).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vt_jax.tasks import base


def labelled(mask, ignore_label: int, num_classes: int, valid=None):
  """Boolean [B, H, W]: pixels that carry a class (not ignore, not in a valid=0 row)."""
  ok = (mask != ignore_label) & (mask >= 0) & (mask < num_classes)
  if valid is not None:
    ok &= valid[:, None, None] > 0
  return ok


def pixel_cross_entropy(logits, mask, ignore_label: int, valid=None):
  """Mean softmax CE over labelled pixels: [B, H, W, K], int [B, H, W] -> scalar."""
  k = logits.shape[-1]
  ok = labelled(mask, ignore_label, k, valid)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32),
                                                       jnp.where(ok, mask, 0))
  return jnp.sum(jnp.where(ok, ce, 0.0)) / jnp.maximum(jnp.sum(ok), 1)


def confusion_matrix(mask, prediction, ok, num_classes: int):
  """int32 [K, K]: entry (t, p) counts labelled pixels of class t predicted as p."""
  k = num_classes
  # bincount over t*K+p, with unlabelled pixels sent to a spare bin K*K that is dropped.
  index = jnp.where(ok, mask * k + prediction, k * k).reshape(-1)
  return jnp.bincount(index, length=k * k + 1)[:k * k].reshape(k, k).astype(jnp.int32)


def metrics_from_confusion(cm: np.ndarray) -> dict[str, float]:
  """{miou, pixel_acc, iou/<k>...} from a [K, K] confusion matrix (rows ground truth).

  IoU_k = TP / (TP + FP + FN); miou averages it over the classes with a non-empty union
  (present in the ground truth or predicted somewhere); a class absent from both has no
  IoU and no `iou/<k>` entry. pixel_acc = correct / labelled pixels.
  """
  cm = np.asarray(cm, np.int64)
  tp = np.diag(cm).astype(np.float64)
  union = cm.sum(0) + cm.sum(1) - np.diag(cm)
  total = cm.sum()
  if total == 0:
    raise ValueError("evaluation saw no labelled pixels; are all eval masks ignore_label?")
  present = union > 0
  iou = np.where(present, tp / np.maximum(union, 1), np.nan)
  out = {"miou": float(np.mean(iou[present])), "pixel_acc": float(tp.sum() / total)}
  out.update({f"iou/{k}": float(iou[k]) for k in np.flatnonzero(present)})
  return out


class Segmentation(base.Task):
  name = "segmentation"
  train_metric = "pixel_acc"
  score_metric = "miou"
  models = ("fpn", "vt_fpn")
  num_pictures = 4

  def __init__(self, config):
    super().__init__(config)
    self.num_classes = int(config.model.num_classes)
    self.ignore_label = config.data.get("ignore_label")

  def check_config(self, config):
    if config.data.get("ignore_label") is None:
      raise ValueError("config.data.ignore_label is None: segmentation needs the mask value "
                       "of unlabelled pixels (the padding uses it); set it (255 for the "
                       "bundled datasets)")
    if config.loss.label_smoothing:
      raise ValueError(f"config.loss.label_smoothing={config.loss.label_smoothing}: "
                       "segmentation trains with plain per-pixel cross-entropy; set it to 0")
    if config.distill.teacher_config:
      raise ValueError(f"config.distill.teacher_config={config.distill.teacher_config!r}: "
                       "knowledge distillation is implemented for classification only; "
                       "set it to ''")

  def loss(self, logits, batch, teacher_logits=None):
    if teacher_logits is not None:
      raise ValueError("segmentation has no distillation loss (config.distill.teacher_config)")
    return pixel_cross_entropy(logits, batch["mask"], self.ignore_label, batch.get("valid"))

  def train_batch_metric(self, logits, batch):
    mask = batch["mask"]
    ok = labelled(mask, self.ignore_label, logits.shape[-1], batch.get("valid"))
    correct = jnp.sum(ok & (jnp.argmax(logits, -1) == mask))
    return correct / jnp.maximum(jnp.sum(ok), 1)

  def eval_sums(self, logits, batch, ema=False):
    mask = batch["mask"]
    k = logits.shape[-1]
    ok = labelled(mask, self.ignore_label, k, batch.get("valid"))
    cm = confusion_matrix(mask, jnp.argmax(logits, -1), ok, k)
    if ema:
      return {"ema_confusion": cm}
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32),
                                                         jnp.where(ok, mask, 0))
    return {"confusion": cm, "loss": jnp.sum(jnp.where(ok, ce, 0.0))}

  def accumulate(self, total, sums):
    sums = jax.device_get(sums)
    sums = {k: np.asarray(v, np.int64 if "confusion" in k else np.float64)
            for k, v in sums.items()}
    return sums if total is None else {k: total[k] + v for k, v in sums.items()}

  def finish(self, total):
    """-> {loss, miou, pixel_acc, iou/<k>...[, ema_miou, ema_pixel_acc]} (host floats)."""
    cm = total["confusion"]
    out = {"loss": float(total["loss"]) / max(int(cm.sum()), 1)}
    out.update(metrics_from_confusion(cm))
    if "ema_confusion" in total:
      ema = metrics_from_confusion(total["ema_confusion"])
      out.update(ema_miou=ema["miou"], ema_pixel_acc=ema["pixel_acc"])
    return out

  def write_pictures(self, path, batch, predictions):
    from vt_jax.tasks import pictures  # pylint: disable=g-import-not-at-top
    data = self.config.data
    pictures.save_segmentation_grid(
        path, images=np.asarray(batch["image"]) * np.asarray(data.std) + np.asarray(data.mean),
        masks=np.asarray(batch["mask"]), predictions=np.asarray(predictions),
        num_classes=self.num_classes, ignore_label=self.ignore_label,
        names=pictures.class_names(data.name, self.num_classes))
