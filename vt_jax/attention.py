"""What the tokens attend to: maps from a VT model's sown `intermediates`, and their figures.

    logits, state = model.apply(variables, images, train=False, mutable=["intermediates"])
    modules = token_maps(state["intermediates"], feature_shape(images.shape[1:3], ...), L)

Each VT module sows `spatial_attention` [batch, pixels, tokens] (each token's weights over
the feature map's pixels, summing to 1) and, with a transformer, `token_attention` [batch,
heads, tokens, tokens]. From them (the paper's section 6):
  - spatial maps A[:, :, l]: where token l reads the image from (Fig. 6, top row);
  - token-interaction maps Â[:, :, l] = sum_l' W[l, l'] A[:, :, l'] with W the
    transformer's attention averaged over heads: where the token leaving the transformer
    draws its content from (Fig. 6, bottom row);
  - entropy -sum_p A log A per token, against log(HW), the entropy of uniform attention;
  - foreground ratio: attention mass per foreground pixel over mass per background pixel
    (1 for uniform attention; > 1 when tokens favour the objects).
The v1 dynamic tokenizer re-extracts only tokens L/2..L-1 (its sown map has L/2 columns); the
others are the previous module's tokens L/2..L-1 kept as they were, so their maps are that
module's interaction maps. Nothing here re-implements the forward pass.
"""

from __future__ import annotations

import dataclasses
import math

import flax
import numpy as np

# Which mask pixels are foreground, per dataset (mask values; ignore labels are excluded).
FOREGROUND = {
    "digit_scenes": lambda m: m > 0,  # 0 = background, c + 1 = digit c
    "lip": lambda m: m > 0,           # 0 = background, 1..19 = body parts and clothes
    "coco_stuff": lambda m: m < 80,   # 0..79 = the 80 thing classes, 80..170 = stuff
}


@dataclasses.dataclass
class ModuleMaps:
  """One VT module's maps over its [h, w] feature map, for a batch of images."""
  name: str                       # the module's path, e.g. 'stage5/vt2'
  shape: tuple[int, int]          # (h, w) of the feature map
  spatial: np.ndarray             # [batch, h*w, tokens'] as sown
  token_ids: list[int]            # the output token each spatial column describes
  interaction: np.ndarray | None  # [batch, h*w, L] Â, or None (no token attention)
  note: str                       # what a reader needs to know (v1 re-extraction, ...)


def feature_shape(image_hw: tuple[int, int], pixels: int) -> tuple[int, int]:
  """(h, w) of a feature map with `pixels` pixels taken from an image of `image_hw`."""
  stride = math.sqrt(image_hw[0] * image_hw[1] / pixels)
  h, w = round(image_hw[0] / stride), round(image_hw[1] / stride)
  if h * w != pixels:
    raise ValueError(f"cannot lay {pixels} attention pixels over a {image_hw} image")
  return h, w


