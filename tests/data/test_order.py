"""The global example order: a pinned bijection, the same rows on every topology, O(1) resume."""

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from vt_jax.config_lib import data as data_configs
from vt_jax.data import order
from vt_jax.data import pipeline
from vt_jax.data import source
from vt_jax.data import testing as synthetic  # registers vt_jax_synthetic


@pytest.mark.parametrize('n', [1, 7, 1437, 1_281_167])
def test_permutation_is_a_bijection(n):
  for seed, epoch in ((0, 0), (3, 11)):
    perm = order.permute(np.arange(n), n, seed, epoch)
    assert perm.dtype == np.int64
    counts = np.bincount(perm, minlength=n)  # vectorised: every value exactly once
    assert len(counts) == n and np.all(counts == 1)


def test_permutation_golden_values():
  """Pinned: a change here reorders every run's data (then bump order.ORDER_VERSION)."""
  assert order.permute(np.arange(7), 7, 0, 0).tolist() == [1, 4, 6, 2, 0, 5, 3]
  assert order.permute(np.arange(8), 1437, 0, 0).tolist() == [
      27, 1290, 1186, 1397, 927, 980, 172, 529]
  assert order.permute(np.arange(8), 1_281_167, 0, 0).tolist() == [
      1188291, 907607, 537086, 968162, 206837, 669288, 1143890, 34391]
  assert order.permute([0, 1436, 700], 1437, 1, 0).tolist() == [
      280] + order.permute([1436, 700], 1437, 1, 0).tolist()
  assert order.permute(np.arange(5), 1437, 1, 0).tolist() == [280, 393, 524, 726, 1305]
  assert order.permute(np.arange(5), 1437, 0, 1).tolist() == [666, 97, 1061, 1035, 786]


def test_seed_and_epoch_are_not_interchangeable():
  a = order.permute(np.arange(1437), 1437, 0, 1)
  b = order.permute(np.arange(1437), 1437, 1, 0)
  assert not np.array_equal(a, b)
  assert not np.array_equal(a, order.permute(np.arange(1437), 1437, 0, 0))


def test_stream_positions_map_to_epochs_of_the_permutation():
  epochs, examples = order.train_examples(np.arange(130, 160), 48, seed=2)
  assert epochs.tolist() == [2] * 14 + [3] * 16  # 130 = 2*48 + 34
  np.testing.assert_array_equal(examples[:14], order.permute(np.arange(34, 48), 48, 2, 2))
  np.testing.assert_array_equal(examples[14:], order.permute(np.arange(16), 48, 2, 3))


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp('tfds'))
  tfds.builder(f'{synthetic.NAME}/bad', data_dir=d).download_and_prepare(
      file_format='array_record')
  return d


def _cfg(data_dir, **kw):
  fields = dict(name=f'{synthetic.NAME}/bad', data_dir=data_dir, num_classes=10,
                train_split='train', eval_split='test', image_size=8, eval_resize=8,
                skip_bad_examples=True)
  fields.update(kw)
  return data_configs.imagenet(**fields)


def _layout_rows(processes: int, devices_per_process: int, batch: int):
  """Rows each simulated process would read: a mesh over processes x devices of the 8
  simulated CPU devices, process p owning the p-th run of devices_per_process devices."""
  devices = jax.devices()[:processes * devices_per_process]
  mesh = jax.make_mesh((len(devices),), ('data',), devices=devices)
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  flat = list(mesh.devices.flat)
  return [order.local_rows(sharding, batch, flat[p * devices_per_process:
                                                  (p + 1) * devices_per_process])
          for p in range(processes)]


