"""tfds builder `coco_stuff`: COCO-Stuff 164k semantic segmentation (things + stuff).

Reads the official files from the tfds manual directory: the COCO 2017 images
and the `stuffthingmaps_trainval2017` label PNGs of COCO-Stuff
(https://github.com/nightrome/cocostuff). A label PNG's pixel value is the
COCO-Stuff category id minus one (0..181) or 255 = unlabeled. Eleven of those
182 values are unused ids (things 12, 26, 29, 30, 45, 66, 68, 69, 71, 83 and
91, i.e. raw values UNUSED_RAW_VALUES); the remaining 171 classes (80 things,
91 stuff) are renumbered contiguously 0..170 in raw order, the usual
"171-class" COCO-Stuff setting. 255 stays 255 (IGNORE_LABEL). An unused or
out-of-range value fails the build, naming split and file.

Splits: 'train' (train2017, 118,287 images), 'validation' (val2017, 5,000).
Features: image uint8 [H, W, 3] (JPEG), mask uint8 [H, W], id (file stem).
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds

from vt_jax.data.datasets import _manual

NUM_RAW_IDS = 182  # Raw label values 0..181 (category id - 1).
UNUSED_RAW_VALUES = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
USED_RAW_VALUES = tuple(v for v in range(NUM_RAW_IDS) if v not in UNUSED_RAW_VALUES)
NUM_CLASSES = len(USED_RAW_VALUES)
assert NUM_CLASSES == 171, NUM_CLASSES
IGNORE_LABEL = _manual.IGNORE_LABEL

# split -> (image dir, label dir), relative to the manual directory.
SPLIT_DIRS = {
    'train': ('images/train2017', 'stuffthingmaps_trainval2017/train2017'),
    'validation': ('images/val2017', 'stuffthingmaps_trainval2017/val2017'),
}

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download into the manual directory (default <data_dir>/downloads/manual/):
  http://images.cocodataset.org/zips/train2017.zip  -> unzip into images/
  http://images.cocodataset.org/zips/val2017.zip    -> unzip into images/
  http://calvin.inf.ed.ac.uk/wp-content/uploads/data/cocostuffdataset/stuffthingmaps_trainval2017.zip
                                                    -> unzip into stuffthingmaps_trainval2017/
giving:
  images/train2017/<12-digit id>.jpg                       118,287 images
  images/val2017/<12-digit id>.jpg                           5,000 images
  stuffthingmaps_trainval2017/train2017/<12-digit id>.png  label PNGs (0..181, 255)
  stuffthingmaps_trainval2017/val2017/<12-digit id>.png
Then run:
  python -m vt_jax.data --prepare=coco_stuff --data_dir=DATA_DIR --manual_dir=MANUAL_DIR
"""


def raw_to_class_lookup() -> np.ndarray:
  """int [256]: raw label value -> class 0..170, 255 -> 255, unused -> -1."""
  lookup = np.full(256, -1, np.int64)
  lookup[list(USED_RAW_VALUES)] = np.arange(NUM_CLASSES)
  lookup[IGNORE_LABEL] = IGNORE_LABEL
  return lookup


class CocoStuff(_manual.SegmentationFilesBuilder):
  """COCO-Stuff 164k (171 classes), read from the official files."""

  RELEASE_NOTES = {'1.0.0': 'stuffthingmaps_trainval2017, 171 contiguous classes.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  REQUIRED_PATHS = tuple(d for dirs in SPLIT_DIRS.values() for d in dirs)
  MASK_DOC = (f'0..{NUM_CLASSES - 1} = used COCO-Stuff ids in order; '
              f'{IGNORE_LABEL} = unlabeled.')
  ID_DOC = 'COCO image id (file stem).'
  HOMEPAGE = 'https://github.com/nightrome/cocostuff'

  def _lookup(self):
    return raw_to_class_lookup()

  def _pairs(self, manual_dir, split):
    image_dir, mask_dir = (os.path.join(manual_dir, d) for d in SPLIT_DIRS[split])
    stems = sorted(f[:-len('.png')] for f in os.listdir(mask_dir) if f.endswith('.png'))
    if not stems:
      raise FileNotFoundError(
          f'coco_stuff: split {split!r}: no label PNGs in {mask_dir!r}.\n'
          f'{MANUAL_DOWNLOAD_INSTRUCTIONS}')
    for stem in stems:
      image_path = os.path.join(image_dir, stem + '.jpg')
      mask_path = os.path.join(mask_dir, stem + '.png')
      if not os.path.exists(image_path):
        raise FileNotFoundError(
            f'coco_stuff: split {split!r}: label {mask_path!r} has no image {image_path!r}.')
      yield stem, image_path, mask_path
