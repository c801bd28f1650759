"""One VT module: tokenizer -> token interaction -> projector (Wu et al., section 3)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vt_jax.config_lib import models as model_configs
from vt_jax.models import vt

Dtype = Any


def make_tokenizer(cfg, first: bool, spatial_shape, dtype, name="tokenizer",
                   layers: str = "auto") -> nn.Module:
  """The tokenizer a module uses: cfg.tokenizer for the first, recurrent later."""
  common = dict(tokens=cfg.tokens, token_channels=cfg.token_channels,
                spatial_shape=tuple(spatial_shape), value_groups=cfg.value_groups,
                position_encoding=cfg.position_encoding, pe_grid=cfg.pe_grid,
                pe_channels=cfg.pe_channels, resize=cfg.resize, dtype=dtype, name=name,
                layers=layers, kernel_init=cfg.kernel_init)
  if first or not cfg.recurrent:
    if cfg.tokenizer not in vt.TOKENIZERS:
      raise ValueError(f"model.vt.tokenizer={cfg.tokenizer!r}; choose one of "
                       f"{sorted(vt.TOKENIZERS)}")
    if cfg.tokenizer == "clustering":
      common["iterations"] = cfg.clustering_iterations
    return vt.TOKENIZERS[cfg.tokenizer](variant=cfg.variant, **common)
  if cfg.variant == "v1":
    return vt.DynamicTokenizer(heads=cfg.tokenizer_heads, key_groups=cfg.key_groups,
                               steer_groups=cfg.steer_groups, **common)
  return vt.RecurrentTokenizer(variant=cfg.variant, steer_groups=cfg.steer_groups,
                               logits=cfg.recurrent_logits, **common)


def make_interaction(cfg, dtype, name="interaction", layers: str = "auto") -> nn.Module | None:
  if cfg.interaction == "transformer":
    return vt.TokenTransformer(
        heads=cfg.heads, variant=cfg.variant, qk_channels=cfg.qk_channels,
        qk_groups=cfg.qk_groups, value_groups=cfg.transformer_value_groups,
        ffn_hidden=cfg.ffn_hidden, ffn_groups=cfg.ffn_groups, dtype=dtype, name=name,
        layers=layers, kernel_init=cfg.kernel_init)
  if cfg.interaction == "graphconv":
    return vt.GraphConv(dtype=dtype, name=name)
  if cfg.interaction == "none":
    return None
  raise ValueError(f"model.vt.interaction={cfg.interaction!r}; choose one of "
                   f"{list(vt.INTERACTIONS)}")


class VTBlock(nn.Module):
  """[batch, H, W, C_in] (+ previous tokens) -> ([batch, H, W, C], tokens [batch, L, C_T]).

  One VT module (paper section 3): tokenizer, transformer, projector. In a flax model:

      x, t = VTBlock(tokens=16, token_channels=256, first=True)(x)
      x, t = VTBlock(tokens=16, token_channels=256, first=False)(x, t)

  Every `model.vt` field (vt_jax.config_lib.models documents each) is a keyword here; a
  field left at None takes `cfg`'s value when a `cfg` (the model.vt section) is given,
  else the paper's defaults (config_lib.models.vt_defaults: the iccv equations, 16 heads,
  single-group maps, feed-forward width C_T). `first` selects the static tokenizer;
  later modules use the recurrent one (`recurrent`) and take the previous module's tokens.
  `project=False` skips the projector: the feature map passes through unchanged (the
  ablation, and the last module of a classifier, whose feature map nothing reads).
  """
  cfg: Any = None  # ml_collections.(Frozen)ConfigDict: model.vt; None: the paper's defaults
  first: bool = True
  project: bool = True
  dtype: Dtype = jnp.float32
  layers: str = "auto"  # vt_jax.models.layers.FORMS
  # model.vt's fields (None: from cfg, or the defaults).
  variant: str | None = None
  channels: int | None = None
  tokens: int | None = None
  token_channels: int | None = None
  tokenizer: str | None = None
  clustering_iterations: int | None = None
  recurrent: bool | None = None
  recurrent_logits: str | None = None
  interaction: str | None = None
  projector: bool | None = None
  position_encoding: bool | None = None
  pe_grid: int | None = None
  pe_channels: int | None = None
  resize: str | None = None
  value_groups: int | None = None
  key_groups: int | None = None
  steer_groups: int | None = None
  tokenizer_heads: int | None = None
  heads: int | None = None
  qk_channels: int | None = None
  qk_groups: int | None = None
  transformer_value_groups: int | None = None
  ffn_hidden: int | None = None
  ffn_groups: int | None = None
  projector_heads: int | None = None
  query_groups: int | None = None
  kv_groups: int | None = None
  kernel_init: str | None = None

  def settings(self) -> ml_collections.FrozenConfigDict:
    """The model.vt fields this block uses: keywords over `cfg` over the defaults."""
    variant = self.variant or (self.cfg.variant if self.cfg is not None else "iccv")
    merged = model_configs.vt_defaults(variant)
    if self.cfg is not None:
      merged.update(self.cfg.to_dict())
    for field in merged:
      value = getattr(self, field, None)
      if value is not None:
        merged[field] = value
    return ml_collections.FrozenConfigDict(merged)

  @nn.compact
  def __call__(self, x: jax.Array, tokens: jax.Array | None = None):
    cfg = self.settings()
    b, h, w, c_in = x.shape
    c = cfg.channels or c_in
    recurrent = not self.first and cfg.recurrent
    if recurrent and tokens is None:
      raise ValueError("VTBlock(first=False) with a recurrent tokenizer needs the previous "
                       "block's tokens: call it as block(x, tokens)")
    if c_in != c:  # "1D and 2D convolutions fix the channel count between blocks"
      x = nn.Conv(c, (1, 1), dtype=self.dtype, name="adapt_channels",
                  kernel_init=vt.kernel_initializer(cfg.kernel_init))(x)
    flat = x.reshape(b, h * w, c)
    tokenizer = make_tokenizer(cfg, self.first, (h, w), self.dtype, layers=self.layers)
    tokens = tokenizer(flat, tokens) if recurrent else tokenizer(flat)
    interaction = make_interaction(cfg, self.dtype, layers=self.layers)
    if interaction is not None:
      tokens = interaction(tokens)
    if self.project and cfg.projector:
      flat = vt.Projector(heads=cfg.projector_heads, query_groups=cfg.query_groups,
                          kv_groups=cfg.kv_groups, dtype=self.dtype, layers=self.layers,
                          kernel_init=cfg.kernel_init, name="projector")(flat, tokens)
    return flat.reshape(b, h, w, c), tokens
