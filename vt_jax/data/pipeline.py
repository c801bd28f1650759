"""tfds builder -> tf.data -> global `jax.Array` batches sharded over the mesh.

Per process: read a disjoint contiguous slice of the split (`source.py`),
visit it in a per-epoch seeded order (train, infinite) or once in order (eval),
skip to `start_step` BEFORE decoding (resume; see `source.py`), decode +
validate, then preprocess each example in parallel (`examples.py`), batch to
`global_batch_size // process_count`, prefetch, and hand each batch to JAX as a
global array sharded `P(data_axis)` with `jax.make_array_from_process_local_data`.

Bad examples (undecodable bytes, label out of range, mask with unknown classes)
never raise inside tf.data: each example is decoded in its own one-element
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
import re

import jax
import tensorflow as tf

from vt_jax.data import BadExampleError
from vt_jax.data import DatasetInfo
from vt_jax.data import examples
from vt_jax.data import source

AUTOTUNE = tf.data.AUTOTUNE


class CorruptRecordError(ValueError):
  """A damaged data file (tf.data's DataLossError), with the file named."""


def _corrupt_files(builder, split_name: str, offset: int | None) -> list[str]:
  """The files of `split_name` that tf.data cannot read through.

  tf.data's DataLossError gives only a byte offset ("corrupted record at N"): files
  shorter than N cannot hold it, the others are read to the end (on error only) to find it.
  """
  base = split_name.split('[')[0]
  paths = [str(p) for p in builder.info.splits[base].filepaths]
  if offset is not None:
    paths = [p for p in paths if tf.io.gfile.stat(p).length > offset]
  bad = []
  for path in paths:
    try:
      for _ in tf.data.TFRecordDataset(path, buffer_size=1 << 20):
        pass
    except tf.errors.DataLossError:
      bad.append(path)
  return bad


def corrupt_record_message(cfg, builder, split_name: str, error) -> str:
  message = getattr(error, 'message', str(error)).strip().splitlines()[0]
  match = re.search(r'corrupted record at (\d+)', message)
  files = _corrupt_files(builder, split_name, int(match.group(1)) if match else None)
  where = (f"file {files[0]}" if len(files) == 1 else
           f"files {files}" if files else "one of its files (none failed when re-read)")
  return (f"dataset {cfg.name!r}, split {split_name!r}: damaged data in {where} "
          f"({message}). Rebuild the dataset: move {builder.data_dir} aside and run again "
          "(bundled datasets rebuild themselves; others with python -m vt_jax.data "
          f"--prepare={cfg.name} --data_dir=...).")


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


def _check_segmentation_meta(cfg) -> None:
  """config.data must agree with the builder's declared mask classes."""
  try:
    from vt_jax.data.datasets import SEGMENTATION  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  meta = SEGMENTATION.get(cfg.name.split('/')[0])
  if meta is None:
    return
  for field in ('num_classes', 'ignore_label'):
    if cfg.get(field) != getattr(meta, field):
      raise ValueError(
          f'config.data.{field}={cfg.get(field)} but dataset {cfg.name!r} '
          f'declares {field}={getattr(meta, field)} for its masks; use '
          'vt_jax.config_lib.data.<dataset>() or fix the override.')


def get_info(cfg) -> DatasetInfo:
  task = _task(cfg)
  if task == 'segmentation':
    _check_segmentation_meta(cfg)
  builder = source.get_builder(cfg.name, cfg.data_dir)
  return DatasetInfo(
      name=cfg.name, task=task, num_classes=_num_classes(cfg, builder),
      num_examples={
          s: source.split_num_examples(builder, _split_name(cfg, s), cfg.data_dir)
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
  n = source.split_num_examples(builder, cfg.eval_split, cfg.data_dir)
  return max(1, math.ceil(math.ceil(n / process_count) / local))


# --- datasets -----------------------------------------------------------------

def build_dataset(cfg, split: str, local_batch: int, *, seed: int = 0,
                  start_step: int = 0, process_index: int = 0,
                  process_count: int = 1, num_threads: int | None = None):
  """Returns (tf.data.Dataset of local batches, context dict) for one process.

  Batches hold 'image', 'label', ['mask'], 'valid' plus 'index' (example
  position in the split, -1 for padding) and 'bad' (example failed processing).
  """
  if _task(cfg) == 'segmentation':
    _check_segmentation_meta(cfg)
  builder = source.get_builder(cfg.name, cfg.data_dir)
  split_name = _split_name(cfg, split)
  total = source.split_num_examples(builder, split_name, cfg.data_dir)
  start, end = source.shard_bounds(total, process_index, process_count)
  shard = source.sub_split(split_name, start, end, total)
  records = source.read_split(builder, shard, cfg.name, cfg.data_dir)
  records = records.enumerate(start=start)
  train = split == 'train'
  processor = examples.Processor(cfg, builder, train, _num_classes(cfg, builder))
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

  def safe_decode(epoch, index, features):
    one = tf.data.Dataset.from_tensors((epoch, index, features))
    good = one.map(lambda e, i, f: processor.decode(e, i, f, base_seed))
    bad = tf.data.Dataset.from_tensors(
        processor.decode_placeholder(epoch, index, base_seed))
    return good.ignore_errors().concatenate(bad).take(1)

  ds = stream.interleave(safe_decode, cycle_length=AUTOTUNE, block_length=1,
                         num_parallel_calls=AUTOTUNE, deterministic=True)
  ds = ds.map(processor.finish, num_parallel_calls=AUTOTUNE)
  if not train:
    pad = max(0, steps * local_batch - max(0, end - start - start_step * local_batch))
    ds = ds.concatenate(
        tf.data.Dataset.from_tensors(processor.pad_row()).repeat(pad))
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
  processor = context['processor']
  for features in records.skip(index - context['shard_start']).take(1):
    if processor.has_label:
      label = int(features['label'])
      if not 0 <= label < processor.label_classes:
        return f'label {label} out of range [0, {processor.label_classes})'
    try:
      processor.process_eagerly(features, index, context['seed'])
    except (tf.errors.OpError, ValueError) as e:
      message = getattr(e, 'message', str(e)).strip().splitlines()[0]
      return re.sub(r'\{\{function_node [^}]*\}\}\s*', '', message)
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
    try:
      batch = next(self._it)
    except tf.errors.DataLossError as e:
      raise CorruptRecordError(corrupt_record_message(
          self.cfg, self._context['builder'], self._context['split_name'], e)) from None
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
