"""Closed-form MACs and parameters per stage, from the model config alone.

An independent check of vt_jax.profile (which traces the real model): the two
must agree exactly, so a change to a module that is not mirrored here (or the
other way round) fails a test. It is also fast enough to search the widths the
paper leaves open (vt_jax/config_lib/presets.py).
"""

from __future__ import annotations

from collections import Counter

from vt_jax.models.resnet import STAGE_SIZES, is_bottleneck


def _out(size: int, kernel: int, stride: int) -> int:
  pad = kernel // 2
  return (size + 2 * pad - kernel) // stride + 1


class _Tally:
  """MACs and params of one stage."""

  def __init__(self):
    self.macs = 0
    self.params = 0

  def linear(self, rows: int, fan_in: int, fan_out: int, groups: int = 1, bias: bool = True):
    self.macs += rows * fan_in * fan_out // groups
    self.params += fan_in * fan_out // groups + (fan_out if bias else 0)

  def conv(self, hw: int, k: int, cin: int, cout: int, groups: int = 1, bias: bool = False):
    self.linear(hw, k * k * cin, cout, groups, bias)

  def bn(self, c: int):
    self.params += 2 * c

  def matmul(self, macs: int):
    self.macs += macs


def _resnet_stages(depth: int, width: int, small_stem: bool, res, last: int, out: dict,
                   levels: dict | None = None):
  """Stages 1..last into `out`; res int or (h, w). levels[stage] = (pixels, channels)."""
  h, w = (res, res) if isinstance(res, int) else res
  s = out["stage1"]
  if small_stem:
    s.conv(h * w, 3, 3, width)
  else:
    h, w = _out(h, 7, 2), _out(w, 7, 2)
    s.conv(h * w, 7, 3, width)
    h, w = _out(h, 3, 2), _out(w, 3, 2)
  s.bn(width)
  cin = width
  for i, blocks in enumerate(STAGE_SIZES[depth]):
    if i + 2 > last:
      break
    t = out[f"stage{i + 2}"]
    f = width * 2**i
    cout = f * 4 if is_bottleneck(depth) else f
    for b in range(blocks):
      stride = 2 if (i > 0 and b == 0) else 1
      n_in = h * w
      h, w = _out(h, 3, stride), _out(w, 3, stride)
      if is_bottleneck(depth):
        t.conv(n_in, 1, cin, f); t.bn(f)
        t.conv(h * w, 3, f, f); t.bn(f)
        t.conv(h * w, 1, f, cout); t.bn(cout)
      else:
        t.conv(h * w, 3, cin, f); t.bn(f)
        t.conv(h * w, 3, f, f); t.bn(f)
      if stride != 1 or cin != cout:
        t.conv(h * w, 1, cin, cout); t.bn(cout)
      cin = cout
    if levels is not None:
      levels[f"stage{i + 2}"] = (h * w, cout)
  return h * w, cin


def _value_tail(t: _Tally, v, rows: int, c: int):
  """Value map, optional position encoding, map to C_T, for `rows` tokens."""
  g = v.pe_grid
  if v.variant == "v1":
    t.linear(rows, c, c, v.value_groups)
    extra = 0
    if v.position_encoding:
      t.conv(rows * g * g, 3, 1, 1, bias=True)
      t.linear(rows, g * g, v.pe_channels)
      extra = v.pe_channels
    t.linear(rows, c + extra, v.token_channels)
    return
  t.linear(rows, c, v.token_channels, v.value_groups)
  if v.position_encoding:
    t.conv(rows * g * g, 3, 1, 1, bias=True)
    t.linear(rows, g * g, v.pe_channels)
    t.linear(rows, v.pe_channels, v.token_channels)


def _vt_block(t: _Tally, v, first: bool, project: bool, n: int, c_in: int):
  c = v.channels or c_in
  ct, l = v.token_channels, v.tokens
  if c_in != c:
    t.conv(n, 1, c_in, c, bias=True)
  if first or not v.recurrent:
    if v.tokenizer == "filter":
      t.linear(n, c, l)
    elif v.tokenizer == "clustering":
      # each update: scores + cluster means; then a final assignment.
      t.matmul(v.clustering_iterations * 2 * n * l * c + n * l * c)
    t.matmul(l * n * c)  # pooled tokens A^T X
    _value_tail(t, v, l, c)
  elif v.variant == "v1":
    half = l // 2
    t.linear(half, ct, c, v.steer_groups)
    t.linear(n, c, c, v.key_groups)
    t.linear(n, c, c, v.value_groups)
    t.matmul(2 * n * half * c)  # logits and new tokens
    g = v.pe_grid
    extra = 0
    if v.position_encoding:
      t.conv(half * g * g, 3, 1, 1, bias=True)
      t.linear(half, g * g, v.pe_channels)
      extra = v.pe_channels
    t.linear(half, c + extra, ct)
  else:
    t.linear(l, ct, c, v.steer_groups, bias=False)
    t.matmul(2 * n * l * c)  # logits X W_R^T and pooled A^T X
    _value_tail(t, v, l, c)
  if v.interaction == "transformer":
    dqk = v.qk_channels or ct
    t.linear(l, ct, dqk, v.qk_groups)
    t.linear(l, ct, dqk, v.qk_groups)
    if v.variant == "v1":
      t.linear(l, ct, ct, v.transformer_value_groups)
    t.matmul(l * l * dqk + l * l * ct)
    if v.variant == "v1":
      t.linear(l, ct, ct, v.ffn_groups)
    else:
      hidden = v.ffn_hidden or ct
      t.linear(l, ct, hidden, v.ffn_groups)
      t.linear(l, hidden, ct, v.ffn_groups)
  elif v.interaction == "graphconv":
    t.params += l * l
    t.matmul(l * l * ct)
  if project and v.projector:
    t.linear(n, c, c, v.query_groups)
    t.linear(l, ct, c, v.kv_groups)
    t.linear(l, ct, c, v.kv_groups)
    t.matmul(2 * n * l * c)
  return c


