"""Checks that `python -m vt_jax.main` runs before any training or evaluation work.

Everything that can be known wrong before the first step is found here, so that a wrong
config fails in seconds with one message instead of after an epoch (or at the first eval):
the workdir, the config against the workdir's saved config, the mesh and batch sizes
against the devices and processes, the augmentation name, the dataset name and splits, the
model's class count against the dataset's, and the distillation teacher's files.

Every failure raises UserError, whose message names the field or path and what to do.
"""

from __future__ import annotations

import os

import jax
import tensorflow as tf

from vt_jax.train import run_config


class UserError(ValueError):
  """A config, data or workdir problem the user fixes; main prints it and exits 2."""


def check_workdir(workdir: str | None, mode: str) -> str:
  """Returns the absolute workdir; train: writable (or creatable); eval: has checkpoints."""
  if not workdir or not workdir.strip():
    raise UserError("--workdir is empty: give the directory of the run (e.g. "
                    "--workdir=/tmp/vt_quickstart); it holds checkpoints, metrics and config")
  if "://" in workdir:  # gs://... : existence and permissions are the store's business
    return workdir
  workdir = os.path.abspath(os.path.expanduser(workdir))
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserError(f"--workdir={workdir} is a file, not a directory; choose a directory")
  if mode == "eval":
    checkpoints = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(checkpoints) or not any(
        d.isdigit() for d in os.listdir(checkpoints)):
      raise UserError(f"--mode=eval: no checkpoints in {checkpoints}; train first "
                      "(--mode=train with the same --config and --workdir)")
    return workdir
  existing = workdir
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.access(existing, os.W_OK | os.X_OK):
    what = "is" if existing == workdir else f"would be created in {existing}, which is"
    raise UserError(f"--workdir={workdir} {what} not writable; choose a writable directory")
  return workdir


def check_config(config, workdir: str, mode: str) -> None:
  """Config vs saved config, devices, processes, augmentation, dataset, model, teacher."""
  try:
    run_config.check_against_saved(config, workdir, log=False)  # the loop logs
  except run_config.ConfigMismatchError as e:
    raise UserError(str(e)) from None
  _check_batches(config)
  _check_data(config)
  _check_teacher(config)


def _check_batches(config) -> None:
  from vt_jax.train import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
  try:
    mesh = sharding_lib.make_mesh(config.mesh)
  except ValueError as e:
    raise UserError(str(e)) from None
  data_size = mesh.shape[sharding_lib.DATA]
  processes = jax.process_count()
  for key in ("batch_size", "eval_batch_size"):
    value = config[key]
    for divisor, what in ((processes, "processes"), (data_size, "devices on the mesh's "
                                                     "'data' axis")):
      if value % divisor:
        raise UserError(
            f"config.{key}={value} does not divide over the {divisor} {what} "
            f"({jax.device_count()} devices, {processes} processes): set it to a multiple "
            f"of {divisor}, e.g. --config.{key}={max(divisor, value // divisor * divisor)}")


def _check_data(config) -> None:
  from vt_jax.data import augment  # pylint: disable=g-import-not-at-top
  from vt_jax.data import source  # pylint: disable=g-import-not-at-top
  cfg = config.data
  kind = cfg.get("augment", "none")
  if kind not in augment.KINDS:
    raise UserError(f"config.data.augment={kind!r}: choose one of {list(augment.KINDS)}")
  try:
    builder = source.get_builder(cfg.name, cfg.data_dir)
  except ValueError as e:
    raise UserError(str(e)) from None
  for field in ("train_split", "eval_split"):
    try:
      source.split_num_examples(builder, cfg[field], cfg.data_dir)
    except (ValueError, KeyError) as e:
      raise UserError(f"config.data.{field}={cfg[field]!r}: {e}") from None
    except FileNotFoundError as e:
      raise UserError(str(e)) from None
  from vt_jax import data  # pylint: disable=g-import-not-at-top
  try:
    info = data.get_info(cfg)
  except (ValueError, FileNotFoundError) as e:
    raise UserError(str(e)) from None
  if config.model.num_classes != info.num_classes:
    raise UserError(f"config.model.num_classes={config.model.num_classes} but dataset "
                    f"{info.name!r} has {info.num_classes} classes: set "
                    f"--config.model.num_classes={info.num_classes}")


def _check_teacher(config) -> None:
  distill = config.distill
  if not distill.teacher_config:
    return
  path = distill.teacher_config.split(":")[0]
  if not tf.io.gfile.exists(path):
    raise UserError(f"config.distill.teacher_config={distill.teacher_config!r}: no file "
                    f"{path!r}")
  if not distill.teacher_checkpoint or not tf.io.gfile.exists(
      os.path.join(distill.teacher_checkpoint, "checkpoints")):
    raise UserError(f"config.distill.teacher_checkpoint={distill.teacher_checkpoint!r} is "
                    "not a training workdir (no checkpoints/ in it): give the --workdir of "
                    "the teacher's run")
