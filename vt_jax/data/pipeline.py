"""Dataset -> global `jax.Array` batches sharded over the mesh, in one global order.

Order (`order.py`): global batch s holds stream positions [s*B, (s+1)*B); position g is
example `perm(seed, g div N)[g mod N]` of the train split (eval: example g, in split
order, once, then padding rows up to a whole batch). Each process computes which rows of the
global batch its devices hold from the batch sharding (`order.local_rows`), reads exactly
those examples from the ArrayRecord data source (`source.open_records`, random access),
processes them (`examples.Processor.process` under `tf.map_fn`, one graph call per batch
on a thread pool, a few batches ahead; segmentation, whose masks differ in size, one call
per example) and hands its rows to JAX with
`jax.make_array_from_callback`. So every topology -- 1 process x 8 devices, 8 x 1, 3 x 1 --
trains on the same rows in the same places, and resuming at step k starts reading at
position k*B: nothing is read or skipped before the first resumed batch.

Bad examples (undecodable bytes, label out of range, mask with unknown classes): the
example's error is caught where it is processed; the iterator either raises
`BadExampleError` naming the dataset, split, example index and reason, or -- with
`config.data.skip_bad_examples=True` -- keeps a `valid=0` row (zero image, label 0,
all-ignore mask) at the example's position and counts it in `it.num_skipped`. Keeping the
row keeps every batch exactly `global_batch_size` long; consumers weight per-example
losses/metrics by `batch['valid']`.

No tf.data: a thread pool over the data source has no iterator teardown, so a finished run
exits at once (tf.data's iterator could hang in its teardown after the run's last line).
"""

from __future__ import annotations

import collections
import concurrent.futures
import math
import os
import re

import jax
import numpy as np
import tensorflow as tf

from vt_jax.data import BadExampleError
from vt_jax.data import DatasetInfo
from vt_jax.data import examples
from vt_jax.data import order
from vt_jax.data import source



class CorruptRecordError(ValueError):
  """A damaged data file, with the file named."""


def corrupt_record_message(cfg, builder, split_name: str, files, error) -> str:
  message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
  files = sorted(set(f for f in files if f))
  where = (f"file {files[0]}" if len(files) == 1 else
           f"files {files}" if files else "one of its files")
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


def num_eval_steps(cfg, global_batch_size: int) -> int:
  """Eval batches per pass: ceil(N / global batch), whatever the number of processes."""
  builder = source.get_builder(cfg.name, cfg.data_dir)
  n = source.split_num_examples(builder, cfg.eval_split, cfg.data_dir)
  return max(1, math.ceil(n / global_batch_size))


def fingerprint(cfg, global_batch_size: int, seed: int) -> dict:
  """What fixes the train stream: a resumed run must match it to continue the same order."""
  builder = source.get_builder(cfg.name, cfg.data_dir)
  return dict(dataset=cfg.name, split=cfg.train_split, version=str(builder.info.version),
              num_examples=source.split_num_examples(builder, cfg.train_split, cfg.data_dir),
              seed=int(seed), global_batch_size=int(global_batch_size),
              order_version=order.ORDER_VERSION)


def _reason(error) -> str:
  message = getattr(error, 'message', str(error)).strip().splitlines()[0]
  return re.sub(r'\{\{function_node [^}]*\}\}\s*', '', message)


