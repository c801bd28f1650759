"""`config.init_from`: start a NEW run's backbone from ImageNet weights (never on resume).

    config.init_from = "resnet50.npz"      # made by `python -m vt_jax.convert`
    config.init_from = "/runs/vt_r50"      # a vt_jax classification workdir (latest step, EMA)

Only the backbone (the `backbone/...` subtree of params and batch_stats) is taken: the source's
head and VT modules are dropped, the target's FPN, VT-FPN and heads start random. Every
backbone tensor of the source must exist in the model with the same shape (else an error
naming it); backbone tensors of the model the source lacks (e.g. stage 5 when the source is
a VT-ResNet, whose stage 5 is VT modules) stay random and are listed in the log.
"""

from __future__ import annotations

import os
from collections import Counter

import flax
import jax
import numpy as np
from absl import logging

from vt_jax import convert

PREFIX = "backbone"  # the subtree every vt_jax model names its ResNet stages under


def _read_workdir(workdir: str) -> dict[tuple[str, ...], np.ndarray]:
  """Flat {('params'|'batch_stats', 'backbone', ...): array} from a workdir's newest step.

  Read through the one entry every tool uses to load a trained run
  (checkpoint.load_model): its EMA weights when it kept an EMA, what the run evaluated.
  """
  from vt_jax.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  if "://" not in workdir and not os.path.isdir(ckpt_lib.checkpoint_dir(workdir)):
    raise FileNotFoundError(f"config.init_from={workdir!r}: neither a .npz file nor a vt_jax "
                            f"workdir (no {ckpt_lib.checkpoint_dir(workdir)} directory)")
  loaded = ckpt_lib.load_model(workdir, ema=True)
  logging.info("init_from: read the %s weights of step %d of %s", loaded.weights, loaded.step,
               workdir)
  flat = flax.traverse_util.flatten_dict(loaded.variables)
  return {k: np.asarray(v) for k, v in flat.items()}


def read(source: str) -> dict[tuple[str, ...], np.ndarray]:
  """All tensors of `source` (.npz of vt_jax.convert, or a workdir) as a flat dict."""
  if source.endswith(".npz"):
    if not os.path.isfile(source):
      raise FileNotFoundError(f"config.init_from={source!r}: no such file")
    return convert.load_npz(source)
  return _read_workdir(source)


def backbone_variables(variables, source_flat: dict, source: str):
  """Returns (variables with the source's backbone tensors, loaded paths, random paths).

  variables: {'params': ..., 'batch_stats': ...} of the model (host or device arrays).
  The tensors are placed by vt_jax.convert.apply_pretrained, the one loader of pretrained
  tensors, which checks every name and shape.
  """
  taken = {k: v for k, v in source_flat.items() if len(k) > 1 and k[1] == PREFIX}
  if not taken:
    raise ValueError(f"config.init_from={source!r} holds no backbone tensors (paths "
                     f"'params/{PREFIX}/...'); it has e.g. "
                     f"{['/'.join(k) for k in list(source_flat)[:3]]}")
  loaded = convert.apply_pretrained(variables, taken, f"config.init_from={source!r}")
  target = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables))
  random = sorted(p for p in target if len(p) > 1 and p[1] == PREFIX and p not in taken)
  return loaded, sorted(taken), random


def _summary(paths) -> str:
  """Counts per stage: 'stage5: 27' -- the names would be hundreds of lines."""
  counts = Counter(p[2] if len(p) > 2 else "/".join(p) for p in paths)
  return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))


def apply_init_from(state, source: str, shardings):
  """The new run's TrainState with its backbone (and EMA copy) from `source`.

  Momentum / RMS statistics stay at their initial zeros; the state keeps `shardings`.
  """
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  loaded, taken, random = backbone_variables(jax.device_get(variables), read(source), source)
  logging.info("init_from %s: loaded %d backbone tensors (%s); %d backbone tensors stay "
               "random%s; everything outside the backbone starts random", source,
               len(taken), _summary(taken), len(random),
               f" ({_summary(random)}: {', '.join('/'.join(p) for p in random[:8])}"
               f"{', ...' if len(random) > 8 else ''})" if random else "")
  state = state.replace(params=loaded["params"], batch_stats=loaded.get("batch_stats", {}),
                        ema_params=loaded["params"],
                        ema_batch_stats=loaded.get("batch_stats", {}))
  # Through jit, not device_put: on CPU device_put may wrap the host (numpy) buffers without a
  # copy, and the train step DONATES the state, so XLA would reuse memory numpy owns (a
  # segfault in the first step). jit outputs are always buffers XLA owns.
  return jax.jit(lambda s: s, out_shardings=shardings)(state)
