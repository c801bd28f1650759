"""The persistent compilation cache writes entries where it is told to, and can be off."""

import os
import subprocess
import sys

_SCRIPT = """
import sys
from absl import flags
import jax, jax.numpy as jnp
from vt_jax.train import compile_cache
assert "compile_cache_dir" not in flags.FLAGS  # importing it defines no flag
compile_cache.define_flags()  # as vt_jax.main does
flags.FLAGS(["prog"] + sys.argv[1:])
print("DIR", compile_cache.enable())
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # cache even tiny programs
jax.block_until_ready(jax.jit(lambda x: jnp.sin(x) @ x)(jnp.ones((64, 64))))
"""


def _run(*args, **env):
  out = subprocess.run([sys.executable, "-c", _SCRIPT, *args], capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu", **env))
  assert out.returncode == 0, out.stderr[-2000:]
  return out.stdout


def test_cache_dir_gets_entries(tmp_path):
  cache = tmp_path / "cache"
  assert f"DIR {cache}" in _run(f"--compile_cache_dir={cache}")
  assert any(cache.iterdir()), "no compiled program was written to the cache"


def test_nocompile_cache_writes_nothing(tmp_path):
  cache = tmp_path / "cache"
  assert "DIR None" in _run(f"--compile_cache_dir={cache}", "--nocompile_cache")
  assert not cache.exists()


def test_jax_compilation_cache_dir_is_the_default_and_the_flag_wins(tmp_path):
  """A cache chosen for the process tree (JAX_COMPILATION_CACHE_DIR, as vt_jax.sweep sets for
  its runs) is used when --compile_cache_dir is not given; the flag overrides it."""
  env_cache, flag_cache = tmp_path / "env", tmp_path / "flag"
  assert f"DIR {env_cache}" in _run(JAX_COMPILATION_CACHE_DIR=str(env_cache))
  assert any(env_cache.iterdir()), "nothing written to JAX_COMPILATION_CACHE_DIR"
  assert f"DIR {flag_cache}" in _run(f"--compile_cache_dir={flag_cache}",
                                     JAX_COMPILATION_CACHE_DIR=str(env_cache))
