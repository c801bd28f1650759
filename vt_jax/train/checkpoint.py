"""Checkpoints with orbax's CheckpointManager: periodic async saves, last K + best K.

Each step holds two items: 'state' (the train state) and 'data', a small JSON record of
the input stream: the examples consumed (step x global batch) and the data fingerprint
(dataset, version, number of examples, seed, global batch, order version; see
vt_jax.data.pipeline.fingerprint). The train iterator resumes at that position of the
global order (vt_jax/data/order.py) on any number of processes, without reading anything
before its first batch; `check_data_record` refuses a resume whose stream would differ.
"""

from __future__ import annotations

import json
import os
import re
import time
import weakref
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import tensorflow as tf
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
  extra = {}
  if read_only:  # what orbax would otherwise reset, warning once per field
    extra = dict(save_interval_steps=0, cleanup_tmp_directories=False)
  options = ocp.CheckpointManagerOptions(
      preservation_policy=policies.AnyPreservationPolicy(keep),
      enable_async_checkpointing=bool(c.async_save),
      read_only=read_only, create=not read_only, **extra)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                               item_names=("state", "data"))


def _os_reason(e: BaseException) -> str | None:
  """The operating system's reason inside an orbax/tensorstore error, e.g. 'No space left on
  device', which their long first lines push past any sensible cut."""
  if isinstance(e, OSError) and e.strerror:
    return e.strerror
  found = re.search(r"\[OS error \d+: ([^\]]+)\]|(No space left on device|Disk quota exceeded|"
                    r"File too large|Read-only file system|Permission denied)", str(e))
  return (found.group(1) or found.group(2)) if found else None


def _save_failed(manager, step, e) -> CheckpointError:
  reason = _os_reason(e)
  return CheckpointError(
      f"could not save the checkpoint for step {step} in {manager.directory}"
      + (f": {reason}" if reason else "") + ". Free space there (or make it writable), then "
      "run the same command again: it resumes from the newest readable checkpoint. "
      f"({_first_line(e)})")


# The step of each manager's asynchronous save in flight: its failure surfaces only at the
# next save or wait, and the message must name the step that failed, not the next one.
_IN_FLIGHT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def save(manager: ocp.CheckpointManager, state, score: float | None = None,
         data: dict | None = None) -> None:
  """Saves `state` (and the input stream's record `data`) at its step; score ranks 'best'.

  Asynchronous when configured.

  Raises CheckpointError naming the step and directory. An async save's failure surfaces
  here at the next save (or in `wait_until_finished`), and names the step that failed.
  """
  step = int(jax.device_get(state.step))
  wait_until_finished(manager)  # what manager.save does first, with the failed step named
  metrics = {"score": float(score)} if score is not None else None
  items = dict(state=ocp.args.StandardSave(state))
  if data is not None:
    items["data"] = ocp.args.JsonSave(dict(data, examples_consumed=step * int(
        data["global_batch_size"])))
  try:
    manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)
  except Exception as e:  # noqa: BLE001 -- orbax/tensorstore/OS errors alike: one message
    raise _save_failed(manager, step, e) from e
  _IN_FLIGHT[manager] = step  # done already when saving synchronously: then nothing fails


def wait_until_finished(manager: ocp.CheckpointManager) -> None:
  """Waits for the pending async save; its failure becomes a CheckpointError naming its step."""
  step = _IN_FLIGHT.pop(manager, None)
  try:
    manager.wait_until_finished()
  except Exception as e:  # noqa: BLE001 -- see save()
    raise _save_failed(manager, manager.latest_step() if step is None else step, e) from e


def abstract_like(state_shapes, shardings):
  """ShapeDtypeStructs carrying the target shardings (what restore should produce)."""
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                      state_shapes, shardings)


def _first_line(e: BaseException, limit: int = 300) -> str:
  text = str(e).strip().splitlines()[0] if str(e).strip() else ""
  return f"{type(e).__name__}: {text[:limit]}"


def unreadable_dir(workdir_or_checkpoints: str) -> str:
  """Where unreadable step directories are moved: next to checkpoints/, never inside it
  (orbax would list a renamed step inside checkpoints/ as a step or refuse it)."""
  return os.path.join(os.path.dirname(workdir_or_checkpoints.rstrip("/")),
                      "checkpoints_unreadable")


def _move_aside(manager: ocp.CheckpointManager, steps: list[int]) -> list[str]:
  """Renames (never deletes) the step directories `steps` into checkpoints_unreadable/.

  Process 0 renames; every process then waits at a barrier and reloads its manager, so all
  agree on the remaining steps. Returns the new paths.
  """
  directory = str(manager.directory)
  target_root = unreadable_dir(directory)
  stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
  moved = []
  for step in steps:
    src = os.path.join(directory, str(step))
    dst = os.path.join(target_root, f"{step}-{stamp}")
    moved.append(dst)
    if jax.process_index() != 0:
      continue
    try:
      tf.io.gfile.makedirs(target_root)
      tf.io.gfile.rename(src, dst, overwrite=False)
    except (OSError, tf.errors.OpError) as e:
      raise CheckpointError(
          f"checkpoint at step {step} ({src}) is unreadable and could not be moved aside to "
          f"{dst} ({_first_line(e)}); move it out of {directory} yourself (or use a new "
          "--workdir) and run the same command again") from None
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices("vt_jax: unreadable checkpoints moved aside")
  manager.reload()
  return moved


