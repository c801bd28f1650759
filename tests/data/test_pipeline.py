"""vt_jax.data pipeline: determinism, sharding, resume, eval padding, hand-off."""

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from vt_jax import data
from vt_jax.config_lib import data as data_configs
from vt_jax.data import pipeline
from vt_jax.data import source
from vt_jax.data import testing as synthetic  # registers vt_jax_synthetic


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def _cfg(data_dir, config='clean', **kw):
  fields = dict(name=f'{synthetic.NAME}/{config}', data_dir=data_dir,
                num_classes=10, train_split='train', eval_split='test',
                image_size=16, eval_resize=20)
  fields.update(kw)
  return data_configs.imagenet(**fields)


@pytest.fixture(scope='module')
def mesh():
  return jax.make_mesh((8,), ('data',))


@pytest.fixture(scope='module', autouse=True)
def _prepare(data_dir):
  for config in ('clean', 'bad'):
    tfds.builder(f'{synthetic.NAME}/{config}', data_dir=data_dir).download_and_prepare(file_format='array_record')


def _take(it, n):
  return [jax.tree.map(np.asarray, next(it)) for _ in range(n)]


def test_mock_imagenet_batches_are_global_sharded_and_normalised(mesh):
  cfg = data_configs.imagenet(image_size=32, eval_resize=40)
  with tfds.testing.mock_data(num_examples=12):
    info = data.get_info(cfg)
    assert info.num_classes == 1000 and info.image_shape == (32, 32, 3)
    it = data.make_iterator(cfg, 'train', 16, mesh, seed=0)
    batch = next(it)
  assert set(batch) == {'image', 'label', 'valid'}
  assert batch['image'].shape == (16, 32, 32, 3)
  assert batch['image'].dtype == np.float32 and batch['label'].dtype == np.int32
  expected = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  for v in batch.values():
    assert v.sharding.is_equivalent_to(expected, v.ndim)
    assert {s.data.shape[0] for s in v.addressable_shards} == {2}
  image = np.asarray(batch['image'])
  # (0..255 - mean) / std with ImageNet statistics.
  assert image.min() >= -2.2 and image.max() <= 2.7 and image.std() > 0.3
  labels = np.asarray(batch['label'])
  assert labels.min() >= 0 and labels.max() < 1000
  assert np.all(np.asarray(batch['valid']) == 1)


def test_same_seed_same_batches_different_seed_different(data_dir, mesh):
  cfg = _cfg(data_dir, augment='randaugment')
  a = _take(data.make_iterator(cfg, 'train', 8, mesh, seed=3), 3)
  b = _take(data.make_iterator(cfg, 'train', 8, mesh, seed=3), 3)
  c = _take(data.make_iterator(cfg, 'train', 8, mesh, seed=4), 3)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x['image'], y['image'])
    np.testing.assert_array_equal(x['label'], y['label'])
  assert any(not np.array_equal(x['image'], z['image']) for x, z in zip(a, c))


def test_eval_rows_split_over_processes_cover_the_split_once(data_dir):
  """Three simulated processes, each reading its third of the rows: every example once,
  the same number of steps for each (ceil(N / global batch)), padding rows valid=0."""
  cfg = _cfg(data_dir)
  reader = pipeline.Reader(cfg, 'eval', 12)
  assert reader.num_steps == pipeline.num_eval_steps(cfg, 12) == 2
  seen = []
  for step in range(reader.num_steps):
    for p in range(3):
      batch = reader.host_batch(step, np.arange(4 * p, 4 * p + 4))
      seen += batch['index'][batch['valid'] > 0].tolist()
      assert np.all((batch['index'] >= 0) == (batch['valid'] > 0))
  reader.close()
  assert sorted(seen) == list(range(21))


def test_resume_yields_exactly_the_remaining_batches(data_dir, mesh):
  cfg = _cfg(data_dir, augment='autoaugment')
  # 48 examples / 8 per batch = 6 steps per epoch: steps 4..9 cross an epoch.
  full = _take(data.make_iterator(cfg, 'train', 8, mesh, seed=1), 10)
  resumed = _take(data.make_iterator(cfg, 'train', 8, mesh, seed=1,
                                     start_step=4), 6)
  for x, y in zip(full[4:], resumed):
    np.testing.assert_array_equal(x['image'], y['image'])
    np.testing.assert_array_equal(x['label'], y['label'])
  # Epoch 2 visits the split in a different order than epoch 1.
  first = np.concatenate([b['label'] for b in full[:6]])
  second = np.concatenate([b['label'] for b in full[6:10]])
  assert not np.array_equal(first[:32], second)


def test_eval_pass_counts_every_example_once(data_dir, mesh):
  cfg = _cfg(data_dir)
  it = data.make_iterator(cfg, 'eval', 8, mesh)
  batches = list(it)
  assert len(batches) == len(it) == data.num_eval_steps(cfg, 8) == 3
  valid = np.concatenate([np.asarray(b['valid']) for b in batches])
  assert valid.sum() == 21 and np.all(valid[21:] == 0)
  padded = np.asarray(batches[-1]['image'])[5:]
  assert np.all(padded == 0)


