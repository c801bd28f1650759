"""Metric writers: clu's TensorBoard writer plus DIR/metrics.jsonl; process 0 only.

The console gets the training loop's own progress and eval lines, not clu's LoggingWriter
(which would print every scalar a second time).
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import tensorflow as tf
from clu import metric_writers


class JsonlWriter(metric_writers.MetricWriter):
  """Appends one JSON object per event: {"step": int, "split": str, <metric>: float, ...}.

  clu has no JSON-lines writer; this is the file tools and tests read. Only
  scalars are recorded (images, histograms... go to TensorBoard).
  """

  def __init__(self, path: str, split: str):
    self._path = path
    self._split = split

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    record = {"step": int(step), "split": self._split}
    record.update({k: float(v) for k, v in scalars.items()})
    with tf.io.gfile.GFile(self._path, "a") as f:  # gfile: local paths and gs://
      f.write(json.dumps(record) + "\n")

  def write_summaries(self, step, values, metadata=None):
    pass

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def write_hparams(self, hparams):
    pass

  def flush(self):
    pass

  def close(self):
    pass


def make_writers(workdir: str) -> dict[str, metric_writers.MetricWriter]:
  """{'train': writer, 'eval': writer}; on processes other than 0 they drop everything.

  Each writes to DIR/tensorboard/<split> and DIR/metrics.jsonl.
  """
  if jax.process_index() != 0:
    return {split: metric_writers.MultiWriter([]) for split in ("train", "eval")}
  tf.io.gfile.makedirs(workdir)
  jsonl = os.path.join(workdir, "metrics.jsonl")
  return {
      split: metric_writers.MultiWriter([
          metric_writers.SummaryWriter(os.path.join(workdir, "tensorboard", split)),
          JsonlWriter(jsonl, split),
      ])
      for split in ("train", "eval")
  }
