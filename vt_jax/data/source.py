"""Where examples come from: the tfds builder, this process's shard, the epoch order.

Resumable position (issue 3 item 5) -- a deterministic skip, chosen over
checkpointing the tf.data iterator because it needs no extra files, works for
any process count layout that keeps the per-process batch, and costs at most one
epoch of *undecoded* record reads on resume:

  * Each process reads the contiguous slice `split[start:end]` of the split
    (`shard_bounds`: disjoint, covering, sizes differ by at most one).
  * Epoch `e` visits that slice in the order of a shuffle buffer seeded with
    `(seed, e)` (`reshuffle_each_iteration=False`), so the order of every epoch is
    a pure function of (seed, epoch) -- no hidden iterator state.
  * Step `k` has consumed `k * per_process_batch` examples, i.e. it sits at epoch
    `k*b // n` and index `k*b % n` of that epoch. `start_step=k` starts the epoch
    stream at that epoch and skips that many records BEFORE decoding.
  * Per-example augmentation randomness is stateless, seeded by
    (seed, epoch, example index), so a skipped prefix leaves nothing behind.
"""

from __future__ import annotations

import os

import tensorflow as tf
import tensorflow_datasets as tfds

# Datasets whose data ship with vt_jax: built on first use, with no network.
BUNDLED_PREFIXES = ('digits', 'digit_scenes')


def is_bundled(name: str) -> bool:
  return name.split('/')[0].split(':')[0] in BUNDLED_PREFIXES


def _register_bundled_builders() -> None:
  try:
    import vt_jax.data.datasets  # pylint: disable=g-import-not-at-top,unused-import
  except ModuleNotFoundError as e:
    if e.name != 'vt_jax.data.datasets':
      raise


def not_prepared_message(builder, name: str, data_dir: str | None) -> str:
  data_dir = data_dir or tfds.core.constants.DATA_DIR
  manual_dir = os.path.join(data_dir, 'downloads', 'manual')
  instructions = (getattr(builder, 'MANUAL_DOWNLOAD_INSTRUCTIONS', None) or
                  'this dataset downloads its own files (needs network once).')
  return (
      f"Dataset '{name}' is not prepared in data_dir={data_dir!r} "
      f"(config.data.data_dir; looked in {builder.data_dir}).\n"
      f"Files to place in the tfds manual_dir {manual_dir}:\n"
      f"  {instructions.strip()}\n"
      f"Then prepare it once with:\n"
      f"  tfds build {name} --data_dir={data_dir} --manual_dir={manual_dir}\n"
      f"(or point config.data.data_dir at a directory where it is prepared).")


def get_builder(name: str, data_dir: str | None):
  """Returns the tfds builder; bundled datasets are prepared here if needed."""
  _register_bundled_builders()
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(
        f"config.data.name={name!r} is not a tfds dataset known here: {e}") from e
  if is_bundled(name) and not builder.is_prepared():
    builder.download_and_prepare()  # Bundled data: no network involved.
  return builder


def split_num_examples(builder, split: str) -> int:
  """Number of examples of `split` (may be a slice like 'train[:90%]')."""
  try:
    return builder.info.splits[split].num_examples
  except KeyError:
    pass
  # Split metadata missing (e.g. under tfds.testing.mock_data): count it.
  ds = read_split(builder, split, builder.name)
  n = int(ds.cardinality())
  if n < 0:
    n = int(ds.reduce(0, lambda c, _: c + 1))
  return n


def shard_bounds(num_examples: int, process_index: int,
                 process_count: int) -> tuple[int, int]:
  """[start, end) of this process's contiguous shard; disjoint and covering."""
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index={process_index} outside [0, {process_count})')
  base, extra = divmod(num_examples, process_count)
  start = process_index * base + min(process_index, extra)
  return start, start + base + (1 if process_index < extra else 0)


def sub_split(split: str, start: int, end: int, num_examples: int) -> str:
  """tfds split string for examples [start, end) of `split`."""
  if start == 0 and end == num_examples:
    return split
  if '[' in split:
    raise ValueError(
        f"split {split!r} is already sliced and cannot be sharded over "
        f"several processes; set config.data.train_split/eval_split to a whole "
        f"split name (e.g. 'train') when running multi-process.")
  return f'{split}[{start}:{end}]'


def _skip_decoders(builder) -> dict:
  features = builder.info.features
  return {k: tfds.decode.SkipDecoding() for k, f in features.items()
          if isinstance(f, tfds.features.Image)}


def read_split(builder, split: str, name: str,
               data_dir: str | None = None) -> tf.data.Dataset:
  """Undecoded records of `split`, in file order (deterministic)."""
  try:
    return builder.as_dataset(
        split=split, shuffle_files=False, decoders=_skip_decoders(builder),
        read_config=tfds.ReadConfig(interleave_cycle_length=1))
  except AssertionError as e:  # tfds asserts when the data files are missing.
    raise FileNotFoundError(
        not_prepared_message(builder, name, data_dir) + f'\n({e})') from e


def train_records(records: tf.data.Dataset, num_examples: int, seed: int,
                  shuffle_buffer: int, consumed: int) -> tf.data.Dataset:
  """Infinite stream of (epoch, index, features) from position `consumed`.

  `records` yields (index, features) for this process's shard, `num_examples`
  long. The stream is identical to the tail, from element `consumed`, of the
  stream started at 0.
  """
  start_epoch, offset = divmod(consumed, num_examples)
  seed = tf.constant(seed, tf.int64)

  def one_epoch(epoch):
    order_seed = seed * 1_000_003 + epoch  # a different buffer order per epoch
    return records.shuffle(
        shuffle_buffer, seed=order_seed, reshuffle_each_iteration=False).map(
            lambda i, f: (epoch, i, f))

  epochs = tf.data.Dataset.range(start_epoch, 2**62)
  return epochs.flat_map(one_epoch).skip(offset)
