"""tfds builder `digit_scenes`: real digits placed on a canvas, with per-pixel masks.

Each example is a square RGB canvas on which 1..`max_digits` real handwritten
digits from the `digits` dataset (scikit-learn's, see digits.py) are drawn at
random positions and sizes, each in a random colour. It serves three uses:
segmentation (background + 10 digit classes), classification of a small,
off-centre object, and measuring where tokens attend (the mask is the
foreground).

Composition (numpy, seeded by (config.seed, split, example index), so every
build gives identical examples):
  * the digits on one canvas have DISTINCT classes and NON-OVERLAPPING boxes,
    so each class in the mask is exactly one digit;
  * a digit is its 8x8 image upscaled bilinearly to `size` x `size` pixels,
    size uniform in [min_digit_frac, max_digit_frac] * canvas_size; its
    pixels with intensity >= MASK_THRESHOLD (of 255) are labelled
    `class + 1` in the mask, the faint rim stays background;
  * with clutter on, 2..5 fragments (3..5 px crops of other digits of the same
    split, upscaled like digits) and 1..3 straight strokes are drawn first,
    under the digits; they are labelled background (0);
  * `label` is the class of the digit with the most mask pixels (= the class
    with the most mask pixels; ties -> lower class).
No leakage: the train split draws digits (and clutter) only from the digits
train split, the test split only from the digits test split; `digit_ids` and
`clutter_ids` name the source images (indices into sklearn's load_digits()).

Configs (name: canvas, clutter; default counts train/test = 2000/500):
  '32', '64' (default), '128'; '32_clutter', '64_clutter', '128_clutter'.
Other counts/sizes: pass `config=DigitScenesConfig(name=..., ...)` to tfds.builder.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from vt_jax.data.datasets import _tfds_compat
from vt_jax.data.datasets import digits

NUM_DIGIT_CLASSES = digits.NUM_CLASSES
NUM_MASK_CLASSES = NUM_DIGIT_CLASSES + 1  # 0 = background, c + 1 = digit c.
MASK_THRESHOLD = 128  # Upscaled digit intensity (0..255) from which a pixel is foreground.
_SPLIT_INDEX = {'train': 0, 'test': 1}
_PLACEMENT_TRIES = 20


@dataclasses.dataclass(eq=False)
class DigitScenesConfig(tfds.core.BuilderConfig):
  """How canvases are composed; every field changes the data, so name configs uniquely."""
  canvas_size: int = 64  # Canvas height = width, pixels.
  clutter: bool = False  # Draw background fragments and strokes.
  num_train: int = 2000
  num_test: int = 500
  max_digits: int = 3  # Digits per canvas, uniform in 1..max_digits.
  min_digit_frac: float = 0.25  # Digit side / canvas side, lower bound.
  max_digit_frac: float = 0.5  # Digit side / canvas side, upper bound.
  seed: int = 0


def _config(size: int, clutter: bool) -> DigitScenesConfig:
  return DigitScenesConfig(
      name=f'{size}_clutter' if clutter else str(size),
      description=f'{size}x{size} canvases, {"with" if clutter else "no"} clutter.',
      canvas_size=size, clutter=clutter)


def _upscale(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """uint8 [h, w] -> float32 [height, width] in 0..1, bilinear (PIL)."""
  resized = Image.fromarray(image).resize((width, height), Image.BILINEAR)
  return np.asarray(resized, dtype=np.float32) / 255.0


def _draw_stroke(canvas: np.ndarray, rng: np.random.Generator) -> None:
  """Draws one straight line of random colour and width 1..2 px, in place."""
  size = canvas.shape[0]
  p0, p1 = rng.uniform(0, size - 1, size=(2, 2))
  width = int(rng.integers(1, 3))
  colour = rng.uniform(0.5, 1.0, size=3).astype(np.float32)
  steps = int(np.ceil(np.abs(p1 - p0).max())) + 1
  for t in np.linspace(0.0, 1.0, steps):
    y, x = np.round(p0 + t * (p1 - p0)).astype(int)
    region = canvas[y:y + width, x:x + width]
    np.maximum(region, colour, out=region)


def compose_scene(
    config: DigitScenesConfig, split: str, index: int, images: np.ndarray,
    labels: np.ndarray, ids: np.ndarray) -> dict[str, np.ndarray | int]:
  """Composes example `index` of `split`.

  Args:
    config: canvas parameters.
    split: 'train' or 'test' (part of the seed).
    index: example index within the split (part of the seed).
    images: uint8 [N, 8, 8] source digits of the matching digits split.
    labels: int [N] their classes.
    ids: int [N] their sklearn indices.

  Returns:
    A tfds example: image uint8 [S, S, 3], mask uint8 [S, S] in 0..10,
    label int, id int, digit_ids int64 [k], clutter_ids int64 [m].
  """
  size = config.canvas_size
  rng = np.random.default_rng([config.seed, _SPLIT_INDEX[split], index])
  canvas = np.zeros((size, size, 3), np.float32)
  mask = np.zeros((size, size), np.uint8)
  lo = max(2, int(round(config.min_digit_frac * size)))
  hi = max(lo, int(round(config.max_digit_frac * size)))

  clutter_ids = []
  if config.clutter:
    for _ in range(int(rng.integers(2, 6))):
      j = int(rng.integers(len(images)))
      ch, cw = rng.integers(3, 6, size=2)
      cy, cx = rng.integers(0, 8 - ch + 1), rng.integers(0, 8 - cw + 1)
      scale = rng.integers(lo, hi + 1) / 8.0
      h, w = max(1, int(round(ch * scale))), max(1, int(round(cw * scale)))
      fragment = _upscale(images[j, cy:cy + ch, cx:cx + cw], h, w)
      y, x = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
      colour = rng.uniform(0.5, 1.0, size=3).astype(np.float32)
      region = canvas[y:y + h, x:x + w]
      np.maximum(region, fragment[..., None] * colour, out=region)
      clutter_ids.append(int(ids[j]))
    for _ in range(int(rng.integers(1, 4))):
      _draw_stroke(canvas, rng)

  num_digits = int(rng.integers(1, config.max_digits + 1))
  classes = rng.choice(NUM_DIGIT_CLASSES, size=num_digits, replace=False)
  boxes, digit_ids = [], []
  for c in classes:
    j = int(rng.choice(np.flatnonzero(labels == c)))
    for _ in range(_PLACEMENT_TRIES):
      s = int(rng.integers(lo, hi + 1))
      y, x = (int(v) for v in rng.integers(0, size - s + 1, size=2))
      if all(y + s <= by or by + bs <= y or x + s <= bx or bx + bs <= x
             for by, bx, bs in boxes):
        break
    else:
      continue  # No free place left for this digit: the canvas has fewer digits.
    boxes.append((y, x, s))
    digit = _upscale(images[j], s, s)
    foreground = digit * 255.0 >= MASK_THRESHOLD
    colour = rng.uniform(0.5, 1.0, size=3).astype(np.float32)
    paint = digit[..., None] * colour
    region = canvas[y:y + s, x:x + s]
    # Foreground pixels show only the digit (so the mask is exact); its faint
    # rim blends over clutter.
    region[...] = np.where(foreground[..., None], paint, np.maximum(region, paint))
    mask[y:y + s, x:x + s][foreground] = c + 1
    digit_ids.append(int(ids[j]))

  areas = np.bincount(mask.ravel(), minlength=NUM_MASK_CLASSES)[1:]
  if areas.max() == 0:
    raise RuntimeError(
        f'digit_scenes/{config.name}: split {split!r}, example {index}: no digit '
        f'pixel reached MASK_THRESHOLD={MASK_THRESHOLD}; lower it or raise '
        'min_digit_frac.')
  return {
      'image': np.round(canvas * 255.0).astype(np.uint8),
      'mask': mask,
      'label': int(np.argmax(areas)),
      'id': index,
      'digit_ids': np.asarray(digit_ids, np.int64),
      'clutter_ids': np.asarray(clutter_ids, np.int64),
  }


class DigitScenes(_tfds_compat.LocalCodePath, tfds.core.GeneratorBasedBuilder):
  """Canvases of real handwritten digits with per-pixel class masks."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [_config(s, c) for c in (False, True) for s in (32, 64, 128)]
  DEFAULT_BUILDER_CONFIG_NAME = '64'

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.canvas_size
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(size, size, 3), encoding_format='png'),
            'mask': tfds.features.Tensor(
                shape=(size, size), dtype=np.uint8, encoding='zlib',
                doc='0 = background, c + 1 = digit of class c.'),
            'label': tfds.features.ClassLabel(num_classes=NUM_DIGIT_CLASSES),
            'id': tfds.features.Scalar(dtype=np.int64, doc='Example index in its split.'),
            'digit_ids': tfds.features.Sequence(
                tfds.features.Scalar(dtype=np.int64),
                doc='load_digits() indices of the digits drawn.'),
            'clutter_ids': tfds.features.Sequence(
                tfds.features.Scalar(dtype=np.int64),
                doc='load_digits() indices the clutter fragments come from.'),
        }),
        supervised_keys=('image', 'label'),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Composed from the digits inside scikit-learn: no download.
    config = self.builder_config
    if config.max_digits < 1 or not 0 < config.min_digit_frac <= config.max_digit_frac <= 1:
      raise ValueError(
          f'digit_scenes/{config.name}: need max_digits >= 1 and 0 < min_digit_frac '
          f'<= max_digit_frac <= 1, got {config.max_digits}, {config.min_digit_frac}, '
          f'{config.max_digit_frac}.')
    return {
        'train': self._generate_examples('train', config.num_train),
        'test': self._generate_examples('test', config.num_test),
    }

  def _generate_examples(self, split: str, num_examples: int):
    images, labels, ids = digits.load_split(split)
    for index in range(num_examples):
      yield index, compose_scene(self.builder_config, split, index, images, labels, ids)
