"""Run by test_fast_forms.py in a subprocess with JAX_ENABLE_X64=1 (x64 is process-wide).

Prints the global relative L2 difference between the 'tuned' and 'flax' layer forms'
gradients of one random model computed in float64: `python float64_parity.py NAME DEPTH
RECURRENT_LOGITS`.
"""

import os
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_fast_forms  # pylint: disable=g-import-not-at-top,wrong-import-position

from vt_jax import models  # pylint: disable=g-import-not-at-top,wrong-import-position


def main(name: str, depth: int, recurrent_logits: str) -> None:
  assert jax.config.jax_enable_x64, "run with JAX_ENABLE_X64=1"
  models.DTYPES["float64"] = jnp.float64  # a test-only compute dtype; params stay float32
  x = jax.random.normal(jax.random.key(0), (4, 64, 64, 3), dtype=jnp.float64)
  labels = jnp.arange(4) % 10
  grads = {}
  for form in ("tuned", "flax"):
    config = test_fast_forms._model_config(name, depth, form)  # pylint: disable=protected-access
    config.dtype = "float64"
    if name == "vt_resnet":
      config.vt.recurrent_logits = recurrent_logits
    model = models.create_model(config)
    # Initialised eagerly: the second form reuses the first's compiled initializers (a
    # jitted init compiles every parameter's draw anew per form).
    variables = jax.tree.map(lambda a: a.astype(jnp.float64), model.init(jax.random.key(1), x))

    def loss(params, m=model, stats=variables["batch_stats"]):
      logits, _ = m.apply({"params": params, "batch_stats": stats}, x, train=True,
                          mutable=["batch_stats"])
      assert logits.dtype == jnp.float64
      return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1).mean()

    grads[form] = jax.jit(jax.grad(loss))(variables["params"])
  print(test_fast_forms._relative_error(grads["tuned"], grads["flax"]))  # pylint: disable=protected-access


if __name__ == "__main__":
  main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
