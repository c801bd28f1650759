"""Process set-up for vt_jax's programs, done by each entry point before JAX starts.

Importing vt_jax, its subpackages or a config file changes nothing in the process. What a
program wants of its process belongs to the program, so `python -m vt_jax.main`, the other
`python -m vt_jax.*` tools and the benchmarks call `setup()` first, before any JAX code:

  * XLA's flag for faster CPU train steps (vt_jax/xla_defaults.py): appended to XLA_FLAGS
    unless XLA_FLAGS sets it already; VT_JAX_XLA_DEFAULTS=0 turns it off. XLA reads
    XLA_FLAGS when JAX starts its backends, so a call after JAX code ran has no effect.
  * glibc malloc that keeps freed memory for XLA:CPU's large step buffers
    (vt_jax/host_allocator.py): with `malloc=True` (the benchmarks; `python -m vt_jax.main`
    decides per config with `host_allocator.worth_it`) or VT_JAX_MALLOC_DEFAULTS=1;
    VT_JAX_MALLOC_DEFAULTS=0 keeps glibc's defaults everywhere.
  * TensorFlow's C++ INFO lines off: TF_CPP_MIN_LOG_LEVEL=1 unless the command line asks
    for --verbosity (a TF_CPP_MIN_LOG_LEVEL of your own wins).
  * The console: absl's handler shows INFO lines only from vt_jax's own modules (orbax, tfds,
    jax... show theirs with --verbosity); warnings pass from everyone but a few that say
    nothing the user can act on: tfds's `FeatureConnector.dtype` deprecation warning (tfds's
    own code reads the field) and orbax restating the read-only options vt_jax's readers
    ask for. Noise that repeats an error vt_jax reports in one message is dropped too:
    asyncio's log of the abandoned tensorstore reads and writes of a failed restore or save,
    and the "Event loop is closed" errors their late completions raise, and orbax's own
    tracebacks of such a failure in its background threads.

`setup_tensorflow()` is separate, for the programs that read data through tf.data: it imports
TensorFlow without its start-up lines (`import_tensorflow()`: TensorFlow 2.21 prints "oneDNN
custom operations are on" twice, at INFO level, before it reads TF_CPP_MIN_LOG_LEVEL) and
keeps it from taking the accelerator memory JAX uses.
The persistent compilation cache of `python -m vt_jax.main` is vt_jax/train/compile_cache.py
(its flags are defined by the entry point that wants them).

Your own training code can call `setup()` (or only `xla_defaults.apply()` /
`host_allocator.apply(True)`) before its first JAX computation to run as `vt_jax.main` does.
"""

from __future__ import annotations

import importlib
import logging as py_logging
import os
import re
import sys
import tempfile
from typing import NamedTuple, Sequence

from vt_jax import host_allocator
from vt_jax import xla_defaults

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_verbose: bool | None = None  # setup()'s reading of the command line


class Applied(NamedTuple):
  """Why each setting was not applied (None: applied)."""
  xla_flag: str | None
  malloc: str | None


def verbosity_given(argv: Sequence[str]) -> bool:
  """Whether the command line sets absl's --verbosity (or its alias -v)."""
  for arg in argv[1:]:
    if arg == "--":
      break
    name = arg.lstrip("-").split("=", 1)[0]
    if arg.startswith("-") and name in ("verbosity", "v"):
      return True
  return False


def setup(argv: Sequence[str] | None = None, *, malloc: bool = False) -> Applied:
  """Applies the settings above to this process; call it before JAX starts.

  `argv` is the command line (default sys.argv): --verbosity there keeps TensorFlow's and
  the libraries' INFO lines. Returns why the XLA flag or the malloc setting was not applied.
  """
  global _verbose  # pylint: disable=global-statement
  argv = sys.argv if argv is None else argv
  verbose = _verbose = verbosity_given(argv)
  if not verbose:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
  applied = Applied(xla_flag=xla_defaults.apply(), malloc=host_allocator.apply(malloc))
  install_console_filters()
  return applied


# TensorFlow's start-up lines: absl's C++ INFO lines ("I0000 00:00:1796039766.319605  123
# port.cc:153] oneDNN custom operations are on...") and absl's note that precedes them.
_TF_STARTUP_NOISE = re.compile(
    r"^(I\d{4} [\d:.]+ +\d+ \S+:\d+\] |"
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$)")


def _import_without_startup_lines(name: str):
  """Imports `name` with file descriptor 2 captured; replays every line but the noise above.

  Hand-written because TensorFlow's C++ code writes these lines to the process's stderr
  before any Python or TF_CPP_MIN_LOG_LEVEL setting applies; anything else written during
  the import (a warning, an error) is written to stderr afterwards.
  """
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      return importlib.import_module(name)
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      kept = [line for line in captured.read().decode(errors="replace").splitlines()
              if not _TF_STARTUP_NOISE.match(line)]
      if kept:
        sys.stderr.write("\n".join(kept) + "\n")
        sys.stderr.flush()


def import_tensorflow():
  """Imports TensorFlow without its start-up lines (all of them with --verbosity)."""
  verbose = verbosity_given(sys.argv) if _verbose is None else _verbose
  if "tensorflow" in sys.modules or verbose:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top -- only tf.data users need it
    return tf
  return _import_without_startup_lines("tensorflow")


