r"""Train or evaluate a model: `python -m vt_jax.main --config=FILE[:ARG] --workdir=DIR`.

  python -m vt_jax.main --config=configs/quickstart.py --workdir=/tmp/qs
  python -m vt_jax.main --config=configs/vt_r18.py:v1 --config.batch_size=512 --workdir=DIR
  python -m vt_jax.main --workdir=/tmp/qs --mode=eval [--checkpoint_step=N]

Re-running the same command resumes from DIR's latest readable checkpoint. --mode=eval without
--config evaluates with the config the run saved (DIR/config.json).

Console: vt_jax's own progress lines and every library's warnings; `--verbosity=0` (or
higher) also shows the INFO lines of orbax, absl, tfds and jax, and TensorFlow's C++ log.

Exit status: 0 finished; 1 failed (a bug or a failed save/restore/NaN: the message says
which); 2 a config, data, flag or workdir problem (one message, nothing trained);
75 preempted (SIGTERM or a first Ctrl-C: a checkpoint was saved, resume with the same
command); 130 aborted by a second Ctrl-C (resume from the last saved checkpoint).

Multi-process (one process per host, or N local CPU processes):
  --coordinator_address=HOST:PORT --num_processes=N --process_id=I  explicit
  --distributed=auto   jax.distributed.initialize() with no arguments (SLURM, TPU pods,
                       and the JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID env)
  --cpu_collectives=gloo  collectives between CPU processes (launch/local_multiprocess.sh)
"""

from __future__ import annotations

import inspect
import os
import re
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from vt_jax import host_allocator
from vt_jax import runtime
from vt_jax.train import compile_cache

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file FILE[:ARG]; override any field with --config.FIELD=VALUE. "
    "Required for --mode=train; --mode=eval without it uses the run's saved config.json.",
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

_HEARTBEAT = flags.DEFINE_integer(
    "heartbeat_timeout_s", 15,
    "Multi-process: seconds without a heartbeat after which the coordination service "
    "declares a process dead and stops the others (jax's default is 100).")
_SHUTDOWN = flags.DEFINE_integer(
    "shutdown_timeout_s", 20,
    "Multi-process: seconds a finishing process waits at exit for the others (jax's "
    "default is 300).")

compile_cache.define_flags()
flags.mark_flags_as_required(["workdir"])

# Exit statuses (docs/training.md, "Exit status"): what a scheduler or script can act on.
EXIT_FAILED = 1       # unexpected error (traceback) or a failed save/restore/non-finite loss
EXIT_USER_ERROR = 2   # config, flags, data or workdir: fix and rerun (absl flag errors too)
EXIT_PREEMPTED = 75   # sysexits.h EX_TEMPFAIL: checkpoint saved, rerun the same command
EXIT_ABORTED = 130    # second Ctrl-C (128 + SIGINT): no save, resume from the last checkpoint


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
  from vt_jax import tasks  # pylint: disable=g-import-not-at-top
  tasks.check_config(config)  # config.task, model and data agree
  from vt_jax import models  # pylint: disable=g-import-not-at-top
  models.check_config(config.model)  # e.g. model.vt.kernel_init, before any work


def timeout_kwargs(initialize, heartbeat_s: int, shutdown_s: int) -> dict:
  """Heartbeat/shutdown timeouts under whatever names this jax's initialize() takes.

  jax 0.10.2 calls them heartbeat_timeout_seconds / shutdown_timeout_seconds; other
  versions have used other names, so the signature decides (an unknown name would be a
  TypeError, and a missing one must be said, not skipped silently).
  """
  params = inspect.signature(initialize).parameters
  kwargs = {}
  for names, value in ((("heartbeat_timeout_seconds", "heartbeat_timeout"), heartbeat_s),
                       (("shutdown_timeout_seconds", "shutdown_timeout"), shutdown_s)):
    name = next((n for n in names if n in params), None)
    if name is None:
      logging.warning("jax.distributed.initialize takes none of %s: its default applies "
                      "(a lost process may take longer to stop the others)", names)
    else:
      kwargs[name] = value
  return kwargs


def _init_distributed() -> None:
  import jax  # pylint: disable=g-import-not-at-top
  if _CPU_COLLECTIVES.value:
    jax.config.update("jax_cpu_collectives_implementation", _CPU_COLLECTIVES.value)
  if _COORDINATOR.value or _NUM_PROCESSES.value:
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value,
                               process_id=_PROCESS_ID.value,
                               **timeout_kwargs(jax.distributed.initialize, _HEARTBEAT.value,
                                              _SHUTDOWN.value))
  elif _DISTRIBUTED.value == "auto":
    jax.distributed.initialize(**timeout_kwargs(jax.distributed.initialize, _HEARTBEAT.value,
                                              _SHUTDOWN.value))
  if jax.process_count() > 1:
    logging.info("process %d of %d, %d local / %d global devices", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())


