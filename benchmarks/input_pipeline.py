"""Images/s of the ImageNet train pipeline on generated JPEGs (224 px), per core, against
what the train step consumes.

    python benchmarks/input_pipeline.py [--batches=30] [--batch=64] [--threads=1,2] \
        [--augments=none,autoaugment,device]
    python benchmarks/train_step.py --json | tail -1 > /tmp/step.json
    python benchmarks/input_pipeline.py --train_step_json=/tmp/step.json \
        --target_images_per_sec=3000

Builds the generated dataset `vt_jax_synthetic/bench` (512 JPEGs of ~400x350 px,
like ImageNet's average) as ArrayRecord in --data_dir, then times the real train
pipeline (`vt_jax.data.pipeline.Reader`: global order, random-access reads,
decode+Inception crop, then flip, [AutoAugment], normalise -- or, for 'device',
config.data.augment_device=True: decode + crop + resize to uint8 only, the rest being
the accelerator's) with its thread pool set to each --threads value, a few batches in
flight. Prints images/s, images/s per thread and images per CPU-second
(all threads; the per-core rate, steady even on a shared machine): divide your
accelerator's training images/s by the per-CPU-second figure for the host cores
one accelerator needs; with --train_step_json (the last line of
`benchmarks/train_step.py --json`) and --target_images_per_sec it prints that
division for each measured train step and each target rate, for each --augments value.
No JAX hand-off (that is a memcpy, not the bottleneck).
"""

import collections
import json
import math
import os
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

from vt_jax import runtime  # pylint: disable=g-import-not-at-top
from vt_jax.config_lib import data as data_configs  # pylint: disable=g-import-not-at-top
from vt_jax.data import pipeline  # pylint: disable=g-import-not-at-top
from vt_jax.data import testing as synthetic  # pylint: disable=g-import-not-at-top

_BATCHES = flags.DEFINE_integer('batches', 30, 'timed batches per setting')
_BATCH = flags.DEFINE_integer('batch', 64, 'per-process batch size')
_THREADS = flags.DEFINE_list('threads', [str(os.cpu_count())] if os.cpu_count() == 1
                             else ['1', str(os.cpu_count())],
                             'tf.data private thread-pool sizes to try')
_AUGMENTS = flags.DEFINE_list('augments', ['none', 'autoaugment', 'device'],
                              "config.data.augment values to try on the host; 'device': "
                              "augment_device=True (host decodes and crops only)")
_STEP_JSON = flags.DEFINE_string('train_step_json', None, 'a file holding the JSON line '
                                 'of benchmarks/train_step.py --json (the consumers)')
_TARGETS = flags.DEFINE_list('target_images_per_sec', [], 'further consumption rates '
                             '(e.g. an accelerator\'s measured train images/s)')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'where to build the JPEGs '
                                '(default: a temp dir)')


def _time(cfg, threads: int, batch: int, batches: int, in_flight: int = 3) -> float:
  reader = pipeline.Reader(cfg, 'train', batch, seed=0, num_threads=threads)
  rows = np.arange(batch)
  for step in range(2):  # warm-up: graph tracing, thread start
    reader.host_batch(step, rows)
  pending = collections.deque(reader.submit(2 + s, rows) for s in range(in_flight))
  start, cpu_start = time.perf_counter(), time.process_time()
  for step in range(batches):
    pending.popleft().result()
    pending.append(reader.submit(2 + in_flight + step, rows))
  images = batches * batch
  rates = images / (time.perf_counter() - start), images / (time.process_time() - cpu_start)
  for p in pending:
    p.cancel()
  reader.close()
  return rates


def main(argv):
  del argv
  runtime.setup()  # the tools' console
  runtime.setup_tensorflow()  # as a training run's input pipeline
  data_dir = _DATA_DIR.value or tempfile.mkdtemp(prefix='vt_jax_bench_')
  name = f'{synthetic.NAME}/bench'
  tfds.builder(name, data_dir=data_dir).download_and_prepare(file_format='array_record')
  # images per CPU-second (all threads): the per-core rate even on a loaded machine.
  print(f'{"augment":<12} {"threads":>7} {"images/s":>9} {"per thread":>10} '
        f'{"per CPU-s":>10}')
  per_core = {}
  for augment in _AUGMENTS.value:
    cfg = data_configs.imagenet(name=name, data_dir=data_dir, num_classes=10,
                                train_split='train', eval_split='test',
                                augment='none' if augment == 'device' else augment,
                                augment_device=augment == 'device')
    for threads in map(int, _THREADS.value):
      rate, per_cpu_s = _time(cfg, threads, _BATCH.value, _BATCHES.value)
      per_core[augment] = per_cpu_s  # at the most threads tried (listed last)
      print(f'{augment:<12} {threads:>7} {rate:>9.1f} {rate / threads:>10.1f} '
            f'{per_cpu_s:>10.1f}', flush=True)
  consumers = [('target', float(t)) for t in _TARGETS.value]
  if _STEP_JSON.value:
    with open(_STEP_JSON.value) as f:
      runs = json.loads(f.read().strip().splitlines()[-1])['runs']
    consumers = [(f'{r["model"]} {r["dtype"]} b{r["batch"]}', r['images_per_sec'])
                 for r in runs] + consumers
  if consumers:
    print('\nhost cores that keep each consumer fed (consumer img/s / images per CPU-second '
          f'at {_THREADS.value[-1]} threads)')
    print(f'{"consumer":<28} {"img/s":>9} ' + ' '.join(f'{a:>12}' for a in per_core))
    for label, rate in consumers:
      print(f'{label:<28} {rate:>9.1f} ' + ' '.join(
          f'{math.ceil(rate / pc):>12d}' for pc in per_core.values()))


if __name__ == '__main__':
  app.run(main)