def token_maps(intermediates, image_hw: tuple[int, int], tokens: int) -> list[ModuleMaps]:
  """The maps of every VT module found in `intermediates`, in forward order."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(intermediates))
  # A VT block's tokenizer is its submodule `tokenizer` (the module is the block); VT-FPN's
  # per-level tokenizers `tokenizer2..5` are modules of their own.
  sown = {(k[:-2] if k[-2] == "tokenizer" else k[:-1]): v[0] for k, v in flat.items()
          if k[-1] == "spatial_attention"}
  if not sown:
    raise ValueError("no 'spatial_attention' in the intermediates: not a VT model (a plain "
                     "ResNet has no tokens), or applied without mutable=['intermediates']")
  order = lambda p: [(0, int(s[2:]), "") if s[:2] == "vt" and s[2:].isdigit() else (1, 0, s)
                     for s in p]  # vt2 before vt10
  out, previous = [], None
  for path in sorted(sown, key=order):
    a = np.asarray(sown[path], np.float32)
    shape = feature_shape(image_hw, a.shape[1])
    w = [v[0] for k, v in flat.items() if k[:len(path)] == path and k[-1] == "token_attention"]
    name = "/".join(path)
    if a.shape[2] == tokens:
      ids, full, note = list(range(tokens)), a, ""
    elif 2 * a.shape[2] == tokens:
      half = tokens // 2
      ids = list(range(half, tokens))
      note = f"v1: tokens {half}..{tokens - 1} re-extracted; 0..{half - 1} kept from before"
      full = None
      if previous is not None and previous.interaction is not None and \
          previous.shape == shape:
        full = np.concatenate([previous.interaction[..., half:], a], axis=-1)
    else:
      raise ValueError(f"{name}: spatial_attention has {a.shape[2]} tokens, expected "
                       f"{tokens} (model.vt.tokens) or half of it")
    interaction = None
    if w and full is not None:
      mix = np.asarray(w[0], np.float32).mean(axis=1)  # [B, L, L] over heads
      interaction = np.einsum("bpk,blk->bpl", full, mix)
    elif not w and any(k[-1] == "token_attention" for k in flat):
      # VT-FPN: one transformer mixes every level's tokens, so no level's map alone
      # describes a mixed token.
      note = (note + "; " if note else "") + "token attention spans other modules' tokens"
    elif not w:
      note = (note + "; " if note else "") + "no token attention (interaction is not a " \
             "transformer)"
    out.append(ModuleMaps(name, shape, a, ids, interaction, note))
    previous = out[-1]
  return out


def entropy(a: np.ndarray) -> np.ndarray:
  """-sum_p A log A over pixels (axis 1): [batch, pixels, tokens] -> [batch, tokens], nats."""
  a = np.asarray(a, np.float64)
  return -(np.where(a > 0, a * np.log(np.where(a > 0, a, 1.0)), 0.0)).sum(axis=1)


def foreground_fraction(fg: np.ndarray, valid: np.ndarray, shape) -> tuple[np.ndarray,
                                                                           np.ndarray]:
  """Per feature pixel: the fraction of its image cell that is foreground, and that is
  labelled at all. fg, valid: [batch, H, W] bool -> two [batch, h*w] arrays."""
  b, hh, ww = fg.shape
  h, w = shape
  if hh % h or ww % w:
    raise ValueError(f"mask {hh}x{ww} does not tile the {h}x{w} feature map")
  cells = lambda x: x.reshape(b, h, hh // h, w, ww // w).mean(axis=(2, 4)).reshape(b, h * w)
  return cells((fg & valid).astype(np.float64)), cells(valid.astype(np.float64))


def foreground_mass(a: np.ndarray, fg_frac: np.ndarray, valid_frac: np.ndarray):
  """Attention mass per foreground pixel and per background pixel: two [batch, tokens]
  arrays, NaN for an image with no foreground or no background. Uniform attention gives
  1/(labelled pixels) for both."""
  a = np.asarray(a, np.float64)
  bg_frac = valid_frac - fg_frac
  n_fg, n_bg = fg_frac.sum(axis=1), bg_frac.sum(axis=1)  # [B]
  ok = ((n_fg > 0) & (n_bg > 0))[:, None]
  with np.errstate(divide="ignore", invalid="ignore"):
    fg = np.einsum("bpl,bp->bl", a, fg_frac) / n_fg[:, None]
    bg = np.einsum("bpl,bp->bl", a, bg_frac) / n_bg[:, None]
  return np.where(ok, fg, np.nan), np.where(ok, bg, np.nan)


def foreground_ratio(a: np.ndarray, fg_frac: np.ndarray, valid_frac: np.ndarray,
                     axis=0) -> np.ndarray:
  """(mean attention mass per foreground pixel) / (mean mass per background pixel), the
  means over images (`axis`=0: per token) or over images and tokens (`axis`=(0, 1)); images
  without foreground or background are left out. Uniform attention gives exactly 1. A ratio
  of means, not a mean of per-image ratios: a token with almost no background mass in one
  image would otherwise dominate."""
  fg, bg = foreground_mass(a, fg_frac, valid_frac)
  if not np.isfinite(fg).any():
    return np.full(np.asarray(fg).mean(axis=axis).shape, np.nan)
  return np.nanmean(fg, axis=axis) / np.nanmean(bg, axis=axis)


def summarise(modules: list[ModuleMaps], fg: np.ndarray | None = None,
              valid: np.ndarray | None = None) -> dict:
  """Per module: entropy per token (mean over images) vs log(HW), and with masks the
  foreground ratio per token and over all tokens (images with both foreground and
  background)."""
  result = {}
  for m in modules:
    ent = entropy(m.spatial)  # [B, L']
    entry = dict(tokens=m.token_ids, pixels=m.shape[0] * m.shape[1],
                 uniform_entropy=math.log(m.shape[0] * m.shape[1]),
                 entropy_per_token=ent.mean(axis=0).tolist(), entropy=float(ent.mean()),
                 note=m.note)
    if fg is not None:
      fg_frac, valid_frac = foreground_fraction(fg, valid, m.shape)
      per_token = foreground_ratio(m.spatial, fg_frac, valid_frac, axis=0)
      entry.update(foreground_ratio_per_token=[None if np.isnan(r) else float(r)
                                               for r in per_token],
                   foreground_ratio=float(foreground_ratio(m.spatial, fg_frac, valid_frac,
                                                           axis=(0, 1))),
                   images_with_fg_and_bg=int(np.isfinite(
                       foreground_mass(m.spatial, fg_frac, valid_frac)[0][:, 0]).sum()))
    result[m.name] = entry
  return result


def format_table(summary: dict) -> str:
  """A short text table of `summarise`'s result."""
  lines = [f"{'module':<14} {'tokens':>6} {'log(HW)':>8} {'entropy mean (min..max)':>25} "
           f"{'fg/bg per pixel mean (min..max)':>33}"]
  for name, e in summary.items():
    ent = e["entropy_per_token"]
    row = (f"{name:<14} {len(ent):>6} {e['uniform_entropy']:>8.3f} "
           f"{e['entropy']:>8.3f} ({min(ent):.2f}..{max(ent):.2f})".ljust(58))
    if "foreground_ratio" in e:
      r = [x for x in e["foreground_ratio_per_token"] if x is not None]
      row += (f" {e['foreground_ratio']:>12.3f} ({min(r):.2f}..{max(r):.2f})" if r
              else "  (no image with both foreground and background)")
    lines.append(row + (f"   [{e['note']}]" if e["note"] else ""))
  return "\n".join(lines)


