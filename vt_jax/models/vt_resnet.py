"""VT-ResNet (the paper's Sec. 4.1): ResNet stages 1-4, then VT modules as stage 5.

Stage 5 has as many VT modules as the ResNet's stage 5 had blocks (2 for R18,
3 otherwise). The first module tokenizes with cfg.tokenizer (filter by
default), later ones recurrently. The head averages the last module's tokens,
applies dropout and a dense layer. The last module's projector is not built:
its output feature map is read by nothing, so it would only add dead
parameters and MACs.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vt_jax.models import layers
from vt_jax.models import resnet
from vt_jax.models.vt_block import VTBlock

Dtype = Any


class VTStage(nn.Module):
  """[B, H, W, C] -> tokens [B, L, C_T] through `modules` VT blocks."""
  cfg: Any  # FrozenConfigDict model.vt
  modules: int
  dtype: Dtype = jnp.float32
  layers: str = "auto"  # vt_jax.models.layers.FORMS

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    tokens = None
    for i in range(self.modules):
      last = i == self.modules - 1
      x, tokens = VTBlock(self.cfg, first=i == 0, project=not last, dtype=self.dtype,
                          layers=self.layers, name=f"vt{i + 1}")(x, tokens)
    return tokens


class VTResNet(resnet.Classifier):
  """[B, H, W, 3] float -> logits [B, num_classes]."""
  vt: Any = None  # FrozenConfigDict: model.vt
  zero_init_head: bool = True

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    if self.vt is None:
      raise ValueError("VTResNet needs its VT config (model.vt)")
    x = self.backbone(last_stage=4)(images, train)
    if layers.resolve(self.layers) == "tuned":
      # Every VT module reads x several times (tokenizer, projector, residual). Read from
      # one buffer: otherwise XLA:CPU fuses stage 4's last BatchNorm, residual add and ReLU
      # into each reader (the projector's query transpose gathered from 28 tensors, 14 ms
      # instead of 2.4 in VT-R50's step). The anchor is a replicated parameter (see
      # layers.materialized).
      anchor = jax.tree_util.tree_leaves(self.variables["params"]["backbone"])[0]
      x = layers.materialized(x, anchor)
    modules = self.vt.modules or resnet.STAGE_SIZES[self.depth][3]
    tokens = VTStage(self.vt, modules, self.dtype, self.layers, name="stage5")(x)
    return self.head()(tokens.mean(axis=1), train)