def test_layouts_give_the_same_global_batches(data_dir):
  """1x2, 2x1, 4x1, 3x1 (processes x devices): the same example indices, image bytes and
  valid=0 rows as one reader of whole batches, for 100 steps; each epoch once over N."""
  batch, steps = 12, 100
  reader = pipeline.Reader(_cfg(data_dir), 'train', batch, seed=4, num_threads=2)
  reference = [reader.host_batch(s, np.arange(batch)) for s in range(steps)]
  index = np.concatenate([b['index'] for b in reference])
  for epoch in range(steps * batch // 48):
    assert sorted(index[epoch * 48:(epoch + 1) * 48].tolist()) == list(range(48))
  valid = np.concatenate([b['valid'] for b in reference])
  assert set(index[valid == 0].tolist()) == {5, 11}  # the two bad examples, every epoch
  for layout in ((1, 2), (2, 1), (4, 1), (3, 1)):
    per_process = _layout_rows(*layout, batch)
    rows = np.concatenate(per_process)
    assert sorted(rows.tolist()) == list(range(batch)), layout  # disjoint and covering
    for s in range(steps):
      got = {k: np.empty_like(v) for k, v in reference[s].items() if k != 'reason'}
      for p_rows in per_process:
        part = reader.host_batch(s, p_rows)
        for k in got:
          got[k][p_rows] = part[k]
      for k in got:
        np.testing.assert_array_equal(got[k], reference[s][k], err_msg=f'{layout} {s} {k}')
  reader.close()


def test_local_rows_follow_the_sharding_not_the_process_index():
  """A model axis replicates rows: devices holding the same data rows read the same rows."""
  mesh = jax.make_mesh((4, 2), ('data', 'model'))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  flat = list(mesh.devices.flat)
  assert order.local_rows(sharding, 8, flat[:2]).tolist() == [0, 1]  # one data shard
  assert order.local_rows(sharding, 8, flat[:4]).tolist() == [0, 1, 2, 3]
  assert order.local_rows(sharding, 8).tolist() == list(range(8))  # all addressable


class _CountingRecords:
  """Wraps a data source; records every example index read."""

  def __init__(self, records):
    self.records, self.read = records, []

  def __len__(self):
    return len(self.records)

  def __getitem__(self, i):
    self.read.append(i)
    return self.records[i]


@pytest.mark.parametrize('start', [0, 5, 6, 15])  # start, last step of epoch 0, epoch 1, 2.5
def test_resume_seeks_without_reading_and_matches_the_stream(data_dir, start, monkeypatch):
  cfg = _cfg(data_dir, eval_split='test')
  mesh = jax.make_mesh((8,), ('data',))
  batch = 8  # 48 examples: 6 steps per epoch
  reference = pipeline.Reader(cfg, 'train', batch, seed=1)
  expected = [reference.host_batch(s, np.arange(batch)) for s in (start, start + 1)]
  reference.close()
  counters = []
  opened = source.open_records

  def counting(*args, **kwargs):
    counters.append(_CountingRecords(opened(*args, **kwargs)))
    return counters[-1]

  monkeypatch.setattr(source, 'open_records', counting)
  it = pipeline.Iterator(cfg, 'train', batch, mesh, seed=1, start_step=start, prefetch=1)
  assert counters[-1].read == []  # nothing read before the first batch is asked for
  first = jax.tree.map(np.asarray, next(it))
  # Exactly the examples of batch `start` and of the one prefetched after it.
  assert counters[-1].read == (expected[0]['index'].tolist() +
                               expected[1]['index'].tolist())
  second = jax.tree.map(np.asarray, next(it))
  it.close()
  for got, want in zip((first, second), expected):
    np.testing.assert_array_equal(got['image'], want['image'])
    np.testing.assert_array_equal(got['label'], want['label'])
    np.testing.assert_array_equal(got['valid'], want['valid'])


def test_device_augment_batches_carry_uint8_crops_epoch_and_index(data_dir):
  """augment_device: the host sends the unflipped uint8 crop; flip and policy come later."""
  from vt_jax.data import imagenet  # pylint: disable=g-import-not-at-top
  cfg = _cfg(data_dir, augment='autoaugment', augment_device=True)
  mesh = jax.make_mesh((8,), ('data',))
  it = pipeline.Iterator(cfg, 'train', 8, mesh, seed=3, start_step=7)
  got = jax.tree.map(np.asarray, next(it))
  it.close()
  assert set(got) == {'image', 'label', 'valid', 'epoch', 'index'}
  assert got['image'].dtype == np.uint8 and got['epoch'].dtype == np.int32
  epochs, indices = order.train_examples(np.arange(56, 64), 48, seed=3)
  np.testing.assert_array_equal(got['epoch'], epochs)
  np.testing.assert_array_equal(got['index'], indices)
  builder = tfds.builder(cfg.name, data_dir=data_dir)
  raw = builder.as_data_source('train', decoders={'image': tfds.decode.SkipDecoding()})
  assert got['valid'].sum() >= 6
  for row in np.flatnonzero(got['valid']):
    i = int(indices[row])
    crop = imagenet.train_decode_crop(raw[i]['image'], np.array([3 * 1_000_003 + 1, i]),
                                      image_size=8)
    np.testing.assert_array_equal(got['image'][row],
                                  np.clip(np.round(crop.numpy()), 0, 255).astype(np.uint8))
