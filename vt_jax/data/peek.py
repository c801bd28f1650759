"""What the peek tool (`python -m vt_jax.data`) prints and draws.

Kept apart from `__main__` so that importing these helpers defines no flags
(two CLIs' flags in one process, e.g. a test session, would clash).
"""

from __future__ import annotations

import math
import os

def _histogram(values, valid_rows, ignore=None) -> str:
  import numpy as np  # pylint: disable=g-import-not-at-top
  values = values[valid_rows > 0].reshape(-1)
  if ignore is not None:
    values = values[values != ignore]
  if values.size == 0:
    return '(none)'
  classes, counts = np.unique(values, return_counts=True)
  parts = [f'{c}:{n}' for c, n in zip(classes, counts)]
  if len(parts) > 20:
    parts = parts[:20] + [f'... ({len(classes)} classes)']
  return ' '.join(parts)


def summarise(batch, info, step: int) -> str:
  """One text block per batch: per-key shape/dtype/range + histograms."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  lines = [f'batch {step}:']
  for key in sorted(batch):
    v = np.asarray(batch[key])
    lines.append(f'  {key:<6} {str(v.shape):<20} {str(v.dtype):<8} '
                 f'min={v.min():.3f} max={v.max():.3f} mean={v.mean():.3f}')
  valid = np.asarray(batch['valid'])
  lines.append(f'  valid rows: {int(valid.sum())}/{valid.size}')
  lines.append(f'  label histogram: {_histogram(np.asarray(batch["label"]), valid)}')
  if 'mask' in batch:
    lines.append('  mask pixels per class (ignore excluded): ' +
                 _histogram(np.asarray(batch['mask']), valid, info.ignore_label))
  return '\n'.join(lines)


def _palette(n: int):
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  colours = rng.integers(40, 256, (max(n, 1), 3)).astype(np.uint8)
  colours[0] = 0  # class 0 (background) stays uncoloured-dark
  return colours


def save_grid(batch, data_config, info, path: str) -> None:
  """Writes the batch as a PNG grid (masks as a 50% colour overlay)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  images = np.asarray(batch['image'])
  mean = np.asarray(data_config.mean, np.float32)
  std = np.asarray(data_config.std, np.float32)
  images = np.clip(images * std + mean, 0, 255)
  if 'mask' in batch:
    masks = np.asarray(batch['mask'])
    colours = _palette(info.num_classes)
    known = (masks >= 0) & (masks < info.num_classes)
    overlay = colours[np.where(known, masks, 0)].astype(np.float32)
    blend = known[..., None] & (masks[..., None] > 0)
    images = np.where(blend, 0.5 * images + 0.5 * overlay, images)
  images = images.astype(np.uint8)
  b, h, w, _ = images.shape
  zoom = max(1, 96 // max(h, w))  # small images (digits) are upscaled
  cols = math.ceil(math.sqrt(b))
  rows = math.ceil(b / cols)
  pad = 2
  grid = Image.new('RGB', (cols * (w * zoom + pad), rows * (h * zoom + pad)),
                   (255, 255, 255))
  draw = ImageDraw.Draw(grid)
  labels = np.asarray(batch['label'])
  valid = np.asarray(batch['valid'])
  for i in range(b):
    tile = Image.fromarray(images[i]).resize((w * zoom, h * zoom), Image.NEAREST)
    x, y = (i % cols) * (w * zoom + pad), (i // cols) * (h * zoom + pad)
    grid.paste(tile, (x, y))
    text = str(labels[i]) if valid[i] > 0 else 'pad'
    draw.text((x + 2, y + 1), text, fill=(255, 255, 0))
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  grid.save(path)