class Reader:
  """Reads and processes the examples at given rows of given global batches of one split.

  `host_batch(step, rows)` gives what a process holding those rows feeds: numpy arrays with
  one entry per row, plus 'index' (example row in the split, -1 for padding), 'epoch' and
  'bad' (the example failed processing; 'reason' says why).
  """

  def __init__(self, cfg, split: str, global_batch_size: int, *, seed: int = 0,
               num_threads: int | None = None):
    if _task(cfg) == 'segmentation':
      _check_segmentation_meta(cfg)
    self.cfg, self.train = cfg, split == 'train'
    self.builder = source.get_builder(cfg.name, cfg.data_dir)
    self.split_name = _split_name(cfg, split)
    self.records = source.open_records(self.builder, self.split_name, cfg.name, cfg.data_dir)
    self.num_examples = len(self.records)
    if self.num_examples == 0:
      raise ValueError(f'split {self.split_name!r} of {cfg.name!r} has no examples')
    self.global_batch = global_batch_size
    self.seed = int(seed)
    self.processor = examples.Processor(cfg, self.builder, self.train,
                                        _num_classes(cfg, self.builder))
    self.num_steps = None if self.train else max(
        1, math.ceil(self.num_examples / global_batch_size))
    features = self.builder.info.features
    self._keys = [k for k in ('image', 'label', 'mask') if k in features]
    self._out_keys = ['image', 'label', 'valid'] + (
        ['mask'] if self.processor.task == 'segmentation' else [])
    self._fn = tf.function(self.processor.process, reduce_retracing=True)
    self._batch_fn = (tf.function(self._process_rows, reduce_retracing=True)
                      if self.processor.task == 'classification' else None)
    self._base_seed = tf.constant(self.seed, tf.int64)
    self._blank = self.processor.blank_row()
    self._pool = concurrent.futures.ThreadPoolExecutor(
        max_workers=num_threads or os.cpu_count() or 1,
        thread_name_prefix='vt_jax_data')

  def examples_at(self, step: int, rows) -> tuple[np.ndarray, np.ndarray]:
    """(epoch, example index) of `rows` of global batch `step`; index -1 = padding."""
    positions = step * self.global_batch + np.asarray(rows, np.int64)
    if self.train:
      return order.train_examples(positions, self.num_examples, self.seed)
    return np.zeros_like(positions), np.where(positions < self.num_examples, positions, -1)

  def _process(self, epoch: int, index: int, record):
    """-> (row dict, None) or (None, reason)."""
    p = self.processor
    if p.has_label:
      label = int(record['label'])
      if not 0 <= label < p.label_classes:
        return None, f'label {label} out of range [0, {p.label_classes})'
    features = {k: tf.constant(record[k]) for k in self._keys}
    args = (tf.constant(epoch, tf.int64), tf.constant(index, tf.int64), features,
            self._base_seed)
    try:
      out = self._fn(*args)
    except tf.errors.OpError as e:
      # A graph's error message starts with the graph's traceback; the same ops run
      # eagerly say what failed in their first line.
      try:
        p.process(*args)
      except tf.errors.OpError as eager:
        return None, _reason(eager)
      return None, _reason(e)
    return {k: out[k].numpy() for k in self._out_keys}, None

  def _read(self, indices: list[int]):
    records = []
    for i in indices:
      try:
        records.append(self.records[i])
      except RuntimeError as e:  # array_record: "Corrupted Riegeli/records file: ..."
        raise CorruptRecordError(corrupt_record_message(
            self.cfg, self.builder, self.split_name,
            [source.record_file(self.builder, self.split_name, i)], e)) from None
    return records

  def _process_rows(self, epochs, indices, images, labels):
    """`Processor.process` over a batch of examples, in one graph (tf.map_fn)."""
    p = self.processor

    def one(args):
      epoch, index, image, label = args
      features = {'image': image}
      if p.has_label:
        features['label'] = label
      out = p.process(epoch, index, features, self._base_seed)
      return {k: out[k] for k in self._out_keys}

    blank = self._blank
    signature = {k: tf.TensorSpec(blank[k].shape, tf.as_dtype(blank[k].dtype))
                 for k in self._out_keys}
    return tf.map_fn(one, (epochs, indices, images, labels), fn_output_signature=signature)

  def _run_batch(self, epochs, indices, records) -> dict:
    """Processes a classification batch in one call; a batch holding a bad example is
    redone example by example, which finds it and its reason."""
    real = np.flatnonzero(indices >= 0)
    out = {k: np.repeat(v[None], len(indices), axis=0) for k, v in self._blank.items()}
    bad, reasons = np.zeros(len(indices), bool), [None] * len(indices)
    p, rows = self.processor, None
    labels = [int(r['label']) for r in records] if p.has_label else [0] * len(records)
    if real.size and (not p.has_label or all(0 <= x < p.label_classes for x in labels)):
      try:
        rows = self._batch_fn(tf.constant(epochs[real]), tf.constant(indices[real]),
                              tf.constant([r['image'] for r in records]),
                              tf.constant(labels, tf.int64))
        rows = {k: v.numpy() for k, v in rows.items()}
      except tf.errors.OpError:
        rows = None
    if rows is None and real.size:
      results = [self._process(int(epochs[i]), int(indices[i]), r)
                 for i, r in zip(real, records)]
      rows = {k: np.stack([row[k] if row is not None else self._blank[k]
                           for row, _ in results]) for k in self._blank}
      for i, (_, reason) in zip(real, results):
        bad[i], reasons[i] = reason is not None, reason
    for k in out:
      if real.size:
        out[k][real] = rows[k]
    out.update(bad=bad, reason=reasons)
    return out

  def submit(self, step: int, rows) -> 'PendingBatch':
    """Reads the examples of `rows` of batch `step` now; processes them on the pool:
    classification as one graph per batch, segmentation (masks of any size) per example."""
    epochs, indices = self.examples_at(step, rows)
    real = [i for i, x in enumerate(indices) if x >= 0]
    records = self._read([int(indices[i]) for i in real]) if real else []
    if self._batch_fn is not None:
      return PendingBatch(self, epochs, indices, [],
                          self._pool.submit(self._run_batch, epochs, indices, records))
    futures = [None] * len(indices)
    for i, record in zip(real, records):
      futures[i] = self._pool.submit(self._process, int(epochs[i]), int(indices[i]), record)
    return PendingBatch(self, epochs, indices, futures)

  def host_batch(self, step: int, rows) -> dict:
    return self.submit(step, rows).result()

  def close(self) -> None:
    self._pool.shutdown(wait=False, cancel_futures=True)


