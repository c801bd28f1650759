"""The layers ResNets and VT modules are built from, in two forms: `model.layers`.

    'flax'   the plain flax layers: nn.Conv, nn.BatchNorm + nn.relu, nn.max_pool, and the
             grouped 1x1 map as nn.Conv(feature_group_count=g).
    'tuned'  forms rewritten for XLA's CPU backend (each class below says why):
             PointwiseConv, SpatialConv (im2col on tiny maps, else conv_nhwc: lax's
             convolution with a kernel gradient that reads its input's buffer),
             norm.BatchNorm (BatchNorm + ReLU with a hand-written gradient),
             max_pool_3x3_s2 (a hand-written gradient), GroupedProjection's
             grouped_matmul, the VT projector's query map folded into its keys
             (vt_jax.models.vt.folded_query_logits) and its attention products with a
             gradient free of transposed contractions (attention_matmul).
    'auto'   per platform, what was measured faster: 'tuned' on CPU; 'flax' on GPU and TPU,
             where no measurement of the tuned forms exists yet.

Both forms have the same parameters (names, shapes, initializers: the same initial values
from the same key) and the same outputs and gradients up to float32 rounding
(tests/models/test_fast_forms.py), so checkpoints and converted weights load into either.
They perform the same MACs except in the projector's folded query, where 'tuned' performs
fewer than the paper's equations count (vt_jax.profile counts the 'flax' form's).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vt_jax.models import norm

Dtype = Any

FORMS = ("auto", "tuned", "flax")

# torchvision's (and the paper's) conv initialisation: He normal, fan_out.
CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def resolve(form: str) -> str:
  """'auto' -> 'tuned' on CPU, 'flax' elsewhere; 'tuned' and 'flax' as they are."""
  if form not in FORMS:
    raise ValueError(f"model.layers={form!r}; choose one of {list(FORMS)}")
  if form == "auto":
    return "tuned" if jax.default_backend() == "cpu" else "flax"
  return form


# ---------------------------------------------------------------------------------------
# Convolutions (ResNet): torchvision's bias-free conv with symmetric padding kernel // 2.

def conv(features: int, kernel: int, stride: int, dtype: Dtype, name: str,
         form: str = "auto") -> nn.Module:
  """A bias-free k x k conv, stride s, symmetric zero padding k // 2 (torchvision's).

  Symmetric padding, not 'SAME' (which pads stride-2 convs asymmetrically), so imported
  torchvision weights compute the same function. [B, H, W, C_in] -> [B, ceil(H/s),
  ceil(W/s), features]; parameter `kernel` [k, k, C_in, features] in every form.
  """
  if resolve(form) == "flax":
    pad = kernel // 2
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                   padding=((pad, pad), (pad, pad)), use_bias=False, dtype=dtype,
                   kernel_init=CONV_INIT, name=name)
  if kernel == 1:
    return PointwiseConv(features, stride, dtype, CONV_INIT, name=name)
  return SpatialConv(features, kernel, stride, dtype, CONV_INIT, name=name)


def matmul_channels(x: jax.Array, w: jax.Array) -> jax.Array:
  """[..., C_in] @ [C_in, C_out] -> [..., C_out], as one 2-D matmul over all pixels.

  The same contraction as einsum("bhwc,cf->bhwf"), with the pixels flattened into one
  dimension first (a free reshape). Why: for the kernel's gradient of the 4-D einsum,
  XLA's CPU backend writes the whole output gradient out transposed ([C_out, B*H*W]) before
  the dot, a strided copy about as slow as the dot itself; flattened, the weight gradient
  is a plain [N, C_in]^T [N, C_out] matmul with no copy.
  """
  return (x.reshape(-1, x.shape[-1]) @ w).reshape(*x.shape[:-1], w.shape[-1])


class PointwiseConv(nn.Module):
  """A bias-free 1x1 conv (stride s, no padding) evaluated as a matmul over channels.

  Same parameter as nn.Conv(features, (1, 1), use_bias=False) -- `kernel`
  [1, 1, C_in, features] -- and the same MACs. Why not nn.Conv: XLA's CPU backend runs the
  conv and its two backward convs markedly slower than the equivalent dots. A stride-s 1x1
  conv reads pixels 0, s, 2s, ... (torchvision's downsample: padding 0), i.e. x[:, ::s, ::s].
  [B, H, W, C_in] -> [B, ceil(H/s), ceil(W/s), features]
  """
  features: int
  stride: int = 1
  dtype: Dtype = jnp.float32
  kernel_init: Any = CONV_INIT

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init, (1, 1, x.shape[-1], self.features),
                        jnp.float32)
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    if self.stride > 1:
      x = x[:, ::self.stride, ::self.stride]
    return matmul_channels(x, kernel.reshape(-1, self.features))


class SpatialConv(nn.Module):
  """torchvision's bias-free k x k conv: stride s, symmetric zero padding k // 2.

  Same parameter as nn.Conv(features, (k, k), use_bias=False) -- `kernel`
  [k, k, C_in, features] -- and the same MACs. Where the output map is at most SMALL_MAP
  pixels high or wide it is evaluated as one matmul over im2col patches instead of lax's
  convolution: XLA's CPU convolution is two orders of magnitude slower on such tiny maps
  (ResNet stage 5 at small inputs), while on larger maps lax's convolution is as fast or
  faster. On larger maps the convolution is `conv_nhwc`, lax's with a kernel gradient that
  reads its input from one buffer (why: there).
  [B, H, W, C_in] -> [B, ceil(H/s), ceil(W/s), features]
  """
  features: int
  kernel_size: int
  stride: int = 1
  dtype: Dtype = jnp.float32
  kernel_init: Any = CONV_INIT

  SMALL_MAP = 2

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, s, pad = self.kernel_size, self.stride, self.kernel_size // 2
    kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features),
                        jnp.float32)
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    out_h, out_w = -(-x.shape[1] // s), -(-x.shape[2] // s)
    if min(out_h, out_w) > self.SMALL_MAP:
      return conv_nhwc(x, kernel, s, pad)
    xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    # Patch channels ordered (dy, dx, c_in), as the kernel's reshape below.
    patches = jnp.concatenate(
        [xp[:, dy:dy + s * (out_h - 1) + 1:s, dx:dx + s * (out_w - 1) + 1:s]
         for dy in range(k) for dx in range(k)], axis=-1)
    return matmul_channels(patches, kernel.reshape(k * k * x.shape[-1], -1))


def _conv_nhwc(x: jax.Array, kernel: jax.Array, stride: int, pad: int) -> jax.Array:
  return jax.lax.conv_general_dilated(x, kernel, (stride, stride), ((pad, pad), (pad, pad)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_nhwc(x: jax.Array, kernel: jax.Array, stride: int, pad: int) -> jax.Array:
  """lax's NHWC convolution (symmetric padding `pad`), whose kernel gradient reads x's buffer.

  Why a custom gradient: for the kernel gradient XLA's CPU backend copies x into a
  batch-minor layout ([C, H, W, B]), and its fusion pass computes that copy from x's
  producers (a block's BatchNorm, residual add and ReLU, often two blocks deep) instead of
  from x's buffer: a gather of 4-byte elements from up to nine tensors, one such copy 105 ms
  of ResNet-18's 1.5 s step. Here the backward reads x through `materialized`, so the copy
  is a plain transpose of one buffer (4-9 ms). ResNet-18's train step: 1.17x faster; the
  gradients are the convolution's own (jax.vjp of the same conv).
  """
  return _conv_nhwc(x, kernel, stride, pad)


def _conv_nhwc_fwd(x, kernel, stride, pad):
  return _conv_nhwc(x, kernel, stride, pad), (x, kernel)


def _conv_nhwc_bwd(stride, pad, residuals, g):
  x, kernel = residuals
  _, vjp = jax.vjp(lambda x, k: _conv_nhwc(x, k, stride, pad), materialized(x, kernel), kernel)
  return vjp(g)


conv_nhwc.defvjp(_conv_nhwc_fwd, _conv_nhwc_bwd)


def materialized(x: jax.Array, anchor: jax.Array | None = None) -> jax.Array:
  """x itself, as an operand XLA cannot fuse x's producer into.

  A conditional whose predicate, read from `anchor`'s first element (default: x's), holds
  for every value (NaN included), so the first branch always runs and the result is x.
  XLA's fusion passes do not look through a conditional, while they drop
  optimization_barrier before fusing. Pass a replicated array (a parameter) as `anchor` when
  x is sharded: reading x's first element would cost a cross-device reduction per call.
  """
  a = (x if anchor is None else anchor).reshape(-1)[0]
  return jax.lax.cond((a == a) | (a != a), lambda v: v, lambda v: -v, x)


# ---------------------------------------------------------------------------------------
# BatchNorm (+ ReLU).

def batch_norm(x: jax.Array, train: bool, dtype: Dtype, name: str, form: str = "auto",
               relu: bool = False, zero_init: bool = False) -> jax.Array:
  """torchvision's BatchNorm2d (eps 1e-5, running-average momentum 0.1) + optional ReLU.

  Call inside a compact method: the layer `name` belongs to the caller. Variables as
  nn.BatchNorm's: params `scale` (zeros with zero_init) and `bias`, batch_stats `mean` and
  `var` (flax counts the momentum as 1 - torchvision's: 0.9). 'tuned': norm.BatchNorm, whose
  hand-written gradient covers the ReLU too.
  """
  if resolve(form) == "tuned":
    return norm.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                          dtype=dtype, zero_init=zero_init, name=name)(x, relu=relu)
  y = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                   scale_init=nn.initializers.zeros if zero_init else nn.initializers.ones,
                   name=name)(x)
  return nn.relu(y) if relu else y


# ---------------------------------------------------------------------------------------
# The stem's 3x3 / stride 2 / padding 1 max-pool.

def max_pool(x: jax.Array, form: str = "auto") -> jax.Array:
  """3x3 max-pool, stride 2, padding 1: [B, H, W, C] -> [B, ceil(H/2), ceil(W/2), C]."""
  if resolve(form) == "flax":
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
  return max_pool_3x3_s2(x)


def _pool_windows(x: jax.Array) -> tuple[list[jax.Array], int, int]:
  """The 9 strided views of a 3x3 / stride 2 / padding 1 max-pool's windows, row-major."""
  _, h, w, _ = x.shape
  ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
  views = [xp[:, i:i + 2 * ho - 1:2, j:j + 2 * wo - 1:2] for i in range(3) for j in range(3)]
  return views, ho, wo


@jax.custom_vjp
def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
  """nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1))), same gradient.

  Why hand-written: XLA's CPU backend runs the max-pool gradient (select_and_scatter)
  several times slower than the nine strided selections here. The gradient goes to the
  first maximum of each window in row-major order, as select_and_scatter's (and PyTorch's)
  does; jnp.maximum's own gradient would split ties instead.
  """
  views, _, _ = _pool_windows(x)
  out = views[0]
  for v in views[1:]:
    out = jnp.maximum(out, v)
  return out


def _max_pool_fwd(x):
  views, _, _ = _pool_windows(x)
  out = views[0]
  for v in views[1:]:
    out = jnp.maximum(out, v)
  first = jnp.full(out.shape, 8, jnp.int8)  # which window offset holds the first maximum
  for k in range(7, -1, -1):
    first = jnp.where(views[k] == out, jnp.int8(k), first)
  return out, (first, x.shape)


def _max_pool_bwd(residuals, g):
  first, (b, h, w, c) = residuals
  ho, wo = g.shape[1:3]
  grad = jnp.zeros((b, h + 2, w + 2, c), g.dtype)
  zero = jnp.zeros((), g.dtype)
  for k in range(9):
    i, j = divmod(k, 3)
    # Scatter window offset (i, j)'s share back to the padded input's strided positions.
    grad = grad + jax.lax.pad(jnp.where(first == k, g, zero), zero,
                              ((0, 0, 0), (i, h + 2 - i - (2 * ho - 1), 1),
                               (j, w + 2 - j - (2 * wo - 1), 1), (0, 0, 0)))
  return (grad[:, 1:h + 1, 1:w + 1],)


max_pool_3x3_s2.defvjp(_max_pool_fwd, _max_pool_bwd)


# ---------------------------------------------------------------------------------------
# Grouped 1x1 maps (VT modules): the paper's grouped 1x1 convs over [batch, n, channels].

# Kernel initialisers of the VT modules' linear maps (model.vt.kernel_init).
# 'torch': PyTorch's default for nn.Linear and nn.Conv1d/2d (kaiming_uniform with a=sqrt(5)),
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)): the initialisation the authors' PyTorch modules get
# unless they re-initialise them, a third of flax's variance. 'flax': flax's default (LeCun
# normal, variance 1/fan_in). fan_in of a grouped map is its inputs per group, in both.
KERNEL_INITS = {
    "torch": nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
    "flax": nn.linear.default_kernel_init,
}


