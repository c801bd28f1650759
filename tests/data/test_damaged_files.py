"""A damaged data file is named in the error; a bundled dataset says it is built, not
downloaded."""

import logging
import os

import jax
import pytest

from vt_jax import data
from vt_jax.config_lib import data as data_configs
from vt_jax.data import pipeline
from vt_jax.data import source
from vt_jax.data import testing as synthetic  # registers vt_jax_synthetic

NAME = f'{synthetic.NAME}/clean'


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  """(data_dir, stdout of the build, log text of the build) of a fresh bundled build."""
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  records = []
  handler = logging.Handler()
  handler.emit = records.append
  absl_logger = logging.getLogger('absl')
  level = absl_logger.level
  absl_logger.setLevel(logging.INFO)
  absl_logger.addHandler(handler)
  capture = pytest.MonkeyPatch()
  import io  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  out = io.StringIO()
  capture.setattr(sys, 'stdout', out)
  try:
    source.get_builder(NAME, data_dir)
  finally:
    capture.undo()
    absl_logger.removeHandler(handler)
    absl_logger.setLevel(level)
  return data_dir, out.getvalue(), '\n'.join(r.getMessage() for r in records)


def test_bundled_dataset_build_says_building_not_downloading(built):
  _, stdout, log = built
  assert 'Downloading' not in stdout and 'downloaded' not in stdout
  assert f"building the bundled dataset '{NAME}'" in log
  assert 'nothing is downloaded' in log


def test_corrupt_record_error_names_the_file(built, tmp_path):
  data_dir, _, _ = built
  builder = source.get_builder(NAME, data_dir)
  (path,) = [str(p) for p in builder.info.splits['train'].filepaths]
  size = os.path.getsize(path)
  with open(path, 'r+b') as f:  # damage a record's payload in the middle of the file
    f.seek(size // 2)
    chunk = f.read(64)
    f.seek(size // 2)
    f.write(bytes(b ^ 0xFF for b in chunk))
  cfg = data_configs.imagenet(name=NAME, data_dir=data_dir, num_classes=10,
                              train_split='train', eval_split='train', image_size=16,
                              eval_resize=20)
  mesh = jax.make_mesh((8,), ('data',))
  with pytest.raises(pipeline.CorruptRecordError) as e:
    list(data.make_iterator(cfg, 'eval', 8, mesh))
  message = str(e.value)
  assert f'file {path} ' in message
  assert f"dataset '{NAME}', split 'train'" in message
  assert 'Corrupted' in message and 'Rebuild the dataset' in message  # array_record's reason
