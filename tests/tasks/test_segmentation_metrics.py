"""Segmentation loss and metrics on hand-made inputs whose answers are worked out by hand."""

import jax.numpy as jnp
import numpy as np
import pytest

from vt_jax import tasks
from vt_jax.config_lib import data as data_configs
from vt_jax.config_lib import models as model_configs
from vt_jax.config_lib import recipes
from vt_jax.tasks import segmentation as seg

IGNORE = 255


def test_metrics_from_a_hand_made_confusion_matrix():
  # rows: ground truth, columns: prediction. Class 3 is absent from both: no IoU, not averaged.
  # Class 2: never in the ground truth, predicted once -> IoU 0, and averaged.
  cm = np.array([[5, 1, 0, 0],
                 [2, 3, 1, 0],
                 [0, 0, 0, 0],
                 [0, 0, 0, 0]])
  m = seg.metrics_from_confusion(cm)
  iou0 = 5 / (6 + 7 - 5)   # TP 5, row 6, column 7
  iou1 = 3 / (6 + 4 - 3)   # TP 3, row 6, column 4
  iou2 = 0.0
  assert m["iou/0"] == pytest.approx(iou0)
  assert m["iou/1"] == pytest.approx(iou1)
  assert m["iou/2"] == 0.0
  assert "iou/3" not in m
  assert m["miou"] == pytest.approx((iou0 + iou1 + iou2) / 3)
  assert m["pixel_acc"] == pytest.approx(8 / 12)


def test_no_labelled_pixel_is_an_error():
  with pytest.raises(ValueError, match="no labelled pixels"):
    seg.metrics_from_confusion(np.zeros((3, 3), np.int64))


def test_confusion_matrix_skips_ignore_pixels_and_padding_rows():
  mask = jnp.array([[[0, 1], [IGNORE, 2]],
                    [[1, 1], [1, 1]]])          # row 1 is padding (valid=0)
  pred = jnp.array([[[0, 2], [1, 2]],
                    [[0, 0], [0, 0]]])
  ok = seg.labelled(mask, IGNORE, 3, valid=jnp.array([1.0, 0.0]))
  cm = np.asarray(seg.confusion_matrix(mask, pred, ok, 3))
  want = np.zeros((3, 3), np.int64)
  want[0, 0] = want[1, 2] = want[2, 2] = 1      # the ignore pixel (predicted 1) counts nowhere
  np.testing.assert_array_equal(cm, want)


def test_cross_entropy_ignores_unlabelled_pixels():
  logits = jnp.array([[[[2.0, 0.0], [0.0, 3.0]]]])  # [1, 1, 2, 2]
  mask = jnp.array([[[0, IGNORE]]])
  want = -np.log(np.exp(2.0) / (np.exp(2.0) + 1.0))  # only pixel 0 counts
  assert float(seg.pixel_cross_entropy(logits, mask, IGNORE)) == pytest.approx(want, rel=1e-6)


def _seg_config(**kw):
  config = recipes.default(task="segmentation")
  config.model = model_configs.fpn(18, 11, width=8, small_image_stem=True)
  config.data = data_configs.digit_scenes(64)
  for field, value in kw.items():  # replace whole sections (data_dir is a typed placeholder,
    config[field] = value          # which ConfigDict.update cannot merge into another one)
  return config


def test_eval_sums_accumulate_to_the_metrics_of_one_big_batch():
  """Two halves accumulated = the whole at once (what makes N hosts agree with 1)."""
  task = tasks.get(_seg_config())
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(4, 5, 6, 11)), jnp.float32)
  mask = rng.integers(0, 11, size=(4, 5, 6))
  mask[0, :2] = IGNORE
  batch = {"mask": jnp.asarray(mask), "valid": jnp.array([1.0, 1.0, 1.0, 0.0])}
  whole = task.finish(task.accumulate(None, task.eval_sums(logits, batch)))
  halves = None
  for sl in (slice(0, 2), slice(2, 4)):
    part = {k: v[sl] for k, v in batch.items()}
    halves = task.accumulate(halves, task.eval_sums(logits[sl], part))
  split = task.finish(halves)
  assert split.keys() == whole.keys()
  for k in whole:
    assert split[k] == pytest.approx(whole[k], rel=1e-6), k
  # and the loss is the mean CE over the labelled pixels of the valid rows
  ok = (mask != IGNORE) & (np.arange(4)[:, None, None] < 3)
  lp = np.asarray(logits) - np.log(np.exp(np.asarray(logits)).sum(-1, keepdims=True))
  ce = -np.take_along_axis(lp, np.where(ok, mask, 0)[..., None], -1)[..., 0]
  assert whole["loss"] == pytest.approx(ce[ok].mean(), rel=1e-5)
  assert task.score(whole) == whole["miou"]


def test_task_model_data_mismatches_are_one_clear_error():
  with pytest.raises(ValueError, match=r"config.task='segmentation' but model.name='resnet' "
                                       r"is a classification model"):
    tasks.check_config(_seg_config(model=model_configs.resnet(18)))
  config = _seg_config(task="classification")
  with pytest.raises(ValueError, match=r"model.name='fpn' is a segmentation model"):
    tasks.check_config(config)
  config = _seg_config(data=data_configs.digits())
  with pytest.raises(ValueError, match=r"config.data.task='classification'"):
    tasks.check_config(config)
  with pytest.raises(ValueError, match=r"config.task='detection'; choose one of"):
    tasks.check_config(_seg_config(task="detection"))
  config = _seg_config()
  config.loss.label_smoothing = 0.1
  with pytest.raises(ValueError, match="config.loss.label_smoothing"):
    tasks.check_config(config)
  tasks.check_config(_seg_config())  # the consistent one passes
