"""Synthetic stand-ins for vt_jax.data (the contract's API) and small model configs.

Loop tests exercise the training system, not the input pipeline: batches here follow the
data contract (global arrays sharded on 'data', 'valid' padding, start_step resume) and are
a pure function of (seed, step), so resume equality is exact.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from vt_jax.config_lib import models as model_configs
from vt_jax.config_lib import recipes

SIZE = 16
NUM_CLASSES = 10


def enable_compile_cache(path: str) -> None:
  """Tests compile the same small model many times: reuse XLA executables across runs."""
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def tiny_model():
  return model_configs.vt_resnet(
      18, num_classes=NUM_CLASSES, width=8, small_image_stem=True,
      vt=dict(tokens=4, token_channels=16, ffn_hidden=16, heads=2, projector_heads=2,
              tokenizer_heads=2))


def tiny_config(**overrides) -> ml_collections.ConfigDict:
  config = recipes.default(batch_size=16, eval_batch_size=16, num_train_steps=6,
                           log_every_steps=2, eval_every_epochs=100.0)
  config.checkpoint.update(every_steps=2, async_save=False)
  config.schedule.update(peak_lr=1.6, decay_every_epochs=1e6)  # lr 0.1 at batch 16
  config.optimizer.grad_clip_norm = 1.0
  config.model = tiny_model()
  config.data = ml_collections.ConfigDict(dict(name="fake", num_train=64, num_eval=40,
                                               nan_at_step=-1, raise_at_step=-1,
                                               sigterm_at_step=-1))
  config.update(overrides)
  return config


@dataclasses.dataclass(frozen=True)
class Info:
  name: str
  task: str
  num_classes: int
  num_examples: dict
  image_shape: tuple
  ignore_label: object = None


def _examples(seed: int, index: np.ndarray):
  """Class-dependent blobs + noise: learnable, deterministic per (seed, index)."""
  labels = (index * 7 + seed) % NUM_CLASSES
  rng = np.random.default_rng([seed] + [int(i) for i in index[:1]])
  images = rng.normal(0, 0.5, (len(index), SIZE, SIZE, 3)).astype(np.float32)
  for i, c in enumerate(labels):
    images[i, (c % 4) * 4:(c % 4) * 4 + 4, (c // 4) * 4:(c // 4) * 4 + 4, :] += 2.0
    images[i, :, :, c % 3] += 0.5
  return images, labels.astype(np.int32)


class FakeData:
  """Module-like: get_info / make_iterator with the contract's signatures."""

  @staticmethod
  def get_info(data_config):
    return Info("fake", "classification", NUM_CLASSES,
                {"train": data_config.num_train, "eval": data_config.num_eval},
                (SIZE, SIZE, 3))

  @staticmethod
  def make_iterator(data_config, split, global_batch_size, mesh, seed=0, start_step=0,
                    data_axis="data"):
    sharding = NamedSharding(mesh, P(data_axis))

    def put(images, labels, valid):
      return {"image": jax.device_put(images, sharding),
              "label": jax.device_put(labels, sharding),
              "valid": jax.device_put(valid, sharding)}

    if split == "eval":
      def eval_batches():
        n = data_config.num_eval
        for start in range(0, n, global_batch_size):
          index = np.arange(start, start + global_batch_size)
          images, labels = _examples(10_000 + seed, index)
          yield put(images, labels, (index < n).astype(np.float32))
      return eval_batches()

    def train_batches():
      step = start_step
      while True:
        if step == data_config.raise_at_step:
          raise KeyboardInterrupt(f"simulated kill before step {step}")
        if step == data_config.sigterm_at_step:
          os.kill(os.getpid(), 15)
        index = step * global_batch_size + np.arange(global_batch_size)
        images, labels = _examples(seed, index)
        if step == data_config.nan_at_step:
          images[0, 0, 0, 0] = np.nan
        yield put(images, labels, np.ones(global_batch_size, np.float32))
        step += 1
    return train_batches()
