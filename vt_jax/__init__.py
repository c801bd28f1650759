"""vt_jax: Visual Transformers (Wu et al., 2020) in JAX/Flax.

Importing the package is cheap (no jax/tensorflow import) and changes nothing in the
process; import the subpackages you need: `vt_jax.models`, `vt_jax.data`, `vt_jax.train`.
The programs (`python -m vt_jax.main`, the other tools, the benchmarks) set up their process
with `vt_jax.runtime.setup()` (XLA flag, malloc, TensorFlow's and the libraries' logs);
your own code may call it too, before its first JAX computation.
"""

__version__ = "0.1.0"
