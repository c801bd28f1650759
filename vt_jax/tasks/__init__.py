"""Tasks (`config.task`): what differs between classification and segmentation.

    task = tasks.get(config)          # config.task: 'classification' | 'segmentation'
    loss = task.loss(logits, batch)
    total = task.accumulate(total, task.eval_sums(logits, batch))
    metrics = task.finish(total); score = task.score(metrics)

vt_jax.tasks.base.Task documents the interface; a new task is one module plus a TASKS entry.
"""

from __future__ import annotations

import ml_collections

from vt_jax.tasks.base import Task
from vt_jax.tasks.classification import Classification
from vt_jax.tasks.segmentation import Segmentation

TASKS = {"classification": Classification, "segmentation": Segmentation}


def get(config: ml_collections.ConfigDict) -> Task:
  """The task object of `config` (checked with `check_config` first)."""
  check_config(config)
  return TASKS[config.task](config)


def check_config(config: ml_collections.ConfigDict) -> None:
  """config.task, config.data.task and config.model.name must agree: one clear error if not."""
  name = config.get("task", "classification")
  if name not in TASKS:
    raise ValueError(f"config.task={name!r}; choose one of {sorted(TASKS)}")
  task = TASKS[name]
  data_task = config.data.get("task", "classification")
  model = config.model.get("name")
  solves = [t for t, cls in TASKS.items() if model in cls.models]
  if model not in task.models:
    raise ValueError(
        f"config.task={name!r} but model.name={model!r} "
        + (f"is a {solves[0]} model" if solves else "is no known model")
        + f"; {name} models: {list(task.models)} (or set config.task to the model's task)")
  if data_task != name:
    raise ValueError(
        f"config.task={name!r} (model.name={model!r}) but config.data.task={data_task!r}: "
        f"dataset {config.data.name!r} is prepared for {data_task}. Use a {name} dataset, "
        f"or a {data_task} config (e.g. configs/quickstart_seg.py for segmentation)")
  task(config).check_config(config)
