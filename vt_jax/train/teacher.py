"""Knowledge-distillation teacher: any model we build, from a config file + a checkpoint."""

from __future__ import annotations

import os

import jax
import ml_collections
import orbax.checkpoint as ocp

from vt_jax.config_lib import files as config_files
from vt_jax.train import checkpoint as ckpt_lib
from vt_jax.train import sharding as sharding_lib


def load_teacher(distill: ml_collections.ConfigDict, mesh):
  """Returns (teacher_model, variables replicated on `mesh`) from config.distill.

  Uses the checkpoint's EMA weights (equal to the raw weights when EMA was off), the
  weights a vt_jax run evaluates.
  """
  from vt_jax import models  # pylint: disable=g-import-not-at-top
  teacher_config = config_files.load(distill.teacher_config, "config.distill.teacher_config")
  model = models.create_model(teacher_config.model)
  if not distill.teacher_checkpoint:
    raise ValueError("config.distill.teacher_config is set but config.distill."
                     "teacher_checkpoint is empty; give the teacher's workdir")
  workdir = distill.teacher_checkpoint
  if "://" not in workdir and not os.path.isdir(ckpt_lib.checkpoint_dir(workdir)):
    raise FileNotFoundError(f"config.distill.teacher_checkpoint={workdir!r}: no "
                            f"{ckpt_lib.checkpoint_dir(workdir)} directory")
  manager = ckpt_lib.make_manager(workdir, read_only=True)
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f"config.distill.teacher_checkpoint={workdir!r} holds no checkpoint")
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  state = restored["state"]
  get = (lambda k: state[k]) if isinstance(state, dict) else (lambda k: getattr(state, k))
  variables = {"params": get("ema_params"), "batch_stats": get("ema_batch_stats")}
  variables = jax.device_put(variables, sharding_lib.replicated(mesh))
  manager.close()
  return model, variables
