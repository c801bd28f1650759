"""Checkpoints with orbax's CheckpointManager: periodic async saves, last K + best K.

The data position is the step: the train iterator restarts at `start_step=state.step`,
so state.step alone resumes the input pipeline exactly.
"""

from __future__ import annotations

import os

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint import checkpoint_managers as policies


class CheckpointError(RuntimeError):
  pass


def checkpoint_dir(workdir: str) -> str:
  if "://" in workdir:  # gs://... : orbax writes there directly
    return workdir.rstrip("/") + "/checkpoints"
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def make_manager(workdir: str, config: ml_collections.ConfigDict | None = None,
                 read_only: bool = False) -> ocp.CheckpointManager:
  """Keeps the last `checkpoint.keep` steps plus the best `keep_best` by eval score."""
  c = config.checkpoint if config is not None else ml_collections.ConfigDict(
      dict(keep=1, keep_best=0, async_save=False))
  keep = [policies.LatestN(n=max(1, int(c.keep)))]
  if c.keep_best > 0:
    keep.append(policies.BestN(get_metric_fn=lambda m: m["score"], reverse=False,
                               n=int(c.keep_best), keep_checkpoints_without_metrics=False))
  options = ocp.CheckpointManagerOptions(
      preservation_policy=policies.AnyPreservationPolicy(keep),
      enable_async_checkpointing=bool(c.async_save),
      read_only=read_only, create=not read_only)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                               item_names=("state",))


def save(manager: ocp.CheckpointManager, state, score: float | None = None) -> None:
  """Saves `state` at its step (asynchronously when configured); score ranks 'best'."""
  step = int(jax.device_get(state.step))
  metrics = {"score": float(score)} if score is not None else None
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)),
               metrics=metrics, force=True)


def abstract_like(state_shapes, shardings):
  """ShapeDtypeStructs carrying the target shardings (what restore should produce)."""
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                      state_shapes, shardings)


