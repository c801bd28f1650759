"""Test-wide setup: 8 simulated CPU devices (so sharding is tested for real), quiet TF, and
one compile cache per test session for the `python -m vt_jax.main` runs the tests start."""

import atexit
import os
import shutil
import tempfile

# Must happen before jax is imported anywhere in the test process.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# tf.data must not grab the accelerator or all host memory in tests.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

# The XLA flag vt_jax's programs run with (vt_jax.runtime.setup() applies it; importing
# vt_jax does not), so that the tests compute as `python -m vt_jax.main` does.
from vt_jax import xla_defaults  # pylint: disable=g-import-not-at-top,wrong-import-position

xla_defaults.apply()

# The runs of `python -m vt_jax.main` (and the other programs) that tests start keep their
# compiled programs in one directory per test session, shared by pytest-xdist's workers (they
# inherit the environment of the process that made it) and removed at its end: never the
# user's ~/.cache, and a program one test compiled is loaded by the next that runs it.
# The test processes themselves compile without a persistent cache, as they always have.
if "VT_JAX_TESTS_COMPILE_CACHE" not in os.environ:
  _CACHE = tempfile.mkdtemp(prefix="vt_jax_tests_xla_cache_")
  os.environ["VT_JAX_TESTS_COMPILE_CACHE"] = _CACHE
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ["VT_JAX_TESTS_COMPILE_CACHE"]
jax.config.update("jax_compilation_cache_dir", None)
