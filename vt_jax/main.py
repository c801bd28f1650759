r"""Train or evaluate a model: `python -m vt_jax.main --config=FILE[:ARG] --workdir=DIR`.

  python -m vt_jax.main --config=configs/quickstart.py --workdir=/tmp/qs
  python -m vt_jax.main --config=configs/vt_r18.py:v1 --config.batch_size=512 --workdir=DIR
  python -m vt_jax.main --config=configs/quickstart.py --workdir=/tmp/qs --mode=eval \
      [--checkpoint_step=N]

Re-running the same command resumes from DIR's latest readable checkpoint.

Multi-process (one process per host, or N local CPU processes):
  --coordinator_address=HOST:PORT --num_processes=N --process_id=I  explicit
  --distributed=auto   jax.distributed.initialize() with no arguments (SLURM, TPU pods,
                       and the JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID env)
  --cpu_collectives=gloo  collectives between CPU processes (launch/local_multiprocess.sh)
"""

from __future__ import annotations

import os
import re
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from vt_jax.train import compile_cache

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file FILE[:ARG]; override any field with --config.FIELD=VALUE.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, config.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"],
                          "train (resumes if DIR has a checkpoint) or eval (a checkpoint).")
_CHECKPOINT_STEP = flags.DEFINE_integer("checkpoint_step", None,
                                        "--mode=eval: the step to evaluate (default latest).")
_DISTRIBUTED = flags.DEFINE_enum("distributed", "off", ["off", "auto"],
                                 "auto: jax.distributed.initialize() from the environment.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "HOST:PORT of process 0 (multi-process runs).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_CPU_COLLECTIVES = flags.DEFINE_enum("cpu_collectives", None, ["gloo", "mpi"],
                                     "Collectives implementation between CPU processes.")

flags.mark_flags_as_required(["config", "workdir"])


def validate_config(config) -> None:
  """Fails before any work on fields the training system does not know or cannot use."""
  from vt_jax.config_lib import recipes  # pylint: disable=g-import-not-at-top
  unknown = sorted(set(config.keys()) - set(recipes.TOP_LEVEL_FIELDS))
  if unknown:
    raise ValueError(f"config: unknown top-level field(s) {unknown}; known: "
                     f"{sorted(recipes.TOP_LEVEL_FIELDS)}")
  template = recipes.default()
  for key in template.keys():
    if key not in config:
      raise ValueError(f"config: missing field {key!r}; build the recipe with "
                       "vt_jax.config_lib.recipes.default() or .advanced()")
    want, got = template[key], config[key]
    if hasattr(want, "keys"):
      extra = sorted(set(got.keys()) - set(want.keys()))
      if extra:
        raise ValueError(f"config.{key}: unknown field(s) {extra}; known: {sorted(want.keys())}")
  for key in ("model", "data"):
    if key not in config:
      raise ValueError(f"config: missing section {key!r}")
  if config.on_nonfinite_loss not in ("error", "skip"):
    raise ValueError(f"config.on_nonfinite_loss={config.on_nonfinite_loss!r}; "
                     "choose 'error' or 'skip'")
  if config.optimizer.name not in ("sgd", "rmsprop"):
    raise ValueError(f"config.optimizer.name={config.optimizer.name!r}; choose 'sgd' or "
                     "'rmsprop'")
  for key in ("batch_size", "eval_batch_size"):
    if config[key] <= 0:
      raise ValueError(f"config.{key}={config[key]} must be > 0")
  task = config.data.get("task", "classification")
  if task != "classification":
    raise ValueError(
        f"config.data.task={task!r}: model.name={config.model.name!r} is an image classifier "
        "and the training loop trains classifiers; segmentation models are not built yet "
        "(use the data tool to look at segmentation data: python -m vt_jax.data --config=...)")


def _init_distributed() -> None:
  import jax  # pylint: disable=g-import-not-at-top
  if _CPU_COLLECTIVES.value:
    jax.config.update("jax_cpu_collectives_implementation", _CPU_COLLECTIVES.value)
  if _COORDINATOR.value or _NUM_PROCESSES.value:
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value,
                               process_id=_PROCESS_ID.value)
  elif _DISTRIBUTED.value == "auto":
    jax.distributed.initialize()
  if jax.process_count() > 1:
    logging.info("process %d of %d, %d local / %d global devices", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  validate_config(config)
  _init_distributed()
  compile_cache.enable()
  # TF (the input pipeline) must never take the accelerator memory JAX uses.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")
  from vt_jax.train import loop  # pylint: disable=g-import-not-at-top
  workdir = _WORKDIR.value if "://" in _WORKDIR.value else os.path.abspath(_WORKDIR.value)
  if _MODE.value == "train":
    loop.train_and_evaluate(config, workdir)
  else:
    loop.evaluate_checkpoint(config, workdir, step=_CHECKPOINT_STEP.value)


def parse_flags(argv):
  """absl parsing, with unknown --config.FIELD overrides reported by name (exit status 2).

  config_flags raises a bare AttributeError/KeyError for a field the config lacks; this
  turns it into a one-line error naming the flag (ill-typed values already get absl's
  "flag --config.x=...: invalid literal" message).
  """
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.stderr.write(f"FATAL Flags parsing error: {e}\n")
    sys.exit(2)
  except (AttributeError, KeyError) as e:
    match = re.search(r"[A-Za-z_]\w*", str(e))
    key = match.group(0) if match else "?"
    hint = re.search(r'Did you mean "(\w+)"', str(e))
    culprits = [a for a in argv[1:] if a.startswith("--config.") and key in a]
    where = culprits[0] if culprits else "a --config.FIELD override"
    sys.stderr.write(f"FATAL unknown config field in {where}: the config has no field {key!r}"
                     + (f"; did you mean {hint.group(1)!r}?" if hint else "") + "\n")
    sys.exit(2)


def run() -> None:
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  sys.exit(run())
