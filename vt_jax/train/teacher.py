"""Knowledge-distillation teacher: a trained vt_jax run, loaded by checkpoint.load_model."""

from __future__ import annotations

import jax
import ml_collections
from flax import traverse_util

from vt_jax.config_lib import files as config_files
from vt_jax.train import checkpoint as ckpt_lib
from vt_jax.train import sharding as sharding_lib


def _diff(a: dict, b: dict, prefix: str) -> list[str]:
  """Dotted paths whose values differ between two nested config dicts (tuples == lists)."""
  a, b = (traverse_util.flatten_dict(d, sep=".") for d in (a, b))
  norm = lambda v: list(v) if isinstance(v, tuple) else v
  out = []
  for key in sorted(set(a) | set(b)):
    va, vb = a.get(key, "<absent>"), b.get(key, "<absent>")
    if norm(va) != norm(vb):
      out.append(f"{prefix}.{key}: {va!r} in the teacher config, {vb!r} in the run")
  return out


def load_teacher(distill: ml_collections.ConfigDict, mesh):
  """Returns (teacher_model, variables replicated on `mesh`) from config.distill.

  The weights are the run's EMA ones when it kept an EMA (else its raw ones): the weights a
  vt_jax run evaluates. `teacher_checkpoint` is the teacher's workdir (newest checkpoint) or
  its `checkpoints/<step>` directory; the model `teacher_config` describes must be the one
  that run trained (recorded in its config.json), else this fails naming the fields.
  """
  if not distill.teacher_checkpoint:
    raise ValueError("config.distill.teacher_config is set but config.distill."
                     "teacher_checkpoint is empty; give the teacher's workdir")
  teacher_config = config_files.load(distill.teacher_config, "config.distill.teacher_config")
  try:
    loaded = ckpt_lib.load_model(distill.teacher_checkpoint, ema=True)
  except (FileNotFoundError, ckpt_lib.CheckpointError) as e:
    raise type(e)(f"config.distill.teacher_checkpoint={distill.teacher_checkpoint!r}: {e}") \
        from e
  # model.layers is the form of the same layers (same parameters, same function): any.
  model_fields = lambda c: {k: v for k, v in c.model.to_dict().items() if k != "layers"}
  mismatch = _diff(model_fields(teacher_config), model_fields(loaded.config), "model")
  if mismatch:
    raise ValueError(f"config.distill.teacher_config={distill.teacher_config!r} does not "
                     f"describe the model trained in {distill.teacher_checkpoint!r}:\n  " +
                     "\n  ".join(mismatch))
  variables = jax.device_put(loaded.variables, sharding_lib.replicated(mesh))
  return loaded.model, variables
