"""The bundled `digit_scenes` builder: masks vs labels, no leakage, determinism."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

import vt_jax.data.datasets  # pylint: disable=unused-import  (registers builders)
from vt_jax.data.datasets import digit_scenes
from vt_jax.data.datasets import digits


def _small_config(**overrides):
  fields = dict(name='test32c', canvas_size=32, clutter=True, num_train=120,
                num_test=40, seed=0)
  fields.update(overrides)
  return digit_scenes.DigitScenesConfig(**fields)


def _build(data_dir, config):
  tfds.disable_progress_bar()
  builder = tfds.builder('digit_scenes', config=config, data_dir=str(data_dir))
  builder.download_and_prepare()
  return {split: list(tfds.as_numpy(builder.as_dataset(split, shuffle_files=False)))
          for split in ('train', 'test')}, builder.info


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  return _build(tmp_path_factory.mktemp('scenes'), _small_config())


def test_registered_configs_and_default_counts():
  names = [c.name for c in digit_scenes.DigitScenes.BUILDER_CONFIGS]
  assert names == ['32', '64', '128', '32_clutter', '64_clutter', '128_clutter']
  assert digit_scenes.DigitScenes.DEFAULT_BUILDER_CONFIG_NAME == '64'
  for config in digit_scenes.DigitScenes.BUILDER_CONFIGS:
    assert (config.num_train, config.num_test) == (2000, 500)
    assert config.canvas_size == int(config.name.split('_')[0])
    assert config.clutter == config.name.endswith('_clutter')


def test_counts_shapes_and_mask_classes(built):
  examples, info = built
  assert info.splits['train'].num_examples == 120
  assert info.splits['test'].num_examples == 40
  for e in examples['train'] + examples['test']:
    assert e['image'].shape == (32, 32, 3) and e['image'].dtype == np.uint8
    assert e['mask'].shape == (32, 32) and e['mask'].dtype == np.uint8
    assert e['mask'].max() <= 10


def test_label_is_class_of_largest_mask_region(built):
  examples, _ = built
  multi_digit = 0
  for e in examples['train'] + examples['test']:
    areas = np.bincount(e['mask'].ravel(), minlength=11)[1:]
    assert areas[e['label']] == areas.max() > 0
    # Distinct classes, non-overlapping: one mask class per drawn digit.
    assert np.count_nonzero(areas) == len(e['digit_ids'])
    # Foreground shows the digit, not black canvas.
    assert e['image'][e['mask'] > 0].max(axis=-1).min() > 0
    multi_digit += len(e['digit_ids']) > 1
  assert multi_digit > 0  # The property above is not only tested on 1-digit scenes.


def test_mask_classes_match_source_digit_labels(built):
  examples, _ = built
  from sklearn.datasets import load_digits
  targets = load_digits().target
  for e in examples['train'][:40]:
    present = set(np.flatnonzero(np.bincount(e['mask'].ravel(), minlength=11)[1:]))
    assert present == {int(targets[i]) for i in e['digit_ids']}


def test_no_leakage_between_splits(built):
  examples, _ = built
  for split in ('train', 'test'):
    allowed = set(digits.load_split(split)[2].tolist())
    used = set()
    for e in examples[split]:
      used |= set(e['digit_ids'].tolist()) | set(e['clutter_ids'].tolist())
    assert used <= allowed, split
  assert any(len(e['clutter_ids']) for e in examples['train'])


def test_two_builds_are_identical_and_seed_matters(built, tmp_path):
  examples, _ = built
  again, _ = _build(tmp_path / 'again', _small_config(num_train=30, num_test=10))
  other, _ = _build(tmp_path / 'other', _small_config(num_train=30, num_test=10, seed=1))
  for split in ('train', 'test'):
    first = sorted(examples[split], key=lambda e: e['id'])
    for a, b in zip(sorted(again[split], key=lambda e: e['id']), first):
      for key in ('image', 'mask', 'label', 'digit_ids', 'clutter_ids'):
        np.testing.assert_array_equal(a[key], b[key])
  assert any(not np.array_equal(a['image'], b['image'])
             for a, b in zip(sorted(other['train'], key=lambda e: e['id']),
                             sorted(examples['train'], key=lambda e: e['id'])))


def test_bad_config_is_named():
  config = _small_config(name='bad', min_digit_frac=0.6, max_digit_frac=0.5)
  with pytest.raises(ValueError, match='digit_scenes/bad'):
    digit_scenes.DigitScenes(config=config, data_dir='/nonexistent')._split_generators(None)
