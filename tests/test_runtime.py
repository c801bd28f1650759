"""Importing vt_jax changes nothing in the process; vt_jax.runtime's set-up is the programs'.

The import test runs a fresh interpreter, as a notebook would: whatever vt_jax's dependencies
change when imported is theirs, so they are imported first, and the state is compared before
and after importing vt_jax's packages, loading a config file, and saving and loading a tiny
checkpoint through the library.
"""

import logging
import os
import subprocess
import sys

import pytest

from vt_jax import runtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_NOTEBOOK = r"""
import logging, os, sys, warnings
import absl.app, absl.flags, absl.logging
# vt_jax's dependencies first: what they change at import is not vt_jax's doing.
import chex, clu.metric_writers, flax, jax, ml_collections, numpy as np, optax
import orbax.checkpoint as ocp, tensorflow, tensorflow_datasets

def state():
  return dict(
      env=dict(os.environ), unraisablehook=sys.unraisablehook,
      logger_filters={name: list(logging.getLogger(name).filters)
                      for name in ("asyncio", "absl", "")},
      absl_handler_filters=list(absl.logging.get_absl_handler().filters),
      absl_flags=sorted(absl.flags.FLAGS), warning_filters=list(warnings.filters))

def compare(before, after, what):
  changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
  if "env" in changed:
    old, new = changed["env"]
    changed["env"] = {k: (old.get(k), new.get(k)) for k in set(old) | set(new)
                      if old.get(k) != new.get(k)}
  assert not changed, (what, changed)
  print("UNCHANGED", what)

before = state()
import vt_jax, vt_jax.models, vt_jax.tasks, vt_jax.train.loop
from vt_jax.config_lib import files
from vt_jax.train import checkpoint, compile_cache, run_config
files.load("configs/vt_r18.py")
files.load("configs/quickstart.py")
compare(before, state(), "import")

workdir = sys.argv[1]
config = files.load("configs/quickstart.py:width=2")
model = vt_jax.models.create_model(config.model)
variables = model.init(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32), train=False)
run_config.write(config, workdir)
manager = checkpoint.make_manager(workdir)
manager.save(3, args=ocp.args.Composite(state=ocp.args.StandardSave(dict(
    params=variables["params"], batch_stats=variables["batch_stats"]))))
manager.wait_until_finished()
manager.close()
_, _, loaded = checkpoint.load_variables(workdir)
chex.assert_trees_all_close(loaded["params"], variables["params"])
compare(before, state(), "load_variables")
"""


