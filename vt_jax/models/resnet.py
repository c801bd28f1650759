"""ResNet-18/34/50/101 in torchvision's layout (stride on the 3x3 conv of bottlenecks).

Stage names follow the paper's Table 1: stage1 = stem (7x7 conv, BN, ReLU,
max-pool), stage2..stage5 = torchvision's layer1..layer4, head = average pool
and fully connected. Padding is explicit (torchvision's symmetric padding, not
'SAME', which pads stride-2 convs asymmetrically) so imported weights compute
the same function.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vt_jax.models import norm

Dtype = Any

STAGE_SIZES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def is_bottleneck(depth: int) -> bool:
  return depth >= 50


def stage_channels(depth: int, width: int) -> tuple[int, ...]:
  """Output channels of stages 2..5."""
  expansion = 4 if is_bottleneck(depth) else 1
  return tuple(width * 2**i * expansion for i in range(4))


def check_depth(depth: int) -> None:
  if depth not in STAGE_SIZES:
    raise ValueError(f"model.depth={depth}; choose one of {sorted(STAGE_SIZES)}")


def batch_norm(train: bool, dtype: Dtype, name: str, zero_init: bool = False) -> norm.BatchNorm:
  # torchvision: eps 1e-5, running-average momentum 0.1 (flax counts 1 - that). Call it
  # with relu=True where a ReLU follows: the two share one hand-written gradient (norm.py).
  return norm.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                        dtype=dtype, zero_init=zero_init, name=name)


def matmul_channels(x: jax.Array, w: jax.Array) -> jax.Array:
  """[..., C_in] @ [C_in, C_out] -> [..., C_out], as one 2-D matmul over all pixels.

  The same contraction as einsum("bhwc,cf->bhwf"), but with the pixels flattened into one
  dimension first (a free reshape). Why: the kernel's gradient of the 4-D einsum contracts
  three dimensions, and XLA's CPU backend then writes the whole output gradient out
  transposed ([C_out, B*H*W]) before the dot -- a strided copy as slow as the dot itself.
  Flattened, the weight gradient is a plain [N, C_in]^T [N, C_out] matmul with no copy:
  ResNet-50's train step spent 32% of its time in those copies (batch 32, 224 px).
  """
  return (x.reshape(-1, x.shape[-1]) @ w).reshape(*x.shape[:-1], w.shape[-1])


class PointwiseConv(nn.Module):
  """A bias-free 1x1 conv (stride s, no padding) evaluated as a matmul over channels.

  Same parameter as flax's nn.Conv(features, (1, 1), use_bias=False) -- `kernel`
  [1, 1, C_in, features] -- so checkpoints and converted weights load unchanged,
  and the same MACs. Why not nn.Conv: XLA's CPU backend runs the conv (and its
  two backward convs) far slower than the equivalent dots: as dots, ResNet-50's
  stage 2 took 1.6x and its stage 5 1.5x fewer CPU-seconds forward+backward
  (batch 32, float32; README, Benchmarks). A stride-s 1x1 conv reads pixels
  0, s, 2s, ... (torchvision's downsample: padding 0), i.e. x[:, ::s, ::s].
  [B, H, W, C_in] -> [B, ceil(H/s), ceil(W/s), features]
  """
  features: int
  stride: int = 1
  dtype: Dtype = jnp.float32
  kernel_init: Any = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

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

  Same parameter as flax's nn.Conv(features, (k, k), use_bias=False) -- `kernel`
  [k, k, C_in, features] -- so checkpoints and converted weights load unchanged, and the
  same MACs. Where the output map is at most SMALL_MAP pixels high or wide it is evaluated
  as one matmul over im2col patches instead of lax's convolution: XLA's CPU convolution
  takes 100-300x longer there (3x3 512->512, batch 32, 2x2 map: 0.71 s vs 0.002 s forward;
  ResNet-18's stage 5 at 64 px input, 2x2: 2.6 CPU-s forward+backward, 92% of the step),
  while on larger maps lax's convolution is as fast or faster. Same function up to float32
  rounding. [B, H, W, C_in] -> [B, ceil(H/s), ceil(W/s), features]
  """
  features: int
  kernel_size: int
  stride: int = 1
  dtype: Dtype = jnp.float32
  kernel_init: Any = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

  SMALL_MAP = 2

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, s, pad = self.kernel_size, self.stride, self.kernel_size // 2
    kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features),
                        jnp.float32)
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    out_h, out_w = -(-x.shape[1] // s), -(-x.shape[2] // s)
    if min(out_h, out_w) > self.SMALL_MAP:
      return jax.lax.conv_general_dilated(x, kernel, (s, s), ((pad, pad), (pad, pad)),
                                          dimension_numbers=("NHWC", "HWIO", "NHWC"))
    xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    # Patch channels ordered (dy, dx, c_in), as the kernel's reshape below.
    patches = jnp.concatenate(
        [xp[:, dy:dy + s * (out_h - 1) + 1:s, dx:dx + s * (out_w - 1) + 1:s]
         for dy in range(k) for dx in range(k)], axis=-1)
    return matmul_channels(patches, kernel.reshape(k * k * x.shape[-1], -1))


def conv(features: int, kernel: int, stride: int, dtype: Dtype, name: str) -> nn.Module:
  """torchvision's bias-free conv with symmetric padding kernel // 2 (1x1: a matmul)."""
  init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
  if kernel == 1:
    return PointwiseConv(features, stride, dtype, init, name=name)
  return SpatialConv(features, kernel, stride, dtype, init, name=name)


def shortcut(x: jax.Array, features: int, stride: int, train: bool, dtype: Dtype) -> jax.Array:
  """The residual path: identity, or a strided 1x1 conv + BN when the shape changes.

  Called inside a block's compact __call__, so its layers belong to the block
  (torchvision's `downsample.0` / `downsample.1`).
  """
  if stride == 1 and x.shape[-1] == features:
    return x
  x = conv(features, 1, stride, dtype, "downsample_conv")(x)
  return batch_norm(train, dtype, "downsample_bn")(x)


class StochasticDepth(nn.Module):
  """Drops a residual branch per example with prob 1 - survival (Huang et al., 2016)."""
  survival: float

  @nn.compact
  def __call__(self, branch: jax.Array, train: bool) -> jax.Array:
    if not train or self.survival >= 1.0:
      return branch
    key = self.make_rng("dropout")
    keep = jax.random.bernoulli(key, self.survival, (branch.shape[0],) + (1,) * (branch.ndim - 1))
    return branch * keep.astype(branch.dtype) / self.survival


class BasicBlock(nn.Module):
  features: int
  stride: int = 1
  survival: float = 1.0
  zero_init_residual: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = conv(self.features, 3, self.stride, self.dtype, "conv1")(x)
    y = batch_norm(train, self.dtype, "bn1")(y, relu=True)
    y = conv(self.features, 3, 1, self.dtype, "conv2")(y)
    y = batch_norm(train, self.dtype, "bn2", self.zero_init_residual)(y)
    x = shortcut(x, self.features, self.stride, train, self.dtype)
    return nn.relu(x + StochasticDepth(self.survival)(y, train))


class Bottleneck(nn.Module):
  features: int  # the 3x3 conv's width; the block outputs 4x this
  stride: int = 1
  survival: float = 1.0
  zero_init_residual: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    out = self.features * 4
    y = conv(self.features, 1, 1, self.dtype, "conv1")(x)
    y = batch_norm(train, self.dtype, "bn1")(y, relu=True)
    y = conv(self.features, 3, self.stride, self.dtype, "conv2")(y)
    y = batch_norm(train, self.dtype, "bn2")(y, relu=True)
    y = conv(out, 1, 1, self.dtype, "conv3")(y)
    y = batch_norm(train, self.dtype, "bn3", self.zero_init_residual)(y)
    x = shortcut(x, out, self.stride, train, self.dtype)
    return nn.relu(x + StochasticDepth(self.survival)(y, train))


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

  Why hand-written: XLA's CPU backend runs the max-pool gradient (select_and_scatter) ~4x
  slower than this (ResNet stem, batch 32: 0.79 vs 0.19 CPU-s). The gradient goes to the
  first maximum of each window in row-major order, as select_and_scatter's (and PyTorch's)
  does; jnp.maximum's own gradient would split ties instead.
  [B, H, W, C] -> [B, ceil(H/2), ceil(W/2), C]
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


