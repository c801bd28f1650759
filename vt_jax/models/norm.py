"""BatchNorm (+ ReLU) with flax's variables and a hand-written gradient.

`BatchNorm` is a drop-in for the `nn.BatchNorm(use_running_average=..., momentum=0.9,
epsilon=1e-5)` that the ResNets used before: the same parameters (`scale`, `bias`), the same
running statistics (`batch_stats`: `mean`, `var`, updated with the same momentum and not at
init), the same forward formula ((x - mean) * (rsqrt(var + eps) * scale) + bias, statistics
in at least float32, E[x^2] - E[x]^2 variance clipped at 0), so checkpoints and converted
torchvision weights load unchanged. It optionally applies the ReLU that follows it.

Why hand-written rather than flax's module: in training, autodiff of flax's BatchNorm
followed by a ReLU keeps the normalised tensor and the ReLU's output as separate
full-size tensors and reads them again in the backward pass; on a CPU these memory-bound
passes, not the convolutions, dominate the early ResNet stages (ResNet-50's stage 2 at
56 x 56 x 256). The custom VJP below keeps only the BN's input and recomputes everything else
inside the two passes the gradient needs anyway (one for the per-channel sums, one for the
input gradient), with the ReLU's mask recomputed from the input. Same function and the same
gradients as autodiff up to float32 rounding (tests/models/test_norm.py).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


def _stats(xf: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-channel mean and biased variance over all but the last axis, as flax computes them."""
  axes = tuple(range(xf.ndim - 1))
  mean = jnp.mean(xf, axes)
  var = jnp.maximum(0.0, jnp.mean(jnp.square(xf), axes) - jnp.square(mean))
  return mean, var


def _affine(xf, mean, var, scale, bias, eps):
  """flax's normalisation: (x - mean) * (rsqrt(var + eps) * scale) + bias."""
  return (xf - mean) * (jax.lax.rsqrt(var + eps) * scale) + bias


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def batch_norm_train(x: jax.Array, scale: jax.Array, bias: jax.Array, relu: bool,
                     eps: float, out_dtype: Dtype) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Training-mode BatchNorm (+ ReLU) of [..., C] over all other axes.

  Returns (y, batch mean, batch variance); y in out_dtype, the statistics in float32 (or
  wider). Gradients flow to x, scale and bias, and also from the statistics (their
  cotangents are zero when only the running averages use them, as in training).
  """
  return _forward(x, scale, bias, relu, eps, out_dtype)


def _output(y, relu, out_dtype):
  return (jnp.maximum(y, 0) if relu else y).astype(out_dtype)


def _forward(x, scale, bias, relu, eps, out_dtype):
  xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  mean, var = _stats(xf)
  return _output(_affine(xf, mean, var, scale, bias, eps), relu, out_dtype), mean, var


def _fwd(x, scale, bias, relu, eps, out_dtype):
  y, mean, var = _forward(x, scale, bias, relu, eps, out_dtype)
  return (y, mean, var), (x, mean, var, scale, bias)


def _bwd(relu, eps, out_dtype, residuals, cotangents):
  del out_dtype
  x, mean, var, scale, bias = residuals
  dy, dmean, dvar = cotangents
  xf = x.astype(mean.dtype)
  axes = tuple(range(x.ndim - 1))
  n = x.size // x.shape[-1]
  g = dy.astype(mean.dtype)
  if relu:  # the ReLU's mask, recomputed from the input (jax.nn.relu's gradient at 0 is 0)
    g = jnp.where(_affine(xf, mean, var, scale, bias, eps) > 0, g, 0)
  rstd = jax.lax.rsqrt(var + eps)
  centred = xf - mean
  # One pass for both per-channel sums; sum(g * xhat) = rstd * sum(g * (x - mean)).
  sum_g = jnp.sum(g, axes)
  sum_gc = jnp.sum(g * centred, axes)
  dscale = rstd * sum_gc
  dbias = sum_g
  # d/dx of y = (x - mean) * rstd * scale + bias through x, mean and var, plus the
  # statistics' own cotangents: d mean/dx = 1/n, d var/dx = 2 (x - mean) / n.
  a = scale * rstd
  k1 = (2.0 * dvar - a * rstd * rstd * sum_gc) / n
  k0 = (dmean - a * sum_g) / n
  dx = a * g + centred * k1 + k0
  return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(bias.dtype)


batch_norm_train.defvjp(_fwd, _bwd)


class BatchNorm(nn.Module):
  """torchvision's BatchNorm2d (eps 1e-5, momentum 0.1) over the last axis, + optional ReLU.

  Variables as flax's nn.BatchNorm: params `scale` (ones, or zeros with zero_init) and `bias`;
  batch_stats `mean` and `var`, which training updates as
  momentum * running + (1 - momentum) * batch (not at init). `use_running_average` selects
  the running statistics (evaluation) instead of the batch's.
  """
  use_running_average: bool
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Dtype = jnp.float32
  zero_init: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, relu: bool = False) -> jax.Array:
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.zeros if self.zero_init else nn.initializers.ones,
                       (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
    out_dtype = self.dtype or jnp.result_type(x, scale)
    if self.use_running_average:
      xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
      return _output(_affine(xf, ra_mean.value, ra_var.value, scale, bias, self.epsilon), relu,
                     out_dtype)
    y, mean, var = batch_norm_train(x, scale, bias, relu, self.epsilon, out_dtype)
    if not self.is_initializing():
      m = self.momentum
      ra_mean.value = m * ra_mean.value + (1 - m) * mean
      ra_var.value = m * ra_var.value + (1 - m) * var
    return y
