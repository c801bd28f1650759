"""One VT module: tokenizer -> token interaction -> projector (reference section 1)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vt_jax.models import vt

Dtype = Any


def make_tokenizer(cfg, first: bool, spatial_shape, dtype, name="tokenizer") -> nn.Module:
  """The tokenizer a module uses: cfg.tokenizer for the first, recurrent later."""
  common = dict(tokens=cfg.tokens, token_channels=cfg.token_channels,
                spatial_shape=tuple(spatial_shape), value_groups=cfg.value_groups,
                position_encoding=cfg.position_encoding, pe_grid=cfg.pe_grid,
                pe_channels=cfg.pe_channels, resize=cfg.resize, dtype=dtype, name=name)
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


def make_interaction(cfg, dtype, name="interaction") -> nn.Module | None:
  if cfg.interaction == "transformer":
    return vt.TokenTransformer(
        heads=cfg.heads, variant=cfg.variant, qk_channels=cfg.qk_channels,
        qk_groups=cfg.qk_groups, value_groups=cfg.transformer_value_groups,
        ffn_hidden=cfg.ffn_hidden, ffn_groups=cfg.ffn_groups, dtype=dtype, name=name)
  if cfg.interaction == "graphconv":
    return vt.GraphConv(dtype=dtype, name=name)
  if cfg.interaction == "none":
    return None
  raise ValueError(f"model.vt.interaction={cfg.interaction!r}; choose one of "
                   f"{list(vt.INTERACTIONS)}")


class VTBlock(nn.Module):
  """[batch, H, W, C_in] (+ previous tokens) -> ([batch, H, W, C], tokens [batch, L, C_T]).

  `first` selects the static tokenizer; later modules use the recurrent one
  (cfg.recurrent). `project=False` skips the projector: the feature map passes
  through unchanged (the ablation, and the last module of a classifier, whose
  feature map nothing reads).
  """
  cfg: Any  # ml_collections.FrozenConfigDict: model.vt
  first: bool
  project: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, tokens: jax.Array | None = None):
    cfg = self.cfg
    b, h, w, c_in = x.shape
    c = cfg.channels or c_in
    if c_in != c:  # "1D and 2D convolutions fix the channel count between blocks"
      x = nn.Conv(c, (1, 1), dtype=self.dtype, name="adapt_channels")(x)
    flat = x.reshape(b, h * w, c)
    tokenizer = make_tokenizer(cfg, self.first, (h, w), self.dtype)
    tokens = tokenizer(flat) if (self.first or not cfg.recurrent) else tokenizer(flat, tokens)
    interaction = make_interaction(cfg, self.dtype)
    if interaction is not None:
      tokens = interaction(tokens)
    if self.project and cfg.projector:
      flat = vt.Projector(heads=cfg.projector_heads, query_groups=cfg.query_groups,
                          kv_groups=cfg.kv_groups, dtype=self.dtype, name="projector")(
                              flat, tokens)
    return flat.reshape(b, h, w, c), tokens
