"""Bad examples: a clear error naming dataset/split/index, or skipped and counted."""

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from vt_jax import data
from vt_jax.config_lib import data as data_configs
from vt_jax.data import pipeline
from vt_jax.data import testing as synthetic  # registers vt_jax_synthetic


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp('tfds'))
  tfds.builder(f'{synthetic.NAME}/bad', data_dir=d).download_and_prepare(file_format='array_record')
  return d


@pytest.fixture(scope='module')
def mesh():
  return jax.make_mesh((8,), ('data',))


def _cfg(data_dir, **kw):
  fields = dict(name=f'{synthetic.NAME}/bad', data_dir=data_dir, num_classes=10,
                train_split='train', eval_split='train', image_size=16,
                eval_resize=20)
  fields.update(kw)
  return data_configs.imagenet(**fields)


def test_undecodable_image_names_dataset_split_and_index(data_dir, mesh):
  it = data.make_iterator(_cfg(data_dir), 'eval', 8, mesh)
  with pytest.raises(pipeline.BadExampleError) as e:
    list(it)
  msg = str(e.value)
  assert f"'{synthetic.NAME}/bad'" in msg and "split 'train'" in msg
  assert 'example index 5 ' in msg
  assert 'skip_bad_examples' in msg
  assert 'Invalid JPEG data' in msg  # the reason: decoding


def test_label_out_of_range_names_index(data_dir, mesh):
  # Slice past example 5 so that the first bad one is the label (train[11]).
  cfg = _cfg(data_dir, eval_split='train[6:22]')
  with pytest.raises(pipeline.BadExampleError,
                     match=r"split 'train\[6:22\]', example index 5 .*label 10 out "
                           r"of range \[0, 10\)"):
    list(data.make_iterator(cfg, 'eval', 8, mesh))


def test_train_raises_too(data_dir, mesh):
  it = data.make_iterator(_cfg(data_dir), 'train', 8, mesh, seed=0)
  with pytest.raises(pipeline.BadExampleError, match='example index (5|11) '):
    for _ in range(6):  # one epoch holds both bad examples
      next(it)


def test_skip_bad_examples_counts_and_masks_them(data_dir, mesh):
  cfg = _cfg(data_dir, skip_bad_examples=True)
  it = data.make_iterator(cfg, 'train', 8, mesh, seed=0)
  batches = [jax.tree.map(np.asarray, next(it)) for _ in range(6)]  # 1 epoch
  assert it.num_skipped == 2
  valid = np.concatenate([b['valid'] for b in batches])
  assert (valid == 0).sum() == 2
  images = np.concatenate([b['image'] for b in batches])
  assert np.all(images[valid == 0] == 0)
  labels = np.concatenate([b['label'] for b in batches])
  assert labels.max() < 10  # never a wrong label in the batch

  # Eval: 48 examples, 2 bad -> 46 valid rows, each good example once.
  it = data.make_iterator(cfg, 'eval', 8, mesh)
  valid = np.concatenate([np.asarray(b['valid']) for b in it])
  assert valid.sum() == 46 and it.num_skipped == 2


def test_mask_with_unknown_class_errors_or_is_skipped(tmp_path, mesh):
  fields = dict(name=f'{synthetic.NAME}/seg', data_dir=str(tmp_path),
                num_classes=5, train_split='train', eval_split='train',
                image_size=24, scale_range=(0.8, 1.2))
  cfg = data_configs.lip(**fields)
  with pytest.raises(pipeline.BadExampleError,
                     match=r"split 'train', example index 3 .*mask has classes "
                           r"outside \[0, 5\)"):
    list(data.make_iterator(cfg, 'eval', 8, mesh))
  cfg = data_configs.lip(skip_bad_examples=True, **fields)
  it = data.make_iterator(cfg, 'eval', 8, mesh)
  batches = [jax.tree.map(np.asarray, b) for b in it]
  assert it.num_skipped == 1
  valid = np.concatenate([b['valid'] for b in batches])
  masks = np.concatenate([b['mask'] for b in batches])
  assert valid.sum() == 39
  assert np.all(masks[valid == 0] == 255)  # the skipped row is all ignore
  assert set(np.unique(masks[valid > 0])) <= {0, 1, 2, 3, 4, 255}
