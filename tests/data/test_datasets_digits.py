"""The bundled `digits` builder: offline build, fixed split, disjointness, ids."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

import vt_jax.data.datasets  # pylint: disable=unused-import  (registers builders)
from vt_jax.data.datasets import digits


@pytest.fixture(scope='module')
def digits_dir(tmp_path_factory):
  tfds.disable_progress_bar()
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  tfds.builder('digits', data_dir=data_dir).download_and_prepare()
  return data_dir


def _read(data_dir, split):
  ds = tfds.load('digits', split=split, data_dir=data_dir, download=False)
  return list(tfds.as_numpy(ds))


def test_split_counts_match_docstring(digits_dir):
  info = tfds.builder('digits', data_dir=digits_dir).info
  assert info.splits['train'].num_examples == 1437 == digits.NUM_EXAMPLES['train']
  assert info.splits['test'].num_examples == 360 == digits.NUM_EXAMPLES['test']
  assert info.features['label'].num_classes == 10
  assert '1,437' in digits.__doc__ and '360' in digits.__doc__


def test_splits_disjoint_cover_sklearn_and_keep_pixels(digits_dir):
  from sklearn.datasets import load_digits
  bunch = load_digits()
  train, test = _read(digits_dir, 'train'), _read(digits_dir, 'test')
  train_ids = {int(e['id']) for e in train}
  test_ids = {int(e['id']) for e in test}
  assert not train_ids & test_ids
  assert train_ids | test_ids == set(range(len(bunch.target)))
  train_images = {e['image'].tobytes() for e in train}
  assert not train_images & {e['image'].tobytes() for e in test}
  for e in train[:50] + test[:50]:
    i = int(e['id'])
    assert e['image'].shape == (8, 8, 1) and e['image'].dtype == np.uint8
    assert int(e['label']) == bunch.target[i]
    np.testing.assert_array_equal(
        e['image'][:, :, 0], np.round(bunch.images[i] * 255 / 16).astype(np.uint8))


def test_split_is_stratified():
  _, train_labels, _ = digits.load_split('train')
  _, test_labels, _ = digits.load_split('test')
  fraction = np.bincount(test_labels, minlength=10) / (
      np.bincount(train_labels, minlength=10) + np.bincount(test_labels, minlength=10))
  assert np.all(np.abs(fraction - 0.2) < 0.02), fraction


def test_unknown_split_error_names_dataset():
  with pytest.raises(ValueError, match=r"digits: unknown split 'validation'"):
    digits.load_split('validation')