def _fail(message: str, status: int) -> None:
  sys.stderr.write(f"ERROR: {message}\n")
  sys.stderr.flush()
  sys.exit(status)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    config = _CONFIG.value
  except (OSError, SyntaxError) as e:  # config_flags loads the file lazily
    _fail(f"--config: {e}", EXIT_USER_ERROR)
  runtime.import_tensorflow()  # before the modules below import it: no start-up lines
  from vt_jax.train import preflight  # pylint: disable=g-import-not-at-top
  from vt_jax.train import run_config  # pylint: disable=g-import-not-at-top
  try:
    if config is None and _MODE.value == "train":
      raise preflight.UserError(
          "--config is required for --mode=train: give the run's config file, e.g. "
          "--config=configs/quickstart.py (only --mode=eval reads the workdir's saved "
          "config.json when --config is left out)")
    workdir = preflight.check_workdir(_WORKDIR.value, _MODE.value)
    if config is None:  # --mode=eval of a run: the config it was trained with
      config = run_config.load(workdir)
      logging.info("--mode=eval with the run's saved config %s",
                   os.path.join(workdir, run_config.CONFIG_FILE))
    validate_config(config)
    # Before JAX starts its threads: malloc that keeps XLA:CPU's large step buffers mapped.
    if host_allocator.apply(host_allocator.worth_it(config)) is None:
      logging.info("malloc keeps freed memory for XLA:CPU's large step buffers "
                   "(vt_jax/host_allocator.py; %s=0 turns this off)", host_allocator.ENV_SWITCH)
    _init_distributed()
    compile_cache.enable()
    runtime.setup_tensorflow()  # the input pipeline's TF: off the accelerators JAX uses
    preflight.check_config(config, workdir, _MODE.value)
  except ValueError as e:  # validate_config's and preflight's errors: all about the input
    _fail(str(e), EXIT_USER_ERROR)
  _run(config, workdir)


def _run(config, workdir: str) -> None:
  """Runs the mode; maps its outcomes to the exit statuses above."""
  from vt_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from vt_jax.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  from vt_jax.train import control  # pylint: disable=g-import-not-at-top
  from vt_jax.train import loop  # pylint: disable=g-import-not-at-top
  from vt_jax.train import run_config  # pylint: disable=g-import-not-at-top
  try:
    if _MODE.value == "train":
      loop.train_and_evaluate(config, workdir)
    else:
      loop.evaluate_checkpoint(config, workdir, step=_CHECKPOINT_STEP.value)
  except control.Preempted:
    sys.exit(EXIT_PREEMPTED)  # the loop has saved and printed its summary
  except (pipeline.BadExampleError, pipeline.CorruptRecordError,
          run_config.ConfigMismatchError) as e:
    _fail(str(e), EXIT_USER_ERROR)
  except (ckpt_lib.CheckpointError, loop.NonFiniteLossError) as e:
    _fail(str(e), EXIT_FAILED)
  except KeyboardInterrupt:
    _fail("aborted by a second Ctrl-C without saving; the same command resumes from the "
          f"last saved checkpoint in {workdir}", EXIT_ABORTED)


def parse_flags(argv):
  """absl parsing, with unknown --config.FIELD overrides reported by name (exit status 2).

  config_flags raises a bare AttributeError/KeyError for a field the config lacks; this
  turns it into a one-line error naming the flag (ill-typed values already get absl's
  "flag --config.x=...: invalid literal" message).
  """
  config_file = _config_file_arg(argv)
  if config_file is not None and not os.path.isfile(config_file):
    sys.stderr.write(f"ERROR: --config: no config file {config_file!r} (relative paths are "
                     f"from the current directory, {os.getcwd()})\n")
    sys.exit(EXIT_USER_ERROR)
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


def _config_file_arg(argv) -> str | None:
  """FILE of the --config=FILE[:ARG] (or --config FILE[:ARG]) argument, if any."""
  for i, arg in enumerate(argv[1:], start=1):
    if arg.startswith("--config="):
      value = arg[len("--config="):]
    elif arg == "--config" and i + 1 < len(argv):
      value = argv[i + 1]
    else:
      continue
    return value.split(":")[0] if value else value
  return None


def run() -> None:
  # Before JAX starts (nothing above imports it): XLA flag, malloc, TF's and the libraries'
  # console lines (vt_jax/runtime.py).
  runtime.setup(sys.argv)
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  sys.exit(run())