def kernel_initializer(name: str, field: str = "model.vt.kernel_init"):
  """The initialiser KERNEL_INITS[name]; a ValueError naming `field` for an unknown name."""
  if name not in KERNEL_INITS:
    raise ValueError(f"{field}={name!r}; choose one of {sorted(KERNEL_INITS)}")
  return KERNEL_INITS[name]


def projection(features: int, groups: int, dtype: Dtype, name: str,
               use_bias: bool = True, field: str = "groups",
               kernel_init: Any = nn.linear.default_kernel_init) -> nn.Module:
  """A 1x1 (grouped) linear map over the last axis of [batch, n, channels].

  groups == 1 is a Dense layer; groups > 1 a GroupedProjection, whose form is the `layers`
  field of the module that builds it. `field` names the config field that set `groups`, for
  errors.
  """
  if groups == 1:
    return nn.Dense(features, use_bias=use_bias, dtype=dtype, kernel_init=kernel_init,
                    name=name)
  return GroupedProjection(features, groups, field, use_bias, dtype, kernel_init=kernel_init,
                           name=name)


class GroupedProjection(nn.Module):
  """A grouped 1x1 linear map over the last axis of [batch, n, channels].

  Parameters are those of a kernel-1 nn.Conv with feature_group_count=groups, in a
  submodule named `conv` (kernel [1, C/groups, features], bias [features]), in both forms.
  'flax' is that nn.Conv. 'tuned' evaluates the map as one batched matmul with the groups
  as the batch dimension (grouped_matmul). Why: XLA's CPU backend runs a grouped
  convolution about as slowly as the dense one it is `groups` times cheaper than, while the
  batched dot does groups-times less work. Same MACs, same result.

  `layers`: the form; None (the default) takes the `layers` field of the module that built
  this one (every VT module has one), else 'auto'. Checks divisibility first so that a bad
  group count names its config field.
  """
  features: int
  groups: int
  field: str
  use_bias: bool = True
  dtype: Dtype = jnp.float32
  layers: str | None = None
  kernel_init: Any = nn.linear.default_kernel_init

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.map_or_blocks(x.shape[-1], x)

  def blocks(self, in_features: int) -> tuple[jax.Array, jax.Array | None]:
    """The map's weights, not applied: (w [groups, C/groups, F/groups], bias [F] or None),
    w[k] mapping group k's input channels to its outputs. Same variables as __call__. For a
    caller that folds the map into another product (the projector's folded query)."""
    return self.map_or_blocks(in_features, None)

  @nn.compact
  def map_or_blocks(self, c: int, x: jax.Array | None):
    form = self.layers or getattr(self.parent, "layers", None) or "auto"
    if x is not None and resolve(form) == "flax":
      check_groups(c, self.features, self.groups, self.field)
      return nn.Conv(self.features, (1,), feature_group_count=self.groups,
                     use_bias=self.use_bias, dtype=self.dtype, kernel_init=self.kernel_init,
                     name="conv")(x)
    w, bias = GroupedKernel(c, self.features, self.groups, self.field, self.use_bias,
                            self.kernel_init, name="conv")()
    if x is None:
      return w, bias
    x, w, bias = nn.dtypes.promote_dtype(x, w, bias, dtype=self.dtype)
    y = grouped_matmul(x.reshape(-1, c), w).reshape(*x.shape[:-1], self.features)
    return y if bias is None else y + bias


