"""Knowledge-distillation teacher: any model we build, from a config file + a checkpoint."""

from __future__ import annotations

import importlib.util
import os

import jax
import ml_collections
import orbax.checkpoint as ocp

from vt_jax.train import checkpoint as ckpt_lib
from vt_jax.train import sharding as sharding_lib


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """'configs/x.py[:ARG]' -> get_config(ARG), like --config does."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config.distill.teacher_config: no file {path!r}")
  module_spec = importlib.util.spec_from_file_location("vt_jax_teacher_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def load_teacher(distill: ml_collections.ConfigDict, mesh):
  """Returns (teacher_model, variables replicated on `mesh`) from config.distill.

  Uses the checkpoint's EMA weights (equal to the raw weights when EMA was off), the
  weights a vt_jax run evaluates.
  """
  from vt_jax import models  # pylint: disable=g-import-not-at-top
  teacher_config = load_config_file(distill.teacher_config)
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
