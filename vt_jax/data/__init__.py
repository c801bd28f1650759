"""Input pipelines: tfds builder -> tf.data -> global `jax.Array` batches.

    from vt_jax import data
    info = data.get_info(config.data)
    it = data.make_iterator(config.data, split='train', global_batch_size=2048,
                            mesh=mesh, seed=0, start_step=0)

Importing this package is cheap: tensorflow, tfds and jax are imported on the
first call of one of these functions (see `pipeline.py` for the design).
"""

from __future__ import annotations

import dataclasses
from typing import Any


class BadExampleError(ValueError):
  """An example that cannot be used: undecodable, or an invalid label or mask.

  Raised while reading (the input pipeline: the message names dataset, split and example
  index) and while building a dataset from its source files (names dataset, split and file).
  """


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What a model and a training loop need to know about a dataset."""
  name: str                       # tfds name, with builder config ('digit_scenes/64')
  task: str                       # 'classification' | 'segmentation'
  num_classes: int                # label classes (segmentation: mask classes)
  num_examples: dict[str, int]    # {'train': int, 'eval': int}, whole splits
  image_shape: tuple[int, int, int]  # (H, W, 3) as fed to the model
  ignore_label: int | None        # mask value that the loss/metric ignore


def get_info(data_config) -> DatasetInfo:
  from vt_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.get_info(data_config)


def make_iterator(data_config, split: str, global_batch_size: int, mesh: Any,
                  seed: int = 0, start_step: int = 0, data_axis: str = 'data'):
  from vt_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.make_iterator(data_config, split, global_batch_size, mesh,
                                seed=seed, start_step=start_step,
                                data_axis=data_axis)


def num_eval_steps(data_config, global_batch_size: int) -> int:
  from vt_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.num_eval_steps(data_config, global_batch_size)


def fingerprint(data_config, global_batch_size: int, seed: int) -> dict:
  """What fixes the train example stream (recorded in checkpoints; a resume must match)."""
  from vt_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.fingerprint(data_config, global_batch_size, seed)


__all__ = ['BadExampleError', 'DatasetInfo', 'fingerprint', 'get_info', 'make_iterator',
           'num_eval_steps']
