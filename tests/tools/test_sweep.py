"""vt_jax.sweep: grid parsing, resume after a kill, failures named, commands printed.

Runs use a JAX-free stand-in for the training entry point (tests/tools/fake_train.py) with
the same flags and workdir contract, so the sweep's own logic is what is tested, in seconds.
"""

import json
import signal
import subprocess
import sys
import time

import pytest

from vt_jax import sweep

CONFIG = '''
from vt_jax.config_lib import args as args_lib

def get_config(arg=None):
  return args_lib.parse_arg(arg, tokenizer="filter", seed=0, steps=3, step_seconds=0.01,
                            fail=False)
'''


def test_parse_grid_is_the_product_first_key_slowest():
  assert sweep.parse_grid("tokenizer=filter,pooling;seed=0,1") == [
      {"tokenizer": "filter", "seed": "0"}, {"tokenizer": "filter", "seed": "1"},
      {"tokenizer": "pooling", "seed": "0"}, {"tokenizer": "pooling", "seed": "1"}]
  with pytest.raises(sweep.GridError, match="not key=v1"):
    sweep.parse_grid("tokenizer")
  with pytest.raises(sweep.GridError, match="appears twice"):
    sweep.parse_grid("seed=0;seed=1")


def test_command_appends_args_and_config_overrides():
  cmd = sweep.command("configs/ablations.py:width=4", {"tokens": "32", "config.num_epochs": "2"},
                      "/r/tokens=32", "vt_jax.main")
  assert cmd[1:] == ["-m", "vt_jax.main", "--config=configs/ablations.py:width=4,tokens=32",
                     "--workdir=/r/tokens=32", "--config.num_epochs=2"]


def _sweep(tmp_path, *grids, extra=()):
  cfg = tmp_path / "cfg.py"
  cfg.write_text(CONFIG)
  cmd = [sys.executable, "-m", "vt_jax.sweep", f"--config={cfg}", f"--root={tmp_path / 'root'}",
         "--entry_point=tests.tools.fake_train", *[f"--grid={g}" for g in grids], *extra]
  return cmd


def _invocations(tmp_path, name):
  with open(tmp_path / "root" / name / "invocations.txt") as f:
    return f.read().split("\n")[:-1]


def test_sweep_resumes_after_a_kill_without_redoing_finished_runs(tmp_path):
  cmd = _sweep(tmp_path, "tokenizer=filter,pooling,clustering;step_seconds=0.2;steps=25")
  first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  progress = tmp_path / "root" / "tokenizer=pooling,step_seconds=0.2,steps=25" / "progress.txt"
  deadline = time.time() + 60
  while not (progress.exists() and progress.read_text() not in ("", "0", "1", "2")):
    assert time.time() < deadline and first.poll() is None, first.stdout.read()
    time.sleep(0.05)
  first.send_signal(signal.SIGKILL)  # no chance to clean up: the run must still stop
  out = first.communicate()[0]
  assert "[1/3] tokenizer=filter,step_seconds=0.2,steps=25: done" in out
  status = json.loads((progress.parent / sweep.STATUS_FILE).read_text())
  assert status["status"] == "running"
  deadline = time.time() + 30
  while sweep._pid_alive(status["pid"]):  # the orphaned run got SIGTERM and saves  # pylint: disable=protected-access
    assert time.time() < deadline, "the run outlived its killed sweep"
    time.sleep(0.05)
  saved = int(progress.read_text())
  assert 3 <= saved < 25

  second = subprocess.run(cmd, capture_output=True, text=True, check=False)
  assert second.returncode == 0, second.stdout + second.stderr
  assert "[1/3] tokenizer=filter,step_seconds=0.2,steps=25: done earlier, skipped" in second.stdout
  assert "[2/3] tokenizer=pooling,step_seconds=0.2,steps=25: resuming" in second.stdout
  assert "1 done earlier" in second.stdout and "0 failed" in second.stdout
  assert _invocations(tmp_path, "tokenizer=filter,step_seconds=0.2,steps=25") == ["start 0"]
  assert _invocations(tmp_path, "tokenizer=pooling,step_seconds=0.2,steps=25") == [
      "start 0", f"start {saved}"]
  assert _invocations(tmp_path, "tokenizer=clustering,step_seconds=0.2,steps=25") == ["start 0"]


def test_a_failing_run_is_named_with_its_exit_status_and_the_rest_still_run(tmp_path):
  result = subprocess.run(_sweep(tmp_path, "fail=true", "seed=0,1"), capture_output=True,
                          text=True, check=False)
  assert result.returncode == 1
  assert "[1/3] fail=true: FAILED (exit status 3)" in result.stdout
  assert "simulated failure: bad things happened" in result.stdout  # the log's end
  assert "[3/3] seed=1: done" in result.stdout
  assert "1 failed: fail=true" in result.stdout
  again = subprocess.run(_sweep(tmp_path, "fail=true", "seed=0,1"), capture_output=True,
                         text=True, check=False)
  assert "[1/3] fail=true: retrying (attempt 1 exited 3)" in again.stdout
  assert "2 done earlier" in again.stdout


def test_a_bad_grid_value_fails_before_any_run(tmp_path):
  result = subprocess.run(_sweep(tmp_path, "seed=0", "tokenz=filter"), capture_output=True,
                          text=True, check=False)
  assert result.returncode == 2
  assert "run 'tokenz=filter'" in result.stderr and "unknown config arg 'tokenz'" in result.stderr
  assert not (tmp_path / "root" / "seed=0").exists()
  result = subprocess.run(_sweep(tmp_path, "config.nope=1"), capture_output=True, text=True,
                          check=False)
  assert result.returncode == 2 and "has no field 'nope'" in result.stderr


def test_print_commands_runs_nothing(tmp_path):
  result = subprocess.run(_sweep(tmp_path, "seed=0,1", extra=["--print_commands"]),
                          capture_output=True, text=True, check=True)
  lines = result.stdout.strip().split("\n")
  assert len(lines) == 2
  assert lines[1].startswith("python -m tests.tools.fake_train --config=")
  assert lines[1].endswith(f"--workdir={tmp_path / 'root' / 'seed=1'}")
  assert not (tmp_path / "root").exists()


def test_a_path_value_names_its_run_by_its_last_component(tmp_path):
  # e.g. sweeping the backbone a segmentation run starts from (config.init_from).
  result = subprocess.run(
      _sweep(tmp_path, "config.init_from=/runs/r18_a/,/runs/r18_b;seed=0",
             extra=["--print_commands"]), capture_output=True, text=True, check=True)
  lines = result.stdout.strip().split("\n")
  assert len(lines) == 2
  assert "--config.init_from=/runs/r18_a/" in lines[0].split()
  assert f"--workdir={tmp_path / 'root' / 'config.init_from=r18_a,seed=0'}" in lines[0].split()
  assert f"--workdir={tmp_path / 'root' / 'config.init_from=r18_b,seed=0'}" in lines[1].split()
  # Two paths that end alike would share a workdir: refused, naming both.
  result = subprocess.run(_sweep(tmp_path, "config.init_from=/a/r18,/b/r18",
                                 extra=["--print_commands"]),
                          capture_output=True, text=True, check=False)
  assert result.returncode != 0 and "/a/r18" in result.stderr and "/b/r18" in result.stderr
  assert "would share the workdir" in result.stderr