def check_groups(in_features: int, features: int, groups: int, field: str) -> None:
  """A grouped map's channel counts must divide into its groups; the error names the field."""
  if in_features % groups or features % groups:
    raise ValueError(f"model.vt.{field}={groups}: {in_features} input and {features} "
                     f"output channels must both be divisible by it")


class GroupedKernel(nn.Module):
  """The parameters of nn.Conv(kernel_size=(1,), feature_group_count=groups), as blocks.

  Returns (w [groups, C/groups, F/groups], bias [F] or None): w[k] maps group k's input
  channels to its output channels. The variables are the Conv's own (kernel [1, C/groups,
  F], bias [F]; created by this module, so name it where the Conv would be named), so
  checkpoints load into either form.
  """
  in_features: int
  features: int
  groups: int
  field: str
  use_bias: bool = True
  kernel_init: Any = nn.linear.default_kernel_init

  @nn.compact
  def __call__(self):
    c, f, g = self.in_features, self.features, self.groups
    check_groups(c, f, g, self.field)
    kernel = self.param("kernel", self.kernel_init, (1, c // g, f), jnp.float32)
    bias = (self.param("bias", nn.initializers.zeros_init(), (f,), jnp.float32)
            if self.use_bias else None)
    # Conv kernel [1, C/g, F]: output channel o of group o // (F/g) reads input channels
    # of the same group, so [C/g, F] -> [C/g, g, F/g] pairs each group's inputs and outputs.
    return kernel[0].reshape(c // g, g, f // g).transpose(1, 0, 2), bias


def grouped_matmul(x2: jax.Array, w: jax.Array) -> jax.Array:
  """[N, g * i] by g blocks [g, i, f] -> [N, g * f]: group k's channels times w[k].

  Written as an explicit transpose to [g, N, i], a batched matmul with the groups leading,
  and the transpose back. Why: with the groups as a middle batch dimension
  (einsum("ngi,igf->ngf")) XLA's CPU backend laid the pixels out minor-most for the kernel
  gradient, a strided copy of the whole input; the transposes here move contiguous rows of
  i channels. Same MACs, same result.
  """
  g = w.shape[0]
  xt = x2.reshape(x2.shape[0], g, -1).transpose(1, 0, 2)
  return jnp.einsum("gni,gif->gnf", xt, w).transpose(1, 0, 2).reshape(x2.shape[0], -1)


# ---------------------------------------------------------------------------------------
# Attention products (VT modules): per-head matmuls of a few tokens against every pixel.

def attention_matmul(a: jax.Array, b: jax.Array, form: str = "auto") -> jax.Array:
  """a @ b over matching leading (batch, head) dims: [..., n, k] x [..., k, p] -> [..., n, p].

  'tuned': matmul_untransposed, the same product with a gradient whose matmuls never
  contract a transposed operand; 'flax': the einsum as written.
  """
  if resolve(form) == "tuned":
    return matmul_untransposed(a, b)
  return jnp.einsum("...nk,...kp->...np", a, b)


@jax.custom_vjp
def matmul_untransposed(a: jax.Array, b: jax.Array) -> jax.Array:
  """jnp.einsum('...nk,...kp->...np', a, b), whose b-gradient transposes a small operand first.

  The gradient with respect to b is a^T g, a contraction over the n pixels of both operands.
  XLA's CPU backend ran that form of batched matmul ([batch, heads] small matrices, the
  contracted dimension minor-most in neither) through its generic dot loop, not YNNPACK:
  VT-R50's projector value gradient (32 x 16 heads of [8 x 196] x [196 x 64], 51 M MACs)
  took 9.4 ms alone, 2.7 ms with one operand transposed first. Here the smaller of a and g
  (a pixels x tokens matrix, 8-16 wide) is copied transposed, the copy behind an
  optimization_barrier so that XLA's simplifier cannot fold the transpose back into the dot
  (nor the product's own transpose, when g is the one copied), and both gradient matmuls
  are row-major products. Same MACs and function (the summation order can differ: float32
  rounding). One VT-R50 projector forward + backward: 47 -> 40 ms (docs/performance.md).
  The tokenizers' pooling A^T X has the same form but measured slower this way (28 -> 30 ms
  per tokenizer), so it stays an einsum.
  """
  return jnp.einsum("...nk,...kp->...np", a, b)


def _matmul_untransposed_fwd(a, b):
  return matmul_untransposed(a, b), (a, b)


def _transposed_copy(x: jax.Array) -> jax.Array:
  return jax.lax.optimization_barrier(jnp.swapaxes(x, -1, -2))


def _matmul_untransposed_bwd(residuals, g):
  a, b = residuals
  da = jnp.einsum("...np,...kp->...nk", g, b)
  if a.shape[-1] <= g.shape[-1]:  # a^T [..., k, n] is the smaller copy
    db = jnp.einsum("...kn,...np->...kp", _transposed_copy(a), g)
  else:  # g^T [..., p, n]: db = (g^T a)^T, the product kept row-major by a barrier too
    db = _transposed_copy(jax.lax.optimization_barrier(
        jnp.einsum("...pn,...nk->...pk", _transposed_copy(g), a)))
  return da, db


matmul_untransposed.defvjp(_matmul_untransposed_fwd, _matmul_untransposed_bwd)
