"""ResNet-18/34/50/101 in torchvision's layout (stride on the 3x3 conv of bottlenecks).

Stage names follow the paper's Table 1: stage1 = stem (7x7 conv, BN, ReLU,
max-pool), stage2..stage5 = torchvision's layer1..layer4, head = average pool
and fully connected. Convolutions, BatchNorms and the max-pool come from
vt_jax.models.layers in the form the `layers` field (`model.layers`) selects.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vt_jax.models import layers as layers_lib

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


def shortcut(x: jax.Array, features: int, stride: int, train: bool, dtype: Dtype,
             layers: str) -> jax.Array:
  """The residual path: identity, or a strided 1x1 conv + BN when the shape changes.

  Called inside a block's compact __call__, so its layers belong to the block
  (torchvision's `downsample.0` / `downsample.1`).
  """
  if stride == 1 and x.shape[-1] == features:
    return x
  x = layers_lib.conv(features, 1, stride, dtype, "downsample_conv", layers)(x)
  return layers_lib.batch_norm(x, train, dtype, "downsample_bn", layers)


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
  layers: str = "auto"  # vt_jax.models.layers.FORMS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    conv = lambda f, k, s, name: layers_lib.conv(f, k, s, self.dtype, name, self.layers)
    bn = lambda y, name, **kw: layers_lib.batch_norm(y, train, self.dtype, name, self.layers,
                                                     **kw)
    y = bn(conv(self.features, 3, self.stride, "conv1")(x), "bn1", relu=True)
    y = conv(self.features, 3, 1, "conv2")(y)
    y = bn(y, "bn2", zero_init=self.zero_init_residual)
    x = shortcut(x, self.features, self.stride, train, self.dtype, self.layers)
    return nn.relu(x + StochasticDepth(self.survival)(y, train))


class Bottleneck(nn.Module):
  features: int  # the 3x3 conv's width; the block outputs 4x this
  stride: int = 1
  survival: float = 1.0
  zero_init_residual: bool = False
  dtype: Dtype = jnp.float32
  layers: str = "auto"  # vt_jax.models.layers.FORMS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    out = self.features * 4
    conv = lambda f, k, s, name: layers_lib.conv(f, k, s, self.dtype, name, self.layers)
    bn = lambda y, name, **kw: layers_lib.batch_norm(y, train, self.dtype, name, self.layers,
                                                     **kw)
    y = bn(conv(self.features, 1, 1, "conv1")(x), "bn1", relu=True)
    y = bn(conv(self.features, 3, self.stride, "conv2")(y), "bn2", relu=True)
    y = bn(conv(out, 1, 1, "conv3")(y), "bn3", zero_init=self.zero_init_residual)
    x = shortcut(x, out, self.stride, train, self.dtype, self.layers)
    return nn.relu(x + StochasticDepth(self.survival)(y, train))


class Stem(nn.Module):
  """stage1: 7x7/2 conv + BN + ReLU + 3x3/2 max-pool, or the small-image 3x3/1 stem."""
  width: int
  small_image: bool = False
  dtype: Dtype = jnp.float32
  layers: str = "auto"  # vt_jax.models.layers.FORMS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    kernel, stride = (3, 1) if self.small_image else (7, 2)
    x = layers_lib.conv(self.width, kernel, stride, self.dtype, "conv1", self.layers)(x)
    x = layers_lib.batch_norm(x, train, self.dtype, "bn1", self.layers, relu=True)
    return x if self.small_image else layers_lib.max_pool(x, self.layers)


class ResNetStage(nn.Module):
  """One stage of `blocks` residual blocks; the first may downsample."""
  depth: int
  features: int
  blocks: int
  stride: int
  survivals: Sequence[float]
  zero_init_residual: bool = False
  dtype: Dtype = jnp.float32
  layers: str = "auto"  # vt_jax.models.layers.FORMS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    block = Bottleneck if is_bottleneck(self.depth) else BasicBlock
    for i in range(self.blocks):
      x = block(self.features, self.stride if i == 0 else 1, self.survivals[i],
                self.zero_init_residual, self.dtype, self.layers,
                name=f"block{i + 1}")(x, train)
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
  layers: str = "auto"  # vt_jax.models.layers.FORMS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool, return_features: bool = False):
    check_depth(self.depth)
    x = Stem(self.width, self.small_image_stem, self.dtype, self.layers,
             name="stage1")(x.astype(self.dtype), train)
    survivals = block_survivals(self.depth, self.stochastic_depth_survival, self.last_stage)
    features = {}
    for s in range(4):
      if s + 2 > self.last_stage:
        break
      x = ResNetStage(self.depth, self.width * 2**s, STAGE_SIZES[self.depth][s],
                      1 if s == 0 else 2, survivals[s], self.zero_init_residual, self.dtype,
                      self.layers, name=f"stage{s + 2}")(x, train)
      features[f"stage{s + 2}"] = x
    return (x, features) if return_features else x


class Head(nn.Module):
  """Dropout + fully connected layer; logits in float32 (float64 when computing in it).

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
                    name="fc")(pooled).astype(jnp.promote_types(self.dtype, jnp.float32))


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
  layers: str = "auto"  # vt_jax.models.layers.FORMS

  def backbone(self, last_stage: int) -> "ResNetBackbone":
    return ResNetBackbone(self.depth, self.width, self.small_image_stem, last_stage,
                          self.stochastic_depth_survival, self.zero_init_residual, self.dtype,
                          self.layers, name="backbone")

  def head(self) -> "Head":
    return Head(self.num_classes, self.dropout, self.zero_init_head, self.dtype, name="head")


class ResNet(Classifier):
  """torchvision ResNet: [B, H, W, 3] float -> logits [B, num_classes]."""

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    x = self.backbone(last_stage=5)(images, train)
    return self.head()(x.mean(axis=(1, 2)), train)
