"""The interface every task implements (vt_jax.tasks.classification, .segmentation).

A task owns everything that differs between what models are trained to do; the train/eval
steps (vt_jax.train.steps) and the loop (vt_jax.train.loop) only call these methods, so a
third task is one more module registered in vt_jax.tasks.TASKS.

Eval sums are mergeable: each eval batch gives a dict of arrays computed under jit over the
GLOBAL batch (so they already add up every device and host), `accumulate` adds batches,
`finish` turns the total into metrics. Sums never depend on batch order or size, which is
what makes 1 process and N processes agree.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections

Batch = Mapping[str, jax.Array]


class Task:
  """Base class: subclasses set the class fields and implement the methods."""
  name: str = ""
  train_metric: str = ""       # key of the train-batch metric in the progress line/metrics
  score_metric: str = ""       # eval metric whose value picks the best checkpoint
  models: tuple[str, ...] = ()  # config.model.name values that solve this task
  num_pictures: int = 0        # > 0: eval writes DIR/pictures/eval_<step>.png of that many

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config

  def check_config(self, config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the field when `config` cannot train this task."""

  def loss(self, logits: jax.Array, batch: Batch,
           teacher_logits: jax.Array | None = None) -> jax.Array:
    """Scalar training loss of a global batch (rows with valid=0 count nowhere)."""
    raise NotImplementedError

  def train_batch_metric(self, logits: jax.Array, batch: Batch) -> jax.Array:
    """Scalar `train_metric` of the train batch (before the update)."""
    raise NotImplementedError

  def eval_sums(self, logits: jax.Array, batch: Batch, ema: bool = False) -> dict:
    """Mergeable sums of one eval batch; ema=True: the EMA model's (keys prefixed 'ema_')."""
    raise NotImplementedError

  def accumulate(self, total: dict | None, sums: dict) -> dict:
    """total + sums (total None for the first batch). Default: on-device float addition."""
    return sums if total is None else jax.tree.map(jnp.add, total, sums)

  def finish(self, total: dict) -> dict[str, float]:
    """Sums over the whole eval split -> metrics (host floats)."""
    raise NotImplementedError

  def score(self, metrics: Mapping[str, float]) -> float:
    """Higher is better; ranks checkpoints for config.checkpoint.keep_best."""
    ema = "ema_" + self.score_metric
    return metrics[ema] if ema in metrics else metrics[self.score_metric]

  def prediction(self, logits: jax.Array) -> jax.Array:
    """What pictures show (e.g. the arg-max class per pixel)."""
    return jnp.argmax(logits, axis=-1)

  def write_pictures(self, path: str, batch: Mapping[str, Any], predictions: Any) -> None:
    """Writes a picture of `num_pictures` eval examples (host numpy arrays) to `path`."""
    raise NotImplementedError(f"task {self.name!r} writes no pictures")