def setup_tensorflow() -> None:
  """Imports TensorFlow (see import_tensorflow) and keeps it off the GPUs.

  tf.data runs on the host: TensorFlow must not take the accelerator memory JAX uses. Call
  it before TensorFlow runs anything (it then cannot change its devices any more).
  """
  tf = import_tensorflow()
  try:
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError as e:
    raise RuntimeError("TensorFlow initialised its devices before "
                       "vt_jax.runtime.setup_tensorflow() was called; call it before any "
                       "TensorFlow or tf.data work") from e


# --- Console filters -----------------------------------------------------------------------


class OnlyOwnInfo(py_logging.Filter):
  """Keeps WARNING and above from everyone (but the known noise below), INFO and below only
  from vt_jax's own modules; everything once absl's --verbosity was given."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    if _verbosity_flag_present():
      return True
    if record.levelno >= py_logging.WARNING:
      return not _is_known_noise(record)
    return record.pathname.startswith(_PACKAGE_DIR)


def _verbosity_flag_present() -> bool:
  from absl import flags  # pylint: disable=g-import-not-at-top
  try:
    return bool(flags.FLAGS["verbosity"].present)
  except KeyError:  # absl.logging not imported: no --verbosity flag to give
    return False


# Warnings that tell the user nothing they can act on: (a path fragment of the library's
# module, the message's start).
_KNOWN_NOISE = (
    # tfds's own decoding reads FeatureConnector.dtype and warns about it, per eval.
    ("tensorflow_datasets", "`FeatureConnector.dtype` is deprecated"),
    ("tensorflow_datasets", "`TensorInfo.dtype` is deprecated"),
    # orbax restating the read-only options vt_jax's readers (eval, analysis) ask for.
    ("orbax", "Given directory is read only"),
    ("orbax", "CheckpointManagerOptions.read_only=True, setting"),
)


def _is_known_noise(record: py_logging.LogRecord) -> bool:
  message = str(record.msg)
  if any(where in record.pathname and message.startswith(start)
         for where, start in _KNOWN_NOISE):
    return True
  # orbax's own ERROR records (each with a traceback, from three threads) of a write or read
  # that failed in its background threads: vt_jax reports that failure as one
  # CheckpointError naming the step, the directory and the way out.
  return f"{os.sep}orbax{os.sep}" in record.pathname and _is_io_failure(record)


def _is_io_failure(record: py_logging.LogRecord) -> bool:
  exc = record.exc_info[1] if record.exc_info else None
  texts = [str(record.msg)]
  if isinstance(exc, (ValueError, OSError)):
    texts.append(str(exc))
  return any(marker in text for text in texts for marker in _ABANDONED_IO)


_ABANDONED_IO = ("Error opening", "Error reading", "Error writing", "No space left",
                 "Disk quota exceeded", "File too large", "Read-only file system")


class DropAbandonedIoFutures(py_logging.Filter):
  """Drops asyncio's '... exception was never retrieved' records of tensorstore I/O.

  When one read of a restore (or one write of an asynchronous save) fails, orbax abandons the
  other pending reads or writes; those that fail too (the same damaged checkpoint, the same
  full disk) are garbage-collected later and asyncio logs each one with its traceback: tens
  of tracebacks after the error vt_jax reports, depending on timing. They repeat that error,
  so only these records -- an unretrieved ValueError/OSError from tensorstore I/O -- are
  dropped; every other asyncio record passes.
  """

  def filter(self, record: py_logging.LogRecord) -> bool:
    # "Task/Future/_GatheringFuture exception was never retrieved", whichever future it was
    if "exception was never retrieved" not in str(record.msg).split("\n", 1)[0]:
      return True
    exc = record.exc_info[1] if record.exc_info else None
    text = str(exc) if exc is not None else ""
    return not (isinstance(exc, (ValueError, OSError)) and
                any(marker in text for marker in _ABANDONED_IO))


def _closed_loop_hook(previous):
  """sys.unraisablehook that drops 'Event loop is closed' and passes the rest to `previous`.

  When a read fails, orbax closes its asyncio loop while tensorstore still completes the
  other pending reads; each completion calls `loop.call_soon_threadsafe` and Python reports
  the RuntimeError through sys.unraisablehook: hundreds of traceback lines per failed
  restore, with no information the restore's own error lacks.
  """

  def hook(unraisable):
    exc = unraisable.exc_value
    if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
      return
    previous(unraisable)

  hook.vt_jax_closed_loop_filter = True
  return hook


def install_console_filters() -> None:
  """Installs the filters above (idempotent); setup() calls it."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  handler = logging.get_absl_handler()
  if not any(isinstance(f, OnlyOwnInfo) for f in handler.filters):
    handler.addFilter(OnlyOwnInfo())
  asyncio_logger = py_logging.getLogger("asyncio")
  if not any(isinstance(f, DropAbandonedIoFutures) for f in asyncio_logger.filters):
    asyncio_logger.addFilter(DropAbandonedIoFutures())
  if not getattr(sys.unraisablehook, "vt_jax_closed_loop_filter", False):
    sys.unraisablehook = _closed_loop_hook(sys.unraisablehook)
