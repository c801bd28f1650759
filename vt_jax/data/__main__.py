r"""Peek at what the model will see: `python -m vt_jax.data --config=configs/X.py`;
prepare a dataset from its manually downloaded files: `--prepare=NAME`.

    python -m vt_jax.data --config=configs/vt_r18.py --batches=2 --split=train \
        --save=/tmp/peek --config.data.augment=randaugment

    python -m vt_jax.data --prepare=imagenet2012 --data_dir=D --manual_dir=D/downloads/manual

Prints each batch's shapes, dtypes, value ranges and label (or mask class)
histogram; with --save=DIR writes DIR/<split>_batch0.png, a grid of the first
batch (un-normalised, masks overlaid in colour, label in the corner).
"""

from __future__ import annotations

import math
import os

from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'config file with a `data` section (config_lib.data.*)')
_BATCHES = flags.DEFINE_integer('batches', 2, 'number of batches to show')
_SPLIT = flags.DEFINE_enum('split', 'train', ['train', 'eval'], 'which split')
_SAVE = flags.DEFINE_string('save', None, 'directory for a PNG of the first batch')
_BATCH_SIZE = flags.DEFINE_integer(
    'batch_size', 16, 'global batch size (rounded up to a multiple of the '
    'device count)')
_SEED = flags.DEFINE_integer('seed', 0, 'shuffle/augmentation seed')
_START_STEP = flags.DEFINE_integer('start_step', 0, 'first batch to show')
_PREPARE = flags.DEFINE_string(
    'prepare', None, 'prepare this tfds dataset (e.g. imagenet2012, lip, coco_stuff) '
    'from the files in --manual_dir, then exit')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'with --prepare: tfds data_dir')
_MANUAL_DIR = flags.DEFINE_string(
    'manual_dir', None, 'with --prepare: directory holding the downloaded files '
    '(default <data_dir>/downloads/manual)')


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


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  from vt_jax import data  # pylint: disable=g-import-not-at-top
  if _PREPARE.value:
    from vt_jax.data import source  # pylint: disable=g-import-not-at-top
    builder = source.prepare(_PREPARE.value, _DATA_DIR.value, _MANUAL_DIR.value)
    splits = {k: v.num_examples for k, v in builder.info.splits.items()}
    print(f'prepared {builder.info.full_name} in {builder.data_dir}: {splits}')
    return
  config = _CONFIG.value
  if config is None or 'data' not in config:
    raise app.UsageError('--config=FILE must give a config with a `data` section '
                         '(or use --prepare=NAME)')
  data_config = config.data
  info = data.get_info(data_config)
  print(info)
  n = jax.device_count()
  batch_size = math.ceil(_BATCH_SIZE.value / n) * n
  mesh = jax.make_mesh((n,), ('data',))
  it = data.make_iterator(data_config, _SPLIT.value, batch_size, mesh,
                          seed=_SEED.value, start_step=_START_STEP.value)
  for step, batch in zip(range(_BATCHES.value), it):
    print(summarise(batch, info, _START_STEP.value + step))
    if step == 0 and _SAVE.value:
      path = os.path.join(_SAVE.value, f'{_SPLIT.value}_batch0.png')
      save_grid(batch, data_config, info, path)
      print(f'  wrote {path}')
  print(f'bad examples skipped: {it.num_skipped}')


if __name__ == '__main__':
  app.run(main)
