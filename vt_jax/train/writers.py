"""Metric writers: console + TensorBoard (clu) and DIR/metrics.jsonl; process 0 only."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
from absl import logging
from clu.metric_writers import interface, logging_writer, multi_writer


class JsonlWriter(interface.MetricWriter):
  """One JSON object per event: {"step": int, "split": str, <metric>: float, ...}."""

  def __init__(self, path: str, split: str):
    self._path = path
    self._split = split

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    record = {"step": int(step), "split": self._split}
    record.update({k: float(v) for k, v in scalars.items()})
    with open(self._path, "a") as f:
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

  def write_pointcloud(self, step, point_clouds, *, point_colors=None, configs=None):
    pass

  def write_hparams(self, hparams):
    pass

  def flush(self):
    pass

  def close(self):
    pass


def _tensorboard_writer(logdir: str):
  # clu's SummaryWriter needs the `tensorboard` package; without it we say so once and
  # keep console + metrics.jsonl (the run itself does not depend on TensorBoard).
  try:
    from clu.metric_writers.summary_writer import SummaryWriter  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    logging.warning("TensorBoard events are not written (%s); `pip install tensorboard` "
                    "to get them. Console and metrics.jsonl are unaffected.", e)
    return None
  return SummaryWriter(logdir)


class NullWriter(JsonlWriter):
  def __init__(self):
    super().__init__("", "")

  def write_scalars(self, step, scalars):
    pass


def make_writers(workdir: str) -> dict[str, interface.MetricWriter]:
  """{'train': writer, 'eval': writer}; non-zero processes get writers that drop everything."""
  if jax.process_index() != 0:
    return {"train": NullWriter(), "eval": NullWriter()}
  os.makedirs(workdir, exist_ok=True)
  result = {}
  for split in ("train", "eval"):
    ws = [logging_writer.LoggingWriter(collection=split),
          JsonlWriter(os.path.join(workdir, "metrics.jsonl"), split)]
    tb = _tensorboard_writer(os.path.join(workdir, "tensorboard", split))
    if tb is not None:
      ws.append(tb)
    result[split] = multi_writer.MultiWriter(ws)
  return result