class Stem(nn.Module):
  """stage1: 7x7/2 conv + BN + ReLU + 3x3/2 max-pool, or the small-image 3x3/1 stem."""
  width: int
  small_image: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    if self.small_image:
      x = conv(self.width, 3, 1, self.dtype, "conv1")(x)
      return batch_norm(train, self.dtype, "bn1")(x, relu=True)
    x = conv(self.width, 7, 2, self.dtype, "conv1")(x)
    x = batch_norm(train, self.dtype, "bn1")(x, relu=True)
    return max_pool_3x3_s2(x)


class ResNetStage(nn.Module):
  """One stage of `blocks` residual blocks; the first may downsample."""
  depth: int
  features: int
  blocks: int
  stride: int
  survivals: Sequence[float]
  zero_init_residual: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    block = Bottleneck if is_bottleneck(self.depth) else BasicBlock
    for i in range(self.blocks):
      x = block(self.features, self.stride if i == 0 else 1, self.survivals[i],
                self.zero_init_residual, self.dtype, name=f"block{i + 1}")(x, train)
    return x


def block_survivals(depth: int, final_survival: float,
                    last_stage: int = 5) -> list[list[float]]:
  """Per-block survival of stages 2..`last_stage`, decaying linearly with block
  index so that the deepest block built survives with `final_survival`.

  The linear rule of Huang et al. (2016), as used by EfficientNet-style recipes
  whose 'survival 0.9' the paper's advanced recipe follows. In VT-ResNets
  (last_stage=4) the VT modules themselves are not dropped: stochastic depth
  regularises the convolutional blocks only.
  """
  sizes = STAGE_SIZES[depth][:last_stage - 1]
  total = sum(sizes)
  out, idx = [], 0
  for n in sizes:
    out.append([1.0 - (1.0 - final_survival) * (idx + i + 1) / total for i in range(n)])
    idx += n
  return out


