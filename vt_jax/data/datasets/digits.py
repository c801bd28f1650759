"""tfds builder `digits`: scikit-learn's real handwritten digits, a fixed split.

The data are the 1,797 8x8 grey-level digits (UCI "Optical Recognition of
Handwritten Digits", 10 classes) that ship inside scikit-learn
(`sklearn.datasets.load_digits`), so building needs no network:

  import vt_jax.data.datasets  # registers the builders
  tfds.load('digits', data_dir=...)  # builds on first use, offline

Images are stored at their original 8x8 resolution; sklearn's intensities
0..16 are mapped to uint8 0..255 by round(v * 255 / 16). Resizing to the
model's input size is preprocessing, not part of the dataset.

Split (fixed, documented, tested): a stratified split with
`sklearn.model_selection.train_test_split(test_size=0.2, random_state=0,
stratify=labels)` over the sklearn indices:
  train: 1,437 examples     test: 360 examples
Every example carries `id`, its index in `load_digits()`, so errors and
analyses can name it; the two splits share no id and no image (the 1,797
images are pairwise distinct).
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from vt_jax.data.datasets import _tfds_compat

NUM_CLASSES = 10
IMAGE_SIZE = 8
SPLIT_SEED = 0
TEST_FRACTION = 0.2
NUM_EXAMPLES = {'train': 1437, 'test': 360}

_SKLEARN_MAX_VALUE = 16.0


def load_split(split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Returns one split of the digits as numpy arrays.

  Args:
    split: 'train' or 'test'.

  Returns:
    images: uint8 [N, 8, 8] in 0..255.
    labels: int64 [N] in 0..9.
    ids: int64 [N], indices into `sklearn.datasets.load_digits()`, ascending.

  Raises:
    ValueError: unknown split, or sklearn's data hold a value out of range
      (named by dataset, split and id).
  """
  if split not in NUM_EXAMPLES:
    raise ValueError(
        f"digits: unknown split {split!r}; expected one of {sorted(NUM_EXAMPLES)}.")
  # Imported lazily: scikit-learn is only needed to build the dataset.
  from sklearn import datasets as sk_datasets  # pylint: disable=g-import-not-at-top
  from sklearn import model_selection  # pylint: disable=g-import-not-at-top

  bunch = sk_datasets.load_digits()
  raw = np.asarray(bunch.images, dtype=np.float64)  # [1797, 8, 8] in 0..16
  labels = np.asarray(bunch.target, dtype=np.int64)
  all_ids = np.arange(len(labels), dtype=np.int64)
  # A library split (stratified, seeded) rather than a hand-written one; its
  # counts are pinned by NUM_EXAMPLES and checked below and in the tests.
  train_ids, test_ids = model_selection.train_test_split(
      all_ids, test_size=TEST_FRACTION, random_state=SPLIT_SEED,
      stratify=labels)
  ids = np.sort(train_ids if split == 'train' else test_ids)
  if len(ids) != NUM_EXAMPLES[split]:
    raise RuntimeError(
        f"digits: split {split!r} has {len(ids)} examples, expected "
        f"{NUM_EXAMPLES[split]}; the installed scikit-learn changed its digits "
        "data or its split, so results would not be comparable.")

  for i in ids:
    if not 0 <= labels[i] < NUM_CLASSES:
      raise ValueError(
          f"digits: split {split!r}, example id {i}: label {labels[i]} is not in "
          f"0..{NUM_CLASSES - 1}.")
    lo, hi = raw[i].min(), raw[i].max()
    if lo < 0 or hi > _SKLEARN_MAX_VALUE or not np.all(np.isfinite(raw[i])):
      raise ValueError(
          f"digits: split {split!r}, example id {i}: pixel values span "
          f"[{lo}, {hi}], expected 0..{_SKLEARN_MAX_VALUE:g}.")
  images = np.round(raw[ids] * (255.0 / _SKLEARN_MAX_VALUE)).astype(np.uint8)
  return images, labels[ids], ids


class Digits(_tfds_compat.LocalCodePath, tfds.core.GeneratorBasedBuilder):
  """scikit-learn's handwritten digits: 8x8 grey images, 10 classes."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Stratified 80/20 split of sklearn load_digits, seed 0.'}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(
                shape=(IMAGE_SIZE, IMAGE_SIZE, 1), encoding_format='png',
                doc='uint8 0..255 (sklearn 0..16 scaled by 255/16).'),
            'label': tfds.features.ClassLabel(num_classes=NUM_CLASSES),
            'id': tfds.features.Scalar(
                dtype=np.int64, doc='Index in sklearn.datasets.load_digits().'),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://archive.ics.uci.edu/dataset/80',
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # The data ship inside scikit-learn: nothing to download.
    return {split: self._generate_examples(split) for split in NUM_EXAMPLES}

  def _generate_examples(self, split):
    images, labels, ids = load_split(split)
    for image, label, i in zip(images, labels, ids):
      yield int(i), {'image': image[:, :, None], 'label': int(label), 'id': int(i)}
