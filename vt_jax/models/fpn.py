"""Semantic segmentation: ResNet + FPN or VT-FPN + the Panoptic-FPN semantic head (ref. 2.2).

    FPN    [B, H, W, 3] -> logits [B, H, W, num_classes] (any H, W, odd ones included)

Module layout (what vt_jax.profile attributes MACs to):
  backbone/stage1..stage5   the ResNet of vt_jax.models.resnet (same parameter tree as the
                            classifiers' `backbone`, so ImageNet weights load by name)
  fpn                       FPN: 1x1 laterals + nearest top-down path + 3x3 output convs
                            (detectron2's `FPN`, P2-P5); or VT-FPN: per-level filter
                            tokenizers, one transformer over all levels' tokens, per-level
                            projectors, and (model.vt.top_down, the default) FPN's nearest
                            top-down path between the projected levels
  head                      detectron2's `SemSegFPNHead`: per level max(1, log2(stride) - 2)
                            [3x3 conv + GroupNorm + ReLU (+ 2x bilinear upsample while above
                            the finest level)], levels summed, 1x1 conv to the classes, bilinear
                            upsample to the input size

Levels are the outputs of stages 2-5 (strides 4, 8, 16, 32; with the small-image stem 1, 2, 4,
8). Sizes need not divide by 32: every upsample resizes to the exact size of the level it
joins (detectron2 instead pads inputs to a multiple of 32), and the last one to the input.
Interpolation runs in vt.INTERPOLATE_SCOPE: it is not counted as MACs.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vt_jax.models import resnet
from vt_jax.models import vt

Dtype = Any
LEVELS = ("stage2", "stage3", "stage4", "stage5")


def resize(x: jax.Array, hw: tuple[int, int], method: str) -> jax.Array:
  """[B, h, w, C] -> [B, *hw, C]; 'bilinear' uses half-pixel centres (align_corners=False)."""
  if x.shape[1:3] == tuple(hw):
    return x
  with jax.named_scope(vt.INTERPOLATE_SCOPE):
    return jax.image.resize(x, (x.shape[0], *hw, x.shape[3]), method=method)


INITS = ("msra", "detectron2")
# The tokenizers' and transformer's kernels: flax's default (LeCun normal), the form VT-FPN was
# measured with against FPN (docs/segmentation.md). VT-ResNets default to PyTorch's
# (model.vt.kernel_init, vt_jax.models.layers.KERNEL_INITS); VT-FPN was not re-measured with it.
VT_KERNEL_INIT = "flax"
# detectron2's c2_msra_fill (kaiming_normal_, mode='fan_out'; jax's 'normal' is untruncated),
# which it uses for the semantic head's convs and predictor. 'msra' (vt_jax's first form)
# uses it for every conv.
MSRA_FILL = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# detectron2's c2_xavier_fill (kaiming_uniform_ with a=1: uniform, variance 1/fan_in), which
# it uses for the FPN's lateral and output convs.
XAVIER_FILL = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")


def _conv(features: int, kernel: int, dtype: Dtype, name: str, use_bias: bool = True,
          kernel_init=MSRA_FILL):
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), padding=((pad, pad), (pad, pad)),
                 use_bias=use_bias, dtype=dtype, name=name, kernel_init=kernel_init)


def check_init(init: str) -> None:
  if init not in INITS:
    raise ValueError(f"model.init_scheme={init!r}; choose one of {list(INITS)}")


def neck_init(init: str):
  """Kernel init of the FPN's (or VT-FPN's) per-pixel maps: model.init_scheme (INITS).

  'msra': c2_msra_fill, He normal over the fan-out (vt_jax's first form); 'detectron2':
  c2_xavier_fill, as detectron2's FPN.
  """
  check_init(init)
  return XAVIER_FILL if init == "detectron2" else MSRA_FILL


class FPNNeck(nn.Module):
  """detectron2's FPN (P2-P5, no P6): laterals, top-down nearest upsampling, output convs.

  features {stage2..stage5: [B, h_i, w_i, C_i]} -> list of 4 maps [B, h_i, w_i, channels].
  """
  channels: int = 256
  dtype: Dtype = jnp.float32
  init_scheme: str = "msra"  # INITS: the laterals' and output convs' init

  @nn.compact
  def __call__(self, features: dict) -> list[jax.Array]:
    kinit = neck_init(self.init_scheme)
    outputs, prev = [], None
    for i in reversed(range(len(LEVELS))):
      x = _conv(self.channels, 1, self.dtype, f"lateral{i + 2}",
                kernel_init=kinit)(features[LEVELS[i]])
      if prev is not None:
        x = x + resize(prev, x.shape[1:3], "nearest")
      prev = x
      outputs.insert(0, _conv(self.channels, 3, self.dtype, f"output{i + 2}",
                              kernel_init=kinit)(x))
    return outputs


class LevelProjector(nn.Module):
  """Projects a level's tokens onto its feature map and sets its width for the head.

    Q = X W_Q (C_i -> C),  out = Q + softmax_L(Q (T W_K)^T / sqrt(d)) (T W_V),  multi-head.

  vt.Projector with two changes the FPN needs: the map's width changes from the backbone's
  C_i to the head's C, so the query map takes the role of FPN's lateral conv and the
  residual adds to the query instead of X (vt.Projector maps C -> C and adds X). This is the
  only per-pixel map of VT-FPN and is what lands on Table 9's 8.5 GMACs at 800x1216; a
  lateral conv followed by a C -> C projector would cost 13.6 G.
  `zero_init_value`: W_V starts at zero, so at initialisation out = Q and VT-FPN starts as
  FPN's laterals feeding the head; the token term grows as training needs it.
  `query_init`: the kernel init of W_Q (the lateral's role).
  [B, n, C_i], [B, L, C_T] -> [B, n, C]
  """
  features: int
  heads: int
  dtype: Dtype = jnp.float32
  zero_init_value: bool = False
  query_init: Any = nn.linear.default_kernel_init

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
    c = self.features
    q = nn.Dense(c, dtype=self.dtype, kernel_init=self.query_init, name="query")(x)
    k = vt.split_heads(nn.Dense(c, dtype=self.dtype, name="key")(t), self.heads,
                       "projector_heads")
    value_init = (nn.initializers.zeros_init() if self.zero_init_value
                  else nn.linear.default_kernel_init)
    v = vt.split_heads(nn.Dense(c, dtype=self.dtype, kernel_init=value_init,
                                name="value")(t), self.heads, "projector_heads")
    qh = vt.split_heads(q, self.heads, "projector_heads")
    w = vt.softmax_f32(jnp.einsum("bhnd,bhld->bhnl", qh, k) / math.sqrt(c // self.heads), -1)
    self.sow("intermediates", "projector_attention", w)
    return q + vt.merge_heads(jnp.einsum("bhnl,bhld->bhnd", w.astype(v.dtype), v))


class VTFPNNeck(nn.Module):
  """VT-FPN (the paper's Sec. 4.2): tokens from every level, one transformer, per-level projectors.

  features {stage2..stage5} -> list of 4 maps [B, h_i, w_i, channels]. cfg: model.vt
  (tokens, token_channels, heads, ffn_hidden, projector_heads, variant, top_down,
  zero_init_value).

  `cfg.top_down`: FPN's top-down pathway between the levels, coarsest first: each level's
  projector output plus the next coarser level's output upsampled (nearest) to its size.
  It adds no multiply-accumulate and no parameter: the paper replaces FPN's convolutions
  with VT modules, and this pathway is not a convolution. Without it (the first form) a fine
  level sees coarse evidence only through the tokens.
  """
  cfg: Any
  channels: int = 256
  dtype: Dtype = jnp.float32
  init_scheme: str = "msra"  # INITS: 'detectron2' gives the projectors' W_Q c2_xavier_fill

  @nn.compact
  def __call__(self, features: dict) -> list[jax.Array]:
    cfg = self.cfg
    flats, tokens = [], []
    for i, level in enumerate(LEVELS):
      x = features[level]
      b, h, w, c = x.shape
      flats.append(x.reshape(b, h * w, c))
      tokens.append(vt.FilterTokenizer(
          tokens=cfg.tokens, token_channels=cfg.token_channels, spatial_shape=(h, w),
          variant=cfg.variant, dtype=self.dtype, kernel_init=VT_KERNEL_INIT,
          name=f"tokenizer{i + 2}")(flats[-1]))
    # One transformer over all levels' tokens: the levels exchange information here (FPN's
    # top-down path does it with upsampling).
    t = vt.TokenTransformer(heads=cfg.heads, variant=cfg.variant, ffn_hidden=cfg.ffn_hidden,
                            dtype=self.dtype, kernel_init=VT_KERNEL_INIT,
                            name="transformer")(jnp.concatenate(tokens, 1))
    check_init(self.init_scheme)
    query_init = (XAVIER_FILL if self.init_scheme == "detectron2"
                  else nn.linear.default_kernel_init)
    outputs = []
    for i, level in enumerate(LEVELS):
      b, h, w, _ = features[level].shape
      t_i = t[:, i * cfg.tokens:(i + 1) * cfg.tokens]
      y = LevelProjector(self.channels, cfg.projector_heads, self.dtype,
                         zero_init_value=cfg.zero_init_value, query_init=query_init,
                         name=f"projector{i + 2}")(flats[i], t_i)
      outputs.append(y.reshape(b, h, w, self.channels))
    if cfg.top_down:
      for i in reversed(range(len(outputs) - 1)):
        outputs[i] = outputs[i] + resize(outputs[i + 1], outputs[i].shape[1:3], "nearest")
    return outputs


class SemSegHead(nn.Module):
  """detectron2's SemSegFPNHead on 4 levels (finest first) -> logits at the finest level.

  Level i (scale 2^i of the finest) gets max(1, i) [3x3 conv + GroupNorm + ReLU] stages,
  each followed by a 2x bilinear upsample while the level is coarser than the finest.
  """
  num_classes: int
  channels: int = 128
  norm_groups: int = 32
  dtype: Dtype = jnp.float32
  init_scheme: str = "msra"  # INITS: the convs' and the predictor's init

  @nn.compact
  def __call__(self, levels: list[jax.Array]) -> jax.Array:
    check_init(self.init_scheme)
    conv_init = MSRA_FILL  # both schemes: detectron2's head convs use c2_msra_fill
    finest = levels[0].shape[1:3]
    total = 0.0
    for i, x in enumerate(levels):
      for j in range(max(1, i)):
        x = _conv(self.channels, 3, self.dtype, f"level{i + 2}_conv{j + 1}", use_bias=False,
                  kernel_init=conv_init)(x)
        x = nn.GroupNorm(self.norm_groups, epsilon=1e-5, dtype=self.dtype,
                         name=f"level{i + 2}_norm{j + 1}")(x)
        x = nn.relu(x)
        if i > 0:  # 2x, or exactly the next finer level's size when sizes are odd
          target = levels[i - j - 1].shape[1:3]
          x = resize(x, target, "bilinear")
      total = total + x
    assert total.shape[1:3] == finest
    # 1x1 conv to the classes: 'detectron2' initialises it with c2_msra_fill as detectron2
    # does; 'msra' (the first form) with flax's default LeCun normal.
    kinit = MSRA_FILL if self.init_scheme == "detectron2" else nn.linear.default_kernel_init
    return nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, kernel_init=kinit,
                   name="predictor")(total)


class FPN(nn.Module):
  """ResNet + FPN (or VT-FPN when `vt` is set) + semantic head: [B, H, W, 3] -> [B, H, W, K].

  Fields: see vt_jax.config_lib.models.fpn.
  """
  depth: int
  num_classes: int
  width: int = 64
  small_image_stem: bool = False
  fpn_channels: int = 256
  head_channels: int = 128
  head_norm_groups: int = 32
  stochastic_depth_survival: float = 1.0
  zero_init_residual: bool = False
  vt: Any = None  # FrozenConfigDict model.vt: VT-FPN; None: FPN
  dtype: Dtype = jnp.float32
  init_scheme: str = "msra"  # INITS: FPN/VT-FPN per-pixel maps and the predictor
  layers: str = "auto"  # the backbone's layer forms (vt_jax.models.layers.FORMS)

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    _, features = resnet.ResNetBackbone(
        self.depth, self.width, self.small_image_stem, 5, self.stochastic_depth_survival,
        self.zero_init_residual, self.dtype, self.layers, name="backbone")(
            images, train, return_features=True)
    if self.vt is None:
      levels = FPNNeck(self.fpn_channels, self.dtype, self.init_scheme,
                       name="fpn")(features)
    else:
      levels = VTFPNNeck(self.vt, self.fpn_channels, self.dtype, self.init_scheme,
                         name="fpn")(features)
    logits = SemSegHead(self.num_classes, self.head_channels, self.head_norm_groups,
                        self.dtype, self.init_scheme, name="head")(levels)
    return resize(logits.astype(jnp.float32), images.shape[1:3], "bilinear")
