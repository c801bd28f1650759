"""vt_jax.models.norm.BatchNorm against flax's nn.BatchNorm (+ ReLU): values, gradients, stats.

Both through layers.batch_norm, the switch `model.layers` selects with.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vt_jax.models import layers
from vt_jax.models import norm


class _BN(nn.Module):
  """layers.batch_norm in its two forms (model.layers): 'flax' is nn.BatchNorm + nn.relu,
  'tuned' is norm.BatchNorm(relu=...) (ours=True)."""
  ours: bool
  train: bool
  relu: bool
  zero_init: bool = False
  dtype: object = jnp.float32

  @nn.compact
  def __call__(self, x):
    return layers.batch_norm(x, self.train, self.dtype, "bn", "tuned" if self.ours else "flax",
                             relu=self.relu, zero_init=self.zero_init)


def _Flax(*args, **kwargs):  # pylint: disable=invalid-name
  return _BN(False, *args, **kwargs)


def _Ours(*args, **kwargs):  # pylint: disable=invalid-name
  return _BN(True, *args, **kwargs)


def _inputs(shape=(4, 6, 5, 8), seed=0):
  k1, k2, k3, k4 = jax.random.split(jax.random.key(seed), 4)
  x = jax.random.normal(k1, shape) * 3.0 + 1.5  # a non-zero mean, as conv outputs have
  params = {"bn": {"scale": 1.0 + 0.3 * jax.random.normal(k2, shape[-1:]),
                   "bias": 0.5 * jax.random.normal(k3, shape[-1:])}}
  stats = {"bn": {"mean": jax.random.normal(k4, shape[-1:]), "var": jnp.full(shape[-1:], 2.0)}}
  return x, params, stats


def _loss_and_stats(module, params, stats, x, w):
  y, updates = module.apply({"params": params, "batch_stats": stats}, x, mutable=["batch_stats"])
  return jnp.sum(y.astype(jnp.float32) * w), updates["batch_stats"]


@pytest.mark.parametrize("relu", [False, True])
def test_training_matches_flax(relu):
  x, params, stats = _inputs()
  w = jax.random.normal(jax.random.key(9), x.shape)  # a loss whose gradient is not uniform
  outs = {}
  for name, module in (("flax", _Flax(True, relu)), ("ours", _Ours(True, relu))):
    (loss, new_stats), grads = jax.value_and_grad(
        lambda p, x, m=module: _loss_and_stats(m, p, stats, x, w), argnums=(0, 1),
        has_aux=True)(params, x)
    y, _ = module.apply({"params": params, "batch_stats": stats}, x, mutable=["batch_stats"])
    outs[name] = (y, loss, new_stats, grads)
  (fy, _, fs, (fgp, fgx)), (oy, _, os_, (ogp, ogx)) = outs["flax"], outs["ours"]
  np.testing.assert_allclose(oy, fy, rtol=1e-5, atol=1e-5)
  if relu:
    assert float(jnp.mean(oy == 0)) > 0.2  # the ReLU is really applied
  for k in ("mean", "var"):  # running statistics: momentum 0.9, batch stats from this batch
    np.testing.assert_allclose(os_["bn"][k], fs["bn"][k], rtol=1e-5, atol=1e-6)
  assert not np.allclose(os_["bn"]["mean"], stats["bn"]["mean"])
  np.testing.assert_allclose(ogx, fgx, rtol=1e-4, atol=1e-5)
  for k in ("scale", "bias"):
    np.testing.assert_allclose(ogp["bn"][k], fgp["bn"][k], rtol=1e-4, atol=1e-5)


def test_gradient_through_the_statistics():
  """The statistics are outputs too; their cotangents must reach x like autodiff's would."""
  x, params, _ = _inputs(seed=3)
  scale, bias = params["bn"]["scale"], params["bn"]["bias"]
  w = jax.random.normal(jax.random.key(4), x.shape)

  def reference(x, scale, bias):
    xf = x
    mean = jnp.mean(xf, (0, 1, 2))
    var = jnp.maximum(0.0, jnp.mean(xf * xf, (0, 1, 2)) - mean * mean)
    y = jnp.maximum((xf - mean) * (jax.lax.rsqrt(var + 1e-5) * scale) + bias, 0)
    return jnp.sum(y * w) + jnp.sum(jnp.sin(mean)) + 3.0 * jnp.sum(var)

  def ours(x, scale, bias):
    y, mean, var = norm.batch_norm_train(x, scale, bias, True, 1e-5, jnp.float32)
    return jnp.sum(y * w) + jnp.sum(jnp.sin(mean)) + 3.0 * jnp.sum(var)

  ref = jax.grad(reference, argnums=(0, 1, 2))(x, scale, bias)
  got = jax.grad(ours, argnums=(0, 1, 2))(x, scale, bias)
  for r, g in zip(ref, got):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("relu", [False, True])
def test_evaluation_uses_running_statistics(relu):
  x, params, stats = _inputs(seed=1)
  fy = _Flax(False, relu).apply({"params": params, "batch_stats": stats}, x)
  oy = _Ours(False, relu).apply({"params": params, "batch_stats": stats}, x)
  np.testing.assert_allclose(oy, fy, rtol=1e-6, atol=1e-6)


def test_same_variables_and_init_as_flax():
  x = jnp.ones((2, 3, 3, 5))
  for zero_init in (False, True):
    fv = _Flax(True, False, zero_init).init(jax.random.key(0), x)
    ov = _Ours(True, False, zero_init).init(jax.random.key(0), x)
    assert jax.tree_util.tree_structure(fv) == jax.tree_util.tree_structure(ov)
    jax.tree_util.tree_map(np.testing.assert_array_equal, ov, fv)  # init leaves stats alone


def test_bfloat16_output_and_float32_statistics():
  x, params, stats = _inputs(seed=2)
  xb = x.astype(jnp.bfloat16)
  (fy, fs), (oy, os_) = [m.apply({"params": params, "batch_stats": stats}, xb,
                                 mutable=["batch_stats"])
                         for m in (_Flax(True, True, dtype=jnp.bfloat16),
                                   _Ours(True, True, dtype=jnp.bfloat16))]
  assert oy.dtype == jnp.bfloat16 and os_["batch_stats"]["bn"]["mean"].dtype == jnp.float32
  np.testing.assert_allclose(oy.astype(jnp.float32), fy.astype(jnp.float32), rtol=1e-2, atol=1e-2)
  np.testing.assert_allclose(os_["batch_stats"]["bn"]["var"], fs["batch_stats"]["bn"]["var"],
                             rtol=1e-5)
  gx = jax.grad(lambda x: jnp.sum(_Ours(True, True, dtype=jnp.bfloat16).apply(
      {"params": params, "batch_stats": stats}, x, mutable=["batch_stats"])[0]
                                 .astype(jnp.float32)))(xb)
  assert gx.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(gx.astype(jnp.float32))))