def restore_latest(manager: ocp.CheckpointManager, abstract_state, step: int | None = None,
                   move_aside: bool = False):
  """Restores `step` (or the newest readable step); returns (state, step) or (None, None).

  An unreadable checkpoint (a run killed mid-write, a damaged file) is reported and the
  next older one is tried. With `move_aside` (training), the unreadable newer step
  directories are then renamed into DIR/checkpoints_unreadable/ so that the resumed run can
  save those steps again; nothing is ever deleted. If no checkpoint is readable this raises
  CheckpointError naming each step, its error and the ways out (nothing is moved then:
  a wholly unreadable directory is more likely a wrong config or directory than damage).
  The tracebacks a failed read's abandoned reads leave behind are the CLI's to filter
  (vt_jax/runtime.py); this function changes no hook or log filter of the process.
  """
  steps = sorted(manager.all_steps(), reverse=True)
  if step is not None:
    if step not in steps:
      raise CheckpointError(f"no checkpoint for step {step} in {manager.directory}; "
                            f"available steps: {sorted(steps)}")
    steps = [step]
  if not steps:
    return None, None
  errors = []  # (step, one-line reason)
  for s in steps:
    try:
      restored = manager.restore(
          s, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
    except Exception as e:  # noqa: BLE001 -- any failure to read means "try an older one"
      errors.append((s, _first_line(e)))
      continue
    if errors:
      bad = ", ".join(f"step {b} ({why})" for b, why in errors)
      if move_aside:
        moved = _move_aside(manager, [b for b, _ in errors])
        logging.warning("unreadable checkpoint(s) in %s: %s; moved aside to %s; resuming "
                        "from step %d", manager.directory, bad, ", ".join(moved), s)
      else:
        logging.warning("unreadable checkpoint(s) in %s: %s; using step %d instead",
                        manager.directory, bad, s)
    return restored["state"], s
  lines = "\n  ".join(f"step {b}: {why}" for b, why in errors)
  if step is not None:
    raise CheckpointError(
        f"the checkpoint at step {step} in {manager.directory} is unreadable:\n  {lines}\n"
        "Pick another step (--checkpoint_step) or leave it out to use the newest readable one.")
  raise CheckpointError(
      f"no readable checkpoint in {manager.directory} (a config that does not match these "
      f"checkpoints, or damaged files):\n  {lines}\n"
      "Run with the config that wrote them, or start over with a new --workdir (or move "
      f"{manager.directory} aside and run the same command again).")


# --- The input stream's record ----------------------------------------------------------

# fingerprint field -> what the user changes to change it (named in the refusal)
_DATA_FIELDS = {
    "dataset": "config.data.name",
    "split": "config.data.train_split",
    "version": "the dataset's version (the data prepared in config.data.data_dir)",
    "num_examples": "the train split's number of examples (the data in config.data.data_dir)",
    "seed": "config.seed",
    "global_batch_size": "config.batch_size",
    "order_version": "vt_jax's example order (a vt_jax upgrade that changed it)",
}


def read_data_record(manager: ocp.CheckpointManager, step: int) -> dict | None:
  """The 'data' item of checkpoint `step`; None for a checkpoint written without one."""
  try:
    item_dir = os.path.join(str(manager.directory), str(step), "data")
    if not tf.io.gfile.exists(item_dir):
      return None
    return dict(manager.restore(step, args=ocp.args.Composite(
        data=ocp.args.JsonRestore()))["data"])
  except Exception as e:  # noqa: BLE001 -- orbax/OS errors alike: one message
    raise CheckpointError(f"could not read the data record of the checkpoint at step {step} "
                          f"in {manager.directory} ({_first_line(e)})") from e


def check_data_record(manager: ocp.CheckpointManager, expected: dict, workdir: str) -> None:
  """Refuses (run_config.ConfigMismatchError) when the newest checkpoint's input stream
  differs from `expected` (a fingerprint), naming each differing field; reads only JSON."""
  from vt_jax.train import run_config  # pylint: disable=g-import-not-at-top
  steps = sorted(manager.all_steps(), reverse=True)
  record = next((r for r in (read_data_record(manager, s) for s in steps) if r), None)
  if record is None:
    if steps:
      logging.warning("the checkpoints in %s hold no data record (written by a vt_jax that "
                      "read each process's own slice of the data): the run continues in "
                      "the global example order, not the order it was trained with so far",
                      manager.directory)
    return
  changed = [k for k in expected if k in record and record[k] != expected[k]]
  if changed:
    lines = "\n".join(f"  {_DATA_FIELDS.get(k, k)}: saved {record[k]!r}, now {expected[k]!r}"
                      for k in changed)
    raise run_config.ConfigMismatchError(
        f"--workdir={workdir} holds a run trained on a different input stream:\n{lines}\n"
        "Resuming would not continue its example order. Give back the saved values, or "
        "start a new run in a new --workdir.")


# --- Loading a trained model for tools (analysis, distillation teacher) ------------------


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
  from vt_jax.train import run_config  # pylint: disable=g-import-not-at-top
  with tf.io.gfile.GFile(path) as f:
    return ml_collections.ConfigDict(run_config.fill_added_fields(json.load(f)))


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
