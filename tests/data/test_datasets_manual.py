"""LIP and COCO-Stuff builders on tiny fake directories in the official layout."""

import os

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

import vt_jax.data.datasets  # pylint: disable=unused-import  (registers builders)
from vt_jax.data.datasets import _manual
from vt_jax.data.datasets import coco_stuff
from vt_jax.data.datasets import lip


def _write_jpeg(path, height, width, seed, mode='RGB'):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  rng = np.random.default_rng(seed)
  pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
  Image.fromarray(pixels).convert(mode).save(path, format='JPEG', quality=90)


def _write_mask(path, mask):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.asarray(mask, np.uint8), mode='L').save(path)


def _build(name, manual_dir, data_dir):
  tfds.disable_progress_bar()
  builder = tfds.builder(name, data_dir=str(data_dir))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  return {split: {e['id'].decode(): e for e in tfds.as_numpy(builder.as_dataset(split))}
          for split in builder.info.splits}


def _fake_lip(root, bad_value=None, corrupt=None):
  """Writes LIP's layout; returns {split: {id: mask}}."""
  masks = {}
  for split, prefix, ids in (('train', 'train', ['100_1', '101_2', '102_3']),
                             ('validation', 'val', ['200_1', '201_2'])):
    masks[split] = {}
    with open(os.path.join(_mkdir(root, 'TrainVal_images'), f'{prefix}_id.txt'), 'w') as f:
      f.write('\n'.join(ids) + '\n')
    for k, example_id in enumerate(ids):
      height, width = 12 + 4 * k, 20 - 2 * k
      mode = 'L' if (split, k) == ('validation', 1) else 'RGB'  # A greyscale JPEG.
      _write_jpeg(os.path.join(root, 'TrainVal_images', f'{prefix}_images',
                               example_id + '.jpg'), height, width, seed=k, mode=mode)
      mask = np.random.default_rng(k).integers(0, lip.NUM_CLASSES, (height, width))
      mask[0, 0] = lip.NUM_CLASSES - 1
      mask[-1, -1] = lip.IGNORE_LABEL
      _write_mask(os.path.join(root, 'TrainVal_parsing_annotations',
                               f'{prefix}_segmentations', example_id + '.png'), mask)
      masks[split][example_id] = mask
  if bad_value is not None:
    bad = masks['validation']['201_2'].copy()
    bad[3, 4] = bad_value
    _write_mask(os.path.join(root, 'TrainVal_parsing_annotations', 'val_segmentations',
                             '201_2.png'), bad)
  if corrupt is not None:
    path = os.path.join(root, 'TrainVal_images', 'train_images', '101_2.jpg')
    with open(path, 'rb') as f:
      data = f.read()
    with open(path, 'wb') as f:
      f.write(b'this is not a JPEG' if corrupt == 'garbage' else data[:len(data) // 2])
  return masks


def _mkdir(*parts):
  path = os.path.join(*parts)
  os.makedirs(path, exist_ok=True)
  return path


def test_lip_reads_official_layout(tmp_path):
  masks = _fake_lip(tmp_path / 'manual')
  built = _build('lip', tmp_path / 'manual', tmp_path / 'data')
  assert set(built) == {'train', 'validation'}
  for split in built:
    assert set(built[split]) == set(masks[split])
    for example_id, e in built[split].items():
      np.testing.assert_array_equal(e['mask'], masks[split][example_id])  # Unchanged ids.
      assert e['image'].shape == masks[split][example_id].shape + (3,)
  # RGB JPEGs are stored byte for byte (no re-encoding loss).
  raw = tfds.builder('lip', data_dir=str(tmp_path / 'data')).as_dataset(
      'train', decoders={'image': tfds.decode.SkipDecoding()})
  stored = {e['id'].decode(): e['image'] for e in tfds.as_numpy(raw)}
  for example_id, data in stored.items():
    assert data == (tmp_path / f'manual/TrainVal_images/train_images/{example_id}.jpg').read_bytes()
  grey = built['validation']['201_2']['image']
  assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()


def test_lip_rejects_unknown_class_naming_split_and_file(tmp_path):
  _fake_lip(tmp_path / 'manual', bad_value=20)
  with pytest.raises(_manual.BadExampleError,
                     match=r"lip: split 'validation': mask .*201_2\.png.* class ids \[20\]"):
    _build('lip', tmp_path / 'manual', tmp_path / 'data')


@pytest.mark.parametrize('corrupt', ['garbage', 'truncated'])
def test_lip_rejects_corrupt_image_naming_file(tmp_path, corrupt):
  _fake_lip(tmp_path / 'manual', corrupt=corrupt)
  with pytest.raises(_manual.BadExampleError,
                     match=r"lip: split 'train': cannot decode image file .*101_2\.jpg"):
    _build('lip', tmp_path / 'manual', tmp_path / 'data')


def test_lip_missing_files_are_listed_with_instructions(tmp_path):
  _mkdir(tmp_path, 'manual', 'TrainVal_images', 'train_images')
  with pytest.raises(FileNotFoundError) as info:
    _build('lip', tmp_path / 'manual', tmp_path / 'data')
  message = str(info.value)
  assert 'TrainVal_parsing_annotations/val_segmentations' in message
  assert 'TrainVal_images/train_id.txt' in message
  assert 'TrainVal_images/train_images,' not in message  # Present: not listed.
  assert 'python -m vt_jax.data --prepare=lip' in message


def test_coco_stuff_class_mapping():
  lookup = coco_stuff.raw_to_class_lookup()
  assert coco_stuff.NUM_CLASSES == 171
  assert (lookup[list(coco_stuff.UNUSED_RAW_VALUES)] == -1).all()
  used = lookup[lookup >= 0]
  assert sorted(used[used != 255].tolist()) == list(range(171))
  # Things: raw 0..10 keep their index, 12 (id 13 'stop sign') follows as 11;
  # stuff starts at raw 91 (id 92 'banner') = class 80; raw 181 (id 182) = 170.
  assert lookup[10] == 10 and lookup[12] == 11 and lookup[91] == 80 and lookup[181] == 170
  assert lookup[255] == 255 and (lookup[182:255] == -1).all()


def _fake_coco(root, bad_value=None):
  raws = {}
  for split, folder, stems in (('train', 'train2017', ['000000000009', '000000000025']),
                               ('validation', 'val2017', ['000000000139'])):
    raws[split] = {}
    for k, stem in enumerate(stems):
      height, width = 16 + 2 * k, 24
      _write_jpeg(os.path.join(root, 'images', folder, stem + '.jpg'), height, width, seed=k)
      rng = np.random.default_rng(10 + k)
      raw = rng.choice(np.array(coco_stuff.USED_RAW_VALUES + (255,)), size=(height, width))
      raw[:2, :4] = [[0, 12, 91, 181], [255, 10, 13, 92]]
      if bad_value is not None and split == 'validation':
        raw[5, 5] = bad_value
      _write_mask(os.path.join(root, 'stuffthingmaps_trainval2017', folder, stem + '.png'), raw)
      raws[split][stem] = raw
  return raws


def test_coco_stuff_reads_official_layout_and_maps_classes(tmp_path):
  raws = _fake_coco(tmp_path / 'manual')
  built = _build('coco_stuff', tmp_path / 'manual', tmp_path / 'data')
  lookup = coco_stuff.raw_to_class_lookup()
  for split in ('train', 'validation'):
    assert set(built[split]) == set(raws[split])
    for stem, e in built[split].items():
      np.testing.assert_array_equal(e['mask'], lookup[raws[split][stem]])
      assert e['image'].shape == raws[split][stem].shape + (3,)
      np.testing.assert_array_equal(e['mask'][:2, :4], [[0, 11, 80, 170], [255, 10, 12, 81]])
      assert e['mask'].max() == 255 and np.sort(np.unique(e['mask']))[-2] <= 170


@pytest.mark.parametrize('bad_value', [11, 90, 200])
def test_coco_stuff_rejects_unused_or_out_of_range_ids(tmp_path, bad_value):
  _fake_coco(tmp_path / 'manual', bad_value=bad_value)
  with pytest.raises(_manual.BadExampleError,
                     match=rf"coco_stuff: split 'validation': mask .*000000000139\.png.*"
                           rf"class ids \[{bad_value}\]"):
    _build('coco_stuff', tmp_path / 'manual', tmp_path / 'data')


def test_coco_stuff_label_without_image_is_named(tmp_path):
  _fake_coco(tmp_path / 'manual')
  os.remove(tmp_path / 'manual/images/train2017/000000000025.jpg')
  with pytest.raises(FileNotFoundError, match=r"000000000025\.png.* has no image .*000000000025\.jpg"):
    _build('coco_stuff', tmp_path / 'manual', tmp_path / 'data')


def test_image_and_mask_size_mismatch_is_named(tmp_path):
  _fake_lip(tmp_path / 'manual')
  _write_mask(tmp_path / 'manual/TrainVal_parsing_annotations/train_segmentations/102_3.png',
              np.zeros((5, 5)))
  with pytest.raises(_manual.BadExampleError, match=r"102_3\.jpg.*is \(20, 16\).*\(5, 5\)"):
    _build('lip', tmp_path / 'manual', tmp_path / 'data')


def test_prepare_cli_builds_lip_from_manual_dir(tmp_path):
  """The command the not-prepared error prints works (tfds's CLI needs Beam)."""
  import subprocess
  import sys
  masks = _fake_lip(tmp_path / 'manual')
  out = subprocess.run(
      [sys.executable, '-m', 'vt_jax.data', '--prepare=lip', f'--data_dir={tmp_path / "data"}',
       f'--manual_dir={tmp_path / "manual"}'], capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-2000:]
  assert 'prepared lip/' in out.stdout
  builder = tfds.builder('lip', data_dir=str(tmp_path / 'data'))
  assert builder.info.splits['train'].num_examples == len(masks['train'])
