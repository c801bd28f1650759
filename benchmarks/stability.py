r"""The loss over a config's first updates on random batches: does its recipe stay finite?

  python benchmarks/stability.py --config=configs/vt_r50.py --resolution=112 --batch=16
  python benchmarks/stability.py --config=configs/vt_r50.py --resolution=112 --batch=16 \
      --fresh --config.optimizer.grad_clip_norm=1.0
  python benchmarks/stability.py --config=configs/resnet50.py --resolution=112 --batch=16

Runs --updates steps of the real train step (vt_jax.train.steps: the config's optimizer,
learning rate scaled to --batch, weight decay, BatchNorm in training mode) from the initial
state, on synthetic data:
  * one fixed random batch (the default): a model and recipe that train fit it, the loss
    falls toward 0;
  * with --fresh, a new random batch with random labels every step: nothing can be learned,
    the loss should stay near log(num_classes).
A loss that climbs by orders of magnitude or becomes nan in a handful of updates is a recipe
(or an initialisation) that diverges before any data could matter. Override any config field
as vt_jax.main does (`--config.optimizer.grad_clip_norm=1.0`). Prints the losses, and with
--json one object as the last line: {"config", "fresh", "batch", "resolution", "losses"};
a non-finite loss is printed as nan and the run goes on (exit status 0). Needs no TensorFlow.
"""

from __future__ import annotations

import json
import math
import os
import sys

from absl import app
from absl import flags
import jax
import ml_collections
import numpy as np
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_step as bench  # pylint: disable=g-import-not-at-top,wrong-import-position
from vt_jax import host_allocator  # pylint: disable=g-import-not-at-top,wrong-import-position

_CONFIG = config_flags.DEFINE_config_file("config", None, "a config file (FILE or FILE:ARG); "
                                          "override fields with --config.a.b=VALUE")
_UPDATES = flags.DEFINE_integer("updates", 10, "train steps to run")
_FRESH = flags.DEFINE_bool("fresh", False, "a new random batch (random labels) every step "
                           "instead of one fixed batch")
_JSON = bench._JSON  # pylint: disable=protected-access  (--json, --batch, --resolution: its flags)
flags.mark_flag_as_required("config")


def losses_over_updates(config, updates: int, fresh: bool) -> list[float]:
  """The loss of each of `updates` train steps from the initial state (see the module doc)."""
  prepared = bench.prepare_step(config, warm_up=False)
  state, data = prepared["start"], prepared["data"]
  rng = np.random.default_rng(1)
  losses = []
  for _ in range(updates):
    if fresh:
      host = {k: np.asarray(v) for k, v in data.items()}
      host["image"] = rng.normal(size=host["image"].shape).astype(host["image"].dtype)
      host["label"] = rng.integers(0, config.model.num_classes, host["label"].shape,
                                   dtype=np.int32)
      data = jax.device_put(host, prepared["data"]["image"].sharding)
    state, metrics = prepared["compiled"](state, data)
    losses.append(float(metrics["loss"]))
  return losses


def main(argv):
  del argv
  try:  # config_flags reports a file it could not load on the config's first use
    config = _CONFIG.value
    config.batch_size = bench._BATCH.value  # pylint: disable=protected-access
  except (OSError, SyntaxError) as e:
    sys.exit(f"ERROR: --config: {e}")
  size = bench._RESOLUTION.value  # pylint: disable=protected-access
  # Before JAX starts (reading the config does not start it): vt_jax's XLA flag, and the
  # malloc settings only where they pay, as vt_jax.main decides them (for the steps this
  # script runs, at --resolution and --batch). At the tests' 32 px they only slowed the
  # compile (23 -> 18 s for a 10-update quickstart run without them).
  sized = ml_collections.ConfigDict({"model": dict(config.model), "batch_size": config.batch_size,
                                     "data": {"image_size": size}})
  not_applied = bench.runtime.setup(sys.argv, malloc=host_allocator.worth_it(sized)).malloc
  losses = losses_over_updates(config, _UPDATES.value, _FRESH.value)
  what = "a new random batch each step" if _FRESH.value else "one fixed random batch"
  print(f"{flags.FLAGS['config'].config_filename} on {what} (batch {config.batch_size}, "
        f"{size} px, lr {config.schedule.peak_lr} per {config.schedule.lr_batch_ref}); "
        f"chance level log({config.model.num_classes}) = "
        f"{math.log(config.model.num_classes):.2f}; malloc "
        + (f"defaults ({not_applied})" if not_applied else "keeps freed memory"), flush=True)
  print("losses: " + " ".join(f"{x:.4g}" for x in losses), flush=True)
  if _JSON.value:
    print(json.dumps(dict(config=flags.FLAGS["config"].config_filename, fresh=_FRESH.value,
                          batch=config.batch_size, resolution=size,
                          losses=[x if math.isfinite(x) else None for x in losses])))


def parse_flags(argv):
  """absl parsing; config_flags raises a bare AttributeError/KeyError for an override of a
  field the config lacks, said here in one line (vt_jax.main's parse_flags does the same for
  its own --config, which this script cannot import without defining the flag twice)."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as e:
    overrides = [a for a in argv[1:] if a.startswith("--config.")]
    sys.exit(f"ERROR: the config has no field {str(e).strip(chr(34) + chr(39))!r} "
             f"(overrides given: {overrides})")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
