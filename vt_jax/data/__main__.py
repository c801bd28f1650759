r"""Peek at what the model will see: `python -m vt_jax.data --config=configs/X.py`;
prepare a dataset from its manually downloaded files: `--prepare=NAME`; convert one
prepared as TFRecord (by tfds, or an earlier vt_jax) to ArrayRecord in place:
`--convert=NAME`.

    python -m vt_jax.data --config=configs/vt_r18.py --batches=2 --split=train \
        --save=/tmp/peek --config.data.augment=randaugment

    python -m vt_jax.data --prepare=imagenet2012 --data_dir=D --manual_dir=D/downloads/manual
    python -m vt_jax.data --convert=imagenet2012 --data_dir=D

Prints each batch's shapes, dtypes, value ranges and label (or mask class)
histogram; with --save=DIR writes DIR/<split>_batch0.png, a grid of the first
batch (un-normalised, masks overlaid in colour, label in the corner).
"""

from __future__ import annotations

import math
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from vt_jax import runtime
from vt_jax.data import peek

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'config file with a `data` section (config_lib.data.*)')
_BATCHES = flags.DEFINE_integer('batches', 2, 'number of batches to show')
_SPLIT = flags.DEFINE_enum('split', 'train', ['train', 'eval'], 'which split')
_SAVE = flags.DEFINE_string('save', None, 'directory for a PNG of the first batch')
_BATCH_SIZE = flags.DEFINE_integer(
    'batch_size', 16, 'global batch size (rounded up to a multiple of the '
    'device count)')
_SEED = flags.DEFINE_integer('seed', 0, 'shuffle/augmentation seed')
_START_STEP = flags.DEFINE_integer('start_step', 0, 'first batch to show')
_PREPARE = flags.DEFINE_string(
    'prepare', None, 'prepare this tfds dataset (e.g. imagenet2012, lip, coco_stuff) '
    'from the files in --manual_dir, then exit')
_CONVERT = flags.DEFINE_string(
    'convert', None, 'write an ArrayRecord copy of this TFRecord-prepared tfds dataset next '
    'to its files (vt_jax reads ArrayRecord; the TFRecord files stay), then exit')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'with --prepare/--convert: tfds data_dir')
_MANUAL_DIR = flags.DEFINE_string(
    'manual_dir', None, 'with --prepare: directory holding the downloaded files '
    '(default <data_dir>/downloads/manual)')


def main(argv):
  del argv
  runtime.setup_tensorflow()  # tf.data reads the batches; JAX owns the accelerators
  import jax  # pylint: disable=g-import-not-at-top
  from vt_jax import data  # pylint: disable=g-import-not-at-top
  if _CONVERT.value:
    from vt_jax.data import source  # pylint: disable=g-import-not-at-top
    source.register_bundled_builders()
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    builder = tfds.builder(_CONVERT.value, data_dir=_DATA_DIR.value)
    if not builder.is_prepared():
      raise app.UsageError(source.not_prepared_message(builder, _CONVERT.value,
                                                       _DATA_DIR.value))
    written = source.convert_to_array_record(builder)
    print(f'{builder.info.full_name} in {builder.data_dir}: ' +
          (f'wrote {len(written)} ArrayRecord files next to the TFRecord ones (vt_jax reads '
           'those; tfds and older vt_jax versions keep reading the TFRecord files)'
           if written else
           'already has ArrayRecord files'))
    return
  if _PREPARE.value:
    from vt_jax.data import source  # pylint: disable=g-import-not-at-top
    builder = source.prepare(_PREPARE.value, _DATA_DIR.value, _MANUAL_DIR.value)
    splits = {k: v.num_examples for k, v in builder.info.splits.items()}
    print(f'prepared {builder.info.full_name} in {builder.data_dir}: {splits}')
    return
  config = _CONFIG.value
  if config is None or 'data' not in config:
    raise app.UsageError('--config=FILE must give a config with a `data` section '
                         '(or use --prepare=NAME)')
  data_config = config.data
  info = data.get_info(data_config)
  print(info)
  n = jax.device_count()
  batch_size = math.ceil(_BATCH_SIZE.value / n) * n
  mesh = jax.make_mesh((n,), ('data',))
  it = data.make_iterator(data_config, _SPLIT.value, batch_size, mesh,
                          seed=_SEED.value, start_step=_START_STEP.value)
  for step, batch in zip(range(_BATCHES.value), it):
    print(peek.summarise(batch, info, _START_STEP.value + step))
    if step == 0 and _SAVE.value:
      path = os.path.join(_SAVE.value, f'{_SPLIT.value}_batch0.png')
      peek.save_grid(batch, data_config, info, path)
      print(f'  wrote {path}')
  print(f'bad examples skipped: {it.num_skipped}')


if __name__ == '__main__':
  runtime.setup(sys.argv)  # before JAX starts: XLA flag, malloc, quiet console
  app.run(main)