class ResNetBackbone(nn.Module):
  """Stages 1..`last_stage` of a ResNet: [B, H, W, 3] -> [B, H/s, W/s, C]."""
  depth: int
  width: int = 64
  small_image_stem: bool = False
  last_stage: int = 5
  stochastic_depth_survival: float = 1.0
  zero_init_residual: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool, return_features: bool = False):
    check_depth(self.depth)
    x = Stem(self.width, self.small_image_stem, self.dtype, name="stage1")(x.astype(self.dtype),
                                                                            train)
    survivals = block_survivals(self.depth, self.stochastic_depth_survival, self.last_stage)
    features = {}
    for s in range(4):
      if s + 2 > self.last_stage:
        break
      x = ResNetStage(self.depth, self.width * 2**s, STAGE_SIZES[self.depth][s],
                      1 if s == 0 else 2, survivals[s], self.zero_init_residual, self.dtype,
                      name=f"stage{s + 2}")(x, train)
      features[f"stage{s + 2}"] = x
    return (x, features) if return_features else x


class Head(nn.Module):
  """Dropout + fully connected layer; logits in float32.

  zero_init: start from uniform predictions (big_vision's default for
  transformer heads); VT tokens leave un-normalised residual modules with a
  large scale, and a random head then starts at a loss of ~10, not ln(K).
  """
  num_classes: int
  dropout: float = 0.0
  zero_init: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, pooled: jax.Array, train: bool) -> jax.Array:
    pooled = nn.Dropout(self.dropout, deterministic=not train)(pooled)
    init = nn.initializers.zeros if self.zero_init else nn.linear.default_kernel_init
    return nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=init,
                    name="fc")(pooled).astype(jnp.float32)


class Classifier(nn.Module):
  """Fields shared by the image classifiers (ResNet, VT-ResNet); see config_lib.models."""
  depth: int
  num_classes: int = 1000
  width: int = 64
  small_image_stem: bool = False
  dropout: float = 0.0
  stochastic_depth_survival: float = 1.0
  zero_init_residual: bool = False
  zero_init_head: bool = False
  dtype: Dtype = jnp.float32

  def backbone(self, last_stage: int) -> "ResNetBackbone":
    return ResNetBackbone(self.depth, self.width, self.small_image_stem, last_stage,
                          self.stochastic_depth_survival, self.zero_init_residual, self.dtype,
                          name="backbone")

  def head(self) -> "Head":
    return Head(self.num_classes, self.dropout, self.zero_init_head, self.dtype, name="head")


class ResNet(Classifier):
  """torchvision ResNet: [B, H, W, 3] float -> logits [B, num_classes]."""

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    x = self.backbone(last_stage=5)(images, train)
    return self.head()(x.mean(axis=(1, 2)), train)
