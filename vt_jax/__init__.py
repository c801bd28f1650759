"""vt_jax: Visual Transformers (Wu et al., 2020) in JAX/Flax.

Importing the package is cheap (no jax/tensorflow import); import the
subpackages you need: `vt_jax.models`, `vt_jax.data`, `vt_jax.train`.
Importing it also sets vt_jax's XLA flags for JAX (see vt_jax/xla_defaults.py:
a faster CPU train step; VT_JAX_XLA_DEFAULTS=0 turns that off). With
VT_JAX_MALLOC_DEFAULTS=1 it also sets glibc malloc so that XLA:CPU reuses its buffers' memory
between steps (vt_jax/host_allocator.py; `python -m vt_jax.main` decides that per config).
"""

from vt_jax import host_allocator as _host_allocator
from vt_jax import xla_defaults as _xla_defaults

__version__ = "0.1.0"

_xla_defaults.apply()
_host_allocator.apply()