class PendingBatch:
  """The rows of one batch being processed (futures on the Reader's pool): one future for
  the whole batch, or one per row."""

  def __init__(self, reader, epochs, indices, futures, batch_future=None):
    self.reader, self.epochs, self.indices = reader, epochs, indices
    self.futures, self.batch_future = futures, batch_future

  def cancel(self) -> None:
    for f in self.futures + [self.batch_future]:
      if f is not None:
        f.cancel()

  def result(self) -> dict:
    if self.batch_future is not None:
      out = self.batch_future.result()
    else:
      blank, rows, bad, reasons = self.reader._blank, [], [], []  # pylint: disable=protected-access
      for f in self.futures:
        row, reason = f.result() if f is not None else (None, None)
        rows.append(row if row is not None else blank)
        bad.append(reason is not None)
        reasons.append(reason)
      out = {k: np.stack([r[k] for r in rows]) for k in blank}
      out.update(bad=np.array(bad, bool), reason=reasons)
    out.update(index=self.indices.astype(np.int64), epoch=self.epochs.astype(np.int64))
    return out


class Iterator:
  """Yields dicts of global jax.Arrays; see module docstring."""

  def __init__(self, cfg, split: str, global_batch_size: int, mesh, *,
               seed: int = 0, start_step: int = 0, data_axis: str = 'data',
               prefetch: int = 2, num_threads: int | None = None):
    self.cfg, self.split = cfg, split
    data_size = mesh.shape[data_axis]
    if global_batch_size % data_size:
      raise ValueError(
          f'global_batch_size={global_batch_size} (the config\'s batch size) is '
          f'not divisible by the mesh axis {data_axis!r} of size {data_size}.')
    self._sharding = jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec(data_axis))
    self._rows = order.local_rows(self._sharding, global_batch_size)
    self._position = {int(r): i for i, r in enumerate(self._rows)}
    self._reader = Reader(cfg, split, global_batch_size, seed=seed, num_threads=num_threads)
    self._global_batch = global_batch_size
    self._step = self._start = start_step
    self._end = None if self._reader.num_steps is None else self._reader.num_steps
    self._prefetch = max(1, prefetch)
    self._pending = collections.deque()
    self.num_skipped = 0

  def __iter__(self):
    return self

  def __len__(self) -> int:
    if self._end is None:
      raise TypeError("the 'train' iterator is infinite and has no len()")
    return max(0, self._end - self._start)  # batches of a pass from start_step

  def _fill(self) -> None:
    next_step = self._step + len(self._pending)
    while len(self._pending) < self._prefetch and (self._end is None or next_step < self._end):
      self._pending.append(self._reader.submit(next_step, self._rows))
      next_step += 1

  def __next__(self):
    self._fill()
    if not self._pending:
      self.close()
      raise StopIteration
    batch = self._pending.popleft().result()
    self._step += 1
    self._fill()
    bad = batch['bad']
    if bad.any():
      if not _field(self.cfg, 'skip_bad_examples', False):
        row = int(np.argmax(bad))
        self.close()
        raise BadExampleError(
            f"bad example in dataset {self.cfg.name!r}, split "
            f"{self._reader.split_name!r}, example index {int(batch['index'][row])} "
            f"(position in the split, before shuffling): {batch['reason'][row]}."
            " Fix or remove it, or set config.data.skip_bad_examples=True to "
            "skip (valid=0) and count such examples.")
      self.num_skipped += int(bad.sum())
    out = {k: batch[k] for k in self._reader._blank}  # pylint: disable=protected-access
    if self._reader.processor.device_augment:
      out.update(epoch=batch['epoch'].astype(np.int32), index=batch['index'].astype(np.int32))
    return {k: self._global(v) for k, v in out.items()}

  def _global(self, local: np.ndarray) -> jax.Array:
    shape = (self._global_batch,) + local.shape[1:]

    def rows(index):
      start, stop, _ = index[0].indices(self._global_batch)
      first = self._position[start]
      return local[first:first + stop - start]

    return jax.make_array_from_callback(shape, self._sharding, rows)

  def close(self) -> None:
    """Stops the work queued ahead (also at garbage collection)."""
    while self._pending:
      self._pending.popleft().cancel()
    self._reader.close()

  def __del__(self):
    try:
      self.close()
    except Exception:  # noqa: BLE001 -- interpreter shutdown: nothing left to stop
      pass


def make_iterator(cfg, split: str, global_batch_size: int, mesh, *,
                  seed: int = 0, start_step: int = 0,
                  data_axis: str = 'data') -> Iterator:
  return Iterator(cfg, split, global_batch_size, mesh, seed=seed,
                  start_step=start_step, data_axis=data_axis)
