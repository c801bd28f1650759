"""JAX's persistent compilation cache, on by default for `python -m vt_jax.main`.

A rerun of the same config (a resume, an eval, the quickstart's second run) then loads the
compiled train/eval steps from disk instead of recompiling them. The cache is keyed by the
program, the jax/XLA versions, the flags and the device, so a stale entry is never used.

  --compile_cache_dir=DIR   where (default: $JAX_COMPILATION_CACHE_DIR if set, else
                            $XDG_CACHE_HOME or ~/.cache, then vt_jax/jax_compile)
  --nocompile_cache         off

JAX's own JAX_COMPILATION_CACHE_DIR is honoured so that a cache chosen for the whole process
tree (`python -m vt_jax.sweep` sets one per sweep root, a cluster's job script may set one on
shared storage) is the one the runs use; the flag wins over it.

The flags exist once the entry point calls `define_flags()` (importing this module defines
none).
"""

from __future__ import annotations

import os

from absl import flags
from absl import logging

_ENABLE = None
_DIR = None


def define_flags() -> None:
  """Defines --compile_cache and --compile_cache_dir (the entry point calls this once)."""
  global _ENABLE, _DIR  # pylint: disable=global-statement
  _ENABLE = flags.DEFINE_bool("compile_cache", True,
                              "Keep compiled steps in a persistent cache (--compile_cache_dir).")
  _DIR = flags.DEFINE_string("compile_cache_dir", None,
                             "Persistent compilation cache directory (default: "
                             "$JAX_COMPILATION_CACHE_DIR if set, else the user cache dir, "
                             "~/.cache/vt_jax/jax_compile).")


def default_dir() -> str:
  """$JAX_COMPILATION_CACHE_DIR if set, else the user cache dir's vt_jax/jax_compile."""
  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return os.environ["JAX_COMPILATION_CACHE_DIR"]
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "vt_jax", "jax_compile")


def enable(cache_dir: str | None = None) -> str | None:
  """Turns the cache on (from the flags when cache_dir is None); returns the dir or None (off).

  Entries are written for programs that took >= 1 s to compile (jax's default threshold):
  the train and eval steps, not the many small helper computations.
  """
  import jax  # pylint: disable=g-import-not-at-top -- main imports jax lazily
  if cache_dir is None:
    if _ENABLE is None:
      raise RuntimeError("compile_cache.enable() without a cache_dir reads the flags: call "
                         "compile_cache.define_flags() before parsing them")
    if not _ENABLE.value:
      logging.info("persistent compilation cache off (--nocompile_cache)")
      return None
    cache_dir = _DIR.value or default_dir()
  if "://" not in cache_dir:
    try:
      os.makedirs(cache_dir, exist_ok=True)
    except OSError as e:
      raise OSError(f"--compile_cache_dir={cache_dir!r} cannot be created ({e}); pass a "
                    "writable directory or --nocompile_cache") from e
  jax.config.update("jax_compilation_cache_dir", cache_dir)
  logging.info("persistent compilation cache in %s", cache_dir)
  return cache_dir
