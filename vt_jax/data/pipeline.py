"""tfds builder -> tf.data -> global `jax.Array` batches sharded over the mesh.

Per process: read a disjoint contiguous slice of the split (`source.py`),
visit it in a per-epoch seeded order (train, infinite) or once in order (eval),
skip to `start_step` BEFORE decoding (resume; see `source.py`), decode +
validate + preprocess each example in parallel, batch to
`global_batch_size // process_count`, prefetch, and hand each batch to JAX as a
global array sharded `P(data_axis)` with `jax.make_array_from_process_local_data`.

Bad examples (undecodable bytes, label out of range, mask with unknown classes)
never raise inside tf.data: each example is processed in its own one-element
dataset with `ignore_errors`, and a failure yields a placeholder row marked bad.
On the host, a bad row either raises `BadExampleError` naming the dataset,
split and example index (with the reason, found by re-processing that one
example eagerly), or -- with `config.data.skip_bad_examples=True` -- is kept as
a `valid=0` row and counted in `it.num_skipped`. Keeping the row (instead of
dropping it) keeps every batch exactly `global_batch_size` long and every step
at a fixed position in the record stream, so resume stays exact; consumers must
weight per-example losses/metrics by `batch['valid']`.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import tensorflow as tf

from vt_jax.data import DatasetInfo
from vt_jax.data import imagenet
from vt_jax.data import source

try:  # tf.data runs on the host; keep TF off the accelerators JAX uses.
  tf.config.set_visible_devices([], 'GPU')
except RuntimeError:  # TF already initialised devices: nothing to change.
  pass

AUTOTUNE = tf.data.AUTOTUNE


class BadExampleError(ValueError):
  """An example that cannot be decoded or carries an invalid label/mask."""


def _field(cfg, name, default=None):
  return cfg.get(name, default) if hasattr(cfg, 'get') else default


def _task(cfg) -> str:
  return _field(cfg, 'task', 'classification')


def _split_name(cfg, split: str) -> str:
  if split == 'train':
    return cfg.train_split
  if split == 'eval':
    return cfg.eval_split
  raise ValueError(f"split={split!r}: expected 'train' or 'eval'")


def _num_classes(cfg, builder) -> int:
  n = _field(cfg, 'num_classes')
  if n is None:
    label = builder.info.features.get('label') if hasattr(
        builder.info.features, 'get') else None
    if label is None or not hasattr(label, 'num_classes'):
      raise ValueError(
          f"config.data.num_classes is None and dataset {cfg.name!r} has no "
          "ClassLabel 'label' feature to read it from: set config.data.num_classes.")
    n = label.num_classes
  return int(n)


def get_info(cfg) -> DatasetInfo:
  builder = source.get_builder(cfg.name, cfg.data_dir)
  task = _task(cfg)
  return DatasetInfo(
      name=cfg.name, task=task, num_classes=_num_classes(cfg, builder),
      num_examples={
          s: source.split_num_examples(builder, _split_name(cfg, s))
          for s in ('train', 'eval')},
      image_shape=(cfg.image_size, cfg.image_size, 3),
      ignore_label=cfg.ignore_label if task == 'segmentation' else None)


def _per_process_batch(global_batch_size: int, process_count: int) -> int:
  if global_batch_size % process_count:
    raise ValueError(
        f'global_batch_size={global_batch_size} (the config\'s batch size) is '
        f'not divisible by jax.process_count()={process_count}: set the batch '
        f'size to a multiple of {process_count}.')
  return global_batch_size // process_count


def num_eval_steps(cfg, global_batch_size: int,
                   process_count: int | None = None) -> int:
  """Eval batches per pass: every process yields this many (padded)."""
  process_count = process_count or jax.process_count()
  local = _per_process_batch(global_batch_size, process_count)
  builder = source.get_builder(cfg.name, cfg.data_dir)
  n = source.split_num_examples(builder, cfg.eval_split)
  return max(1, math.ceil(math.ceil(n / process_count) / local))


# --- per-example processing ---------------------------------------------------

class _Processor:
  """Decodes, validates and preprocesses one example; builds placeholder rows."""

  def __init__(self, cfg, builder, train: bool):
    self.cfg, self.train = cfg, train
    self.task = _task(cfg)
    self.num_classes = _num_classes(cfg, builder)
    features = builder.info.features
    self.has_label = 'label' in features
    if self.task == 'segmentation':
      from vt_jax.data import segmentation  # pylint: disable=g-import-not-at-top
      self.seg = segmentation
      self.ignore_label = int(cfg.ignore_label)
      self.mask_is_image = isinstance(features['mask'], source.tfds.features.Image)
    mean = _field(cfg, 'mean', imagenet.IMAGENET_MEAN)
    std = _field(cfg, 'std', imagenet.IMAGENET_STD)
    self.mean = tf.constant(mean, tf.float32)
    self.std = tf.constant(std, tf.float32)

  def _check_label(self, label):
    return [tf.debugging.assert_non_negative(
                label, message='label out of range: negative'),
            tf.debugging.assert_less(
                label, tf.cast(self.num_classes, label.dtype),
                message=f'label out of range [0, {self.num_classes})')]

  def _classification(self, features, seed):
    cfg, image_bytes = self.cfg, features['image']
    size = cfg.image_size
    kind = _field(cfg, 'preprocess', 'imagenet')
    if kind == 'imagenet':
      if self.train:
        return imagenet.train_preprocess(
            image_bytes, seed, image_size=size, augment=cfg.augment,
            randaugment_layers=_field(cfg, 'randaugment_layers', 2),
            randaugment_magnitude=_field(cfg, 'randaugment_magnitude', 9.0))
      return imagenet.eval_preprocess(image_bytes, image_size=size,
                                      eval_resize=cfg.eval_resize)
    if kind == 'resize':  # small images (digits): no crop, optional augment
      image = tf.image.resize(imagenet.decode_image(image_bytes), [size, size])
      if self.train:
        image = imagenet.augment_lib.apply(
            cfg.augment, image, seed,
            randaugment_layers=_field(cfg, 'randaugment_layers', 2),
            randaugment_magnitude=_field(cfg, 'randaugment_magnitude', 9.0))
      return image
    raise ValueError(f"config.data.preprocess={kind!r}: expected 'imagenet' or "
                     "'resize'")

  def _segmentation(self, features, seed):
    image = imagenet.decode_image(features['image'])
    mask = features['mask']
    if self.mask_is_image:
      mask = tf.io.decode_png(mask, channels=1)
    if mask.shape.rank == 3:
      mask = mask[..., 0]
    mask = tf.cast(mask, tf.int32)
    known = (mask < self.num_classes) | (mask == self.ignore_label)
    check = tf.debugging.assert_equal(
        tf.reduce_all(known & (mask >= 0)), True,
        message=f'mask has classes outside [0, {self.num_classes}) that are '
                f'not the ignore_label {self.ignore_label}')
    with tf.control_dependencies([check]):
      mask = tf.identity(mask)
    feats = {'image': image, 'mask': mask}
    cfg = self.cfg
    if self.train:
      out = self.seg.train_preprocess(
          feats, crop_size=cfg.image_size, scale_range=tuple(cfg.scale_range),
          ignore_label=self.ignore_label, seed=seed)
    else:
      out = self.seg.eval_preprocess(feats, crop_size=cfg.image_size,
                                     ignore_label=self.ignore_label)
    return out['image'], tf.cast(out['mask'], tf.int32)

  def __call__(self, epoch, index, features, base_seed):
    """-> dict(image, [label], [mask], index, bad, valid); raises on bad data."""
    seed = tf.stack([base_seed * 1_000_003 + epoch, index])
    out = {}
    checks = []
    if self.has_label:
      label = features['label']
      checks += self._check_label(label)
      out['label'] = tf.cast(label, tf.int32)
    if self.task == 'segmentation':
      image, out['mask'] = self._segmentation(features, seed)
    else:
      image = self._classification(features, seed)
    with tf.control_dependencies(checks):
      image = (tf.cast(image, tf.float32) - self.mean) / self.std
    size = self.cfg.image_size
    image.set_shape([size, size, 3])
    out['image'] = image
    if 'label' not in out:
      out['label'] = tf.zeros([], tf.int32)
    out.update(index=index, bad=tf.constant(False), valid=tf.constant(1.0))
    return out

  def placeholder(self, index, bad: bool):
    size = self.cfg.image_size
    out = {'image': tf.zeros([size, size, 3], tf.float32),
           'label': tf.zeros([], tf.int32),
           'index': tf.cast(index, tf.int64), 'bad': tf.constant(bad),
           'valid': tf.constant(0.0)}
    if self.task == 'segmentation':
      out['mask'] = tf.fill([size, size], self.ignore_label)
    return out


# --- datasets -----------------------------------------------------------------

def build_dataset(cfg, split: str, local_batch: int, *, seed: int = 0,
                  start_step: int = 0, process_index: int = 0,
                  process_count: int = 1, num_threads: int | None = None):
  """Returns (tf.data.Dataset of local batches, context dict) for one process.

  Batches hold 'image', 'label', ['mask'], 'valid' plus 'index' (example
  position in the split, -1 for padding) and 'bad' (example failed processing).
  """
  builder = source.get_builder(cfg.name, cfg.data_dir)
  split_name = _split_name(cfg, split)
  total = source.split_num_examples(builder, split_name)
  start, end = source.shard_bounds(total, process_index, process_count)
  shard = source.sub_split(split_name, start, end, total)
  records = source.read_split(builder, shard, cfg.name, cfg.data_dir)
  records = records.enumerate(start=start)
  train = split == 'train'
  processor = _Processor(cfg, builder, train)
  if train:
    if end == start:
      raise ValueError(f'split {split_name!r} of {cfg.name!r} has no examples '
                       f'for process {process_index}/{process_count}')
    stream = source.train_records(
        records, end - start, seed, _field(cfg, 'shuffle_buffer', 10_000),
        start_step * local_batch)
  else:
    stream = records.map(lambda i, f: (tf.constant(0, tf.int64), i, f))
    steps = math.ceil(math.ceil(total / process_count) / local_batch)
    stream = stream.skip(start_step * local_batch)
  base_seed = tf.constant(seed, tf.int64)

  def safe_process(epoch, index, features):
    one = tf.data.Dataset.from_tensors((epoch, index, features))
    good = one.map(lambda e, i, f: processor(e, i, f, base_seed)).ignore_errors()
    bad = tf.data.Dataset.from_tensors(processor.placeholder(index, bad=True))
    return good.concatenate(bad).take(1)

  ds = stream.interleave(safe_process, cycle_length=AUTOTUNE, block_length=1,
                         num_parallel_calls=AUTOTUNE, deterministic=True)
  if not train:
    pad = max(0, steps * local_batch - max(0, end - start - start_step * local_batch))
    ds = ds.concatenate(tf.data.Dataset.from_tensors(
        processor.placeholder(-1, bad=False)).repeat(pad))
  ds = ds.batch(local_batch, drop_remainder=True).prefetch(AUTOTUNE)
  options = tf.data.Options()
  options.deterministic = True
  if num_threads:
    options.threading.private_threadpool_size = num_threads
    options.threading.max_intra_op_parallelism = 1
  ds = ds.with_options(options)
  context = dict(builder=builder, split_name=split_name, shard=shard,
                 shard_start=start, processor=processor, seed=seed,
                 num_steps=None if train else steps - start_step)
  return ds, context


def diagnose(cfg, context, index: int) -> str:
  """Re-processes example `index` eagerly and returns why it fails."""
  records = source.read_split(context['builder'], context['shard'], cfg.name,
                              cfg.data_dir)
  for _, features in records.skip(index - context['shard_start']).take(1):
    try:
      context['processor'](tf.constant(0, tf.int64), tf.constant(index, tf.int64),
                           features, tf.constant(context['seed'], tf.int64))
    except (tf.errors.OpError, ValueError) as e:
      return getattr(e, 'message', str(e)).strip().splitlines()[0]
  return 'processing failed inside tf.data (could not reproduce eagerly)'


class Iterator:
  """Yields dicts of global jax.Arrays; see module docstring."""

  def __init__(self, cfg, split: str, global_batch_size: int, mesh, *,
               seed: int = 0, start_step: int = 0, data_axis: str = 'data'):
    self.cfg, self.split = cfg, split
    process_count = jax.process_count()
    local = _per_process_batch(global_batch_size, process_count)
    data_size = mesh.shape[data_axis]
    if global_batch_size % data_size:
      raise ValueError(
          f'global_batch_size={global_batch_size} (the config\'s batch size) is '
          f'not divisible by the mesh axis {data_axis!r} of size {data_size}.')
    self._ds, self._context = build_dataset(
        cfg, split, local, seed=seed, start_step=start_step,
        process_index=jax.process_index(), process_count=process_count)
    self._it = self._ds.as_numpy_iterator()
    self._sharding = jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec(data_axis))
    self._global_batch = global_batch_size
    self.num_skipped = 0

  def __iter__(self):
    return self

  def __len__(self) -> int:
    if self._context['num_steps'] is None:
      raise TypeError("the 'train' iterator is infinite and has no len()")
    return self._context['num_steps']

  def __next__(self):
    batch = next(self._it)
    bad, index = batch.pop('bad'), batch.pop('index')
    if bad.any():
      if not _field(self.cfg, 'skip_bad_examples', False):
        i = int(index[bad][0])
        raise BadExampleError(
            f"bad example in dataset {self.cfg.name!r}, split "
            f"{self._context['split_name']!r}, example index {i} (position in "
            f"the split, before shuffling): {diagnose(self.cfg, self._context, i)}."
            " Fix or remove it, or set config.data.skip_bad_examples=True to "
            "skip (valid=0) and count such examples.")
      self.num_skipped += int(bad.sum())
    return {k: jax.make_array_from_process_local_data(
                self._sharding, v, (self._global_batch,) + v.shape[1:])
            for k, v in batch.items()}


def make_iterator(cfg, split: str, global_batch_size: int, mesh, *,
                  seed: int = 0, start_step: int = 0,
                  data_axis: str = 'data') -> Iterator:
  return Iterator(cfg, split, global_batch_size, mesh, seed=seed,
                  start_step=start_step, data_axis=data_axis)
