"""A finished run exits: nothing of the input pipeline is left to hang after FINAL."""

import os
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_quickstart_runs_exit_promptly_after_final(tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT)
  for run in range(2):  # (by hand: 30 runs, two at a time, all exited)
    proc = subprocess.Popen(
        [sys.executable, "-m", "vt_jax.main", "--config=configs/quickstart.py:width=4",
         f"--workdir={tmp_path / str(run)}", "--config.num_train_steps=2",
         "--config.eval_batch_size=360"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    final_at = None
    for line in proc.stdout:
      if line.startswith("FINAL "):
        final_at = time.time()
        break
    assert final_at is not None, proc.wait(timeout=600)
    try:
      proc.communicate(timeout=60)  # exit after the last line, not a hang
    except subprocess.TimeoutExpired:
      proc.kill()
      pytest.fail(f"run {run} printed FINAL and was still running 60 s later")
    assert proc.returncode == 0
