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
