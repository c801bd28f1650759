"""vt_jax: Visual Transformers (Wu et al., 2020) in JAX/Flax.

Importing the package is cheap (no jax/tensorflow import); import the
subpackages you need: `vt_jax.models`, `vt_jax.data`, `vt_jax.train`.
"""

__version__ = "0.1.0"
