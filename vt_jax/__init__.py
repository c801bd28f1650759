"""vt_jax: Visual Transformers (Wu et al., 2020) in JAX/Flax.

Importing the package is cheap (no jax/tensorflow import); import the
subpackages you need: `vt_jax.models`, `vt_jax.data`, `vt_jax.train`.
Importing it also sets vt_jax's XLA flags for JAX (see vt_jax/xla_defaults.py:
a faster CPU train step; VT_JAX_XLA_DEFAULTS=0 turns that off) and, when JAX computes on
the CPU, glibc malloc settings that let XLA reuse its buffers' memory between steps (see
vt_jax/host_allocator.py; VT_JAX_MALLOC_DEFAULTS=0 turns that off).
"""

from vt_jax import host_allocator as _host_allocator
from vt_jax import xla_defaults as _xla_defaults

__version__ = "0.1.0"

_xla_defaults.apply()
_host_allocator.apply()
