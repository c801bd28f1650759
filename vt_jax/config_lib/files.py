"""Load a config file given as `path/to/file.py[:ARG]`, as `--config` does.

For the places that take a config file outside absl flags: the distillation
teacher (`config.distill.teacher_config`), the profile tool's paper table, the
benchmarks and the tests. ml_collections' own loader is private to
`config_flags` (it parses flags), hence these few lines.
"""

from __future__ import annotations

import importlib.util
import os

import ml_collections


def load(spec: str, field: str = "--config") -> ml_collections.ConfigDict:
  """'configs/x.py[:ARG]' -> get_config(ARG); errors name `field` (where the spec came from)."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{field}={spec!r}: no file {path!r}")
  name = "vt_jax_config_" + os.path.splitext(os.path.basename(path))[0]
  module_spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise AttributeError(f"{field}={spec!r}: {path!r} defines no get_config()")
  return module.get_config(arg or None)
