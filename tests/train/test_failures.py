"""Failures in-process: the config-vs-saved-config rule, the ETA, signals, skipped examples."""

import json
import logging
import os
import signal

import pytest

from tests.train import train_fakes
from vt_jax.config_lib import data as data_configs
from vt_jax.train import checkpoint
from vt_jax.train import control
from vt_jax.train import loop
from vt_jax.train import run_config


def _saved(tmp_path, config):
  run_config.write(config, str(tmp_path))
  return str(tmp_path)


def test_harmless_config_changes_are_allowed_and_reported(tmp_path):
  workdir = _saved(tmp_path, train_fakes.tiny_config())
  config = train_fakes.tiny_config(num_train_steps=12, log_every_steps=3)
  config.checkpoint.keep = 7
  config.mesh.data = 2
  config.model.layers = "flax"  # the same parameters and function in another layer form
  notes = run_config.check_against_saved(config, workdir)
  assert notes == ["checkpoint.keep: 3 -> 7", "log_every_steps: 2 -> 3", "mesh.data: -1 -> 2",
                   "model.layers: 'auto' -> 'flax'", "num_train_steps: 6 -> 12"]
  assert run_config.check_against_saved(train_fakes.tiny_config(), str(tmp_path / "new")) == []


def test_checkpoint_breaking_config_changes_name_fields_and_both_ways_out(tmp_path):
  workdir = _saved(tmp_path, train_fakes.tiny_config())
  config = train_fakes.tiny_config()
  config.model.width = 16
  config.optimizer.name = "rmsprop"
  config.num_epochs = 3.0  # harmless: not in the error
  with pytest.raises(run_config.ConfigMismatchError) as e:
    run_config.check_against_saved(config, workdir)
  message = str(e.value)
  assert "model.width: saved 8, now 16" in message
  assert "optimizer.name: saved 'sgd', now 'rmsprop'" in message
  assert "num_epochs" not in message.split("(fields that may change")[0]
  assert "new --workdir" in message
  assert "--config.model.width=8 --config.optimizer.name=sgd" in message


def test_a_field_the_saved_config_lacks_is_allowed(tmp_path):
  config = train_fakes.tiny_config()
  workdir = _saved(tmp_path, config)
  with open(os.path.join(workdir, "config.json")) as f:
    saved = json.load(f)
  del saved["on_nonfinite_loss"], saved["loss"]
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(saved, f)
  notes = run_config.check_against_saved(config, workdir)
  assert len(notes) == 2 and all("not in the saved config" in n for n in notes)


def test_eta_leaves_out_compilation_eval_and_saves(monkeypatch):
  now = [1000.0]
  monkeypatch.setattr(control.time, "time", lambda: now[0])
  # 100 steps, eval every 50: the first step compiles for 60 s, a step then takes 1 s.
  progress = control.Progress(start=0, total=100, batch_size=32, eval_every=50)
  now[0] += 60.0
  progress.first_step_done(1)
  now[0] += 9.0  # steps 2..10
  rate, eta = progress.rates(10)
  assert rate == pytest.approx(9 * 32 / 9.0)
  assert eta == pytest.approx(90 * 1.0)  # 2 evals left, none measured yet
  now[0] += 40.0  # steps 11..50
  rate, eta = progress.rates(50)
  now[0] += 5.0  # the eval at step 50 (and its save): 5 s
  progress.exclude(5.0, eval_seconds=5.0)
  now[0] += 10.0  # steps 51..60
  rate, eta = progress.rates(60)
  assert rate == pytest.approx(10 * 32 / 10.0)
  assert eta == pytest.approx(40 * 1.0 + 1 * 5.0)  # the eval at step 100 remains


def test_second_ctrl_c_aborts_at_once():
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    with control.StopSignals() as signals:
      assert signal.getsignal(signal.SIGINT) == signals._on_signal
      signals._on_signal(signal.SIGINT, None)
      assert signals.signum == signal.SIGINT  # first: stop after this step
      with pytest.raises(KeyboardInterrupt):
        signals._on_signal(signal.SIGINT, None)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
  finally:
    signal.signal(signal.SIGINT, previous)


def test_skipped_bad_examples_are_counted_in_metrics_and_progress(tmp_path, caplog):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from vt_jax.data import testing as synthetic  # pylint: disable=g-import-not-at-top
  data_dir = str(tmp_path / "tfds")
  tfds.builder(f"{synthetic.NAME}/bad", data_dir=data_dir).download_and_prepare(
      file_format="array_record")
  # 48 train examples, batch 16: one epoch (3 steps) holds both bad examples (5 and 11).
  config = train_fakes.tiny_config(num_train_steps=3, log_every_steps=1)
  config.data = data_configs.imagenet(
      name=f"{synthetic.NAME}/bad", data_dir=data_dir, num_classes=10, train_split="train",
      eval_split="test", image_size=16, eval_resize=20,
      skip_bad_examples=True)
  with caplog.at_level(logging.INFO):
    loop.train_and_evaluate(config, str(tmp_path / "run"))
  with open(tmp_path / "run" / "metrics.jsonl") as f:
    train = [r for r in map(json.loads, f) if r["split"] == "train"]
  assert [r["step"] for r in train] == [1, 2, 3]
  assert sum(r["skipped_examples"] for r in train) == 2
  assert "skipped 2 bad examples" in caplog.text
  # The checkpoint records the input stream; a resume over a different one is refused,
  # naming the field, before any work.
  from vt_jax import data  # pylint: disable=g-import-not-at-top
  manager = checkpoint.make_manager(str(tmp_path / "run"), config, read_only=True)
  expected = data.fingerprint(config.data, config.batch_size, config.seed)
  assert checkpoint.read_data_record(manager, 3) == dict(expected, examples_consumed=48)
  checkpoint.check_data_record(manager, expected, "W")  # the same stream: accepted
  with pytest.raises(run_config.ConfigMismatchError,
                     match=r"config.batch_size: saved 16, now 32"):
    checkpoint.check_data_record(manager, dict(expected, global_batch_size=32), "W")
  with pytest.raises(run_config.ConfigMismatchError, match=r"number of examples.*saved 48"):
    checkpoint.check_data_record(manager, dict(expected, num_examples=47), "W")
  manager.close()

