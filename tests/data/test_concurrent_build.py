"""Processes that start together on one host build a bundled dataset once, and all read it.

What a user meets: `launch/local_multiprocess.sh 2 --config=configs/quickstart_seg.py` on a
fresh machine started both processes' first-use build of digit_scenes at once, and the later
one to finish aborted with tfds's FileExistsError. Here two real processes are released
together (a start file both wait for) into the same empty data_dir.
"""

import os
import subprocess
import sys
import time

from vt_jax.data import testing as synthetic

NAME = f'{synthetic.NAME}/clean'

CHILD = r'''
import logging, os, sys, time
from absl import logging as absl_logging
absl_logging.set_verbosity(absl_logging.INFO)
absl_logging.use_absl_handler()
from vt_jax.data import source
from vt_jax.data import testing  # registers the synthetic dataset
data_dir, go, name = sys.argv[1:4]
open(go + '.' + str(os.getpid()), 'w').close()  # ready
while not os.path.exists(go):
  time.sleep(0.01)
builder = source.get_builder(name, data_dir)
print('EXAMPLES', len(builder.as_data_source('train')), flush=True)
'''


def test_two_processes_build_a_bundled_dataset_once(tmp_path):
  data_dir, go = str(tmp_path / 'tfds'), str(tmp_path / 'go')
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env = dict(os.environ, PYTHONPATH=root)
  procs = [subprocess.Popen([sys.executable, '-c', CHILD, data_dir, go, NAME], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for _ in range(2)]
  deadline = time.time() + 300
  while len([f for f in os.listdir(tmp_path) if f.startswith('go.')]) < 2:
    assert time.time() < deadline and all(p.poll() is None for p in procs), [
        p.communicate() for p in procs if p.poll() is not None]
    time.sleep(0.05)
  open(go, 'w').close()  # release both at once
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  counts = {line for out, _ in outs for line in out.splitlines() if line.startswith('EXAMPLES')}
  assert len(counts) == 1 and counts != {'EXAMPLES 0'}, counts  # both read the same split
  logs = ''.join(err for _, err in outs)
  assert logs.count('] building the bundled dataset') == 1, logs[-3000:]
