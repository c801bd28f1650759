"""Visual Transformer modules: tokenizers, token interaction, projector, VT block.

Shapes follow the paper's notation (Sec. 3): the feature map is
flattened to pixels, X: [batch, pixels, channels]; tokens T: [batch, tokens,
token_channels]. Parameters are float32; `dtype` is the compute dtype.
Softmaxes are evaluated in float32 whatever the compute dtype.

Each module sows what the analysis tools need into the `intermediates`
collection: `spatial_attention` [batch, pixels, tokens] (sums to 1 over
pixels; for the v1 dynamic tokenizer [batch, pixels, tokens/2], describing the
re-extracted output tokens L/2..L-1), `token_attention` [batch, heads, tokens,
tokens] and `projector_attention` [batch, heads, pixels, tokens].

Decisions where the paper is open (also in docs/paper_vs_vt_jax.md): the iccv transformer
and projector are multi-head (`model.vt.heads`, `projector_heads`; 1 gives the
single-head equations) and both scale logits by 1/sqrt(d_head); the iccv value
map goes C -> C_T directly (C -> C followed by the map to C_T
the transformer needs is the same linear function with more parameters); the
pooling tokenizer's A^T X counts as MACs like every tokenizer's A^T X (only
the position encoding's resize is interpolation).

Two descriptions of the method exist: `iccv` (the
published equations) and `v1` (the first arXiv version's pseudo-code). Where a
module differs between them it takes a `variant` field.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# The grouped 1x1 maps live with the other layer forms (model.layers); importable from here.
from vt_jax.models.layers import GroupedProjection, grouped_matmul, projection  # noqa: F401
from vt_jax.models.layers import attention_matmul, kernel_initializer, resolve

Dtype = Any

# Ops inside this named scope are interpolation, not multiply-accumulates in
# the paper's sense; the MAC counter (vt_jax/profile.py) skips them.
INTERPOLATE_SCOPE = "interpolate"


def split_heads(x: jax.Array, heads: int, field: str = "heads") -> jax.Array:
  """[batch, n, heads * d] -> [batch, heads, n, d]."""
  b, n, c = x.shape
  if c % heads:
    raise ValueError(f"model.vt.{field}={heads}: {c} channels do not split into {heads} heads")
  return x.reshape(b, n, heads, c // heads).transpose(0, 2, 1, 3)


def merge_heads(x: jax.Array) -> jax.Array:
  """[batch, heads, n, d] -> [batch, n, heads * d]."""
  b, h, n, d = x.shape
  return x.transpose(0, 2, 1, 3).reshape(b, n, h * d)


def softmax_f32(logits: jax.Array, axis: int) -> jax.Array:
  """Softmax in float32 or wider: bfloat16 logits are promoted, float64 ones stay float64."""
  return jax.nn.softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), axis=axis)


RESIZE_MODES = ("bilinear", "antialiased")


def _bilinear_matrix(size_in: int, size_out: int, mode: str = "bilinear") -> np.ndarray:
  """[size_out, size_in] weights of a 1-D linear resize (half-pixel centres); rows sum to 1.

  'bilinear': plain linear interpolation, PyTorch's F.interpolate(mode='bilinear',
  align_corners=False) -- what the paper's 2020 code does. Each output reads the two
  input samples around its centre, so a large downsample skips most inputs (14 -> 4
  reads 8 of 14 per axis).
  'antialiased': a triangle filter widened by the downsampling factor, so every input
  contributes (jax.image.resize(..., 'linear', antialias=True), PIL's BILINEAR).
  The two agree when upsampling.

  NumPy rather than jax.image.resize: the matrix is a static constant of the
  model and must not be traced.
  """
  if mode not in RESIZE_MODES:
    raise ValueError(f"model.vt.resize={mode!r}; choose one of {list(RESIZE_MODES)}")
  scale = size_out / size_in
  centres = (np.arange(size_out) + 0.5) / scale - 0.5
  if mode == "bilinear":
    # PyTorch clamps source coordinates below 0 to 0 (upsampling edges) and the upper
    # neighbour to the last sample.
    src = np.maximum(centres, 0.0)
    lo = np.minimum(np.floor(src).astype(np.int64), size_in - 1)
    hi = np.minimum(lo + 1, size_in - 1)
    frac = src - lo
    w = np.zeros((size_out, size_in), np.float64)
    np.add.at(w, (np.arange(size_out), lo), 1.0 - frac)
    np.add.at(w, (np.arange(size_out), hi), frac)
    return w.astype(np.float32)
  kernel_scale = max(1.0 / scale, 1.0)
  dist = np.abs(centres[:, None] - np.arange(size_in)[None, :]) / kernel_scale
  w = np.maximum(0.0, 1.0 - dist)
  return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def resize_matrix(in_hw: tuple[int, int], out_hw: tuple[int, int],
                  mode: str = "bilinear") -> np.ndarray:
  """[out_pixels, in_pixels] matrix of a separable resize (`mode`: RESIZE_MODES); rows sum to 1."""
  rows = _bilinear_matrix(in_hw[0], out_hw[0], mode)
  cols = _bilinear_matrix(in_hw[1], out_hw[1], mode)
  m = np.einsum("ai,bj->abij", rows, cols).reshape(out_hw[0] * out_hw[1], -1)
  return m / m.sum(axis=1, keepdims=True)


class PositionEncoding(nn.Module):
  """v1 position encoding P = downsample(A)^T W_{A->P}.

  Each token's attention over pixels is reshaped to the map (explicitly as
  [tokens, H, W]), resized to a fixed 2g x 2g grid (`resize`: RESIZE_MODES) so
  any input size works, reduced to g x g by one stride-2 3x3 conv shared by all tokens, then
  flattened and mapped linearly to `channels`.

  [batch, pixels, tokens] -> [batch, tokens, channels]
  """
  spatial_shape: tuple[int, int]
  grid: int = 7
  channels: int = 49
  dtype: Dtype = jnp.float32
  resize: str = "bilinear"
  kernel_init: str = "torch"  # layers.KERNEL_INITS

  @nn.compact
  def __call__(self, attention: jax.Array) -> jax.Array:
    b, n, l = attention.shape
    h, w = self.spatial_shape
    maps = attention.transpose(0, 2, 1).reshape(b * l, h * w)
    with jax.named_scope(INTERPOLATE_SCOPE):
      m = jnp.asarray(resize_matrix((h, w), (2 * self.grid, 2 * self.grid), self.resize))
      maps = jnp.einsum("pn,kn->kp", m, maps.astype(jnp.float32))
    maps = maps.reshape(b * l, 2 * self.grid, 2 * self.grid, 1).astype(self.dtype)
    init = kernel_initializer(self.kernel_init)
    maps = nn.Conv(1, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                   dtype=self.dtype, kernel_init=init, name="downsample")(maps)
    maps = maps.reshape(b, l, self.grid * self.grid)
    return nn.Dense(self.channels, dtype=self.dtype, kernel_init=init, name="to_channels")(maps)


class Tokenizer(nn.Module):
  """Fields and tail shared by every tokenizer.

  The tail maps pooled pixel features [batch, tokens, C] to tokens
  [batch, tokens, C_T]: v1 applies a (grouped) value map C -> C, concatenates
  the position encoding and maps C + C_p -> C_T with a 1x1 conv; iccv applies
  one value map C -> C_T and adds the (optional) encoding mapped to C_T.
  """
  tokens: int
  token_channels: int
  spatial_shape: tuple[int, int]
  variant: str = "iccv"
  value_groups: int = 1
  position_encoding: bool = False
  pe_grid: int = 7
  pe_channels: int = 49
  dtype: Dtype = jnp.float32
  resize: str = "bilinear"  # RESIZE_MODES: the pooling tokenizer's and the encoding's resize
  layers: str = "auto"  # form of its grouped maps (vt_jax.models.layers.FORMS)
  kernel_init: str = "torch"  # its linear maps' initialiser (vt_jax.models.layers.KERNEL_INITS)

  def init_fn(self):
    return kernel_initializer(self.kernel_init)

  def position(self, a: jax.Array) -> jax.Array:
    return PositionEncoding(self.spatial_shape, self.pe_grid, self.pe_channels, self.dtype,
                            resize=self.resize, kernel_init=self.kernel_init,
                            name="position")(a)

  def value_and_position(self, pooled: jax.Array, a: jax.Array) -> jax.Array:
    c = pooled.shape[-1]
    v1 = self.variant == "v1"
    t = projection(c if v1 else self.token_channels, self.value_groups, self.dtype,
                   "value", field="value_groups", kernel_init=self.init_fn())(pooled)
    if self.position_encoding:
      p = self.position(a).astype(t.dtype)
      if v1:
        t = jnp.concatenate([t, p], axis=-1)
      else:
        t = t + nn.Dense(self.token_channels, dtype=self.dtype, kernel_init=self.init_fn(),
                         name="position_to_tokens")(p)
    if v1:
      t = nn.Dense(self.token_channels, dtype=self.dtype, kernel_init=self.init_fn(),
                   name="to_tokens")(t)
    return t


class FilterTokenizer(Tokenizer):
  """Static tokenizer (Sec. 3.1.1, Eq. (1)): A = softmax_HW(X W_A), T = A^T (X W_V).

  A^T (X W_V) is evaluated as (A^T X) W_V: the same function (A's columns sum
  to 1, so even a bias passes through unchanged) at L/HW of the cost.
  v1: A is scaled by 1/sqrt(C) before the softmax.

  [batch, pixels, channels] -> [batch, tokens, token_channels]
  """

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    logits = nn.Dense(self.tokens, dtype=self.dtype, kernel_init=self.init_fn(),
                      name="attention")(x)
    if self.variant == "v1":
      logits = logits / math.sqrt(c)
    a = softmax_f32(logits, axis=1)  # over pixels
    self.sow("intermediates", "spatial_attention", a)
    pooled = jnp.einsum("bnl,bnc->blc", a.astype(self.dtype), x)
    return self.value_and_position(pooled, a)


class PoolingTokenizer(Tokenizer):
  """Ablation: tokens are the feature map resized to sqrt(L) x sqrt(L).

  `resize='bilinear'` (default) is the paper's plain bilinear interpolation: at
  14x14 -> 4x4 each token reads 4 pixels and 64 of the 196 are read at all;
  'antialiased' averages every pixel with triangle weights. Implemented as
  T = A^T X with A the (fixed) interpolation matrix so that the spatial
  attention is available to analysis like every other tokenizer's.
  """

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    side = math.isqrt(self.tokens)
    if side * side != self.tokens:
      raise ValueError(
          f"pooling tokenizer needs a square token count (model.vt.tokens); got {self.tokens}")
    m = resize_matrix(self.spatial_shape, (side, side), self.resize)  # [L, N]
    a = jnp.broadcast_to(jnp.asarray(m.T), (x.shape[0],) + m.T.shape)
    self.sow("intermediates", "spatial_attention", a)
    pooled = jnp.einsum("bnl,bnc->blc", a.astype(self.dtype), x)
    return self.value_and_position(pooled, a)


class ClusteringTokenizer(Tokenizer):
  """Ablation (appendix C): k-means over pixel features forms the L groups.

  Centroids start at the pixels of an evenly spaced ceil(sqrt(L)) x ceil(sqrt(L))
  grid (first L of them, row-major), take `iterations` hard k-means updates on
  L2-normalised features, then every pixel is assigned to its nearest centroid.
  "Nearest" is Euclidean distance to the centroids, which are cluster means and
  so shorter than unit length after an update: argmin |f - c|^2 = argmax
  (2 f.c - |c|^2) for unit f. (The plain dot product f.c would favour long
  centroids over near ones.)
  Assignments are not differentiable (stop_gradient); gradients reach X
  through the cluster means A^T X.
  """
  iterations: int = 3

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, n, _ = x.shape
    if self.tokens > n:
      raise ValueError(f"model.vt.tokens={self.tokens}: the clustering tokenizer needs at "
                       f"most one token per pixel ({n} pixels)")
    feats = jax.lax.stop_gradient(x.astype(jnp.float32))
    feats = feats / (jnp.linalg.norm(feats, axis=-1, keepdims=True) + 1e-6)
    h, w = self.spatial_shape
    side = math.ceil(math.sqrt(self.tokens))
    ys = np.linspace(0, h - 1, side).round().astype(np.int32)
    xs = np.linspace(0, w - 1, side).round().astype(np.int32)
    init = (ys[:, None] * w + xs[None, :]).reshape(-1)[:self.tokens]
    centroids = feats[:, init]  # [B, L, C]

    def assign(centroids):
      # -|f - c|^2 + |f|^2; |c|^2 is an elementwise sum, not a MAC (vt_jax/analytic.py).
      scores = 2.0 * jnp.einsum("bnc,blc->bnl", feats, centroids) - jnp.sum(
          centroids * centroids, axis=-1)[:, None, :]
      onehot = jax.nn.one_hot(jnp.argmax(scores, axis=-1), self.tokens)
      counts = onehot.sum(axis=1, keepdims=True)  # [B, 1, L]
      return onehot / jnp.maximum(counts, 1.0), counts

    for _ in range(self.iterations):
      a, counts = assign(centroids)
      new = jnp.einsum("bnl,bnc->blc", a, feats)
      # An empty cluster keeps its centroid instead of collapsing to zero.
      centroids = jnp.where(counts.transpose(0, 2, 1) > 0, new, centroids)
    a, counts = assign(centroids)
    # Empty clusters: average all pixels so that every column of A sums to 1.
    a = jnp.where(counts > 0, a, 1.0 / n)
    a = jax.lax.stop_gradient(a)
    self.sow("intermediates", "spatial_attention", a)
    pooled = jnp.einsum("bnl,bnc->blc", a.astype(self.dtype), x)
    return self.value_and_position(pooled, a)


RECURRENT_LOGITS = ("paper", "scaled", "normalized", "layernorm")


class RecurrentTokenizer(Tokenizer):
  """Tokenizer steered by the previous module's tokens (iccv form, Eq. 2).

  W_R = T_in W_{T->R};  T = softmax_HW(X W_R^T)^T X, then the value map to C_T.

  `logits` (model.vt.recurrent_logits) chooses how the logits X W_R^T are formed:
    'paper'       the literal Eq. 2, unscaled.
    'scaled'      X W_R^T / sqrt(C), a scaled dot product as in the transformer (Eq. 3).
    'normalized'  X W_hat^T with every row of W_R scaled to unit L2 norm.
    'layernorm'   W_R = LN(T_in) W_{T->R}: each steering token normalised to zero mean and
                  unit variance (no affine parameters) before the map.
  Why remedies: W_R inherits the size of the previous module's tokens, which grow through
  the residual transformer, so the unscaled logits span tens of units and every token's
  softmax over pixels is one-hot from initialisation (no gradient flows back through it).
  None of the remedies adds a multiply-accumulate (only elementwise ops and reductions) or
  a parameter.
  [batch, pixels, channels], [batch, tokens, token_channels] -> [batch, tokens, token_channels]
  """
  steer_groups: int = 1
  logits: str = "paper"

  @nn.compact
  def __call__(self, x: jax.Array, tokens_in: jax.Array) -> jax.Array:
    if self.logits not in RECURRENT_LOGITS:
      raise ValueError(f"model.vt.recurrent_logits={self.logits!r}; choose one of "
                       f"{list(RECURRENT_LOGITS)}")
    c = x.shape[-1]
    if self.logits == "layernorm":
      tokens_in = nn.LayerNorm(use_bias=False, use_scale=False, dtype=jnp.float32,
                               name="steer_norm")(tokens_in).astype(tokens_in.dtype)
    w_r = projection(c, self.steer_groups, self.dtype, "token_to_filter", use_bias=False,
                     field="steer_groups", kernel_init=self.init_fn())(tokens_in)  # [B, L, C]
    if self.logits == "normalized":
      w32 = w_r.astype(jnp.float32)
      w_r = w32 * jax.lax.rsqrt(jnp.sum(w32 * w32, axis=-1, keepdims=True) + 1e-12)
    logits = jnp.einsum("bnc,blc->bnl", x, w_r.astype(x.dtype))
    if self.logits == "scaled":
      logits = logits / math.sqrt(c)
    a = softmax_f32(logits, axis=1)
    self.sow("intermediates", "spatial_attention", a)
    pooled = jnp.einsum("bnl,bnc->blc", a.astype(self.dtype), x)
    return self.value_and_position(pooled, a)


class DynamicTokenizer(Tokenizer):
  """v1 recurrent ("dynamic") tokenizer: keep half the tokens, re-extract half.

  T_in = [T_a, T_b]; queries = T_a W_{T->R} (C_T -> C); keys = grouped 1x1 conv
  of X; per head coef_h = softmax_HW(K_h Q_h^T / sqrt(C/h)); new = coef^T V
  (V: the grouped value map of X); position encoding from coef averaged over
  heads; map to C_T; output concat(T_b, new), still L tokens.
  """
  variant: str = "v1"
  value_groups: int = 16
  position_encoding: bool = True
  heads: int = 16
  key_groups: int = 16
  steer_groups: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, tokens_in: jax.Array) -> jax.Array:
    if self.tokens % 2:
      raise ValueError(f"v1 dynamic tokenizer needs an even token count; got {self.tokens}")
    c = x.shape[-1]
    half = self.tokens // 2
    t_a, t_b = tokens_in[:, :half], tokens_in[:, half:]
    init = self.init_fn()
    q = split_heads(projection(c, self.steer_groups, self.dtype, "token_to_filter",
                               field="steer_groups", kernel_init=init)(t_a), self.heads,
                    "tokenizer_heads")
    k = split_heads(projection(c, self.key_groups, self.dtype, "key", field="key_groups",
                               kernel_init=init)(x), self.heads, "tokenizer_heads")
    v = split_heads(projection(c, self.value_groups, self.dtype, "value",
                               field="value_groups", kernel_init=init)(x), self.heads,
                    "tokenizer_heads")
    logits = jnp.einsum("bhnd,bhld->bhnl", k, q) / math.sqrt(c // self.heads)
    coef = softmax_f32(logits, axis=2)  # over pixels
    a = coef.mean(axis=1)  # [B, N, L/2]
    self.sow("intermediates", "spatial_attention", a)
    new = merge_heads(jnp.einsum("bhnl,bhnd->bhld", coef.astype(self.dtype), v))
    if self.position_encoding:
      new = jnp.concatenate([new, self.position(a).astype(new.dtype)], axis=-1)
    new = nn.Dense(self.token_channels, dtype=self.dtype, kernel_init=init, name="to_tokens")(new)
    return jnp.concatenate([t_b.astype(new.dtype), new], axis=1)


class TokenTransformer(nn.Module):
  """Self-attention among tokens followed by a feed-forward map (Sec. 3.2, Eqs. (3)-(4)).

  iccv:  T' = T + softmax_L((T K)(T Q)^T) T ;  T_out = T' + relu(T' F1) F2
         (values are the tokens themselves; heads split the channels).
  v1:    k, q = grouped 1x1 C_T -> qk_channels; v = grouped C_T -> C_T;
         T' = T + attention; T_out = T' + T' F (one linear map, no activation).
  Deviation from the v1 pseudo-code (docs/paper_vs_vt_jax.md): logits scaled by
  1/sqrt(d_head), not sqrt(L).

  [batch, tokens, C_T] -> [batch, tokens, C_T]; permutation-equivariant in tokens.
  """
  heads: int
  variant: str = "iccv"
  qk_channels: int | None = None  # None -> C_T
  qk_groups: int = 1
  value_groups: int = 1
  ffn_hidden: int | None = None  # iccv only; None -> C_T
  ffn_groups: int = 1
  dtype: Dtype = jnp.float32
  layers: str = "auto"  # form of its grouped maps (vt_jax.models.layers.FORMS)
  kernel_init: str = "torch"  # its linear maps' initialiser (vt_jax.models.layers.KERNEL_INITS)

  @nn.compact
  def __call__(self, t: jax.Array) -> jax.Array:
    ct = t.shape[-1]
    dqk = self.qk_channels or ct
    init = kernel_initializer(self.kernel_init)
    q = split_heads(projection(dqk, self.qk_groups, self.dtype, "query", field="qk_groups",
                               kernel_init=init)(t), self.heads)
    k = split_heads(projection(dqk, self.qk_groups, self.dtype, "key", field="qk_groups",
                               kernel_init=init)(t), self.heads)
    if self.variant == "v1":
      v = projection(ct, self.value_groups, self.dtype, "value",
                     field="transformer_value_groups", kernel_init=init)(t)
    else:
      v = t
    v = split_heads(v, self.heads)
    logits = jnp.einsum("bhid,bhjd->bhij", q, k) / math.sqrt(dqk // self.heads)
    w = softmax_f32(logits, axis=-1)  # over key tokens
    self.sow("intermediates", "token_attention", w)
    t = t + merge_heads(jnp.einsum("bhij,bhjd->bhid", w.astype(v.dtype), v))
    if self.variant == "v1":
      return t + projection(ct, self.ffn_groups, self.dtype, "ffn", field="ffn_groups",
                            kernel_init=init)(t)
    hidden = self.ffn_hidden or ct
    h = nn.relu(projection(hidden, self.ffn_groups, self.dtype, "ffn1", field="ffn_groups",
                           kernel_init=init)(t))
    return t + projection(ct, self.ffn_groups, self.dtype, "ffn2", field="ffn_groups",
                          kernel_init=init)(h)


class GraphConv(nn.Module):
  """Ablation: tokens mixed by a learned, input-independent L x L matrix.

  T_out = T + relu(W_graph T): the interaction weights are fixed after training
  (unlike attention), which is what the paper's GraphConv ablation isolates.
  """
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, t: jax.Array) -> jax.Array:
    l = t.shape[1]
    w = self.param("graph", nn.initializers.normal(1.0 / l), (l, l), jnp.float32)
    return t + nn.relu(jnp.einsum("ij,bjc->bic", w.astype(self.dtype), t))


class Projector(nn.Module):
  """X_out = X + softmax_L((X W_Q)(T W_K)^T) (T W_V), multi-head (Sec. 3.3, Eq. (5)).

  W_Q: grouped 1x1 conv C -> C (the v1 pseudo-code's C -> C_T only works when C = C_T);
  W_K, W_V: C_T -> C. Logits scaled by 1/sqrt(d_head) like the transformer.
  [batch, pixels, C], [batch, tokens, C_T] -> [batch, pixels, C]
  """
  heads: int
  query_groups: int = 1
  kv_groups: int = 1
  dtype: Dtype = jnp.float32
  layers: str = "auto"  # form of its grouped maps and attention products (layers.FORMS)
  kernel_init: str = "torch"  # its linear maps' initialiser (vt_jax.models.layers.KERNEL_INITS)

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
    c = x.shape[-1]
    init = kernel_initializer(self.kernel_init)
    k = projection(c, self.kv_groups, self.dtype, "key", field="kv_groups", kernel_init=init)(t)
    v = split_heads(projection(c, self.kv_groups, self.dtype, "value", field="kv_groups",
                               kernel_init=init)(t), self.heads, "projector_heads")
    if self.folds_query(c, x.shape[1], t.shape[1]):
      w_q, b_q = GroupedProjection(c, self.query_groups, "query_groups", kernel_init=init,
                                   name="query").blocks(c)
      x_, w_q, b_q, k = nn.dtypes.promote_dtype(x, w_q, b_q, k, dtype=self.dtype)
      logits = folded_query_logits(x_, w_q, b_q, k, self.heads,
                                   1 / math.sqrt(c // self.heads), self.layers)
    else:
      q = split_heads(projection(c, self.query_groups, self.dtype, "query",
                                 field="query_groups", kernel_init=init)(x), self.heads,
                      "projector_heads")
      kh = split_heads(k, self.heads, "projector_heads")
      logits = attention_matmul(q, jnp.swapaxes(kh, -1, -2), self.layers)  # bhnd,bhld->bhnl
      logits = logits / math.sqrt(c // self.heads)
    w = softmax_f32(logits, axis=-1)  # over tokens
    self.sow("intermediates", "projector_attention", w)
    return x + merge_heads(attention_matmul(w.astype(v.dtype), v, self.layers))  # bhnl,bhld->bhnd

  def folds_query(self, channels: int, pixels: int, tokens: int) -> bool:
    """Whether the logits fold W_Q into the keys (folded_query_logits): in the 'tuned' form,
    when every head reads whole query groups (query_groups a multiple of heads, > 1) and
    that saves MACs: the query map's pixels x C x C/groups against the folded keys'
    tokens x (C x C/groups + C)."""
    g, h = self.query_groups, self.heads
    return (resolve(self.layers) == "tuned" and g > 1 and g % h == 0 and channels % g == 0
            and pixels * (channels // g) > tokens * (channels // g + 1))


def folded_query_logits(x: jax.Array, w_q: jax.Array, b_q: jax.Array | None, k: jax.Array,
                        heads: int, scale: float, form: str = "auto") -> jax.Array:
  """The projector's logits ((x W_Q + b_Q) k^T) * scale per head, with W_Q folded into k.

  x [batch, pixels, C]; w_q [groups, C/groups, C/groups] (GroupedProjection.blocks); b_q [C];
  k [batch, tokens, C] -> [batch, heads, pixels, tokens].

  Head h's logits are sum over its channels o of q[n, o] k[l, o]; when the head's channels
  are whole query groups, q's channels in it read only the input channels of the same
  groups, so logits_h = x_h M_h + b_h k_h^T with M_h = W_Q,h k_h^T ([C/heads, tokens] per
  image) and x_h the head's C/heads input channels. Why: the same function (equal to
  float32 rounding), but each pixel costs C x tokens MACs instead of the query map's
  C x C/groups plus C x tokens (VT-R50: 8 tokens, 16 groups of 64: 9x fewer), and the
  query map was the slowest part of the VT modules on CPU (docs/performance.md). The
  paper's MACs (what vt_jax.profile counts, on the 'flax' form) include the query map.
  `form`: that of the pixels-by-keys product (layers.attention_matmul).
  """
  b, n, c = x.shape
  g = w_q.shape[0]
  kg = k.reshape(b, k.shape[1], g, c // g)                           # [B, L, g, C/g]
  m = jnp.einsum("gio,blgo->bgil", w_q, kg * scale)                   # [B, g, C/g, L]
  m = m.reshape(b, heads, c // heads, k.shape[1])                     # groups -> heads
  logits = attention_matmul(split_heads(x, heads, "projector_heads"), m, form)  # bhni,bhil->bhnl
  if b_q is None:
    return logits
  kh = k.reshape(b, k.shape[1], heads, c // heads)
  offset = jnp.einsum("ho,blho->bhl", b_q.reshape(heads, c // heads), kh * scale)
  return logits + offset[:, :, None, :]


TOKENIZERS = {
    "filter": FilterTokenizer,
    "pooling": PoolingTokenizer,
    "clustering": ClusteringTokenizer,
}
INTERACTIONS = ("transformer", "graphconv", "none")
