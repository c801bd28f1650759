"""vt_jax.main: flag/config errors before any work, a missing dataset, quickstart end to end."""

import json
import os
import subprocess
import sys

import pytest

from vt_jax import main as main_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(*flags, timeout=600):
  return subprocess.run([sys.executable, "-m", "vt_jax.main", *flags], cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout, env=dict(os.environ))


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
def test_quickstart_end_to_end_tiny_budget(tmp_path):
  workdir = tmp_path / "qs"
  result = _main("--config=configs/quickstart.py:width=4", "--config.num_train_steps=3",
                 "--config.log_every_steps=1", f"--workdir={workdir}")
  assert result.returncode == 0, result.stderr[-3000:]
  final = [l for l in result.stdout.splitlines() if l.startswith("FINAL ")]
  summary = json.loads(final[-1][len("FINAL "):])
  assert summary["step"] == 3 and 0.0 <= summary["top1"] <= 1.0
  with open(workdir / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3]
  assert records[-1]["split"] == "eval" and records[-1]["top1"] == summary["top1"]
  assert "ETA" in result.stderr
  with open(workdir / "config.json") as f:
    assert json.load(f)["model"]["name"] == "vt_resnet"