def test_bad_batch_size_and_unprepared_dataset_errors(data_dir, mesh, tmp_path):
  with pytest.raises(ValueError, match='not divisible by the mesh axis'):
    data.make_iterator(_cfg(data_dir), 'train', 12, mesh)
  with pytest.raises(ValueError, match='config.data.eval_resize=20 is smaller'):
    data.make_iterator(_cfg(data_dir, image_size=24), 'eval', 8, mesh)
  cfg = data_configs.imagenet(data_dir=str(tmp_path))
  with pytest.raises(FileNotFoundError) as e:
    data.make_iterator(cfg, 'train', 8, mesh)
  msg = str(e.value)
  assert "'imagenet2012'" in msg and str(tmp_path) in msg
  assert 'ILSVRC2012_img_train.tar' in msg
  assert f'python -m vt_jax.data --prepare=imagenet2012 --data_dir={tmp_path}' in msg


def test_bundled_digits_build_offline_and_eval_covers_split(tmp_path, mesh):
  cfg = data_configs.digits(data_dir=str(tmp_path))
  info = data.get_info(cfg)  # builds 'digits' here, from scikit-learn's copy
  assert info.num_examples == {'train': 1437, 'eval': 360}
  it = data.make_iterator(cfg, 'eval', 64, mesh)
  batches = [jax.tree.map(np.asarray, b) for b in it]
  assert len(batches) == 6 and sum(b['valid'].sum() for b in batches) == 360
  batch = next(data.make_iterator(cfg, 'train', 64, mesh, seed=0))
  assert batch['image'].shape == (64, 32, 32, 3)
  assert np.asarray(batch['label']).max() < 10


def test_train_rows_equal_reference_preprocessing_of_their_example(data_dir):
  """Row = normalise(imagenet.train_preprocess(bytes[index], seed(epoch, index))): the host
  path's images are those of the tf.data pipeline before the global order (same ops, same
  per-example seeds), so only the order of earlier runs changed."""
  from vt_jax.data import imagenet  # pylint: disable=g-import-not-at-top
  cfg = _cfg(data_dir, augment='randaugment')
  reader = pipeline.Reader(cfg, 'train', 8, seed=5)
  batch = reader.host_batch(7, np.arange(8))  # step 7 of 6 per epoch: epoch 1
  reader.close()
  assert np.all(batch['epoch'] == 1)
  builder = tfds.builder(cfg.name, data_dir=data_dir)
  raw = builder.as_data_source('train', decoders={'image': tfds.decode.SkipDecoding()})
  for row in range(8):
    i = int(batch['index'][row])
    expected = imagenet.train_preprocess(
        raw[i]['image'], np.array([5 * 1_000_003 + 1, i]), image_size=16,
        augment='randaugment')
    expected = (expected.numpy() - np.asarray(cfg.mean)) / np.asarray(cfg.std)
    np.testing.assert_allclose(batch['image'][row], expected, atol=1e-5)
    assert batch['label'][row] == int(raw[i]['label'])


def test_segmentation_train_batches_are_deterministic_with_masks(tmp_path, mesh):
  cfg = data_configs.lip(name=f'{synthetic.NAME}/seg', data_dir=str(tmp_path),
                         num_classes=5, train_split='train', eval_split='test',
                         image_size=24, scale_range=(0.8, 1.2),
                         skip_bad_examples=True)
  a = _take(data.make_iterator(cfg, 'train', 8, mesh, seed=2), 2)
  b = _take(data.make_iterator(cfg, 'train', 8, mesh, seed=2, start_step=1), 1)
  assert a[0]['mask'].shape == (8, 24, 24) and a[0]['mask'].dtype == np.int32
  np.testing.assert_array_equal(a[1]['mask'], b[0]['mask'])
  np.testing.assert_array_equal(a[1]['image'], b[0]['image'])
  for batch in a:
    assert set(np.unique(batch['mask'])) <= {0, 1, 2, 3, 4, 255}


def test_segmentation_config_must_match_builder_mask_classes(mesh):
  cfg = data_configs.digit_scenes(32, num_classes=10)
  with pytest.raises(ValueError, match=r"config.data.num_classes=10 but dataset "
                                       r"'digit_scenes/32' declares num_classes=11"):
    data.make_iterator(cfg, 'train', 8, mesh)
  for make in (data_configs.lip, data_configs.coco_stuff, data_configs.digit_scenes):
    pipeline._check_segmentation_meta(make())  # the defaults agree


def test_tfrecord_dataset_names_the_convert_command_which_converts_in_place(tmp_path):
  name = f'{synthetic.NAME}/clean'
  data_dir = str(tmp_path)
  tfds.builder(name, data_dir=data_dir).download_and_prepare()  # TFRecord (tfds' default)
  with pytest.raises(FileNotFoundError) as e:
    source.open_records(tfds.builder(name, data_dir=data_dir), 'test', name, data_dir)
  command = f'python -m vt_jax.data --convert={name} --data_dir={data_dir}'
  assert command in str(e.value)
  expected = [int(x['label']) for x in tfds.builder(name, data_dir=data_dir).as_dataset(
      split='test', decoders={'image': tfds.decode.SkipDecoding()})]
  written = source.convert_to_array_record(tfds.builder(name, data_dir=data_dir))  # --convert
  assert len(written) == 2 and all('.array_record-' in w for w in written)
  records = source.open_records(tfds.builder(name, data_dir=data_dir), 'test', name, data_dir)
  assert [int(records[i]['label']) for i in range(len(records))] == expected  # same order


def test_bundled_dataset_prepared_as_tfrecord_is_converted_on_first_use(tmp_path, mesh):
  name = f'{synthetic.NAME}/clean'
  tfds.builder(name, data_dir=str(tmp_path)).download_and_prepare()  # an earlier vt_jax's
  batch = next(data.make_iterator(_cfg(str(tmp_path)), 'eval', 8, mesh))
  assert np.asarray(batch['valid']).sum() == 8
