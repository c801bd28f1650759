"""vt_jax's default XLA flag: applied by the entry points' runtime set-up (never by an import),
never over the user's, and accepted by XLA.

Each case runs a fresh interpreter, since XLA reads XLA_FLAGS once per process.
"""

import os
import subprocess
import sys

from vt_jax import xla_defaults

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs the entry points' set-up, then runs a BatchNorm-like reduction and its gradient (the work the flag
# moves to YNNPACK) and prints XLA_FLAGS as JAX saw it.
_PROGRAM = """
import os, sys
{setup}
import jax, jax.numpy as jnp
x = jnp.arange(4 * 6 * 6 * 8, dtype=jnp.float32).reshape(4, 6, 6, 8) / 100.0
g = jax.jit(jax.grad(lambda x: jnp.sum(jnp.mean(x, axis=(0, 1, 2)) ** 2)))(x)
assert g.shape == x.shape and bool(jnp.all(jnp.isfinite(g)))
print("XLA_FLAGS=" + os.environ.get("XLA_FLAGS", ""))
"""


def _run(env_extra: dict,
         setup: str = "from vt_jax import runtime; runtime.setup()") -> subprocess.CompletedProcess:
  env = {k: v for k, v in os.environ.items()
         if k not in ("XLA_FLAGS", xla_defaults.ENV_SWITCH)}
  env.update(env_extra, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-c", _PROGRAM.format(setup=setup)], env=env,
                        capture_output=True, text=True, timeout=300, check=False)


def _flags(proc: subprocess.CompletedProcess) -> str:
  assert proc.returncode == 0, proc.stderr[-3000:]
  return [l for l in proc.stdout.splitlines() if l.startswith("XLA_FLAGS=")][-1]


def test_import_appends_the_flag_and_xla_accepts_it():
  # XLA aborts the process on a flag it does not know, so exit 0 after a jitted reduction
  # means the installed jaxlib took it.
  flags = _flags(_run({"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}))
  assert flags == ("XLA_FLAGS=--xla_force_host_platform_device_count=2 "
                   + xla_defaults.FLAG)


def test_the_users_own_setting_wins():
  mine = "--xla_cpu_experimental_ynn_fusion_type=individual_dot"
  assert _flags(_run({"XLA_FLAGS": mine})) == "XLA_FLAGS=" + mine


def test_switched_off_by_the_environment():
  assert _flags(_run({xla_defaults.ENV_SWITCH: "0"})) == "XLA_FLAGS="


def test_importing_vt_jax_sets_no_flag():
  assert _flags(_run({}, setup="import vt_jax, vt_jax.models")) == "XLA_FLAGS="


def test_untested_jaxlib_gets_no_flag(monkeypatch):
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  monkeypatch.delenv(xla_defaults.ENV_SWITCH, raising=False)
  monkeypatch.setattr(xla_defaults, "_jaxlib_version", lambda: (0, 13, 0))
  assert "outside the tested range" in xla_defaults.apply()
  assert "XLA_FLAGS" not in os.environ