def restore_latest(manager: ocp.CheckpointManager, abstract_state, step: int | None = None):
  """Restores `step` (or the newest readable step); returns (state, step) or (None, None).

  An unreadable checkpoint (a run killed mid-write, a corrupt file) is reported and the
  next older one is tried; if none is readable this raises naming the directory.
  """
  steps = sorted(manager.all_steps(), reverse=True)
  if step is not None:
    if step not in steps:
      raise CheckpointError(f"no checkpoint for step {step} in {manager.directory}; "
                            f"available steps: {sorted(steps)}")
    steps = [step]
  if not steps:
    return None, None
  errors = []
  for i, s in enumerate(steps):
    try:
      restored = manager.restore(
          s, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
      if errors:
        logging.warning("restored the older checkpoint at step %d instead", s)
      return restored["state"], s
    except Exception as e:  # noqa: BLE001 -- any failure to read means "try an older one"
      errors.append(f"step {s}: {type(e).__name__}: {str(e)[:300]}")
      older = steps[i + 1] if i + 1 < len(steps) else None
      logging.warning("checkpoint at step %d in %s is unreadable (%s: %s); %s", s,
                      manager.directory, type(e).__name__, str(e)[:300],
                      f"falling back to step {older}" if older is not None else
                      "no older checkpoint left")
  raise CheckpointError(
      f"no readable checkpoint in {manager.directory}:\n  " + "\n  ".join(errors) +
      "\nDelete the broken step directories or use a fresh --workdir.")


# --- Loading a trained model for tools (analysis, distillation teacher) ------------------
# This section's imports stay here so that it merges as one block appended to the file.
import json  # pylint: disable=g-import-not-at-top,wrong-import-position,wrong-import-order
from typing import Any, NamedTuple  # pylint: disable=g-import-not-at-top,wrong-import-position

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position


class LoadedModel(NamedTuple):
  config: ml_collections.ConfigDict  # the run's config.json
  model: Any                         # flax module from config.model
  variables: dict                    # {'params': ..., 'batch_stats': ...} as NumPy arrays
  step: int                          # the checkpoint's step
  weights: str                       # 'ema' or 'raw': which weights `variables` holds


def _split_step_dir(path: str) -> tuple[str, int | None]:
  """'DIR/checkpoints/<step>' -> ('DIR', step); anything else -> (path, None)."""
  path = path.rstrip("/")
  base, parent = os.path.basename(path), os.path.basename(os.path.dirname(path))
  if base.isdigit() and parent == "checkpoints":
    return os.path.dirname(os.path.dirname(path)), int(base)
  return path, None


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The ConfigDict a run recorded in DIR/config.json (written when training starts)."""
  path = os.path.join(workdir, "config.json")
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"{path} does not exist: {workdir!r} is not a vt_jax workdir "
                            "(python -m vt_jax.main --workdir=DIR writes it when training starts)")
  with tf.io.gfile.GFile(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def load_model(workdir: str, step: int | None = None, ema: bool = True) -> LoadedModel:
  """Config, model and variables of a trained run: `workdir` or `workdir/checkpoints/<step>`.

  Restores only the weights (not the optimizer state) of the newest checkpoint, or of
  `step`, as NumPy arrays, whatever devices the run was saved from. `ema=True` gives the EMA
  weights when the run kept an EMA (config.ema_decay > 0; what the run evaluates as
  ema_top1), else the raw weights; `.weights` says which, and it is logged.
  """
  from vt_jax import models  # pylint: disable=g-import-not-at-top
  workdir, dir_step = _split_step_dir(workdir)
  if step is None:
    step = dir_step
  elif dir_step is not None and dir_step != step:
    raise ValueError(f"{workdir}/checkpoints/{dir_step} names step {dir_step} but step={step}")
  if "://" not in workdir and not os.path.isdir(workdir):
    raise FileNotFoundError(f"workdir {workdir!r} does not exist")
  config = read_config(workdir)
  if "://" not in workdir and not os.path.isdir(checkpoint_dir(workdir)):
    raise CheckpointError(f"{checkpoint_dir(workdir)} does not exist: the run in {workdir!r} "
                          "saved no checkpoint yet (train it, or wait for its first save)")
  # A reader of its own: the 'state' item is read as a plain PyTree (PyTreeCheckpointHandler
  # reads what StandardSave wrote), which is what gives its metadata and a partial restore.
  manager = ocp.CheckpointManager(
      checkpoint_dir(workdir), options=ocp.CheckpointManagerOptions(read_only=True, create=False),
      item_handlers={"state": ocp.PyTreeCheckpointHandler()})
  try:
    steps = sorted(manager.all_steps())
    if not steps:
      raise CheckpointError(f"no checkpoint in {checkpoint_dir(workdir)}; train the run first")
    if step is None:
      step = steps[-1]
    elif step not in steps:
      raise CheckpointError(f"no checkpoint for step {step} in {checkpoint_dir(workdir)}; "
                            f"available steps: {steps}")
    use_ema = bool(ema) and float(config.get("ema_decay", 0.0)) > 0
    keys = ("ema_params", "ema_batch_stats") if use_ema else ("params", "batch_stats")
    tree = manager.item_metadata(step)["state"]
    tree = getattr(tree, "tree", tree)
    missing = [k for k in keys if k not in tree]
    if missing:
      raise CheckpointError(f"checkpoint {checkpoint_dir(workdir)}/{step} has no {missing}; "
                            f"it holds {sorted(tree)}: not a vt_jax training state")
    # ShapeDtypeStructs without a sharding restore as NumPy arrays: independent of the
    # device layout the run was saved from. partial_restore reads only these subtrees.
    target = {k: jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), tree[k])
              for k in keys}
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(item=target, restore_args=as_numpy,
                                     partial_restore=True)))["state"]
  finally:
    manager.close()
  variables = {"params": restored[keys[0]], "batch_stats": restored[keys[1]] or {}}
  weights = "ema" if use_ema else "raw"
  logging.info("loaded the %s weights of step %d from %s%s", weights, step, workdir,
               " (the run kept no EMA)" if ema and not use_ema else "")
  model = models.create_model(config.model)
  return LoadedModel(config, model, variables, int(step), weights)


def load_variables(workdir: str, step: int | None = None, ema: bool = True):
  """(config, model, variables) of a trained run; see load_model (which also gives the step
  and whether the weights are the EMA ones)."""
  loaded = load_model(workdir, step, ema)
  return loaded.config, loaded.model, loaded.variables