def test_importing_vt_jax_a_config_and_loading_a_checkpoint_change_nothing(tmp_path):
  env = {k: v for k, v in os.environ.items()
         if k not in ("XLA_FLAGS", "TF_CPP_MIN_LOG_LEVEL") and not k.startswith("VT_JAX_")}
  env.update(PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", VT_JAX_MALLOC_DEFAULTS="1")
  proc = subprocess.run([sys.executable, "-c", _NOTEBOOK, str(tmp_path / "run")], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-5000:]
  assert proc.stdout.split() == ["UNCHANGED", "import", "UNCHANGED", "load_variables"]


@pytest.mark.parametrize("argv,verbose", [
    (["prog", "--workdir=x"], False),
    (["prog", "--verbosity=0"], True),
    (["prog", "--verbosity", "1"], True),
    (["prog", "-v=1"], True),
    (["prog", "--v=-1"], True),
    (["prog", "--verbose_name=1", "--vx"], False),
    (["prog", "--", "--verbosity=1"], False),
])
def test_verbosity_given(argv, verbose):
  assert runtime.verbosity_given(argv) is verbose


def _record(name, level, pathname, msg, exc=None):
  record = logging.getLogger(name).makeRecord(
      name, level, pathname, 1, msg, (), (type(exc), exc, None) if exc else None)
  return record


def test_console_shows_own_info_and_everyones_warnings():
  keep = runtime.OnlyOwnInfo()
  own = os.path.join(ROOT, "vt_jax", "train", "loop.py")
  orbax = "/venv/site-packages/orbax/checkpoint/checkpoint_manager.py"
  tfds = "/venv/site-packages/tensorflow_datasets/core/features/feature.py"
  assert keep.filter(_record("absl", logging.INFO, own, "step 4/12"))
  assert not keep.filter(_record("absl", logging.INFO, orbax, "[process=0] Saving"))
  assert keep.filter(_record("absl", logging.WARNING, orbax, "something is wrong"))
  deprecation = ("`FeatureConnector.dtype` is deprecated. Please change your code to use "
                 "NumPy with the field `FeatureConnector.np_dtype`")
  assert not keep.filter(_record("absl", logging.WARNING, tfds, deprecation))
  assert keep.filter(_record("absl", logging.WARNING, own, deprecation))  # not tfds's: shown
  assert not keep.filter(_record("absl", logging.WARNING, orbax,
                                 "Given directory is read only=/w/checkpoints"))


def test_abandoned_io_leftovers_are_dropped_from_the_asyncio_log():
  drop = runtime.DropAbandonedIoFutures()

  def passes(msg, exc):
    return drop.filter(_record("asyncio", logging.ERROR, __file__, msg, exc))

  read_error = ValueError('OUT_OF_RANGE: Error opening "cast" driver: Error reading '
                          '"params.kernel/.zarray" in OCDBT database')
  disk_full = ValueError('INTERNAL: Error writing local file "/w/checkpoints/8/d/x": '
                         '[OS error 28: No space left on device]')
  assert not passes("Task exception was never retrieved\nfuture: <Task ...>", read_error)
  assert not passes("Future exception was never retrieved\nfuture: <Future ...>", read_error)
  assert not passes("Task exception was never retrieved", disk_full)
  assert not passes("_GatheringFuture exception was never retrieved\nfuture: <...>", disk_full)
  assert not passes("Task exception was never retrieved", OSError(28, "No space left on device"))
  assert passes("Task exception was never retrieved", ValueError("a bug elsewhere"))
  assert passes("Task exception was never retrieved", RuntimeError("Error opening x"))
  assert passes("Executing <Task ...> took 0.2 seconds", None)


def test_closed_loop_errors_are_dropped_and_others_reach_the_previous_hook():
  seen = []
  hook = runtime._closed_loop_hook(seen.append)  # pylint: disable=protected-access

  class Unraisable:
    def __init__(self, exc):
      self.exc_value = exc

  hook(Unraisable(RuntimeError("Event loop is closed")))
  other = Unraisable(RuntimeError("something else"))
  hook(other)
  assert seen == [other]


def test_console_filters_install_once(monkeypatch):
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  handler = absl_logging.get_absl_handler()
  asyncio_logger = logging.getLogger("asyncio")
  monkeypatch.setattr(handler, "filters", list(handler.filters))
  monkeypatch.setattr(asyncio_logger, "filters", list(asyncio_logger.filters))
  monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
  previous = sys.unraisablehook
  for _ in range(2):
    runtime.install_console_filters()
  assert sum(isinstance(f, runtime.OnlyOwnInfo) for f in handler.filters) == 1
  assert sum(isinstance(f, runtime.DropAbandonedIoFutures) for f in asyncio_logger.filters) == 1
  assert sys.unraisablehook is not previous
  assert sys.unraisablehook.vt_jax_closed_loop_filter


def test_startup_lines_are_dropped_and_everything_else_written_during_an_import_kept(
    tmp_path, monkeypatch, capfd):
  (tmp_path / "noisy_module_for_vt_jax_test.py").write_text(
      "import os\n"
      "os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called are "
      "written to STDERR\\n')\n"
      "os.write(2, b'I0000 00:00:1796039766.319605   11960 port.cc:153] oneDNN custom "
      "operations are on.\\n')\n"
      "os.write(2, b'W0000 00:00:1796039766.319605   11960 x.cc:1] a C++ warning\\n')\n"
      "os.write(2, b'a plain line\\n')\n"
      "VALUE = 7\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  module = runtime._import_without_startup_lines(  # pylint: disable=protected-access
      "noisy_module_for_vt_jax_test")
  assert module.VALUE == 7
  err = capfd.readouterr().err
  assert err.splitlines() == ["W0000 00:00:1796039766.319605   11960 x.cc:1] a C++ warning",
                              "a plain line"]