def count(model_config, resolution: int = 224) -> dict:
  """{'macs', 'params', 'stages': {stage: {'macs', 'params'}}} like vt_jax.profile."""
  m = model_config
  stages = {s: _Tally() for s in ("stage1", "stage2", "stage3", "stage4", "stage5", "head")}
  if m.name in ("fpn", "vt_fpn"):
    return _segmentation(m, resolution)
  vt_model = m.name == "vt_resnet"
  n, c = _resnet_stages(m.depth, m.width, m.small_image_stem, resolution, 4 if vt_model else 5,
                        stages)
  if vt_model:
    modules = m.vt.modules or STAGE_SIZES[m.depth][3]
    for i in range(modules):
      c = _vt_block(stages["stage5"], m.vt, i == 0, i < modules - 1, n, c)
    c = m.vt.token_channels
  stages["head"].linear(1, c, m.num_classes)
  return _result(stages)


def _result(stages: dict) -> dict:
  result = {s: {"macs": t.macs, "params": t.params} for s, t in stages.items()}
  total = Counter()
  for v in result.values():
    total.update(v)
  return {"macs": total["macs"], "params": total["params"], "stages": result}


def _filter_tokens(t: _Tally, v, n: int, c: int):
  """vt.FilterTokenizer on n pixels of c channels (no position encoding)."""
  l, ct = v.tokens, v.token_channels
  t.linear(n, c, l)          # attention logits
  t.matmul(l * n * c)        # pooled A^T X
  if v.variant == "v1":
    t.linear(l, c, c)        # value C -> C, then to tokens
    t.linear(l, c, ct)
  else:
    t.linear(l, c, ct)       # value C -> C_T


def _token_transformer(t: _Tally, v, l: int):
  """vt.TokenTransformer on l tokens with default groups and qk_channels."""
  ct = v.token_channels
  t.linear(l, ct, ct)
  t.linear(l, ct, ct)
  if v.variant == "v1":
    t.linear(l, ct, ct)      # value map
  t.matmul(2 * l * l * ct)   # logits and weighted sum
  if v.variant == "v1":
    t.linear(l, ct, ct)
  else:
    hidden = v.ffn_hidden or ct
    t.linear(l, ct, hidden)
    t.linear(l, hidden, ct)


def _segmentation(m, resolution) -> dict:
  """fpn / vt_fpn (vt_jax.models.fpn): backbone, FPN or VT-FPN, semantic head."""
  stages = {s: _Tally() for s in ("stage1", "stage2", "stage3", "stage4", "stage5", "fpn",
                                  "head")}
  levels = {}
  _resnet_stages(m.depth, m.width, m.small_image_stem, resolution, 5, stages, levels)
  sizes = [levels[f"stage{i}"] for i in range(2, 6)]  # (pixels, channels), finest first
  f, neck = m.fpn_channels, stages["fpn"]
  if m.name == "fpn":
    for n, c in sizes:
      neck.conv(n, 1, c, f, bias=True)   # lateral
      neck.conv(n, 3, f, f, bias=True)   # output
  else:
    v = m.vt
    for n, c in sizes:
      _filter_tokens(neck, v, n, c)
    _token_transformer(neck, v, 4 * v.tokens)
    for n, c in sizes:                   # LevelProjector
      neck.linear(n, c, f)
      neck.linear(v.tokens, v.token_channels, f)
      neck.linear(v.tokens, v.token_channels, f)
      neck.matmul(2 * n * v.tokens * f)
  head, hc = stages["head"], m.head_channels
  for i in range(4):
    for j in range(max(1, i)):           # conv at level i-j's size, then upsample
      head.conv(sizes[i - j][0], 3, f if j == 0 else hc, hc)
      head.params += 2 * hc              # GroupNorm scale and bias
  head.conv(sizes[0][0], 1, hc, m.num_classes, bias=True)
  return _result(stages)
