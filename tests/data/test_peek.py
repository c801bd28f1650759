"""Peek tool: `python -m vt_jax.data` end to end, and its summary / PNG grid."""

import os
import re
import subprocess
import sys

import jax
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from vt_jax import data
from vt_jax.config_lib import data as data_configs
from vt_jax.data import peek

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_CONFIG = '''
import ml_collections
from vt_jax.config_lib import data as data_configs
from vt_jax.data import testing  # registers vt_jax_synthetic

def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.data = data_configs.imagenet(
      name='vt_jax_synthetic/clean', data_dir={data_dir!r}, num_classes=10,
      train_split='train', eval_split='test', image_size=16, eval_resize=20)
  return config
'''


@pytest.mark.slow
def test_peek_cli_prints_batches_and_writes_png(tmp_path):
  cfg_file = tmp_path / 'peek_cfg.py'
  cfg_file.write_text(_CONFIG.format(data_dir=str(tmp_path / 'tfds')))
  env = dict(os.environ, PYTHONPATH=_REPO, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=8')
  out = subprocess.run(
      [sys.executable, '-m', 'vt_jax.data', f'--config={cfg_file}',
       '--batches=2', '--split=eval', f'--save={tmp_path / "png"}',
       '--config.data.image_size=24', '--config.data.eval_resize=28'],
      cwd=_REPO, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  text = out.stdout
  assert 'batch 0:' in text and 'batch 1:' in text and 'batch 2:' not in text
  # The --config.data.image_size override reached the pipeline.
  assert re.search(r'image\s+\(16, 24, 24, 3\)\s+float32', text)
  hist = re.search(r'batch 0:.*?label histogram: ([^\n]*)', text, re.S).group(1)
  assert sum(int(p.split(':')[1]) for p in hist.split()) == 16
  grid = Image.open(tmp_path / 'png' / 'eval_batch0.png')
  assert grid.size == (4 * (24 * 4 + 2), 4 * (24 * 4 + 2))  # 4x4 tiles, zoom 4


def test_summary_and_grid_for_mock_imagenet(tmp_path):
  cfg = data_configs.imagenet(image_size=32, eval_resize=40)
  mesh = jax.make_mesh((8,), ('data',))
  with tfds.testing.mock_data(num_examples=10):
    info = data.get_info(cfg)
    batch = next(data.make_iterator(cfg, 'eval', 8, mesh))
  text = peek.summarise(batch, info, 0)
  labels = np.asarray(batch['label'])
  for label, count in zip(*np.unique(labels, return_counts=True)):
    assert f'{label}:{count}' in text
  assert 'valid rows: 8/8' in text
  peek.save_grid(batch, cfg, info, str(tmp_path / 'g.png'))
  grid = np.asarray(Image.open(tmp_path / 'g.png'))
  # Un-normalised back to pixels: the first tile matches the batch's image.
  first = np.clip(np.asarray(batch['image'])[0] * np.asarray(cfg.std) +
                  np.asarray(cfg.mean), 0, 255).astype(np.uint8)
  zoom = 3
  tile = grid[0:32 * zoom:zoom, 0:32 * zoom:zoom]  # nearest-upscaled tile 0
  np.testing.assert_array_equal(tile[5:], first[5:])  # rows below the label text


def test_grid_overlays_mask_classes_only_where_labelled(tmp_path):
  info = data.DatasetInfo(name='x', task='segmentation', num_classes=3,
                          num_examples={'train': 1, 'eval': 1},
                          image_shape=(4, 4, 3), ignore_label=255)
  cfg = data_configs.lip(mean=(0., 0., 0.), std=(1., 1., 1.))
  image = np.full((1, 96, 96, 3), 100, np.float32)
  mask = np.zeros((1, 96, 96), np.int32)
  mask[0, 50:, :] = 2
  mask[0, :, 80:] = 255
  batch = {'image': image, 'mask': mask, 'label': np.zeros(1, np.int32),
           'valid': np.ones(1, np.float32)}
  peek.save_grid(batch, cfg, info, str(tmp_path / 's.png'))
  grid = np.asarray(Image.open(tmp_path / 's.png'))
  assert np.all(grid[30, 10] == 100)        # background: untouched
  assert np.all(grid[30, 90] == 100)        # ignore_label: untouched
  colour = peek._palette(3)[2].astype(np.float32)
  np.testing.assert_allclose(grid[70, 10], 0.5 * 100 + 0.5 * colour, atol=1)
