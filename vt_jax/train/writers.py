"""Metric writers: console, DIR/metrics.jsonl and TensorBoard; process 0 only.

clu's `metric_writers` package imports `tensorboard` at import time, which is not a
dependency of vt_jax (see setup.cfg). So the console and JSONL writers are these few
lines, and clu's SummaryWriter is used for TensorBoard when `tensorboard` is installed.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import tensorflow as tf
from absl import logging


class ConsoleWriter:
  def __init__(self, split: str):
    self._split = split

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    logging.info("[%d] %s: %s", step, self._split,
                 ", ".join(f"{k}={float(v):.6g}" for k, v in scalars.items()))

  def flush(self):
    pass


class JsonlWriter:
  """One JSON object per event: {"step": int, "split": str, <metric>: float, ...}."""

  def __init__(self, path: str, split: str):
    self._path = path
    self._split = split

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    record = {"step": int(step), "split": self._split}
    record.update({k: float(v) for k, v in scalars.items()})
    with tf.io.gfile.GFile(self._path, "a") as f:  # gfile: local paths and gs://
      f.write(json.dumps(record) + "\n")

  def flush(self):
    pass


class MultiWriter:
  def __init__(self, writers):
    self._writers = list(writers)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    for w in self._writers:
      w.write_scalars(step, scalars)

  def flush(self):
    for w in self._writers:
      w.flush()


_warned = []


def _tensorboard_writer(logdir: str):
  try:
    from clu.metric_writers.summary_writer import SummaryWriter  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    if _warned:
      return None
    _warned.append(True)
    logging.warning("TensorBoard events are not written (%s); `pip install tensorboard` "
                    "to get them. Console and metrics.jsonl are unaffected.", e)
    return None
  return SummaryWriter(logdir)


def make_writers(workdir: str) -> dict[str, MultiWriter]:
  """{'train': writer, 'eval': writer}; on processes other than 0 they drop everything."""
  if jax.process_index() != 0:
    return {"train": MultiWriter([]), "eval": MultiWriter([])}
  tf.io.gfile.makedirs(workdir)
  result = {}
  for split in ("train", "eval"):
    ws = [ConsoleWriter(split), JsonlWriter(os.path.join(workdir, "metrics.jsonl"), split)]
    tb = _tensorboard_writer(os.path.join(workdir, "tensorboard", split))
    if tb is not None:
      ws.append(tb)
    result[split] = MultiWriter(ws)
  return result
