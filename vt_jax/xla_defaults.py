"""XLA flags that vt_jax sets for its users, so the measured speed needs no flag knowledge.

One flag today, and it only changes XLA:CPU:

  --xla_cpu_experimental_ynn_fusion_type=individual_dot,reduce

XLA:CPU hands single dots to the YNNPACK library by default (`individual_dot`); adding
`reduce` hands it reductions too: BatchNorm's batch means and variances and their gradients,
which XLA's own reduction loops ran on one core at a fraction of memory bandwidth. It makes
CPU train steps faster on jax 0.10.2, 0.11.2 and 0.12 (measured: docs/performance.md).
Results differ from XLA's own reductions only by float32 rounding (loss gradients within
~1e-5 relative; the module tests run with the flag on).

`apply()` (called by `vt_jax.runtime.setup()`, which every entry point runs first) appends it
to XLA_FLAGS when all of these hold:
  * XLA_FLAGS does not set `xla_cpu_experimental_ynn_fusion_type` already (yours wins;
    `--xla_cpu_experimental_ynn_fusion_type=individual_dot` is XLA's own default);
  * the environment variable VT_JAX_XLA_DEFAULTS is not `0`;
  * the installed jaxlib is in the range this flag was tested with (XLA aborts on a flag
    it does not know, so an untested jaxlib runs without it).
XLA reads XLA_FLAGS once, when JAX starts its backends (the first computation, not `import
jax`): call it before any JAX code runs. Importing vt_jax does not call it.
"""

from __future__ import annotations

import importlib.metadata
import os

ENV_SWITCH = "VT_JAX_XLA_DEFAULTS"
FLAG_NAME = "xla_cpu_experimental_ynn_fusion_type"
FLAG = f"--{FLAG_NAME}=individual_dot,reduce"
# jaxlib versions the flag was measured and tested with: [0.10.2, 0.13), as setup.cfg pins.
TESTED_JAXLIB = ((0, 10, 2), (0, 13))


def _jaxlib_version() -> tuple[int, ...] | None:
  try:
    text = importlib.metadata.version("jaxlib")
  except importlib.metadata.PackageNotFoundError:
    return None
  parts = []
  for piece in text.split(".")[:3]:
    digits = "".join(ch for ch in piece if ch.isdigit())
    parts.append(int(digits) if digits else 0)
  return tuple(parts)


def apply() -> str | None:
  """Appends FLAG to os.environ['XLA_FLAGS'] if the conditions above hold; returns why not."""
  current = os.environ.get("XLA_FLAGS", "")
  if FLAG_NAME in current:
    return "XLA_FLAGS sets it"
  if os.environ.get(ENV_SWITCH, "1") == "0":
    return f"{ENV_SWITCH}=0"
  version = _jaxlib_version()
  low, high = TESTED_JAXLIB
  if version is None or not low <= version < high:
    return f"jaxlib {version} outside the tested range"
  os.environ["XLA_FLAGS"] = f"{current} {FLAG}".strip()
  return None
