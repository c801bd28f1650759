"""A workdir's saved config.json vs the config of the command that resumes it.

Re-running a command on an existing workdir resumes it, so the two configs must describe
the same run. `check_against_saved` compares them before anything is written: fields in
HARMLESS may change (the change is logged); any other difference stops the run naming the
fields, both values and the two ways out (a new --workdir, or the overrides that give the
saved values back).
"""

from __future__ import annotations

import json
import os

import ml_collections
import tensorflow as tf
from absl import logging
from flax import traverse_util

CONFIG_FILE = "config.json"

# Fields a resumed run may change. Each neither changes the shapes or the tree of the saved
# train state nor what an already-trained step computed:
#   num_epochs, num_train_steps   where the run stops (the lr schedule is in epochs and
#                                 does not depend on the run's length)
#   eval_every_epochs, eval_batch_size, log_every_steps
#                                 when and how it is measured (eval padding is masked)
#   checkpoint.*                  how often and how many checkpoints are kept
#   on_nonfinite_loss             what happens on a NaN (stop or skip that update)
#   data.data_dir                 where the same tfds dataset is read from
#   data.skip_bad_examples        whether a bad example stops the run or is skipped
#   init_from                     read only when a NEW run initialises; a resume ignores it
#   mesh.*                        how the same state is laid out over devices: orbax
#                                 restores a checkpoint into the new shardings
#   model.layers                  the same parameters and function in another layer form
#                                 (vt_jax.models.layers: CPU-tuned or plain flax)
# Everything else is refused: the other model.* and ema_decay / optimizer.* make the saved state's
# tree or shapes differ (the checkpoint cannot be read), and the rest (schedule, seed,
# batch_size, data.*, loss, distill...) would resume into a different recipe than the one
# the checkpoint was trained with, a run that is neither the old nor the new config.
HARMLESS = (
    "num_epochs", "num_train_steps", "eval_every_epochs", "eval_batch_size",
    "log_every_steps", "checkpoint.*", "on_nonfinite_loss", "data.data_dir",
    "data.skip_bad_examples", "mesh.*", "init_from", "model.layers",
)


class ConfigMismatchError(ValueError):
  """The config differs from the workdir's saved config in fields the run depends on."""


def _harmless(field: str) -> bool:
  return any(field == h or (h.endswith(".*") and field.startswith(h[:-1])) for h in HARMLESS)


def _as_json(config: ml_collections.ConfigDict) -> dict:
  # The same normalisation the saved file went through (tuples -> lists, ...).
  return json.loads(config.to_json_best_effort(sort_keys=True))


def _override(field: str, value) -> str:
  if isinstance(value, bool) or value is None:
    text = repr(value)
  elif isinstance(value, str):
    text = value if value and all(c.isalnum() or c in "._-/" for c in value) else repr(value)
  elif isinstance(value, list):
    text = repr(tuple(value))
  else:
    text = json.dumps(value)
  return f"--config.{field}={text}" if " " not in text else f"'--config.{field}={text}'"


# Fields added to the model after runs were already saved without them, with the value that
# gives those runs' function (a run saved before model.vt.recurrent_logits existed computed
# the literal Eq. 2, i.e. 'paper'; its VT maps started from flax's LeCun-normal kernels;
# VT-FPN had no top-down path and a random value map).
# Filled into an older config.json when it is read, so evaluating, analysing or resuming an
# older run rebuilds the model it trained, and a resume under today's defaults is refused
# naming the field.
_ADDED_FIELDS = (  # (the model.name they belong to, the model.vt field, the old value)
    ("vt_resnet", "recurrent_logits", "paper"),
    ("vt_resnet", "kernel_init", "flax"),
    ("vt_fpn", "top_down", False),
    ("vt_fpn", "zero_init_value", False),
)


def fill_added_fields(saved: dict) -> dict:
  """`saved` (a config.json as a dict) with the fields older runs lack, at their old value."""
  model = saved.get("model") or {}
  vt = model.get("vt")
  if isinstance(vt, dict):
    for name, field, old_value in _ADDED_FIELDS:
      if model.get("name") == name:
        vt.setdefault(field, old_value)
  return saved


def saved_config(workdir: str) -> dict | None:
  path = os.path.join(workdir, CONFIG_FILE)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    text = f.read()
  try:
    return fill_added_fields(json.loads(text))
  except json.JSONDecodeError as e:
    raise ConfigMismatchError(
        f"{path} is not valid JSON ({e}); it records the config of the run in {workdir}. "
        "Restore it, or use a new --workdir") from None


def load(workdir: str) -> ml_collections.ConfigDict:
  """The config the run in `workdir` saved (DIR/config.json), as a ConfigDict.

  What `python -m vt_jax.main --mode=eval --workdir=DIR` evaluates with when --config is not
  given. Raises ConfigMismatchError (a ValueError) when the file is missing or not JSON.
  """
  saved = saved_config(workdir)
  if saved is None:
    raise ConfigMismatchError(
        f"{os.path.join(workdir, CONFIG_FILE)} does not exist, so --mode=eval needs the run's "
        "config: pass --config=FILE (the one it was trained with)")
  return ml_collections.ConfigDict(saved)


def check_against_saved(config: ml_collections.ConfigDict, workdir: str,
                        log: bool = True) -> list[str]:
  """Compares `config` with DIR/config.json; raises ConfigMismatchError or returns notes.

  Returns one line per allowed difference (logged when `log`); [] for a new workdir.
  """
  saved = saved_config(workdir)
  if saved is None:
    return []
  old, new = (traverse_util.flatten_dict(c, sep=".") for c in (saved, _as_json(config)))
  refused, allowed = [], []
  for field in sorted(set(old) | set(new)):
    if field not in old:
      allowed.append(f"{field}={new[field]!r} (not in the saved config: written by an older "
                     "vt_jax)")
    elif field not in new:
      allowed.append(f"{field} (saved as {old[field]!r}; this vt_jax no longer has it)")
    elif old[field] != new[field]:
      (allowed if _harmless(field) else refused).append(field)
  path = os.path.join(workdir, CONFIG_FILE)
  if refused:
    lines = "\n".join(f"  {f}: saved {old[f]!r}, now {new[f]!r}" for f in refused)
    overrides = " ".join(_override(f, old[f]) for f in refused)
    raise ConfigMismatchError(
        f"--workdir={workdir} holds a run with a different config ({path}):\n{lines}\n"
        "Its checkpoints were trained with the saved values. Either start a new run with "
        "this config in a new --workdir, or resume this run by giving back the saved "
        f"values: {overrides}\n(fields that may change on resume: {', '.join(HARMLESS)})")
  notes = [f"{f}: {old[f]!r} -> {new[f]!r}" if f in old and f in new else f for f in allowed]
  for note in notes if log else ():
    logging.info("config change from the saved run allowed: %s", note)
  return notes


def write(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes DIR/config.json (call only after check_against_saved accepted `config`)."""
  tf.io.gfile.makedirs(workdir)
  with tf.io.gfile.GFile(os.path.join(workdir, CONFIG_FILE), "w") as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))
