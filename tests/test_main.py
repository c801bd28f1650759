"""vt_jax.main: flag/config errors before any work, a missing dataset, quickstart end to end."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from vt_jax import main as main_lib
from vt_jax.config_lib import files as config_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(*flags, timeout=600, env=None):
  return subprocess.run([sys.executable, "-m", "vt_jax.main", *flags], cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout,
                        env=env or dict(os.environ))


@pytest.mark.parametrize("override,message", [
    ("--config.nonexistent=1", "no field 'nonexistent'"),
    ("--config.model.widht=3", "no field 'widht'; did you mean 'width'?"),
    ("--config.seed=abc", "--config.seed=abc: invalid literal for int"),
    ("--config.optimizer.momentum=fast", "--config.optimizer.momentum=fast"),
])
def test_bad_overrides_fail_before_any_work_naming_the_field(override, message, tmp_path):
  workdir = tmp_path / "w"
  result = _main("--config=configs/quickstart.py", override, f"--workdir={workdir}")
  assert result.returncode == 2, result.stderr[-2000:]
  assert message in result.stderr
  assert not workdir.exists()


def _quickstart():
  sys.path.insert(0, os.path.join(ROOT, "configs"))
  try:
    import quickstart  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.pop(0)
  return quickstart.get_config()


def test_validate_config_names_unknown_or_bad_fields():
  main_lib.validate_config(_quickstart())
  config = _quickstart()
  config.lerning_rate = 0.1
  with pytest.raises(ValueError, match=r"unknown top-level field\(s\) \['lerning_rate'\]"):
    main_lib.validate_config(config)
  config = _quickstart()
  config.optimizer.mommentum = 0.9
  with pytest.raises(ValueError, match=r"config.optimizer: unknown field\(s\) \['mommentum'\]"):
    main_lib.validate_config(config)
  config = _quickstart()
  config.optimizer.name = "adam"
  with pytest.raises(ValueError, match="config.optimizer.name='adam'"):
    main_lib.validate_config(config)
  config = _quickstart()
  del config.schedule
  with pytest.raises(ValueError, match="missing field 'schedule'"):
    main_lib.validate_config(config)


def test_missing_dataset_error_names_it(tmp_path):
  from vt_jax.train import loop  # pylint: disable=g-import-not-at-top
  config = _quickstart()
  config.data.name = "no_such_dataset"
  with pytest.raises(ValueError, match="config.data.name='no_such_dataset'"):
    loop.train_and_evaluate(config, str(tmp_path))


@pytest.mark.slow
def test_quickstart_end_to_end_and_exact_resume_after_kill(tmp_path):
  """Quickstart on a tiny budget; then the same run SIGKILLed after a checkpoint and resumed
  ends with the same metrics (real digits pipeline: its start_step resume included)."""
  # One CPU device, as `python -m vt_jax.main` sees on a laptop (multi-device runs are
  # tests/train's business); the shared compile cache (tests/conftest.py) makes the
  # second and third runs cheap.
  env = dict(os.environ, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  flags = ["--config=configs/quickstart.py:width=4", "--config.num_train_steps=30",
           "--config.log_every_steps=5", "--config.checkpoint.every_steps=5",
           "--config.eval_every_epochs=100"]
  workdir = tmp_path / "qs"
  result = _main(*flags, f"--workdir={workdir}", env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  final = [l for l in result.stdout.splitlines() if l.startswith("FINAL ")]
  summary = json.loads(final[-1][len("FINAL "):])
  assert summary["step"] == 30 and 0.0 <= summary["top1"] <= 1.0
  records = _records(workdir)
  assert [r["step"] for r in records if r["split"] == "train"] == [5, 10, 15, 20, 25, 30]
  assert records[-1]["split"] == "eval" and records[-1]["top1"] == summary["top1"]
  assert "ETA" in result.stderr
  with open(workdir / "config.json") as f:
    assert json.load(f)["model"]["name"] == "vt_resnet"

  killed = tmp_path / "killed"
  proc = subprocess.Popen([sys.executable, "-m", "vt_jax.main", *flags, f"--workdir={killed}"],
                          cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  marker = killed / "checkpoints" / "5" / "_CHECKPOINT_METADATA"
  deadline = time.time() + 300
  while not marker.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  resumed = _main(*flags, f"--workdir={killed}", env=env)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  match = re.search(r"resumed from the checkpoint at step (\d+)", resumed.stderr)
  assert match and 5 <= int(match.group(1)) < 30, resumed.stderr[-2000:]

  def last_per_step(path):  # a killed run may have logged a step again after its checkpoint
    out = {}
    for r in _records(path):
      out[(r["step"], r["split"])] = {k: v for k, v in r.items() if k != "images_per_sec"}
    return out

  assert last_per_step(killed) == last_per_step(workdir)


def _records(workdir):
  with open(workdir / "metrics.jsonl") as f:
    return [json.loads(line) for line in f]


def test_segmentation_data_with_a_classifier_is_refused_before_any_work():
  path = os.path.join(ROOT, "configs", "digit_scenes.py")
  main_lib.validate_config(config_files.load(path))  # classification: fine
  with pytest.raises(ValueError, match="config.data.task='segmentation'"):
    main_lib.validate_config(config_files.load(path + ":task=segmentation"))


def test_distributed_timeouts_follow_the_installed_jax_signature():
  import jax  # pylint: disable=g-import-not-at-top
  # jax 0.10.2's names; the timeouts must reach initialize() (its defaults: 100 s / 300 s).
  assert main_lib.timeout_kwargs(jax.distributed.initialize, 15, 20) == dict(
      heartbeat_timeout_seconds=15, shutdown_timeout_seconds=20)

  def other_names(coordinator_address=None, heartbeat_timeout=None, shutdown_timeout=None):
    del coordinator_address, heartbeat_timeout, shutdown_timeout

  assert main_lib.timeout_kwargs(other_names, 15, 20) == dict(heartbeat_timeout=15,
                                                              shutdown_timeout=20)

  def neither(coordinator_address=None):
    del coordinator_address

  assert main_lib.timeout_kwargs(neither, 15, 20) == {}  # and a warning, not a TypeError