def init_entropy(model_config, resolution=224, seeds=(0, 1), batch: int = 2) -> dict:
  """Spatial-attention entropy of every VT module of an untrained model.

  For each seed: parameters from `model.init` with that seed, `batch` images of i.i.d.
  standard normal pixels (drawn from the same seed) at `resolution` (int or (h, w)), applied
  in train mode (BatchNorm normalises with the batch's statistics, as at the first training
  step). Returns {module: dict(uniform_entropy=log(HW), entropy=[mean over images and tokens,
  per seed], min_entropy=[lowest token's mean entropy, per seed], max_weight=[largest single
  pixel weight, per seed])}, modules in forward order. A module whose entropy is far below
  log(HW) attends to a few pixels from step 0: its softmax passes little gradient.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from vt_jax import models  # pylint: disable=g-import-not-at-top
  if model_config.name not in ("vt_resnet", "vt_fpn"):
    raise ValueError(f"model.name={model_config.name!r} has no visual tokens; the entropy "
                     "at initialisation needs a VT model (vt_resnet or vt_fpn)")
  h, w = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
  model = models.create_model(model_config)
  # Jitted once, called per seed (a jit made inside the loop would compile again each time).
  init = jax.jit(lambda k, x: model.init(k, x, train=False))
  apply = jax.jit(lambda v, x: model.apply(v, x, train=True,
                                           mutable=["batch_stats", "intermediates"]))
  result: dict = {}
  for seed in seeds:
    key_init, key_x = jax.random.split(jax.random.PRNGKey(seed))
    x = jax.random.normal(key_x, (batch, h, w, 3))
    _, state = apply(init(key_init, x), x)
    for m in token_maps(state["intermediates"], (h, w), model_config.vt.tokens):
      ent = entropy(m.spatial).mean(axis=0)  # [tokens'] over images
      entry = result.setdefault(m.name, dict(uniform_entropy=math.log(m.shape[0] * m.shape[1]),
                                             entropy=[], min_entropy=[], max_weight=[]))
      entry["entropy"].append(float(ent.mean()))
      entry["min_entropy"].append(float(ent.min()))
      entry["max_weight"].append(float(np.max(m.spatial)))
  return result


def format_init_table(result: dict) -> str:
  """A short text table of `init_entropy`'s result (values per seed)."""
  fmt = lambda xs, p: "/".join(f"{x:.{p}f}" for x in xs)
  lines = [f"{'module':<16} {'log(HW)':>8}  {'entropy (per seed)':<22} "
           f"{'lowest token':<22} {'max weight':<18}"]
  for name, e in result.items():
    lines.append(f"{name:<16} {e['uniform_entropy']:>8.3f}  {fmt(e['entropy'], 3):<22} "
                 f"{fmt(e['min_entropy'], 3):<22} {fmt(e['max_weight'], 3):<18}")
  return "\n".join(lines)
