"""tfds builder `lip`: Look Into Person (LIP) single-person human parsing.

Reads the official files from the tfds manual directory (LIP is not in tfds
and cannot be downloaded without a login). 20 classes, 0 = background; LIP's
masks hold 0..19 and are stored unchanged; 255 (IGNORE_LABEL) marks unlabelled
pixels (none in the official masks, but padding uses it). Any other mask value
fails the build, naming split and file.

Splits: 'train' (30,462 official images) and 'validation' (10,000).
Features: image uint8 [H, W, 3] (JPEG), mask uint8 [H, W], id (file stem).
"""

from __future__ import annotations

import collections
import os

import numpy as np
import tensorflow_datasets as tfds

from vt_jax.data.datasets import _manual

CLASS_NAMES = (
    'background', 'hat', 'hair', 'glove', 'sunglasses', 'upper_clothes', 'dress',
    'coat', 'socks', 'pants', 'jumpsuits', 'scarf', 'skirt', 'face', 'left_arm',
    'right_arm', 'left_leg', 'right_leg', 'left_shoe', 'right_shoe')
NUM_CLASSES = len(CLASS_NAMES)
IGNORE_LABEL = _manual.IGNORE_LABEL

# split -> (image dir, mask dir, id list), relative to the manual directory.
SPLIT_FILES = {
    'train': ('TrainVal_images/train_images',
              'TrainVal_parsing_annotations/train_segmentations',
              'TrainVal_images/train_id.txt'),
    'validation': ('TrainVal_images/val_images',
                   'TrainVal_parsing_annotations/val_segmentations',
                   'TrainVal_images/val_id.txt'),
}

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download LIP's "Single Person" TrainVal_images.zip and
TrainVal_parsing_annotations.zip from https://sysu-hcp.net/lip/ (Google Drive /
Baidu links on the overview page) and unzip both into the manual directory
(default <data_dir>/downloads/manual/), giving:

  TrainVal_images/train_images/<id>.jpg        30,462 images
  TrainVal_images/val_images/<id>.jpg          10,000 images
  TrainVal_images/train_id.txt                 one <id> per line
  TrainVal_images/val_id.txt
  TrainVal_parsing_annotations/train_segmentations/<id>.png   label PNGs, 0..19
  TrainVal_parsing_annotations/val_segmentations/<id>.png

(If an archive unzips to a doubled folder such as
TrainVal_images/TrainVal_images/, move its contents up one level.) Then run:

  python -m vt_jax.data --prepare=lip --data_dir=DATA_DIR --manual_dir=MANUAL_DIR
"""


def _lookup() -> np.ndarray:
  lookup = np.full(256, -1, np.int64)
  lookup[:NUM_CLASSES] = np.arange(NUM_CLASSES)
  lookup[IGNORE_LABEL] = IGNORE_LABEL
  return lookup


def read_ids(dataset: str, split: str, path: str) -> list[str]:
  """Reads an id list (one id per line, blanks skipped); errors on duplicates."""
  with open(path) as f:
    ids = [line.strip() for line in f if line.strip()]
  duplicates = sorted(i for i, n in collections.Counter(ids).items() if n > 1)
  if duplicates:
    raise _manual.BadExampleError(
        f'{dataset}: split {split!r}: {path!r} lists ids more than once: {duplicates[:5]}.')
  return ids


class Lip(_manual.SegmentationFilesBuilder):
  """Look Into Person human parsing, read from the official files."""

  RELEASE_NOTES = {'1.0.0': 'Official LIP train/val parsing annotations.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  REQUIRED_PATHS = tuple(p for files in SPLIT_FILES.values() for p in files)
  MASK_DOC = f'0..{NUM_CLASSES - 1} = {", ".join(CLASS_NAMES)}; {IGNORE_LABEL} = unlabelled.'
  ID_DOC = 'LIP image id (file stem).'
  HOMEPAGE = 'https://sysu-hcp.net/lip/'

  def _lookup(self):
    return _lookup()

  def _pairs(self, manual_dir, split):
    image_dir, mask_dir, id_file = (os.path.join(manual_dir, p) for p in SPLIT_FILES[split])
    for example_id in read_ids('lip', split, id_file):
      image_path = os.path.join(image_dir, example_id + '.jpg')
      mask_path = os.path.join(mask_dir, example_id + '.png')
      for path in (image_path, mask_path):
        if not os.path.exists(path):
          raise FileNotFoundError(
              f"lip: split {split!r}: id {example_id!r} from {id_file!r} has no file "
              f"{path!r}.")
      yield example_id, image_path, mask_path
