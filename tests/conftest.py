"""Test-wide setup: 8 simulated CPU devices (so sharding is tested for real) and quiet TF.

The `python -m vt_jax.main` runs that tests start keep their compiled programs where a user's
runs do (vt_jax/train/compile_cache.py: $JAX_COMPILATION_CACHE_DIR if set, else
~/.cache/vt_jax/jax_compile), deliberately: entries are keyed by program, flags and versions,
so a cached program can only be the same program, and a cache that outlives the session lets
the next run of the suite on the same machine skip those compiles.
"""

import os

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
